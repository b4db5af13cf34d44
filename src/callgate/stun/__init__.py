"""STUN codec (RFC 8489) and TURN ChannelData framing: pure functions, no I/O."""

from callgate.stun.constants import Attr, ErrorCode, MessageClass, Method
from callgate.stun.message import (
    Message,
    StunDecodeError,
    build,
    decode,
    encode,
    is_stun,
    new_transaction_id,
    verify_integrity,
)

__all__ = [
    "Attr",
    "ErrorCode",
    "Message",
    "MessageClass",
    "Method",
    "StunDecodeError",
    "build",
    "decode",
    "encode",
    "is_stun",
    "new_transaction_id",
    "verify_integrity",
]
