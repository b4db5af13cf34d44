"""Call records: CDR lifecycle, restart recovery, relay-session linking, quality rows, migration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from callgate.clock import ManualClock
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_types import new_call_id
from callgate.records.quality import StreamStats
from callgate.records.quality_store import QualityRepository
from callgate.storage.db import (
    MIGRATIONS_DIR,
    Store,
    create_store_engine,
    migrate,
)
from callgate.storage.models import RelaySession

T0 = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
def cdrs(store: Store) -> CdrRepository:
    return CdrRepository(store, ManualClock(start_wall=T0.timestamp()))


def open_call(cdrs: CdrRepository, caller: str = "alice", callee: str = "bob", at: datetime = T0,
              **extra: str) -> str:  # fmt: skip
    call_id = new_call_id()
    cdrs.open(CallOpen(call_id, caller, callee, at, caller_device="d1", **extra))  # type: ignore[arg-type]
    return call_id


def relay_row(store: Store, allocation_id: str, user: str, started: datetime, **changes: object) -> None:  # fmt: skip
    values: dict[str, object] = {
        "allocation_id": allocation_id,
        "username": f"1800000000:{user}",
        "user": user,
        "client_ip": "192.0.2.10",
        "client_port": 40000,
        "transport": "udp",
        "relay_ip": "203.0.113.5",
        "relay_port": 50000,
        "server_ip": "203.0.113.5",
        "server_port": 3478,
        "started_at": started,
        "ended_at": None,
        "lifetime": 600,
        "peers": "[]",
        "packets_to_peer": 0,
        "bytes_to_peer": 0,
        "packets_to_client": 0,
        "bytes_to_client": 0,
        "updated_at": started,
    }
    values.update(changes)
    with store.sessions.begin() as session:
        session.add(RelaySession(**values))


def test_open_then_finalize(cdrs: CdrRepository) -> None:
    call_id = open_call(cdrs, caller_address="192.0.2.10:5000", caller_user_agent="callgate-py")
    opened = cdrs.get(call_id)
    assert opened is not None
    assert (opened.end_at, opened.disposition, opened.direction, opened.encryption) == (
        None, None, "internal", "dtls-srtp",
    )  # fmt: skip
    assert cdrs.update(call_id, ring_at=T0 + timedelta(seconds=0.1), callee_device="phone")
    assert cdrs.update(call_id, answer_at=T0 + timedelta(seconds=2), media_path="relay/relay")
    assert cdrs.finalize(
        call_id, T0 + timedelta(seconds=32.5), "answered", "callee", "hangup", codec="opus/48000"
    )
    done = cdrs.get(call_id)
    assert done is not None
    assert done.duration_s == 30.5
    assert (done.disposition, done.ended_by, done.reason) == ("answered", "callee", "hangup")
    assert (done.callee_device, done.media_path, done.codec) == (
        "phone",
        "relay/relay",
        "opus/48000",
    )
    assert done.caller_user_agent == "callgate-py"
    # the first end wins
    assert not cdrs.finalize(call_id, T0 + timedelta(hours=1), "failed", "server", "late")
    assert cdrs.get(call_id) == done
    assert json.loads(json.dumps(done.as_json()))["end_at"] == "2026-11-27T09:00:32.500000Z"


def test_unanswered_call_has_no_duration_and_bad_values_are_refused(cdrs: CdrRepository) -> None:
    call_id = open_call(cdrs)
    assert cdrs.finalize(call_id, T0 + timedelta(seconds=30), "no-answer", "server", "no-answer")
    record = cdrs.get(call_id)
    assert record is not None and record.duration_s is None
    with pytest.raises(ValueError, match="disposition"):
        cdrs.finalize(call_id, T0, "hung", "caller", "x")
    with pytest.raises(ValueError, match="ended_by"):
        cdrs.finalize(call_id, T0, "failed", "someone", "x")
    with pytest.raises(ValueError, match="naive datetime"):  # also off SQLAlchemy (cdr_batch)
        cdrs.finalize_params(call_id, T0.replace(tzinfo=None), "failed", "server", "x", None, None)
    with pytest.raises(ValueError, match="not CDR fields"):
        cdrs.update(call_id, caller_user="mallory")
    assert not cdrs.update("0" * 32, codec="opus")
    assert cdrs.get("0" * 32) is None


def test_list_since_user_and_limit(cdrs: CdrRepository) -> None:
    ids = [open_call(cdrs, at=T0 + timedelta(minutes=i)) for i in range(5)]
    other = open_call(cdrs, caller="carol", callee="dave", at=T0 + timedelta(minutes=10))
    assert [r.call_id for r in cdrs.list()] == [other, *reversed(ids)]
    assert [r.call_id for r in cdrs.list(since=T0 + timedelta(minutes=3))] == [
        other,
        ids[4],
        ids[3],
    ]
    assert [r.call_id for r in cdrs.list(user="bob", limit=2)] == [ids[4], ids[3]]
    assert [r.call_id for r in cdrs.list(user="dave")] == [other]


def test_open_many_writes_a_batch(cdrs: CdrRepository) -> None:
    batch = [CallOpen(new_call_id(), "alice", f"u{i}", T0) for i in range(50)]
    cdrs.open_many(batch)
    assert len(cdrs.list(limit=1000)) == 50


def test_close_stale_uses_the_best_known_end_time(store: Store, cdrs: CdrRepository) -> None:
    answered = open_call(cdrs, "alice", "bob")
    cdrs.update(answered, answer_at=T0 + timedelta(seconds=3))
    QualityRepository(store.sessions).upsert(
        answered, "caller", StreamStats("audio", "inbound", 500, 0), at=T0 + timedelta(seconds=40)
    )
    relay_row(store, "a1", "bob", T0 + timedelta(seconds=2), updated_at=T0 + timedelta(seconds=55))
    ringing = open_call(cdrs, "carol", "dave", at=T0 + timedelta(seconds=10))
    finished = open_call(cdrs, "erin", "fay")
    cdrs.finalize(finished, T0 + timedelta(seconds=1), "cancelled", "caller", "cancelled")

    now = datetime.now(UTC)
    assert cdrs.close_stale(now=now) == 2
    a = cdrs.get(answered)
    assert a is not None
    assert (a.disposition, a.ended_by, a.reason) == ("answered", "server", "server-restart")
    assert a.end_at == T0 + timedelta(seconds=55)  # last relay activity of a party
    assert a.duration_s == 52.0
    r = cdrs.get(ringing)
    assert r is not None and (r.disposition, r.reason) == ("failed", "server-restart")
    assert T0 <= r.end_at <= now  # type: ignore[operator]
    assert cdrs.close_stale() == 0
    f = cdrs.get(finished)
    assert f is not None and f.reason == "cancelled"


def test_link_relay_sessions(store: Store, cdrs: CdrRepository) -> None:
    call_id = open_call(cdrs, "alice", "bob", caller_address="192.0.2.10:6000")
    relay_row(store, "old", "alice", T0 - timedelta(minutes=5), bytes_to_peer=999)  # earlier call
    relay_row(
        store,
        "caller",
        "alice",
        T0 - timedelta(seconds=1),
        bytes_to_peer=1000,
        bytes_to_client=2000,
    )
    relay_row(store, "other-ip", "alice", T0, client_ip="198.51.100.7", bytes_to_peer=5)
    relay_row(
        store, "callee", "bob", T0 + timedelta(seconds=2), relay_port=50002, bytes_to_client=1000
    )
    relay_row(store, "idle", "bob", T0 + timedelta(seconds=2), relay_port=50004)
    relay_row(store, "stranger", "zoe", T0, bytes_to_peer=77)
    relay_row(store, "after", "bob", T0 + timedelta(minutes=10), bytes_to_peer=1)
    cdrs.finalize(call_id, T0 + timedelta(seconds=60), "answered", "caller", "hangup")

    link = cdrs.link_relay_sessions(call_id)
    assert link is not None
    assert link.allocation_ids == ("caller", "callee", "idle")
    assert link.relay_bytes == 4000
    assert link.relay_used == "203.0.113.5:50000, 203.0.113.5:50002"
    record = cdrs.get(call_id)
    assert record is not None
    assert record.relay_allocation_ids == ("caller", "callee", "idle")
    assert (record.relay_used, record.relay_bytes) == (link.relay_used, 4000)
    assert cdrs.link_relay_sessions("f" * 32) is None


def test_a_redial_given_the_last_calls_relay_port_links_only_its_own_allocation(
    store: Store, cdrs: CdrRepository
) -> None:
    """The relay picks ports at random, so a redial can be given the port the last call just
    freed: its SDP then offers an address an older allocation also had."""
    call_id = open_call(cdrs, "alice", "bob")
    offered = ["203.0.113.5:50000", "203.0.113.5:50002"]
    cdrs.update(call_id, relay_candidates=offered)
    ended = T0 - timedelta(seconds=2)
    relay_row(store, "last-call", "alice", T0 - timedelta(seconds=8), ended_at=ended,
              bytes_to_peer=500)  # fmt: skip
    relay_row(store, "this-call", "alice", T0 - timedelta(seconds=1), bytes_to_peer=1000)
    relay_row(store, "callee", "bob", T0 + timedelta(seconds=1), relay_port=50002,
              bytes_to_client=1000)  # fmt: skip
    cdrs.finalize(call_id, T0 + timedelta(seconds=30), "answered", "caller", "hangup")

    link = cdrs.link_relay_sessions(call_id)
    assert link is not None
    assert link.allocation_ids == ("this-call", "callee")
    assert link.relay_bytes == 2000


def test_quality_rows_are_upserted_and_final_sticks(store: Store) -> None:
    quality = QualityRepository(store.sessions)
    call_id = new_call_id()
    inbound = StreamStats("audio", "inbound", 100, 0, jitter_ms=5.0, rtt_ms=40.0)
    outbound = StreamStats("audio", "outbound", 100, 0, rtt_ms=40.0)
    quality.upsert(call_id, "caller", [inbound, outbound], at=T0)
    quality.upsert(
        call_id,
        "caller",
        StreamStats("audio", "inbound", 800, 200, jitter_ms=45.0),
        final=True,
        at=T0,
    )
    late = quality.upsert(call_id, "caller", inbound, at=T0 + timedelta(seconds=1))
    assert late[0].final and late[0].packets == 800
    quality.upsert(call_id, "callee", inbound, at=T0)
    rows = quality.for_call(call_id)
    assert [(r.reporter, r.direction) for r in rows] == [
        ("callee", "inbound"), ("caller", "inbound"), ("caller", "outbound"),
    ]  # fmt: skip
    bad = rows[1]
    assert (bad.loss_rate, bad.classification, bad.poor_reasons) == (
        0.2,
        "poor",
        ("loss", "jitter"),
    )
    assert bad.mos < 2.5 < rows[2].mos
    with pytest.raises(ValueError, match="reporter"):
        quality.upsert(call_id, "observer", inbound)


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migration_0001_to_0002_keeps_turn_users(empty_database_url: str) -> None:
    engine = create_store_engine(empty_database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO turn_users (name, realm, key_hex, created_at) "
                "VALUES ('legacy', 'callgate', :key, :at)"
            ),
            {"key": "ab" * 16, "at": T0},
        )
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"users", "api_tokens", "calls", "call_quality", "turn_users"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, key_hex FROM turn_users")).all() == [
            ("legacy", "ab" * 16)
        ]
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head_revision()  # every later migration applied on top
    columns = {c["name"] for c in inspect(engine).get_columns("calls")}
    assert {"end_detail", "relay_candidates"} <= columns
    calls_indexes = {ix["name"] for ix in inspect(engine).get_indexes("calls")}
    assert {"ix_calls_invite_at", "ix_calls_caller_user_invite_at"} <= calls_indexes
    engine.dispose()


def test_several_nodes_a_dead_nodes_call_is_taken_over_once_or_finalized_node_lost(
    store: Store,
) -> None:
    """Node a held two calls and died at T0+20 s (its last heartbeat). b takes one over (a
    compare-and-set: c, trying second, loses; a's writes are refused from then on); the other,
    nobody re-attached, is finalized node-lost at a's last beat, once."""
    clock = ManualClock(start_wall=(T0 + timedelta(seconds=20)).timestamp())
    a, b, c = (CdrRepository(store, clock, node_id=node) for node in ("a", "b", "c"))
    kept, lost = open_call(a, node_id="a"), open_call(a, "carol", "dave", node_id="a")
    for call_id in (kept, lost):
        assert a.update(call_id, answer_at=T0 + timedelta(seconds=2), callee_device="d2")
    silent = T0 + timedelta(seconds=25)
    assert not b.take_over(kept, "a", silent_since=T0 + timedelta(seconds=10))  # a still beat
    assert b.take_over(kept, "a", silent_since=silent)
    assert not c.take_over(kept, "a", silent_since=silent)  # b won
    assert not a.update(kept, codec="opus")  # a, only thought dead, cannot write b's call
    assert not a.finalize(kept, T0 + timedelta(seconds=30), "answered", "caller", "hangup")

    assert c.close_lost({"b", "c"}, silent_since=silent) == (lost,)
    assert c.close_lost({"b", "c"}, silent_since=silent) == ()
    record = c.get(lost)
    assert record is not None
    assert (record.disposition, record.reason, record.ended_by) == (
        "answered",
        "node-lost",
        "server",
    )
    assert record.end_at == T0 + timedelta(seconds=20) and record.duration_s == 18.0
    taken = b.get(kept)
    assert taken is not None and taken.end_at is None and taken.node_id == "b"
    assert b.finalize(kept, T0 + timedelta(seconds=60), "answered", "caller", "hangup")
