"""The signaling hub: the asyncio layer around the pure `CallEngine`.

It owns the connected devices and carries out the engine's effects in order: record effects go
to the call recorder (records/call_recorder.py, which writes them in order on its own thread),
and a message that follows a record effect is sent only once that record is committed — nobody
rings before the CDR exists, and nobody hears an outcome that a crash could still lose.
A timer task calls `engine.tick()` at the engine's next deadline (ring, setup and silence
watchdogs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from callgate.clock import Clock
from callgate.records import call_audit
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen
from callgate.records.quality import StreamStats as QualityStats
from callgate.records.quality_store import QualityRepository
from callgate.records.writer import RecordWriteError
from callgate.signaling import messages as m
from callgate.signaling.dispatch import handle_message
from callgate.signaling.effects import CdrFinal, CdrOpen, CdrUpdate, Effect, Send, StatsReport
from callgate.signaling.engine import CallEngine
from callgate.signaling.live import LiveCall, live_call
from callgate.signaling.ratelimit import MessageRateLimiter
from callgate.signaling.reasons import Party, Reason
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

# Relay sessions are recorded when allocations end, which follows the call's end by a moment:
# link them to the CDR after these delays (seconds), once more later for late closers.
LINK_DELAYS = (3.0, 30.0)
_QUEUE_LIMIT = 1000  # messages waiting for a slow client before it is disconnected


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class AnchorHooks(Protocol):
    """Recorded calls (signaling/anchoring.py): the hub hands them over at these four points."""

    def begin(self, call_id: str, offer_sdp: str, rule: str | None) -> None: ...
    def answered(self, call_id: str, answer_sdp: str) -> None: ...
    def candidate(self, call_id: str, party: Party, candidate: m.IceCandidate) -> None: ...
    def ended(self, call_id: str) -> None: ...
    async def close(self) -> None: ...


class CallPolicy(Protocol):
    """Who may call whom (policy/store.py): a denial, or a grant with the call's constraints."""

    def verdict(
        self, caller: str, callee: str, at: datetime
    ) -> tuple[Denial | None, Grant | None]: ...


@runtime_checkable
class GroupPolicy(Protocol):
    """A policy that judges a ring group's members at once (policy/store.py `verdicts`); any
    other `CallPolicy` is asked member by member."""

    def verdicts(
        self, caller: str, callees: Sequence[str], at: datetime
    ) -> dict[str, tuple[Denial | None, Grant | None]]: ...


class NumberCalls(Protocol):
    """Calls to telephone numbers through a SIP trunk (runtime/sip_numbers.py): a `call.invite`
    whose `to` is a number (`is_number`), then every request naming such a call."""

    def owns(self, call_id: str) -> bool: ...

    def together(self, user_a: str, user_b: str) -> bool: ...

    async def invite(self, device: Device, message: m.Invite) -> None: ...

    async def receive(self, device: Device, message: m.ClientMessage) -> None: ...

    async def disconnected(self, device: Device) -> None: ...

    def live_calls(self) -> list[LiveCall]: ...

    async def end_call(self, call_id: str, admin: str) -> bool: ...


def is_number(to: str) -> bool:
    """A telephone number rather than a handle: handles never hold "+" or ":"."""
    return to.startswith(("+", "tel:"))


# When the policy cannot be read (database down), nobody rings: compliance fails closed.
POLICY_UNAVAILABLE = Denial(rule="unavailable", reason="the call policy is unavailable")
MEMBERS_UNAVAILABLE = Denial(rule="unavailable", reason="the ring group's members are unavailable")


@dataclass(slots=True)
class Device:
    device_id: str
    handle: str
    queue: asyncio.Queue[dict[str, Any] | None]
    address: str | None = None  # the client's IP as the server saw it
    user_agent: str | None = None
    revoked: bool = False  # its account was taken away: the socket closes as unauthorized


