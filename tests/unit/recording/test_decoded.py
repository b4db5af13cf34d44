"""Decoded recordings for playback (recording/decoded.py): decoded once to a private 0600 file
whoever asks meanwhile, on threads of their own (never asyncio's default executor), a bounded
queue, ranges read from the file, files deleted by a timer and at shutdown."""

from __future__ import annotations

import asyncio
import gc
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callgate.recording.decoded import Busy, Decoded, DecodedFiles

WAIT = 30.0  # generous: the machine may be busy


def writer(
    data: bytes, calls: list[str], gate: threading.Event | None = None
) -> Callable[[Path], None]:
    def decode(path: Path) -> None:
        calls.append(path.name)
        if gate is not None:
            assert gate.wait(WAIT)
        path.write_bytes(data)

    return decode


async def until(condition: Callable[[], object], what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def read(files: DecodedFiles, decoded: Decoded, start: int, end: int) -> bytes:
    return b"".join([piece async for piece in await files.pieces(decoded, start, end)])


def test_a_reader_dropped_before_its_first_piece_closes_the_file() -> None:
    """A client that leaves before the first piece: the deleted file's descriptor must not stay
    open (its decrypted audio would keep its disk space until the process ends)."""

    async def main() -> None:
        files = DecodedFiles(seconds=60)
        try:
            decoded = await files.get("r1", writer(b"x" * 100, []))
            before = len(os.listdir("/proc/self/fd"))
            pieces = await files.pieces(decoded, 0, 99)
            assert len(os.listdir("/proc/self/fd")) == before + 1
            del pieces  # never iterated
            gc.collect()
            assert len(os.listdir("/proc/self/fd")) == before
        finally:
            files.close()

    asyncio.run(main())


def test_one_decode_for_all_waiters_off_the_default_executor() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        # asyncio's default pool, fully taken (live recording writes, call setup...): playback
        # still decodes and serves, on its own threads
        default = ThreadPoolExecutor(1)
        loop.set_default_executor(default)
        busy = threading.Event()
        blocker = loop.run_in_executor(None, busy.wait, WAIT)
        files = DecodedFiles(seconds=60)
        calls: list[str] = []
        gate = threading.Event()
        data = bytes(range(256)) * 8192  # 2 MiB: two pieces
        try:
            waiters = [asyncio.create_task(files.get("r1", writer(data, calls, gate)))
                       for _ in range(5)]  # fmt: skip
            await until(lambda: calls, "the decode to start")
            gate.set()
            results = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
            assert len(calls) == 1 and len({r.path for r in results}) == 1
            decoded = results[0]
            assert decoded.size == len(data)
            assert stat.S_IMODE(decoded.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(decoded.path.parent.stat().st_mode) == 0o700
            assert await read(files, decoded, 0, len(data) - 1) == data
            assert await read(files, decoded, 1000, 1_500_000) == data[1000:1_500_001]
            assert (await files.get("r1", writer(b"", calls))) == decoded and len(calls) == 1
        finally:
            busy.set()
            await blocker
            directory = files.directory
            files.close()
            default.shutdown()
        assert not directory.exists()  # shutdown removes the decrypted audio

    asyncio.run(main())


def test_a_full_queue_is_refused_and_a_failure_reaches_every_waiter() -> None:
    async def main() -> None:
        files = DecodedFiles(queue=2, seconds=60)
        calls: list[str] = []
        gate = threading.Event()
        try:
            first = asyncio.create_task(files.get("a", writer(b"a" * 10, calls, gate)))
            second = asyncio.create_task(files.get("b", writer(b"b" * 10, calls, gate)))
            await until(lambda: calls, "a decode to start")
            with pytest.raises(Busy):
                await files.get("c", writer(b"c", calls))
            joined = asyncio.create_task(files.get("a", writer(b"x", calls)))  # waits, no queue
            gate.set()
            assert (await first).path == (await joined).path
            assert (await second).size == 10
            assert len(calls) == 2

            def broken(path: Path) -> None:
                raise OSError("the stored file is gone")

            failing = [asyncio.create_task(files.get("d", broken)) for _ in range(3)]
            outcomes = await asyncio.gather(*failing, return_exceptions=True)
            assert all(isinstance(o, OSError) for o in outcomes)
            assert sorted(p.name.split("-")[0] for p in files.directory.iterdir()) == ["a", "b"]
        finally:
            files.close()

    asyncio.run(main())


def test_files_are_bounded_and_deleted_when_they_expire() -> None:
    async def main() -> None:
        files = DecodedFiles(entries=2, max_bytes=25, seconds=0.2)
        calls: list[str] = []
        try:
            a = await files.get("a", writer(b"a" * 10, calls))
            await files.get("b", writer(b"b" * 10, calls))
            await files.get("c", writer(b"c" * 10, calls))  # two at most: a goes
            assert not a.path.exists() and len(files.kept()) == 2
            big = await files.get("big", writer(b"x" * 40, calls))  # alone over the bound: kept
            assert files.kept() == [big.path]
            assert await read(files, big, 0, 39) == b"x" * 40
            # no later request needed: the timer deletes it
            await until(lambda: not big.path.exists(), "the decoded file to expire")
            assert files.kept() == [] and list(files.directory.iterdir()) == []
        finally:
            files.close()

    asyncio.run(main())
