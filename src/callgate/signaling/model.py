"""One call's server-side state, and the watchdog deadlines that follow from it.

    ringing ──answer──► connected ──both sides report media connected──► media
       │                    │                                               │
       └── timeout: no-answer   └── timeout / failed: setup-failed            └── silence / failed: media-lost

Times: `*_mono` are the clock's monotonic seconds (deadlines), `*_wall` Unix seconds (records).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from callgate.signaling.presence import Device
from callgate.signaling.reasons import Party, Reason
from callgate.types.decisions import Denial, Grant


class State(enum.Enum):
    RINGING = "ringing"
    CONNECTED = "connected"
    MEDIA = "media"


@dataclass(slots=True)
class SideMedia:
    """What one party reported about its media, and the silence watchdog's view of it."""

    connected: bool = False
    local_type: str | None = None
    remote_type: str | None = None
    codec: str | None = None
    inbound_packets: int | None = None  # last reported sum of inbound packets
    progress_mono: float = 0.0  # when inbound packets last increased (or media began)

    def observe(self, inbound_packets: int, now: float) -> None:
        if self.inbound_packets is None or inbound_packets > self.inbound_packets:
            self.progress_mono = now
        self.inbound_packets = inbound_packets


@dataclass(slots=True)
class Call:
    call_id: str
    caller: Device
    callee_handle: str
    relay_only: bool
    invite_mono: float
    invite_wall: float
    state: State = State.RINGING
    ringing: dict[str, Device] = field(default_factory=dict)  # callee devices still ringing
    callee: Device | None = None  # the device that answered
    answer_mono: float = 0.0
    answer_wall: float | None = None
    caller_media: SideMedia = field(default_factory=SideMedia)
    callee_media: SideMedia = field(default_factory=SideMedia)
    max_duration: float | None = None  # seconds after answer; the policy's max_duration_s
    # Recorded calls (policy recording_required): each party's media ends at the server's anchor.
    anchored: bool = False
    anchoring: bool = False  # waiting for the caller's leg and the first written chunk to ring
    anchor_answer: str | None = None  # the anchor's answer to the caller's offer
    # A call to a ring group (a trunk DID, signaling/ring_groups.py): the users whose devices
    # ring, each a callee until one answers; `callee_handle` is then that user's handle.
    members: frozenset[str] = frozenset()
    member_rules: dict[str, str] = field(default_factory=dict)  # member -> the rule allowing it

    def party_of(self, device: Device) -> Party | None:
        """The party `device`'s user is in this call, or None if the user is not part of it."""
        if device.handle == self.caller.handle:
            return Party.CALLER
        if device.handle == self.callee_handle or device.handle in self.members:
            return Party.CALLEE
        return None

    def active_device(self, party: Party) -> Device | None:
        return self.caller if party is Party.CALLER else self.callee

    def side(self, party: Party) -> SideMedia:
        return self.caller_media if party is Party.CALLER else self.callee_media

    def device_ids(self) -> list[str]:
        """Every device that hears about this call: the caller's and the callee's involved ones."""
        ids = [self.caller.device_id, *self.ringing]
        if self.callee is not None:
            ids.append(self.callee.device_id)
        return ids

    def media_path(self) -> str:
        caller = self.caller_media.local_type or "unknown"
        callee = self.callee_media.local_type or "unknown"
        return f"{caller}/{callee}"

    def codec(self) -> str | None:
        return self.caller_media.codec or self.callee_media.codec


def policy_fields(
    denial: Denial | None, grant: Grant | None
) -> tuple[str | None, str | None, bool | None]:
    """The CDR's policy columns for a call attempt: rule, decision, recording required."""
    if denial is not None:
        return denial.rule, "deny", None
    if grant is not None:
        return grant.rule, "allow", grant.recording_required
    return None, None, None


@dataclass(frozen=True, slots=True)
class Timeouts:
    ring: float = 30.0
    setup: float = 10.0
    silence: float = 8.0
    final_stats_grace: float = 10.0  # how long an ended call still accepts final `call.stats`


def deadline(call: Call, timeouts: Timeouts) -> tuple[float, Reason]:
    """When the call times out if nothing happens first, and with which reason."""
    if call.anchoring:  # the recorder must be up within the setup timeout, or nobody rings
        return call.invite_mono + timeouts.setup, Reason.RECORDING_UNAVAILABLE
    if call.state is State.RINGING:
        return call.invite_mono + timeouts.ring, Reason.NO_ANSWER
    if call.state is State.CONNECTED:
        watchdog = call.answer_mono + timeouts.setup, Reason.SETUP_FAILED
    else:
        quiet_since = min(call.caller_media.progress_mono, call.callee_media.progress_mono)
        watchdog = quiet_since + timeouts.silence, Reason.MEDIA_LOST
    if call.max_duration is not None and call.answer_mono + call.max_duration <= watchdog[0]:
        return call.answer_mono + call.max_duration, Reason.MAX_DURATION
    return watchdog


@dataclass(frozen=True, slots=True)
class HeldCall:
    """An answered call another signaling node held when it died, as its record tells
    (docs/scaling.md): what the node that takes it over rebuilds the call from."""

    call_id: str
    caller_handle: str
    caller_device: str
    callee_handle: str
    callee_device: str
    invite_wall: float
    answer_wall: float
    media: bool  # both parties had reported media connected
    relay_only: bool = False


@dataclass(frozen=True, slots=True)
class Ended:
    """An ended call kept for `final_stats_grace` so late final stats are still recorded."""

    call_id: str
    caller_device: str
    callee_device: str | None
    expires_mono: float

    def party_of(self, device_id: str) -> Party | None:
        if device_id == self.caller_device:
            return Party.CALLER
        if device_id == self.callee_device:
            return Party.CALLEE
        return None
