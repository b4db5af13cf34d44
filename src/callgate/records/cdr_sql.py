"""The `calls` table's write statements, built once, and the checks on what is written.

Built once, SQLAlchemy reuses their compiled form instead of rebuilding a cache key per call
(the records writer runs several per call attempt: records/cdr.py one by one, records/cdr_batch.py
many at once).
"""

from __future__ import annotations

import json
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, insert, update

from callgate.records.cdr_types import DISPOSITIONS, ENDED_BY, JSON_FIELDS, UPDATABLE
from callgate.storage.models import Call
from callgate.storage.text import storable

calls = cast(Table, Call.__table__)

FINALIZE = (
    update(calls)
    .where(calls.c.call_id == bindparam("b_id"), calls.c.end_at.is_(None))
    .values(
        end_at=bindparam("b_end_at"),
        disposition=bindparam("b_disposition"),
        ended_by=bindparam("b_ended_by"),
        reason=bindparam("b_reason"),
        duration_s=bindparam("b_duration_s"),
        end_detail=bindparam("b_end_detail"),
        updated_at=bindparam("b_updated_at"),
    )
)
INSERT_CALLS = insert(calls).inline()  # no RETURNING of the new id: nobody reads it
SET_AUDIT_INDEX = (
    update(calls).where(calls.c.call_id == bindparam("b_id")).values(audit_index=bindparam("b_seq"))
)


# Several nodes (docs/scaling.md): a repository with a node id writes only the rows its node
# owns, so a node that lost a call to another (it was thought dead) cannot touch its record.
FINALIZE_OWNED = FINALIZE.where(calls.c.node_id == bindparam("b_node"))
_UPDATES: dict[tuple[tuple[str, ...], bool], Update] = {}


def update_statement(columns: tuple[str, ...], owned: bool) -> Update:
    statement = _UPDATES.get((columns, owned))
    if statement is None:
        statement = (
            update(calls)
            .where(calls.c.call_id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in columns})
        )
        if owned:
            statement = statement.where(calls.c.node_id == bindparam("b_node"))
        _UPDATES[(columns, owned)] = statement
    return statement


def cdr_values(changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not CDR fields: {', '.join(sorted(unknown))}")
    values = {name: storable(value) for name, value in changes.items()}
    for name in JSON_FIELDS & set(values):
        if values[name] is not None and not isinstance(values[name], str):
            values[name] = json.dumps(list(values[name]))
    return values


def check_end(disposition: str, ended_by: str) -> None:
    if disposition not in DISPOSITIONS:
        raise ValueError(f"unknown disposition {disposition!r}")
    if ended_by not in ENDED_BY and not ended_by.startswith("admin:"):
        raise ValueError(f"ended_by must be one of {', '.join(ENDED_BY)} or admin:<handle>")
