"""The record writer: in order, group-committed, and a bad write loses nothing else."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, text

from callgate.records.writer import RecordWriteError, RecordWriter
from callgate.storage.db import Store, open_store

# A table of our own; `id` numbers rows in insertion order on both backends.
LOG = Table(
    "log",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("n", Integer, nullable=False, unique=True),
)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    LOG.create(opened.engine)
    yield opened
    opened.close()


def insert(n: int):  # type: ignore[no-untyped-def]
    def op(conn: Connection) -> None:
        conn.execute(text("INSERT INTO log (n) VALUES (:n)"), {"n": n})

    return op


def rows(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT n FROM log ORDER BY id"))]


def test_queued_writes_commit_together_in_order(store: Store) -> None:
    writer = RecordWriter(store.engine)
    gate = threading.Event()
    blocker = writer.submit_standalone(gate.wait)  # hold the thread while 100 writes queue up
    futures = [writer.submit(insert(n)) for n in range(100)]
    gate.set()
    blocker.result(5)
    for future in futures:
        future.result(5)
    assert rows(store) == list(range(100))
    assert writer.batches <= 3  # group commit: not one transaction per write
    writer.close()


def test_a_failing_write_fails_alone(store: Store) -> None:
    writer = RecordWriter(store.engine)
    gate = threading.Event()
    writer.submit_standalone(gate.wait)
    good_before = writer.submit(insert(1))
    bad = writer.submit(insert(1))  # violates UNIQUE
    good_after = writer.submit(insert(2))
    gate.set()
    good_before.result(5)
    good_after.result(5)
    with pytest.raises(RecordWriteError):
        bad.result(5)
    assert rows(store) == [1, 2]
    assert writer.failures == 1
    writer.close()


def test_close_writes_what_is_queued(store: Store) -> None:
    writer = RecordWriter(store.engine)
    for n in range(10):
        writer.submit(insert(n))
    writer.close()
    assert rows(store) == list(range(10))


def test_posted_writes_commit_and_a_failing_one_is_only_logged(store: Store) -> None:
    """`post` (nobody waits): the writes land in order; a bad one is counted, the rest kept,
    and a `submit` queued after them is done only once they are committed."""
    writer = RecordWriter(store.engine)
    gate = threading.Event()
    writer.submit_standalone(gate.wait)
    writer.post(insert(1))
    writer.post(insert(1))  # violates UNIQUE: logged, raised to nobody
    writer.post(insert(2))
    marker = writer.submit(lambda conn: None)
    gate.set()
    marker.result(5)
    assert rows(store) == [1, 2]
    assert writer.failures == 1
    writer.close()


def test_a_write_after_the_server_dropped_the_connection_is_not_lost(store: Store) -> None:
    """The writer keeps its connection between batches; when the database ends it (a restart,
    an administrator), the next batch goes through on a new one."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("ending a connection from the server side needs PostgreSQL")
    writer = RecordWriter(store.engine)
    writer.submit(insert(1)).result(5)
    with store.engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
        )
    writer.submit(insert(2)).result(5)
    assert rows(store) == [1, 2]
    assert writer.failures == 0
    writer.close()
