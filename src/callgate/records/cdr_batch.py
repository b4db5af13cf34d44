"""The CDR writes of one records batch, held and then sent together in few statements.

The records writer (records/writer.py) runs many calls' writes in one transaction. Sent one by
one, each CDR insert, update and finalize is a round trip to PostgreSQL (and, on a busy box, a
wait for the GIL after each). Held here, they go out as one multi-row INSERT and one
executemany per statement shape (psycopg sends an executemany's statements in one pipeline).

Order: a call's writes must keep their order (its insert before its update, before its
finalize); different calls' writes need not. So the batch is cut into waves: a call's n-th write
goes into wave n, and the waves are sent in order, each as its inserts, then its updates, then
its finalizes. A finalize counts only when it ends an open row (of this node, with a node id),
and each queued finalize learns whether it was the one (`Finalized`), as `rowcount` told one by
one: from its RETURNING on PostgreSQL, from the rows still open just before on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Update, select, text

from callgate.records.cdr import CdrRepository
from callgate.records.cdr_sql import INSERT_CALLS, calls
from callgate.records.cdr_types import CallOpen
from callgate.records.driver_sql import executemany

# SQLite (no RETURNING per executemany row): a write that changes nothing takes the write lock
# first (as in records/audit.py), so the open rows read stay open until the finalizes.
_SQLITE_LOCK = text("UPDATE calls SET id = id WHERE 0")


@dataclass(slots=True)
class Finalized:
    """Whether a held finalize ended its call: known once the batch is sent."""

    value: bool = False


_Final = tuple[str, dict[str, Any], Finalized]  # call id, finalize parameters, its outcome
Finals = tuple[list[_Final], Any]  # a wave's finalizes and the DB-API cursor of their results


@dataclass(slots=True)
class _Wave:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: dict[Update, list[dict[str, Any]]] = field(default_factory=dict)
    finals: list[_Final] = field(default_factory=list)


class CdrBatch:
    def __init__(self, cdrs: CdrRepository) -> None:
        self._cdrs = cdrs
        self._waves: list[_Wave] = []
        self._next_wave: dict[str, int] = {}  # call id -> the wave its next write goes into
        self._returning_sql: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._waves)

    def _wave(self, call_id: str) -> _Wave:
        index = self._next_wave.get(call_id, 0)
        self._next_wave[call_id] = index + 1
        if index == len(self._waves):
            self._waves.append(_Wave())
        return self._waves[index]

    def open(self, call: CallOpen) -> None:
        self._wave(call.call_id).inserts.append(self._cdrs.open_row(call))

    def update(self, call_id: str, changes: dict[str, Any]) -> None:
        statement, params = self._cdrs.update_params(call_id, changes)
        self._wave(call_id).updates.setdefault(statement, []).append(params)

    def finalize(
        self,
        call_id: str,
        end_at: datetime,
        disposition: str,
        ended_by: str,
        reason: str,
        duration_s: float | None,
        detail: str | None,
    ) -> Finalized:
        params = self._cdrs.finalize_params(
            call_id, end_at, disposition, ended_by, reason, duration_s, detail
        )
        done = Finalized()
        self._wave(call_id).finals.append((call_id, params, done))
        return done

    def send(self, conn: Connection) -> list[Finals]:
        """Write everything held, in order, inside the caller's transaction; then hold nothing.

        On PostgreSQL the caller sends it in pipeline mode (records/record_batch.py): each
        wave's finalizes go out as one executemany with RETURNING, and their results are read
        (`settle`) once the pipeline is synced; elsewhere they are settled here."""
        waves, self._waves, self._next_wave = self._waves, [], {}
        pending = []
        for wave in waves:
            if wave.inserts:
                executemany(conn, INSERT_CALLS, wave.inserts)
            for statement, params in wave.updates.items():
                executemany(conn, statement, params)
            if not wave.finals:
                continue
            if conn.dialect.name == "postgresql":
                pending.append(self._finalize_returning(conn, wave.finals))
            else:
                self._finalize(conn, wave.finals)
        return pending

    def _finalize_returning(self, conn: Connection, finals: list[_Final]) -> Finals:
        """Queue the wave's finalizes, each returning its call id if it ended the call."""
        sql = self._returning_sql.get(conn.dialect.name)
        if sql is None:
            statement = self._cdrs.finalize_statement.returning(calls.c.call_id)
            sql = self._returning_sql[conn.dialect.name] = str(
                statement.compile(dialect=conn.dialect)
            )
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(sql, [params for _, params, _ in finals], returning=True)
        return finals, cursor

    @staticmethod
    def settle(pending: list[Finals]) -> None:
        """Once the pipeline is synced: tell each queued finalize whether it ended its call."""
        for finals, cursor in pending:
            for _, _, done in finals:
                done.value = cursor.fetchone() is not None
                cursor.nextset()

    def _finalize(self, conn: Connection, finals: list[_Final]) -> None:
        query = select(calls.c.call_id).where(
            calls.c.call_id.in_([call_id for call_id, _, _ in finals]), calls.c.end_at.is_(None)
        )
        if self._cdrs.node_id is not None:
            query = query.where(calls.c.node_id == self._cdrs.node_id)
        conn.execute(_SQLITE_LOCK)
        still_open = set(conn.scalars(query))
        params = []
        for call_id, values, done in finals:
            if call_id in still_open:
                done.value = True
                params.append(values)
        if params:
            executemany(conn, self._cdrs.finalize_statement, params)
