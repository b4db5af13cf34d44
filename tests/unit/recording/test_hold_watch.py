"""serve's legal-hold watcher (runtime/recordings.py, ArchiveJob): each poll reads only what the
audit log gained since the last (its mark moves to the head whatever was written), through the
(action, seq) index (migration 0028), and wakes the archive run for a `legal_hold.set` that no
run covered yet: a hold changed through the API (which wakes the run itself) makes one run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import text

from callgate.records.audit import AuditLog
from callgate.runtime.recordings import ArchiveJob
from callgate.storage.db import open_store, sqlite_url

WAIT = 30.0


class StandIn:
    """The archive's place: each run counted, nothing to copy."""

    def __init__(self) -> None:
        self.target = SimpleNamespace(bucket="b")
        self.runs = self.done = 0
        self.gate = threading.Event()  # a run goes on once it is set
        self.gate.set()

    def archive(self, actor: str) -> Any:
        self.runs += 1
        self.gate.wait(WAIT)
        self.done += 1
        return SimpleNamespace(archived=[], failed={}, holds={})


async def until(predicate: Callable[[], bool], wait: float = WAIT, must: bool = True) -> None:
    for _ in range(int(wait / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    if must:
        raise AssertionError("not within the wait")


def test_each_poll_reads_from_the_head_it_saw_last_and_a_hold_wakes_one_run(
    tmp_path: Path,
) -> None:
    store = open_store(sqlite_url(tmp_path))
    audit = AuditLog(store)
    asked: list[int] = []
    watch = audit.watch

    def spied(action: str, after: int) -> tuple[int, bool]:
        asked.append(after)
        return watch(action, after)

    audit.watch = spied  # type: ignore[method-assign]
    archive = StandIn()
    job = ArchiveJob(archive, interval=600, max_lag=3600, audit=audit, hold_check=0.01)  # type: ignore[arg-type]

    async def main() -> None:
        await job.start()  # runs once at start
        try:
            await until(lambda: archive.runs == 1 and 0 in asked)
            for n in range(5):  # entries of other kinds: calls, sign-ins...
                audit.append("alice", "user.login", f"user:{n}", {})
            await until(lambda: 5 in asked)
            assert archive.runs == 1  # moved past them, nothing to do

            # a hold through the API: its entry, then the API wakes the run; the run takes a
            # while (S3), long enough for a watcher running beside it to see the entry
            archive.gate.clear()
            audit.append("cleo", "legal_hold.set", "recording:r", {"hold": True})
            job.wake()
            await until(lambda: archive.runs == 2)
            await until(lambda: 6 in asked, wait=1.0, must=False)
            archive.gate.set()
            await until(lambda: archive.done >= 2)
            polls = len(asked)
            await until(lambda: len(asked) >= polls + 3)  # the watcher has looked again since
            assert archive.runs == 2  # the run covered it: no second run for the same hold

            # a hold on the store (the CLI, another server): only the watcher sees it
            audit.append("cleo", "legal_hold.set", "recording:r", {"hold": False})
            await until(lambda: archive.runs == 3)
            await until(lambda: asked.count(7) >= 3)
            assert archive.runs == job.runs == 3
        finally:
            await job.stop()

    try:
        asyncio.run(main())
        assert audit.watch("legal_hold.set", 7) == (7, False)
        assert audit.watch("legal_hold.set", 6) == (7, True)
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
