"""Call records: GET /api/calls — your own calls; admin and compliance see everyone's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from callgate.api.deps import READERS, ServicesDep, UserDep
from callgate.api.party_view import call_view
from callgate.api.schemas import CallOut, CallsResponse

router = APIRouter(prefix="/api", tags=["calls"])


@router.get("/calls")
def list_calls(
    user: UserDep,
    services: ServicesDep,
    since: Annotated[datetime | None, Query(description="ISO 8601; calls invited since")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CallsResponse:
    """Newest first."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # no offset given: UTC
    only = None if user.role in READERS else user.handle
    records = services.cdrs.list(since=since, limit=limit, user=only)
    return CallsResponse(
        calls=[call_view(user, CallOut.model_validate(record)) for record in records]
    )
