"""One group-committed records transaction's writes, held and sent together at its end.

The call recorder's writes (records/call_recorder.py) do not touch the database as they are
queued: a batch first sends its CDR writes (records/cdr_batch.py: few statements), then appends
its audit entries in one go — the appenders' lock (records/audit.py) taken, the head read, one
multi-row INSERT — then records each new CDR's audit index (the seq of its call.invite) in one
executemany, and the writer commits. On PostgreSQL the audit lock is held from that append to
the commit only, so several nodes' batches write their CDRs at the same time and queue only for
the append; before, a batch held it from its first entry through every CDR round trip.

The chain is the one appending the entries one by one would give, in the order queued: an entry
whose CDR finalize did not end the call (another node took the call over) is left out, as the
recorder did when it appended in place. Any other append on the connection meanwhile first sends
what the batch holds (`hold_appends`). Nothing is sent when a write fails: the writer rolls the
transaction back and retries (records/writer.py), and a retry queues everything again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from callgate.records.audit import AuditLog, NewEntry, hold_appends, queue_head, release_appends
from callgate.records.cdr import CdrRepository
from callgate.records.cdr_batch import CdrBatch, Finalized


@dataclass(frozen=True, slots=True)
class _HeldEntry:
    entry: NewEntry
    at: datetime
    only_if: Finalized | None  # appended only if this finalize ended the call
    index_of: str | None  # the call whose audit_index is this entry's seq


class RecordBatch:
    def __init__(self, conn: Connection, cdrs: CdrRepository) -> None:
        self._conn = conn
        self._cdrs = cdrs
        self.cdr = CdrBatch(cdrs)
        self._audit: list[_HeldEntry] = []

    def audit(
        self,
        entry: NewEntry,
        at: datetime,
        *,
        only_if: Finalized | None = None,
        index_of: str | None = None,
    ) -> None:
        """Hold an audit entry: appended when the batch is sent, after its CDR writes."""
        self._audit.append(_HeldEntry(entry, at, only_if, index_of))
        hold_appends(self._conn, self.send)

    def send(self) -> None:
        """Write what is held: CDRs, then the audit entries, then the new CDRs' audit index."""
        release_appends(self._conn)
        if self._conn.dialect.name == "postgresql":
            self._send_pipelined()
            return
        self.cdr.send(self._conn)
        self._append()

    def _send_pipelined(self) -> None:
        """PostgreSQL: two round trips (psycopg's pipeline mode) before the commit — the CDR
        statements with the audit lock and head read, then the audit insert with the index."""
        import psycopg  # only here: a SQLite server need not load PostgreSQL's driver

        conn = self._conn
        raw = conn.connection.driver_connection
        try:
            with raw.pipeline():  # type: ignore[union-attr]
                finals = self.cdr.send(conn)
                read_head = queue_head(conn) if self._audit else None
            CdrBatch.settle(finals)
            if read_head is not None:
                read_head()
                with raw.pipeline():  # type: ignore[union-attr]
                    self._append()
        except psycopg.Error as exc:
            # as SQLAlchemy would raise it: the writer retries while the server is unreachable
            kind = OperationalError if isinstance(exc, psycopg.OperationalError) else DBAPIError
            raise kind("records batch (pipeline)", None, exc) from exc

    def _append(self) -> None:
        held = [h for h in self._audit if h.only_if is None or h.only_if.value]
        self._audit = []
        written = AuditLog.append_timed_in(self._conn, [(h.entry, h.at) for h in held])
        seqs = [(h.index_of, e.seq) for h, e in zip(held, written, strict=True) if h.index_of]
        self._cdrs.set_audit_index_in(self._conn, seqs)


@contextlib.contextmanager
def record_batch(conn: Connection, cdrs: CdrRepository) -> Iterator[RecordBatch]:
    """A batch for the writes of `conn`'s transaction, sent when the block ends without error."""
    batch = RecordBatch(conn, cdrs)
    try:
        yield batch
        batch.send()
    finally:
        release_appends(conn)
