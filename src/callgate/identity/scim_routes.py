"""SCIM 2.0 over HTTP at /scim/v2 (RFC 7644; docs/identity.md):

    GET /ServiceProviderConfig, /ResourceTypes[/{id}], /Schemas[/{id}]     discovery (§4)
    POST /Users, GET /Users[?filter=…], GET|PUT|PATCH|DELETE /Users/{id}   (§3.3-3.6)
    POST /Groups, GET /Groups[?filter=…], GET|PUT|PATCH|DELETE /Groups/{id}

Every request needs `Authorization: Bearer <[identity.scim] token>` (RFC 6750; compared in
constant time). Answers are application/scim+json; errors are SCIM Error documents (§3.12).
A deactivated or deleted user's sessions and calls are ended at once by `on_deprovisioned`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from scim2_models import Error as ScimError
from scim2_models import NotFoundException, SCIMException
from sqlalchemy.exc import OperationalError

from callgate.identity import scim_model
from callgate.identity.scim_model import MEDIA_TYPE
from callgate.identity.scim_service import ScimService
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

log = logging.getLogger(__name__)

PREFIX = "/scim/v2"
AUDIT_FAILURES_EVERY_S = 60.0  # one scim.auth_failed entry per client address and minute
Deprovisioned = Callable[[list[str]], Awaitable[None]]


def _answer(document: Any, status: int = 200, location: str | None = None) -> Response:
    headers = {"Location": location} if location else None
    body = json.dumps(document).encode()
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _error(status: int, detail: str, scim_type: str | None = None) -> Response:
    error = ScimError(status=status, scim_type=scim_type, detail=detail)
    return _answer(error.model_dump(), status)


def _unauthorized() -> Response:
    """401 with the scheme to use (RFC 6750 §3)."""
    response = _error(401, "a valid bearer token is needed")
    response.headers["WWW-Authenticate"] = 'Bearer realm="callgate-scim"'
    return response


class ScimEndpoint:
    """The bearer check, the body reading and the error answers around ScimService."""

    def __init__(self, service: ScimService, store: Store, token: str, max_results: int) -> None:
        self.service = service
        self._audit = AuditLog(store)
        self._digest = hashlib.sha256(token.encode()).digest()
        self._max_results = max_results
        self._failures: dict[str | None, float] = {}
        self.on_deprovisioned: Deprovisioned | None = None

    def authorized(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(value.strip().encode()).digest()
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given, self._digest)
        if not ok:
            self._failed(request.client.host if request.client is not None else None)
        return ok

    def _failed(self, client: str | None) -> None:
        now = time.monotonic()
        if now - self._failures.get(client, -AUDIT_FAILURES_EVERY_S) < AUDIT_FAILURES_EVERY_S:
            return
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures[client] = now
        log.warning("SCIM request with a wrong or missing token from %s", client)
        self._audit.append("identity:scim", "scim.auth_failed", "scim", {"client": client})

    async def run(self, request: Request, call: Callable[..., Any], *args: Any) -> Response:
        """Authenticate, run `call` in a thread, answer its document or its SCIM error."""
        if not self.authorized(request):
            return _unauthorized()
        base = str(request.base_url).rstrip("/") + PREFIX
        try:
            if request.method in ("POST", "PUT", "PATCH"):
                args = (*args, await _body(request))
            if request.method == "GET":
                args = (*args, dict(request.query_params))
            result = (
                await asyncio.to_thread(call, *args, base)
                if request.method != "DELETE"
                else (await asyncio.to_thread(call, *args))
            )
        except SCIMException as exc:
            error = exc.to_error()
            return _answer(error.model_dump(), error.status or 400)
        except OperationalError:
            return _error(503, "the store is unavailable; try again")
        return await self._respond(request, result)

    async def _respond(self, request: Request, result: Any) -> Response:
        if request.method == "DELETE":
            await self._deprovision(result)
            return Response(status_code=204)
        if isinstance(result, dict):  # a GET, or a search by POST (RFC 7644 §3.4.3)
            return _answer(result)
        document, deprovisioned = result
        await self._deprovision(deprovisioned)
        if request.method == "POST":
            return _answer(document, 201, document["meta"]["location"])
        return _answer(document)

    async def _deprovision(self, handles: list[str]) -> None:
        if handles and self.on_deprovisioned is not None:
            try:
                await self.on_deprovisioned(handles)
            except Exception:  # their tokens are revoked already: sockets close within 15 s
                log.exception("ending the sessions of %s failed", handles)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Syntax(detail="the body is not JSON") from None


class _Syntax(SCIMException):
    status = 400
    scim_type = "invalidSyntax"


def scim_router(endpoint: ScimEndpoint) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["scim"], include_in_schema=False)
    service = endpoint.service

    def discovery(document: Callable[[str], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def get(request: Request) -> Response:
            if not endpoint.authorized(request):
                return _unauthorized()
            return _answer(document(str(request.base_url).rstrip("/") + PREFIX))

        return get

    def listing(name: str, documents: Callable[[str], list[dict[str, Any]]]) -> None:
        def full(base: str) -> Any:
            found = documents(base)
            return {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": len(found),
                "startIndex": 1,
                "itemsPerPage": len(found),
                "Resources": found,
            }

        router.add_api_route(f"/{name}", discovery(full), methods=["GET"])

        async def one(request: Request, item: str) -> Response:
            if not endpoint.authorized(request):
                return _unauthorized()
            base = str(request.base_url).rstrip("/") + PREFIX
            for document in documents(base):
                if document["id"] == item:
                    return _answer(document)
            return _answer(
                NotFoundException(detail=f"no {name} {item[:64]!r}").to_error().model_dump(), 404
            )

        router.add_api_route(f"/{name}/{{item}}", one, methods=["GET"])

    config = endpoint._max_results
    router.add_api_route(
        "/ServiceProviderConfig",
        discovery(lambda _base: scim_model.service_provider_config(config)),
        methods=["GET"],
    )
    listing("ResourceTypes", scim_model.resource_types)
    listing("Schemas", scim_model.schemas)

    for kind, search in (("Users", service.search_users), ("Groups", service.search_groups)):
        router.add_api_route(f"/{kind}/.search", _searching(endpoint, search), methods=["POST"])
    for kind, create, listed, get, replace, patch, remove in (
        ("Users", service.create_user, service.list_users, service.get_user,
         service.replace_user, service.patch_user, service.delete_user),
        ("Groups", service.create_group, service.list_groups, service.get_group,
         service.replace_group, service.patch_group, service.delete_group),
    ):  # fmt: skip
        _resource_routes(router, endpoint, kind, create, listed, get, replace, patch, remove)

    async def elsewhere(request: Request, rest: str) -> Response:
        """Anything else under /scim/v2 gets a SCIM error too (RFC 7644 §3.12)."""
        if not endpoint.authorized(request):
            return _unauthorized()
        if rest == ".search" and request.method == "POST":  # §3.4.3: several types at once
            detail = "searching every resource type at once is not supported: use /Users/.search"
            return _error(501, detail)
        allowed = _methods_at(router, f"{PREFIX}/{rest}")
        if allowed:  # RFC 7231 §6.5.5: the resource is there, the method is not
            response = _error(405, f"{request.method} is not allowed on /{rest[:64]}")
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        return _error(404, f"no SCIM endpoint {request.method} /{rest[:64]}")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    router.add_api_route("/{rest:path}", elsewhere, methods=methods)
    return router


def _searching(
    endpoint: ScimEndpoint, search: Callable[..., Any]
) -> Callable[[Request], Awaitable[Response]]:
    """POST /{kind}/.search (a closure: FastAPI would take a defaulted parameter for a query)."""

    async def on_search(request: Request) -> Response:
        return await endpoint.run(request, search)

    return on_search


def _methods_at(router: APIRouter, path: str) -> set[str]:
    """The methods the routes other than the catch-all answer at `path`."""
    found: set[str] = set()
    for route in router.routes:
        catch_all = "{rest:path}" in getattr(route, "path", "")
        if isinstance(route, APIRoute) and not catch_all and route.path_regex.match(path):
            found |= route.methods or set()
    return found


def _resource_routes(
    router: APIRouter,
    endpoint: ScimEndpoint,
    kind: str,
    create: Callable[..., Any],
    listed: Callable[..., Any],
    get: Callable[..., Any],
    replace: Callable[..., Any],
    patch: Callable[..., Any],
    remove: Callable[..., Any],
) -> None:
    async def on_collection(request: Request) -> Response:
        if request.method == "POST":
            return await endpoint.run(request, create)
        return await endpoint.run(request, listed)

    async def on_item(request: Request, resource_id: str) -> Response:
        call = {"GET": get, "PUT": replace, "PATCH": patch, "DELETE": remove}[request.method]
        return await endpoint.run(request, call, resource_id)

    router.add_api_route(f"/{kind}", on_collection, methods=["GET", "POST"])
    router.add_api_route(
        f"/{kind}/{{resource_id}}", on_item, methods=["GET", "PUT", "PATCH", "DELETE"]
    )
