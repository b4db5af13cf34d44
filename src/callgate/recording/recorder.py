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
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callgate.media.packets import MediaPacket
from callgate.recording.chunks import encode_packets
from callgate.recording.writer import ChunkWriter, RecordingFailure, sync_all

log = logging.getLogger(__name__)

GROUP = 16  # recordings whose chunks one worker-thread job writes, one after the other


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    flush_interval: float = 0.5
    silence_limit: float = 5.0


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
        self._writing: asyncio.Future[None] | None = None  # the flusher's chunk in progress
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

    def _written(self, batch: Sequence[MediaPacket], error: str | None) -> None:
        """A chunk the flusher wrote (`error`: why it could not be)."""
        if error is not None:
            self._fail(error)
        elif any(p.leg == "caller" for p in batch):
            self._durable.set()

    def _check_silence(self, now: float) -> None:
        for leg, seen in self._expected.items():
            if now - seen > self.limits.silence_limit:
                self._fail(f"no media from the {leg} for {self.limits.silence_limit:g} s")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("recording %s failed: %s", self.recording_id, reason)
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
            # A chunk being written in a worker thread must finish first, or the last chunk
            # would be written beside it with the same index.
            await self._writing
        if self.failure is None:
            batch = self._take()
            error = await asyncio.to_thread(_append, self.writer, batch, True)
            self._written(batch, error)
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


def _written_groups(
    groups: Sequence[Sequence[tuple[StreamRecorder, list[MediaPacket]]]],
    work: Sequence[tuple[StreamRecorder, list[MediaPacket]]],
    writing: asyncio.Future[None],
    done: asyncio.Future[list[list[str | None]]],
) -> None:
    """The flusher's chunks are written (or failed): tell their recorders, then release them."""
    try:
        error = "recorder error" if done.cancelled() or done.exception() else None
        results: Sequence[Sequence[str | None]] = (
            done.result() if error is None else [[error] * len(g) for g in groups]
        )
        for group, errors in zip(groups, results, strict=True):
            for (recorder, batch), failure in zip(group, errors, strict=True):
                recorder._written(batch, failure)
    finally:
        _release(work, writing)


def _release(
    work: Sequence[tuple[StreamRecorder, list[MediaPacket]]], writing: asyncio.Future[None]
) -> None:
    for recorder, _batch in work:
        recorder._writing = None
    if not writing.done():
        writing.set_result(None)


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
            try:
                await self._flush()
            except Exception:  # fail closed: recordings that are not written end their calls
                log.exception("recordings could not be flushed")
                for recorder in list(self.recorders):
                    recorder._fail("recorder error")
            now = time.monotonic()
            for recorder in list(self.recorders):
                if recorder.failure is None:
                    recorder._check_silence(now)

    async def _flush(self) -> None:
        work = [
            (recorder, recorder._take())
            for recorder in self.recorders
            if recorder.failure is None and recorder._buffer
        ]
        if not work:
            return
        loop = asyncio.get_running_loop()
        groups = [work[i : i + GROUP] for i in range(0, len(work), GROUP)]
        writing = loop.create_future()
        for recorder, _batch in work:
            recorder._writing = writing
        jobs = [loop.run_in_executor(None, _append_group, group) for group in groups]
        gathered = asyncio.gather(*jobs)
        try:
            await asyncio.shield(gathered)
        except asyncio.CancelledError:
            # the worker threads still write: `_writing` is resolved once they are done, or
            # close() would write its last chunk beside one in flight, with the same index
            gathered.add_done_callback(lambda done: _written_groups(groups, work, writing, done))
            raise
        except BaseException:
            _release(work, writing)
            raise
        _written_groups(groups, work, writing, gathered)
