"""The HTTP application: health and Prometheus metrics (the REST API and web pages come later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry

from callgate import __version__
from callgate.metrics import render

HealthCheck = Callable[[], dict[str, Any]]


def create_app(*, registry: CollectorRegistry, health: HealthCheck | None = None) -> FastAPI:
    """`GET /healthz` (200 when every check passes, else 503) and `GET /metrics`."""
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

    return app
