"""The separate relays registered in the cluster (docs/scaling.md, "Separate relays"), admin only:

GET  /api/relays/registered           the live registrations: region, addresses, load, draining
POST /api/relays/{relay_id}/drain     202: the relay refuses new allocations, lets its calls
                                      finish, then exits (audited relay.drain); 404 if unknown;
                                      503 while Redis is unreachable
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel

from callgate.api.deps import AdminDep
from callgate.records.audit import AuditLog
from callgate.signaling.relay_choice import RelayInfo


class RegisteredRelayOut(BaseModel):
    id: str
    region: str
    udp: list[str]
    load: int
    draining: bool


class RegisteredRelaysOut(BaseModel):
    relays: list[RegisteredRelayOut]


class DrainOut(BaseModel):
    id: str
    draining: bool


def _out(info: RelayInfo) -> RegisteredRelayOut:
    udp = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in info.udp]
    return RegisteredRelayOut(
        id=info.relay_id, region=info.region, udp=udp, load=info.load, draining=info.draining
    )


def relay_registry_router(
    relays: Callable[[], list[RelayInfo]],
    drain: Callable[[str], Awaitable[RelayInfo | None]],
    audit: AuditLog,
) -> APIRouter:
    """`relays`: the live registrations (a beat old); `drain`: ask one to drain (RedisError or
    OSError while Redis is down)."""
    router = APIRouter(prefix="/api/relays", tags=["relays"])

    @router.get("/registered")
    def registered(admin: AdminDep) -> RegisteredRelaysOut:
        return RegisteredRelaysOut(relays=[_out(info) for info in relays()])

    @router.post("/{relay_id}/drain", status_code=status.HTTP_202_ACCEPTED)
    async def drain_relay(
        admin: AdminDep,
        relay_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"),
    ) -> DrainOut:
        from redis.exceptions import RedisError  # here: a node without Redis never loads it

        try:
            info = await drain(relay_id)
        except (RedisError, OSError) as exc:  # Redis unreachable: nothing was asked
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, detail="the cluster bus (Redis) is unreachable"
            ) from exc
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no live relay {relay_id!r}")
        details: dict[str, Any] = {"region": info.region, "load": info.load}
        await asyncio.to_thread(audit.append, admin.handle, "relay.drain", f"relay:{relay_id}",
                                details)  # fmt: skip
        return DrainOut(id=relay_id, draining=True)

    return router
