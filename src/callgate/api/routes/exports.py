"""Streamed exports (admin, compliance), each audited (records/export.py `AuditedExport`):

    GET /api/cdrs/export?format=csv|jsonl&party=&since=&until=&disposition=&poor=
    GET /api/audit/export?format=csv|jsonl&after_seq=&actor=&action=&object=&since=&until=

Rows are read in keyset chunks and written as they come: memory stays flat whatever the size.
The `phase: "end"` audit entry says what reached the connection (`rows`, `bytes`, `complete`)
and is written when the stream stops — at the end, or as soon as the client goes away.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from starlette.types import Send

from callgate.api.deps import ReaderDep, Services, ServicesDep
from callgate.api.routes.records import (
    DispositionQ,
    PartyQ,
    PoorQ,
    SinceQ,
    UntilQ,
    cdr_filter,
    utc,
)
from callgate.records.audit import AuditLog
from callgate.records.export import (
    MEDIA_TYPES,
    AuditedExport,
    Format,
    cdr_export_chunks,
    render_audit,
    render_cdrs,
)
from callgate.records.query import MAX_KEY, AuditFilter, RecordsQuery

router = APIRouter(prefix="/api", tags=["exports"])

FormatQ = Annotated[Format, Query(description="csv or jsonl (JSON Lines)")]
_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "the export"}
}


def audit_log(services: Services) -> AuditLog:
    if services.audit is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no audit log configured")
    return services.audit


class ExportResponse(StreamingResponse):
    """Streams an AuditedExport and ends its audit with what was handed to the connection: a
    chunk counts once `send` has taken it. Starlette cancels the stream when the client
    disconnects (http.disconnect); the end entry is then written at once, shielded from that
    cancellation, instead of when the abandoned generator is collected."""

    def __init__(self, export: AuditedExport, name: str, fmt: Format) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.export = export
        chunks = iter(export)
        # The first chunk (and so the first query) is made before the headers are sent: a
        # failure there is an error status, not a 200 whose body stops short.
        first = next(chunks, b"")
        self._first_rows = export.rows_rendered
        super().__init__(
            itertools.chain((first,), chunks),
            media_type=MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.{fmt}"'},
        )

    async def stream_response(self, send: Send) -> None:
        rows, size, complete = 0, 0, False
        first = True
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            async for chunk in self.body_iterator:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                await send({"type": "http.response.body", "body": data, "more_body": True})
                rows = self._first_rows if first else self.export.rows_rendered
                size, first = size + len(data), False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            complete = True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.export.end, rows, size, complete)


@router.get("/cdrs/export", response_class=StreamingResponse, responses=_RESPONSES)
def export_cdrs(
    reader: ReaderDep,
    services: ServicesDep,
    format: FormatQ = "csv",
    party: PartyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    disposition: DispositionQ = None,
    poor: PoorQ = None,
) -> StreamingResponse:
    """Every matching CDR, newest first; audited as `export.cdr` with the filter."""
    where = cdr_filter(reader, party, since, until, disposition, poor)
    chunks = cdr_export_chunks(services.cdrs.engine, where)
    details = {"object": "cdrs", "format": format, "filter": where.as_json()}
    export = AuditedExport(
        audit_log(services),
        reader.handle,
        "export.cdr",
        details,
        lambda counted: render_cdrs(counted, format),
        chunks,
        chunked=True,
    )
    return ExportResponse(export, "cdrs", format)


@router.get("/audit/export", response_class=StreamingResponse, responses=_RESPONSES)
def export_audit(
    reader: ReaderDep,
    services: ServicesDep,
    format: FormatQ = "jsonl",
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_KEY)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object: Annotated[str | None, Query(max_length=255)] = None,
    since: SinceQ = None,
    until: UntilQ = None,
) -> StreamingResponse:
    """Matching audit entries in chain order with their hashes; audited as `export.audit`."""
    where = AuditFilter(after_seq, actor, action, object, utc(since), utc(until))
    entries = RecordsQuery(services.cdrs.engine).iter_audit(where)
    details = {"object": "audit", "format": format, "filter": where.as_json()}
    export = AuditedExport(
        audit_log(services),
        reader.handle,
        "export.audit",
        details,
        lambda counted: render_audit(counted, format),
        entries,
    )
    return ExportResponse(export, "audit", format)
