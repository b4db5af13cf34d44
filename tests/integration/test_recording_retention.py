"""Retention and legal hold of recordings on a real store (SQLite and PostgreSQL): the date a
recording is kept to (its end plus its rule's period), a purge that deletes nothing before it,
held recordings (on the recording, its call, or a party) kept after it, every step audited, and
the call's CDR kept while its recording is."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callgate.accounts.service import AccountService
from callgate.recording.recorder import RecorderLimits
from callgate.recording.retention import HoldError, RecordingRetention, RetentionPolicy
from callgate.recording.service import RecordingService, RecordingSettings
from callgate.recording.store import RecordingRepository
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_types import CallOpen, new_call_id
from callgate.records.retention import Retention
from callgate.storage.db import Store
from tests.unit.recording.test_recorder import packet

POLICY = RetentionPolicy(days=30, by_rule={"trading": 2557})


async def record(service: RecordingService, store: Store, caller: str, rule: str | None) -> str:
    """A finished call between `caller` and bob, recorded under `rule`; its recording id."""
    call_id = new_call_id()
    start = datetime.now(UTC)
    cdrs = CdrRepository(store)
    cdrs.open(CallOpen(call_id, caller, "bob", start, caller_device="d1"))
    cdrs.finalize(call_id, start + timedelta(seconds=2), "answered", "callee", "hangup")
    parties = {"caller": {"handle": caller}, "callee": {"handle": "bob"}}
    recorder = await service.start(call_id, parties, rule, lambda reason: None)
    for seq in range(3):
        recorder.on_packet(packet("caller", seq))
    await asyncio.wait_for(recorder.first_written(), 30)
    await service.finish(recorder.recording_id)
    return recorder.recording_id


def actions(store: Store, recording_id: str) -> list[str]:
    entries = AuditLog(store).recent(100)
    return [e.action for e in reversed(entries) if e.object == f"recording:{recording_id}"]


async def test_nothing_is_purged_before_its_date_and_holds_outlast_it(
    store: Store, tmp_path: Path
) -> None:
    settings = RecordingSettings(
        directory=tmp_path / "rec", key_file=tmp_path / "master.key", min_free_bytes=0,
        limits=RecorderLimits(0.05, 30.0), retention=POLICY,
    )  # fmt: skip
    service = RecordingService(RecordingRepository(store), settings, {})
    plain = await record(service, store, "alice", "3:sales")
    trading = await record(service, store, "alice", "4:trading")
    held = await record(service, store, "alice", None)
    of_held_user = await record(service, store, "carol", None)
    repository = RecordingRepository(store)
    retention = RecordingRetention(repository, settings.directory)
    rows = {rid: repository.get(rid) for rid in (plain, trading, held, of_held_user)}

    # kept for the rule's period (or the default) counted from the recording's end
    for rid, days in ((plain, 30), (trading, 2557)):
        row = rows[rid]
        assert row is not None and row.ended_at is not None and row.retain_until is not None
        assert row.retain_until - row.ended_at == timedelta(days=days)
    closed = next(e for e in AuditLog(store).recent(50) if e.object == f"recording:{trading}")
    assert json.loads(closed.details)["retain_until"].startswith(
        str(rows[trading].retain_until)[:10]
    )  # type: ignore[union-attr]

    with pytest.raises(HoldError, match="needs a reason"):
        retention.hold(held, True, "  ", "carol")
    after = retention.hold(held, True, "SEC inquiry 2026-17", "compliance1")
    assert after is not None and after.legal_hold and after.hold_reason == "SEC inquiry 2026-17"
    assert retention.hold("0" * 32, True, "x", "compliance1") is None
    AccountService(store, "callgate").create_user("carol")
    assert Retention(store.engine).hold_user("carol", True, "admin")

    # the day before the shortest retention ends: nothing goes, held or not
    day_before = rows[plain].retain_until - timedelta(days=1)  # type: ignore[union-attr,operator]
    early = retention.purge("system", day_before)
    assert early.deleted == [] and early.held_kept == 0
    # a CDR purge meanwhile keeps the recorded calls
    Retention(store.engine).set_settings({"cdr": 1}, "admin")
    assert Retention(store.engine).purge("system", day_before).cdr == 0

    later = day_before + timedelta(days=2)
    purged = retention.purge("system", later)
    assert purged.deleted == [plain] and purged.held_kept == 2 and purged.refused == {}
    assert repository.get(plain) is None
    assert not (settings.directory / f"{plain}.cgrec").exists()
    for kept in (trading, held, of_held_user):
        assert (settings.directory / f"{kept}.cgrec").exists()
    assert actions(store, plain)[-1] == "recording.purged"
    purged_entry = next(e for e in AuditLog(store).recent(50) if e.action == "recording.purged")
    assert json.loads(purged_entry.details)["file_sha256"] == rows[plain].sha256  # type: ignore[union-attr]
    assert actions(store, held)[-1] == "legal_hold.set"

    # released: it goes at the next purge; carol's stays while she is held
    retention.hold(held, False, None, "compliance1")
    again = retention.purge("system", later)
    assert again.deleted == [held] and again.held_kept == 1
    # the CDRs of the purged recordings' calls can go now (the held and the kept ones stay)
    assert Retention(store.engine).purge("system", later).cdr == 2
