"""Audit retention: the oldest entries go only as a prefix ending at a signed checkpoint, after
the chain verified, never past held records; verify then starts from that anchor — and still
catches entries deleted by hand from the front."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text, update

from callgate.records.audit import (
    AuditLog,
    default_key_path,
    load_or_create_signing_key,
    load_public_key,
)
from callgate.records.retention import Retention
from callgate.storage.db import Store
from callgate.storage.models import AuditEntry, User

OLD = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)  # well past a 30-day retention
NOW = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return default_key_path(tmp_path / "data")


@pytest.fixture
def key(key_file: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(key_file)


def old_entries(log: AuditLog, count: int, start: int = 0, obj: str = "user:u") -> None:
    for i in range(start, start + count):
        log.append("admin", "user.update", f"{obj}{i}", {"n": i}, at=OLD + timedelta(minutes=i))


def verified(log: AuditLog, key_file: Path) -> tuple[bool, str | None, int]:
    result = log.verify(load_public_key(key_file))
    return result.ok, result.problem, result.checkpoints


def test_purge_deletes_the_prefix_up_to_an_old_checkpoint_and_verify_still_passes(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 10)
    log.checkpoint(key)  # size 10: the anchor
    log.append("admin", "user.update", "user:new", {"n": "recent"}, at=NOW - timedelta(days=1))
    retention = Retention(store.engine, key_file)
    retention.set_settings({"audit": 30}, "root")

    result = retention.purge("root", now=NOW)

    assert result.audit == 10
    summary = result.details["audit"]
    assert (summary["from_seq"], summary["through_seq"]) == (1, 10)
    assert summary["anchor"]["size"] == 10 and summary["actions"] == {"user.update": 10}
    seqs = [e.seq for e in log.iter_entries()]
    assert seqs[0] == 11 and seqs[-1] == log.head()[0]
    ok, problem, checkpoints = verified(log, key_file)
    assert ok, problem
    assert checkpoints >= 1  # the anchor's signature was checked and used


def test_nothing_goes_without_a_checkpoint_older_than_the_cutoff(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 5)
    retention = Retention(store.engine, key_file)
    retention.set_settings({"audit": 30}, "root")
    assert retention.purge("root", now=NOW).audit == 0  # no checkpoint at all
    assert "checkpoint" in retention.purge("root", now=NOW).details["audit"]["kept"]
    assert next(e.seq for e in log.iter_entries()) == 1


def test_a_chain_that_does_not_verify_is_never_purged(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 6)
    log.checkpoint(key)
    with store.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(actor="mallory"))
    retention = Retention(store.engine, key_file)
    retention.set_settings({"audit": 30}, "root")
    result = retention.purge("root", now=NOW)
    assert result.audit == 0
    assert result.details["audit"]["first_bad_seq"] == 3  # the evidence stays
    assert next(e.seq for e in log.iter_entries()) == 1


def test_entries_about_held_records_stop_the_purge_before_them(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 4)  # 1..4
    log.append("root", "user.update", "user:carol", {"n": "held"}, at=OLD + timedelta(hours=1))
    old_entries(log, 4, start=10)  # 6..9
    log.checkpoint(key)  # size 9, but entry 5 is about carol
    with store.engine.begin() as conn:
        conn.execute(
            insert(User).values(
                handle="carol", display_name="Carol", realm="callgate", legal_hold=True
            )
        )
    retention = Retention(store.engine, key_file)
    retention.set_settings({"audit": 30}, "root")
    result = retention.purge("root", now=NOW)
    assert result.audit == 0, result.details["audit"]
    assert "held" in result.details["audit"]["kept"]
    assert next(e.seq for e in log.iter_entries()) == 1
    # Released, the same purge takes the prefix up to the checkpoint.
    with store.engine.begin() as conn:
        conn.execute(update(User).where(User.handle == "carol").values(legal_hold=False))
    assert retention.purge("root", now=NOW).audit == 9


def test_deleting_the_front_by_hand_is_caught(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 8)
    log.checkpoint(key)  # size 8
    old_entries(log, 4, start=8)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq <= 3"))
    ok, problem, _ = verified(log, key_file)
    assert not ok and problem is not None and "1..3" in problem

    # Even up to a real signed checkpoint: without a recorded purge it is tampering.
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE seq <= 8"))
    ok, problem, _ = verified(log, key_file)
    assert not ok and problem is not None and "without a recorded retention purge" in problem


def test_after_a_purge_later_tampering_is_still_found(
    store: Store, key: Ed25519PrivateKey, key_file: Path
) -> None:
    log = AuditLog(store)
    old_entries(log, 6)
    log.checkpoint(key)
    retention = Retention(store.engine, key_file)
    retention.set_settings({"audit": 30}, "root")
    assert retention.purge("root", now=NOW).audit == 6
    head = log.head()[0]
    with store.engine.begin() as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == head).values(object="user:x"))
    result = log.verify(load_public_key(key_file))
    assert not result.ok and result.first_bad_seq == head
