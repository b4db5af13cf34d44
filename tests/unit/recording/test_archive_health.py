"""What `/healthz` says of the WORM archive (runtime/recordings.py, ArchiveJob.health): each
reason it is behind, named, and ok again once a run copies everything. The archive itself is
tested against moto's S3 server (tests/integration/test_recording_archive.py); here a stand-in
gives the job the outcomes to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from callgate.recording.archive import ArchiveError, ArchiveRun, ArchiveTarget
from callgate.runtime.recordings import ArchiveJob
from callgate.storage.models import utcnow


@dataclass
class StandIn:
    """The parts of RecordingArchive the job uses: its target, a run, the oldest waiting."""

    target: ArchiveTarget = field(default_factory=lambda: ArchiveTarget("worm"))
    outcome: ArchiveRun | Exception = field(default_factory=ArchiveRun)
    oldest: datetime | None = None
    asked: int = 0

    def archive(self, actor: str) -> ArchiveRun:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def oldest_pending(self, now: datetime) -> datetime | None:
        self.asked += 1
        return self.oldest


def job(stand_in: StandIn) -> ArchiveJob:
    archive: Any = stand_in
    return ArchiveJob(archive, interval=600, max_lag=3600)


async def test_each_reason_the_archive_is_behind_is_named() -> None:
    stand_in = StandIn(outcome=ArchiveError("bucket 'worm': no Object Lock (NoSuchBucket: gone)"))
    archiving = job(stand_in)
    fresh = archiving.health()
    assert fresh["ok"] is True and fresh["critical"] is False and fresh["last_run"] is None

    await archiving.run_once()
    health = archiving.health()
    assert health["ok"] is False and "bucket" not in health  # /healthz answers anyone
    assert health["error"] == "last run failed (the server log says why)"

    stand_in.outcome = ArchiveRun(failed={"a" * 32: "upload of x: SlowDown", "b" * 32: "gone"})
    stand_in.oldest = utcnow() - timedelta(hours=2)
    await archiving.run_once()
    health = archiving.health()
    assert health["failed"] == 2 and health["oldest_unarchived_s"] >= 7200
    reasons = health["error"].split("; ")
    assert reasons[0] == "2 recording(s) not archived (the server log says why)"
    assert "a" * 32 not in health["error"] and "SlowDown" not in health["error"]
    assert reasons[1].startswith("a closed recording has waited 7")
    assert reasons[1].endswith("s for its copy (max_lag_s 3600)")

    stand_in.outcome, stand_in.oldest = ArchiveRun(archived=[{"recording_id": "a" * 32}]), None
    await archiving.run_once()
    health = archiving.health()
    assert health["ok"] is True and "error" not in health and health["oldest_unarchived_s"] is None
    assert archiving.archived_total == 1


async def test_the_oldest_waiting_recording_is_not_asked_at_every_probe() -> None:
    stand_in = StandIn(oldest=utcnow() - timedelta(minutes=5))
    archiving = job(stand_in)
    for _ in range(5):
        assert archiving.health()["ok"] is True
    assert stand_in.asked == 1
    await archiving.run_once()  # a run makes the next probe ask again
    archiving.health()
    assert stand_in.asked == 2
