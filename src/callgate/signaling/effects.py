"""What the call engine asks the outside world to do, in order.

The engine does no I/O: each input returns a list of effects that the hub (hub.py) carries out
in order — write records (`Cdr*`, `StatsReport`) and send messages (`Send`). Records come before
the messages that depend on them: a call's `CdrOpen` precedes every `call.incoming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callgate.signaling.messages import StreamStats
from callgate.signaling.reasons import Disposition, EndedBy, Party, Reason


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` (a JSON-ready server → client message) to one connected device."""

    device_id: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallOpened:
    """A call attempt as it is when first recorded (before anyone rings). Times are Unix seconds."""

    call_id: str
    caller_handle: str
    caller_device: str
    callee_handle: str
    invite_at: float
    ring_at: float | None  # None when nobody is rung (unknown user, offline, busy, denied)
    ringing_devices: int
    relay_only: bool
    policy_rule: str | None = None  # "<id>:<name>" of the deciding rule, "default", None: no policy
    policy_decision: str | None = None  # "allow" | "deny"
    recording_required: bool | None = None


@dataclass(frozen=True, slots=True)
class CdrOpen:
    call: CallOpened


@dataclass(frozen=True, slots=True)
class CdrUpdate:
    """Fields that became known; None means unchanged."""

    call_id: str
    answer_at: float | None = None
    callee_device: str | None = None
    media_at: float | None = None
    media_path: str | None = None  # "<caller local candidate type>/<callee local candidate type>"
    codec: str | None = None
    ring_at: float | None = None  # anchored calls ring once the recorder is up
    anchored: bool | None = None
    callee_user: str | None = None  # a ring group's call: the member who answered
    policy_rule: str | None = None  # ... and the rule that allows calling that member


@dataclass(frozen=True, slots=True)
class CdrFinal:
    call_id: str
    disposition: Disposition
    reason: Reason
    ended_by: EndedBy
    end_at: float
    duration_s: float  # answer → end; 0 when never answered
    detail: str | None = None  # the callee's reject reason, or the policy rule that denied
    admin: str | None = None  # the administrator who ended the call (reason ended-by-admin)


@dataclass(frozen=True, slots=True)
class StatsReport:
    """A party's `call.stats`, for the quality records."""

    call_id: str
    device_id: str
    party: Party
    at: float
    final: bool
    streams: tuple[StreamStats, ...]


Effect = Send | CdrOpen | CdrUpdate | CdrFinal | StatsReport


def records_first(effects: list[Effect]) -> list[Effect]:
    """Stable: records (CDR, stats) before messages, each group in the order produced."""
    records = [e for e in effects if not isinstance(e, Send)]
    return records + [e for e in effects if isinstance(e, Send)]
