"""Streamed exports (admin, compliance), each audited (records/export.py `audited_export`):

    GET /api/cdrs/export?format=csv|jsonl&party=&since=&until=&disposition=&poor=
    GET /api/audit/export?format=csv|jsonl&after_seq=&actor=&action=&object=&since=&until=

Rows are read in keyset chunks and written as they come: memory stays flat whatever the size.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

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
    Format,
    audited_export,
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


def _attachment(stream: Iterator[bytes], name: str, fmt: Format) -> StreamingResponse:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # The first chunk (and so the first query) is made before the headers are sent: a failure
    # there is an error status, not a 200 whose body stops short.
    first = next(stream, b"")
    return StreamingResponse(
        itertools.chain((first,), stream),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.{fmt}"'},
    )


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
    stream = audited_export(
        audit_log(services),
        reader.handle,
        "export.cdr",
        details,
        lambda counted: render_cdrs(counted, format),
        chunks,
        chunked=True,
    )
    return _attachment(stream, "cdrs", format)


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
    stream = audited_export(
        audit_log(services),
        reader.handle,
        "export.audit",
        details,
        lambda counted: render_audit(counted, format),
        entries,
    )
    return _attachment(stream, "audit", format)
