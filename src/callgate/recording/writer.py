"""Writing one recording file: each chunk written, flushed and fsynced before it counts.

Blocking I/O; the recorder runs it in a worker thread. Any failure (write, fsync, free disk
below the threshold) raises `RecordingFailure` and the writer takes no more chunks: a recording
is "up" only while its bytes reach the disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from callgate.recording.chunks import file_header, seal


class RecordingFailure(Exception):
    """The recording can no longer be written; the message says why (for the CDR and audit)."""


class ChunkWriter:
    def __init__(self, path: Path, recording_id: str, key: bytes, min_free_bytes: int) -> None:
        self.path = path
        self.recording_id = recording_id
        self._key = key
        self._min_free = min_free_bytes
        self.chunks: list[str] = []  # SHA-256 of each stored chunk, in order
        self.bytes = 0
        self._digest = hashlib.sha256()
        self._closed = False
        self._lock = threading.Lock()  # one chunk at a time, whatever thread writes it
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._check_space()
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            self._write(file_header(recording_id))
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
        self._digest.update(data)
        self.bytes += len(data)

    def append(self, plain: bytes, *, last: bool = False) -> None:
        """Encrypt, write and fsync one chunk; RecordingFailure if it cannot be."""
        with self._lock:
            self._append(plain, last)

    def _append(self, plain: bytes, last: bool) -> None:
        if self._closed:
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
        self.chunks.append(hashlib.sha256(chunk).hexdigest())
        if last:
            self._fail()  # closes the file: nothing follows the last chunk

    @property
    def sha256(self) -> str:
        """SHA-256 of the whole file as written so far."""
        return self._digest.hexdigest()

    def _fail(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def close(self) -> None:
        with self._lock:
            self._fail()
