"""Signaling messages, protocol version 1 (docs/signaling.md).

Client → server messages are pydantic models in one discriminated union on `type`, parsed by
`parse_client_message()`, which raises `ProtocolError` with the exact error code of the protocol.
Server → client messages are built by the `*_message()` functions as plain JSON-ready dicts: the
WebSocket edge serializes them and nothing inside the server passes them around as records.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from callgate.accounts.handles import normal_handle
from callgate.errors import CallgateError

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 65536
MAX_SDP_BYTES: Final = 16384
MAX_ID_CHARS: Final = 64
MAX_HANDLE_CHARS: Final = 64
MAX_CANDIDATE_CHARS: Final = 1024
MAX_REASON_CHARS: Final = 128
MAX_STREAMS: Final = 16

Json = dict[str, Any]
CandidateType = Literal["host", "srflx", "prflx", "relay"]

# Error codes of `error` replies (docs/signaling.md, "Validation").
TOO_LARGE: Final = "too-large"
BAD_JSON: Final = "bad-json"
UNKNOWN_TYPE: Final = "unknown-type"
BAD_REQUEST: Final = "bad-request"
NOT_FOUND: Final = "not-found"
CONFLICT: Final = "conflict"
RATE_LIMITED: Final = "rate-limited"
UNAVAILABLE: Final = "unavailable"  # several nodes: the bus between them is down (fail closed)


class ProtocolError(CallgateError, ValueError):
    """A client message the server refuses; `id` is the request id when it could be read."""

    def __init__(self, code: str, message: str, id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
Handle = Annotated[str, Field(min_length=1, max_length=MAX_HANDLE_CHARS)]
Count = Annotated[int, Field(ge=0, le=2**53)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Id


class _WithSdp(_Message):
    sdp: str = Field(min_length=1)

    @field_validator("sdp")
    @classmethod
    def _sdp_size(cls, value: str, info: ValidationInfo) -> str:
        limit = MAX_SDP_BYTES
        if isinstance(info.context, dict):
            limit = int(info.context.get("max_sdp_bytes", limit))
        if len(value.encode()) > limit:
            raise PydanticCustomError(
                "sdp_too_large", "sdp is over {limit} bytes", {"limit": limit}
            )
        return value


class Invite(_WithSdp):
    type: Literal["call.invite"]
    to: Handle

    @field_validator("to")
    @classmethod
    def _normal_to(cls, value: str) -> str:
        """Handles are case-insensitive: "BOB" calls bob (accounts/handles.py)."""
        return normal_handle(value)


class Answer(_WithSdp):
    type: Literal["call.answer"]
    call_id: Id


class IceCandidate(BaseModel):
    """RTCIceCandidateInit as browsers serialize it; `candidate: ""` is end-of-candidates."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    candidate: str = Field(max_length=MAX_CANDIDATE_CHARS)
    sdpMid: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=255)
    usernameFragment: str | None = Field(default=None, max_length=256)


class Candidate(_Message):
    type: Literal["call.candidate"]
    call_id: Id
    candidate: IceCandidate


class Reject(_Message):
    type: Literal["call.reject"]
    call_id: Id
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


class Hangup(_Message):
    type: Literal["call.hangup"]
    call_id: Id


class Media(_Message):
    type: Literal["call.media"]
    call_id: Id
    state: Literal["connected", "failed"]
    local_candidate_type: CandidateType | None = None
    remote_candidate_type: CandidateType | None = None
    codec: str | None = Field(default=None, max_length=MAX_ID_CHARS)


class StreamStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["audio"]
    direction: Literal["inbound", "outbound"]
    packets: Count
    # RTCP cumulative loss is a signed 24-bit field: duplicates can make it negative.
    packets_lost: int = Field(ge=-(2**23), le=2**53)
    jitter_ms: float | None = Field(default=None, ge=0, le=600_000)
    rtt_ms: float | None = Field(default=None, ge=0, le=600_000)
    concealed_ratio: float | None = Field(default=None, ge=0, le=1)


class Stats(_Message):
    type: Literal["call.stats"]
    call_id: Id
    final: bool = False
    streams: list[StreamStats] = Field(max_length=MAX_STREAMS)


