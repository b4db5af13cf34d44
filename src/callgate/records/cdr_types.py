"""The CDR's value types and vocabularies (docs/calling.md, docs/signaling.md end reasons)."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DISPOSITIONS = frozenset(
    {"answered", "no-answer", "busy", "rejected", "denied", "failed", "cancelled"}
)
ENDED_BY = ("caller", "callee", "server")
JSON_FIELDS = frozenset({"relay_allocation_ids", "recording_ids", "relay_candidates"})
UPDATABLE = frozenset(
    {
        "caller_device",
        "caller_address",
        "direction",  # a SIP edge call from a trunk: "inbound" (runtime/sip_calls.py)
        "caller_user_agent",
        "callee_user",  # a ring group's call: the member who answered (signaling/engine.py)
        "callee_device",
        "callee_address",
        "callee_user_agent",
        "ring_at",
        "answer_at",
        "policy_rule",
        "policy_decision",
        "media_path",
        "relay_used",
        "relay_candidates",
        "relay_bytes",
        "relay_allocation_ids",
        "codec",
        "encryption",
        "recording_ids",
        "anchored",
        "node_id",
        "audit_index",
    }
)


def new_call_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class CallOpen:
    """What is known when an invite is accepted for processing."""

    call_id: str
    caller_user: str
    callee_user: str
    invite_at: datetime
    caller_device: str | None = None
    caller_address: str | None = None
    caller_user_agent: str | None = None
    ring_at: datetime | None = None  # set when ringing starts as the row is written
    direction: str = "internal"
    policy_rule: str | None = None
    policy_decision: str | None = None
    recording_required: bool | None = None
    encryption: str | None = "dtls-srtp"
    node_id: str | None = None
    audit_index: int | None = None  # seq of the call's call.invite audit entry
    relay_candidates: tuple[str, ...] | None = None  # "ip:port" the offer's relay candidates use

    def __post_init__(self) -> None:
        if self.invite_at.tzinfo is None:
            raise ValueError("invite_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class CdrRecord:
    call_id: str
    caller_user: str
    caller_device: str | None
    caller_address: str | None
    caller_user_agent: str | None
    callee_user: str
    callee_device: str | None
    callee_address: str | None
    callee_user_agent: str | None
    direction: str
    invite_at: datetime
    ring_at: datetime | None
    answer_at: datetime | None
    end_at: datetime | None
    duration_s: float | None
    disposition: str | None
    ended_by: str | None
    reason: str | None
    end_detail: str | None
    policy_rule: str | None
    policy_decision: str | None
    media_path: str | None
    relay_used: str | None
    relay_candidates: tuple[str, ...]
    relay_bytes: int | None
    relay_allocation_ids: tuple[str, ...]
    codec: str | None
    encryption: str | None
    recording_ids: tuple[str, ...]
    node_id: str | None
    audit_index: int | None
    updated_at: datetime
    legal_hold: bool = False
    recording_required: bool | None = None  # the allowing policy rule asked for recording
    anchored: bool | None = None  # the media went through the server's anchor (recorded calls)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 UTC, tuples as lists."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class RelayLink:
    """The relay allocations linked to a call."""

    allocation_ids: tuple[str, ...] = ()
    relay_used: str | None = None
    relay_bytes: int = 0
    users: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, sessions: Sequence[Any]) -> RelayLink:
        carried = [s for s in sessions if s.bytes_to_peer + s.bytes_to_client > 0]
        used = sorted({_hostport(s.relay_ip, s.relay_port) for s in carried})
        return cls(
            allocation_ids=tuple(s.allocation_id for s in sessions),
            relay_used=", ".join(used) or None,
            relay_bytes=sum(s.bytes_to_peer + s.bytes_to_client for s in sessions),
            users=tuple(sorted({s.user for s in sessions})),
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_of(address: str | None) -> str | None:
    """The IP of "ip", "ip:port" or "[v6]:port" (None when it is none of those)."""
    if not address:
        return None
    text = address.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
