"""Call ids: random version-4 UUIDs in hex, as `uuid.uuid4().hex` makes them (RFC 9562 §5.4),
drawn from the operating system's CSPRNG a block at a time.

`uuid4()` reads 16 bytes with one `getrandom` call per id, and CPython releases the GIL around
that call: on a busy signaling node every call attempt handed the GIL to the records writer or
a worker thread and waited to get it back. One read of `BLOCK` ids' bytes serves the next
`BLOCK` call attempts; the ids are as unpredictable as before (the same source, no seeding of
our own).
"""

from __future__ import annotations

import os
import uuid

BLOCK = 256  # ids per read from the CSPRNG (4 KiB)
_SIZE = 16


class CallIds:
    """A callable that returns a new random uuid4 hex string each time (not thread-safe: the
    call engine runs on one event loop)."""

    __slots__ = ("_block", "_next")

    def __init__(self) -> None:
        self._block = b""
        self._next = 0

    def __call__(self) -> str:
        if self._next >= len(self._block):
            self._block, self._next = os.urandom(BLOCK * _SIZE), 0
        start = self._next
        self._next = start + _SIZE
        return uuid.UUID(bytes=self._block[start : start + _SIZE], version=4).hex
