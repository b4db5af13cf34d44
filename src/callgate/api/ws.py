"""`/ws`: the signaling WebSocket (docs/signaling.md).

Per connection: authenticate the bearer token (query `token` or `Authorization` header), register
the device, send `hello`, then read messages with size and rate limits. Every bad message gets an
`error` reply and the connection stays usable; a closed socket ends the device's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from callgate.accounts.records import UserRecord
from callgate.api.token_watch import TokenWatch, ValidTokens
from callgate.clock import Clock
from callgate.signaling import messages as m
from callgate.signaling.hub import Device, SignalingHub
from callgate.signaling.iceconfig import IceServers
from callgate.signaling.ratelimit import MessageRateLimiter

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_MANY = 4429
MAX_DEVICE_LABEL_CHARS = 64
MAX_MESSAGE_BYTES = 65536
MAX_SDP_BYTES = 16384
REVALIDATE_SECONDS = 15.0  # how often an open socket's token is checked again
# What Starlette's `send_json` writes, with one encoder for every message: `json.dumps` with
# these options builds a new encoder per call (eight messages per call attempt).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class WsSettings:
    verify_token: Callable[[str], UserRecord | None]
    user_exists: Callable[[str], bool]
    relay_only: Callable[[UserRecord], bool]
    ice: IceServers
    clock: Clock
    max_devices_per_user: int = 10
    revalidate_seconds: float = REVALIDATE_SECONDS
    # Many tokens at once (AccountService.valid_tokens); None: `verify_token` on each.
    valid_tokens: ValidTokens | None = None

    def check_tokens(self, tokens: Collection[str]) -> set[str]:
        if self.valid_tokens is not None:
            return self.valid_tokens(tokens)
        return {token for token in tokens if self.verify_token(token) is not None}


def _token(websocket: WebSocket) -> str | None:
    token = websocket.query_params.get("token")
    if token:
        return token
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value else None


def signaling_router(hub: SignalingHub, settings: WsSettings) -> APIRouter:
    router = APIRouter()
    tokens = TokenWatch(settings.check_tokens, settings.revalidate_seconds)

    @router.websocket("/ws")
    async def signaling(websocket: WebSocket) -> None:
        token = _token(websocket) or ""
        user = await asyncio.to_thread(settings.verify_token, token) if token else None
        # Accept, then close with 4401: a browser cannot read the HTTP status of a refused
        # handshake, but it can read a close code.
        await websocket.accept()
        if user is None:
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason="invalid or expired token")
            return
        label = websocket.query_params.get("device", "")
        if len(label) > MAX_DEVICE_LABEL_CHARS or not label.isprintable():
            reason = f"device label must be at most {MAX_DEVICE_LABEL_CHARS} printable characters"
            await websocket.close(code=CLOSE_BAD_REQUEST, reason=reason)
            return
        # No await between this count and hub.connect: two sockets cannot both pass it.
        if hub.device_count(user.handle) >= settings.max_devices_per_user:
            reason = f"more than {settings.max_devices_per_user} connections for this account"
            await websocket.close(code=CLOSE_TOO_MANY, reason=reason)
            return
        await _session(websocket, user, hub, settings, token, tokens)

    return router


async def _session(
    websocket: WebSocket,
    user: UserRecord,
    hub: SignalingHub,
    settings: WsSettings,
    token: str,
    tokens: TokenWatch,
) -> None:
    relay_only = settings.relay_only(user)
    client = websocket.client
    device, effects = await hub.connect(
        user.handle,
        user.display_name,
        relay_only,
        address=client.host if client is not None else None,
        user_agent=(websocket.headers.get("user-agent") or "")[:255] or None,
    )
    writer = asyncio.create_task(_write(websocket, device), name=f"ws-writer-{device.device_id}")
    hub.send(
        device,
        m.hello_message(
            handle=user.handle,
            display_name=user.display_name,
            device_id=device.device_id,
            ice_servers=settings.ice.ice_servers(user.handle, settings.clock.wall()),
            ice_transport_policy="relay" if relay_only else "all",
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_sdp_bytes=MAX_SDP_BYTES,
        ),
    )
    await hub.apply(effects)
    limiter = MessageRateLimiter(settings.clock)

    async def revoked() -> None:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="token no longer valid")

    # Closed once its token stops being valid (revoked, expired, account disabled): a disabled
    # user loses signaling within `revalidate_seconds`, not at their next connect.
    tokens.watch(device.device_id, token, revoked)
    try:
        await _read(websocket, device, hub, settings, limiter, writer)
    finally:
        tokens.forget(device.device_id)
        await hub.disconnect(device)
        device.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 2)


async def _read(
    websocket: WebSocket,
    device: Device,
    hub: SignalingHub,
    settings: WsSettings,
    limiter: MessageRateLimiter,
    writer: asyncio.Task[None],
) -> None:
    while not writer.done():
        try:
            frame = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if frame["type"] == "websocket.disconnect":
            return
        text: str | bytes | None = frame.get("text")
        if text is None:
            text = frame.get("bytes")
        if text is None:
            continue
        if not limiter.allow():
            hub.send(device, m.error_message(None, "rate-limited", "too many messages; slow down"))
            continue
        try:
            message = m.parse_client_message(text, MAX_MESSAGE_BYTES, MAX_SDP_BYTES)
        except m.ProtocolError as exc:
            hub.send(device, m.error_message(exc.id, exc.code, exc.message))
            continue
        try:
            await hub.receive(device, message, settings.user_exists)
        except Exception:
            log.exception("signaling message from %s failed", device.device_id)
            hub.send(device, m.error_message(message.id, "server-error", "internal error"))


async def _write(websocket: WebSocket, device: Device) -> None:
    queue = device.queue
    while True:
        message: dict[str, Any] | None = await queue.get()
        if message is None:
            with contextlib.suppress(Exception):
                if device.revoked:  # deprovisioned (runtime/deprovision.py)
                    await websocket.close(code=CLOSE_UNAUTHORIZED, reason="account deprovisioned")
                else:
                    await websocket.close()
            return
        try:
            await websocket.send_text(_ENCODE(message))
        except Exception:
            return
