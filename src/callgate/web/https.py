"""HTTPS around the app: HSTS on every HTTPS answer, and the plain-HTTP listener turned into a
redirect to the HTTPS one when both listen.

Pure ASGI (no framework): the redirect answers before anything of the app runs, so nothing is
ever served over plain HTTP once HTTPS is configured, and a WebSocket upgrade on HTTP is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# RFC 6797 §6.1: one year; no includeSubDomains (the operator's other hosts are not ours to pin).
HSTS = b"max-age=31536000"


class Hsts:
    """Adds Strict-Transport-Security to every HTTP answer of `app` (served over HTTPS)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h
                    for h in message.get("headers", [])
                    if h[0].lower() != b"strict-transport-security"
                ]
                message["headers"] = [*headers, (b"strict-transport-security", HSTS)]
            await send(message)

        await self.app(scope, receive, with_hsts)


def redirect_target(scope: Scope, https_host: str, https_port: int) -> str:
    """https://<the host the client asked for>[:port]<path>[?query] (RFC 9110 §15.4.9)."""
    host = https_host
    for name, value in scope.get("headers", []):
        if name == b"host":
            asked = value.decode("latin-1").strip()
            if asked.startswith("["):  # [IPv6]:port
                host = asked[: asked.find("]") + 1] or host
            else:
                host = asked.rsplit(":", 1)[0] if asked.count(":") == 1 else asked or host
            break
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = "" if https_port == 443 else f":{https_port}"
    path = scope.get("raw_path") or scope.get("path", "/").encode()
    query = scope.get("query_string", b"")
    target = f"https://{host}{port}{path.decode('latin-1')}"
    return f"{target}?{query.decode('latin-1')}" if query else target


def https_redirect(https_host: str, https_port: int) -> App:
    """An ASGI app answering every HTTP request with 308 to the same URL over HTTPS (308 keeps
    the method and body, RFC 9110 §15.4.9); WebSocket upgrades are closed."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        location = redirect_target(scope, https_host, https_port).encode("latin-1")
        body = b"use HTTPS: " + location + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [
                    (b"location", location),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
