"""What `callgate serve` runs for recordings after they are written: the hourly purge of
recordings past their retention (recording/retention.py) and, when `[recording.archive]` names a
bucket, the archiving of closed recordings to it every `interval_s` (recording/archive.py); the
purge then deletes an archived copy first."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import SQLAlchemyError

from callgate.recording.archive import ArchiveError, ArchiveTarget, RecordingArchive
from callgate.recording.retention import RecordingPurgeJob, RecordingRetention
from callgate.recording.service import RecordingService

log = logging.getLogger(__name__)


class ArchiveJob:
    """Archives what has closed every `interval` seconds (from the start); every failure is
    logged and tried again at the next run."""

    def __init__(self, archive: RecordingArchive, interval: float) -> None:
        self.archive = archive
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.archived_total = 0
        self.ok = True  # the last run archived everything pending (metrics)

    async def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="recording-archive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        bucket = self.archive.target.bucket
        while True:
            try:
                run = await asyncio.to_thread(self.archive.archive, "system")
                self.archived_total += len(run.archived)
                self.ok = not run.failed
                if run.archived:
                    log.info("archived %d recording(s) to %s", len(run.archived), bucket)
                for recording_id, why in run.failed.items():
                    log.error("recording %s not archived to %s: %s", recording_id, bucket, why)
            except (ArchiveError, SQLAlchemyError, OSError) as exc:
                self.ok = False
                log.error("recording archive: %s", exc)
            await asyncio.sleep(self._interval)


async def recording_jobs(
    service: RecordingService, archive: ArchiveTarget | None, archive_interval: float
) -> tuple[RecordingPurgeJob, ArchiveJob | None]:
    """The purge job and the archive job (not started); recordings made before retention
    existed get their date."""
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
    return purge, ArchiveJob(archived, archive_interval)
