"""The server-owned call state machine: pure, no I/O, on an injectable clock.

`CallEngine` takes already-parsed inputs (a device connected, a request arrived, time passed) and
returns the effects to carry out, in order (see `effects.py`). Every request gets exactly one reply,
`ack` or `error` with its id. Within one input's effects, records come before messages.

Each request handler reads: validate → authorize → act → respond. Authorization: a device whose
user is not a party of the call gets `not-found` (existence is not leaked); a party's device that
is not the one carrying the call for its side, or a request the call's state does not allow, gets
`conflict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Literal, NoReturn

from callgate.clock import Clock
from callgate.signaling import messages as m
from callgate.signaling.call_ids import CallIds
from callgate.signaling.effects import (
    CallOpened,
    CdrFinal,
    CdrOpen,
    CdrUpdate,
    Effect,
    Send,
    StatsReport,
    records_first,
)
from callgate.signaling.model import (
    Call,
    Ended,
    HeldCall,
    State,
    Timeouts,
    deadline,
    policy_fields,
)
from callgate.signaling.presence import Device, Presence
from callgate.signaling.reasons import EndedBy, Party, Reason, disposition_for
from callgate.signaling.sdp import filter_candidate, filter_sdp, normalize_addresses
from callgate.types.decisions import Denial, Grant

GROUP_NOT_RECORDED = "recording a call to a ring group is not supported"


def _group_refusal(denial: Denial | None, callees: Sequence[Device], busy: bool) -> Reason | None:
    if denial is not None:
        return Reason.POLICY_DENIED
    if not callees:
        return Reason.BUSY if busy else Reason.OFFLINE
    return None


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallEngine:
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

    def end_by_admin(self, call_id: str, admin: str) -> list[Effect] | None:
        """An administrator ends a live call: both parties hear `ended-by-admin`; None when the
        call is not live."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        effects = self._end(call, Reason.ENDED_BY_ADMIN, EndedBy.SERVER)
        return [replace(e, admin=admin) if isinstance(e, CdrFinal) else e for e in effects]

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

    # --- requests ------------------------------------------------------------------------------

    def invite(
        self,
        device_id: str,
        request_id: str,
        to: str,
        sdp: str,
        callee_exists: bool,
        denial: Denial | None = None,
        grant: Grant | None = None,
    ) -> list[Effect]:
        """Open a call attempt: record it, then ring every online device of `to`, or end it.

        `denial` / `grant` are the policy's decision (None: no policy consulted). A grant's
        constraints hold for the whole call: relay_only strips non-relay candidates from both
        parties' SDPs and trickled candidates; max_duration_s ends it `max-duration` after answer.
        """
        caller = self._presence.get(device_id)
        refused = self._refuse_request(caller, device_id, request_id, to)
        if refused is not None:
            return refused
        callees = self._presence.devices_of(to) if callee_exists and denial is None else []
        call = self._new_call(caller, to, callees, grant)
        outcome = self._refusal_reason(callee_exists, denial, callees)
        return self._place(call, request_id, sdp, callees, denial, grant, outcome, None)

    def invite_group(
        self,
        device_id: str,
        request_id: str,
        to: str,
        sdp: str,
        members: Mapping[str, str | None],
        denial: Denial | None = None,
        grant: Grant | None = None,
    ) -> list[Effect]:
        """A call to a ring group: `to` names the group (its record's callee until someone
        answers) and the devices of `members` (handle -> the rule that allows calling that
        member, if any) all ring, but for members already in a call; the first answer wins and
        the record then names the member and the member's rule. A group's call is never
        recorded: one that must be ends `recording-unavailable`.

        The call's members are the users actually rung (online, not busy): only they are
        parties (`together`, `party_of`), and a member who declines stops being one."""
        caller = self._presence.get(device_id)
        refused = self._refuse_request(caller, device_id, request_id, to)
        if refused is not None:
            return refused
        wanted = {h: rule for h, rule in members.items() if h != caller.handle}
        callees, busy = self._group_devices(wanted) if denial is None else ([], False)
        call = self._new_call(caller, to, callees, grant)
        call.members = frozenset(d.handle for d in callees)
        call.member_rules = {h: r for h, r in wanted.items() if h in call.members and r}
        outcome, detail = _group_refusal(denial, callees, busy), None
        if outcome is None and grant is not None and grant.recording_required:
            outcome, detail = Reason.RECORDING_UNAVAILABLE, GROUP_NOT_RECORDED
        return self._place(call, request_id, sdp, callees, denial, grant, outcome, detail)

    def _refuse_request(
        self, caller: Device, device_id: str, request_id: str, to: str
    ) -> list[Effect] | None:
        """An invite no call is opened for (no record either): an error reply, else None."""
        if to == caller.handle:
            return self._error(device_id, request_id, m.BAD_REQUEST, "cannot call yourself")
        if device_id in self._call_by_device:
            return self._error(device_id, request_id, m.CONFLICT, "this device is in a call")
        return None

    def _new_call(
        self, caller: Device, to: str, callees: Sequence[Device], grant: Grant | None
    ) -> Call:
        return Call(
            call_id=self._new_call_id(),
            caller=caller,
            callee_handle=to,
            relay_only=caller.relay_only
            or any(d.relay_only for d in callees)
            or (grant is not None and grant.relay_only),
            invite_mono=self._clock.monotonic(),
            invite_wall=self._clock.wall(),
            max_duration=grant.max_duration_s if grant is not None else None,
        )

    def _place(
        self,
        call: Call,
        request_id: str,
        sdp: str,
        callees: Sequence[Device],
        denial: Denial | None,
        grant: Grant | None,
        outcome: Reason | None,
        detail: str | None,
    ) -> list[Effect]:
        """Record the attempt, then ring `callees`, wait for the recorder, or end it (`outcome`)."""
        caller = call.caller
        policy_rule, policy_decision, recording_required = policy_fields(denial, grant)
        if denial is not None:
            detail = denial.rule
        hold = outcome is None and bool(recording_required)  # ring once the recorder is up
        policy = {"ice_transport_policy": "relay" if call.relay_only else "all"}
        opened = CallOpened(
            call_id=call.call_id,
            caller_handle=caller.handle,
            caller_device=caller.device_id,
            callee_handle=call.callee_handle,
            invite_at=call.invite_wall,
            ring_at=None if outcome is not None or hold else call.invite_wall,
            ringing_devices=0 if outcome is not None or hold else len(callees),
            relay_only=call.relay_only,
            policy_rule=policy_rule,
            policy_decision=policy_decision,
            recording_required=recording_required,
        )
        effects: list[Effect] = [
            CdrOpen(opened),
            Send(caller.device_id, m.ack_message(request_id, call_id=call.call_id, **policy)),
        ]
        if outcome is not None:
            if denial is not None:
                message = m.denied_message(call.call_id, denial.reason, denial.rule)
                effects.append(Send(caller.device_id, message))
            return records_first(effects + self._end(call, outcome, EndedBy.SERVER, detail))
        self._calls[call.call_id] = call
        self._call_by_device[caller.device_id] = call
        if hold:
            # Nobody rings yet: the hub anchors the caller's media and starts the recorder first
            # (signaling/anchoring.py), then calls ring_anchored() or end_call().
            call.anchored = call.anchoring = True
            return effects
        offer = filter_sdp(sdp, call.relay_only, self.relay_addresses)
        return effects + self._ring(call, callees, offer)

    def _ring(self, call: Call, callees: Sequence[Device], offer: str) -> list[Effect]:
        effects: list[Effect] = []
        for device in callees:
            call.ringing[device.device_id] = device
            self._call_by_device[device.device_id] = call
            message = m.incoming_message(
                call.call_id, call.caller.handle, call.caller.display_name, offer, call.relay_only
            )
            effects.append(Send(device.device_id, message))
        effects.append(Send(call.caller.device_id, m.ringing_message(call.call_id, len(callees))))
        return effects

    def _group_devices(self, members: Collection[str]) -> tuple[list[Device], bool]:
        """The devices of a ring group's members that are not in a call, and whether a member
        was left out for being in one (a member is busy as a user is: any device in a call)."""
        devices: list[Device] = []
        busy = False
        for handle in sorted(members):
            mine = self._presence.devices_of(handle)
            if any(d.device_id in self._call_by_device for d in mine):
                busy = True
            else:
                devices += mine
        return devices, busy

    def anchoring_call(self, call_id: str) -> Call | None:
        """The live call `call_id` if it waits for its anchor before ringing."""
        call = self._calls.get(call_id)
        return call if call is not None and call.anchoring else None

    def anchored_call(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        return call if call is not None and call.anchored else None

    def ring_anchored(
        self, call_id: str, caller_answer: str, callee_offer: str, notice: dict[str, object]
    ) -> list[Effect]:
        """The caller's media reaches the anchor and is being recorded: ring the callee with the
        anchor's offer (the callee's "other party" is the anchor). Each party hears `notice`."""
        call = self.anchoring_call(call_id)
        if call is None:
            return []
        call.anchoring = False
        call.anchor_answer = caller_answer
        callees = self._presence.devices_of(call.callee_handle)
        outcome = self._refusal_reason(True, None, callees)
        if outcome is not None:
            return records_first(self._end(call, outcome, EndedBy.SERVER))
        now = self._clock.wall()
        effects: list[Effect] = [CdrUpdate(call_id, ring_at=now, anchored=True)]
        effects += self._ring(call, callees, callee_offer)
        effects += [Send(d.device_id, dict(notice)) for d in callees]
        return effects

    def end_call(self, call_id: str, reason: Reason, detail: str | None = None) -> list[Effect]:
        """The server ends a live call (recording unavailable or failed); [] when not live."""
        call = self._calls.get(call_id)
        if call is None:
            return []
        return records_first(self._end(call, reason, EndedBy.SERVER, detail))

    def _refusal_reason(
        self, callee_exists: bool, denial: Denial | None, callees: Sequence[Device]
    ) -> Reason | None:
        if denial is not None:
            return Reason.POLICY_DENIED
        if not callee_exists:
            return Reason.UNKNOWN_USER
        if not callees:
            return Reason.OFFLINE
        if any(d.device_id in self._call_by_device for d in callees):
            return Reason.BUSY
        return None

    def answer(self, device_id: str, request_id: str, call_id: str, sdp: str) -> list[Effect]:
        """First answer wins; the other ringing devices hear `answered-elsewhere`."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if party is not Party.CALLEE:
                raise _Refusal(m.BAD_REQUEST, "only the callee answers")
            if call.state is not State.RINGING or device_id not in call.ringing:
                raise _Refusal(m.CONFLICT, "the call was answered by another device")
        except _Refusal as refusal:
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
        # that allows calling that member (the attempt's record named the first one's)
        rule = call.member_rules.get(device.handle) if group else None
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

    def candidate(
        self, device_id: str, request_id: str, call_id: str, candidate: m.IceCandidate
    ) -> list[Effect]:
        """Forward a trickled candidate to the other party (every ringing device before answer)."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            self._require_active(call, party, device)
            if call.anchored:  # the hub gives it to the party's anchor leg
                targets = []
            elif party is Party.CALLEE:
                targets = [call.caller.device_id]
            elif call.callee is not None:
                targets = [call.callee.device_id]
            else:
                targets = list(call.ringing)
        except _Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        forwarded = filter_candidate(candidate.candidate, call.relay_only, self.relay_addresses)
        if forwarded is None:
            return [Send(device_id, m.ack_message(request_id, forwarded=False))]
        message = m.candidate_message(
            call_id, candidate.model_copy(update={"candidate": forwarded})
        )
        return [
            Send(device_id, m.ack_message(request_id, forwarded=True)),
            *(Send(target, message) for target in targets),
        ]

    def reject(
        self, device_id: str, request_id: str, call_id: str, reason: str | None = None
    ) -> list[Effect]:
        """The callee declines from a ringing device: the call ends for all."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if party is Party.CALLER:
                raise _Refusal(m.BAD_REQUEST, "the caller cancels with call.hangup")
            if call.state is not State.RINGING or device_id not in call.ringing:
                raise _Refusal(m.CONFLICT, "the call is not ringing on this device")
        except _Refusal as refusal:
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
        except _Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        if reason is Reason.REJECTED and call.members:
            return self._decline(call, device, request_id, None)
        effects = self._end(call, reason, EndedBy(party.value))
        return records_first([Send(device_id, m.ack_message(request_id)), *effects])

    def media(
        self,
        device_id: str,
        request_id: str,
        call_id: str,
        state: Literal["connected", "failed"],
        local_type: str | None,
        remote_type: str | None,
        codec: str | None,
    ) -> list[Effect]:
        """A party's ICE/DTLS reached media (`connected`) or gave up (`failed`)."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            self._require_active(call, party, device)
            if call.state is State.RINGING:
                raise _Refusal(m.CONFLICT, "the call has not been answered")
        except _Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        ack = Send(device_id, m.ack_message(request_id))
        if state == "failed":
            reason = Reason.MEDIA_LOST if call.state is State.MEDIA else Reason.SETUP_FAILED
            return records_first([ack, *self._end(call, reason, EndedBy.SERVER)])
        side = call.side(party)
        before = (call.media_path(), call.codec())
        side.connected = True
        side.local_type = local_type or side.local_type
        side.remote_type = remote_type or side.remote_type
        side.codec = codec or side.codec
        both = call.caller_media.connected and call.callee_media.connected
        if call.state is State.CONNECTED and both:
            return [self._enter_media(call), ack]
        if call.state is State.MEDIA and (call.media_path(), call.codec()) != before:
            return [CdrUpdate(call_id, media_path=call.media_path(), codec=call.codec()), ack]
        return [ack]

    def _enter_media(self, call: Call) -> CdrUpdate:
        now = self._clock.monotonic()
        call.state = State.MEDIA
        call.caller_media.progress_mono = now
        call.callee_media.progress_mono = now
        return CdrUpdate(
            call.call_id,
            media_at=self._clock.wall(),
            media_path=call.media_path(),
            codec=call.codec(),
        )

    def stats(
        self,
        device_id: str,
        request_id: str,
        call_id: str,
        streams: Sequence[m.StreamStats],
        final: bool,
    ) -> list[Effect]:
        """Record a party's stats; inbound packets that stop increasing trip the silence watchdog."""
        device = self._presence.get(device_id)
        ended = self._ended.get(call_id)
        try:
            if ended is not None:
                party = ended.party_of(device_id) or self._not_found()
            else:
                call, party = self._find(device, call_id)
                self._require_active(call, party, device)
                if call.state is State.RINGING:
                    raise _Refusal(m.CONFLICT, "the call has not been answered")
                inbound = sum(s.packets for s in streams if s.direction == "inbound")
                call.side(party).observe(inbound, self._clock.monotonic())
        except _Refusal as refusal:
            return self._error(device_id, request_id, refusal.code, refusal.message)
        report = StatsReport(call_id, device_id, party, self._clock.wall(), final, tuple(streams))
        return [report, Send(device_id, m.ack_message(request_id))]

    # --- several nodes: a call outlives its node (docs/scaling.md) ------------------------------

    def reattach(self, device_id: str, request_id: str, call_id: str) -> list[Effect]:
        """A party's device takes its side of an answered call over (its signaling connection
        was lost with its node); the party's previous device no longer carries the call."""
        device = self._presence.get(device_id)
        try:
            call, party = self._find(device, call_id)
            if call.state is State.RINGING:
                raise _Refusal(m.CONFLICT, "only an answered call can be re-attached")
            current = self._call_by_device.get(device_id)
            if current is not None and current is not call:
                raise _Refusal(m.CONFLICT, "this device is in another call")
        except _Refusal as refusal:
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
        raise _Refusal(m.NOT_FOUND, "no such call")

    @staticmethod
    def _require_active(call: Call, party: Party, device: Device) -> None:
        active = call.active_device(party)
        if active is None or active.device_id != device.device_id:
            raise _Refusal(m.CONFLICT, "the call is not on this device")

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
