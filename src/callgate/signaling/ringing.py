"""Opening a call and ringing the callee's devices (one user's, or a ring group's members').

An invite is refused with an error and no call when it cannot be placed at all (calling oneself,
a device already in a call); otherwise the attempt is recorded first, then every online device of
the callee rings, or the call ends at once (policy denial, unknown user, offline, busy). A call
that must be recorded rings only once its anchor is up (`ring_anchored`, signaling/anchoring.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from callgate.signaling import messages as m
from callgate.signaling.effects import CallOpened, CdrOpen, CdrUpdate, Effect, Send, records_first
from callgate.signaling.engine_base import EngineBase
from callgate.signaling.model import Call, policy_fields
from callgate.signaling.presence import Device
from callgate.signaling.reasons import EndedBy, Reason
from callgate.signaling.sdp import filter_sdp
from callgate.types.decisions import Denial, Grant


def _group_refusal(denial: Denial | None, callees: Sequence[Device], busy: bool) -> Reason | None:
    if denial is not None:
        return Reason.POLICY_DENIED
    if not callees:
        return Reason.BUSY if busy else Reason.OFFLINE
    return None


class Ringing(EngineBase):
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
        the record then names the member and the member's rule. A group's call that must be
        recorded is held, as a call to one user is, until the anchor records the caller; the
        members then ring with the anchor's offer (`ring_anchored`).

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
        outcome = _group_refusal(denial, callees, busy)
        return self._place(call, request_id, sdp, callees, denial, grant, outcome, None)

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
        if call.members:  # a ring group's: the members still online and not busy now
            callees, busy = self._group_devices(call.members)
            call.members = frozenset(d.handle for d in callees)
            outcome = _group_refusal(None, callees, busy)
        else:
            callees = self._presence.devices_of(call.callee_handle)
            outcome = self._refusal_reason(True, None, callees)
        if outcome is not None:
            return records_first(self._end(call, outcome, EndedBy.SERVER))
        now = self._clock.wall()
        effects: list[Effect] = [CdrUpdate(call_id, ring_at=now, anchored=True)]
        effects += self._ring(call, callees, callee_offer)
        effects += [Send(d.device_id, dict(notice)) for d in callees]
        return effects

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
