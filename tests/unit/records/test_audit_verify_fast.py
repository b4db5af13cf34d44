"""The fast verifier (raw cursors, stored canonical text, spans in worker processes) finds the
same first bad entry as recomputing the chain entry by entry, on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from callgate.records.audit import AuditLog, export_checkpoint
from callgate.records.audit_chain import (
    Entry,
    VerifyResult,
    body_json,
    canonical_json,
    parse_details,
    verify,
)
from callgate.storage.db import Store

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)
N = 40


@pytest.fixture
def log(store: Store) -> AuditLog:
    audit = AuditLog(store)
    for i in range(0, N, 10):  # batches, each its own transaction and time
        batch = [
            (f"admin{j}", "user.update", f"user:u{j}", {"n": j, "é": "ü"}) for j in range(i, i + 10)
        ]
        audit.append_many(batch, at=T0 + timedelta(seconds=i, microseconds=i))
    return audit


def sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def both(
    log: AuditLog,
    key: Ed25519PrivateKey | None = None,
    extra: list[str] | None = None,
    parallel: bool = False,
) -> list[VerifyResult]:
    """Slow (entry by entry), fast in process with small spans, and (`parallel`) fast in two
    worker processes (slow to start: a few tests only)."""
    public = key.public_key() if key is not None else None
    results = [
        log.verify(public, extra, entries=log.iter_entries()),
        _fast(log, public, extra, workers=1),
    ]
    if parallel:
        results.append(_fast(log, public, extra, workers=2))
    return results


def _fast(log: AuditLog, public: object, extra: list[str] | None, workers: int) -> VerifyResult:
    from callgate.records.audit_verify import verify_stored

    notes = [cp.note for cp in log.checkpoints()] + list(extra or [])
    return verify_stored(log._store.engine, notes, public, None, workers=workers, span=7)


# ---- the canonical body without re-encoding ----


@pytest.mark.parametrize(
    "actor",
    ["admin", 'quote" back\\slash', "é中\u2028", "ctl\x00\x1f\x7f\n\t", "emoji \U0001f600"],
)
def test_body_json_is_the_canonical_json_of_the_body(actor: str) -> None:
    details = {"z": [1, 2.5, None, True, {"b": "x", "a": actor}], "a": -3}
    body = {
        "seq": 12,
        "at": "2026-11-27T09:00:00.000001+00:00",
        "actor": actor,
        "action": "user.update",
        "object": f"user:{actor}",
        "details": details,
    }
    stored = canonical_json(details).decode()
    assert body_json(12, body["at"], actor, "user.update", f"user:{actor}", stored) == (  # type: ignore[arg-type]
        canonical_json(body)
    )


def test_a_lone_surrogate_is_refused_not_hashed() -> None:
    with pytest.raises(ValueError):
        body_json(1, "t", "\ud800", "a", "o", "{}")


# ---- append_many ----


def test_append_many_chains_with_single_appends(log: AuditLog) -> None:
    single = log.append("root", "user.create", "user:x", {"after": {"handle": "x"}})
    assert single.seq == N + 1
    more = log.append_many([("root", "user.delete", "user:x", None)] * 3)
    assert [e.seq for e in more] == [N + 2, N + 3, N + 4]
    assert more[0].prev_hash == single.hash
    assert parse_details(more[0].details) == {}
    assert all(r.ok and r.size == N + 4 for r in both(log))


def test_stored_time_and_details_round_trip(log: AuditLog) -> None:
    entries = list(log.iter_entries())
    assert entries[11].at == T0 + timedelta(seconds=10, microseconds=10)
    assert json.loads(entries[3].details) == {"n": 3, "é": "ü"}
    assert verify(entries).ok


# ---- every kind of tampering, same verdict on every path ----


def _same_verdict(results: list[VerifyResult], bad_seq: int, words: str) -> None:
    slow, *fast = results
    assert (slow.ok, slow.first_bad_seq) == (False, bad_seq), slow
    assert words in (slow.problem or ""), slow
    assert all(result == slow for result in fast), fast


def test_intact_log_verifies_on_every_path(log: AuditLog) -> None:
    progress: list[int] = []
    assert log.verify(None, progress=progress.append).ok
    assert progress[-1] == N
    for result in both(log, parallel=True):
        assert (result.ok, result.size, result.first_bad_seq) == (True, N, None)


def test_edited_details_are_found(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET details = :d WHERE seq = 23", d='{"n":24,"é":"ü"}')
    _same_verdict(both(log), 23, "edited")


def test_details_rewritten_in_an_equivalent_but_other_text_are_found(
    store: Store, log: AuditLog
) -> None:
    # Same JSON value, other spelling: the stored text is what the hash covers.
    sql(store, "UPDATE audit_entries SET details = :d WHERE seq = 9", d='{"n": 8, "é": "ü"}')
    fast = log.verify(None, workers=1)
    assert (fast.ok, fast.first_bad_seq) == (False, 9)


def test_unparsable_details_are_reported_malformed(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET details = 'not json' WHERE seq = 30")
    _same_verdict(both(log), 30, "malformed")


def test_edited_time_is_found(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET at = :t WHERE seq = 15", t=T0 + timedelta(hours=1))
    _same_verdict(both(log), 15, "edited")


def test_deleted_entry_in_a_later_span_is_found(store: Store, log: AuditLog) -> None:
    sql(store, "DELETE FROM audit_entries WHERE seq = 33")
    _same_verdict(both(log, parallel=True), 33, "missing")


def test_swapped_entries_are_found(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET seq = -1 WHERE seq = 12")
    sql(store, "UPDATE audit_entries SET seq = 12 WHERE seq = 13")
    sql(store, "UPDATE audit_entries SET seq = 13 WHERE seq = -1")
    _same_verdict(both(log), 12, "prev_hash")


def test_entry_moved_outside_the_numbering_is_found(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET seq = 1000 WHERE seq = 20")
    _same_verdict(both(log), 20, "missing")


def test_forged_entry_appended_is_found(store: Store, log: AuditLog) -> None:
    forged = Entry(N + 1, T0, "mallory", "x", "y", "{}", "0" * 64, "0" * 64)
    sql(
        store,
        "INSERT INTO audit_entries (seq, at, actor, action, object, details, prev_hash, hash)"
        " VALUES (:seq, :at, :actor, :action, :object, :details, :prev, :hash)",
        seq=forged.seq, at=T0, actor="mallory", action="x", object="y", details="{}",
        prev="0" * 64, hash="0" * 64,
    )  # fmt: skip
    _same_verdict(both(log), N + 1, "prev_hash")


def test_truncation_and_rewrite_are_found_against_checkpoints(
    tmp_path: Path, store: Store, log: AuditLog
) -> None:
    key = Ed25519PrivateKey.generate()
    middle = log.checkpoint(key)
    log.append("root", "user.update", "user:y", {"k": 1})
    exported = tmp_path / "cp.txt"
    export_checkpoint(log.checkpoint(key), exported)
    assert all(r.ok and r.checkpoints == 2 for r in both(log, key))
    assert middle.size == N

    sql(store, "DELETE FROM audit_entries WHERE seq > :n", n=N - 5)
    sql(store, "DELETE FROM audit_checkpoints")
    assert all(r.ok for r in both(log, key))  # a shorter chain, valid on its own…
    _same_verdict(both(log, key, [exported.read_text()], parallel=True), N - 4, "truncated")
