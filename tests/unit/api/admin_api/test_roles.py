"""Every admin-API endpoint and every role → the status a user of that role gets (ASGI, no sockets).

The table is the contract of docs/admin-api.md; a route added under /api without a row here
fails `test_every_route_is_in_the_table`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from callgate.api.app import create_app
from callgate.api.deps import Services
from tests.unit.api.admin_api.seed import token_of

ROLES = ("admin", "compliance", "user")

# (method, path, body, status for admin, compliance, user). alice is the user; ab0000 is her
# call, bc0001 is not.
TABLE: list[tuple[str, str, dict[str, Any] | None, tuple[int, int, int]]] = [
    ("GET", "/api/me", None, (200, 200, 200)),
    ("GET", "/api/calls", None, (200, 200, 200)),
    ("GET", "/api/users", None, (200, 403, 403)),
    ("POST", "/api/users", {"handle": "zed", "password": "pass-for-z1"}, (201, 403, 403)),
    ("PATCH", "/api/users/bob", {"role": "compliance"}, (200, 403, 403)),
    ("PUT", "/api/users/bob/legal-hold", {"hold": True}, (200, 403, 403)),
    ("POST", "/api/users/bob/disable", None, (200, 403, 403)),
    ("POST", "/api/users/bob/enable", None, (200, 403, 403)),
    ("PUT", "/api/users/bob/password", {"password": "new-password-1"}, (200, 403, 403)),
    ("DELETE", "/api/users/bob", None, (204, 403, 403)),
    ("GET", "/api/cdrs", None, (200, 200, 200)),
    ("GET", "/api/cdrs/ab0000", None, (200, 200, 200)),
    ("GET", "/api/cdrs/bc0001", None, (200, 200, 404)),
    ("PUT", "/api/cdrs/ab0000/legal-hold", {"hold": True}, (200, 403, 403)),
    ("GET", "/api/cdrs/export?format=csv", None, (200, 200, 403)),
    ("GET", "/api/quality", None, (200, 200, 403)),
    ("GET", "/api/relay-sessions", None, (200, 200, 403)),
    ("GET", "/api/audit/entries", None, (200, 200, 403)),
    ("GET", "/api/audit/export?format=jsonl", None, (200, 200, 403)),
    ("GET", "/api/audit/checkpoints", None, (200, 200, 403)),
    ("POST", "/api/audit/checkpoints", None, (201, 403, 403)),
    ("POST", "/api/audit/verify", None, (200, 200, 403)),
    ("GET", "/api/live-calls", None, (200, 200, 403)),
    ("POST", "/api/live-calls/live0001/end", None, (202, 403, 403)),
    ("GET", "/api/retention", None, (200, 200, 403)),
    ("PUT", "/api/retention", {"cdr_days": 30}, (200, 403, 403)),
    ("POST", "/api/retention/purge", None, (200, 403, 403)),
    ("GET", "/api/stats/summary", None, (200, 200, 403)),
    ("GET", "/api/relays", None, (200, 403, 403)),
]
# /api/groups and /api/policy* belong to the policy work, tested there; /api/login is public.
OTHERS = ("/api/groups", "/api/policy", "/api/login", "/api/logout", "/api/directory")
CASES = [(m, p, b, role, codes[i]) for m, p, b, codes in TABLE for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("method", "path", "body", "role", "expected"), CASES)
async def test_endpoint_by_role(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    role: str,
    expected: int,
) -> None:
    headers = await token_of(client, role)
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == expected, response.text
    if expected == 403:
        assert "only" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), [(m, p, b) for m, p, b, _ in TABLE])
async def test_endpoint_without_token_is_401(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_every_route_is_in_the_table(services: Services) -> None:
    app = create_app(registry=CollectorRegistry(), services=services)
    tabled = {(m, p.split("?")[0]) for m, p, _, _ in TABLE}
    samples = {"{handle}": "bob", "{call_id}": "ab0000"}
    missing = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.path.startswith("/api"):
            continue
        if route.path.startswith(OTHERS):
            continue
        path = route.path
        for name, value in samples.items():
            path = path.replace(name, value)
        if route.path.startswith("/api/live-calls/"):
            path = path.replace("ab0000", "live0001")
        for method in route.methods:
            if (method, path) not in tabled:
                missing.append(f"{method} {route.path}")
    assert missing == []


async def test_me_shows_the_role(client: httpx.AsyncClient) -> None:
    for role in ROLES:
        me = (await client.get("/api/me", headers=await token_of(client, role))).json()
        assert (me["role"], me["is_admin"]) == (role, role == "admin")
