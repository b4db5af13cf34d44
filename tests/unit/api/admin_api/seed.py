"""Seed data for the admin API tests: one account per role, calls, quality rows, audit entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from callgate.accounts import AccountService
from callgate.records.audit import AuditLog
from callgate.records.cdr import CallOpen, CdrRepository
from callgate.records.quality import StreamStats
from callgate.records.quality_store import QualityRepository
from callgate.signaling.live import LiveCall
from callgate.storage.db import Store

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # older than a day: retention tests
PASSWORDS = {"root": "pw-root", "carol": "pw-carol", "alice": "pw-alice", "bob": "pw-bob"}
ROLE_USERS = {"admin": "root", "compliance": "carol", "user": "alice"}


@dataclass
class Seeded:
    alice_bob: list[str] = field(default_factory=list)  # answered alice → bob calls
    bob_carol: str = ""  # a call alice is no party of (poor quality)
    denied: str = ""  # bob → alice, denied


def seed_accounts(accounts: AccountService) -> None:
    accounts.create_user("root", None, (), PASSWORDS["root"], role="admin")
    accounts.create_user("carol", None, (), PASSWORDS["carol"], role="compliance")
    accounts.create_user("alice", "Alice A", ["eng"], PASSWORDS["alice"])
    accounts.create_user("bob", None, (), PASSWORDS["bob"])


def _call(cdrs: CdrRepository, call_id: str, caller: str, callee: str, at: datetime) -> None:
    cdrs.open(CallOpen(call_id=call_id, caller_user=caller, callee_user=callee, invite_at=at))


def seed_records(store: Store, cdrs: CdrRepository, calls: int = 5, start: datetime = T0) -> Seeded:
    """`calls` answered alice → bob calls a minute apart, a poor bob → carol call, a denied call,
    and an audit entry per call."""
    seeded = Seeded()
    audit = AuditLog(store)
    quality = QualityRepository(store.sessions)
    for i in range(calls):
        at = start + timedelta(minutes=i)
        call_id = f"ab{i:04d}"
        _call(cdrs, call_id, "alice", "bob", at)
        cdrs.update(call_id, answer_at=at + timedelta(seconds=2))
        cdrs.finalize(call_id, at + timedelta(seconds=60), "answered", "caller", "hangup")
        quality.upsert(call_id, "caller", StreamStats("audio", "inbound", 1000, 1), True, at)
        audit.append("alice", "call.ended", f"call:{call_id}", {"i": i}, at)
        seeded.alice_bob.append(call_id)
    seeded.bob_carol = "bc0001"
    at = start + timedelta(minutes=calls)
    _call(cdrs, "bc0001", "bob", "carol", at)
    cdrs.update("bc0001", answer_at=at)
    cdrs.finalize("bc0001", at + timedelta(seconds=30), "answered", "callee", "hangup")
    lossy = StreamStats("audio", "inbound", 1000, 300, jitter_ms=80.0)
    quality.upsert("bc0001", "callee", lossy, True, at)
    seeded.denied = "de0001"
    _call(cdrs, "de0001", "bob", "alice", at + timedelta(minutes=1))
    cdrs.finalize("de0001", at + timedelta(minutes=1), "denied", "server", "policy-denied")
    return seeded


class FakeLiveCalls:
    """LiveCalls without a hub: calls the test puts in, ended by `end_call`."""

    def __init__(self, *calls: LiveCall) -> None:
        self.calls = {call.call_id: call for call in calls}
        self.ended: list[tuple[str, str]] = []

    def live_calls(self) -> list[LiveCall]:
        return list(self.calls.values())

    async def end_call(self, call_id: str, admin: str) -> bool:
        if self.calls.pop(call_id, None) is None:
            return False
        self.ended.append((call_id, admin))
        return True


def live_call(call_id: str = "live0001") -> LiveCall:
    return LiveCall(call_id, "alice", "bob", "connected", T0, T0, 12.5, "relay/host", None)


async def token_of(client: httpx.AsyncClient, role: str) -> dict[str, str]:
    handle = ROLE_USERS[role]
    response = await client.post(
        "/api/login", json={"handle": handle, "password": PASSWORDS[handle]}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}
