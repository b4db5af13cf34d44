"""serve's legal-hold watcher (runtime/recordings.py, ArchiveJob): each poll reads only what the
audit log gained since the last (its mark moves to the head whatever was written), through the
(action, seq) index (migration 0028), and wakes the archive run for a `legal_hold.set`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import text

from callgate.records.audit import AuditLog
from callgate.runtime.recordings import ArchiveJob
from callgate.storage.db import open_store, sqlite_url

WAIT = 30.0


def test_each_poll_reads_from_the_head_it_saw_last(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    audit = AuditLog(store)
    asked: list[int] = []
    watch = audit.watch

    def spied(action: str, after: int) -> tuple[int, bool]:
        asked.append(after)
        return watch(action, after)

    audit.watch = spied  # type: ignore[method-assign]
    stand_in: Any = object()
    job = ArchiveJob(stand_in, interval=600, max_lag=3600, audit=audit, hold_check=0.01)

    async def main() -> None:
        for n in range(5):  # entries of other kinds: calls, sign-ins...
            audit.append("alice", "user.login", f"user:{n}", {})
        task = asyncio.create_task(job._watch_holds(0))
        try:
            for _ in range(int(WAIT / 0.01)):
                if 5 in asked:
                    break
                await asyncio.sleep(0.01)
            assert 5 in asked and not job._wake.is_set()  # moved past them, nothing to do
            audit.append("cleo", "legal_hold.set", "recording:r", {"hold": True})
            await asyncio.wait_for(job._wake.wait(), WAIT)
            asked.clear()
            for _ in range(int(WAIT / 0.01)):
                if 6 in asked:
                    break
                await asyncio.sleep(0.01)
            assert 6 in asked
        finally:
            task.cancel()

    try:
        asyncio.run(main())
        assert audit.watch("legal_hold.set", 6) == (6, False)
        assert audit.watch("legal_hold.set", 5) == (6, True)
        with store.engine.connect() as conn:
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT seq FROM audit_entries WHERE action = :a "
                    "AND seq > :s AND seq <= :h LIMIT 1"
                ),
                {"a": "legal_hold.set", "s": 1, "h": 6},
            ).all()
        assert "ix_audit_entries_action_seq" in " ".join(str(row) for row in plan)
    finally:
        store.close()
