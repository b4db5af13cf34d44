"""Signaling: typed protocol messages, the server-owned call state machine, relay-only SDP
filtering and per-connection rate limiting. Pure: no sockets, no database, no asyncio."""

from callgate.signaling.call import Denial
from callgate.signaling.calls import CallEngine
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
from callgate.signaling.messages import ClientMessage, ProtocolError, parse_client_message
from callgate.signaling.ratelimit import TokenBucket
from callgate.signaling.reasons import Disposition, EndedBy, Party, Reason, disposition_for
from callgate.signaling.sdp import candidate_type, filter_candidate, filter_sdp

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
    "Party",
    "ProtocolError",
    "Reason",
    "Send",
    "StatsReport",
    "TokenBucket",
    "candidate_type",
    "disposition_for",
    "filter_candidate",
    "filter_sdp",
    "handle_message",
    "parse_client_message",
]
