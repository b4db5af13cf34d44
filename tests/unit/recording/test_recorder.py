"""`StreamRecorder` without a network: packets become durable chunks; the caller's first chunk is
reported durable; a leg that stops sending, or a chunk that cannot be written, fails the
recording once, through the callback."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from callgate.media.packets import MediaPacket
from callgate.recording import keys
from callgate.recording import recorder as recorder_module
from callgate.recording.chunks import decode_packets, iter_chunks, open_chunk
from callgate.recording.recorder import RecorderLimits, StreamRecorder
from callgate.recording.writer import ChunkWriter, RecordingFailure

RID = "fedcba9876543210fedcba9876543210"


def packet(leg: str, seq: int) -> MediaPacket:
    return MediaPacket(leg, bytes([seq % 256]) * 40, seq * 960, seq, 1234, 111, time.time())


def recorder_in(tmp_path: Path, limits: RecorderLimits) -> tuple[StreamRecorder, bytes, list[str]]:
    key = keys.new_recording_key()
    failures: list[str] = []
    writer = ChunkWriter(tmp_path / "r.cgrec", RID, key, 0)
    return StreamRecorder(RID, writer, limits, failures.append), key, failures


async def test_packets_are_written_and_the_first_chunk_is_reported_durable(tmp_path: Path) -> None:
    recorder, key, failures = recorder_in(tmp_path, RecorderLimits(0.05, 30.0))
    recorder.start()
    for seq in range(10):
        recorder.on_packet(packet("caller", seq))
    await asyncio.wait_for(recorder.first_written(), 30)
    for seq in range(10, 20):
        recorder.on_packet(packet("callee", seq))
    await recorder.close()
    chunks = list(iter_chunks((tmp_path / "r.cgrec").read_bytes()))
    assert chunks[-1].last and not failures
    stored = [
        p for i, c in enumerate(chunks) for p in decode_packets(open_chunk(key, RID, c, i), i)
    ]
    assert [(p.leg, p.seq) for p in stored] == [("caller", s) for s in range(10)] + [
        ("callee", s) for s in range(10, 20)
    ]
    assert recorder.packets == {"caller": 10, "callee": 10}


async def test_a_leg_that_stops_sending_fails_the_recording_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Silence is measured on the test's clock, which moves only with the caller's packets: on
    # the real one a loaded machine's stall longer than the limit made the caller look silent.
    now = [1000.0]
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    recorder, _key, failures = recorder_in(tmp_path, RecorderLimits(0.05, 0.3))
    recorder.start()
    recorder.on_packet(packet("caller", 0))
    recorder.expect("callee")  # connected, but never sends
    for _ in range(400):
        if failures:
            break
        now[0] += 0.1  # 0.1 s later, the caller sends again; the callee does not
        recorder.on_packet(packet("caller", 1))
        await asyncio.sleep(0.05)
    for _ in range(6):  # more silence, more checks: still one failure
        now[0] += 0.1
        recorder.on_packet(packet("caller", 1))
        await asyncio.sleep(0.05)
    assert failures == ["no media from the callee for 0.3 s"]
    await recorder.close()


async def test_a_chunk_that_cannot_be_written_fails_the_recording(tmp_path: Path) -> None:
    recorder, _key, failures = recorder_in(tmp_path, RecorderLimits(0.05, 30.0))
    recorder.writer._min_free = 1 << 62  # the disk is "full" from now on
    recorder.start()
    recorder.on_packet(packet("caller", 0))
    for _ in range(200):
        if failures:
            break
        await asyncio.sleep(0.05)
    assert len(failures) == 1 and "chunk 0 not written: free disk" in failures[0], failures
    await recorder.close()


async def test_recorders_flushed_together_keep_their_own_chunks_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorders of one loop share a flusher that writes their chunks in worker-thread jobs of
    # GROUP recordings: two jobs here. One recording's disk is "full": only that one fails.
    monkeypatch.setattr(recorder_module, "GROUP", 2)
    made = []
    for name in ("a", "b", "c"):
        key = keys.new_recording_key()
        failures: list[str] = []
        rid = name * 32
        writer = ChunkWriter(tmp_path / f"{name}.cgrec", rid, key, 0)
        made.append(
            (
                StreamRecorder(rid, writer, RecorderLimits(0.05, 30.0), failures.append),
                key,
                failures,
            )
        )
    made[1][0].writer._min_free = 1 << 62
    for recorder, _key, _failures in made:
        recorder.start()
    for seq in range(30):
        for recorder, _key, _failures in made:
            recorder.on_packet(packet("caller", seq))
        await asyncio.sleep(0.01)
    for i in (0, 2):
        await asyncio.wait_for(made[i][0].first_written(), 30)
    for recorder, _key, _failures in made:
        await recorder.close()
    assert not made[0][2] and not made[2][2]
    assert len(made[1][2]) == 1 and "free disk" in made[1][2][0], made[1][2]
    for i in (0, 2):
        recorder, key, _failures = made[i]
        chunks = list(iter_chunks((tmp_path / f"{'ac'[i // 2]}.cgrec").read_bytes()))
        assert len(chunks) >= 2 and chunks[-1].last
        stored = [
            p
            for n, c in enumerate(chunks)
            for p in decode_packets(open_chunk(key, recorder.recording_id, c, n), n)
        ]
        assert [p.seq for p in stored] == list(range(30))


def _hang_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Every group job blocks (a hung device, or a flush behind another program's big write)
    until `release` is set; `started` is set once one has begun."""
    started, release = threading.Event(), threading.Event()
    append_group = recorder_module._append_group

    def slow(group: list[tuple[StreamRecorder, list[MediaPacket]]]) -> list[str | None]:
        started.set()
        release.wait(30)
        return append_group(group)

    monkeypatch.setattr(recorder_module, "_append_group", slow)
    return started, release


