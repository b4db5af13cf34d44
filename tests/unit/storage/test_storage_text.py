"""Client text with a NUL character, on SQLite and PostgreSQL (whose text cannot hold NUL): the
record is kept (NUL shown as U+FFFD), lookups by such text find nothing, and nothing fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.storage.db import Store

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    clock = ManualClock(start_wall=T0.timestamp())
    accounts = AccountService(store, "callgate", clock, Passwords(CHEAP))
    accounts.create_user("root", None, (), "pw-root", is_admin=True)
    services = Services(accounts=accounts, cdrs=CdrRepository(store, clock))
    app = create_app(registry=CollectorRegistry(), services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def test_a_call_record_keeps_text_with_nul(store: Store) -> None:
    cdrs = CdrRepository(store, ManualClock(start_wall=T0.timestamp()))
    cdrs.open(CallOpen("c1", "alice", "bo\x00b", T0, caller_device="desk\x00"))
    assert cdrs.finalize("c1", T0 + timedelta(seconds=3), "rejected", "callee", "rejected",
                         detail="busy\x00now")  # fmt: skip
    record = cdrs.get("c1")
    assert record is not None
    assert (record.callee_user, record.caller_device) == ("bo\ufffdb", "desk\ufffd")
    assert record.end_detail == "busy\ufffdnow"
    assert [r.call_id for r in cdrs.list(user="bo\x00b")] == ["c1"]
    assert cdrs.get("c\x00") is None


def test_an_audit_entry_with_nul_is_kept_and_the_chain_verifies(store: Store) -> None:
    log = AuditLog(store)
    log.append("system", "auth.login_failed", "user:a\x00b", {"handle": "a\x00b"}, at=T0)
    log.append("system", "auth.login_failed", "user:c", {"handle": "c"}, at=T0)
    entries = list(log.iter_entries())
    assert [e.object for e in entries] == ["user:a\ufffdb", "user:c"]
    assert log.verify(None).ok


async def test_sign_in_with_nul_in_the_handle_or_device_is_answered(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.post("/api/login", json={"handle": "ro\x00ot", "password": "pw-root"})
    assert refused.status_code == 401
    body = {"handle": "root", "password": "pw-root", "device": "desk\x00"}
    signed_in = await client.post("/api/login", json=body)
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["token"]
    missing = await client.post(
        "/api/users/a%00b/disable", headers={"Authorization": f"Bearer {token}"}
    )
    assert missing.status_code == 404
