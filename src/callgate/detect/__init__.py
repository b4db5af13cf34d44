"""Detection of real-time communication (calls) in packet captures: `callgate detect`.

capture/ (pcap and pcapng files → batches of records, or packets one by one) → batchdecode
(link/IP/transport headers: compiled `hotloops` when built — native.py says whether to use it —
else numpy; decode.py for the rest) → batchfeed (into the flowtable;
payloads of undecided flows to flow.py's per-flow inspection, RFC 7983 demux) → verdict
(decisions, endpoint learning, statistical fallback) → report / render / html. `command.py` is
the command, without the command-line framework (console.py: its terminal output).
"""

from callgate.detect.capture import CaptureError
from callgate.detect.engine import Detector, detect
from callgate.detect.report import FlowResult, Report, Session

__all__ = ["CaptureError", "Detector", "FlowResult", "Report", "Session", "detect"]
