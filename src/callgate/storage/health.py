"""Whether the store can take writes right now: a real write probe, repeated, that recovers by
itself.

Disk full must not be discovered by losing records: `serve` refuses new relay allocations (their
`relay_sessions` row could not be written) and `/healthz` answers 503 while the probe fails, and
both return to normal on the first probe that succeeds once space is back. The probe writes a
64 KiB file next to a SQLite database and fsyncs it (SQLite may still fit a small transaction
into pages it already has, while the next real insert fails), then updates the one row of
`storage_probe` in a transaction (a real database write, PostgreSQL included). Writers that fail
on their own (the relay-session recorder) report it with `failed()` at once, without waiting
for the next probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from callgate.storage.db import Store
from callgate.storage.models import StorageProbe

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_FILE_BYTES = 64 * 1024
PROBE_FILE = ".storage-probe"


def describe(exc: BaseException) -> str:
    """A short reason for logs and /healthz: the driver's first line, never SQL or parameters."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(source, OSError) and source.strerror:
        return source.strerror
    lines = str(source).strip().splitlines()
    return (lines[0] if lines else type(source).__name__)[:200]


class StorageHealth:
    def __init__(self, store: Store) -> None:
        self._store = store
        url = store.engine.url
        sqlite = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        self._dir = Path(str(url.database)).parent if sqlite else None
        self.writable = True
        self.error: str | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._store.sessions

    def probe(self) -> bool:
        """One write probe (blocking: run it off the event loop); the new state."""
        try:
            if self._dir is not None:
                self._probe_file(self._dir / PROBE_FILE)
            with self._store.sessions.begin() as session:
                probe = update(StorageProbe).where(StorageProbe.id == 1)
                session.execute(probe.values(written_at=datetime.now(UTC)))
        except (OSError, SQLAlchemyError) as exc:
            self.failed(exc)
            return False
        if not self.writable:
            log.warning("storage is writable again: relay allocations and sign-ins resume")
        self.writable, self.error = True, None
        return True

    def failed(self, exc: BaseException) -> None:
        """A write failed: refuse what needs one until a probe succeeds (thread-safe enough: two
        attribute stores)."""
        reason = describe(exc)
        if self.writable:
            log.error(
                "storage is not writable (%s): refusing relay allocations until it is", reason
            )
        self.writable, self.error = False, reason

    async def run(self, interval: float = PROBE_INTERVAL_S) -> None:
        """Probe forever (cancel to stop)."""
        while True:
            await asyncio.to_thread(self.probe)
            await asyncio.sleep(interval)

    @staticmethod
    def _probe_file(path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * PROBE_FILE_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
