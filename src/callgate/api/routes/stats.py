"""Dashboard figures: GET /api/stats/summary (admin, compliance) and GET /api/relays (admin).

Summary over the last `hours` (1-168), per UTC hour: calls answered, denied (by policy) and
failed (every other ended call: no answer, busy, rejected, cancelled, failed); `poor_rate` is
the share of answered calls with at least one stream classified poor (null without answered
calls); relay bytes per hour sum the relay sessions started in that hour.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Annotated, cast

from fastapi import APIRouter, Query
from sqlalchemy import Table, exists, select

from callgate.api.deps import AdminDep, ReaderDep, ServicesDep
from callgate.api.schemas_records import (
    HourBytes,
    HourCalls,
    RelayOut,
    RelaysOut,
    StatsSummary,
)
from callgate.storage.models import Call, CallQuality, RelaySession, utcnow

router = APIRouter(prefix="/api", tags=["stats"])

calls = cast(Table, Call.__table__)
quality = cast(Table, CallQuality.__table__)
relay_sessions = cast(Table, RelaySession.__table__)


def _hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


@router.get("/stats/summary")
def summary(
    reader: ReaderDep,
    services: ServicesDep,
    hours: Annotated[int, Query(ge=1, le=168)] = 24,
) -> StatsSummary:
    now = utcnow()
    first = _hour(now) - timedelta(hours=hours - 1)
    slots = [first + timedelta(hours=i) for i in range(hours)]
    poor = exists().where(quality.c.call_id == calls.c.call_id, quality.c.classification == "poor")
    counts: Counter[tuple[datetime, str]] = Counter()
    answered_poor = 0
    relay_bytes: Counter[datetime] = Counter()
    with services.cdrs.engine.connect() as conn:
        rows = conn.execute(
            select(calls.c.invite_at, calls.c.disposition, poor.label("poor")).where(
                calls.c.invite_at >= first, calls.c.disposition.is_not(None)
            )
        )
        for invite_at, disposition, is_poor in rows:
            kind = disposition if disposition in ("answered", "denied") else "failed"
            counts[(_hour(invite_at), kind)] += 1
            answered_poor += bool(is_poor) and kind == "answered"
        traffic = conn.execute(
            select(
                relay_sessions.c.started_at,
                relay_sessions.c.bytes_to_peer + relay_sessions.c.bytes_to_client,
            ).where(relay_sessions.c.started_at >= first)
        )
        for started_at, total in traffic:
            relay_bytes[_hour(started_at)] += int(total or 0)
    per_hour = [
        HourCalls(
            hour=h,
            answered=counts[(h, "answered")],
            failed=counts[(h, "failed")],
            denied=counts[(h, "denied")],
        )
        for h in slots
    ]
    answered = sum(h.answered for h in per_hour)
    return StatsSummary(
        hours=hours,
        calls_per_hour=per_hour,
        answered=answered,
        failed=sum(h.failed for h in per_hour),
        denied=sum(h.denied for h in per_hour),
        poor_rate=round(answered_poor / answered, 4) if answered else None,
        relay_bytes_per_hour=[HourBytes(hour=h, bytes=relay_bytes[h]) for h in slots],
        live_calls=len(services.live.live_calls()) if services.live is not None else 0,
    )


@router.get("/relays")
def relays(admin: AdminDep, services: ServicesDep) -> RelaysOut:
    """The TURN relays running in this process, with their live counters."""
    found = services.relays() if services.relays is not None else []
    return RelaysOut(relays=[RelayOut.model_validate(r) for r in found])
