"""Live calls as the admin API shows them: a read-only snapshot of the call engine's state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from callgate.signaling.model import Call, State

# Engine states as the API names them: "connecting" = answered, media not yet up on both sides.
API_STATES = {State.RINGING: "ringing", State.CONNECTED: "connecting", State.MEDIA: "connected"}


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_id: str
    caller: str
    callee: str
    state: str  # ringing | connecting | connected
    invited_at: datetime
    answered_at: datetime | None
    duration_s: float  # since the answer; while ringing, how long it has been ringing
    media_path: str | None  # "<caller candidate type>/<callee candidate type>" once in media
    relay: str | None  # relayed addresses the call's SDPs offered, if any
    trunk: str | None = None  # a call to a number: the SIP trunk it went through


def live_call(call: Call, now_mono: float, relays: list[str] | None = None) -> LiveCall:
    answered = call.answer_wall is not None
    since = call.answer_mono if answered else call.invite_mono
    return LiveCall(
        call_id=call.call_id,
        caller=call.caller.handle,
        callee=call.callee_handle,
        state=API_STATES[call.state],
        invited_at=datetime.fromtimestamp(call.invite_wall, UTC),
        answered_at=(
            datetime.fromtimestamp(call.answer_wall, UTC) if call.answer_wall is not None else None
        ),
        duration_s=round(max(0.0, now_mono - since), 3),
        media_path=call.media_path() if call.state is State.MEDIA else None,
        relay=", ".join(relays) if relays else None,
    )
