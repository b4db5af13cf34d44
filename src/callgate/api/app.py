"""The HTTP application: health, Prometheus metrics and, given the services, the REST API.

Routes: `GET /healthz`, `GET /metrics`; with `services`: `/api/login`, `/api/logout`, `/api/me`,
`/api/calls`, `/api/users` (see api/routes/). Other packages add theirs through `routers`
(e.g. /ws).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CollectorRegistry

from callgate import __version__
from callgate.api.deps import Services
from callgate.api.routes import auth, calls, users
from callgate.metrics import render

HealthCheck = Callable[[], dict[str, Any]]


def create_app(
    *,
    registry: CollectorRegistry,
    health: HealthCheck | None = None,
    services: Services | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """`GET /healthz` (200 when every check passes, else 503), `GET /metrics`, and the REST API
    when `services` are given."""
    app = FastAPI(title="callgate", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, Any]:
        # Sync handlers run in the thread pool: checks may touch the database.
        checks = health() if health is not None else {}
        ok = all(value.get("ok", True) for value in checks.values() if isinstance(value, dict))
        response.status_code = 200 if ok else 503
        return {"status": "ok" if ok else "degraded", "version": __version__, **checks}

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render(registry)
        return Response(content=body, media_type=content_type)

    if services is not None:
        app.state.services = services
        app.include_router(auth.router)
        app.include_router(calls.router)
        app.include_router(users.router)
    for router in routers:
        app.include_router(router)
    return app
