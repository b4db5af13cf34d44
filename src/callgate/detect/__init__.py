"""Detection of real-time communication (calls) in packet captures: `callgate detect`.

pcapfile (read) → decode (link/IP/transport) → flow (per-flow inspection, RFC 7983 demux) →
verdict (decisions, endpoint learning, statistical fallback) → report / render / html.
"""

from callgate.detect.engine import Detector, detect
from callgate.detect.pcapfile import CaptureError
from callgate.detect.report import FlowResult, Report, Session

__all__ = ["CaptureError", "Detector", "FlowResult", "Report", "Session", "detect"]
