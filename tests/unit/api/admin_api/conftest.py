"""Fixtures of the admin API tests: a seeded temp store behind the app (ASGI, no sockets).

The seed (seed.py: one account per role, calls, quality rows, audit entries) is written once per
worker and backend into a template; each test that asks for `services` gets a copy of it (SQLite:
the file; PostgreSQL: CREATE DATABASE … TEMPLATE), as `database_url` does with the migrated store
(tests/db_backends.py). Seeding each test's store cost ~50 ms of CPU, for hundreds of tests.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.accounts import AccountService, PasswordPolicy, Passwords
from callgate.api.deps import RelayStatus, Services
from callgate.clock import ManualClock
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.storage.db import DB_FILENAME, Store, open_store, sqlite_url
from tests.db_backends import BACKENDS, PG_TEMPLATE, PgServer, _database
from tests.unit.api.admin_api.seed import T0, FakeLiveCalls, live_call, seed_accounts, seed_records

CHEAP = PasswordPolicy(time_cost=1, memory_cost_kib=8, parallelism=1)
RELAY = RelayStatus("local", ["udp 127.0.0.1:3478"], 1, 5, 10, 20, 1, 2, 0, 0)


def _clock() -> ManualClock:
    return ManualClock(start_wall=T0.timestamp())


def _seed(url: str) -> None:
    store = open_store(url)
    try:
        clock = _clock()
        seed_accounts(AccountService(store, "callgate", clock, Passwords(CHEAP)))
        seed_records(store, CdrRepository(store, clock))
    finally:
        store.close()  # no connection may stay: PostgreSQL copies only an unused template


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    directory = tmp_path_factory.mktemp("admin-api-seeded")
    shutil.copyfile(sqlite_template, directory / DB_FILENAME)
    _seed(sqlite_url(directory))
    return directory / DB_FILENAME


@pytest.fixture(scope="session")
def seeded_postgresql(pg_server: PgServer) -> str:
    url = pg_server.new_database()
    _seed(url)
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """tests/db_backends.py's `database_url`, but seeded (a copy of the template above) for a
    test that asks for `services`."""
    if "services" not in request.fixturenames:
        yield from _database(request, tmp_path, PG_TEMPLATE)
        return
    if request.param == "sqlite":
        directory = tmp_path / "db"
        directory.mkdir(mode=0o700)
        source: Path = request.getfixturevalue("seeded_sqlite")
        shutil.copyfile(source, directory / DB_FILENAME)
        (directory / DB_FILENAME).chmod(0o600)
        yield sqlite_url(directory)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.new_database(request.getfixturevalue("seeded_postgresql"))
    yield url
    with contextlib.suppress(Exception):  # the server may be gone if the session is ending
        server.drop_database(url)


@pytest.fixture
def live() -> FakeLiveCalls:
    return FakeLiveCalls(live_call())


@pytest.fixture
def services(store: Store, tmp_path: Path, live: FakeLiveCalls) -> Services:
    """The API's services on this test's copy of the seeded store."""
    clock = _clock()
    accounts = AccountService(store, "callgate", clock, Passwords(CHEAP))
    cdrs = CdrRepository(store, clock)
    return Services(
        accounts=accounts,
        cdrs=cdrs,
        audit=AuditLog(store),
        audit_key=tmp_path / "keys" / "audit.pem",
        live=live,
        relays=lambda: [RELAY],
    )