async def test_close_waits_for_the_chunk_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while a worker thread writes a chunk: it waits for that chunk before writing its
    last one, so no two chunks share an index."""
    recorder, key, failures = recorder_in(tmp_path, RecorderLimits(30.0, 30.0, 30.0))
    started, release = _hang_writes(monkeypatch)
    flusher = recorder_module._Flusher(30.0)
    flusher.recorders[recorder] = None
    recorder.on_packet(packet("caller", 0))
    flusher._flush()
    assert await asyncio.to_thread(started.wait, 30)
    recorder.on_packet(packet("caller", 1))
    closing = asyncio.ensure_future(recorder.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the chunk in flight is not done: close() waits for it
    release.set()
    await asyncio.wait_for(closing, 30)
    chunks = list(iter_chunks((tmp_path / "r.cgrec").read_bytes()))
    stored = [
        p for i, c in enumerate(chunks) for p in decode_packets(open_chunk(key, RID, c, i), i)
    ]
    assert [p.seq for p in stored] == [0, 1] and not failures


async def test_a_chunk_not_durable_by_its_deadline_fails_the_recording_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device hangs: the recording fails at the deadline (not when the write returns), its
    call can end at once (close() does not wait for the hung thread), and the chunk confirmed
    later does not count."""
    recorder, _key, failures = recorder_in(tmp_path, RecorderLimits(0.05, 30.0, 0.3))
    started, release = _hang_writes(monkeypatch)
    recorder.start()
    recorder.on_packet(packet("caller", 0))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        for _ in range(3000):
            if failures:
                break
            await asyncio.sleep(0.01)
        assert failures == ["chunk not durable within 0.35 s of its audio"]
        assert recorder_module.IO.stalled is not None  # no new recorded call meanwhile
        await asyncio.wait_for(recorder.close(), 30)
    finally:
        release.set()
    for _ in range(3000):  # the worker thread finishes: the writer is closed, nothing counts
        if not recorder._busy:
            break
        await asyncio.sleep(0.01)
    assert recorder.writer._closed and not recorder._durable.is_set()
    assert failures == ["chunk not durable within 0.35 s of its audio"]
    assert recorder.writer.chunks == [] and (tmp_path / "r.cgrec").stat().st_size == (
        recorder.writer.bytes
    )
    for _ in range(3000):
        if recorder_module.IO.stalled is None:
            break
        await asyncio.sleep(0.01)
    assert recorder_module.IO.stalled is None


