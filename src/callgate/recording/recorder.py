"""`StreamRecorder`: the anchor's observer for one call (the CDR writer is another thing,
records/call_recorder.py). Packets are buffered as they arrive and written as one encrypted
chunk every `flush_interval` seconds, in a worker thread, each chunk durable before the next. The
recorder fails (once, through `on_failure`) when a chunk cannot be written or a leg it expects
has been silent for `silence_limit` seconds.

The recorders of one event loop with the same interval share one `_Flusher`: one timer for all
of them, and their chunks written in worker-thread jobs of up to `GROUP` recordings each (one
after the other within a job, the jobs side by side, each job's chunks made durable together
by one syncfs, writer.py), instead of a timer, a thread hop and an fsync per recording every
interval. Each recording's own chunks stay in order, one at a time; a chunk that
fails fails only its own recording.

Durability has a deadline: a chunk not confirmed durable within `durable_within` seconds
(1.5 s) of its flush fails its recording (fail closed: the call ends recording-failed within
2 s, however long a hung device or another program's large write on the same file system holds
the worker thread). A chunk counts only once confirmed: one confirmed after its deadline does
not revive the recording. The flush never blocks the timer: silence is checked at every tick
whether or not earlier chunks are still being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from callgate.media.packets import MediaPacket
from callgate.recording.chunks import encode_packets
from callgate.recording.writer import ChunkWriter, RecordingFailure, sync_all

log = logging.getLogger(__name__)

_T = TypeVar("_T")

GROUP = 16  # recordings whose chunks one worker-thread job writes, one after the other


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    flush_interval: float = 0.5
    silence_limit: float = 5.0
    durable_within: float = 1.5  # a chunk not durable this long after its flush fails closed


class StreamRecorder:
    def __init__(
        self,
        recording_id: str,
        writer: ChunkWriter,
        limits: RecorderLimits,
        on_failure: Callable[[str], None],
    ) -> None:
        self.recording_id = recording_id
        self.writer = writer
        self.limits = limits
        self.failure: str | None = None
        self.packets = {"caller": 0, "callee": 0}
        self.first_arrival: dict[str, float] = {}
        self._on_failure = on_failure
        self._buffer: list[MediaPacket] = []
        self._expected: dict[str, float] = {}  # leg -> monotonic time of its last packet
        self._durable = asyncio.Event()  # a chunk with the caller's packets is on disk
        self._flusher: _Flusher | None = None
        self._writing: asyncio.Future[None] | None = None  # settles: the chunk counted or failed
        self._busy = False  # a worker thread holds the writer (it closes once that is done)
        self._closed = False

    # -- input from the anchor ---------------------------------------------------------------

    def on_packet(self, packet: MediaPacket) -> None:
        if self._closed or self.failure is not None or packet.leg not in self.packets:
            return
        leg = packet.leg
        self.packets[leg] += 1
        if leg not in self.first_arrival:
            self.first_arrival[leg] = packet.arrival
        self._expected[leg] = time.monotonic()
        self._buffer.append(packet)  # immutable: stored as it is (encode_packets reads it)

    def expect(self, leg: str) -> None:
        """From now on `leg` must keep sending (its silence fails the recording)."""
        self._expected.setdefault(leg, time.monotonic())

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._flusher = _Flusher.of(self.limits.flush_interval)
        self._flusher.add(self)

    async def first_written(self) -> None:
        """Returns once a chunk holding the caller's first packets is fsynced."""
        await self._durable.wait()

    def _take(self) -> list[MediaPacket]:
        """What is buffered, for the next chunk (the flusher's)."""
        batch, self._buffer = self._buffer, []
        return batch

    def _begin(self) -> None:
        """A chunk goes to a worker thread: until it is confirmed (`_written`) or overdue."""
        self._busy = True
        self._writing = asyncio.get_running_loop().create_future()

    def _written(self, batch: Sequence[MediaPacket], error: str | None) -> None:
        """The worker thread is done with a chunk (`error`: why it is not durable)."""
        self._busy = False
        if self.failure is not None:  # failed meanwhile (overdue, silence): it does not count
            self.writer.close()
        elif error is not None:
            self._fail(error)
        elif any(p.leg == "caller" for p in batch):
            self._durable.set()
        self._settle()

    def _overdue(self) -> None:
        """The chunk in flight is not durable within the deadline: fail closed."""
        if self._busy:
            self._fail(f"chunk not durable within {self.limits.durable_within:g} s")
        self._settle()

    def _settle(self) -> None:
        if self._writing is not None and not self._writing.done():
            self._writing.set_result(None)

    def _check_silence(self, now: float) -> None:
        for leg, seen in self._expected.items():
            if now - seen > self.limits.silence_limit:
                self._fail(f"no media from the {leg} for {self.limits.silence_limit:g} s")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("recording %s failed: %s", self.recording_id, reason)
            if not self._busy:  # else the worker thread holds it: closed once it is done
                self.writer.close()
            self._on_failure(reason)

    async def close(self) -> None:
        """Write what is buffered as the last chunk; stop. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.remove(self)
        if self._writing is not None:
            # A chunk being written in a worker thread must count or fail first (within its
            # deadline), or the last chunk would be written beside it with the same index.
            await asyncio.shield(self._writing)
        if self.failure is None:
            batch = self._take()
            loop = asyncio.get_running_loop()
            self._begin()
            settled = self._writing
            job = loop.run_in_executor(None, _append, self.writer, batch, True)
            _when_done(job, loop, self.limits.durable_within, [(self, batch)], lambda r: [r])
            if settled is not None:
                await asyncio.shield(settled)
        if not self._busy:
            self.writer.close()


def _append(
    writer: ChunkWriter, batch: Sequence[MediaPacket], last: bool, durable: bool = True
) -> str | None:
    """Encode, encrypt, write and (`durable`) fsync one chunk (a worker thread); why it failed,
    or None."""
    try:
        writer.append(encode_packets(batch), last=last, durable=durable)
    except RecordingFailure as exc:
        return str(exc)
    except Exception as exc:  # fail closed: a chunk that is not on disk ends the recording
        log.exception("recording %s: chunk not written", writer.recording_id)
        return f"chunk not written: {type(exc).__name__}"
    return None


def _append_group(group: Sequence[tuple[StreamRecorder, list[MediaPacket]]]) -> list[str | None]:
    """The group's chunks written, then made durable together (writer.py `sync_all`: one
    syncfs for all instead of an fsync each); per recording, why its chunk is not on disk."""
    errors = [_append(recorder.writer, batch, False, durable=False) for recorder, batch in group]
    written = [i for i, error in enumerate(errors) if error is None]
    try:
        synced = sync_all([group[i][0].writer for i in written])
    except Exception as exc:  # fail closed: not known to be on disk
        log.exception("recordings: chunks not made durable")
        synced = [f"chunk not written: {type(exc).__name__}"] * len(written)
    for i, error in zip(written, synced, strict=True):
        errors[i] = error
    return errors


Work = Sequence[tuple[StreamRecorder, Sequence[MediaPacket]]]


def _when_done(
    job: asyncio.Future[_T],
    loop: asyncio.AbstractEventLoop,
    deadline: float,
    work: Work,
    errors_of: Callable[[_T], Sequence[str | None]],
) -> None:
    """Tell `work`'s recorders how their chunks went once `job` is done; fail those still not
    confirmed after `deadline` seconds (they then fail closed, whatever the job does)."""

    def too_late() -> None:
        for recorder, _batch in work:
            recorder._overdue()

    overdue = loop.call_later(deadline, too_late)

    def done(finished: asyncio.Future[_T]) -> None:
        overdue.cancel()
        if finished.cancelled() or finished.exception() is not None:
            errors: Sequence[str | None] = ["recorder error"] * len(work)
        else:
            errors = errors_of(finished.result())
        for (recorder, batch), error in zip(work, errors, strict=True):
            recorder._written(batch, error)

    job.add_done_callback(done)


class _Flusher:
    """The recorders of one event loop with one flush interval (module docstring)."""

    _all: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Flusher]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.recorders: dict[StreamRecorder, None] = {}  # in the order they started
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, interval: float) -> _Flusher:
        flushers = cls._all.setdefault(asyncio.get_running_loop(), {})
        flusher = flushers.get(interval)
        if flusher is None:
            flusher = flushers[interval] = cls(interval)
        return flusher

    def add(self, recorder: StreamRecorder) -> None:
        self.recorders[recorder] = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"recorders-{self.interval:g}s")

    def remove(self, recorder: StreamRecorder) -> None:
        self.recorders.pop(recorder, None)

    async def _run(self) -> None:
        while self.recorders:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for recorder in list(self.recorders):
                if recorder.failure is None:
                    recorder._check_silence(now)
            try:
                self._flush()
            except Exception:  # fail closed: recordings that are not written end their calls
                log.exception("recordings could not be flushed")
                for recorder in list(self.recorders):
                    recorder._fail("recorder error")

    def _flush(self) -> None:
        """Start this tick's chunks in worker threads; never waits for them (module docstring).
        A recording whose previous chunk is still in flight waits for the next tick."""
        work = [
            (recorder, recorder._take())
            for recorder in self.recorders
            if recorder.failure is None and not recorder._busy and recorder._buffer
        ]
        loop = asyncio.get_running_loop()
        for i in range(0, len(work), GROUP):
            group = work[i : i + GROUP]
            for recorder, _batch in group:
                recorder._begin()
            job = loop.run_in_executor(None, _append_group, group)
            deadline = max(recorder.limits.durable_within for recorder, _ in group)
            _when_done(job, loop, deadline, group, lambda errors: errors)
