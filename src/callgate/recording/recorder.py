"""`StreamRecorder`: the anchor's observer for one call (the CDR writer is another thing,
records/call_recorder.py). Packets are buffered as they arrive and written as one encrypted
chunk every `flush_interval` seconds, in a worker thread, each chunk fsynced before the next. The recorder fails (once, through `on_failure`) when a chunk cannot be
written or a leg it expects has been silent for `silence_limit` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from callgate.media.packets import MediaPacket
from callgate.recording.chunks import encode_packets
from callgate.recording.writer import ChunkWriter, RecordingFailure

log = logging.getLogger(__name__)


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
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()

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
        self._task = asyncio.create_task(self._run(), name=f"recorder-{self.recording_id}")

    async def first_written(self) -> None:
        """Returns once a chunk holding the caller's first packets is fsynced."""
        await self._durable.wait()

    async def _run(self) -> None:
        while self.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.limits.flush_interval)
            if self._stop.is_set():
                return  # close() writes the last chunk; a write in progress has finished
            await self._flush(last=False)
            now = time.monotonic()
            for leg, seen in self._expected.items():
                if now - seen > self.limits.silence_limit:
                    self._fail(f"no media from the {leg} for {self.limits.silence_limit:g} s")

    async def _flush(self, *, last: bool) -> None:
        if self.failure is not None or (not self._buffer and not last):
            return
        batch, self._buffer = self._buffer, []
        try:
            await asyncio.to_thread(self.writer.append, encode_packets(batch), last=last)
        except RecordingFailure as exc:
            self._fail(str(exc))
            return
        if any(p.leg == "caller" for p in batch):
            self._durable.set()

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
        self._stop.set()
        if self._task is not None:
            # Not cancelled: a chunk being written in its worker thread must finish first, or
            # the last chunk would be written beside it with the same index.
            await self._task
        await self._flush(last=True)
        self.writer.close()
