"""A store that cannot be used (disk full, database unreachable or locked) answers 503 with a
clear message and Retry-After, not 500: the request changed nothing and may be retried.
Sign-in, logout (token revocation) and every other write are covered alike: refused up front
while the storage probe (storage/health.py) says writes fail — SQLite may still fit one small
write into space it already holds, so waiting for each write to fail would answer at random —
and, for a write that fails anyway, by the OperationalError handler."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from callgate.storage.health import describe

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MESSAGE = (
    "storage unavailable (disk full or database unreachable): nothing was changed; try again later"
)


async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = describe(exc) if isinstance(exc, OperationalError) else type(exc).__name__
    log.error("%s %s: storage unavailable (%s)", request.method, request.url.path, reason)
    return _unavailable()


def _unavailable() -> JSONResponse:
    return JSONResponse(
        status_code=503, content={"detail": MESSAGE}, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RefuseWritesWhileUnwritable:
    """Plain ASGI middleware (no BaseHTTPMiddleware: streamed exports and disconnects pass
    through untouched): 503 for a request that changes something while `writable()` is false."""

    def __init__(self, app: ASGIApp, writable: Callable[[], bool]) -> None:
        self.app = app
        self.writable = writable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and not self.writable():
            await _unavailable()(scope, receive, send)
            return
        await self.app(scope, receive, send)
