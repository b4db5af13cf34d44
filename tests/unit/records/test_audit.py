"""The audit chain: append and verify, every kind of tampering, checkpoints and their signatures."""

from __future__ import annotations

import base64
import itertools
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text

from callgate.records.audit import (
    AuditLog,
    default_key_path,
    export_checkpoint,
    load_or_create_signing_key,
    load_public_key,
)
from callgate.records.audit_chain import (
    GENESIS,
    Entry,
    canonical_json,
    entry_hash,
    parse_checkpoint,
    sign_checkpoint,
    verify,
)
from callgate.storage.db import Store
from callgate.storage.models import AuditEntry

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def log(store: Store) -> AuditLog:
    audit = AuditLog(store)
    for i in range(1, 6):
        audit.append(
            f"admin{i}", "user.update", f"user:u{i}", {"field": "groups", "n": i},
            at=T0 + timedelta(seconds=i),
        )  # fmt: skip
    return audit


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(default_key_path(tmp_path / "data"))


def put(store: Store, entry: Entry) -> None:
    """Write a row directly, as someone with database access would."""
    with store.engine.begin() as conn:
        conn.execute(
            insert(AuditEntry).values(
                seq=entry.seq, at=entry.at, actor=entry.actor, action=entry.action,
                object=entry.object, details=entry.details, prev_hash=entry.prev_hash,
                hash=entry.hash,
            )
        )  # fmt: skip


def sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


# ---- canonical JSON and hashes ----


