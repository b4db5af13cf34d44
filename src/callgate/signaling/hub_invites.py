"""A call attempt through the hub: the per-account attempt limit, the callee's existence and the
policy's decision (on a worker thread, failing closed; invites that arrive together share a
trip: signaling/lookups.py), then the engine's invite — to one user, to a ring group's members,
or to a number through the SIP trunk — and, for a call that must be recorded, the hand-over to
the recording anchor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from callgate.signaling import messages as m
from callgate.signaling.effects import CdrOpen, Effect
from callgate.signaling.hub_effects import HubEffects
from callgate.signaling.hub_types import Device, GroupPolicy, PairPolicy
from callgate.signaling.lookups import LOOKUP_TIMEOUT, Answer, Lookup, LookupTrips
from callgate.signaling.ratelimit import MessageRateLimiter
from callgate.signaling.reasons import Reason
from callgate.signaling.ring_groups import (
    MAX_MEMBERS,
    group_callee,
    group_verdict,
    member_rules,
    too_large,
)
from callgate.signaling.sdp import relay_candidates
from callgate.types.decisions import Denial, Grant

log = logging.getLogger(__name__)


def is_number(to: str) -> bool:
    """A telephone number rather than a handle: handles never hold "+" or ":"."""
    return to.startswith(("+", "tel:"))


# When the policy cannot be read (database down), nobody rings: compliance fails closed.
POLICY_UNAVAILABLE = Denial(rule="unavailable", reason="the call policy is unavailable")
MEMBERS_UNAVAILABLE = Denial(rule="unavailable", reason="the ring group's members are unavailable")


class HubInvites(HubEffects):
    lookup_timeout = LOOKUP_TIMEOUT  # seconds an invite waits for its lookups (lookups.py)

    def _attempt_allowed(self, handle: str) -> bool:
        bucket = self._attempts.get(handle)
        if bucket is None:
            rate = self._attempt_rate
            bucket = self._attempts[handle] = MessageRateLimiter(self.clock, rate / 60.0, rate)
        if bucket.allow():
            self._limited.discard(handle)
            return True
        if handle not in self._limited:
            self._limited.add(handle)
            log.warning(
                "%s is over %d call attempts a minute: refusing", handle, self._attempt_rate
            )
        return False

    async def _invite_user(
        self, device: Device, message: m.Invite, callee_exists: Callable[[str], bool]
    ) -> None:
        """A `call.invite` (`receive`): to a number through the SIP trunk, else to a user."""
        numbers = self.numbers
        if not self._attempt_allowed(device.handle):
            text = f"over {self._attempt_rate} call attempts a minute"
            self.send(device, m.error_message(message.id, m.RATE_LIMITED, text))
            return
        if numbers is not None and is_number(message.to):
            if self.engine.call_of(device.device_id) is not None:
                text = "this device is in a call"
                self.send(device, m.error_message(message.id, m.CONFLICT, text))
                return
            await numbers.invite(device, message)
            return
        # On a worker thread, with the invites that wait with it (signaling/lookups.py).
        if self._lookup_trips is None:
            self._lookup_trips = LookupTrips(self._lookup_many)
        lookup = Lookup(device.handle, message.to, callee_exists)
        try:
            found = await asyncio.wait_for(self._lookup_trips.lookup(lookup), self.lookup_timeout)
        except TimeoutError:  # a hung read: fail closed, its late answer discarded
            waited = self.lookup_timeout
            log.error(
                "lookups for %s -> %s over %.0f s; denying", device.handle, message.to, waited
            )
            found = (True, (POLICY_UNAVAILABLE, None))
        exists, (denial, grant) = found
        effects = self.engine.invite(
            device.device_id, message.id, message.to, message.sdp, exists, denial, grant
        )
        await self._opened(device, message.sdp, effects, grant)

    def _lookup(
        self, caller: str, callee: str, callee_exists: Callable[[str], bool]
    ) -> tuple[bool, tuple[Denial | None, Grant | None]]:
        """On a worker thread: whether the callee exists, and the policy's decision before
        anyone rings (none for unknown callees or self-calls)."""
        exists = callee_exists(callee)
        if self.policy is None or not exists or caller == callee:
            return exists, (None, None)
        return exists, self._verdict(caller, callee, datetime.fromtimestamp(self.clock.wall(), UTC))

    def _verdict(
        self, caller: str, callee: str, at: datetime
    ) -> tuple[Denial | None, Grant | None]:
        """On a worker thread: the policy's decision for one call; unreadable, a denial."""
        assert self.policy is not None
        try:
            return self.policy.verdict(caller, callee, at)
        except Exception:
            log.exception("policy decision for %s -> %s failed; denying", caller, callee)
            return POLICY_UNAVAILABLE, None

    def _lookup_many(self, lookups: Sequence[Lookup]) -> list[Answer]:
        """On a worker thread: `_lookup` for each invite of a trip, the policy's verdicts read
        in one query when the policy can (`PairPolicy`). An invite whose callee lookup failed
        gets that error, as alone; when the one read fails, each invite is decided alone (a bad
        account row denies only its own calls; the policy unreadable denies them all)."""
        policy = self.policy
        if policy is None or len(lookups) == 1 or not isinstance(policy, PairPolicy):
            return [self._lookup_one(lookup) for lookup in lookups]
        answers: list[Answer] = []
        asks: list[int] = []  # the lookups the policy decides
        for index, lookup in enumerate(lookups):
            try:
                exists = lookup.callee_exists(lookup.callee)
            except Exception as exc:
                answers.append(exc)
                continue
            answers.append((exists, (None, None)))
            if exists and lookup.caller != lookup.callee:
                asks.append(index)
        if not asks:
            return answers
        pairs = [(lookups[i].caller, lookups[i].callee) for i in asks]
        at = datetime.fromtimestamp(self.clock.wall(), UTC)
        try:
            verdicts = policy.verdict_pairs(pairs, at)
        except Exception:
            # One bad row (an account's unreadable groups) must not deny the others' calls:
            # each is decided alone, as if it had come alone (denied only if that fails too).
            log.exception("policy decisions for %d call attempts failed; each alone", len(pairs))
            verdicts = [self._verdict(caller, callee, at) for caller, callee in pairs]
        for index, verdict in zip(asks, verdicts, strict=True):
            answers[index] = (True, verdict)
        return answers

    def _lookup_one(self, lookup: Lookup) -> Answer:
        try:
            return self._lookup(lookup.caller, lookup.callee, lookup.callee_exists)
        except Exception as exc:
            return exc

    async def invite_group(
        self,
        device: Device,
        request_id: str,
        group: str,
        sdp: str,
        members_of: Callable[[str], Sequence[str]],
        max_members: int = MAX_MEMBERS,
    ) -> None:
        """A call to a ring group (a trunk DID, docs/sip.md): every member's devices ring at
        once, each member as allowed by the policy as if called alone (ring_groups.py); the
        record's callee is `group:NAME` until a member answers. Replies as `receive` does.

        Refused (recorded, the caller told why) when the group has more than `max_members`
        members, when its members or the policy cannot be read, and when the cluster bus cannot
        say where the members' devices are (fail closed, as a call to one user)."""
        if not self._attempt_allowed(device.handle):
            text = f"over {self._attempt_rate} call attempts a minute"
            self.send(device, m.error_message(request_id, m.RATE_LIMITED, text))
            return
        members, denial, grant = await asyncio.to_thread(
            self._group_lookup, device.handle, group, members_of, max_members
        )
        if denial is None and members:
            unreachable = await self.enter_members(device.handle, tuple(members), True)
            if unreachable is not None:
                denial, grant = (
                    Denial(rule="unavailable", reason=f"ring group: {unreachable}"),
                    None,
                )
        callee = group_callee(group)
        effects = self.engine.invite_group(
            device.device_id, request_id, callee, sdp, members if denial is None else {},
            denial, grant,
        )  # fmt: skip
        await self._opened(device, sdp, effects, grant)
        idle = [h for h in members if not self.engine.together(device.handle, h)]
        if idle and denial is None:  # refused, or those members busy, offline
            await self.enter_members(device.handle, idle, False)

    async def members_left(self, call_id: str, caller: str, rung: frozenset[str]) -> None:
        """Members of a ring group's call that stopped ringing (declined, devices gone, or the
        call ended before an answer): the relays stop admitting them with the caller."""
        now = self.engine.ringing_members(call_id)
        gone = rung - (now[1] if now is not None else frozenset())
        left = sorted(h for h in gone if not self.engine.together(caller, h))
        if left:
            await self.enter_members(caller, left, False)

    async def enter_members(self, caller: str, members: Sequence[str], live: bool) -> str | None:
        """Before a ring group's members ring (`live`), and for those that did not: their
        devices on other nodes, and the relays' pairs (cluster_hub.py). Returns why the
        members' devices cannot be found (nobody rings then), else None."""
        return None

    def _group_lookup(
        self,
        caller: str,
        group: str,
        members_of: Callable[[str], Sequence[str]],
        max_members: int,
    ) -> tuple[dict[str, str | None], Denial | None, Grant | None]:
        """On a worker thread: the group's members (each with the rule allowing it) and the
        policy's decision for the call; when either cannot be read, or the group is over
        `max_members`, nobody rings (fail closed) and the record says why."""
        try:
            members = tuple(h for h in members_of(group) if h != caller)
        except Exception:
            log.exception("members of ring group %s unreadable; refusing %s's call", group, caller)
            return {}, MEMBERS_UNAVAILABLE, None
        oversize = too_large(group, len(members), max_members)
        if oversize is not None:
            log.warning("refusing %s's call: %s", caller, oversize.reason)
            return {}, oversize, None
        if self.policy is None:
            return dict.fromkeys(members), None, None
        at = datetime.fromtimestamp(self.clock.wall(), UTC)
        try:
            if isinstance(self.policy, GroupPolicy):
                verdicts = self.policy.verdicts(caller, members, at)
            else:
                verdicts = {h: self.policy.verdict(caller, h, at) for h in members}
        except Exception:
            log.exception("policy decision for %s -> group %s failed; denying", caller, group)
            return {}, POLICY_UNAVAILABLE, None
        allowed, denial, grant = group_verdict(members, verdicts)
        return member_rules(allowed, verdicts), denial, grant

    async def _opened(
        self, device: Device, sdp: str, effects: list[Effect], grant: Grant | None
    ) -> None:
        """Carry out a new call attempt's effects; a recorded one goes to the anchor."""
        opened = next((e.call.call_id for e in effects if isinstance(e, CdrOpen)), None)
        live = opened is not None and self.engine.call_of(device.device_id) == opened
        anchoring = live and self.engine.anchoring_call(opened or "") is not None
        if live and not anchoring and opened is not None:
            # The offer's relay addresses go into the call's row (`_open`), no UPDATE after.
            self._relays[opened] = relay_candidates(sdp)
        await self.apply(effects)
        if anchoring and opened is not None and self.engine.call_of(device.device_id) == opened:
            await self._anchor(opened, sdp, grant)

    async def _anchor(self, call_id: str, offer_sdp: str, grant: Grant | None) -> None:
        """A call that must be recorded: the anchor takes it over, or it ends at once."""
        if self.anchoring is None:
            reason, why = Reason.RECORDING_UNAVAILABLE, "this server has no recorder"
            await self.apply(self.engine.end_call(call_id, reason, why))
            return
        self.anchoring.begin(call_id, offer_sdp, grant.rule if grant is not None else None)
