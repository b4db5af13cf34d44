"""Decoded recordings for playback, as WAV files in a private temporary directory.

A player seeking through a recording asks for many byte ranges. Each recording is decoded once
to a file (mode 0600, in a 0700 directory of its own that is removed at shutdown), and each range
is read from that file: the memory a request costs is its slice, read in `PIECE` pieces, whatever
the recording's length; the decode itself is streamed to the file (recording/audio.py), bounded
too. Files are kept for `seconds` after their decode (a timer deletes them: no
decrypted audio lingers), at most `entries` of them and `max_bytes` in all (the newest is kept
even when it alone is larger, so a long recording is still decoded only once).

Decodes run on their own `decodes_at_once` threads, never on asyncio's default executor (live
recording writes, call setup and audit writes use that); at most `queue` distinct recordings
wait for or run a decode, past that `Busy` (the API answers 503 with Retry-After). Requests for
a recording being decoded wait on its future, holding no thread; a failed decode fails them all
and is not kept. Reads of ranges use `readers` threads of their own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PIECE = 1 << 20


class Busy(RuntimeError):
    """Too many recordings are waiting to be decoded; try again shortly."""


@dataclass(frozen=True, slots=True)
class Decoded:
    path: Path
    size: int


class DecodedFiles:
    def __init__(
        self,
        entries: int = 4,
        max_bytes: int = 8 << 30,
        seconds: float = 600,
        decodes_at_once: int = 1,
        queue: int = 4,
        readers: int = 2,
    ) -> None:
        self._entries, self._max_bytes, self._seconds = entries, max_bytes, seconds
        self._queue = queue
        self._files: OrderedDict[str, Decoded] = OrderedDict()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pending: dict[str, asyncio.Future[Decoded]] = {}
        self._gate = asyncio.Semaphore(decodes_at_once)
        self._decoders = ThreadPoolExecutor(decodes_at_once, thread_name_prefix="playback-decode")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="playback-read")
        self._tasks: set[asyncio.Task[None]] = set()
        self._directory: Path | None = None
        self._count = 0

    @property
    def directory(self) -> Path:
        """The private directory (0700), made at first use."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="callgate-playback-"))
        return self._directory

    async def get(self, recording_id: str, decode: Callable[[Path], None]) -> Decoded:
        """The decoded file of `recording_id`; `decode(path)` writes it (in a thread of ours)
        when it is not kept. Raises `Busy` when `queue` recordings wait for a decode already,
        and whatever `decode` raised."""
        kept = self._files.get(recording_id)
        if kept is not None:
            self._files.move_to_end(recording_id)
            return kept
        waiting = self._pending.get(recording_id)
        if waiting is not None:
            return await asyncio.shield(waiting)
        if len(self._pending) >= self._queue:
            raise Busy("too many recordings are being decoded; try again shortly")
        future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        self._pending[recording_id] = future
        # the decode is a task of its own: a client that goes away does not cancel it for others
        task = asyncio.create_task(self._settle(recording_id, decode, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _settle(
        self, recording_id: str, decode: Callable[[Path], None], future: asyncio.Future[Decoded]
    ) -> None:
        try:
            result = await self._decode(recording_id, decode)
        except asyncio.CancelledError:  # shutting down
            self._pending.pop(recording_id, None)
            future.cancel()
            raise
        except Exception as exc:
            self._pending.pop(recording_id, None)
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when every waiter has gone
            return
        self._keep(recording_id, result)  # kept and no longer pending in one step: no gap
        self._pending.pop(recording_id, None)
        future.set_result(result)

    async def _decode(self, recording_id: str, decode: Callable[[Path], None]) -> Decoded:
        self._count += 1
        path = self.directory / f"{recording_id}-{self._count}.wav"
        async with self._gate:  # acquired before a thread is taken
            loop = asyncio.get_running_loop()
            try:
                size = await loop.run_in_executor(self._decoders, _write, path, decode)
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
        return Decoded(path, size)

    def _keep(self, recording_id: str, decoded: Decoded) -> None:
        self._files[recording_id] = decoded
        self._timers[recording_id] = asyncio.get_running_loop().call_later(
            self._seconds, self._drop, recording_id
        )
        while len(self._files) > 1 and (
            len(self._files) > self._entries
            or sum(d.size for d in self._files.values()) > self._max_bytes
        ):
            self._drop(next(iter(self._files)))

    def _drop(self, recording_id: str) -> None:
        """Forget and delete one file; a request reading it keeps its open descriptor."""
        decoded = self._files.pop(recording_id, None)
        timer = self._timers.pop(recording_id, None)
        if timer is not None:
            timer.cancel()
        if decoded is not None:
            with contextlib.suppress(OSError):
                decoded.path.unlink()

    def kept(self) -> list[Path]:
        """The files kept now (tests, metrics)."""
        return [d.path for d in self._files.values()]

    async def pieces(self, decoded: Decoded, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start`..`end` (inclusive) of the file, `PIECE` at a time, read on our
        threads. The file is opened before the first piece is asked for."""
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(self._readers, os.open, decoded.path, os.O_RDONLY)
        return self._read(_Descriptor(fd), start, end)

    async def _read(self, opened: _Descriptor, start: int, end: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            at = start
            while at <= end:
                want = min(PIECE, end + 1 - at)
                piece = await loop.run_in_executor(self._readers, os.pread, opened.fd, want, at)
                if not piece:
                    return
                yield piece
                at += len(piece)
        finally:
            opened.close()

    def close(self) -> None:
        """At shutdown: every file and the directory removed, threads let go."""
        for task in self._tasks:
            task.cancel()
        for recording_id in list(self._files):
            self._drop(recording_id)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)


class _Descriptor:
    """An open file that closes itself when dropped: a client that goes away before the first
    piece leaves its reader unstarted, and an unstarted generator never runs its `finally`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def _write(path: Path, decode: Callable[[Path], None]) -> int:
    """Make the file 0600 before anything is written to it, then let `decode` fill it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    decode(path)
    return path.stat().st_size
