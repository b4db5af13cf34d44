"""Live calls dialled out to numbers, for the admin API (docs/sip.md, "Calls to numbers in the
live view").

Calls to numbers do not go through the call engine (their callee is no user): a desk phone's
(`sip_dialout.py`) and a softphone's (`sip_numbers.py`) are bridged by the SIP edge itself. Each
registers here while it lasts, so `GET /api/live-calls` lists it beside the engine's calls
(`SignalingHub.live_calls`) and `POST /api/live-calls/{id}/end` can end it: the call's owner is
told (`TrunkCall.stop`), sends the carrier CANCEL or BYE and ends its caller's side, and writes
the CDR with `ended_by` `admin:HANDLE` and a `call.end_by_admin` audit entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callgate.clock import Clock, SystemClock
from callgate.signaling.live import LiveCall

ENDED_BY_ADMIN = "ended-by-admin"


@dataclass(eq=False)
class TrunkCall:
    call_id: str  # the CDR's
    caller: str  # the user
    callee: str  # the E.164 number
    trunk: str
    media_path: str  # "relay/rtp" (softphone ↔ carrier) or "rtp/rtp" (desk phone ↔ carrier)
    invited_wall: float
    invited_mono: float
    answered_wall: float | None = None
    answered_mono: float | None = None
    admin: str | None = None  # who ended it from the admin API
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ended_by(self) -> str:
        """The CDR's `ended_by` when an administrator ended it."""
        return f"admin:{self.admin}"


class TrunkCalls:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._calls: dict[str, TrunkCall] = {}

    def open(self, call_id: str, caller: str, callee: str, trunk: str, path: str) -> TrunkCall:
        clock = self._clock
        call = TrunkCall(call_id, caller, callee, trunk, path, clock.wall(), clock.monotonic())
        self._calls[call_id] = call
        return call

    def answered(self, call: TrunkCall) -> None:
        call.answered_wall, call.answered_mono = self._clock.wall(), self._clock.monotonic()

    def close(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def live_calls(self) -> list[LiveCall]:
        now = self._clock.monotonic()
        return [self._live(call, now) for call in self._calls.values()]

    def end(self, call_id: str, admin: str) -> bool:
        """Ask the call's owner to end it as `admin`; False when it is not live (or already
        being ended)."""
        call = self._calls.get(call_id)
        if call is None or call.stop.is_set():
            return False
        call.admin = admin
        call.stop.set()
        return True

    @staticmethod
    def _live(call: TrunkCall, now: float) -> LiveCall:
        answered = call.answered_wall is not None
        since = call.answered_mono if call.answered_mono is not None else call.invited_mono
        return LiveCall(
            call_id=call.call_id,
            caller=call.caller,
            callee=call.callee,
            state="connected" if answered else "ringing",
            invited_at=datetime.fromtimestamp(call.invited_wall, UTC),
            answered_at=(
                datetime.fromtimestamp(call.answered_wall, UTC)
                if call.answered_wall is not None
                else None
            ),
            duration_s=round(max(0.0, now - since), 3),
            media_path=call.media_path if answered else None,
            relay=None,
            trunk=call.trunk,
        )
