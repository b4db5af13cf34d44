"""The callee answers or declines, a party hangs up (a ring group's member declines alone).

First answer wins: the other ringing devices hear `answered-elsewhere`. A decline from a ringing
device ends the call `rejected`, but a ring group's member's only stops that member's devices.
The caller cancels a call still ringing with `call.hangup`; after the answer either party hangs up.
"""

from __future__ import annotations

from callgate.signaling import messages as m
from callgate.signaling.effects import CdrUpdate, Effect, Send, records_first
from callgate.signaling.engine_base import EngineBase, Refusal
from callgate.signaling.model import Call, State
from callgate.signaling.presence import Device
from callgate.signaling.reasons import EndedBy, Party, Reason
from callgate.signaling.sdp import filter_sdp


class Answering(EngineBase):
    def answer(self, device_id: str, request_id: str, call_id: str, sdp: str) -> list[Effect]:
        """First answer wins; the other ringing devices hear `answered-elsewhere`."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if party is not Party.CALLEE:
                raise Refusal(m.BAD_REQUEST, "only the callee answers")
            if call.state is not State.RINGING or device_id not in call.ringing:
                raise Refusal(m.CONFLICT, "the call was answered by another device")
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        others = [other for other in call.ringing if other != device_id]
        for other in others:
            del self._call_by_device[other]
        call.ringing.clear()
        call.state = State.CONNECTED
        call.callee = device
        call.answer_mono = self._clock.monotonic()
        call.answer_wall = self._clock.wall()
        group = bool(call.members)
        # a ring group's call: from now on a call to the member who answered, under the rule
        # that allows calling that member (the attempt's record named the first one's) — but a
        # recorded call keeps the rule that made it recorded, as its recording does, so the
        # record says why (docs/sip.md, "Ring groups")
        rule = call.member_rules.get(device.handle) if group and not call.anchored else None
        if group:
            call.callee_handle, call.members, call.member_rules = device.handle, frozenset(), {}
        if call.anchor_answer is not None:  # the caller's other party is the anchor
            answer_sdp = call.anchor_answer
        else:
            answer_sdp = filter_sdp(sdp, call.relay_only, self.relay_addresses)
        elsewhere = m.ended_message(call_id, Reason.ANSWERED_ELSEWHERE, EndedBy.CALLEE)
        callee_user = device.handle if group else None
        return [
            CdrUpdate(
                call_id,
                answer_at=call.answer_wall,
                callee_device=device_id,
                callee_user=callee_user,
                policy_rule=rule,
            ),
            Send(device_id, m.ack_message(request_id)),
            Send(call.caller.device_id, m.answered_message(call_id, answer_sdp)),
            *(Send(other, elsewhere) for other in others),
        ]

    def reject(
        self, device_id: str, request_id: str, call_id: str, reason: str | None = None
    ) -> list[Effect]:
        """The callee declines from a ringing device: the call ends for all."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if party is Party.CALLER:
                raise Refusal(m.BAD_REQUEST, "the caller cancels with call.hangup")
            if call.state is not State.RINGING or device_id not in call.ringing:
                raise Refusal(m.CONFLICT, "the call is not ringing on this device")
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        if call.members:
            return self._decline(call, device, request_id, reason)
        effects = self._end(call, Reason.REJECTED, EndedBy.CALLEE, reason)
        return records_first([Send(device_id, m.ack_message(request_id)), *effects])

    def _decline(
        self, call: Call, device: Device, request_id: str, reason: str | None
    ) -> list[Effect]:
        """A ring group's member declines: that member's devices stop ringing (each hears
        `call.ended` `rejected`, as after any decline), the others ring on; the call ends
        `rejected` when nobody is left ringing."""
        if len({d.handle for d in call.ringing.values()}) == 1:  # the last member ringing
            effects = self._end(call, Reason.REJECTED, EndedBy.CALLEE, reason)
            return records_first([Send(device.device_id, m.ack_message(request_id)), *effects])
        mine = [d for d, ringing in call.ringing.items() if ringing.handle == device.handle]
        for other in mine:
            del call.ringing[other]
            del self._call_by_device[other]
        call.members -= {device.handle}  # no party any more: the relay stops admitting the pair
        stopped = m.ended_message(call.call_id, Reason.REJECTED, EndedBy.CALLEE)
        return [
            Send(device.device_id, m.ack_message(request_id)),
            *(Send(d, stopped) for d in mine),
            Send(call.caller.device_id, m.ringing_message(call.call_id, len(call.ringing))),
        ]

    def hangup(self, device_id: str, request_id: str, call_id: str) -> list[Effect]:
        """Caller before answer: cancelled. Ringing callee device: rejected. After answer: hangup."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if party is Party.CALLEE and device_id in call.ringing:
                reason = Reason.REJECTED
            else:
                self._require_active(call, party, device)
                ringing = call.state is State.RINGING
                reason = Reason.CANCELLED if ringing else Reason.HANGUP
        except Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        if reason is Reason.REJECTED and call.members:
            return self._decline(call, device, request_id, None)
        effects = self._end(call, reason, EndedBy(party.value))
        return records_first([Send(device_id, m.ack_message(request_id)), *effects])
