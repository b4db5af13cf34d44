"""Unmanaged calling found by the monitor inside `serve` (docs/detection.md, "Inside serve").

    GET /api/findings?limit=&unsanctioned=   admin, security: the monitor's state and the
                                             findings seen most recently first

Anyone else signed in gets 403, and the refusal is written to the audit log. Built by
`findings_router()` around the findings table and the running monitor's status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from callgate.api.deps import UserDep
from callgate.records.audit import AuditLog
from callgate.records.findings import FindingRepository

SEES_FINDINGS = frozenset({"admin", "security"})


def findings_router(
    repository: FindingRepository, monitor_status: Callable[[], dict[str, Any]], audit: AuditLog
) -> APIRouter:
    router = APIRouter(prefix="/api/findings", tags=["detection"])

    @router.get("")
    async def list_findings(
        user: UserDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        unsanctioned: bool = False,
    ) -> dict[str, Any]:
        if user.role not in SEES_FINDINGS:
            await asyncio.to_thread(
                audit.append, user.handle, "detect.access_denied", "findings", {"role": user.role}
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="security officers and admins only"
            )
        rows = await asyncio.to_thread(repository.recent, limit, unsanctioned)
        return {"monitor": monitor_status(), "findings": [row.as_json() for row in rows]}

    return router
