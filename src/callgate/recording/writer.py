"""Writing one recording file: each chunk written, fsynced and only then counted.

Blocking I/O; the recorder runs it in its worker threads. Any failure (write, fsync, free disk
below the threshold) raises `RecordingFailure` and the writer takes no more chunks: a recording
is "up" only while its bytes reach the disk.

Each chunk is made durable by fsync on its own file: a failing or slow write elsewhere on the
same file system cannot fail it (docs/recording.md, "Durability"). `chunks`, `bytes` and `sha256`
describe only chunks whose fsync returned. A recording abandoned while a worker thread is still
inside a write (`abandon`: its deadline passed) keeps what was counted then: the writer takes no
more chunks, counts nothing more, and once the thread lets go the file is cut back to exactly
what was counted (ftruncate, fsync), so it matches what the audit log says of it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

from callgate.recording.chunks import file_header, seal

log = logging.getLogger(__name__)


class RecordingFailure(Exception):
    """The recording can no longer be written; the message says why (for the CDR and audit)."""


class ChunkWriter:
    def __init__(self, path: Path, recording_id: str, key: bytes, min_free_bytes: int) -> None:
        self.path = path
        self.recording_id = recording_id
        self._key = key
        self._min_free = min_free_bytes
        self.chunks: list[str] = []  # SHA-256 of each chunk counted (fsynced), in order
        self.bytes = 0  # the file's length as counted
        self._digest = hashlib.sha256()
        self._closed = False
        self._abandoned = False
        self._lock = threading.Lock()  # one chunk at a time, whatever thread writes it
        self._count_lock = threading.Lock()  # counting a chunk vs. `abandon` (never blocks)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._check_space()
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            header = file_header(recording_id)
            self._write(header)
            self._count(header, None)
        except OSError as exc:
            raise RecordingFailure(f"cannot create {path.name}: {exc.strerror or exc}") from exc

    def _check_space(self) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < self._min_free:
            raise RecordingFailure(f"free disk {free} bytes is below {self._min_free}")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def _count(self, data: bytes, chunk_sha256: str | None) -> bool:
        """Count what was just made durable, unless the writer was abandoned meanwhile."""
        with self._count_lock:
            if self._abandoned:
                return False
            self._digest.update(data)
            self.bytes += len(data)
            if chunk_sha256 is not None:
                self.chunks.append(chunk_sha256)
            return True

    def append(self, plain: bytes, *, last: bool = False) -> None:
        """Encrypt, write and fsync one chunk; RecordingFailure if it cannot be (or the writer
        was closed or abandoned)."""
        with self._lock:
            try:
                self._append(plain, last)
            finally:
                if self._abandoned:
                    self._cut_back()

    def abandon(self) -> None:
        """Count nothing more and take no more chunks, from any thread, without waiting for a
        worker thread inside a write: the file is cut back to what is counted now once that
        thread lets go (or here, if none holds it)."""
        with self._count_lock:
            self._abandoned = True
        if self._lock.acquire(blocking=False):
            try:
                self._cut_back()
            finally:
                self._lock.release()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def _cut_back(self) -> None:
        """The file equals what was counted: truncated to `bytes`, fsynced, closed (lock held)."""
        if self._closed:
            return
        try:
            if os.fstat(self._fd).st_size != self.bytes:
                os.ftruncate(self._fd, self.bytes)
                os.fsync(self._fd)
        except OSError as exc:
            log.error(
                "recording %s: not cut back to its counted chunks: %s", self.recording_id, exc
            )
        finally:
            self._fail()

    def _append(self, plain: bytes, last: bool) -> None:
        if self._closed or self._abandoned:
            raise RecordingFailure("the recording is closed")
        try:
            self._check_space()
            chunk = seal(self._key, self.recording_id, len(self.chunks), last, plain)
            self._write(chunk)
        except (OSError, ValueError) as exc:
            self._fail()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RecordingFailure(f"chunk {len(self.chunks)} not written: {reason}") from exc
        except RecordingFailure as exc:
            self._fail()
            raise RecordingFailure(f"chunk {len(self.chunks)} not written: {exc}") from exc
        if not self._count(chunk, hashlib.sha256(chunk).hexdigest()):
            raise RecordingFailure(f"chunk {len(self.chunks)} durable only after its deadline")
        if last:
            self._fail()  # closes the file: nothing follows the last chunk

    @property
    def sha256(self) -> str:
        """SHA-256 of the whole file as counted so far."""
        with self._count_lock:
            return self._digest.hexdigest()

    def _fail(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._abandoned:
                self._cut_back()
            self._fail()
