"""`GET /api/directory`: colleagues and their presence, for the softphone's contact list.

Any signed-in user may read it: handle, display name and presence only (online, in a call,
offline), from the signaling hub's connected devices. Disabled accounts are left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Literal, cast

from fastapi import APIRouter
from pydantic import BaseModel

from callgate.api.deps import ServicesDep, UserDep
from callgate.signaling.hub import SignalingHub

Presence = Literal["online", "in-call", "offline"]


class Colleague(BaseModel):
    handle: str
    display_name: str
    presence: Presence


class DirectoryResponse(BaseModel):
    users: list[Colleague]


def presence_by_handle(
    devices: Iterable[tuple[str, str]], call_of: Callable[[str], str | None]
) -> dict[str, Presence]:
    """Presence per handle from connected (device_id, handle) pairs: a user is in a call when
    any of their devices rings for or carries one, online when connected, else absent."""
    result: dict[str, Presence] = {}
    for device_id, handle in devices:
        if call_of(device_id) is not None:
            result[handle] = "in-call"
        else:
            result.setdefault(handle, "online")
    return result


def directory_router(
    hub: SignalingHub,
    other_devices: Callable[[], Iterable[tuple[str, str]]] | None = None,
    elsewhere: Callable[[], dict[str, str]] | None = None,
) -> APIRouter:
    """`other_devices`: more (device id, handle) pairs that count as online, e.g. registered SIP
    phones (callgate.sip); `elsewhere`: presence on the other signaling nodes (several nodes),
    merged in."""
    router = APIRouter(prefix="/api", tags=["directory"])

    @router.get("/directory")
    async def directory(user: UserDep, services: ServicesDep) -> DirectoryResponse:
        # On the event loop: the hub is not thread-safe.
        devices = [(d.device_id, d.handle) for d in hub.devices.values()]
        if other_devices is not None:
            devices += other_devices()
        present = presence_by_handle(devices, hub.engine.call_of)
        for handle, state in (elsewhere() if elsewhere is not None else {}).items():
            if state in ("online", "in-call") and present.get(handle) != "in-call":
                present[handle] = cast(Presence, state)
        accounts = await asyncio.to_thread(services.accounts.list_users)
        colleagues = [
            Colleague(
                handle=account.handle,
                display_name=account.display_name,
                presence=present.get(account.handle, "offline"),
            )
            for account in accounts
            if not account.disabled and account.handle != user.handle
        ]
        return DirectoryResponse(users=colleagues)

    return router
