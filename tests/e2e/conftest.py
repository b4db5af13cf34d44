"""Shared fixtures for the end-to-end tests: one `callgate serve` per test module and backend,
a valid offer.

Each server gets a temporary data dir with alice, bob and carol (created before it starts, their
passwords hashed cheaply: tests/cheap_passwords.py), free loopback ports, a private relay port
range and short call timeouts. It is stopped with SIGTERM at the end, and must exit 0. Every module runs twice: on SQLite (the store in
the data dir) and on PostgreSQL (a database of its own on the session's test server, given to
`callgate serve` as CALLGATE_DATABASE_URL; the data dir then holds only keys).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from callgate.storage.db import open_store
from tests.cheap_passwords import template_accounts
from tests.db_backends import BACKENDS, PgServer
from tests.e2e.helpers import USERS, Serve, new_serve, password_of, user_store

PG_USERS = "e2e_users"


@pytest.fixture(scope="session")
def user_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the three users, made once; each server starts on a copy of it."""
    return user_store(tmp_path_factory.mktemp("users"))


@pytest.fixture(scope="session")
def pg_users(pg_server: PgServer) -> str:
    """A PostgreSQL template database with the three users, made once, in-process (the first
    test of a module pays for it within its timeout; `callgate user add` on PostgreSQL is run by
    the tests that add users to a running server's store)."""
    store = open_store(pg_server.make_template(PG_USERS))
    try:
        accounts = template_accounts(store)
        for handle in USERS:
            accounts.create_user(handle, password=password_of(handle))
    finally:
        store.close()  # no connection may stay: PostgreSQL copies only an unused template
    return PG_USERS


def _new_server(request: pytest.FixtureRequest, root: Path) -> Serve:
    """A server (not started) on the backend of `request.param`, with the three users; the test
    module's SERVE_ENV_OVERRIDES (if any) added to its environment."""
    overrides: dict[str, str] = getattr(request.module, "SERVE_ENV_OVERRIDES", {})
    if request.param == "sqlite":
        return new_serve(root, template=request.getfixturevalue("user_template"), **overrides)
    pg: PgServer = request.getfixturevalue("pg_server")
    database = pg.new_database(request.getfixturevalue("pg_users"))
    return new_serve(root, database_url=database, **overrides)


@pytest.fixture(params=BACKENDS)
def new_server(request: pytest.FixtureRequest) -> Callable[[Path], Serve]:
    """For tests that run a server of their own: `new_server(root)`, per backend, not started."""
    return lambda root: _new_server(request, root)


@pytest.fixture(scope="module", params=BACKENDS)
def serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    """One server per test module and backend: a module's records (CDRs, relay sessions) are its
    own."""
    server = _new_server(request, tmp_path_factory.mktemp("serve")).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"callgate serve exited {code} on SIGTERM:\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()
    # Bearer tokens travel in /ws?token=…: the server's log must never show one.
    leaked = re.findall(r"token=(?!\*\*\*)[^&\s\"]+", server.log())
    assert not leaked, f"tokens in the server log: {leaked[:3]}"


async def _aiortc_offer() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@pytest.fixture(scope="session")
def offer_sdp() -> str:
    """A real audio offer from aiortc (host candidates only: the relay-only server strips them)."""
    return asyncio.run(_aiortc_offer())


@pytest.fixture(scope="session")
def answer_sdp(offer_sdp: str) -> str:
    """Good enough as an answer for signaling-only calls: the server filters but never parses
    the media sections' semantics."""
    return offer_sdp.replace("a=setup:actpass", "a=setup:active")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
