"""records/driver_sql.py: the records writer's rows sent through sqlite3's cursor are stored
exactly as SQLAlchemy stores them (same SQL, same conversions, the columns' defaults)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, StatementError

from callgate.clock import ManualClock
from callgate.records.audit import _INSERT as INSERT_AUDIT
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_sql import INSERT_CALLS
from callgate.records.driver_sql import executemany
from callgate.storage.db import open_store, sqlite_url

T0 = datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC)


def _rows(cdrs: CdrRepository) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    calls = [
        cdrs.open_row(CallOpen("c1", "alice", "bob", T0, relay_candidates=("192.0.2.1:3478",))),
        cdrs.open_row(CallOpen("c2", "carol", "dave", T0, ring_at=T0, recording_required=True)),
    ]
    entries = [
        {"seq": n, "at": T0, "actor": "alice", "action": "call.invite", "object": f"call:c{n}",
         "details": "{}", "prev_hash": "0" * 64, "hash": f"{n:064x}"}
        for n in (1, 2)
    ]  # fmt: skip
    return calls, entries


def _stored(conn: Connection) -> list[Any]:
    calls = conn.execute(text("SELECT * FROM calls ORDER BY call_id")).all()
    audit = conn.execute(text("SELECT * FROM audit_entries ORDER BY seq")).all()
    return [tuple(row) for row in calls + audit]


def test_rows_sent_through_the_driver_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    stored = []
    for name, send in (
        ("sqlalchemy", lambda conn, statement, rows: conn.execute(statement, rows)),
        ("driver", executemany),
    ):
        store = open_store(sqlite_url(tmp_path / name))
        calls, entries = _rows(CdrRepository(store, ManualClock(start_wall=T0.timestamp())))
        with store.engine.begin() as conn:
            send(conn, INSERT_CALLS, calls)
            send(conn, INSERT_AUDIT, entries)
        with store.engine.connect() as conn:
            stored.append(_stored(conn))
        store.close()
    assert len(stored[0]) == 4
    assert stored[0] == stored[1]


def test_a_refused_row_raises_what_sqlalchemy_raises(tmp_path: Path) -> None:
    """Callers catch SQLAlchemy's errors (a busy or full disk must not stop a background loop)."""
    store = open_store(sqlite_url(tmp_path / "db"))
    _, entries = _rows(CdrRepository(store))
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        executemany(conn, INSERT_AUDIT, [entries[0], entries[0]])  # the same seq twice
    store.close()


def test_a_value_its_column_refuses_raises_what_sqlalchemy_raises(tmp_path: Path) -> None:
    """A naive datetime for a UTC column: SQLAlchemy's StatementError (the original error its
    cause), from either path, and nothing stored."""
    store = open_store(sqlite_url(tmp_path / "db"))
    _, entries = _rows(CdrRepository(store))
    naive = [entries[0], {**entries[1], "at": T0.replace(tzinfo=None)}]
    for send in (lambda conn, statement, rows: conn.execute(statement, rows), executemany):
        with pytest.raises(StatementError) as raised, store.engine.begin() as conn:
            send(conn, INSERT_AUDIT, naive)
        assert isinstance(raised.value.orig, ValueError)
        assert "naive datetime" in str(raised.value)
    with store.engine.connect() as conn:
        assert _stored(conn) == []
    store.close()


def test_rows_sent_on_a_commit_as_you_go_connection_are_kept_by_its_commit(tmp_path: Path) -> None:
    """No transaction begun yet (`engine.connect()`): the rows join the one begun for them, as
    `Connection.execute` begins one, and `conn.commit()` keeps them."""
    store = open_store(sqlite_url(tmp_path / "db"))
    _, entries = _rows(CdrRepository(store))
    with store.engine.connect() as conn:
        assert not conn.in_transaction()
        executemany(conn, INSERT_AUDIT, entries)
        assert conn.in_transaction()
        conn.commit()
    with store.engine.connect() as conn:
        assert len(_stored(conn)) == 2
    store.close()
