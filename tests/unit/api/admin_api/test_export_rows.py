"""The export's fast row path (records/export_rows.py: raw DBAPI rows, chunked keyset) writes
exactly what SQLAlchemy's typed rows give, on each backend: same rows, order, time format, NULLs,
list fields and booleans — across chunk boundaries, ties in invite_at included."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from callgate.records.export import CDR_COLUMNS, render_cdrs
from callgate.records.export_rows import cdr_chunks
from callgate.records.query import CdrFilter, calls
from callgate.storage.db import Store, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ODD_TEXT = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\r\nlf", "ünï ☎", "", None]
LISTS = [None, "", "[]", '["10.0.0.1:3478", "ä\\"x"]']


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    rows = []
    for i in range(23):
        invite = T0 + timedelta(seconds=i // 3, microseconds=0 if i % 2 else 1000 * i + 7)
        rows.append(
            {
                "call_id": f"c{i:04d}",
                "caller_user": ("alice", "bob", "carol")[i % 3],
                "callee_user": ("bob", "dave")[i % 2],
                "caller_user_agent": ODD_TEXT[i % len(ODD_TEXT)],
                "end_detail": ODD_TEXT[(i + 3) % len(ODD_TEXT)],
                "invite_at": invite,  # three calls a second: ties on invite_at
                "ring_at": None if i % 4 == 0 else invite + timedelta(seconds=1),
                "answer_at": invite + timedelta(seconds=2, microseconds=i) if i % 3 else None,
                "end_at": invite + timedelta(minutes=1),
                "duration_s": (None, 0.0, 58.25, 1e-07)[i % 4],
                "disposition": ("answered", "busy", None)[i % 3],
                "relay_candidates": LISTS[i % 4],
                "relay_allocation_ids": LISTS[(i + 1) % 4],
                "recording_ids": LISTS[(i + 2) % 4],
                "relay_bytes": (None, 0, 2**40)[i % 3],
                "recording_required": (None, True, False)[i % 3],
                "legal_hold": i % 2 == 0,
                "updated_at": invite + timedelta(minutes=2),
            }
        )
    with opened.engine.begin() as conn:
        conn.execute(insert(calls), rows)
    yield opened
    opened.close()


def _expected(store: Store, where: CdrFilter) -> list[list[Any]]:
    """What the export must hold, from SQLAlchemy's typed rows (the old, slow path)."""
    query = where.apply(select(calls)).order_by(calls.c.invite_at.desc(), calls.c.id.desc())
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    out = []
    for row in rows:
        values = []
        for name in CDR_COLUMNS:
            value = row[name]
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif name in {"relay_candidates", "relay_allocation_ids", "recording_ids"}:
                value = value or "[]"
            values.append(value)
        out.append(values)
    return out


def _export(store: Store, where: CdrFilter, fmt: Any, chunk: int) -> bytes:
    return b"".join(render_cdrs(cdr_chunks(store.engine, where, CDR_COLUMNS, chunk), fmt))


FILTERS = [
    CdrFilter(),
    CdrFilter(party="bob", disposition="answered"),
    CdrFilter(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=5)),
    CdrFilter(visible_to="alice", poor=False),
    CdrFilter(party="nobody"),
]


@pytest.mark.parametrize("where", FILTERS)
def test_csv_matches_typed_rows(store: Store, where: CdrFilter) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CDR_COLUMNS)
    writer.writerows(_expected(store, where))
    expected = buffer.getvalue().encode()
    for chunk in (2, 3, 5000):  # page boundaries inside runs of equal invite_at
        assert _export(store, where, "csv", chunk) == expected


def test_jsonl_matches_typed_rows(store: Store) -> None:
    expected = []
    for values in _expected(store, CdrFilter()):
        record = dict(zip(CDR_COLUMNS, values, strict=True))
        for name in ("relay_candidates", "relay_allocation_ids", "recording_ids"):
            record[name] = json.loads(record[name])
        expected.append(record)
    lines = _export(store, CdrFilter(), "jsonl", 4).decode().splitlines()
    assert [json.loads(line) for line in lines] == expected
    first = json.loads(lines[0])  # newest: c0022; booleans as JSON booleans, not 0/1
    assert first["call_id"] == "c0022" and first["legal_hold"] is True
    assert first["recording_required"] is True and first["relay_candidates"] == []


def test_sqlite_time_in_another_stored_form(tmp_path: Any) -> None:
    """A time SQLite holds in a form SQLAlchemy did not write (no fraction) still comes out as
    SQLAlchemy reads it."""
    from callgate.storage.db import sqlite_url

    store = open_store(sqlite_url(tmp_path))
    row = {"call_id": "x1", "caller_user": "a", "callee_user": "b", "invite_at": T0}
    with store.engine.begin() as conn:
        conn.execute(insert(calls), [row, {**row, "call_id": "x2"}])
        conn.execute(text("UPDATE calls SET end_at = '2026-03-01 12:00:09' WHERE call_id = 'x1'"))
    lines = _export(store, CdrFilter(), "jsonl", 5000).decode().splitlines()
    store.close()
    assert [json.loads(line)["end_at"] for line in lines] == [None, "2026-03-01T12:00:09Z"]
