"""`RecordingService` on a real store (SQLite and PostgreSQL): a recording's life in the table
and the audit log, the cap on calls recorded at once, and the closing of recordings a dead
server left open."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from callgate.recording.chunks import iter_chunks
from callgate.recording.recorder import RecorderLimits
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository, recording_digest
from callgate.recording.writer import RecordingFailure
from callgate.records.audit import AuditLog
from callgate.storage.db import Store
from tests.unit.recording.test_recorder import packet

PARTIES = {"caller": {"handle": "alice", "device": "d1"}, "callee": {"handle": "bob"}}


def service(store: Store, tmp_path: Path, max_active: int = 5) -> RecordingService:
    settings = RecordingSettings(
        directory=tmp_path / "rec",
        key_file=tmp_path / "keys" / "master.key",
        min_free_bytes=0,
        max_active=max_active,
        limits=RecorderLimits(0.05, 30.0),
    )
    return RecordingService(RecordingRepository(store), settings, {})


async def test_a_recording_is_audited_when_it_starts_and_when_it_closes(
    store: Store, tmp_path: Path
) -> None:
    recordings = service(store, tmp_path, max_active=1)
    recorder = await recordings.start("c" * 32, PARTIES, "3:record", lambda reason: None)
    with pytest.raises(RecordingFailure, match="1 calls are being recorded already"):
        await recordings.start("d" * 32, PARTIES, None, lambda reason: None)
    for seq in range(5):
        recorder.on_packet(packet("caller", seq))
    await asyncio.wait_for(recorder.first_written(), 30)
    await recordings.finish(recorder.recording_id)

    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None and row.state == "closed" and row.policy_rule == "3:record"
    assert row.metadata["participants"][0] == {"id": "caller", "handle": "alice", "device": "d1"}
    assert row.metadata["streams"][0]["packets"] == 5
    entries = [e for e in AuditLog(store).recent(10) if e.object == f"recording:{row.recording_id}"]
    assert [e.action for e in entries] == ["recording.closed", "recording.started"]
    closed = json.loads(entries[0].details)
    assert row.sha256 is not None
    assert closed["digest"] == recording_digest(row.sha256, row.metadata)
    assert row.audit_seq == entries[0].seq
    # a slot is free again
    again = await recordings.start("e" * 32, PARTIES, None, lambda reason: None)
    await recordings.finish(again.recording_id)


async def test_recordings_left_open_are_closed_as_interrupted(store: Store, tmp_path: Path) -> None:
    first = service(store, tmp_path)
    recorder = await first.start("f" * 32, PARTIES, None, lambda reason: None)
    for seq in range(5):
        recorder.on_packet(packet("caller", seq))
    await asyncio.wait_for(recorder.first_written(), 30)
    recorder._closed = True  # the process dies: no last chunk, no closing entry
    path = first.settings.directory / f"{recorder.recording_id}.cgrec"
    with path.open("ab") as handle:
        handle.write(b"CHNK\x00\x00")  # and a chunk cut short by the crash

    second = service(store, tmp_path)
    assert await asyncio.to_thread(second.recover) == 1
    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None and row.state == "interrupted", row
    chunks = list(iter_chunks(path.read_bytes()))
    assert len(chunks) == row.chunks >= 2 and chunks[-1].last
    assert row.failure is not None and "cut short" in row.failure
    assert await asyncio.to_thread(second.recover) == 0


async def test_a_party_named_as_the_call_ends_stays_named_in_the_closing_metadata(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ring group's member is being named when the call ends: closing cancels the naming, but
    its write commits (audited), and the closed recording's metadata names the member too; a
    write that fails leaves the party as it was."""
    recordings = service(store, tmp_path)
    group = {**PARTIES, "callee": {"handle": "group:desk"}}
    recorder = await recordings.start("a" * 32, group, "3:record", lambda reason: None)
    rid, real = recorder.recording_id, recordings.repository.set_participants
    entered, release, committed = threading.Event(), threading.Event(), threading.Event()

    def slow(*args: Any) -> None:
        entered.set()
        release.wait(30)
        real(*args)
        committed.set()

    monkeypatch.setattr(recordings.repository, "set_participants", slow)
    naming = asyncio.create_task(recordings.set_party(rid, "callee", {"handle": "bob"}))
    assert await asyncio.to_thread(entered.wait, 30)
    naming.cancel()  # the call ended: closing cancels the call's tasks
    with contextlib.suppress(asyncio.CancelledError):
        await naming
    release.set()
    assert await asyncio.to_thread(committed.wait, 30)
    await recordings.finish(rid)
    row = RecordingRepository(store).get(rid)
    assert row is not None and row.metadata["participants"][1]["handle"] == "bob"
    named = [e for e in AuditLog(store).recent(5) if e.action == "recording.participant"]
    assert [json.loads(e.details)["handle"] for e in named] == ["bob"]

    def broken(*args: Any) -> None:
        raise OSError("database away")

    recorder = await recordings.start("b" * 32, group, "3:record", lambda reason: None)
    monkeypatch.setattr(recordings.repository, "set_participants", broken)
    with pytest.raises(RecordingFailure, match="recording party not stored: OSError"):
        await recordings.set_party(recorder.recording_id, "callee", {"handle": "carol"})
    await recordings.finish(recorder.recording_id)
    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None and row.metadata["participants"][1]["handle"] == "group:desk"


