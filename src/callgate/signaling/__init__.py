"""Call control: typed protocol messages (messages.py), the server-owned call state machine
(model.py holds a call's state, engine.py the `CallEngine` that moves it and returns effects,
composed of ringing.py, answering.py, media_reports.py and reattaching.py over engine_base.py),
relay-only SDP filtering and per-connection rate limiting — pure: no sockets, no database, no
asyncio. hub.py (over hub_*.py) is the one asyncio shell around the engine: it queues messages
for connected devices and hands record effects to records/call_recorder.py, which writes them.
The WebSocket endpoint is api/ws.py; runtime/calling.py wires it all for `callgate serve`."""

from callgate.signaling.dispatch import handle_message
from callgate.signaling.effects import (
    CallOpened,
    CdrFinal,
    CdrOpen,
    CdrUpdate,
    Effect,
    Send,
    StatsReport,
)
from callgate.signaling.engine import CallEngine
from callgate.signaling.messages import ClientMessage, ProtocolError, parse_client_message
from callgate.signaling.ratelimit import MessageRateLimiter
from callgate.signaling.reasons import Disposition, EndedBy, Party, Reason, disposition_for
from callgate.signaling.sdp import candidate_type, filter_candidate, filter_sdp
from callgate.types.decisions import Denial

__all__ = [
    "CallEngine",
    "CallOpened",
    "CdrFinal",
    "CdrOpen",
    "CdrUpdate",
    "ClientMessage",
    "Denial",
    "Disposition",
    "Effect",
    "EndedBy",
    "MessageRateLimiter",
    "Party",
    "ProtocolError",
    "Reason",
    "Send",
    "StatsReport",
    "candidate_type",
    "disposition_for",
    "filter_candidate",
    "filter_sdp",
    "handle_message",
    "parse_client_message",
]
