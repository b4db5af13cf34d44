"""Call detail records: one `calls` row per call attempt.

`open()` inserts the row when the invite is accepted for processing, before anyone rings, and it
is committed (durable) when `open()` returns; `update()` records progress (ring, answer, media
path, codec); `finalize()` sets the end once (later finalizes are ignored). At startup
`close_stale()` finalizes rows a dead server left open, with the best-known end time.

Writes use SQLAlchemy Core, one short transaction each (`open_many()` batches inserts), so a
2-core box keeps well above 500 call attempts/s on SQLite in WAL mode.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    Update,
    func,
    or_,
    select,
    update,
)

from callgate.clock import Clock, SystemClock
from callgate.records.cdr_sql import (
    FINALIZE,
    FINALIZE_OWNED,
    INSERT_CALLS,
    SET_AUDIT_INDEX,
    calls,
    cdr_values,
    check_end,
    update_statement,
)
from callgate.records.cdr_types import (
    JSON_FIELDS,
    CallOpen,
    CdrRecord,
    RelayLink,
    host_of,
)
from callgate.records.driver_sql import executemany
from callgate.storage.db import Store
from callgate.storage.models import CallQuality, RelaySession
from callgate.storage.text import storable

__all__ = ["CallOpen", "CdrRecord", "CdrRepository", "RelayLink"]

relay_sessions = cast(Table, RelaySession.__table__)
call_quality = cast(Table, CallQuality.__table__)

# Relay allocations a client made for this call start at most this long before the invite
# (the caller gathers its candidates, relay ones included, just before sending the offer).
GATHER_SLACK = timedelta(seconds=15)


class _Unknown:
    """Marks an argument the caller did not give (None is a meaningful duration)."""


UNKNOWN = _Unknown()

_OPEN_FIELDS = tuple(f.name for f in fields(CallOpen))
# A call's last sign of life from its node: the heartbeat, else the row's last write.
_LAST_BEAT = func.coalesce(calls.c.last_alive_at, calls.c.updated_at)


def _record(row: Any) -> CdrRecord:
    data = {f.name: getattr(row, f.name) for f in fields(CdrRecord)}
    for name in JSON_FIELDS:
        data[name] = tuple(json.loads(data[name])) if data[name] else ()
    return CdrRecord(**data)


cdr_record = _record  # a `calls` row as a CdrRecord (JSON columns parsed)


def _duration(answer_at: datetime | None, end_at: datetime) -> float | None:
    if answer_at is None:
        return None
    return round(max(0.0, (end_at - answer_at).total_seconds()), 3)


class CdrRepository:
    """`clock` stamps `updated_at` (the row's last sign of life, used by `close_stale`); call
    times themselves come from the caller."""

    def __init__(
        self, store: Store, clock: Clock | None = None, *, node_id: str | None = None
    ) -> None:
        self._engine = store.engine
        self._clock = clock or SystemClock()
        self.node_id = node_id  # several nodes: updates and finalizes touch this node's rows

    @property
    def engine(self) -> Engine:
        return self._engine

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    # ---- writes ----

    def open(self, call: CallOpen) -> None:
        """Insert the row for a new call attempt; committed on return."""
        self.open_many([call])

    def open_many(self, new_calls: Sequence[CallOpen]) -> None:
        """Insert several rows in one transaction (a batched writer's flush)."""
        if not new_calls:
            return
        with self._engine.begin() as conn:
            self.open_in(conn, new_calls)

    def open_in(self, conn: Connection, new_calls: Sequence[CallOpen]) -> None:
        """Insert rows inside the caller's transaction (group commit by the signaling hub)."""
        now = self._now()
        conn.execute(INSERT_CALLS, [self.open_row(call, now) for call in new_calls])

    def open_row(self, call: CallOpen, now: datetime | None = None) -> dict[str, Any]:
        """The `calls` row inserted for `call` (records/cdr_batch.py inserts several at once)."""
        row = {name: storable(getattr(call, name)) for name in _OPEN_FIELDS}
        if row["relay_candidates"] is not None:
            row["relay_candidates"] = json.dumps(list(row["relay_candidates"]))
        row["updated_at"] = now or self._now()
        return row

    def update(self, call_id: str, /, **changes: Any) -> bool:
        """Set fields of an open or closed row (ring_at, answer_at, callee_device, media_path,
        codec, ...); False when there is no such call."""
        with self._engine.begin() as conn:
            return self.update_in(conn, call_id, **changes)

    def update_in(self, conn: Connection, call_id: str, /, **changes: Any) -> bool:
        statement, params = self.update_params(call_id, changes)
        return bool(conn.execute(statement, params).rowcount)

    def update_params(self, call_id: str, changes: dict[str, Any]) -> tuple[Update, dict[str, Any]]:
        """The statement and parameters of `update_in` (statements are shared: several updates
        with the same columns run as one executemany)."""
        values = {**cdr_values(changes), "updated_at": self._now()}
        params = {f"b_{name}": value for name, value in values.items()}
        params.update(b_id=call_id, b_node=self.node_id)
        return update_statement(tuple(sorted(values)), self.node_id is not None), params

    def set_audit_index_in(self, conn: Connection, seqs: Sequence[tuple[str, int]]) -> None:
        """Record (call id, seq of its call.invite audit entry) pairs, in one executemany."""
        if seqs:
            executemany(conn, SET_AUDIT_INDEX, [{"b_id": c, "b_seq": seq} for c, seq in seqs])

    def finalize(
        self,
        call_id: str,
        end_at: datetime,
        disposition: str,
        ended_by: str,
        reason: str,
        /,
        **changes: Any,
    ) -> bool:
        """End the call: end time, disposition, who ended it and why, plus any last fields; the
        duration runs from answer to end. Only the first finalize counts (returns True)."""
        with self._engine.begin() as conn:
            return self.finalize_in(conn, call_id, end_at, disposition, ended_by, reason, **changes)

    def finalize_in(
        self,
        conn: Connection,
        call_id: str,
        end_at: datetime,
        disposition: str,
        ended_by: str,
        reason: str,
        /,
        duration_s: float | _Unknown | None = UNKNOWN,
        detail: str | None = None,
        **changes: Any,
    ) -> bool:
        """`finalize` inside the caller's transaction. A caller that knows the duration (the
        signaling engine does: answer to end, None if never answered) saves a read."""
        check_end(disposition, ended_by)
        values = cdr_values(changes)
        if not values and not isinstance(duration_s, _Unknown):
            final = self.finalize_params(
                call_id, end_at, disposition, ended_by, reason, duration_s, detail
            )
            return bool(conn.execute(self.finalize_statement, final).rowcount)
        if detail:
            values["end_detail"] = storable(detail[:255])
        return self._finalize(conn, call_id, end_at, disposition, ended_by, reason, values)

    @property
    def finalize_statement(self) -> Update:
        """The statement of a finalize whose duration is known (`finalize_params`)."""
        return FINALIZE if self.node_id is None else FINALIZE_OWNED

    def finalize_params(
        self,
        call_id: str,
        end_at: datetime,
        disposition: str,
        ended_by: str,
        reason: str,
        duration_s: float | None,
        detail: str | None,
    ) -> dict[str, Any]:
        """The parameters of `finalize_statement` (several finalizes run as one executemany).
        PostgreSQL's batch runs them through raw psycopg (cdr_batch.py), past UTCDateTime's
        bind check: the same check is made here."""
        check_end(disposition, ended_by)
        if end_at.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return {
            "b_id": call_id,
            "b_end_at": end_at.astimezone(UTC),
            "b_disposition": disposition,
            "b_ended_by": ended_by,
            "b_reason": reason,
            "b_duration_s": duration_s,
            "b_end_detail": storable(detail[:255]) if detail else None,
            "b_updated_at": self._now(),
            "b_node": self.node_id,
        }

    def _finalize(
        self,
        conn: Connection,
        call_id: str,
        end_at: datetime,
        disposition: str,
        ended_by: str,
        reason: str,
        values: dict[str, Any],
        owner: str | _Unknown | None = UNKNOWN,
    ) -> bool:
        """`owner`: the node that must still own the row (default: this repository's)."""
        answer_at = values.get("answer_at")
        if answer_at is None:
            answer_at = conn.scalar(select(calls.c.answer_at).where(calls.c.call_id == call_id))
        node = self.node_id if isinstance(owner, _Unknown) else owner
        where = [calls.c.call_id == call_id, calls.c.end_at.is_(None)]
        if node is not None:
            where.append(calls.c.node_id == node)
        result = conn.execute(
            update(calls)
            .where(*where)
            .values(
                **values,
                end_at=end_at,
                disposition=disposition,
                ended_by=ended_by,
                reason=reason,
                duration_s=_duration(answer_at, end_at),
                updated_at=self._now(),
            )
        )
        return bool(result.rowcount)

    # ---- reads ----

    def get(self, call_id: str) -> CdrRecord | None:
        with self._engine.connect() as conn:
            query = select(calls).where(calls.c.call_id == storable(call_id))
            row = conn.execute(query).one_or_none()
        return _record(row) if row is not None else None

    def list(
        self, since: datetime | None = None, limit: int = 100, user: str | None = None
    ) -> list[CdrRecord]:
        """Newest first; `user` limits to calls the handle made or received."""
        query = select(calls).order_by(calls.c.invite_at.desc(), calls.c.id.desc())
        if since is not None:
            query = query.where(calls.c.invite_at >= since)
        if user is not None:
            user = storable(user)
            query = query.where(or_(calls.c.caller_user == user, calls.c.callee_user == user))
        with self._engine.connect() as conn:
            rows = conn.execute(query.limit(max(1, min(limit, 10_000)))).all()
        return [_record(row) for row in rows]

    # ---- restart and relay linking ----

    def close_stale(
        self,
        reason: str = "server-restart",
        now: datetime | None = None,
        *,
        node_id: str | None = None,
    ) -> int:
        """Finalize every row left open (a server died mid-call); with `node_id`, only the rows
        that node opened (several nodes share the database: the others' calls are live). End
        time: the last sign of life (heartbeat, row update, quality report, the parties' relay
        activity), never after `now`; then link the relay sessions (closed first, from their
        last persisted counters)."""
        now = now or self._now()
        query = select(calls).where(calls.c.end_at.is_(None))
        if node_id is not None:
            query = query.where(calls.c.node_id == node_id)
        with self._engine.begin() as conn:
            rows = conn.execute(query).all()
            for row in rows:
                end = min(now, self._last_activity(conn, row))
                end = max(end, row.answer_at or row.invite_at)
                disposition = "answered" if row.answer_at is not None else "failed"
                self._finalize(
                    conn, row.call_id, end, disposition, "server", reason, {}, owner=row.node_id
                )
        for row in rows:
            self.link_relay_sessions(row.call_id, now)
        return len(rows)

    # ---- several nodes: calls that outlive their node (docs/scaling.md) ----

    def take_over(self, call_id: str, owner: str | None, silent_since: datetime) -> bool:
        """Make this node the owner of an open call whose node `owner` has given no sign of life
        since `silent_since`. Compare-and-set in one UPDATE: of several nodes trying, one wins;
        a call its node still beats for is never taken."""
        if self.node_id is None:
            raise ValueError("only a node with a node id takes calls over")
        now = self._now()
        with self._engine.begin() as conn:
            result = conn.execute(
                update(calls)
                .where(
                    calls.c.call_id == call_id,
                    calls.c.end_at.is_(None),
                    calls.c.node_id.is_(None) if owner is None else calls.c.node_id == owner,
                    silent_since > _LAST_BEAT,
                )
                .values(node_id=self.node_id, last_alive_at=now, updated_at=now)
            )
        return result.rowcount == 1

    def close_lost(
        self, alive: Collection[str], silent_since: datetime, now: datetime | None = None
    ) -> tuple[str, ...]:
        """Finalize (`node-lost`) the open calls of nodes not in `alive` that nobody took over
        and whose node gave no sign of life since `silent_since`; their ids. As `close_stale`:
        the end is the last sign of life; each row only if its node still owns it."""
        now = now or self._now()
        query = select(calls).where(
            calls.c.end_at.is_(None),
            calls.c.node_id.is_not(None),
            calls.c.node_id.not_in(list(alive)),
            silent_since > _LAST_BEAT,
        )
        closed: set[str] = set()
        with self._engine.begin() as conn:
            for row in conn.execute(query.limit(1000)).all():
                end = max(min(now, self._last_activity(conn, row)), row.answer_at or row.invite_at)
                disposition = "answered" if row.answer_at is not None else "failed"
                closing = (row.call_id, end, disposition, "server", "node-lost")
                if self._finalize(conn, *closing, {}, owner=row.node_id):
                    closed.add(row.call_id)
        for call_id in closed:
            self.link_relay_sessions(call_id, now)
        return tuple(sorted(closed))

    @staticmethod
    def _last_activity(conn: Connection, row: Any) -> datetime:
        seen = [row.updated_at, row.invite_at, row.last_alive_at]
        seen.append(
            conn.scalar(
                select(func.max(call_quality.c.reported_at)).where(
                    call_quality.c.call_id == row.call_id
                )
            )
        )
        last_relay = func.coalesce(relay_sessions.c.ended_at, relay_sessions.c.updated_at)
        seen.append(
            conn.scalar(
                select(func.max(last_relay)).where(
                    relay_sessions.c.user.in_([row.caller_user, row.callee_user]),
                    relay_sessions.c.started_at >= row.invite_at - GATHER_SLACK,
                )
            )
        )
        return max(_aware(value) for value in seen if value is not None)

    def link_relay_sessions(self, call_id: str, now: datetime | None = None) -> RelayLink | None:
        """Find the TURN allocations that served this call and record them on the row.

        An allocation belongs to the call when its user is the caller or callee, it started no
        earlier than GATHER_SLACK before the invite and before the call ended, and (when the
        party's signaling address is known and any allocation matches it) it came from that
        address. relay_bytes counts every byte each allocation relayed, both ways.
        """
        with self._engine.begin() as conn:
            row = conn.execute(select(calls).where(calls.c.call_id == call_id)).one_or_none()
            if row is None:
                return None
            sessions = self._relay_rows(conn, row, now or self._now())
            link = RelayLink.of(sessions)
            conn.execute(
                update(calls)
                .where(calls.c.call_id == call_id)
                .values(
                    relay_used=link.relay_used,
                    relay_bytes=link.relay_bytes,
                    relay_allocation_ids=json.dumps(list(link.allocation_ids)),
                    updated_at=self._now(),
                )
            )
        return link

    @staticmethod
    def _relay_rows(conn: Connection, row: Any, now: datetime) -> Sequence[Any]:
        end = row.end_at or now
        query = (
            select(relay_sessions)
            .where(
                relay_sessions.c.user.in_([row.caller_user, row.callee_user]),
                relay_sessions.c.started_at >= row.invite_at - GATHER_SLACK,
                relay_sessions.c.started_at <= end,
            )
            .order_by(relay_sessions.c.started_at, relay_sessions.c.id)
        )
        found = conn.execute(query).all()
        offered = set(json.loads(row.relay_candidates)) if row.relay_candidates else set()
        if offered:
            # Exact: the relayed addresses the call's own SDPs offered (other devices and other
            # calls never match). A relayed address is one allocation's at a time, and a redial
            # can be given the port the last call just freed: the newest allocation on an
            # offered address that started before the call ended is the one that served it.
            newest: dict[str, Any] = {}
            for session in found:  # by start time
                address = f"{session.relay_ip}:{session.relay_port}"
                if address in offered:
                    newest[address] = session
            return sorted(newest.values(), key=lambda s: (s.started_at, s.id))
        picked: list[Any] = []
        for user, address in (
            (row.caller_user, row.caller_address),
            (row.callee_user, row.callee_address),
        ):
            mine = [s for s in found if s.user == user and s not in picked]
            host = host_of(address)
            same_host = [s for s in mine if host is not None and s.client_ip == host]
            picked.extend(same_host or mine)
        return picked


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