class Reattach(_Message):
    """Several nodes: a party whose signaling connection was lost (its node died) takes its
    side of an answered call back on this connection (docs/signaling.md)."""

    type: Literal["call.reattach"]
    call_id: Id


class Ping(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[
    Invite | Answer | Candidate | Reject | Hangup | Media | Stats | Reattach | Ping,
    Field(discriminator="type"),
]
CLIENT_TYPES: Final = frozenset(
    {
        "call.invite",
        "call.answer",
        "call.candidate",
        "call.reject",
        "call.hangup",
        "call.media",
        "call.stats",
        "call.reattach",
        "ping",
    }
)
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(
    text: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES, max_sdp_bytes: int = MAX_SDP_BYTES
) -> ClientMessage:
    """Parse one WebSocket frame; raise `ProtocolError` with the protocol's error code."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(TOO_LARGE, f"message is over {max_bytes} bytes")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_JSON, "a message is a JSON object")
    request_id = _request_id(raw)
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_REQUEST, "missing or non-string 'type'", request_id)
    if kind not in CLIENT_TYPES:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}", request_id)
    try:
        return _ADAPTER.validate_python(raw, context={"max_sdp_bytes": max_sdp_bytes})
    except ValidationError as exc:
        raise _validation_error(exc, request_id) from None


def _request_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return None


def _validation_error(exc: ValidationError, request_id: str | None) -> ProtocolError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "message"
    code = TOO_LARGE if first["type"] == "sdp_too_large" else BAD_REQUEST
    return ProtocolError(code, f"{where}: {first['msg']}", request_id)


# --- server → client -------------------------------------------------------------------------


def ack_message(request_id: str, **extra: Any) -> Json:
    return {"type": "ack", "id": request_id, **extra}


def error_message(request_id: str | None, code: str, message: str) -> Json:
    return {"type": "error", "id": request_id, "code": code, "message": message}


def hello_message(
    *,
    handle: str,
    display_name: str,
    device_id: str,
    ice_servers: list[Json],
    ice_transport_policy: Literal["all", "relay"],
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_sdp_bytes: int = MAX_SDP_BYTES,
) -> Json:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "user": {"handle": handle, "display_name": display_name},
        "device_id": device_id,
        "ice_servers": ice_servers,
        "ice_transport_policy": ice_transport_policy,
        "limits": {"max_message_bytes": max_message_bytes, "max_sdp_bytes": max_sdp_bytes},
    }


def incoming_message(
    call_id: str, handle: str, display_name: str, sdp: str, relay_only: bool = False
) -> Json:
    """`ice_transport_policy` is this call's: "relay" when a policy rule or either party's
    account makes the call relay-only, whatever the callee's `hello` said."""
    return {
        "type": "call.incoming",
        "call_id": call_id,
        "from": {"handle": handle, "display_name": display_name},
        "sdp": sdp,
        "ice_transport_policy": "relay" if relay_only else "all",
    }


def ringing_message(call_id: str, devices: int) -> Json:
    return {"type": "call.ringing", "call_id": call_id, "devices": devices}


def answered_message(call_id: str, sdp: str) -> Json:
    return {"type": "call.answered", "call_id": call_id, "sdp": sdp}


def candidate_message(call_id: str, candidate: IceCandidate) -> Json:
    return {
        "type": "call.candidate",
        "call_id": call_id,
        "candidate": candidate.model_dump(exclude_none=True),
    }


def ended_message(call_id: str, reason: str, ended_by: str) -> Json:
    return {
        "type": "call.ended",
        "call_id": call_id,
        "reason": str(reason),
        "ended_by": str(ended_by),
    }


def denied_message(call_id: str, reason: str, rule: str) -> Json:
    return {"type": "call.denied", "call_id": call_id, "reason": reason, "rule": rule}


def recording_message(
    call_id: str, recording_id: str, rule: str | None, sdp: str | None = None
) -> Json:
    """Both parties of a recorded call are told (docs/signaling.md, `call.recording`). The
    caller's copy carries the anchor's answer to its offer: its media goes to the server first."""
    message: Json = {
        "type": "call.recording",
        "call_id": call_id,
        "recording_id": recording_id,
        "policy_rule": rule,
    }
    if sdp is not None:
        message["sdp"] = sdp
    return message
