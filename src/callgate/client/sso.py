"""Single sign-on from the command line: the device authorization grant (RFC 8628) through the
server (`POST /api/sso/device`, then `POST /api/sso/device/token` every `interval` seconds;
docs/identity.md). The person approves in any browser, on any device; this side never sees a
password, a client secret or an ID token, only the callgate token at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from callgate.client.errors import LoginError
from callgate.client.session import Session

REQUEST_TIMEOUT = 15.0
MAX_INTERVAL_S = 60


async def device_sign_in(server_url: str, show: Callable[[dict[str, Any]], None]) -> Session:
    """Start a sign-in, `show` the person what to open and type (user_code, verification_uri,
    maybe verification_uri_complete, expires_in), wait for their approval; LoginError when the
    server or the provider refuses, or the code expires first."""
    base = server_url.rstrip("/") + "/api/sso/device"
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http:
        started = await _post(http, base, None)
        if started.status_code != 200:
            raise LoginError(f"single sign-on unavailable: {_detail(started)}")
        shown = _object(started)
        attempt, interval = shown.get("attempt"), _interval(shown.get("interval"))
        if not isinstance(attempt, str) or not isinstance(shown.get("user_code"), str):
            raise LoginError("the server's answer lacks the attempt or the user code")
        show(shown)
        deadline = time.monotonic() + float(shown.get("expires_in") or 600)
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            answer = await _post(http, base + "/token", {"attempt": attempt})
            body = _object(answer)
            if answer.status_code == 200:
                handle = (body.get("user") or {}).get("handle", "")
                return Session.from_login(server_url, str(handle), body)
            if answer.status_code == 400 and body.get("error") in (
                "authorization_pending",
                "slow_down",
            ):
                interval = _interval(body.get("interval"), interval)
                continue
            raise LoginError(f"single sign-on refused: {_detail(answer)}")
    raise LoginError("the code expired before the sign-in was approved")


async def _post(http: httpx.AsyncClient, url: str, body: dict[str, str] | None) -> httpx.Response:
    try:
        return await http.post(url, json=body)
    except httpx.HTTPError as exc:
        raise LoginError(f"cannot reach {url}: {exc}") from None


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail(response: httpx.Response) -> str:
    body = _object(response)
    detail = body.get("detail") or body.get("error") or response.text[:200]
    return f"HTTP {response.status_code} {detail}"


def _interval(value: Any, default: float = 5) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        return default
    return float(min(value, MAX_INTERVAL_S))
