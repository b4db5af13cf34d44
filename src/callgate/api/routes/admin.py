"""Audit log, live calls, retention and statistics (docs/admin-api.md).

GET  /api/audit/entries            admin, compliance: filtered, paginated (seq order)
GET  /api/audit/checkpoints        admin, compliance
POST /api/audit/checkpoints        admin: sign (size, head hash) now
POST /api/audit/verify             admin, compliance: recompute the chain, check signatures
GET  /api/live-calls               admin, compliance
POST /api/live-calls/{id}/end      admin → 202; the parties hear `ended-by-admin`
GET  /api/retention, PUT (admin)   days per record class
POST /api/retention/purge          admin: delete what is past retention and not held
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from callgate.api.deps import AdminDep, ReaderDep, ServicesDep
from callgate.api.routes.exports import audit_log
from callgate.api.routes.records import CursorQ, LimitQ, SinceQ, UntilQ, bad_cursor, utc
from callgate.api.schemas_records import (
    AuditEntryOut,
    AuditPage,
    CheckpointOut,
    CheckpointsOut,
    EndCallOut,
    LiveCallOut,
    LiveCallsOut,
    PurgeOut,
    RetentionBody,
    VerifyOut,
)
from callgate.records.audit import StoredCheckpoint, load_or_create_signing_key, load_public_key
from callgate.records.query import MAX_KEY, AuditFilter, BadCursor, RecordsQuery, audit_entry
from callgate.records.retention import Retention

router = APIRouter(prefix="/api", tags=["admin"])


def _checkpoint(cp: StoredCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        id=cp.id,
        size=cp.size,
        head_hash=cp.head_hash,
        key_id=cp.key_id,
        created_at=cp.created_at,
        note=cp.note,
    )


@router.get("/audit/entries")
def audit_entries(
    reader: ReaderDep,
    services: ServicesDep,
    after_seq: Annotated[int | None, Query(ge=0, le=MAX_KEY)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object: Annotated[str | None, Query(max_length=255)] = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: LimitQ = 100,
    cursor: CursorQ = None,
) -> AuditPage:
    """Entries in chain order (oldest first), with their hashes."""
    where = AuditFilter(after_seq, actor, action, object, utc(since), utc(until))
    try:
        page = RecordsQuery(services.cdrs.engine).audit_page(where, limit, cursor)
    except BadCursor as exc:
        raise bad_cursor(exc) from None
    items = [AuditEntryOut.of(audit_entry(row)) for row in page.rows]
    return AuditPage(items=items, next_cursor=page.next_cursor)


@router.get("/audit/checkpoints")
def list_checkpoints(reader: ReaderDep, services: ServicesDep) -> CheckpointsOut:
    return CheckpointsOut(checkpoints=[_checkpoint(c) for c in audit_log(services).checkpoints()])


@router.post("/audit/checkpoints", status_code=status.HTTP_201_CREATED)
def make_checkpoint(admin: AdminDep, services: ServicesDep) -> CheckpointOut:
    """Sign the log's current (size, head hash) with the server's audit key."""
    log = audit_log(services)
    if services.audit_key is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no audit signing key")
    checkpoint = log.checkpoint(load_or_create_signing_key(services.audit_key))
    return _checkpoint(checkpoint)


@router.post("/audit/verify")
def verify_audit(reader: ReaderDep, services: ServicesDep) -> VerifyOut:
    """Recompute the whole chain and check every stored checkpoint's signature and head."""
    log = audit_log(services)
    path = services.audit_key
    key = load_public_key(path) if path is not None and path.exists() else None
    started = time.perf_counter()
    result = log.verify(key)
    seconds = round(time.perf_counter() - started, 3)
    message = "audit log intact" if result.ok else (result.problem or "audit log is broken")
    log.append(
        reader.handle,
        "audit.verify",
        "audit",
        {"ok": result.ok, "entries": result.size, "first_bad_seq": result.first_bad_seq},
    )
    return VerifyOut(
        ok=result.ok,
        entries=result.size,
        checkpoints=result.checkpoints,
        first_bad_seq=result.first_bad_seq,
        message=message,
        seconds=seconds,
    )


@router.get("/live-calls")
def live_calls(reader: ReaderDep, services: ServicesDep) -> LiveCallsOut:
    """Calls ringing or in progress on this server, oldest first."""
    calls = services.live.live_calls() if services.live is not None else []
    return LiveCallsOut(calls=[LiveCallOut.model_validate(call) for call in calls])


@router.post("/live-calls/{call_id}/end", status_code=status.HTTP_202_ACCEPTED)
async def end_live_call(call_id: str, admin: AdminDep, services: ServicesDep) -> EndCallOut:
    """End a live call: both parties get `call.ended` `ended-by-admin`; the CDR's ended_by is
    `admin:<handle>` and `call.end_by_admin` is audited with it."""
    if services.live is None or not await services.live.end_call(call_id, admin.handle):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no live call {call_id[:64]!r}")
    return EndCallOut(call_id=call_id, ended=True)


def _retention(days: dict[str, int | None]) -> RetentionBody:
    return RetentionBody(
        cdr_days=days["cdr"], quality_days=days["quality"], audit_days=days["audit"]
    )


@router.get("/retention")
def get_retention(reader: ReaderDep, services: ServicesDep) -> RetentionBody:
    return _retention(Retention(services.cdrs.engine).settings())


@router.put("/retention")
def put_retention(body: RetentionBody, admin: AdminDep, services: ServicesDep) -> RetentionBody:
    """Replace the settings (a class left out or null is kept forever); audited."""
    days = {"cdr": body.cdr_days, "quality": body.quality_days, "audit": body.audit_days}
    return _retention(Retention(services.cdrs.engine).set_settings(days, admin.handle))


@router.post("/retention/purge")
def purge(admin: AdminDep, services: ServicesDep) -> PurgeOut:
    """Delete records past retention, never held ones; counts and ranges are audited."""
    result = Retention(services.cdrs.engine, services.audit_key).purge(admin.handle)
    return PurgeOut(
        cdr=result.cdr,
        quality=result.quality,
        audit=result.audit,
        held_calls_kept=result.held_calls_kept,
    )
