"""A store that cannot take writes: sign-in and logout answer 503 with a clear message (never
500), whether the write fails on its own or the storage probe already said so; reads go on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.records.cdr import CdrRepository
from callgate.storage.db import Store

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture
def read_only(store: Store) -> list[bool]:
    """Set the flag to make every new connection to `store` refuse writes."""
    flag = [False]

    if store.engine.dialect.name != "sqlite":
        # PostgreSQL's disk full (SQLSTATE class 53) is an OperationalError like SQLite's; a
        # read-only PostgreSQL session raises InternalError instead, so it cannot stand in.
        pytest.skip("SQLite's query_only stands in for a disk that refuses writes")

    def connect(dbapi_connection: Any, _record: Any) -> None:
        if flag[0]:
            dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(store.engine, "connect", connect)
    return flag


def app_client(store: Store, writable: list[bool]) -> httpx.AsyncClient:
    accounts = AccountService(store, "callgate", passwords=Passwords(CHEAP))
    if accounts.get("alice") is None:
        accounts.create_user("alice", None, (), "pw-alice")
    services = Services(accounts=accounts, cdrs=CdrRepository(store))
    app = create_app(
        registry=CollectorRegistry(), services=services, storage_writable=lambda: writable[0]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, list[bool]]]:
    writable = [True]
    async with app_client(store, writable) as http:
        yield http, writable


LOGIN = {"handle": "alice", "password": "pw-alice"}


async def test_a_failing_write_answers_503_not_500(
    client: tuple[httpx.AsyncClient, list[bool]], store: Store, read_only: list[bool]
) -> None:
    http, _ = client
    token = (await http.post("/api/login", json=LOGIN)).json()["token"]
    read_only[0] = True
    store.engine.dispose()
    signed_in = await http.post("/api/login", json=LOGIN)
    assert signed_in.status_code == 503, signed_in.text
    assert "storage unavailable" in signed_in.json()["detail"]
    assert signed_in.headers["retry-after"] == "5"
    out = await http.post("/api/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 503 and "nothing was changed" in out.json()["detail"]
    read_only[0] = False
    store.engine.dispose()
    me = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200  # the logout did not happen, and the API says so


async def test_while_the_probe_fails_writes_are_refused_up_front_and_reads_go_on(
    client: tuple[httpx.AsyncClient, list[bool]],
) -> None:
    http, writable = client
    token = (await http.post("/api/login", json=LOGIN)).json()["token"]
    writable[0] = False
    refused = await http.post("/api/login", json=LOGIN)
    assert refused.status_code == 503 and "storage unavailable" in refused.json()["detail"]
    me = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    writable[0] = True
    assert (await http.post("/api/login", json=LOGIN)).status_code == 200
