"""Fixtures shared by every test layer: free ports, a loopback TURN server, a UDP echo peer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, cast

import pytest

from callgate.storage.db import Store, open_store
from callgate.turn.config import TurnConfig
from callgate.types import Address, Transport
from callgate.types.events import AllocationEvent, EventKind, EventSink, ListSink
from tests.db_backends import (  # noqa: F401 - fixtures
    database_url,
    empty_database_url,
    pg_server,
    sqlite_template,
)
from tests.ports import LOOPBACK, free_port, free_udp_pair, relay_port_range  # noqa: F401 - re-exported
from tests.redis_server import acl_redis_server, redis_server  # noqa: F401 - fixture

REALM = "test"
USER = "alice"
PASSWORD = "secret"
AUTH_SECRET = "s3cr3t"


def rest_credentials(
    user: str = USER, *, secret: str = AUTH_SECRET, ttl: int = 3600, now: float | None = None
) -> tuple[str, str]:
    """TURN REST ephemeral credentials: ("<expiry>:<user>", base64(HMAC-SHA1(secret, username)))."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def server_address(server: Any, transport: Transport = Transport.UDP) -> Address:
    """The first address `server` actually bound for `transport`."""
    for kind, address in server.bound:
        if kind == transport:
            return (address[0], address[1])
    raise AssertionError(f"server has no {transport} listener: {server.bound}")


def allocation_event(kind: EventKind, at: float, **changes: Any) -> AllocationEvent:
    """A relay event of alice's UDP allocation (created at `at`), with `changes` applied."""
    base = AllocationEvent(
        kind=EventKind.CREATED,
        allocation_id="a" * 32,
        username="1700003600:alice",
        user="alice",
        client=("192.0.2.10", 40000),
        server=("127.0.0.1", 3478),
        transport=Transport.UDP,
        relay=("127.0.0.1", 50000),
        time=at,
        started=at,
        lifetime=600,
        peers=(),
        packets_to_peer=0,
        bytes_to_peer=0,
        packets_to_client=0,
        bytes_to_client=0,
    )
    return replace(base, kind=kind, **changes)


def turn_config(**overrides: Any) -> TurnConfig:
    """A loopback TurnConfig for tests: port 0, static user alice/secret, REST secret, loopback peers."""
    low, high = relay_port_range()
    settings: dict[str, Any] = {
        "listen": ((LOOPBACK, 0),),
        "relay_ip": LOOPBACK,
        "relay_port_min": low,
        "relay_port_max": high,
        "realm": REALM,
        "users": {USER: PASSWORD},
        "auth_secret": AUTH_SECRET,
        "allow_peers": ("127.0.0.0/8",),
        # CALLGATE_TEST_FAST_PATH=required runs the relay tests through the kernel fast path
        # (in a network namespace with net.ipv4.conf.lo.forwarding=1: docs/relay-fast-path.md)
        "fast_path": os.environ.get("CALLGATE_TEST_FAST_PATH", "auto"),
    }
    settings.update(overrides)
    return TurnConfig(**settings)


@asynccontextmanager
async def run_turn_server(
    *, events: EventSink | None = None, clock: Any = None, **overrides: Any
) -> AsyncIterator[Any]:
    """Start a TurnServer on 127.0.0.1 port 0 (UDP and TCP), yield it started, stop it afterwards.

    `overrides` are TurnConfig fields. The events sink defaults to a ListSink, reachable as
    `server.test_events` whatever the server calls its own attribute.
    """
    from callgate.turn.server import TurnServer  # imported late: the server may not exist yet

    sink = events if events is not None else ListSink()
    server = TurnServer(turn_config(**overrides), events=sink, clock=clock)
    async with server:
        server.test_events = sink
        yield server


class EchoProtocol(asyncio.DatagramProtocol):
    """Sends every datagram back where it came from, and counts what it saw."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.senders: set[Address] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received += 1
        self.senders.add(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class EchoPeer:
    def __init__(self, transport: asyncio.DatagramTransport, protocol: EchoProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self.address: Address = transport.get_extra_info("sockname")[:2]


@asynccontextmanager
async def run_echo_peer(host: str = LOOPBACK) -> AsyncIterator[EchoPeer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(EchoProtocol, local_addr=(host, 0))
    try:
        yield EchoPeer(transport, protocol)
    finally:
        transport.close()


@pytest.fixture
async def echo_peer() -> AsyncIterator[EchoPeer]:
    async with run_echo_peer() as peer:
        yield peer


@pytest.fixture
async def turn_server() -> AsyncIterator[Any]:
    async with run_turn_server() as server:
        yield server


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Wait until `predicate()` holds; the server folds traffic totals into its counters every second.
    The deadline is generous (a loaded 2-core CI machine is slow); the happy path returns at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(0.05)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:  # noqa: F811 - database_url is the fixture
    """A migrated store on each backend (tests/db_backends.py: SQLite and PostgreSQL)."""
    opened = open_store(database_url)
    yield opened
    opened.close()


# The slow layers first: under pytest-xdist (scripts/test) each module runs on one worker, and a
# long module handed out last would leave the other workers idle while it finishes.
_LAYER_ORDER = ("lab", "browser", "e2e", "identity", "interop", "integration", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def layer(item: pytest.Item) -> int:
        parts = item.nodeid.split("/")
        name = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
        return _LAYER_ORDER.index(name) if name in _LAYER_ORDER else len(_LAYER_ORDER)

    items.sort(key=layer)  # stable: the order within a layer stays as collected
