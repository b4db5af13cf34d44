"""Fixtures of the REST API tests: a store with three accounts (alice, bob, root the admin)
behind the app, reached through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.clock import ManualClock
from callgate.records.cdr import CdrRepository
from callgate.storage.db import Store

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_wall=T0.timestamp())


@pytest.fixture
def services(store: Store, clock: ManualClock) -> Services:
    accounts = AccountService(store, "callgate", clock, Passwords(CHEAP))
    accounts.create_user("alice", "Alice A", ["eng"], "pw-alice")
    accounts.create_user("bob", None, (), "pw-bob")
    accounts.create_user("root", None, (), "pw-root", is_admin=True)
    return Services(accounts=accounts, cdrs=CdrRepository(store, clock))


@pytest.fixture(scope="module")
def module_app() -> dict[str, FastAPI]:
    """The app of this test module's tests, made by the first one (see `client`)."""
    return {}


@pytest.fixture
async def client(
    services: Services, module_app: dict[str, FastAPI]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in front of this test's own `services` (its own store, accounts, throttle).

    One app per test module, not per test: every request reads its services from
    `app.state.services` (api/deps.py), set here for each test, and FastAPI prepares each
    route of a new app on its first request (~0.1 s of CPU an app, hundreds of tests)."""
    app = module_app.get("app")
    if app is None:
        app = module_app["app"] = create_app(registry=CollectorRegistry(), services=services)
    app.state.services = services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