def test_canonical_json_is_sorted_compact_utf8_and_stable() -> None:
    value = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": "\u00e9\u4e2d"}}
    assert canonical_json(value) == '{"a":{"y":"é中","z":"é"},"b":[1,2.5,null,true]}'.encode()
    assert canonical_json(value) == canonical_json(dict(reversed(list(value.items()))))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_canonical_json_refuses_nan_and_infinities(bad: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


def test_entry_hash_is_sha256_of_prev_and_canonical_body() -> None:
    import hashlib

    body = {"seq": 1, "actor": "a"}
    expected = hashlib.sha256(bytes(32) + b'{"actor":"a","seq":1}').hexdigest()
    assert entry_hash(GENESIS, body) == expected


# ---- append and verify ----


def test_append_chains_entries_and_verifies(log: AuditLog) -> None:
    entries = list(log.iter_entries(chunk=2))  # several chunks
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[2].at == T0 + timedelta(seconds=3)
    result = log.verify(None)
    assert (result.ok, result.size, result.first_bad_seq, result.problem) == (True, 5, None, None)
    assert [e.seq for e in log.recent(2)] == [5, 4]


def test_empty_log_verifies(store: Store) -> None:
    assert AuditLog(store).verify(None).ok


def test_append_in_rolls_back_with_the_callers_transaction(store: Store, log: AuditLog) -> None:
    with pytest.raises(RuntimeError), store.engine.begin() as conn:
        AuditLog.append_in(conn, "admin", "policy.change", "policy:1", {"rule": 3})
        raise RuntimeError("the change failed")
    assert log.size() == 5
    with store.engine.begin() as conn:
        entry = AuditLog.append_in(conn, "admin", "policy.change", "policy:1", {"rule": 3})
    assert entry.seq == 6
    assert log.verify(None).ok


def test_many_appends_in_one_transaction_chain_and_a_rolled_back_savepoint_leaves_no_gap(
    store: Store, log: AuditLog
) -> None:
    """The records writer appends many entries per transaction (the head is read once): the
    chain stays whole, and entries of a savepoint rolled back are neither kept nor chained to."""
    with store.engine.begin() as conn:
        first = AuditLog.append_in(conn, "a", "call.invite", "call:1")
        second = AuditLog.append_in(conn, "b", "call.answered", "call:1")
        savepoint = conn.begin_nested()
        AuditLog.append_in(conn, "c", "call.ended", "call:1")
        savepoint.rollback()
        third = AuditLog.append_in(conn, "d", "call.ended", "call:1")
    assert [first.seq, second.seq, third.seq] == [6, 7, 8]
    assert third.prev_hash == second.hash
    # A later transaction on the same pooled connection reads the head again.
    with store.engine.begin() as conn:
        assert AuditLog.append_in(conn, "e", "call.invite", "call:2").seq == 9
    assert [e.actor for e in log.recent(4)] == ["e", "d", "b", "a"]
    assert log.verify(None).ok


def test_naive_time_is_refused(log: AuditLog) -> None:
    with pytest.raises(ValueError):
        log.append("a", "b", "c", {}, at=datetime(2026, 1, 1))
    assert log.size() == 5


# ---- tampering ----


def test_edited_details_is_detected(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET details = :d WHERE seq = 3", d='{"field":"x","n":3}')
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "edited" in (result.problem or "")


def test_edited_actor_is_detected(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 4")
    assert (log.verify(None).ok, log.verify(None).first_bad_seq) == (False, 4)


def test_deleted_middle_entry_is_detected(store: Store, log: AuditLog) -> None:
    sql(store, "DELETE FROM audit_entries WHERE seq = 2")
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "missing" in (result.problem or "")


def test_deleted_and_renumbered_entries_are_detected(store: Store, log: AuditLog) -> None:
    sql(store, "DELETE FROM audit_entries WHERE seq = 2")
    for seq in (3, 4, 5):
        sql(store, "UPDATE audit_entries SET seq = :n WHERE seq = :o", n=seq - 1, o=seq)
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_inserted_entry_is_detected(store: Store, log: AuditLog) -> None:
    # Make room after entry 2 and insert a forged entry whose own hash is right.
    for seq in (5, 4, 3):
        sql(store, "UPDATE audit_entries SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    prev = next(e for e in log.iter_entries() if e.seq == 2).hash
    forged = Entry(3, T0, "mallory", "user.update", "user:x", "{}", prev, "")
    put(
        store,
        Entry(
            3, T0, "mallory", "user.update", "user:x", "{}", prev, entry_hash(prev, forged.body())
        ),
    )
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 4)  # the entry after the insertion


def test_inserted_entry_at_the_end_is_detected(store: Store, log: AuditLog) -> None:
    put(store, Entry(6, T0, "mallory", "x", "y", "{}", GENESIS, GENESIS))
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 6)


def test_swapped_entries_are_detected(store: Store, log: AuditLog) -> None:
    sql(store, "UPDATE audit_entries SET seq = -1 WHERE seq = 2")
    sql(store, "UPDATE audit_entries SET seq = 2 WHERE seq = 4")
    sql(store, "UPDATE audit_entries SET seq = 4 WHERE seq = -1")
    result = log.verify(None)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_rewritten_chain_is_caught_by_a_checkpoint(
    store: Store, log: AuditLog, key: Ed25519PrivateKey
) -> None:
    log.checkpoint(key)
    # Edit entry 2 and recompute every hash after it: the chain alone looks intact.
    entries = list(log.iter_entries())
    sql(store, "DELETE FROM audit_entries")
    prev = GENESIS
    for e in entries:
        actor = "mallory" if e.seq == 2 else e.actor
        forged = Entry(e.seq, e.at, actor, e.action, e.object, e.details, prev, "")
        digest = entry_hash(prev, forged.body())
        put(store, Entry(e.seq, e.at, actor, e.action, e.object, e.details, prev, digest))
        prev = digest
    assert verify(log.iter_entries()).ok is True  # the chain alone looks intact
    result = log.verify(key.public_key())
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "checkpoint" in (result.problem or "")


def test_truncated_tail_is_detected_against_an_exported_checkpoint(
    tmp_path: Path, store: Store, log: AuditLog, key: Ed25519PrivateKey
) -> None:
    exported = tmp_path / "cp.txt"
    export_checkpoint(log.checkpoint(key), exported)
    # The attacker removes the last two entries and the stored checkpoints too.
    sql(store, "DELETE FROM audit_entries WHERE seq >= 4")
    sql(store, "DELETE FROM audit_checkpoints")
    assert log.verify(key.public_key()).ok  # what is left is a valid chain…
    result = log.verify(key.public_key(), [exported.read_text()])
    assert (result.ok, result.size, result.first_bad_seq) == (False, 3, 4)
    assert "truncated" in (result.problem or "")


def test_checkpoint_verifies_and_counts(log: AuditLog, key: Ed25519PrivateKey) -> None:
    first = log.checkpoint(key)
    log.append("admin", "config.change", "config", {"k": "v"}, at=T0 + timedelta(minutes=1))
    log.checkpoint(key)
    result = log.verify(key.public_key())
    assert (result.ok, result.size, result.checkpoints) == (True, 6, 2)
    checkpoint, signed_text, kid, _sig = parse_checkpoint(first.note)
    assert (checkpoint.size, checkpoint.head_hash) == (5, first.head_hash)
    head = base64.b64encode(bytes.fromhex(first.head_hash)).decode()
    assert signed_text == f"callgate-audit\n5\n{head}\n"
    assert first.note.startswith(signed_text + "\n\u2014 callgate-audit ")
    assert kid.hex() == first.key_id


def test_forged_checkpoint_signature_is_detected(log: AuditLog, key: Ed25519PrivateKey) -> None:
    note = log.checkpoint(key).note
    body, _, sig_line = note.partition("\n\n")
    name, blob = sig_line.strip().rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 0x01
    forged = f"{body}\n\n{name} {base64.b64encode(bytes(raw)).decode()}\n"
    result = verify(log.iter_entries(), [forged], key.public_key())
    assert result.ok is False
    assert "signature is invalid" in (result.problem or "")
    # A checkpoint claiming another size under the original signature fails too.
    other = note.replace("callgate-audit\n5\n", "callgate-audit\n4\n", 1)
    assert "invalid" in (verify(log.iter_entries(), [other], key.public_key()).problem or "")


def test_checkpoint_signed_by_another_key_is_detected(
    log: AuditLog, key: Ed25519PrivateKey
) -> None:
    size, head = log.head()
    note = sign_checkpoint(Ed25519PrivateKey.generate(), size, head)
    result = verify(log.iter_entries(), [note], key.public_key())
    assert result.ok is False
    assert "another key" in (result.problem or "")


def test_checkpoints_without_a_public_key_fail(log: AuditLog, key: Ed25519PrivateKey) -> None:
    log.checkpoint(key)
    assert log.verify(None).ok is False


# ---- the signing key ----


def test_signing_key_is_created_0600_once(tmp_path: Path) -> None:
    path = default_key_path(tmp_path / "d")
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_or_create_signing_key(path)
    assert load_public_key(path).public_bytes_raw() == first.public_key().public_bytes_raw()
    assert again.public_key().public_bytes_raw() == first.public_key().public_bytes_raw()
