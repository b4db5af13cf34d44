"""`StreamRecorder`: the anchor's observer for one call (the CDR writer is another thing,
records/call_recorder.py). Packets are buffered as they arrive and written as one encrypted
chunk every `flush_interval` seconds, in a worker thread, each chunk durable before the next. The
recorder fails (once, through `on_failure`) when a chunk cannot be written or a leg it expects
has been silent for `silence_limit` seconds.

The recorders of one event loop with the same interval share one `_Flusher`: one timer for all
of them, and their chunks written in worker-thread jobs of up to `GROUP` recordings each (one
after the other within a job, each chunk fsynced on its own file, the jobs side by side),
instead of a timer and a thread hop per recording every interval. Each recording's own chunks
stay in order, one at a time; a chunk that fails fails only its own recording.

Recording I/O has its own bounded pool of threads (`RecordingIO`), never the event loop's
default executor: a hung disk cannot starve the server's other blocking work (CDR and audit
writes, policy lookups).

Durability has a deadline: a chunk not confirmed durable within `flush_interval +
durable_within` seconds (2 s) of its oldest packet's arrival fails its recording (fail closed,
however long a hung device holds the worker thread). The recording's writer is then abandoned
(writer.py): it counts nothing more, and the file is cut back to what was counted once the thread
lets go, so the audit log's digest matches the file. While a job is overdue the recorder is
`stalled`: the service refuses new recorded calls (`recording-unavailable`, /healthz says why)
and no new chunk is submitted for a recording still waiting, until the stuck job returns. The
flush never blocks the timer: silence is checked at every tick whether or not earlier chunks are
still being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from callgate.media.packets import MediaPacket
from callgate.recording.chunks import encode_packets
from callgate.recording.writer import ChunkWriter, RecordingFailure

log = logging.getLogger(__name__)

_T = TypeVar("_T")

GROUP = 16  # recordings whose chunks one worker-thread job writes, one after the other
THREADS = 8  # recording I/O's own worker threads (RecordingIO)


class RecordingIO:
    """The recording's worker threads (module docstring) and whether a job of theirs is
    overdue (`stalled`: since when, monotonic) — one per process."""

    def __init__(self, threads: int = THREADS) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="recording")
        self.overdue = 0  # jobs past their deadline that have not returned
        self._since: float | None = None

    @property
    def stalled(self) -> str | None:
        """Why no new recording may start (a job is stuck), or None."""
        if not self.overdue or self._since is None:
            return None
        return (
            f"recording disk: a write has not returned for {time.monotonic() - self._since:.0f} s"
        )

    def run(
        self, loop: asyncio.AbstractEventLoop, deadline: float, fn: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """`fn(*args)` in a recording thread; `stalled` once it runs past `deadline` (seconds
        from now) until it returns."""
        job = loop.run_in_executor(self.executor, fn, *args)
        late = [False]

        def too_late() -> None:
            late[0] = True
            if not self.overdue:
                self._since = time.monotonic()
            self.overdue += 1

        timer = loop.call_later(max(0.0, deadline), too_late)

        def done(_job: asyncio.Future[_T]) -> None:
            timer.cancel()
            if late[0]:
                self.overdue -= 1

        job.add_done_callback(done)
        return job


IO = RecordingIO()


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
        self._oldest: float | None = None  # monotonic arrival of the oldest buffered packet
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
        self._expected[leg] = now = time.monotonic()
        if not self._buffer:
            self._oldest = now
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

    @property
    def budget(self) -> float:
        """Seconds a packet may wait, from its arrival, for its chunk to be durable."""
        return self.limits.flush_interval + self.limits.durable_within

    def _take(self) -> tuple[list[MediaPacket], float]:
        """What is buffered, for the next chunk, and by when it must be durable (monotonic)."""
        batch, self._buffer = self._buffer, []
        oldest, self._oldest = self._oldest, None
        return batch, (time.monotonic() if oldest is None else oldest) + self.budget

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
            self._fail(f"chunk not durable within {self.budget:g} s of its audio")
        self._settle()

    def _settle(self) -> None:
        if self._writing is not None and not self._writing.done():
            self._writing.set_result(None)

    def _check_silence(self, now: float) -> None:
        if not self._busy and self._oldest is not None and now - self._oldest > self.budget:
            # buffered, not submitted (the recording I/O is stalled): as late as a stuck chunk
            self._fail(f"chunk not durable within {self.budget:g} s of its audio")
            return
        for leg, seen in self._expected.items():
            if now - seen > self.limits.silence_limit:
                self._fail(f"no media from the {leg} for {self.limits.silence_limit:g} s")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("recording %s failed: %s", self.recording_id, reason)
            if self._busy:  # a worker thread is in a write: what it does from now on never counts
                self.writer.abandon()
            else:
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
        if self.failure is None and IO.stalled is not None:
            self._fail(IO.stalled)  # no more work for a stuck disk: fail closed
        if self.failure is None:
            batch, due = self._take()
            loop = asyncio.get_running_loop()
            self._begin()
            settled = self._writing
            try:
                job = IO.run(loop, due - time.monotonic(), _append, self.writer, batch, True)
            except Exception:  # the threads are shut down: fail closed
                log.exception("recording %s: last chunk not submitted", self.recording_id)
                self._written(batch, "recorder error")
            else:
                _when_done(job, loop, due, [(self, batch)], lambda r: [r])
            if settled is not None:
                await asyncio.shield(settled)
        if not self._busy:
            self.writer.close()


def _append(writer: ChunkWriter, batch: Sequence[MediaPacket], last: bool) -> str | None:
    """Encode, encrypt, write and fsync one chunk (a worker thread); why it failed, or None."""
    try:
        writer.append(encode_packets(batch), last=last)
    except RecordingFailure as exc:
        return str(exc)
    except Exception as exc:  # fail closed: a chunk that is not on disk ends the recording
        log.exception("recording %s: chunk not written", writer.recording_id)
        return f"chunk not written: {type(exc).__name__}"
    return None


def _append_group(group: Sequence[tuple[StreamRecorder, list[MediaPacket]]]) -> list[str | None]:
    """The group's chunks, each written and fsynced on its own file, one after the other; per
    recording, why its chunk is not on disk (an abandoned writer refuses: writer.py)."""
    return [_append(recorder.writer, batch, False) for recorder, batch in group]


Work = Sequence[tuple[StreamRecorder, Sequence[MediaPacket]]]


def _when_done(
    job: asyncio.Future[_T],
    loop: asyncio.AbstractEventLoop,
    due: float,
    work: Work,
    errors_of: Callable[[_T], Sequence[str | None]],
) -> None:
    """Tell `work`'s recorders how their chunks went once `job` is done; fail those still not
    confirmed at `due` (monotonic; they then fail closed, whatever the job does)."""

    def too_late() -> None:
        for recorder, _batch in work:
            recorder._overdue()

    overdue = loop.call_later(max(0.0, due - time.monotonic()), too_late)

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
        A recording whose previous chunk is still in flight waits for the next tick; while the
        recording I/O is stalled nothing new is submitted (buffered audio then fails at its
        deadline: `_check_silence`)."""
        if IO.stalled is not None:
            return
        work = [
            (recorder, *recorder._take())
            for recorder in self.recorders
            if recorder.failure is None and not recorder._busy and recorder._buffer
        ]
        loop = asyncio.get_running_loop()
        for i in range(0, len(work), GROUP):
            group = [(recorder, batch) for recorder, batch, _due in work[i : i + GROUP]]
            due = min(due for _recorder, _batch, due in work[i : i + GROUP])
            for recorder, _batch in group:
                recorder._begin()
            try:
                job = IO.run(loop, due - time.monotonic(), _append_group, group)
            except Exception:  # the threads are shut down: these chunks are not written
                for recorder, batch in group:
                    recorder._written(batch, "recorder error")
                for recorder, _rest, _due in work[i + GROUP :]:
                    recorder._fail("recorder error")
                raise
            _when_done(job, loop, due, group, lambda errors: errors)
