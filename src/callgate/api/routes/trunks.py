"""The SIP trunks and their state (docs/sip.md, "Console").

    GET /api/trunks   admin: {"sip": bool, "trunks": [...]}, each trunk's settings (no secret)
                      and state now (sip/trunk_status.py); others get 403, audited

Built by `trunks_router()` around a function returning the trunks' state (None: this server
has no SIP edge).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, status

from callgate.api.deps import UserDep
from callgate.records.audit import AuditLog

TrunkStatus = Callable[[], list[dict[str, Any]]]


def trunks_router(state: TrunkStatus | None, audit: AuditLog) -> APIRouter:
    router = APIRouter(prefix="/api/trunks", tags=["sip"])

    @router.get("")
    async def list_trunks(user: UserDep) -> dict[str, Any]:
        if user.role != "admin":
            await asyncio.to_thread(
                audit.append, user.handle, "sip.trunks.access_denied", "trunks", {"role": user.role}
            )
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admins only")
        return {"sip": state is not None, "trunks": state() if state is not None else []}

    return router
