"""Fixtures of the admin API tests: a seeded temp store behind the app (ASGI, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.deps import RelayStatus, Services
from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.storage.db import Store
from tests.unit.api.admin_api.seed import T0, FakeLiveCalls, live_call, seed_accounts, seed_records

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
RELAY = RelayStatus("local", ["udp 127.0.0.1:3478"], 1, 5, 10, 20, 1, 2, 0, 0)


@pytest.fixture
def live() -> FakeLiveCalls:
    return FakeLiveCalls(live_call())


@pytest.fixture
def services(store: Store, tmp_path: Path, live: FakeLiveCalls) -> Services:
    clock = ManualClock(start_wall=T0.timestamp())
    accounts = AccountService(store, "callgate", clock, Passwords(CHEAP))
    seed_accounts(accounts)
    cdrs = CdrRepository(store, clock)
    seed_records(store, cdrs)
    return Services(
        accounts=accounts,
        cdrs=cdrs,
        audit=AuditLog(store),
        audit_key=tmp_path / "keys" / "audit.pem",
        live=live,
        relays=lambda: [RELAY],
    )
