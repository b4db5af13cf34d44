"""The hub's record effects: what the engine's `CdrOpen`, `CdrUpdate`, `CdrFinal` and
`StatsReport` become in the call recorder (records/call_recorder.py, which writes them in order
on its own thread), with what only the hub knows — the devices' addresses and user agents, the
relay addresses the SDPs offered, which calls were answered or reached media.

`HubRecords` also holds the hub's state (signaling/hub.py composes the rest over it): the engine,
the connected devices and their queues, the recorder, the background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from callgate.clock import Clock
from callgate.records import call_audit
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen
from callgate.records.quality import StreamStats as QualityStats
from callgate.records.quality_store import QualityRepository
from callgate.records.writer import RecordWriteError
from callgate.signaling.effects import CdrFinal, CdrOpen, CdrUpdate, Effect, Send, StatsReport
from callgate.signaling.engine import CallEngine
from callgate.signaling.hub_types import AnchorHooks, CallPolicy, Device, NumberCalls
from callgate.signaling.lookups import LookupTrips
from callgate.signaling.ratelimit import MessageRateLimiter

log = logging.getLogger(__name__)

# Relay sessions are recorded when allocations end, which follows the call's end by a moment:
# link them to the CDR after these delays (seconds), once more later for late closers.
LINK_DELAYS = (3.0, 30.0)


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class HubRecords:
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
        self._lookup_trips: LookupTrips | None = None  # invites' lookups (hub_invites.py)
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

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task until it is done (cancelled at stop)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def send(self, device: Device, message: dict[str, Any]) -> None:
        try:
            device.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("device %s is not reading; disconnecting it", device.device_id)
            with contextlib.suppress(asyncio.QueueEmpty):
                device.queue.get_nowait()
            device.queue.put_nowait(None)

    # -- record effects ----------------------------------------------------------------------------

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
