"""The REST API on a temp store, through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.clock import ManualClock
from callgate.records.cdr import CallOpen
from callgate.records.cdr_types import new_call_id
from tests.unit.api.conftest import T0


async def login(client: httpx.AsyncClient, handle: str, password: str) -> str:
    response = await client.post("/api/login", json={"handle": handle, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_me_logout(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/login", json={"handle": "Alice", "password": "pw-alice", "device": "laptop"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {
        "handle": "alice", "display_name": "Alice A", "groups": ["eng"], "is_admin": False,
        "role": "user", "source": "local",
    }  # fmt: skip
    assert body["expires_at"].startswith("2026-11-27T21:00:00")  # 12 h
    me = await client.get("/api/me", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["handle"] == "alice"
    out = await client.post("/api/logout", headers=bearer(body["token"]))
    assert out.status_code == 204
    again = await client.get("/api/me", headers=bearer(body["token"]))
    assert again.status_code == 401
    assert again.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "payload",
    [
        {"handle": "alice", "password": "wrong"},
        {"handle": "nobody", "password": "pw-alice"},
        {"handle": "../etc", "password": "pw-alice"},
    ],
)
async def test_bad_credentials_are_401(client: httpx.AsyncClient, payload: dict[str, str]) -> None:
    response = await client.post("/api/login", json=payload)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid credentials"}


async def test_malformed_login_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/login", json={"handle": "alice"})
    assert response.status_code == 422
    response = await client.post("/api/login", json={"handle": "a", "password": "x" * 2000})
    assert response.status_code == 422


async def test_disabled_user_cannot_sign_in_and_loses_tokens(
    client: httpx.AsyncClient, services: Services
) -> None:
    token = await login(client, "bob", "pw-bob")
    services.accounts.disable("bob")
    assert (await client.post("/api/login", json={"handle": "bob", "password": "pw-bob"})).status_code == 401  # fmt: skip
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 401


async def test_expired_token_is_401(client: httpx.AsyncClient, clock: ManualClock) -> None:
    token = await login(client, "alice", "pw-alice")
    clock.advance(12 * 3600)
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 401


async def test_calls_need_a_token_and_show_own_calls(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert (await client.get("/api/calls")).status_code == 401
    assert (await client.get("/api/calls", headers=bearer("forged"))).status_code == 401
    mine = new_call_id()
    services.cdrs.open(CallOpen(mine, "alice", "bob", T0))
    services.cdrs.finalize(mine, T0 + timedelta(seconds=5), "rejected", "callee", "rejected")
    theirs = new_call_id()
    services.cdrs.open(CallOpen(theirs, "bob", "root", T0 + timedelta(minutes=1)))

    alice = await login(client, "alice", "pw-alice")
    response = await client.get("/api/calls", headers=bearer(alice))
    assert response.status_code == 200
    calls = response.json()["calls"]
    assert [c["call_id"] for c in calls] == [mine]
    assert (calls[0]["disposition"], calls[0]["reason"], calls[0]["callee_user"]) == (
        "rejected", "rejected", "bob",
    )  # fmt: skip

    root = await login(client, "root", "pw-root")
    everyone = await client.get("/api/calls", headers=bearer(root))
    assert [c["call_id"] for c in everyone.json()["calls"]] == [theirs, mine]
    since = await client.get(
        "/api/calls", params={"since": "2026-11-27T09:00:30Z"}, headers=bearer(root)
    )
    assert [c["call_id"] for c in since.json()["calls"]] == [theirs]
    limited = await client.get("/api/calls", params={"limit": 1}, headers=bearer(root))
    assert len(limited.json()["calls"]) == 1
    bad = await client.get("/api/calls", params={"limit": 0}, headers=bearer(root))
    assert bad.status_code == 422


async def test_without_services_there_is_no_api() -> None:
    app = create_app(registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.post("/api/login", json={})).status_code == 404
        assert (await http.get("/healthz")).status_code == 200


async def test_a_failing_check_that_is_not_critical_degrades_without_503() -> None:
    """The WORM archive behind (critical: false): status degraded, still 200 so a load balancer
    keeps the node; any other failing check: 503."""
    checks = {
        "database": {"ok": True},
        "recording_archive": {"ok": False, "critical": False, "error": "last run failed"},
    }
    app = create_app(health=lambda: checks)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.get("/healthz")
        assert answer.status_code == 200 and answer.json()["status"] == "degraded"
        checks["database"] = {"ok": False}
        answer = await http.get("/healthz")
        assert answer.status_code == 503 and answer.json()["status"] == "degraded"
        checks["database"] = checks["recording_archive"] = {"ok": True}
        answer = await http.get("/healthz")
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