class SignalingHub:
    def __init__(
        self,
        engine: CallEngine,
        cdrs: CdrRepository,
        quality: QualityRepository,
        clock: Clock,
        *,
        node_id: str | None = None,
        link_delays: Sequence[float] = LINK_DELAYS,
        policy: CallPolicy | None = None,
        call_attempts_per_minute: int = 30,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.cdrs = cdrs
        self.quality = quality
        self.clock = clock
        self.node_id = node_id
        self.link_delays = tuple(link_delays)
        self.devices: dict[str, Device] = {}
        self._per_handle: dict[str, int] = {}  # handle -> devices connected (no scan per connect)
        self.recorder = CallRecorder(cdrs, quality)
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._media_calls: set[str] = set()  # calls that reached media: relay sessions to link
        self._answered: set[str] = set()  # calls answered so far (their duration counts)
        self._relays: dict[str, list[str]] = {}  # call_id -> relay candidates seen so far
        self._relays_unwritten: set[str] = set()  # calls whose answer's relays await a write
        self._parties: dict[str, tuple[str, str]] = {}  # call_id -> (caller, callee) handles
        self.anchoring: AnchorHooks | None = None  # set when the server can record calls
        self.numbers: NumberCalls | None = None  # set when a SIP trunk can dial out
        # Several nodes (signaling/cluster_hub.py): messages for devices connected elsewhere.
        self.elsewhere: Callable[[Send], None] | None = None
        # Per account: call attempts (records written) are bounded, refusals logged once a run.
        self._attempt_rate = call_attempts_per_minute
        self._attempts: dict[str, MessageRateLimiter] = {}
        self._limited: set[str] = set()
        # Tasks waiting for record writes, by write number (increasing: see `_written`).
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.recorder.on_progress(self._progress_from_writer)
        self.recorder.on_gave_up(self._gave_up_from_writer)
        self._timer = asyncio.create_task(self._run_timer(), name="signaling-timer")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for device in list(self.devices.values()):
            device.queue.put_nowait(None)
        if self.anchoring is not None:
            await self.anchoring.close()  # every open recording gets its last chunk
        for task in list(self._background):
            task.cancel()
        await self._records_settled()
        await asyncio.to_thread(self.recorder.close)

    # -- devices -----------------------------------------------------------------------------------

    def remote_phone(self, handle: str) -> bool:
        """Has `handle` a registered SIP phone on another node? (one node: none; cluster_hub.py)"""
        return False

    def holder_relay(self, call_id: str) -> dict[str, Any] | None:
        """Where the relay of the node holding `call_id` is reached, when another node holds it
        (one node: never; cluster_view.py)."""
        return None

    async def connect(
        self,
        handle: str,
        display_name: str,
        relay_only: bool,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[Device, list[Effect]]:
        device = Device(
            uuid.uuid4().hex[:16], handle, asyncio.Queue(_QUEUE_LIMIT), address, user_agent
        )
        self.devices[device.device_id] = device
        self._per_handle[handle] = self._per_handle.get(handle, 0) + 1
        effects = self.engine.device_connected(device.device_id, handle, display_name, relay_only)
        return device, effects

    def device_count(self, handle: str) -> int:
        """Signaling sockets `handle` has open."""
        return self._per_handle.get(handle, 0)

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

    def together(self, user_a: str, user_b: str) -> bool:
        """Are these two users the parties of a live call? (call-bound relaying asks this)"""
        if self.numbers is not None and self.numbers.together(user_a, user_b):
            return True
        return self.engine.together(user_a, user_b)

    # -- administration (admin API) ----------------------------------------------------------------

    def live_calls(self) -> list[LiveCall]:
        """The calls ringing or in progress right now."""
        now = self.clock.monotonic()
        calls = self.engine.live_calls()
        live = [live_call(call, now, self._relays.get(call.call_id)) for call in calls]
        if self.numbers is not None:  # calls to numbers, bridged by the SIP edge
            live = sorted([*live, *self.numbers.live_calls()], key=lambda c: c.invited_at)
        return live

    async def end_call(self, call_id: str, admin: str) -> bool:
        """End a live call as `admin` (reason ended-by-admin); False when it is not live."""
        effects = self.engine.end_by_admin(call_id, admin)
        if effects is None:
            return self.numbers is not None and await self.numbers.end_call(call_id, admin)
        await self.apply(effects)
        return True

    async def disconnect(self, device: Device) -> None:
        if self.devices.pop(device.device_id, None) is not None:
            left = self._per_handle.pop(device.handle, 1) - 1
            if left:
                self._per_handle[device.handle] = left
        if self.numbers is not None:
            await self.numbers.disconnected(device)
        call_id = self.engine.call_of(device.device_id)
        rung = self.engine.ringing_members(call_id) if call_id is not None else None
        await self.apply(self.engine.device_disconnected(device.device_id))
        if call_id is not None and rung is not None:
            await self._members_left(call_id, *rung)

    async def receive(
        self, device: Device, message: m.ClientMessage, callee_exists: Callable[[str], bool]
    ) -> None:
        """Run one parsed client message through the engine and carry out what it asks."""
        numbers = self.numbers
        call_id = getattr(message, "call_id", None)
        if numbers is not None and isinstance(call_id, str) and numbers.owns(call_id):
            await numbers.receive(device, message)
            return
        if isinstance(message, m.Invite):
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
            # One trip to a worker thread for both lookups (each trip costs the loop a wake-up).
            exists, (denial, grant) = await asyncio.to_thread(
                self._lookup, device.handle, message.to, callee_exists
            )
            effects = self.engine.invite(
                device.device_id, message.id, message.to, message.sdp, exists, denial, grant
            )
            await self._opened(device, message.sdp, effects, grant)
            return
        declines = isinstance(message, m.Reject | m.Hangup) and isinstance(call_id, str)
        rung = self.engine.ringing_members(str(call_id)) if declines else None
        effects = handle_message(self.engine, device.device_id, message)
        if isinstance(message, m.Answer):
            self._answer_relays(device, message, effects)
        await self.apply(effects)
        if rung is not None:
            await self._members_left(str(call_id), *rung)
        if isinstance(message, m.Answer | m.Candidate):
            self._after(device, message)

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

    async def _members_left(self, call_id: str, caller: str, rung: frozenset[str]) -> None:
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

    def _after(self, device: Device, message: m.Answer | m.Candidate) -> None:
        """An accepted answer or candidate: note relays, or hand it to the call's anchor."""
        if self.engine.call_of(device.device_id) != message.call_id:
            return
        call = self.engine.anchored_call(message.call_id)
        if call is None:
            if message.call_id in self._relays_unwritten:  # no answered update carried them
                self._relays_unwritten.discard(message.call_id)
                known = self._relays.get(message.call_id)
                if known:
                    self.recorder.update(message.call_id, relay_candidates=list(known))
            return
        if self.anchoring is None:
            return
        if isinstance(message, m.Answer):
            if call.callee is not None and call.callee.device_id == device.device_id:
                self.anchoring.answered(message.call_id, message.sdp)
        else:
            party = Party.CALLER if device.device_id == call.caller.device_id else Party.CALLEE
            self.anchoring.candidate(message.call_id, party, message.candidate)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task until it is done (cancelled at stop)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _lookup(
        self, caller: str, callee: str, callee_exists: Callable[[str], bool]
    ) -> tuple[bool, tuple[Denial | None, Grant | None]]:
        """On a worker thread: whether the callee exists, and the policy's decision before
        anyone rings (none for unknown callees or self-calls)."""
        exists = callee_exists(callee)
        if self.policy is None or not exists or caller == callee:
            return exists, (None, None)
        at = datetime.fromtimestamp(self.clock.wall(), UTC)
        try:
            return exists, self.policy.verdict(caller, callee, at)
        except Exception:
            log.exception("policy decision for %s -> %s failed; denying", caller, callee)
            return exists, (POLICY_UNAVAILABLE, None)

    def _answer_relays(self, device: Device, message: m.Answer, effects: Sequence[Effect]) -> None:
        """An accepted answer's relayed addresses (its relay sessions are linked by them), noted
        before its effects run so that the answered update writes them (`_update`)."""
        call_id = message.call_id
        accepted = any(
            isinstance(e, CdrUpdate)
            and e.call_id == call_id
            and e.answer_at is not None
            and e.callee_device == device.device_id
            for e in effects
        )
        if not accepted or self.engine.anchored_call(call_id) is not None:
            return  # a refused answer adds nothing to anyone's record; the anchor has its own
        known = self._relays.setdefault(call_id, [])
        known.extend(a for a in relay_candidates(message.sdp) if a not in known)
        self._relays_unwritten.add(call_id)

    def send(self, device: Device, message: dict[str, Any]) -> None:
        try:
            device.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("device %s is not reading; disconnecting it", device.device_id)
            with contextlib.suppress(asyncio.QueueEmpty):
                device.queue.get_nowait()
            device.queue.put_nowait(None)

    # -- effects -----------------------------------------------------------------------------------

    async def apply(self, effects: Sequence[Effect]) -> None:
        """Carry out effects in order (`_apply`), to the end even if the awaiting task is
        cancelled: a call's end cancels its anchoring tasks and a closing socket its handler,
        and what follows a wait for the records (a `call.ended` to the caller) must still go."""
        if not _waits(effects):
            await self._apply(effects)  # no wait inside: nothing can interrupt it
            return
        task = asyncio.get_running_loop().create_task(self._apply(effects))
        self.keep(task)
        await asyncio.shield(task)

    async def _apply(self, effects: Sequence[Effect]) -> None:
        """Carry out effects in order; a CdrOpen is committed before the next effect runs.

        Fail closed: if a new call's record cannot be written, nobody rings — the rest of the
        effects are dropped, the caller gets an error and the engine forgets the call.

        Other record writes are queued (group-committed with other calls' writes), but a message
        that follows them is sent only once they are committed: whatever a party has been told
        (answered, ended, denied) is on disk, so a crash after it loses no CDR or audit entry.
        """
        queued = False  # record writes queued since the last commit we waited for
        for index, effect in enumerate(effects):
            if isinstance(effect, Send):
                if queued:
                    # A write that failed was logged; the parties still hear what happened.
                    await self._written(self.recorder.queued())
                    queued = False
                device = self.devices.get(effect.device_id)
                if device is not None:
                    self.send(device, effect.message)
                elif self.elsewhere is not None:
                    self.elsewhere(effect)
            elif isinstance(effect, CdrOpen):
                number = self._open(effect)
                await self._written(number)
                if self.recorder.open_failed(number):
                    await self._refuse(effect, effects[index + 1 :])
                    break
                queued = False  # committed with (or after) everything queued before it
            else:
                self._record_later(effect)
                queued = True
        self._wake.set()

    async def _written(self, number: int) -> None:
        """Wait until record write `number`, and every one queued before it, is finished.

        The writer calls back once per batch for all waiters (`_progress_from_writer`), not
        once per write. `number` is the latest write's, so the waiters stay in order."""
        recorder = self.recorder
        if recorder.done() >= number:
            return
        recorder.want(number)
        if recorder.done() >= number:  # finished between the two looks: it may not call
            return
        assert self._loop is not None, "the hub is not started"
        finished: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((number, finished))
        await finished

    def _progress_from_writer(self, done: int) -> None:
        """On the writer's thread: wake the event loop once for the waiters up to `done`."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._progressed, done)

    def _gave_up_from_writer(self, number: int) -> None:
        """On the writer's thread: a new call's record failed while its batch is still retried
        (the database is away); release its waiter now, `open_failed` then says so."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._release, number)

    def _release(self, number: int) -> None:
        for waiting, finished in self._waiters:
            if waiting == number and not finished.done():
                finished.set_result(None)

    def _progressed(self, done: int) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= done:
            _, finished = waiters.popleft()
            if not finished.done():
                finished.set_result(None)

    async def _refuse(self, effect: CdrOpen, dropped: Sequence[Effect]) -> None:
        call = effect.call
        self._parties.pop(call.call_id, None)
        self._relays.pop(call.call_id, None)
        caller = self.devices.get(call.caller_device)
        request_id = next(
            (
                e.message.get("id")
                for e in dropped
                if isinstance(e, Send) and e.message.get("type") == "ack"
            ),
            None,
        )
        if caller is not None:
            message = m.error_message(
                request_id, "server-error", "call records are unavailable; call not placed"
            )
            self.send(caller, message)
        # Forget the call in the engine. Nobody was rung (the call.incoming messages were among
        # the dropped effects) and there is no row to finalize, so its effects are discarded.
        self.engine.hangup(call.caller_device, request_id or "", call.call_id)

    def _open(self, effect: CdrOpen) -> int:
        call = effect.call
        caller = self.devices.get(call.caller_device)
        opened = CallOpen(
            call_id=call.call_id,
            caller_user=call.caller_handle,
            callee_user=call.callee_handle,
            invite_at=datetime.fromtimestamp(call.invite_at, UTC),
            caller_device=call.caller_device,
            caller_address=caller.address if caller is not None else None,
            caller_user_agent=caller.user_agent if caller is not None else None,
            ring_at=_at(call.ring_at),
            node_id=self.node_id,
            relay_candidates=tuple(self._relays.get(call.call_id) or ()) or None,
            policy_rule=call.policy_rule,
            policy_decision=call.policy_decision,
            recording_required=call.recording_required,
        )
        self._parties[call.call_id] = (call.caller_handle, call.callee_handle)
        return self.recorder.open(
            opened, ringing_devices=call.ringing_devices, relay_only=call.relay_only
        )

    def _update(self, effect: CdrUpdate) -> None:
        fields: dict[str, Any] = {
            "answer_at": _at(effect.answer_at),
            "callee_device": effect.callee_device,
            "media_path": effect.media_path,
            "codec": effect.codec,
            "ring_at": _at(effect.ring_at),
            "anchored": effect.anchored,
            "callee_user": effect.callee_user,
            "policy_rule": effect.policy_rule,
        }
        callee = self.devices.get(effect.callee_device or "")
        if callee is not None:
            fields["callee_address"] = callee.address
            fields["callee_user_agent"] = callee.user_agent
        changes = {k: v for k, v in fields.items() if v is not None}
        if effect.call_id in self._relays_unwritten and self._relays.get(effect.call_id):
            self._relays_unwritten.discard(effect.call_id)
            changes["relay_candidates"] = list(self._relays[effect.call_id])
        if effect.answer_at is not None:
            self._answered.add(effect.call_id)
            answered_at = datetime.fromtimestamp(effect.answer_at, UTC)
            caller_handle, callee_handle = self._parties.get(effect.call_id, ("", ""))
            if effect.callee_user is not None:  # a ring group's member answered
                callee_handle = effect.callee_user
                self._parties[effect.call_id] = (caller_handle, callee_handle)
            self.recorder.answered(
                effect.call_id, callee_handle, effect.callee_device, answered_at, **changes
            )
        elif changes:
            self.recorder.update(effect.call_id, **changes)

    def _final(self, effect: CdrFinal) -> None:
        answered = effect.call_id in self._answered
        self._answered.discard(effect.call_id)
        self._relays.pop(effect.call_id, None)
        self._relays_unwritten.discard(effect.call_id)
        ended_by = f"admin:{effect.admin}" if effect.admin else effect.ended_by.value
        parties = self._parties.pop(effect.call_id, ("", ""))
        by = dict(zip(("caller", "callee"), parties, strict=True)).get(effect.ended_by.value)
        end = CallEnd(
            call_id=effect.call_id,
            end_at=datetime.fromtimestamp(effect.end_at, UTC),
            disposition=effect.disposition.value,
            reason=effect.reason.value,
            ended_by=ended_by,
            actor=effect.admin or by or call_audit.SYSTEM,
            duration_s=round(effect.duration_s, 3) if answered else None,
            detail=effect.detail,
            admin=effect.admin,
        )
        self.recorder.ended(end)

    def _stats(self, effect: StatsReport) -> None:
        streams = [
            QualityStats(
                kind=s.kind,
                direction=s.direction,
                packets=s.packets,
                packets_lost=s.packets_lost,
                jitter_ms=s.jitter_ms,
                rtt_ms=s.rtt_ms,
                concealed_ratio=s.concealed_ratio,
            )
            for s in effect.streams
        ]
        self.recorder.stats(
            effect.call_id, effect.party.value, streams, effect.final, _at(effect.at)
        )

    def _record_later(self, effect: Effect) -> None:
        """Queue a record write (`apply` waits for its commit only before its next message)."""
        if isinstance(effect, StatsReport):
            self._stats(effect)
            return
        if isinstance(effect, CdrUpdate):
            self._update(effect)
        elif isinstance(effect, CdrFinal):
            self._final(effect)
        if isinstance(effect, CdrUpdate) and effect.media_path is not None:
            self._media_calls.add(effect.call_id)
        if isinstance(effect, CdrFinal) and self.anchoring is not None:
            self.anchoring.ended(effect.call_id)
        if isinstance(effect, CdrFinal) and effect.call_id in self._media_calls:
            # Only calls that reached media used the relay; the rest have nothing to link.
            self._media_calls.discard(effect.call_id)
            loop = asyncio.get_running_loop()
            for delay in self.link_delays:
                loop.call_later(delay, self._link_soon, effect.call_id)

    def _link_soon(self, call_id: str) -> None:
        self.recorder.link_relay_sessions(call_id)

    async def _records_settled(self) -> None:
        """Wait until every record write queued so far is done (tests, shutdown)."""
        with contextlib.suppress(RecordWriteError):
            await asyncio.wrap_future(self.recorder.settled())

    async def flush(self) -> None:
        await self._records_settled()

    # -- timer -------------------------------------------------------------------------------------

    async def _run_timer(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self.clock.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if deadline is not None and self.clock.monotonic() >= deadline:
                try:
                    await self.apply(self.engine.tick())
                except Exception:
                    log.exception("signaling timer failed")


def _waits(effects: Sequence[Effect]) -> bool:
    """Whether `_apply` will wait for the record writer: a new call's record, or a message
    after a record write."""
    written = False
    for effect in effects:
        if isinstance(effect, CdrOpen):
            return True
        if isinstance(effect, Send):
            if written:
                return True
        else:
            written = True
    return False
