"""Detection of real-time communication (calls) in packet captures: `callgate detect`.

records / records_ng (chunks → batches of records) → batchdecode (link/IP/transport headers with
numpy; decode.py for the rest) → batchfeed (flow table; payloads of undecided flows to flow.py's
per-flow inspection, RFC 7983 demux) → verdict (decisions, endpoint learning, statistical
fallback) → report / render / html. `command.py` is the command; pcapfile.py the per-packet reader.
"""

from callgate.detect.engine import Detector, detect
from callgate.detect.pcapfile import CaptureError
from callgate.detect.report import FlowResult, Report, Session

__all__ = ["CaptureError", "Detector", "FlowResult", "Report", "Session", "detect"]
