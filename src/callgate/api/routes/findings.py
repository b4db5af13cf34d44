"""Unmanaged calling found by the monitor inside `serve` (docs/detection.md, "Inside serve").

    GET /api/findings?limit=&unsanctioned=   admin, security: the monitor's state and the
                                             findings seen most recently first
    GET /api/findings/nftables               admin, security: an nftables ruleset dropping the
                                             unsanctioned peers and relays found (audited)

Anyone else signed in gets 403, and the refusal is written to the audit log. Built by
`findings_router()` around the findings table, the running monitor's status and what a block
list must spare (our own relays, internal addresses).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status

from callgate.api.deps import UserDep
from callgate.records.audit import AuditLog
from callgate.records.findings import FindingRepository

if TYPE_CHECKING:
    from callgate.detect.nftables import Address  # the detection engine: loaded for the ruleset

SEES_FINDINGS = frozenset({"admin", "security"})


def findings_router(
    repository: FindingRepository,
    monitor_status: Callable[[], dict[str, Any]],
    audit: AuditLog,
    allowed: Iterable[Address] = (),
    internal: Callable[[Address], bool] = lambda address: address.is_private,
) -> APIRouter:
    router = APIRouter(prefix="/api/findings", tags=["detection"])
    spared = frozenset(allowed)

    async def authorize(user: UserDep, what: str) -> None:
        if user.role not in SEES_FINDINGS:
            await asyncio.to_thread(
                audit.append, user.handle, "detect.access_denied", what, {"role": user.role}
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="security officers and admins only"
            )

    @router.get("")
    async def list_findings(
        user: UserDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        unsanctioned: bool = False,
    ) -> dict[str, Any]:
        await authorize(user, "findings")
        rows = await asyncio.to_thread(repository.recent, limit, unsanctioned)
        return {"monitor": monitor_status(), "findings": [row.as_json() for row in rows]}

    @router.get(
        "/nftables",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "an nftables ruleset"}},
    )
    async def block_list(user: UserDep) -> Response:
        await authorize(user, "findings/nftables")
        targets = await asyncio.to_thread(repository.block_targets)
        from callgate.detect.nftables import findings_ruleset

        text = findings_ruleset(targets, spared, internal)
        details = {"findings": len(targets)}
        await asyncio.to_thread(audit.append, user.handle, "detect.nftables", "findings", details)
        disposition = 'attachment; filename="callgate-block.nft"'
        return Response(text, media_type="text/plain; charset=utf-8",
                        headers={"Content-Disposition": disposition})  # fmt: skip

    return router
