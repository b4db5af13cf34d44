"""`SignalingClient`: the client side of docs/signaling.md over a WebSocket.

    session = await SignalingClient.login("http://127.0.0.1:8080", "alice", password)
    client = await SignalingClient.connect(session.server_url, session.token, "laptop")
    client.hello                                   # the server's first message
    ack = await client.request("call.invite", to="bob", sdp=offer)
    event = await client.next_event(timeout=30)    # call.ringing, call.incoming, call.ended, …
    await client.close()

One reader task owns the socket's receive side: replies (`ack`/`error` with an `id` we sent)
resolve the waiting `request()`, everything else goes to the event queue, in arrival order.
An application-level `ping` keeps the connection (and any proxy in between) alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from callgate.client.errors import LoginError, SignalingError
from callgate.client.session import Session

log = logging.getLogger(__name__)

UNAUTHORIZED_CLOSE = 4401
PING_INTERVAL = 15.0
REQUEST_TIMEOUT = 10.0


class SignalingChannel(Protocol):
    """What a call needs from signaling: requests answered by an ack. Test doubles implement it."""

    async def request(
        self,
        type: str,
        /,
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
        **fields: Any,
    ) -> dict[str, Any]: ...

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]: ...  # noqa: ASYNC109


def ws_url(server_url: str, token: str, device: str) -> str:
    """http(s)://host:port[/prefix] → ws(s)://host:port[/prefix]/ws?token=…&device=…"""
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise SignalingError("bad-request", f"not an http(s) server URL: {server_url!r}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit(
        (scheme, parts.netloc, path, urlencode({"token": token, "device": device}), "")
    )


class SignalingClient:
    """A connected signaling socket. Build it with `connect()`; close it with `close()`."""

    def __init__(self, ws: ClientConnection, hello: dict[str, Any], ping_interval: float) -> None:
        self.hello = hello
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed: SignalingError | None = None
        self._reader = asyncio.create_task(self._read(), name="signaling-reader")
        self._pinger = asyncio.create_task(self._ping(ping_interval), name="signaling-ping")

    # ---- sign-in and connect ----

    @staticmethod
    async def login(
        server_url: str,
        handle: str,
        password: str,
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
    ) -> Session:
        """POST /api/login; LoginError on 401 or any failure."""
        url = server_url.rstrip("/") + "/api/login"
        try:
            async with httpx.AsyncClient(timeout=timeout) as http:
                response = await http.post(url, json={"handle": handle, "password": password})
        except httpx.HTTPError as exc:
            raise LoginError(f"cannot reach {url}: {exc}") from None
        if response.status_code == 401:
            raise LoginError("invalid credentials")
        if response.status_code != 200:
            raise LoginError(f"login failed: HTTP {response.status_code} {response.text[:200]}")
        try:
            body = response.json()
        except ValueError:
            raise LoginError("login answer is not JSON") from None
        if not isinstance(body, dict):
            raise LoginError("login answer is not a JSON object")
        return Session.from_login(server_url, handle, body)

    @classmethod
    async def connect(
        cls,
        server_url: str,
        token: str,
        device: str = "python",
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
        ping_interval: float = PING_INTERVAL,
    ) -> SignalingClient:
        """Open /ws and wait for `hello`. SignalingError `unauthorized` for a refused token."""
        url = ws_url(server_url, token, device)
        try:
            ws = await ws_connect(url, open_timeout=timeout, compression=None, proxy=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = "unauthorized" if status in (401, 403) else "bad-response"
            raise SignalingError(code, f"WebSocket refused: HTTP {status}") from None
        except (OSError, InvalidURI, TimeoutError) as exc:
            raise SignalingError("closed", f"cannot connect to {server_url}: {exc}") from None
        except InvalidHandshake as exc:
            # e.g. InvalidMessage: the connection was reset before an HTTP answer, as when the
            # server's process is being killed while the kernel still accepted the connection
            raise SignalingError("closed", f"cannot connect to {server_url}: {exc}") from None
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
            hello = _decode(raw)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from None
        except TimeoutError:
            await ws.close()
            raise SignalingError("timeout", "no hello from the server") from None
        if hello.get("type") != "hello":
            await ws.close()
            raise SignalingError("bad-response", f"first message is not hello: {hello.get('type')}")
        return cls(ws, hello, ping_interval)

    # ---- requests and events ----

    async def request(
        self,
        type: str,
        /,
        *,
        timeout: float = REQUEST_TIMEOUT,  # noqa: ASYNC109
        **fields: Any,
    ) -> dict[str, Any]:
        """Send `{type, id, **fields}`; return the `ack`, raise SignalingError on `error`/timeout."""
        if self._closed is not None:
            raise self._closed
        message_id = f"c{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self._ws.send(json.dumps({"type": type, "id": message_id, **fields}))
            reply = await asyncio.wait_for(future, timeout)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from None
        except TimeoutError:
            raise SignalingError("timeout", f"no answer to {type} within {timeout} s") from None
        finally:
            self._pending.pop(message_id, None)
        if reply.get("type") == "error":
            raise SignalingError(str(reply.get("code", "error")), str(reply.get("message", "")))
        return reply

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """The next server-initiated message; TimeoutError, or SignalingError once closed."""
        if self._closed is not None and self._events.empty():
            raise self._closed
        event = await asyncio.wait_for(self._events.get(), timeout)
        if event is None:
            self._events.put_nowait(None)  # every later call sees the end too
            assert self._closed is not None
            raise self._closed
        return event

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Server events until the socket closes."""
        while True:
            try:
                yield await self.next_event()
            except SignalingError:
                return

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self) -> None:
        self._pinger.cancel()
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(asyncio.CancelledError):
            await self._pinger

    # ---- the socket's receive side ----

    async def _read(self) -> None:
        error = SignalingError("closed", "connection closed")
        try:
            async for raw in self._ws:
                try:
                    message = _decode(raw)
                except SignalingError as exc:
                    log.warning("dropping a message from the server: %s", exc)
                    continue
                self._dispatch(message)
        except ConnectionClosed as exc:
            error = _closed_error(exc)
        else:
            if self._ws.close_code == UNAUTHORIZED_CLOSE:
                error = SignalingError("unauthorized", "the server refused the token")
        finally:
            self._closed = error
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._events.put_nowait(None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        message_id = message.get("id")
        if message.get("type") in ("ack", "error") and isinstance(message_id, str):
            future = self._pending.get(message_id)
            if future is not None and not future.done():
                future.set_result(message)
                return
        self._events.put_nowait(message)

    async def _ping(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.request("ping")
            except SignalingError as exc:
                if exc.code == "closed" or self.closed:
                    return
                log.warning("keepalive ping: %s", exc)


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        raise SignalingError("bad-json", "the server sent invalid JSON") from None
    if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
        raise SignalingError("bad-response", "a server message without a type")
    return dict(message)


def _closed_error(exc: ConnectionClosed) -> SignalingError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    if code == UNAUTHORIZED_CLOSE:
        return SignalingError("unauthorized", "the server refused the token (4401)")
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    return SignalingError("closed", f"connection closed ({code} {reason})".strip())
