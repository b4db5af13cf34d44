"""The call engine's tables and what every request handler shares (signaling/engine.py).

`EngineBase` holds the presence of devices, the live calls (by id and by device) and the calls
ended recently (their final stats still count), and answers the questions asked of them; it ends
calls (`_end`: the record's final effect, `call.ended` to every device involved), on request,
on a device's disconnection and when a watchdog deadline passes (`tick`).

The lookups every handler authorizes with: `_find` (a device whose user is not a party of the
call gets `not-found`, existence is not leaked) and `_require_active` (a party's device that
does not carry the call for its side gets `conflict`). A handler raises `Refusal` and replies
with `_error`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import NoReturn

from callgate.clock import Clock
from callgate.signaling import messages as m
from callgate.signaling.call_ids import CallIds
from callgate.signaling.effects import CdrFinal, Effect, Send, records_first
from callgate.signaling.model import Call, Ended, Timeouts, deadline
from callgate.signaling.presence import Device, Presence
from callgate.signaling.reasons import EndedBy, Party, Reason, disposition_for
from callgate.signaling.sdp import normalize_addresses


class Refusal(Exception):
    """A request the engine refuses: its handler replies `error` with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EngineBase:
    def __init__(
        self,
        clock: Clock,
        *,
        ring_timeout: float = 30.0,
        setup_timeout: float = 10.0,
        silence_timeout: float = 8.0,
        final_stats_grace: float = 10.0,
        relay_addresses: Collection[str] = (),
        new_call_id: Callable[[], str] | None = None,
    ) -> None:
        self._clock = clock
        self.timeouts = Timeouts(ring_timeout, setup_timeout, silence_timeout, final_stats_grace)
        self.relay_addresses = normalize_addresses(relay_addresses)
        self._new_call_id = new_call_id or CallIds()  # random uuid4 hex
        self._presence = Presence()
        self._calls: dict[str, Call] = {}
        self._call_by_device: dict[str, Call] = {}
        # Ended calls in the order they ended: expiries only grow (one grace for all), so the
        # first is the next to expire — the timer's question costs nothing per ended call.
        self._ended: OrderedDict[str, Ended] = OrderedDict()

    # --- queries -------------------------------------------------------------------------------

    def call_of(self, device_id: str) -> str | None:
        """The id of the call this device is ringing for or in, if any."""
        call = self._call_by_device.get(device_id)
        return call.call_id if call is not None else None

    def is_live(self, call_id: str) -> bool:
        return call_id in self._calls

    def active_calls(self) -> int:
        return len(self._calls)

    def live_calls(self) -> list[Call]:
        """The calls ringing or in progress, oldest first (read them, never change them)."""
        return sorted(self._calls.values(), key=lambda call: call.invite_mono)

    def together(self, user_a: str, user_b: str) -> bool:
        """Are these two users the parties of a live call (ringing or connected)? Calls denied by
        policy never become live. Call-bound relaying (turn/callbound.py) asks this."""
        pair = {user_a, user_b}
        for call in self._calls.values():
            callees = {call.callee_handle, *call.members}  # a ring group's: each member
            if call.caller.handle in pair and callees & (pair - {call.caller.handle}):
                return True
        return False

    def ringing_members(self, call_id: str) -> tuple[str, frozenset[str]] | None:
        """A ring group's call still ringing: (its caller, the members still rung)."""
        call = self._calls.get(call_id)
        if call is None or not call.members:
            return None
        return call.caller.handle, call.members

    def next_deadline(self) -> float | None:
        """The monotonic time at which `tick()` has something to do, or None."""
        times = [deadline(call, self.timeouts)[0] for call in self._calls.values()]
        if self._ended:
            times.append(next(iter(self._ended.values())).expires_mono)
        return min(times, default=None)

    def anchoring_call(self, call_id: str) -> Call | None:
        """The live call `call_id` if it waits for its anchor before ringing."""
        call = self._calls.get(call_id)
        return call if call is not None and call.anchoring else None

    def anchored_call(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        return call if call is not None and call.anchored else None

    # --- presence ------------------------------------------------------------------------------

    def device_connected(
        self, device_id: str, user_handle: str, display_name: str, relay_only: bool = False
    ) -> list[Effect]:
        self._presence.add(Device(device_id, user_handle, display_name, relay_only))
        return []

    def device_disconnected(self, device_id: str) -> list[Effect]:
        """A socket closed: end its call (or stop ringing it, if other devices still ring)."""
        if self._presence.remove(device_id) is None:
            return []
        call = self._call_by_device.get(device_id)
        if call is None:
            return []
        if device_id == call.caller.device_id:
            return self._end(call, Reason.CALLER_DISCONNECTED, EndedBy.CALLER)
        if call.callee is not None and device_id == call.callee.device_id:
            return self._end(call, Reason.CALLEE_DISCONNECTED, EndedBy.CALLEE)
        gone = call.ringing.pop(device_id)
        del self._call_by_device[device_id]
        if not call.ringing:  # a ring group's too: whoever declined, the last one rung left
            return self._end(call, Reason.CALLEE_DISCONNECTED, EndedBy.CALLEE)
        if all(d.handle != gone.handle for d in call.ringing.values()):
            call.members -= {gone.handle}  # a group's member no device of whom still rings
        return [Send(call.caller.device_id, m.ringing_message(call.call_id, len(call.ringing)))]

    # --- the server ends a call ----------------------------------------------------------------

    def end_by_admin(self, call_id: str, admin: str) -> list[Effect] | None:
        """An administrator ends a live call: both parties hear `ended-by-admin`; None when the
        call is not live."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        effects = self._end(call, Reason.ENDED_BY_ADMIN, EndedBy.SERVER)
        return [replace(e, admin=admin) if isinstance(e, CdrFinal) else e for e in effects]

    def end_call(self, call_id: str, reason: Reason, detail: str | None = None) -> list[Effect]:
        """The server ends a live call (recording unavailable or failed); [] when not live."""
        call = self._calls.get(call_id)
        if call is None:
            return []
        return records_first(self._end(call, reason, EndedBy.SERVER, detail))

    # --- time ----------------------------------------------------------------------------------

    def tick(self) -> list[Effect]:
        """End every call whose ring, setup or silence deadline has passed."""
        now = self._clock.monotonic()
        effects: list[Effect] = []
        for call in list(self._calls.values()):
            when, reason = deadline(call, self.timeouts)
            if now >= when:
                effects.extend(self._end(call, reason, EndedBy.SERVER))
        while self._ended and now >= next(iter(self._ended.values())).expires_mono:
            self._ended.popitem(last=False)
        return records_first(effects)

    # --- helpers -------------------------------------------------------------------------------

    def _find(self, device: Device, call_id: str) -> tuple[Call, Party]:
        call = self._calls.get(call_id)
        party = call.party_of(device) if call is not None else None
        if call is None or party is None:
            self._not_found()
        return call, party

    @staticmethod
    def _not_found() -> NoReturn:
        raise Refusal(m.NOT_FOUND, "no such call")

    @staticmethod
    def _require_active(call: Call, party: Party, device: Device) -> None:
        active = call.active_device(party)
        if active is None or active.device_id != device.device_id:
            raise Refusal(m.CONFLICT, "the call is not on this device")

    @staticmethod
    def _error(device_id: str, request_id: str, code: str, message: str) -> list[Effect]:
        return [Send(device_id, m.error_message(request_id, code, message))]

    def _end(
        self, call: Call, reason: Reason, ended_by: EndedBy, detail: str | None = None
    ) -> list[Effect]:
        """Finalize the record, tell every involved device still connected, forget the call."""
        answered = call.answer_wall is not None
        duration = self._clock.monotonic() - call.answer_mono if answered else 0.0
        effects: list[Effect] = [
            CdrFinal(
                call_id=call.call_id,
                disposition=disposition_for(reason, answered),
                reason=reason,
                ended_by=ended_by,
                end_at=self._clock.wall(),
                duration_s=round(duration, 3),
                detail=detail,
            )
        ]
        ended = m.ended_message(call.call_id, reason, ended_by)
        for device_id in call.device_ids():
            self._call_by_device.pop(device_id, None)
            if device_id in self._presence:
                effects.append(Send(device_id, ended))
        self._calls.pop(call.call_id, None)
        if call.callee is not None:
            expires = self._clock.monotonic() + self.timeouts.final_stats_grace
            callee_device = call.callee.device_id
            self._ended[call.call_id] = Ended(
                call.call_id, call.caller.device_id, callee_device, expires
            )
        return effects
