"""What the product writes to the audit log: sign-ins (through the REST API), account changes with
before/after, relay session summaries, config.start, and periodic checkpoints."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.accounts.audit import cli_actor
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.clock import ManualClock
from callgate.config import Settings
from callgate.records.audit import AuditLog
from callgate.records.audit_chain import Entry
from callgate.records.cdr import CdrRepository
from callgate.records.relay_sessions import DbEventSink
from callgate.runtime.audit import Checkpointer, effective_settings, record_start
from callgate.storage.db import Store
from callgate.types.events import AllocationEvent, EventKind
from tests.conftest import allocation_event

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SECRET_PASSWORD = "s3cret-never-logged"


@pytest.fixture
def services(store: Store) -> Services:
    accounts = AccountService(store, "callgate", ManualClock(T0.timestamp()), Passwords(CHEAP))
    accounts.create_user("root", None, (), "pw-root", is_admin=True)
    accounts.create_user("alice", "Alice", ["eng"], SECRET_PASSWORD)
    return Services(accounts=accounts, cdrs=CdrRepository(store))


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(registry=CollectorRegistry(), services=services)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def entries(store: Store, *actions: str) -> list[Entry]:
    found = list(AuditLog(store).iter_entries())
    return [e for e in found if not actions or e.action in actions]


def details(entry: Entry) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(entry.details)
    return value


async def sign_in(client: httpx.AsyncClient, handle: str, password: str) -> httpx.Response:
    return await client.post("/api/login", json={"handle": handle, "password": password})


# ---- sign-ins ----


async def test_sign_in_success_failure_and_sign_out_are_audited(
    client: httpx.AsyncClient, store: Store
) -> None:
    assert (await sign_in(client, "alice", "wrong password")).status_code == 401
    assert (await sign_in(client, "nobody", "x")).status_code == 401
    ok = await sign_in(client, "alice", SECRET_PASSWORD)
    assert ok.status_code == 200
    token = ok.json()["token"]
    out = await client.post("/api/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204

    auth = entries(store, "auth.login", "auth.login_failed", "auth.logout")
    assert [(e.action, e.actor, e.object) for e in auth] == [
        ("auth.login_failed", "system", "user:alice"),
        ("auth.login_failed", "system", "user:nobody"),
        ("auth.login", "alice", "user:alice"),
        ("auth.logout", "alice", "user:alice"),
    ]
    assert details(auth[0]) == {"handle": "alice", "client": "192.0.2.7"}
    assert details(auth[2])["client"] == "192.0.2.7"
    everything = " ".join(e.details for e in entries(store))
    assert SECRET_PASSWORD not in everything and "wrong password" not in everything
    assert AuditLog(store).verify(None).ok


# ---- account changes ----


async def test_account_changes_by_an_admin_carry_before_and_after(
    client: httpx.AsyncClient, store: Store
) -> None:
    token = (await sign_in(client, "root", "pw-root")).json()["token"]
    root = {"Authorization": f"Bearer {token}"}
    new = {"handle": "bob", "display_name": "Bob", "groups": ["ops"], "password": "b-password-1"}
    assert (await client.post("/api/users", json=new, headers=root)).status_code == 201
    patch = {"groups": ["ops", "sales"], "display_name": "Bob B"}
    assert (await client.patch("/api/users/bob", json=patch, headers=root)).status_code == 200
    # The same patch again changes nothing and leaves no entry.
    assert (await client.patch("/api/users/bob", json=patch, headers=root)).status_code == 200
    assert (await client.post("/api/users/bob/disable", headers=root)).status_code == 200
    assert (await client.post("/api/users/bob/enable", headers=root)).status_code == 200
    password = {"password": "b-password-2"}
    assert (await client.put("/api/users/bob/password", json=password, headers=root)).is_success
    assert (await client.delete("/api/users/bob", headers=root)).status_code == 204

    changes = [e for e in entries(store) if e.object == "user:bob"]
    assert [(e.action, e.actor) for e in changes] == [
        ("user.create", "root"),
        ("user.update", "root"),
        ("user.disable", "root"),
        ("user.enable", "root"),
        ("user.password", "root"),
        ("user.delete", "root"),
    ]
    create, update, disable, _enable, password_change, delete = map(details, changes)
    assert create["after"]["groups"] == ["ops"] and create["after"]["has_password"] is True
    assert "before" not in create
    assert update == {
        "before": {"display_name": "Bob", "groups": ["ops"]},
        "after": {"display_name": "Bob B", "groups": ["ops", "sales"]},
    }
    assert disable == {"before": {"disabled": False}, "after": {"disabled": True}}
    assert password_change == {"before": {}, "after": {}}  # a new password, and nothing to show
    assert delete["before"]["handle"] == "bob" and "after" not in delete
    text = " ".join(e.details for e in changes)
    assert "b-password" not in text and "hash" not in text
    assert AuditLog(store).verify(None).ok


def test_a_failed_change_leaves_no_entry(services: Services, store: Store) -> None:
    before = len(entries(store))
    with pytest.raises(Exception, match="exists"):
        services.accounts.create_user("alice", actor="root")
    assert len(entries(store)) == before


def test_cli_actor_names_the_os_user() -> None:
    assert cli_actor() == f"cli:{getpass.getuser()}"


# ---- relay session summaries ----


def allocation(kind: EventKind, **changes: Any) -> AllocationEvent:
    return allocation_event(kind, T0.timestamp(), **{"allocation_id": "f" * 32, **changes})


def test_an_ended_allocation_leaves_its_summary(store: Store) -> None:
    sink = DbEventSink(store.sessions)
    sink.emit(allocation(EventKind.CREATED))
    sink.emit(allocation(EventKind.PERMISSION, peers=("198.51.100.1",)))
    sink.emit(
        allocation(
            EventKind.DELETED,
            time=T0.timestamp() + 61.5,
            peers=("198.51.100.1", "198.51.100.2"),
            packets_to_peer=10, bytes_to_peer=1600, packets_to_client=9, bytes_to_client=1400,
            end_reason="refresh-0",
        )
    )  # fmt: skip
    sink.close()
    (summary,) = entries(store, "relay.session")
    assert (summary.actor, summary.object) == ("system", f"relay:{'f' * 32}")
    assert details(summary) == {
        "user": "alice",
        "client": "192.0.2.10:40000",
        "transport": "udp",
        "relay": "127.0.0.1:50000",
        "peers": 2,
        "packets_to_peer": 10,
        "bytes_to_peer": 1600,
        "packets_to_client": 9,
        "bytes_to_client": 1400,
        "duration_s": 61.5,
        "end_reason": "refresh-0",
    }


# ---- configuration and checkpoints ----


def test_config_start_masks_secrets(store: Store) -> None:
    settings = Settings(
        turn={"users": {"static": "turn-password"}, "auth_secret": "rest-secret"},
        database_url="postgresql+psycopg://callgate:db-password@db.example/callgate",
    )
    entry = record_start(AuditLog(store), settings, "serve")
    shown = details(entry)
    assert (entry.action, entry.object, shown["command"]) == (
        "config.start",
        "config:serve",
        "serve",
    )
    text = entry.details
    for secret in ("turn-password", "rest-secret", "db-password"):
        assert secret not in text
    assert shown["settings"]["turn"]["users"] == {"static": "**********"}
    assert shown["settings"]["audit"]["checkpoint_interval_s"] == 300.0
    assert shown["settings"]["database_url"].startswith("postgresql+psycopg://callgate:***@")
    assert effective_settings(Settings())["database_url"] is None


async def test_checkpoints_are_signed_periodically_when_the_log_grows(store: Store) -> None:
    audit = AuditLog(store)
    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(audit, key, interval=0.05)
    await checkpointer.start()
    audit.append("root", "user.update", "user:a", {})
    await _until(lambda: bool(audit.checkpoints()))
    await asyncio.sleep(0.3)  # several intervals with nothing new: no new checkpoint
    assert [cp.size for cp in audit.checkpoints()] == [1]
    audit.append("root", "user.update", "user:b", {})
    await _until(lambda: len(audit.checkpoints()) == 2)
    audit.append("root", "user.update", "user:c", {})
    await checkpointer.stop()  # signs the tail on the way out
    assert [cp.size for cp in audit.checkpoints()] == [1, 2, 3]
    result = audit.verify(key.public_key())
    assert (result.ok, result.checkpoints) == (True, 3)


async def _until(condition: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def test_checkpoint_interval_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_AUDIT__CHECKPOINT_INTERVAL_S", "60")
    assert Settings().audit.checkpoint_interval_s == 60.0
    monkeypatch.setenv("CALLGATE_AUDIT__CHECKPOINT_INTERVAL_S", "-1")
    with pytest.raises(ValueError):
        Settings()
