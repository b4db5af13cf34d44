"""PostgreSQL restarted while call records are being written (issue: "no CDR or audit entry is
lost"): the writer retries, in order, and nothing queued meanwhile is lost; a write that may only
wait so long (a new call's record) fails instead of landing late. A private PostgreSQL server:
the tests' shared one must not go down under other tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, text

from callgate.records.audit import AuditLog
from callgate.records.call_recorder import CallEnd, CallRecorder
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.cdr_types import new_call_id
from callgate.records.quality_store import QualityRepository
from callgate.records.writer import RecordWriteError, RecordWriter
from callgate.storage.db import create_store_engine, open_store
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


def test_call_records_survive_a_postgresql_restart(
    private_pg: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The call recorder's batches (CDRs, then the audit entries under the lock, in psycopg's
    pipeline mode) are retried across the restart: every CDR finalized with its audit index,
    three audit entries per call, the chain verified."""
    store = open_store(private_pg.new_database(template=None))
    cdrs = CdrRepository(store, node_id="n1")
    recorder = CallRecorder(cdrs, QualityRepository(store.sessions))
    at = datetime.now(UTC)

    def call(n: int) -> str:
        call_id = new_call_id()
        opened = CallOpen(call_id, f"u{n}", "bob", at, caller_device="d1", node_id="n1")
        recorder.open(opened, ringing_devices=1, relay_only=False)
        return call_id

    def finish(call_id: str, n: int) -> None:
        recorder.answered(call_id, "bob", "d2", at, answer_at=at)
        recorder.ended(CallEnd(call_id, at, "answered", "hangup", "caller", f"u{n}", 0.0))

    try:
        calls = [call(n) for n in range(20)]
        recorder.settled().result(30)  # the opens are written: the rest waits out the restart
        private_pg.halt()
        for n, call_id in enumerate(calls):
            finish(call_id, n)
        time.sleep(1.0)  # down for a while: the batches above have been tried and failed
        private_pg.resume()
        recorder.settled().result(60)
    finally:
        recorder.close()
    assert "retrying record writes" in caplog.text and "resumed" in caplog.text
    log = AuditLog(store)
    invites = {e.object: e.seq for e in log.iter_entries() if e.action == "call.invite"}
    assert log.size() == 3 * len(calls) and log.verify(None).ok
    for call_id in calls:
        record = cdrs.get(call_id)
        assert record is not None and (record.disposition, record.reason) == ("answered", "hangup")
        assert record.audit_index == invites[f"call:{call_id}"]
    store.close()
