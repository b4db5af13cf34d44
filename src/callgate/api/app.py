"""The HTTP application: health, Prometheus metrics and, given the services, the REST API.

Routes: `GET /healthz`, `GET /metrics` (only with a `registry`); with `services`: `/api/login`, `/api/logout`, `/api/me`,
`/api/calls`, `/api/users`, records, exports, audit, live calls, retention and stats (see
api/routes/ and docs/admin-api.md), and the browser pages `/`, `/console/…` and `/static`
(callgate.web, docs/browser.md). Other packages add theirs through `routers` (e.g. /ws,
/api/directory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from callgate import __version__
from callgate.api.deps import Services
from callgate.api.limits import install_limits
from callgate.api.openapi import document_errors
from callgate.api.routes import admin, auth, calls, exports, records, stats, users
from callgate.api.routes import groups as group_routes
from callgate.api.routes import policy as policy_routes
from callgate.api.unavailable import RefuseWritesWhileUnwritable, storage_unavailable
from callgate.metrics import render
from callgate.policy.errors import PolicyError
from callgate.web.pages import install_web

HealthCheck = Callable[[], dict[str, Any]]


def create_app(
    *,
    registry: CollectorRegistry | None = None,
    health: HealthCheck | None = None,
    services: Services | None = None,
    routers: Sequence[APIRouter] = (),
    storage_writable: Callable[[], bool] | None = None,
) -> FastAPI:
    """`GET /healthz` (200 when every check passes or only non-critical ones fail, with status
    `degraded` then; else 503), `GET /metrics` when a `registry`
    is given (unauthenticated: `callgate serve` does not give one, its metrics are on the separate
    `--metrics` listener), and the REST API when `services` are given. While `storage_writable()`
    is false, requests that change something get 503 (api/unavailable.py)."""
    app = FastAPI(title="callgate", version=__version__, docs_url=None, redoc_url=None)
    install_limits(app)  # body caps, 422s without input (api/limits.py)

    if storage_writable is not None:
        app.add_middleware(RefuseWritesWhileUnwritable, writable=storage_writable)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, Any]:
        # Sync handlers run in the thread pool: checks may touch the database.
        checks = health() if health is not None else {}
        failing = [v for v in checks.values() if isinstance(v, dict) and not v.get("ok", True)]
        # a check marked `critical: false` (the WORM archive) degrades without taking the node
        # out of a load balancer's rotation: calls go on
        critical = any(v.get("critical", True) for v in failing)
        response.status_code = 503 if critical else 200
        status = "degraded" if failing else "ok"
        return {"status": status, "version": __version__, **checks}

    if registry is not None:  # unauthenticated: `serve` keeps metrics on a listener of their own

        @app.get("/metrics", response_class=PlainTextResponse)  # Prometheus text exposition
        def metrics() -> Response:
            body, content_type = render(registry)
            return Response(content=body, media_type=content_type)

    if services is not None:
        app.state.services = services
        app.include_router(auth.router)
        app.include_router(calls.router)
        app.include_router(users.router)
        app.add_exception_handler(PolicyError, group_routes.policy_refused)
        app.add_exception_handler(OperationalError, storage_unavailable)
        app.include_router(group_routes.router)
        app.include_router(policy_routes.router)
        app.include_router(exports.router)  # before records: /api/cdrs/export vs /api/cdrs/{id}
        app.include_router(records.router)
        app.include_router(admin.router)
        app.include_router(stats.router)
    for router in routers:
        app.include_router(router)
    document_errors(app)
    if services is not None:
        install_web(app)  # the softphone at / and the console at /console (docs/browser.md)
    return app