async def test_silence_is_checked_while_a_flush_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silence checks run on their own tick: a flush stuck in a worker thread does not delay
    them."""
    recorder, _key, failures = recorder_in(tmp_path, RecorderLimits(0.05, 0.2, 30.0))
    started, release = _hang_writes(monkeypatch)
    recorder.start()
    recorder.on_packet(packet("caller", 0))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        for _ in range(3000):
            if failures:
                break
            await asyncio.sleep(0.01)
        assert failures == ["no media from the caller for 0.2 s"]
        assert recorder._busy  # the chunk is still in the worker thread
    finally:
        release.set()
        await asyncio.wait_for(recorder.close(), 30)


def _group(tmp_path: Path, names: str) -> list[tuple[StreamRecorder, bytes, list[str]]]:
    made = []
    for name in names:
        key = keys.new_recording_key()
        failures: list[str] = []
        writer = ChunkWriter(tmp_path / f"{name}.cgrec", name * 32, key, 0)
        limits = RecorderLimits(30.0, 30.0)
        made.append((StreamRecorder(name * 32, writer, limits, failures.append), key, failures))
    return made


def test_a_failed_fsync_fails_only_its_own_recording_in_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recording's chunk is fsynced on its own file: an EIO there fails that recording;
    the others' chunks count."""
    made = _group(tmp_path, "abc")
    broken = made[1][0].writer._fd
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fd == broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    group = [(recorder, [packet("caller", 0)]) for recorder, *_ in made]
    errors = recorder_module._append_group(group)
    assert errors[0] is None and errors[2] is None
    assert errors[1] == f"chunk 0 not written: {os.strerror(errno.EIO)}"
    with pytest.raises(RecordingFailure):  # the failed recording takes no more chunks
        made[1][0].writer.append(b"more")
    for recorder, *_ in made:
        recorder.writer.close()


async def test_recorders_settle_and_close_when_their_threads_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recording threads are shut down (the process is stopping): the flush cannot submit,
    the recordings fail closed and close() returns instead of waiting forever."""
    io = recorder_module.RecordingIO(1)
    io.executor.shutdown()
    monkeypatch.setattr(recorder_module, "IO", io)
    made = _group(tmp_path, "ab")
    flusher = recorder_module._Flusher(30.0)
    for recorder, *_ in made:
        flusher.recorders[recorder] = None
        recorder.on_packet(packet("caller", 0))
    with pytest.raises(RuntimeError):
        flusher._flush()
    for recorder, _key, failures in made:
        await asyncio.wait_for(recorder.close(), 30)
        assert failures == ["recorder error"] and recorder.writer._closed


async def test_an_abandoned_writer_is_cut_back_to_what_it_counted(tmp_path: Path) -> None:
    """abandon() while a thread is inside a write: nothing more counts, the writer takes no
    more chunks, and the file equals what was counted once the thread lets go."""
    key = keys.new_recording_key()
    writer = ChunkWriter(tmp_path / "w.cgrec", RID, key, 0)
    writer.append(b"one")
    counted = (len(writer.chunks), writer.bytes, writer.sha256)
    entered, release = threading.Event(), threading.Event()
    real_check = writer._check_space

    def stuck() -> None:
        entered.set()
        release.wait(30)
        real_check()

    writer._check_space = stuck  # type: ignore[method-assign]
    thread = asyncio.ensure_future(asyncio.to_thread(writer.append, b"two"))
    assert await asyncio.to_thread(entered.wait, 30)
    writer.abandon()
    release.set()
    with pytest.raises(RecordingFailure, match="durable only after its deadline"):
        await asyncio.wait_for(thread, 30)
    assert (len(writer.chunks), writer.bytes, writer.sha256) == counted and writer._closed
    data = (tmp_path / "w.cgrec").read_bytes()
    assert len(data) == counted[1] and len(list(iter_chunks(data))) == 1
    with pytest.raises(RecordingFailure):
        writer.append(b"three")
