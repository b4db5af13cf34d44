"""The hub carries out the engine's effects in order, and runs the engine's timer.

Record effects go to the call recorder (signaling/hub_records.py), and a message that follows a
record effect is sent only once that record is committed — nobody rings before the CDR exists,
and nobody hears an outcome that a crash could still lose. A timer task calls `engine.tick()` at
the engine's next deadline (ring, setup and silence watchdogs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from callgate.signaling import messages as m
from callgate.signaling.effects import CdrOpen, Effect, Send
from callgate.signaling.hub_records import HubRecords

log = logging.getLogger(__name__)


class HubEffects(HubRecords):
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
