"""Reading records for the admin API and exports: filters and keyset pagination.

Every listing is ordered by a unique key and continues after the last row of the previous page
(keyset pagination: no OFFSET, so page N costs what page 1 costs and rows inserted meanwhile
never shift a page). The position travels as an opaque cursor: base64url of a small JSON array.

    calls           newest first: (invite_at, id) descending
    call_quality    newest first: id descending
    relay_sessions  newest first: id descending
    audit_entries   oldest first: seq ascending (the chain's order)

`iter_*` stream every matching row in chunks of `chunk` rows, one short query each (exports).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Engine, Select, Table, exists, func, or_, select, tuple_

from callgate.errors import CallgateError
from callgate.records.audit_chain import Entry
from callgate.storage.models import AuditEntry, Call, CallQuality, RelaySession

calls = cast(Table, Call.__table__)
quality = cast(Table, CallQuality.__table__)
relay_sessions = cast(Table, RelaySession.__table__)
audit = cast(Table, AuditEntry.__table__)

MAX_LIMIT = 1000
MAX_KEY = 2**63 - 1  # ids and sequence numbers are BIGINT on every backend
CHUNK = 1000


class BadCursor(CallgateError, ValueError):
    """A cursor this server did not hand out (or for another listing)."""


def encode_cursor(kind: str, *key: Any) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not valid") from None
    if not isinstance(value, list) or len(value) != arity + 1 or value[0] != kind:
        raise BadCursor("cursor is not valid for this listing")
    return value[1:]


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Any]
    next_cursor: str | None


def _given(filter_: object, names: tuple[str, ...]) -> dict[str, Any]:
    """A filter's set fields as JSON values (times as ISO 8601)."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(filter_, name)
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Calls whose caller or callee is `party`, invited in [since, until), with `disposition`,
    with (poor=True) or without (poor=False) a stream classified poor. `visible_to` restricts
    to calls that user is a party of (the `user` role)."""

    party: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    disposition: str | None = None
    poor: bool | None = None
    visible_to: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The filter as given, for the audit entry of an export."""
        return _given(self, self.__slots__)

    def apply(self, query: Select[Any]) -> Select[Any]:
        for user in (self.party, self.visible_to):
            if user is not None:
                query = query.where(or_(calls.c.caller_user == user, calls.c.callee_user == user))
        if self.since is not None:
            query = query.where(calls.c.invite_at >= self.since)
        if self.until is not None:
            query = query.where(calls.c.invite_at < self.until)
        if self.disposition is not None:
            query = query.where(calls.c.disposition == self.disposition)
        if self.poor is not None:
            poor = exists().where(
                quality.c.call_id == calls.c.call_id, quality.c.classification == "poor"
            )
            query = query.where(poor if self.poor else ~poor)
        return query


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Quality rows (by call, report time, poor) or relay sessions (by user, start time)."""

    call_id: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    poor: bool | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    after_seq: int | None = None
    actor: str | None = None
    action: str | None = None
    object: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The filter as given, for the audit entry of an export."""
        return _given(self, self.__slots__)

    def apply(self, query: Select[Any]) -> Select[Any]:
        for column, value in (
            (audit.c.actor, self.actor),
            (audit.c.action, self.action),
            (audit.c.object, self.object),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.after_seq is not None:
            query = query.where(audit.c.seq > self.after_seq)
        if self.since is not None:
            query = query.where(audit.c.at >= self.since)
        if self.until is not None:
            query = query.where(audit.c.at < self.until)
        return query


def audit_entry(row: Any) -> Entry:
    return Entry(
        row.seq, row.at, row.actor, row.action, row.object, row.details, row.prev_hash, row.hash
    )


def _key(value: Any) -> bool:
    """A row id or seq as a cursor may hold it (bool is no int here)."""
    return type(value) is int and 0 <= value <= MAX_KEY


def _limit(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))


def newest_first_page(
    engine: Engine,
    query: Select[Any],
    kind: str,
    order: tuple[ColumnElement[Any], ColumnElement[Any]],
    valid_key: Callable[[Any], bool],
    limit: int,
    cursor: str | None,
) -> Page:
    """One page of at most `limit` rows of `query` (1..MAX_LIMIT), newest first by `order` =
    (time, unique key) descending: a unique order, so the next page continues after the last
    row (the cursor holds its time and key; a listing of `kind` accepts only its own), and rows
    added meanwhile never shift a page. BadCursor for a cursor the listing did not hand out."""
    at, key = order
    limit = _limit(limit)
    if cursor is not None:
        at_text, row_key = decode_cursor(cursor, kind, 2)
        try:
            when = datetime.fromisoformat(at_text)
        except (TypeError, ValueError):
            raise BadCursor("cursor is not valid") from None
        if not valid_key(row_key):
            raise BadCursor("cursor is not valid")
        query = query.where(tuple_(at, key) < tuple_(when, row_key))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(at.desc(), key.desc()).limit(limit + 1)).all()
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]._mapping
    return Page(rows[:limit], encode_cursor(kind, last[at].isoformat(), last[key]))


