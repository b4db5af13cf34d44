"""Several nodes: a call outlives its node (docs/scaling.md, signaling/handover.py).

A party whose signaling connection was lost with its node re-attaches its side of an answered
call from another device (`reattach`); a node that takes over the call of a dead one rebuilds it
from its record first (`adopt`). While the bus between nodes is down, the parties there are not
counted silent (`excuse_silence`).
"""

from __future__ import annotations

from collections.abc import Collection

from callgate.signaling import messages as m
from callgate.signaling.effects import Effect, Send
from callgate.signaling.engine_base import EngineBase, Refusal
from callgate.signaling.model import Call, HeldCall, State
from callgate.signaling.presence import Device
from callgate.signaling.reasons import Party


class Reattaching(EngineBase):
    def reattach(self, device_id: str, request_id: str, call_id: str) -> list[Effect]:
        """A party's device takes its side of an answered call over (its signaling connection
        was lost with its node); the party's previous device no longer carries the call."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if call.state is State.RINGING:
                raise Refusal(m.CONFLICT, "only an answered call can be re-attached")
            current = self._call_by_device.get(device_id)
            if current is not None and current is not call:
                raise Refusal(m.CONFLICT, "this device is in another call")
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        previous = call.active_device(party)
        if previous is not None and previous.device_id != device_id:
            self._call_by_device.pop(previous.device_id, None)
        if party is Party.CALLER:
            call.caller = device
        else:
            call.callee = device
        self._call_by_device[device_id] = call
        side = call.side(party)  # the silence watchdog restarts for this side
        side.inbound_packets, side.progress_mono = None, self._clock.monotonic()
        state = {"call_id": call_id, "role": party.value, "state": call.state.value}
        return [Send(device_id, m.ack_message(request_id, **state))]

    def adopt(self, held: HeldCall, device_id: str, request_id: str) -> list[Effect]:
        """Take over an answered call whose node died (the caller won its record first), then
        re-attach `device_id` to it. Durations keep counting from the true answer time."""
        if held.call_id in self._calls:
            return self.reattach(device_id, request_id, held.call_id)
        now_mono, now_wall = self._clock.monotonic(), self._clock.wall()
        caller = self._device_or_absent(held.caller_device, held.caller_handle, held.relay_only)
        callee = self._device_or_absent(held.callee_device, held.callee_handle, held.relay_only)
        call = Call(
            call_id=held.call_id,
            caller=caller,
            callee_handle=held.callee_handle,
            relay_only=held.relay_only,
            invite_mono=now_mono - max(0.0, now_wall - held.invite_wall),
            invite_wall=held.invite_wall,
            state=State.MEDIA if held.media else State.CONNECTED,
            callee=callee,
            answer_mono=now_mono - max(0.0, now_wall - held.answer_wall),
            answer_wall=held.answer_wall,
        )
        for side in (call.caller_media, call.callee_media):
            side.connected, side.progress_mono = held.media, now_mono
        self._calls[call.call_id] = call
        for device in (caller, callee):
            if device.device_id not in self._call_by_device:
                self._call_by_device[device.device_id] = call
        return self.reattach(device_id, request_id, held.call_id)

    def excuse_silence(self, device_ids: Collection[str]) -> None:
        """These devices' reports cannot reach this node (the bus between nodes is down): their
        side of a call in media does not count as silent meanwhile."""
        now = self._clock.monotonic()
        for device_id in device_ids:
            call = self._call_by_device.get(device_id)
            if call is None or call.state is not State.MEDIA:
                continue
            party = Party.CALLER if call.caller.device_id == device_id else Party.CALLEE
            if call.active_device(party) is not None:
                call.side(party).progress_mono = now

    def _device_or_absent(self, device_id: str, handle: str, relay_only: bool) -> Device:
        """The connected device, or a stand-in for one not (yet) here: messages to it go
        nowhere until its party re-attaches."""
        if device_id in self._presence:
            return self._presence.get(device_id)
        return Device(device_id, handle, handle, relay_only)
