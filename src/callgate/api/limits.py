"""Request body limits and validation errors that never echo input (issue 12 item 3).

Every request body is capped per endpoint (`BODY_LIMITS`, else `DEFAULT_BODY_LIMIT`): a declared
Content-Length over the cap is answered 413 before a byte of the body is read; a chunked body is
counted as it arrives and refused (413) the moment it passes the cap. The API's bodies are small
JSON documents, so the caps are low. WebSocket frames have their own limits (docs/signaling.md).

A 422 lists, for each invalid field, where it is (`loc`), what is wrong (`msg`) and the error
`type`, and never the value that was sent (FastAPI's default handler returns it as `input`, which
for a 10 MB body meant a 30 MB answer, and for a password echoed the password).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callgate.api.http_guard import HeaderLimitMiddleware

DEFAULT_BODY_LIMIT = 64 * 1024
BODY_LIMITS: Mapping[str, int] = {"/api/login": 4 * 1024}
MAX_REPORTED_ERRORS = 20


def body_limit(path: str) -> int:
    return BODY_LIMITS.get(path.rstrip("/") or "/", DEFAULT_BODY_LIMIT)


def _too_large(limit: int) -> str:
    return f"the request body is over {limit} bytes (the limit of this endpoint)"


class BodyLimitMiddleware:
    """Pure ASGI: refuses HTTP request bodies over the endpoint's cap with 413."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(str(scope.get("path", "")))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse(
                {"detail": _too_large(limit)}, status.HTTP_413_CONTENT_TOO_LARGE
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes FastAPI's body parsing as it is: the app's
                    # handler answers it (the response has not started: the body comes first).
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _too_large(limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _field_error(error: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "loc": list(error.get("loc", ())),
        "msg": error.get("msg", ""),
        "type": error.get("type", ""),
    }


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """422 with each field's path, message and type — the input values left out."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [_field_error(error) for error in errors[:MAX_REPORTED_ERRORS]]
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def install_limits(app: FastAPI) -> None:
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(HeaderLimitMiddleware)
    app.add_exception_handler(RequestValidationError, validation_failed)
