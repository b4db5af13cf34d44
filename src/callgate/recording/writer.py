"""Writing one recording file: each chunk written, flushed and made durable before it counts.

Blocking I/O; the recorder runs it in a worker thread. Any failure (write, fsync, free disk
below the threshold) raises `RecordingFailure` and the writer takes no more chunks: a recording
is "up" only while its bytes reach the disk.

A chunk is made durable by fsync on its own file (`append`), or, for the recorder's chunks of
many recordings written together, by one `syncfs(2)` per file system for all of them
(`append(..., durable=False)` then `sync_all`): the same guarantee for a fraction of the CPU
(docs/recording.md, "Durability"). syncfs is trusted only where it reports every error an fsync
would: Linux 5.17 or later (since 5.8 it reports write-back errors, since 5.17 also the file
system's own sync step failing, e.g. a journal commit) and a file system whose sync step is its
own (ext4, XFS, btrfs: `fstatfs` magic numbers). Elsewhere (overlayfs in containers, whose
syncfs does not report the underlying disk's write-back errors; NFS, FUSE, ...), on an older
kernel, without the call, or when it reports an error, each file is fsynced on its own, so an
error is found and fails only the recordings it touched.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Sequence
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

    def _write(self, data: bytes, durable: bool = True) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if durable:
            os.fsync(self._fd)
        self._digest.update(data)
        self.bytes += len(data)

    def append(self, plain: bytes, *, last: bool = False, durable: bool = True) -> None:
        """Encrypt, write and fsync one chunk; RecordingFailure if it cannot be. With
        `durable=False` the chunk is written but not yet durable: `sync_all` must follow
        before anyone is told it is (the recorder's chunks of many recordings at once)."""
        with self._lock:
            self._append(plain, last, durable)

    def device(self) -> int | None:
        """The file system the open file is on (None once closed)."""
        with self._lock:
            return None if self._closed else os.fstat(self._fd).st_dev

    def sync_file_system(self) -> bool:
        """syncfs(2) on this file's file system (everything written to it so far, every file,
        is on disk): True when the call exists and reported no error."""
        with self._lock:
            if self._closed or syncfs is None or not syncfs_trusted_on(self._fd):
                return False
            return syncfs(self._fd) == 0

    def sync(self) -> None:
        """fsync what was written; RecordingFailure (and no more chunks) if it fails."""
        with self._lock:
            if self._closed:
                raise RecordingFailure("the recording is closed")
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail()
                raise RecordingFailure(
                    f"chunk {len(self.chunks) - 1} not written: {exc.strerror or exc}"
                ) from exc

    def _append(self, plain: bytes, last: bool, durable: bool) -> None:
        if self._closed:
            raise RecordingFailure("the recording is closed")
        try:
            self._check_space()
            chunk = seal(self._key, self.recording_id, len(self.chunks), last, plain)
            self._write(chunk, durable or last)
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


def _kernel_reports_syncfs_errors(release: str) -> bool:
    """Linux 5.17 or later: syncfs(2) returns write-back errors (5.8) and the file system's own
    sync failing (5.17); before, it drops one or both."""
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 17)


# statfs(2) f_type of the file systems whose syncfs reports what an fsync would (linux/magic.h)
SYNCFS_FILE_SYSTEMS = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs"}


class _StatFs(ctypes.Structure):
    # struct statfs begins with `__fsword_t f_type` (a long) on Linux's common ABIs; the rest is
    # room for the fields we do not read (the kernel writes up to 120 bytes).
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 248)]


def file_system_magic(fd: int) -> int | None:
    """fstatfs(2)'s f_type for the file `fd` is on (None where it cannot be asked)."""
    if _fstatfs is None:
        return None
    buf = _StatFs()
    if _fstatfs(fd, ctypes.byref(buf)) != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def syncfs_trusted_on(fd: int) -> bool:
    """Whether syncfs on `fd`'s file system reports its errors (module docstring)."""
    return file_system_magic(fd) in SYNCFS_FILE_SYSTEMS


def _libc_call(name: str, argtypes: list[type]) -> Callable[..., int] | None:
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (AttributeError, OSError):
        return None
    call.argtypes, call.restype = argtypes, ctypes.c_int
    return call  # type: ignore[no-any-return]


def _syncfs_call() -> Callable[[int], int] | None:
    if os.uname().sysname != "Linux" or not _kernel_reports_syncfs_errors(os.uname().release):
        return None
    return _libc_call("syncfs", [ctypes.c_int])


_fstatfs = _libc_call("fstatfs", [ctypes.c_int, ctypes.c_void_p]) if os.name == "posix" else None
syncfs: Callable[[int], int] | None = _syncfs_call()  # None: fsync each file instead


def sync_all(writers: Sequence[ChunkWriter]) -> list[str | None]:
    """Make what `writers` wrote durable: one syncfs per file system they are on, else (no
    syncfs, or it failed) fsync each; per writer, why it is not durable, or None."""
    errors: list[str | None] = [None] * len(writers)
    by_device: dict[int, list[int]] = {}
    for i, writer in enumerate(writers):
        try:
            device = writer.device()
        except OSError as exc:
            device, errors[i] = None, f"not written: {exc.strerror or exc}"
        if device is not None:
            by_device.setdefault(device, []).append(i)
        elif errors[i] is None:
            errors[i] = "the recording is closed"
    for indexes in by_device.values():
        if writers[indexes[0]].sync_file_system():
            continue
        for i in indexes:  # find which files the error touched (each file's own fsync)
            try:
                writers[i].sync()
            except RecordingFailure as exc:
                errors[i] = str(exc)
    return errors
