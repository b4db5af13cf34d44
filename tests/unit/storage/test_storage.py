"""Storage on SQLite and PostgreSQL: migrations, repositories, and the DbEventSink lifecycle."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from callgate.errors import StorageError, UserExistsError
from callgate.records.relay_sessions import DbEventSink
from callgate.storage.db import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    Store,
    create_store_engine,
    display_url,
    downgrade,
    open_store,
    sqlite_url,
)
from callgate.storage.repositories import RelaySessionRepository, TurnUserRepository
from callgate.turn.auth import long_term_key
from callgate.types.events import AllocationEvent, EventKind
from tests.conftest import allocation_event, free_port
from tests.db_backends import PgServer

T0 = 1_700_000_000.0


def event(kind: EventKind, **changes: Any) -> AllocationEvent:
    return allocation_event(kind, T0, **changes)


def test_migrations_create_tables_and_are_idempotent(empty_database_url: str) -> None:
    url = empty_database_url
    first = open_store(url)
    tables = set(inspect(first.engine).get_table_names())
    assert {"turn_users", "relay_sessions", "alembic_version"} <= tables
    columns = {c["name"] for c in inspect(first.engine).get_columns("relay_sessions")}
    assert {"allocation_id", "peers", "bytes_to_client", "ended_at", "end_reason"} <= columns
    first.close()
    second = open_store(url)  # already at head: no error, data kept
    TurnUserRepository(second.sessions).add("x", "r", b"\0" * 16)
    downgrade(second.engine, "base")  # downgrade works too (portable DDL)
    assert "turn_users" not in inspect(second.engine).get_table_names()
    second.close()


def test_the_head_a_store_opens_without_alembic_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_a_store_behind_head_is_migrated_when_opened(empty_database_url: str) -> None:
    store = open_store(empty_database_url)
    downgrade(store.engine, "0001")
    store.close()
    again = open_store(empty_database_url)
    with again.engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert version == HEAD_REVISION
    assert "recordings" in inspect(again.engine).get_table_names()
    again.close()


def test_sqlite_store_creates_its_directory(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path / "nested" / "dir"))
    store.close()
    assert (tmp_path / "nested" / "dir" / "callgate.sqlite3").is_file()


def test_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert any(MIGRATIONS_DIR.glob("versions/v0001_*.py"))


def test_bad_database_url_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="database URL"):
        open_store("not a url")


def test_turn_users(store: Store) -> None:
    users = TurnUserRepository(store.sessions)
    key = long_term_key("alice", "callgate", "pw")
    users.add("alice", "callgate", key)
    users.add("alice", "other", long_term_key("alice", "other", "pw"))
    with pytest.raises(UserExistsError):
        users.add("alice", "callgate", key)
    assert users.key("alice", "callgate") == key
    assert users.key("alice", "nowhere") is None
    assert users.key("bob", "callgate") is None
    new_key = long_term_key("alice", "callgate", "pw2")
    users.add("alice", "callgate", new_key, replace=True)
    assert users.key("alice", "callgate") == new_key
    listed = users.list_users("callgate")
    assert [(u.name, u.realm, u.key_hex) for u in listed] == [("alice", "callgate", new_key.hex())]
    assert listed[0].created_at.tzinfo is not None
    assert len(users.list_users()) == 2
    assert users.remove("alice", "callgate") == 1
    assert users.remove("alice", "callgate") == 0
    assert users.remove("alice") == 1
    assert users.list_users() == []


def test_sink_records_an_allocation_lifecycle(store: Store) -> None:
    sink = DbEventSink(store.sessions)
    sink.emit(event(EventKind.CREATED))
    sink.emit(
        event(EventKind.PERMISSION, time=T0 + 1, peers=("198.51.100.7",), detail="198.51.100.7")
    )
    sink.emit(
        event(
            EventKind.CHANNEL,
            time=T0 + 2,
            peers=("198.51.100.7",),
            packets_to_peer=10,
            bytes_to_peer=1000,
            detail="0x4000",
        )
    )
    assert sink.flush()
    repo = RelaySessionRepository(store.sessions)
    row = repo.get("a" * 32)
    assert row is not None
    assert row.ended_at is None and row.end_reason is None
    assert (row.packets_to_peer, row.bytes_to_peer) == (10, 1000)
    assert json.loads(row.peers) == ["198.51.100.7"]
    assert [r.allocation_id for r in repo.recent(active_only=True)] == ["a" * 32]

    sink.emit(event(EventKind.REFRESHED, time=T0 + 60, lifetime=300, peers=("198.51.100.7",)))
    sink.emit(
        event(
            EventKind.DELETED,
            time=T0 + 90,
            lifetime=0,
            peers=("198.51.100.7", "203.0.113.5"),
            packets_to_peer=20,
            bytes_to_peer=2000,
            packets_to_client=30,
            bytes_to_client=3000,
            end_reason="refresh-0",
        )
    )
    sink.close()
    row = repo.get("a" * 32)
    assert row is not None
    assert row.end_reason == "refresh-0"
    assert row.ended_at is not None and row.ended_at.timestamp() == pytest.approx(T0 + 90)
    assert row.started_at.timestamp() == pytest.approx(T0)
    assert row.lifetime == 300  # last granted lifetime, not the 0 of deletion
    assert (row.packets_to_client, row.bytes_to_client) == (30, 3000)
    assert json.loads(row.peers) == ["198.51.100.7", "203.0.113.5"]
    assert (row.user, row.username, row.transport) == ("alice", "1700003600:alice", "udp")
    assert (row.client_ip, row.client_port, row.relay_port) == ("192.0.2.10", 40000, 50000)
    assert repo.recent(active_only=True) == []
    assert sink.written == 5 and sink.dropped == 0 and sink.write_errors == 0


def test_sink_writes_the_latest_progress_of_each_allocation_and_exact_final_counters(
    store: Store,
) -> None:
    """PROGRESS events are coalesced in memory (one UPDATE for all allocations, at most every
    `progress_every` s or on flush); the DELETED event's counters are the ones that stay."""
    sink = DbEventSink(store.sessions, progress_every=3600.0)
    repo = RelaySessionRepository(store.sessions)
    for a_id in ("c" * 32, "d" * 32):
        sink.emit(event(EventKind.CREATED, allocation_id=a_id))
        for n in (1, 2, 3):
            sink.emit(
                event(
                    EventKind.PROGRESS,
                    allocation_id=a_id,
                    time=T0 + n,
                    packets_to_peer=10 * n,
                    bytes_to_peer=1000 * n,
                    packets_to_client=20 * n,
                    bytes_to_client=2000 * n,
                )
            )
    assert sink.flush()
    for a_id in ("c" * 32, "d" * 32):
        row = repo.get(a_id)
        assert row is not None and row.ended_at is None
        assert (row.packets_to_peer, row.bytes_to_peer) == (30, 3000)
        assert (row.packets_to_client, row.bytes_to_client) == (60, 6000)
    # A late, lower PROGRESS never moves the counters back.
    sink.emit(event(EventKind.PROGRESS, allocation_id="c" * 32, packets_to_peer=1))
    assert sink.flush()
    row = repo.get("c" * 32)
    assert row is not None and (row.packets_to_peer, row.packets_to_client) == (30, 60)
    # A pending PROGRESS is superseded by the allocation's end: the final counters stay.
    sink.emit(event(EventKind.PROGRESS, allocation_id="d" * 32, packets_to_peer=40))
    sink.emit(
        event(
            EventKind.DELETED,
            allocation_id="d" * 32,
            time=T0 + 9,
            packets_to_peer=41,
            bytes_to_peer=4100,
            packets_to_client=80,
            bytes_to_client=8000,
            end_reason="refresh-0",
        )
    )
    sink.emit(event(EventKind.PROGRESS, allocation_id="d" * 32, packets_to_peer=99))  # late
    sink.close()
    row = repo.get("d" * 32)
    assert row is not None and row.end_reason == "refresh-0"
    assert (row.packets_to_peer, row.bytes_to_peer) == (41, 4100)
    assert (row.packets_to_client, row.bytes_to_client) == (80, 8000)
    assert sink.write_errors == 0


