"""Live calls through the admin API with the real signaling hub in the same process: listing,
and an administrator ending a call (parties told `ended-by-admin`, CDR and audit entry)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.clock import SystemClock
from callgate.records.audit import AuditLog
from callgate.signaling.hub import Device, SignalingHub
from callgate.storage.db import Store, open_store, sqlite_url
from tests.integration.hub_helpers import next_of, parse, running_hub

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(sqlite_url(tmp_path / "data"))
    yield opened
    opened.close()


@pytest.fixture
async def hub(store: Store) -> AsyncIterator[SignalingHub]:
    async with running_hub(store, ring_timeout=20, setup_timeout=20, silence_timeout=20) as hub:
        yield hub


@pytest.fixture
async def api(store: Store, hub: SignalingHub) -> AsyncIterator[httpx.AsyncClient]:
    accounts = AccountService(store, "callgate", SystemClock(), Passwords(CHEAP))
    accounts.create_user("root", None, (), "pw-root", role="admin")
    services = Services(accounts=accounts, cdrs=hub.cdrs, audit=AuditLog(store), live=hub)
    app = create_app(registry=CollectorRegistry(), services=services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        token = await client.post("/api/login", json={"handle": "root", "password": "pw-root"})
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        yield client


async def call(hub: SignalingHub, caller: Device, callee: Device, answer: bool) -> str:
    invite = parse({"type": "call.invite", "id": "1", "to": callee.handle, "sdp": SDP})
    await hub.receive(caller, invite, lambda handle: True)
    call_id: str = (await next_of(callee, "call.incoming"))["call_id"]
    if answer:
        answered = {"type": "call.answer", "id": "2", "call_id": call_id, "sdp": SDP}
        await hub.receive(callee, parse(answered), bool)
        await next_of(caller, "call.answered")
    return call_id


async def test_admin_ends_an_answered_call(
    hub: SignalingHub, api: httpx.AsyncClient, store: Store
) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    call_id = await call(hub, alice, bob, answer=True)

    listed = (await api.get("/api/live-calls")).json()["calls"]
    assert [(c["call_id"], c["caller"], c["callee"], c["state"]) for c in listed] == [
        (call_id, "alice", "bob", "connecting")
    ]
    assert listed[0]["answered_at"] is not None

    response = await api.post(f"/api/live-calls/{call_id}/end")
    assert response.status_code == 202
    for device in (alice, bob):
        ended = await next_of(device, "call.ended")
        assert (ended["call_id"], ended["reason"]) == (call_id, "ended-by-admin")
    assert (await api.get("/api/live-calls")).json()["calls"] == []
    await hub.flush()
    row = hub.cdrs.get(call_id)
    assert row is not None
    assert (row.disposition, row.reason, row.ended_by) == (
        "answered",
        "ended-by-admin",
        "admin:root",
    )
    events = [e for e in AuditLog(store).recent(50) if e.action == "call.end_by_admin"]
    assert [(e.actor, e.object) for e in events] == [("root", f"call:{call_id}")]
    again = await api.post(f"/api/live-calls/{call_id}/end")
    assert again.status_code == 404


async def test_admin_ends_a_ringing_call_as_cancelled(
    hub: SignalingHub, api: httpx.AsyncClient
) -> None:
    alice, _ = await hub.connect("alice", "Alice", False)
    bob, _ = await hub.connect("bob", "Bob", False)
    call_id = await call(hub, alice, bob, answer=False)
    assert (await api.get("/api/live-calls")).json()["calls"][0]["state"] == "ringing"
    assert (await api.post(f"/api/live-calls/{call_id}/end")).status_code == 202
    assert (await next_of(bob, "call.ended"))["reason"] == "ended-by-admin"
    await hub.flush()
    row = hub.cdrs.get(call_id)
    assert row is not None and (row.disposition, row.ended_by) == ("cancelled", "admin:root")
