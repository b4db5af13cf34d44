"""What `callgate serve` runs for recordings after they are written: the hourly purge of
recordings past their retention (recording/retention.py), deleting their WORM archive copy first
when `[recording.archive]` is set (recording/archive.py)."""

from __future__ import annotations

import asyncio
import logging

from callgate.recording.archive import ArchiveSection, ArchiveTarget, RecordingArchive
from callgate.recording.retention import RecordingPurgeJob, RecordingRetention
from callgate.recording.service import RecordingService

log = logging.getLogger(__name__)


async def recording_purge_job(
    service: RecordingService, archive: ArchiveSection
) -> RecordingPurgeJob:
    """The purge job (not started); recordings made before retention existed get their date."""
    retention = RecordingRetention(service.repository, service.settings.directory)
    assigned = await asyncio.to_thread(retention.assign_missing, service.settings.retention)
    if assigned:
        log.warning("gave %d older recording(s) their retention date", assigned)
    target = ArchiveTarget.of(archive)
    if target is None:
        return RecordingPurgeJob(retention)
    archived = await asyncio.to_thread(
        RecordingArchive, target, service.repository, service.settings.directory
    )
    return RecordingPurgeJob(retention, archive_delete=archived.delete)
