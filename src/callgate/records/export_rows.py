"""CDR rows for exports, read the cheap way: keyset chunks of `calls`, Core-built (the filter and
its binds exactly as the admin listing's), but each chunk's rows taken straight from the DBAPI
cursor — no SQLAlchemy row objects, no per-value type processing — and turned into export values
by `CdrValues`:

- times as ISO 8601 UTC with "Z" (`datetime.isoformat` form: no fraction when it is zero). On
  SQLite the stored text ("YYYY-MM-DD HH:MM:SS.ffffff", SQLAlchemy's storage format, always UTC
  here) is rearranged without parsing; any other stored form goes through the column's own
  SQLAlchemy result processor. On PostgreSQL the driver's aware datetime is converted to UTC.
- list fields (JSON text) as stored, "[]" when NULL or empty;
- booleans as bool (SQLite stores 0/1), everything else as the driver returns it.

Chunk after chunk the position is the last row's raw (invite_at, id), compared in the database's
own representation, so pages never shift whatever is inserted meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Engine, String, bindparam, select, tuple_

from callgate.records.cdr_types import JSON_FIELDS
from callgate.records.query import CdrFilter, calls

EXPORT_CHUNK = 5000
TIME_FIELDS = frozenset({"invite_at", "ring_at", "answer_at", "end_at", "updated_at"})

Convert = Callable[[Any], Any]
Column = Callable[[Sequence[Any]], Sequence[Any]]


def iso_z(value: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with "Z"."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# SQLAlchemy's SQLite storage form of a datetime, one a line (a whole column of a chunk).
_STORED = re.compile(r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\n)*")


def _sqlite_time(parse: Convert) -> Convert:
    """One stored SQLite time as export text; `parse` (SQLAlchemy's) for a form not its own."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str and len(value) == 26 and value[10] == " " and value[19] == ".":
            if value[20:] == "000000":
                return f"{value[:10]}T{value[11:19]}Z"
            return f"{value[:10]}T{value[11:]}Z"
        return iso_z(parse(value))

    return convert


def _sqlite_times(parse: Convert) -> Column:
    """A chunk's column of stored SQLite times as export text: when every value is in the
    storage form, rewritten all at once as one string ("YYYY-MM-DD HH:MM:SS.ffffff" →
    "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", as datetime.isoformat drops a zero fraction)."""
    one = _sqlite_time(parse)

    def convert(column: Sequence[Any]) -> Sequence[Any]:
        present = [value for value in column if value is not None]
        try:
            text = "\n".join(present) + "\n"
        except TypeError:  # a value that is no text
            return [one(value) for value in column]
        if not present or _STORED.fullmatch(text) is None:
            return [one(value) for value in column]
        text = text.replace(" ", "T").replace(".000000\n", "\n").replace("\n", "Z\n")
        done = text.split("\n")
        if len(present) == len(column):
            return done[:-1]
        rest = iter(done)
        return [None if value is None else next(rest) for value in column]

    return convert


def _aware_times(column: Sequence[Any]) -> Sequence[Any]:
    """PostgreSQL: the driver's datetimes (aware; naive ones are UTC) as export text."""
    out: list[Any] = []
    for value in column:
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            value = iso_z(value)
        out.append(value)
    return out


class CdrValues:
    """Converts raw DBAPI rows of `select_list` (`columns`, then the keyset) into export value
    tuples in `columns` order, column by column."""

    def __init__(self, columns: Sequence[str], engine: Engine) -> None:
        dialect = engine.dialect
        self.columns = tuple(columns)
        self.select_list = tuple(calls.c[name] for name in self.columns)
        self._times: list[tuple[int, Column]] = []
        self._bools: list[int] = []
        self._lists = [i for i, name in enumerate(self.columns) if name in JSON_FIELDS]
        for i, name in enumerate(self.columns):
            column = calls.c[name]
            if name in TIME_FIELDS:
                if dialect.name == "sqlite":
                    process = column.type.dialect_impl(dialect).result_processor(dialect, None)
                    assert process is not None  # SQLite's DATETIME always parses its text
                    self._times.append((i, _sqlite_times(process)))
                else:
                    self._times.append((i, _aware_times))
            elif isinstance(column.type, Boolean):
                self._bools.append(i)

    def convert(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        del columns[-2:]  # the keyset
        for i, convert in self._times:
            columns[i] = convert(columns[i])
        for i in self._lists:
            columns[i] = [value or "[]" for value in columns[i]]
        for i in self._bools:
            columns[i] = [None if value is None else bool(value) for value in columns[i]]
        return list(zip(*columns, strict=True))


def _rows(engine: Engine, query: Any) -> list[Any]:
    """One query's rows as the DBAPI returns them (tuples), bypassing SQLAlchemy's row
    processing; the statement itself (filter, binds) is compiled and bound by SQLAlchemy."""
    with engine.connect() as conn:
        result = conn.execute(query)
        try:
            cursor = result.cursor
            return list(cursor.fetchall()) if cursor is not None else []
        finally:
            result.close()


def keyset_chunks(
    engine: Engine, where: CdrFilter, select_list: Sequence[Any], chunk: int
) -> Iterator[list[Any]]:
    """Calls matching `where`, newest first ((invite_at, id) descending), `chunk` rows (one
    short query) at a time, as raw rows of `select_list` + (invite_at, id)."""
    base = where.apply(select(*select_list, calls.c.invite_at, calls.c.id))
    order = (calls.c.invite_at.desc(), calls.c.id.desc())
    query = base
    while True:
        rows = _rows(engine, query.order_by(*order).limit(chunk))
        if not rows:
            return
        yield rows
        if len(rows) < chunk:
            return
        at, row_id = rows[-1][-2], rows[-1][-1]
        # SQLite: the stored text, compared as text (as ORDER BY compares it).
        at_type = String() if isinstance(at, str) else calls.c.invite_at.type
        key = tuple_(bindparam(None, at, type_=at_type), bindparam(None, row_id))
        query = base.where(tuple_(calls.c.invite_at, calls.c.id) < key)


def cdr_chunks(
    engine: Engine, where: CdrFilter, columns: Sequence[str], chunk: int = EXPORT_CHUNK
) -> Iterator[list[tuple[Any, ...]]]:
    """Every call matching `where`, newest first, as tuples of `columns` export values, `chunk`
    rows at a time."""
    values = CdrValues(columns, engine)
    for rows in keyset_chunks(engine, where, values.select_list, chunk):
        yield values.convert(rows)