def test_sink_writes_pending_progress_when_due_without_a_flush(store: Store) -> None:
    sink = DbEventSink(store.sessions, progress_every=0.05)
    repo = RelaySessionRepository(store.sessions)
    sink.emit(event(EventKind.CREATED))
    sink.emit(event(EventKind.PROGRESS, packets_to_peer=7, bytes_to_client=700))
    try:
        for _ in range(400):  # generous: the writer is due after 0.05 s
            row = repo.get("a" * 32)
            if row is not None and row.packets_to_peer == 7:
                break
            threading.Event().wait(0.05)
        assert row is not None and (row.packets_to_peer, row.bytes_to_client) == (7, 700)
    finally:
        sink.close()


def test_sink_tolerates_out_of_order_and_missing_events(store: Store) -> None:
    sink = DbEventSink(store.sessions)
    # DELETED for an allocation whose CREATED was never seen still yields a complete row.
    sink.emit(
        event(EventKind.DELETED, allocation_id="b" * 32, packets_to_peer=5, end_reason="expired")
    )
    # A late REFRESHED never moves the totals backwards.
    sink.emit(event(EventKind.REFRESHED, allocation_id="b" * 32, packets_to_peer=2))
    sink.close()
    row = RelaySessionRepository(store.sessions).get("b" * 32)
    assert row is not None
    assert row.packets_to_peer == 5 and row.end_reason == "expired"


