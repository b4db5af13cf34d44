"""HTTP connection limits uvicorn does not have by itself (issue 12 item 9).

uvicorn (h11) times out only idle keep-alive connections: a client that sends half a request and
stops holds its connection forever. `guarded_h11` is uvicorn's own h11 protocol with a header
read timeout: whenever the server is waiting for a request's head — from the moment a connection
is made, and again when a keep-alive connection starts a new request — the head must be complete
within `header_timeout_s`, or the connection is closed.

A head is at most MAX_HEADER_BYTES and MAX_HEADER_FIELDS fields. h11 enforces the size only
while a head is incomplete (uvicorn's `h11_max_incomplete_event_size`: 400), so a large head that
arrives in one read is caught by `HeaderLimitMiddleware` (431), which also counts the fields.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class _GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watch()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """A timer runs exactly while a request's head is incomplete (h11: their state IDLE
        with bytes or a fresh connection); it stops once the head has arrived."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)
        elif not waiting:
            self._stop_watch()

    def _stop_watch(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head did not arrive in time")
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle keep-alive is uvicorn's timeout; a head started later is watched on data_received.
        self._stop_watch()


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a request-head read timeout (`uvicorn.Config(http=…)`)."""
    return type(
        "GuardedH11Protocol", (_GuardedH11Protocol,), {"header_timeout_s": header_timeout_s}
    )


MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100  # browsers send about 20


def _head_problem(scope: Scope) -> str | None:
    headers = scope["headers"]
    if len(headers) > MAX_HEADER_FIELDS:
        return f"more than {MAX_HEADER_FIELDS} header fields"
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    size += sum(len(name) + len(value) + 4 for name, value in headers)
    if size > MAX_HEADER_BYTES:
        return f"the request head is over {MAX_HEADER_BYTES} bytes"
    return None


class HeaderLimitMiddleware:
    """Pure ASGI: a request whose head is over the limits gets 431 (HTTP) or is refused before
    the handshake completes (WebSocket)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = _head_problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = json.dumps({"detail": problem}).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 431, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
