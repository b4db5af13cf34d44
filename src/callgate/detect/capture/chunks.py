"""The reused read buffer of the batch paths: chunks of a capture file, each with HEAD_SLACK
readable zero bytes after it. No numpy here (the compiled pcap path, `detect.pcapfeed`, runs
without it)."""

from __future__ import annotations

import os
from io import BufferedIOBase

from callgate.detect.capture.packets import PcapReader

CHUNK = 8 * 1024 * 1024
HEAD_SLACK = 128  # readable bytes after the data (fixed-size header windows)


class ChunkBuffer:
    """One reusable read buffer (a fresh 32 MiB allocation per chunk costs more in page faults
    than the chunk's processing), with HEAD_SLACK zero bytes after the data."""

    def __init__(self, handle: BufferedIOBase, chunk: int | None = None) -> None:
        self.chunk = CHUNK if chunk is None else min(chunk, CHUNK)  # bytes read at a time
        try:
            size = os.fstat(handle.fileno()).st_size
        except (OSError, ValueError):
            size = self.chunk
        self.raw = bytearray(min(size, self.chunk) + HEAD_SLACK)

    def read(self, reader: PcapReader, handle: BufferedIOBase, tail: bytes) -> memoryview | None:
        """`tail` (what the previous chunk left over) then the next chunk; None at the end. A tail
        longer than a chunk (a record larger than one) gets as many bytes again, so a huge record
        is read in a few doubling steps, not copied again for every chunk of it."""
        want = max(self.chunk, len(tail))
        need = len(tail) + want + HEAD_SLACK
        if len(self.raw) < need:
            self.raw = bytearray(need)
        view = memoryview(self.raw)
        view[: len(tail)] = tail
        got = handle.readinto(view[len(tail) : len(tail) + want])
        if not got:
            return None
        if reader.progress is not None:
            reader.progress(got)
        size = len(tail) + got
        view[size : size + HEAD_SLACK] = bytes(HEAD_SLACK)
        return view[:size]
