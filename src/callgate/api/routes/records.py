"""Call records: CDRs, quality rows and relay sessions, filtered and paginated.

    GET /api/cdrs                       any role; the user role sees only calls it is a party of
    GET /api/cdrs/{call_id}             the CDR, its quality rows, relay sessions and audit events
    PUT /api/cdrs/{call_id}/legal-hold  admin: {hold}
    GET /api/quality                    admin, compliance
    GET /api/relay-sessions             admin, compliance

Listings answer {"items": [...], "next_cursor": str | null}; pass `cursor` back for the next
page (records/query.py). A bad cursor → 422; an unknown call (or another user's) → 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from callgate.accounts.handles import normal_handle
from callgate.api.deps import READERS, AdminDep, ReaderDep, ServicesDep, UserDep
from callgate.api.party_view import call_view, events_view, sessions_view
from callgate.api.schemas import HoldRequest
from callgate.api.schemas_records import (
    AuditEntryOut,
    CdrDetail,
    CdrOut,
    CdrPage,
    HoldOut,
    QualityOut,
    QualityPage,
    RelaySessionOut,
    RelaySessionPage,
)
from callgate.records.cdr import cdr_record
from callgate.records.query import BadCursor, CdrFilter, RecordsQuery, RowFilter
from callgate.records.retention import Retention

router = APIRouter(prefix="/api", tags=["records"])

Disposition = Literal["answered", "no-answer", "busy", "rejected", "denied", "failed", "cancelled"]
PartyQ = Annotated[str | None, Query(max_length=64, description="caller or callee handle")]
SinceQ = Annotated[datetime | None, Query(description="ISO 8601, inclusive (UTC if no offset)")]
UntilQ = Annotated[datetime | None, Query(description="ISO 8601, exclusive (UTC if no offset)")]
DispositionQ = Annotated[Disposition | None, Query()]
PoorQ = Annotated[bool | None, Query(description="true: some stream poor; false: none poor")]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
CursorQ = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]


def utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # no offset given: UTC
    return value


def bad_cursor(exc: BadCursor) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


def cdr_out(row: object) -> CdrOut:
    return CdrOut.model_validate(cdr_record(row), from_attributes=True)


def cdr_filter(
    user: UserDep,
    party: PartyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    disposition: DispositionQ = None,
    poor: PoorQ = None,
) -> CdrFilter:
    """The filter of a CDR listing or export; the user role only ever sees its own calls."""
    return CdrFilter(
        party=None if party is None else normal_handle(party),
        since=utc(since),
        until=utc(until),
        disposition=disposition,
        poor=poor,
        visible_to=None if user.role in READERS else user.handle,
    )


@router.get("/cdrs")
def list_cdrs(
    user: UserDep,
    services: ServicesDep,
    party: PartyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    disposition: DispositionQ = None,
    poor: PoorQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> CdrPage:
    """Newest first."""
    where = cdr_filter(user, party, since, until, disposition, poor)
    try:
        page = RecordsQuery(services.cdrs.engine).cdr_page(where, limit, cursor)
    except BadCursor as exc:
        raise bad_cursor(exc) from None
    items = [call_view(user, cdr_out(row)) for row in page.rows]
    return CdrPage(items=items, next_cursor=page.next_cursor)


@router.get("/cdrs/{call_id}")
def get_cdr(call_id: str, user: UserDep, services: ServicesDep) -> CdrDetail:
    """One call with its quality rows, the relay sessions linked to it and its audit events."""
    query = RecordsQuery(services.cdrs.engine)
    row = query.cdr_row(call_id)
    mine = row is not None and user.handle in (row.caller_user, row.callee_user)
    if row is None or (user.role not in READERS and not mine):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no call {call_id[:64]!r}")
    cdr = cdr_out(row)
    sessions = [RelaySessionOut.of(r) for r in query.call_relay_sessions(cdr.relay_allocation_ids)]
    events = [AuditEntryOut.of(e) for e in query.call_events(call_id)]
    return CdrDetail(
        cdr=call_view(user, cdr),
        quality=[QualityOut.of(q) for q in query.call_quality(call_id)],
        relay_sessions=sessions_view(user, cdr, sessions),
        events=events_view(user, cdr, events),
    )


@router.put("/cdrs/{call_id}/legal-hold")
def hold_cdr(call_id: str, body: HoldRequest, admin: AdminDep, services: ServicesDep) -> HoldOut:
    """Keep this call's record, quality rows and audit events past retention (audited)."""
    if not Retention(services.cdrs.engine).hold_call(call_id, body.hold, admin.handle):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no call {call_id[:64]!r}")
    return HoldOut(call_id=call_id, legal_hold=body.hold)


@router.get("/quality")
def list_quality(
    reader: ReaderDep,
    services: ServicesDep,
    call_id: Annotated[str | None, Query(max_length=64)] = None,
    since: SinceQ = None,
    until: UntilQ = None,
    poor: PoorQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> QualityPage:
    """Quality rows (one per call, reporter, direction and kind), newest first."""
    where = RowFilter(call_id=call_id, since=utc(since), until=utc(until), poor=poor)
    try:
        page = RecordsQuery(services.cdrs.engine).quality_page(where, limit, cursor)
    except BadCursor as exc:
        raise bad_cursor(exc) from None
    return QualityPage(items=[QualityOut.of(r) for r in page.rows], next_cursor=page.next_cursor)


@router.get("/relay-sessions")
def list_relay_sessions(
    reader: ReaderDep,
    services: ServicesDep,
    user: Annotated[str | None, Query(max_length=64, description="the account")] = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> RelaySessionPage:
    """TURN allocations, newest first."""
    where = RowFilter(user=user, since=utc(since), until=utc(until))
    try:
        page = RecordsQuery(services.cdrs.engine).relay_page(where, limit, cursor)
    except BadCursor as exc:
        raise bad_cursor(exc) from None
    items = [RelaySessionOut.of(r) for r in page.rows]
    return RelaySessionPage(items=items, next_cursor=page.next_cursor)