def test_emit_never_blocks_and_counts_drops(store: Store) -> None:
    sink = DbEventSink(store.sessions, max_queue=1)
    gate = threading.Event()
    original = sink._repo.apply

    def slow_apply(events: object) -> None:
        gate.wait(5)
        original(events)  # type: ignore[arg-type]

    sink._repo.apply = slow_apply  # type: ignore[method-assign]
    sink.emit(event(EventKind.CREATED, allocation_id="c1"))  # taken by the writer, which waits
    for n in range(5):  # the queue holds one; the rest are dropped, never waited for
        sink.emit(event(EventKind.CREATED, allocation_id=f"c{n + 2}"))
    assert sink.dropped >= 3
    gate.set()
    sink.close()
    sink.emit(event(EventKind.CREATED, allocation_id="late"))
    assert RelaySessionRepository(store.sessions).get("late") is None
    assert sink.written >= 1


async def test_async_flush_and_close(store: Store) -> None:
    sink = DbEventSink(store.sessions)
    sink.emit(event(EventKind.CREATED, allocation_id="d1"))
    assert await sink.aflush()
    assert RelaySessionRepository(store.sessions).get("d1") is not None
    await sink.aclose()
    await sink.aclose()  # idempotent


def test_key_lookup_reads_db_users_with_a_short_cache(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callgate import runtime

    now = [100.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: now[0])
    users = TurnUserRepository(store.sessions)
    lookup = runtime.KeyLookup(users, "callgate", ttl=5.0)
    assert lookup("alice") is None
    key = long_term_key("alice", "callgate", "pw")
    users.add("alice", "callgate", key)
    assert lookup("alice") is None  # cached miss
    now[0] += 6
    assert lookup("alice") == key
    users.remove("alice")
    assert lookup("alice") == key  # cached hit
    now[0] += 6
    assert lookup("alice") is None
    users.add("bob", "elsewhere", key)
    assert lookup("bob") is None  # another realm's user is not ours


# ---- database URLs and PostgreSQL specifics ----


def test_urls_are_shown_without_their_password() -> None:
    url = "postgresql+psycopg://callgate:s3cret-pw@db.example:5432/callgate"
    assert display_url(url) == "postgresql+psycopg://callgate:***@db.example:5432/callgate"
    assert "s3cret-pw" not in display_url("not a url s3cret-pw")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_urls_use_psycopg_and_a_connect_timeout(scheme: str) -> None:
    engine = create_store_engine(f"{scheme}://u:pw@127.0.0.1:5432/db")
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_an_unreachable_server_is_a_storage_error_naming_it_without_the_password() -> None:
    port = free_port(socket.SOCK_STREAM, both=False)  # nothing listens there
    with pytest.raises(StorageError) as refused:
        open_store(f"postgresql://callgate:s3cret-pw@127.0.0.1:{port}/callgate")
    message = str(refused.value)
    assert f"callgate:***@127.0.0.1:{port}/callgate" in message
    assert "s3cret-pw" not in message and "Connection refused" in message


def test_unknown_drivers_are_a_storage_error() -> None:
    with pytest.raises(StorageError, match="no database driver"):
        open_store("mysql://u:pw@127.0.0.1/db")


def test_a_wrong_password_is_a_storage_error(pg_server: PgServer) -> None:
    url = pg_server.url("postgres").replace(pg_server.password, "wrong-password")
    with pytest.raises(StorageError, match="password authentication failed") as refused:
        open_store(url)
    assert "wrong-password" not in str(refused.value)


def test_nodes_starting_together_migrate_one_after_the_other(pg_server: PgServer) -> None:
    """Two processes opening one empty PostgreSQL database at once: the migration lock makes the
    second wait and find the schema at head, instead of failing on tables that already exist."""
    url = pg_server.new_database(template=None)
    results: list[object] = []
    barrier = threading.Barrier(3)

    def opener() -> None:
        barrier.wait(5)
        try:
            store = open_store(url)
        except StorageError as exc:
            results.append(exc)
            return
        results.append(TurnUserRepository(store.sessions).list_users())
        store.close()

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [[], [], []]
    pg_server.drop_database(url)


def test_high_volume_tables_have_64_bit_ids(store: Store) -> None:
    """PostgreSQL's INTEGER is 32-bit: the tables that grow with every call and allocation count
    their rows in BIGINT there (SQLite's INTEGER is 64-bit already, and its only autoincrement)."""
    wanted = "INTEGER" if store.engine.dialect.name == "sqlite" else "BIGINT"
    for table in ("calls", "call_quality", "relay_sessions"):
        columns = {c["name"]: c for c in inspect(store.engine).get_columns(table)}
        assert str(columns["id"]["type"]) == wanted, table
    sink = DbEventSink(store.sessions)  # rows still numbered by the database
    sink.emit(event(EventKind.CREATED, allocation_id="big"))
    sink.close()
    row = RelaySessionRepository(store.sessions).get("big")
    assert row is not None and row.id >= 1


def test_migration_0007_drops_the_password_equivalent_turn_keys(empty_database_url: str) -> None:
    from sqlalchemy import text

    from callgate.storage.db import migrate

    engine = create_store_engine(empty_database_url)
    try:
        migrate(engine, "0006")
        key = long_term_key("alice", "callgate", "alice-pw").hex()
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (handle, display_name, groups, password_hash, realm,"
                    " turn_key_hex, is_admin, role, legal_hold, disabled, created_at, updated_at)"
                    " VALUES ('alice', 'Alice', '[]', '$argon2id$x', 'callgate', :key,"
                    " false, 'user', false, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"key": key},
            )
            conn.execute(
                text(
                    "INSERT INTO api_tokens (token_hash, user_id, created_at, expires_at)"
                    " SELECT 'h', id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM users"
                )
            )
        migrate(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("users")}
        assert "turn_key_hex" not in columns and "password_hash" in columns
        with engine.connect() as conn:  # the account and its token are kept
            assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 1
            assert conn.execute(text("SELECT handle FROM users")).scalar() == "alice"
        downgrade(engine, "0006")
        migrate(engine)
    finally:
        engine.dispose()
    if empty_database_url.startswith("sqlite"):
        path = Path(empty_database_url.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert key.encode() not in stored  # not even in freed pages or the WAL
