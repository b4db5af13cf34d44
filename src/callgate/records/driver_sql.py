"""The records writer's executemany on SQLite, through the driver's cursor.

A records batch (records/record_batch.py) sends a few statements, each with many rows: the CDR
inserts, updates and finalizes and the audit entries of every call in the batch. Through
SQLAlchemy each execution builds its context and result and runs every value of every row
through its parameter layers; here the statement is compiled once per set of keys (the same
SQL SQLAlchemy would send, with the same type conversions: `bind_processor` of each column's
type, and the scalar Python defaults of the columns a row leaves out), then each batch's rows
go to `sqlite3`'s `executemany` as tuples, in the connection's transaction (begun if none is,
as `Connection.execute` does); a driver error is raised as SQLAlchemy raises it
(`OperationalError`, `IntegrityError`…) and a value a column refuses as `StatementError`, so
callers that catch those still do. Anything this does not cover — another dialect, a
statement with a default computed per row, a non-positional parameter style — goes through
`Connection.execute` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ClauseElement

# (SQL, one (key, processor, default) per parameter in order), or None: not for this path
_Param = tuple[str, Callable[[Any], Any] | None, tuple[Any, ...]]  # default: () none, (v,) v
_Plan = tuple[str, tuple[_Param, ...]] | None
_PLANS: dict[tuple[str, str, ClauseElement, tuple[str, ...]], _Plan] = {}
_MAX_PLANS = 256  # statement shapes are few (records/cdr_sql.py); a bound all the same


def executemany(
    conn: Connection, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> None:
    """`conn.execute(statement, rows)`, on SQLite through the driver's cursor. Every row must
    have the first row's keys (as for SQLAlchemy's executemany)."""
    if not rows:
        return
    plan = _plan(conn.dialect, statement, tuple(rows[0])) if conn.dialect.name == "sqlite" else None
    if plan is None:
        conn.execute(statement, list(rows))  # type: ignore[call-overload]
        return
    sql, params = plan
    dbapi = conn.dialect.loaded_dbapi
    try:
        values = [
            tuple(
                (row[key] if not default else row.get(key, default[0]))
                if process is None
                else process(row[key] if not default else row.get(key, default[0]))
                for key, process, default in params
            )
            for row in rows
        ]
    except Exception as exc:  # a value its column refuses: SQLAlchemy's StatementError
        raise DBAPIError.instance(sql, rows, exc, dbapi.Error, dialect=conn.dialect) from exc
    if not conn.in_transaction():
        # The cursor bypasses SQLAlchemy, which would not know a transaction began: on a
        # commit-as-you-go connection `conn.commit()` would do nothing and the rows would be
        # rolled back unseen. Begin it as `Connection.execute` does (autobegin).
        conn.begin()
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, values)
    except dbapi.Error as exc:
        # as SQLAlchemy raises it (OperationalError, IntegrityError…): callers catch those
        raise DBAPIError.instance(sql, values, exc, dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


def _plan(dialect: Dialect, statement: ClauseElement, keys: tuple[str, ...]) -> _Plan:
    cache_key = (dialect.name, dialect.driver, statement, keys)
    try:
        return _PLANS[cache_key]
    except KeyError:
        pass
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    plan: _Plan = None
    defaults: dict[str, tuple[Any, ...]] = {}
    usable = compiled.positional and not compiled.update_prefetch
    for column in compiled.insert_prefetch if usable else ():
        default = column.default
        if default is None or not default.is_scalar:
            usable = False
            break
        defaults[column.key] = (default.arg,)
    # What SQLAlchemy applies to each parameter (a private attribute: without it, or with
    # another layout of it, every statement goes through `Connection.execute`).
    processors = getattr(compiled, "_bind_processors", None)
    if usable and isinstance(processors, Mapping):
        order = compiled.positiontup or []
        plan = (
            compiled.string,
            tuple((key, processors.get(key), defaults.get(key, ())) for key in order),
        )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[cache_key] = plan
    return plan
