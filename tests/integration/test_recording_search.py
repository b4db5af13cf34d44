"""Searching recordings on a real store (SQLite and PostgreSQL): by party (a handle or a number),
dates, call, legal hold (on the recording, its call or a party) and archive state; keyset pages
in a stable newest-first order that lose and repeat nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from callgate.accounts.service import AccountService
from callgate.recording.recorder import RecorderLimits
from callgate.recording.retention import RecordingRetention
from callgate.recording.search import RecordingFilter, search
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen, new_call_id
from callgate.records.query import BadCursor
from callgate.records.retention import Retention
from callgate.storage.db import Store
from callgate.storage.models import Recording
from tests.unit.recording.test_recorder import packet


async def record_call(service: RecordingService, store: Store, caller: str, callee: str) -> str:
    """A finished, recorded call from `caller` to `callee`; its recording id."""
    call_id = new_call_id()
    start = datetime.now(UTC)
    cdrs = CdrRepository(store)
    cdrs.open(CallOpen(call_id, caller, callee, start, caller_device="d1"))
    cdrs.finalize(call_id, start + timedelta(seconds=2), "answered", "callee", "hangup")
    parties = {"caller": {"handle": caller}, "callee": {"handle": callee}}
    recorder = await service.start(call_id, parties, None, lambda reason: None)
    recorder.on_packet(packet("caller", 0))
    await asyncio.wait_for(recorder.first_written(), 30)
    await service.finish(recorder.recording_id)
    return recorder.recording_id


def ids(store: Store, where: RecordingFilter, limit: int = 100) -> list[str]:
    return [r.recording_id for r in search(store.engine, where, limit, None).rows]


async def test_recordings_are_found_by_party_date_call_hold_and_archive(
    store: Store, tmp_path: Path
) -> None:
    settings = RecordingSettings(
        directory=tmp_path / "rec", key_file=tmp_path / "master.key", min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0),
    )  # fmt: skip
    service = RecordingService(RecordingRepository(store), settings, {})
    accounts = AccountService(store, "callgate")
    for handle in ("alice", "bob", "carol", "dave", "erin"):
        accounts.create_user(handle)
    made = [
        await record_call(service, store, "alice", "bob"),
        await record_call(service, store, "carol", "+442071234567"),
        await record_call(service, store, "alice", "dave"),
        await record_call(service, store, "dave", "carol"),
        await record_call(service, store, "bob", "carol"),
    ]
    newest_first = made[::-1]
    retention = RecordingRetention(RecordingRepository(store), settings.directory)

    # paging: every recording once, newest first, whatever the page size
    for size in (1, 2, 5):
        seen, cursor = [], None
        while True:
            page = search(store.engine, RecordingFilter(), size, cursor)
            seen += [r.recording_id for r in page.rows]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == newest_first, size
    first = search(store.engine, RecordingFilter(), 2, None)
    assert first.next_cursor is not None
    made.append(await record_call(service, store, "erin", "bob"))  # a new one: no page shifts
    after = search(store.engine, RecordingFilter(), 2, first.next_cursor)
    assert [r.recording_id for r in after.rows] == newest_first[2:4]
    with pytest.raises(BadCursor):
        search(store.engine, RecordingFilter(), 2, "not-a-cursor")

    # party: caller or callee, a handle or a number
    assert ids(store, RecordingFilter(party="alice")) == [made[2], made[0]]
    assert ids(store, RecordingFilter(party="+442071234567")) == [made[1]]
    assert ids(store, RecordingFilter(party="carol")) == [made[4], made[3], made[1]]
    assert ids(store, RecordingFilter(party="nobody")) == []
    # call, dates
    row = RecordingRepository(store).get(made[3])
    assert row is not None
    assert ids(store, RecordingFilter(call_id=row.call_id)) == [made[3]]
    assert ids(store, RecordingFilter(since=row.started_at, until=row.started_at
                                      + timedelta(microseconds=1))) == [made[3]]  # fmt: skip
    assert ids(store, RecordingFilter(until=row.started_at)) == made[:3][::-1]
    assert ids(store, RecordingFilter(since=datetime.now(UTC) + timedelta(days=1))) == []

    # held: by a hold on the recording, on a party of its call
    retention.hold(made[0], True, "FCA matter 88", "cleo")
    assert Retention(store.engine).hold_user("dave", True, "admin")
    held = {made[0], made[2], made[3]}
    assert set(ids(store, RecordingFilter(held=True))) == held
    assert set(ids(store, RecordingFilter(held=False))) == set(made) - held

    # archive: copied, not yet, copied but the S3 legal hold not yet confirmed
    with store.engine.begin() as conn:
        conn.execute(
            update(Recording)
            .where(Recording.recording_id.in_([made[0], made[4]]))
            .values(archive_bucket="worm", archive_key="k", archived_at=datetime.now(UTC))
        )
    assert ids(store, RecordingFilter(archive="archived")) == [made[4], made[0]]
    assert set(ids(store, RecordingFilter(archive="pending"))) == set(made) - {made[0], made[4]}
    assert ids(store, RecordingFilter(archive="hold-pending")) == [made[0]]
    assert ids(store, RecordingFilter(archive="archived", party="bob")) == [made[4], made[0]]
