"""PostgreSQL restarted while call records are being written (issue: "no CDR or audit entry is
lost"): the writer retries, in order, and nothing queued meanwhile is lost; a write that may only
wait so long (a new call's record) fails instead of landing late. A private PostgreSQL server:
the tests' shared one must not go down under other tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, text

from callgate.records.writer import RecordWriteError, RecordWriter
from callgate.storage.db import create_store_engine
from tests.db_backends import PgServer, _missing, pg_bindir

LOG = Table("log", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer))


@pytest.fixture
def private_pg() -> Iterator[PgServer]:
    bindir = pg_bindir()
    if bindir is None:
        _missing("PostgreSQL server programs not found (Debian: apt-get install postgresql)")
    assert bindir is not None
    server = PgServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


def insert(n: int):  # type: ignore[no-untyped-def]
    def op(conn: Connection) -> None:
        conn.execute(text("INSERT INTO log (n) VALUES (:n)"), {"n": n})

    return op


def test_record_writes_survive_a_postgresql_restart(private_pg: PgServer) -> None:
    engine = create_store_engine(private_pg.new_database(template=None))
    LOG.create(engine)
    writer = RecordWriter(engine)
    try:
        writer.submit(insert(0)).result(10)  # a pooled connection, which the crash breaks
        private_pg.halt()
        waiting = [writer.submit(insert(n)) for n in range(1, 40)]
        impatient = writer.submit(insert(99), max_wait=0.5)  # a new call's record
        waiting += [writer.submit(insert(n)) for n in range(40, 60)]
        time.sleep(1.0)  # down for a while: every write above has been tried and failed
        private_pg.resume()
        for future in waiting:
            future.result(60)
        with pytest.raises(RecordWriteError):
            impatient.result(1)
        assert writer.retries > 0 and writer.failures == 1
        with engine.connect() as conn:
            written = [r[0] for r in conn.execute(text("SELECT n FROM log ORDER BY id"))]
        assert written == list(range(60))  # nothing lost, nothing reordered
    finally:
        writer.close()
        engine.dispose()