class RecordsQuery:
    """Read-only queries over the records tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _all(self, query: Select[Any]) -> Sequence[Any]:
        with self._engine.connect() as conn:
            return conn.execute(query).all()

    # ---- calls ----

    def cdr_page(self, where: CdrFilter, limit: int, cursor: str | None = None) -> Page:
        return newest_first_page(self._engine, where.apply(select(calls)), "cdr",
                                 (calls.c.invite_at, calls.c.id), _key, limit, cursor)  # fmt: skip

    def iter_cdrs(self, where: CdrFilter, chunk: int = CHUNK) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            page = self.cdr_page(where, min(chunk, MAX_LIMIT), cursor)
            yield from page.rows
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def count_cdrs(self, where: CdrFilter) -> int:
        """How many calls match (for a progress bar)."""
        with self._engine.connect() as conn:
            return int(conn.scalar(where.apply(select(func.count()).select_from(calls))) or 0)

    def cdr_row(self, call_id: str) -> Any | None:
        rows = self._all(select(calls).where(calls.c.call_id == call_id))
        return rows[0] if rows else None

    # ---- quality rows and relay sessions ----

    def quality_page(self, where: RowFilter, limit: int, cursor: str | None = None) -> Page:
        query = select(quality)
        if where.call_id is not None:
            query = query.where(quality.c.call_id == where.call_id)
        if where.since is not None:
            query = query.where(quality.c.reported_at >= where.since)
        if where.until is not None:
            query = query.where(quality.c.reported_at < where.until)
        if where.poor is not None:
            query = query.where(
                quality.c.classification == "poor"
                if where.poor
                else quality.c.classification != "poor"
            )
        return self._id_page(query, quality, "quality", limit, cursor)

    def relay_page(self, where: RowFilter, limit: int, cursor: str | None = None) -> Page:
        query = select(relay_sessions)
        if where.user is not None:
            query = query.where(relay_sessions.c.user == where.user)
        if where.since is not None:
            query = query.where(relay_sessions.c.started_at >= where.since)
        if where.until is not None:
            query = query.where(relay_sessions.c.started_at < where.until)
        return self._id_page(query, relay_sessions, "relay", limit, cursor)

    def _id_page(
        self, query: Select[Any], table: Table, kind: str, limit: int, cursor: str | None
    ) -> Page:
        limit = _limit(limit)
        if cursor is not None:
            (row_id,) = decode_cursor(cursor, kind, 1)
            if not _key(row_id):
                raise BadCursor("cursor is not valid")
            query = query.where(table.c.id < row_id)
        rows = self._all(query.order_by(table.c.id.desc()).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(kind, rows[-1].id) if more else None)

    def call_quality(self, call_id: str) -> Sequence[Any]:
        return self._all(select(quality).where(quality.c.call_id == call_id).order_by(quality.c.id))

    def call_relay_sessions(self, allocation_ids: Sequence[str]) -> Sequence[Any]:
        if not allocation_ids:
            return []
        query = select(relay_sessions).where(relay_sessions.c.allocation_id.in_(allocation_ids))
        return self._all(query.order_by(relay_sessions.c.id))

    # ---- audit entries ----

    def audit_page(self, where: AuditFilter, limit: int, cursor: str | None = None) -> Page:
        limit = _limit(limit)
        query = where.apply(select(audit))
        if cursor is not None:
            (seq,) = decode_cursor(cursor, "audit", 1)
            if not _key(seq):
                raise BadCursor("cursor is not valid")
            query = query.where(audit.c.seq > seq)
        rows = self._all(query.order_by(audit.c.seq).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor("audit", rows[-1].seq) if more else None)

    def count_audit(self, where: AuditFilter) -> int:
        with self._engine.connect() as conn:
            return int(conn.scalar(where.apply(select(func.count()).select_from(audit))) or 0)

    def iter_audit(self, where: AuditFilter, chunk: int = CHUNK) -> Iterator[Entry]:
        cursor: str | None = None
        while True:
            page = self.audit_page(where, min(chunk, MAX_LIMIT), cursor)
            yield from (audit_entry(row) for row in page.rows)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def call_events(self, call_id: str, limit: int = MAX_LIMIT) -> list[Entry]:
        """Audit entries whose object is this call."""
        query = select(audit).where(audit.c.object == f"call:{call_id}")
        return [audit_entry(row) for row in self._all(query.order_by(audit.c.seq).limit(limit))]
