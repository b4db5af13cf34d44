"""CSV and JSON Lines renderings of CDRs and audit entries, streamed: each function takes an
iterator of rows (CDRs: of row chunks, export_rows.py) and yields encoded chunks of about one
chunk or `batch` rows, so an export of any size holds one chunk in memory.

CSV: RFC 4180 (comma, CRLF, quotes doubled), a header line first; list fields are JSON arrays;
times ISO 8601 UTC. JSON Lines: one JSON object per line, `\\n`-terminated, UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any, Literal

from sqlalchemy import Engine

from callgate.records.audit import AuditLog
from callgate.records.audit_chain import Entry, format_time
from callgate.records.cdr_types import JSON_FIELDS, CdrRecord
from callgate.records.export_rows import cdr_chunks
from callgate.records.query import CdrFilter

Format = Literal["csv", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CDR_COLUMNS = tuple(f.name for f in fields(CdrRecord))
AUDIT_COLUMNS = ("seq", "at", "actor", "action", "object", "details", "prev_hash", "hash")
BATCH = 1000


_CDR_LISTS = tuple(name for name in CDR_COLUMNS if name in JSON_FIELDS)
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _cdr_json(values: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(CDR_COLUMNS, values, strict=True))
    for name in _CDR_LISTS:
        text = record[name]
        record[name] = json.loads(text) if text != "[]" else []
    return record


def audit_values(entry: Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": format_time(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "object": entry.object,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def _csv(rows: Iterable[list[Any]], columns: tuple[str, ...], batch: int) -> Iterator[bytes]:
    """Rows of values in `columns` order; None is written as an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % batch == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def _jsonl(
    rows: Iterable[Any], values: Callable[[Any], dict[str, Any]], batch: int
) -> Iterator[bytes]:
    lines: list[str] = []
    for row in rows:
        lines.append(_ENCODE(values(row)))
        if len(lines) >= batch:
            yield ("\n".join(lines) + "\n").encode("utf-8")
            lines.clear()
    if lines:
        yield ("\n".join(lines) + "\n").encode("utf-8")


def _audit_json(entry: Entry) -> dict[str, Any]:
    return entry.as_json()


def _audit_row(entry: Entry) -> list[Any]:
    values = audit_values(entry)
    return [values[name] for name in AUDIT_COLUMNS]


def render_cdrs(chunks: Iterable[list[tuple[Any, ...]]], fmt: Format) -> Iterator[bytes]:
    """Chunks of CDR value tuples in CDR_COLUMNS order (export_rows.cdr_chunks) as CSV or JSON
    Lines, one encoded chunk out per chunk in (the CSV header goes out with the first)."""
    if fmt == "csv":
        return _cdr_csv(chunks)
    return _cdr_jsonl(chunks)


def cdr_export_chunks(engine: Engine, where: CdrFilter) -> Iterator[list[tuple[Any, ...]]]:
    """The chunks `render_cdrs` takes for an export of the calls matching `where`."""
    return cdr_chunks(engine, where, CDR_COLUMNS)


def _cdr_csv(chunks: Iterable[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CDR_COLUMNS)
    for chunk in chunks:
        writer.writerows(chunk)
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    text = buffer.getvalue()
    if text:
        yield text.encode("utf-8")


def _cdr_jsonl(chunks: Iterable[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    for chunk in chunks:
        lines = [_ENCODE(_cdr_json(values)) for values in chunk]
        lines.append("")
        yield "\n".join(lines).encode("utf-8")


def render_audit(entries: Iterable[Entry], fmt: Format, batch: int = BATCH) -> Iterator[bytes]:
    """Audit entries as CSV (details as its stored canonical JSON) or JSON Lines (details as an
    object) — the fields and hashes `callgate audit verify` recomputes."""
    if fmt == "csv":
        return _csv(map(_audit_row, entries), AUDIT_COLUMNS, batch)
    return _jsonl(entries, _audit_json, batch)


class Counted:
    """Wraps an iterator and counts what passed through (the row count of an export): one per
    item, or `len(item)` per item when the items are chunks of rows (`chunked`)."""

    def __init__(self, rows: Iterable[Any], chunked: bool = False) -> None:
        self._rows = iter(rows)
        self._chunked = chunked
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for row in self._rows:
            self.count += len(row) if self._chunked else 1
            yield row


class AuditedExport:
    """An export and its two audit entries with `action`: `phase: "start"` (the filter and
    format), written when this is made, before the first byte — evidence even if the export is
    cut short — and `phase: "end"`, written by `end()` once, with what was really delivered:
    `rows`, `bytes`, `complete`. Iterating yields the encoded chunks; after each,
    `rows_rendered` is the number of rows in the chunks so far (the renderers write whole rows
    per chunk). `chunked`: `rows` yields chunks of rows (counted by their length).
    """

    def __init__(
        self,
        audit: AuditLog,
        actor: str,
        action: str,
        details: dict[str, Any],
        chunks: Callable[[Counted], Iterator[bytes]],
        rows: Iterable[Any],
        chunked: bool = False,
    ) -> None:
        self._audit, self._actor, self._action, self._details = audit, actor, action, details
        audit.append(actor, action, self._object, {**details, "phase": "start"})
        self._counted = Counted(rows, chunked)
        self._chunks = chunks(self._counted)
        self.rows_rendered = 0
        self._ended = False

    @property
    def _object(self) -> str:
        return str(self._details.get("object", "export"))

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.rows_rendered = self._counted.count
            yield chunk

    def end(self, rows: int, size: int, complete: bool) -> None:
        """Stop reading rows and write the end entry (only the first call does anything)."""
        if self._ended:
            return
        self._ended = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        end = {**self._details, "phase": "end", "rows": rows, "bytes": size, "complete": complete}
        self._audit.append(self._actor, self._action, self._object, end)


def audited_export(
    audit: AuditLog,
    actor: str,
    action: str,
    details: dict[str, Any],
    chunks: Callable[[Counted], Iterator[bytes]],
    rows: Iterable[Any],
    chunked: bool = False,
) -> Iterator[bytes]:
    """An AuditedExport whose end entry is written when the caller stops iterating: what was
    yielded counts as delivered (for a writer that does not lose what it was given, e.g. the
    CLI writing a file; the HTTP API counts what reached the connection instead)."""
    export = AuditedExport(audit, actor, action, details, chunks, rows, chunked)

    def stream() -> Iterator[bytes]:
        size, complete = 0, False
        try:
            for chunk in export:
                size += len(chunk)
                yield chunk
            complete = True
        finally:
            export.end(export.rows_rendered, size, complete)

    return stream()