async def test_a_write_stuck_past_its_deadline_leaves_a_file_matching_its_audit(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk hangs in a chunk's fsync: the recording fails at the deadline and is closed
    `failed` with the chunks confirmed by then; no new recorded call starts while the write is
    stuck (recording-unavailable, /healthz says why); once the write returns the file is cut
    back to exactly what the audit log holds (its SHA-256, size, chunks), so it verifies."""
    settings = RecordingSettings(
        directory=tmp_path / "rec",
        key_file=tmp_path / "keys" / "master.key",
        min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0, 0.3),
    )
    recordings = RecordingService(RecordingRepository(store), settings, {})
    failures: list[str] = []
    recorder = await recordings.start("f" * 32, PARTIES, "3:record", failures.append)
    recorder.on_packet(packet("caller", 0))
    await asyncio.wait_for(recorder.first_written(), 30)
    stuck_fd = recorder.writer._fd
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fd == stuck_fd:
            entered.set()
            release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        recorder.on_packet(packet("caller", 1))  # written, then stuck in its fsync
        assert await asyncio.to_thread(entered.wait, 30)
        for _ in range(3000):
            if failures:
                break
            await asyncio.sleep(0.01)
        assert failures == ["chunk not durable within 0.35 s of its audio"]
        assert not recordings.available and "has not returned" in recordings.health()["error"]
        with pytest.raises(RecordingFailure, match="recording disk"):
            await recordings.start("g" * 32, PARTIES, None, lambda reason: None)
        await asyncio.wait_for(recordings.finish(recorder.recording_id), 30)
    finally:
        release.set()
    for _ in range(3000):  # the stuck thread lets go: the writer cuts the file back, closes it
        if recorder.writer._closed and recordings.available:
            break
        await asyncio.sleep(0.01)
    assert recorder.writer._closed and recordings.available
    row = RecordingRepository(store).get(recorder.recording_id)
    assert row is not None and row.state == "failed" and row.sha256 is not None
    data = (tmp_path / "rec" / row.file_name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == row.sha256 and len(data) == row.bytes
    chunks = list(iter_chunks(data))
    assert [c.sha256 for c in chunks] == row.metadata["chunk_sha256"] and len(chunks) >= 1
    (closed,) = [e for e in AuditLog(store).recent(10) if e.action == "recording.failed"]
    assert json.loads(closed.details)["digest"] == recording_digest(row.sha256, row.metadata)
