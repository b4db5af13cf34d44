"""What `callgate serve` runs for recordings after they are written: the hourly purge of
recordings past their retention (recording/retention.py) and, when `[recording.archive]` names a
bucket, the archiving of closed recordings to it every `interval_s` (recording/archive.py); the
purge then deletes an archived copy first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from callgate.recording.archive import ArchiveError, ArchiveTarget, RecordingArchive
from callgate.recording.retention import RecordingPurgeJob, RecordingRetention
from callgate.recording.service import RecordingService
from callgate.records.audit import AuditLog
from callgate.storage.models import utcnow

log = logging.getLogger(__name__)
HEALTH_CACHE_S = 10.0  # /healthz asks the database for the oldest unarchived recording this often


class ArchiveJob:
    """Archives what has closed, and mirrors legal holds as S3 legal holds, every `interval`
    seconds (from the start) and at once when `wake()` is called (a hold changed); every failure
    is logged, kept for `/healthz` and tried again at the next run.

    With `audit`, it also watches the audit log every `hold_check` seconds for `legal_hold.set`
    entries (written in the same transaction as every hold change, whoever makes it: the API,
    `callgate recording|cdr|user hold` on the store, another server) and runs for them. Each run
    first notes the log's head: the holds of the entries up to it are what that run mirrors, so
    an entry the run covered does not start another (a hold changed through the API wakes one
    run, not that run and a second one when the watcher sees its entry). Runs and polls share
    one task, so no poll falls between a wake and the head its run notes."""

    def __init__(
        self,
        archive: RecordingArchive,
        interval: float,
        max_lag: float,
        audit: AuditLog | None = None,
        hold_check: float = 2.0,
    ) -> None:
        self.archive = archive
        self._interval = interval
        self._max_lag = max_lag
        self._audit = audit
        self._hold_check = hold_check
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.runs = 0  # runs started (tests, metrics)
        self.archived_total = 0
        self.ok = True  # the last run archived everything pending (metrics)
        self.last_run: datetime | None = None
        self.last_error: str | None = None  # the archive could not be used at all
        self.failed: dict[str, str] = {}  # recording id -> why, from the last run
        self._oldest: tuple[float, datetime | None] = (-HEALTH_CACHE_S, None)

    async def start(self) -> None:
        if self._interval > 0:
            seen = 0
            if self._audit is not None:
                seen = (await asyncio.to_thread(self._audit.head))[0]
            self._task = asyncio.create_task(self._run(seen), name="recording-archive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, seen: int) -> None:
        """Run at start, then every `interval`, or at once when woken; between runs, look for
        `legal_hold.set` entries newer than `seen` every `hold_check` seconds. `seen` moves to
        the log's head at every poll and at the start of every run, so a poll reads only what
        was written since, and nothing a run already covered."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self._wake.is_set() or loop.time() >= due:
                self._wake.clear()
                seen = max(seen, await self._head())
                await self.run_once()
                due = loop.time() + self._interval
            pause = due - loop.time()
            if self._audit is not None:
                pause = min(pause, self._hold_check)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, pause))
            if self._audit is not None and not self._wake.is_set():
                seen = await self._poll(seen)

    async def _head(self) -> int:
        """The audit log's head seq (0 without a log, or when it cannot be read: the next poll
        then looks again, at worst waking one run more than needed)."""
        if self._audit is None:
            return 0
        try:
            return (await asyncio.to_thread(self._audit.head))[0]
        except SQLAlchemyError as exc:
            log.error("recording archive: reading the audit log's head: %s", exc)
            return 0

    async def _poll(self, seen: int) -> int:
        """Wake the run when a `legal_hold.set` entry newer than `seen` appears; the new mark."""
        assert self._audit is not None
        try:
            seen, changed = await asyncio.to_thread(self._audit.watch, "legal_hold.set", seen)
        except SQLAlchemyError as exc:
            log.error("recording archive: watching legal holds: %s", exc)
            return seen
        if changed:
            self.wake()
        return seen

    def wake(self) -> None:
        """Run now (a legal hold changed: mirror it, and archive what waits meanwhile), not at
        the end of the interval."""
        self._wake.set()

    async def run_once(self) -> None:
        self.runs += 1
        bucket = self.archive.target.bucket
        try:
            run = await asyncio.to_thread(self.archive.archive, "system")
            self._oldest = (-HEALTH_CACHE_S, None)  # asked again at the next /healthz
        except (ArchiveError, SQLAlchemyError, OSError) as exc:
            self.ok, self.last_error = False, str(exc)
            log.error("recording archive: %s", exc)
        else:
            self.archived_total += len(run.archived)
            self.ok, self.last_error, self.failed = not run.failed, None, run.failed
            if run.archived:
                log.info("archived %d recording(s) to %s", len(run.archived), bucket)
            for recording_id, hold in run.holds.items():
                log.info("recording %s: S3 legal hold %s", recording_id, "on" if hold else "off")
            for recording_id, why in run.failed.items():
                log.error("recording %s not archived to %s: %s", recording_id, bucket, why)
        self.last_run = utcnow()

    def health(self) -> dict[str, Any]:
        """For /healthz (a thread): not ok while the last run failed, or a closed recording has
        waited longer than `max_lag_s` for its copy. Not critical: calls go on (200)."""
        now = utcnow()
        oldest = self._oldest_pending(now)
        lag = (now - oldest).total_seconds() if oldest is not None else None
        # /healthz answers anyone: reasons without the bucket, recording ids or the error's own
        # text (SQL, endpoints); the server log has those
        problems = []
        if self.last_error is not None:
            problems.append("last run failed (the server log says why)")
        if self.failed:
            problems.append(
                f"{len(self.failed)} recording(s) not archived (the server log says why)"
            )
        if lag is not None and lag > self._max_lag:
            problems.append(
                f"a closed recording has waited {lag:.0f} s for its copy (max_lag_s {self._max_lag:.0f})"
            )
        return {
            "ok": not problems,
            "critical": False,
            **({"error": "; ".join(problems)} if problems else {}),
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "failed": len(self.failed),
            "oldest_unarchived_s": round(lag, 1) if lag is not None else None,
            "max_lag_s": self._max_lag,
        }

    def lag_seconds(self) -> float:
        """How long the oldest closed recording still to archive has waited (metrics); 0: none."""
        now = utcnow()
        oldest = self._oldest_pending(now)
        return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0

    def _oldest_pending(self, now: datetime) -> datetime | None:
        """The end of the oldest closed recording not archived yet (cached a few seconds: a
        load balancer may poll /healthz often)."""
        at, oldest = self._oldest
        if time.monotonic() - at >= HEALTH_CACHE_S:
            try:
                oldest = self.archive.oldest_pending(now)
            except SQLAlchemyError as exc:
                log.error("recording archive health: %s", exc)
            self._oldest = (time.monotonic(), oldest)
        return oldest


async def recording_jobs(
    service: RecordingService,
    archive: ArchiveTarget | None,
    archive_interval: float,
    archive_max_lag: float = 3600.0,
    audit: AuditLog | None = None,
    hold_check: float = 2.0,
) -> tuple[RecordingPurgeJob, ArchiveJob | None]:
    """The purge job and the archive job (not started); recordings made before retention
    existed get their date. With `audit` the archive job watches it for legal hold changes."""
    retention = RecordingRetention(service.repository, service.settings.directory)
    assigned = await asyncio.to_thread(retention.assign_missing, service.settings.retention)
    if assigned:
        log.warning("gave %d older recording(s) their retention date", assigned)
    if archive is None:
        return RecordingPurgeJob(retention), None
    archived = await asyncio.to_thread(
        RecordingArchive, archive, service.repository, service.settings.directory
    )
    purge = RecordingPurgeJob(retention, archive_delete=archived.delete)
    return purge, ArchiveJob(archived, archive_interval, archive_max_lag, audit, hold_check)
