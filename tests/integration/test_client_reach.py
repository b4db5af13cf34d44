"""`callgate.client.reach` against our TURN server on loopback: STUN Binding over UDP and TCP,
and the choice of the TURN URL aiortc will use when some of the server's URLs are unreachable
(a UDP socket that never answers stands in for a firewall that drops UDP)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from callgate.client import reach
from callgate.client.reach import IceUrl, binding, parse_url, reachable_hello
from callgate.turn.server import TurnServer
from callgate.types import Transport
from tests.integration.turn_client import run_server


@pytest.fixture
async def server() -> AsyncIterator[TurnServer]:
    async with run_server() as running:
        yield running


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A UDP port where datagrams are received and never answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def port_of(server: TurnServer, kind: Transport) -> int:
    return next(address[1] for transport, address in server.bound if transport is kind)


def hello(stun: list[str], turn: list[str]) -> dict[str, Any]:
    return {
        "user": {"handle": "alice"},
        "ice_servers": [
            {"urls": stun},
            {"urls": turn, "username": "1700000000:alice", "credential": "c2VjcmV0"},
        ],
        "ice_transport_policy": "all",
    }


async def test_binding_over_udp_and_tcp_returns_our_address(server: TurnServer) -> None:
    udp, tcp = port_of(server, Transport.UDP), port_of(server, Transport.TCP)
    over_udp = await binding(parse_url(f"stun:127.0.0.1:{udp}"))
    over_tcp = await binding(parse_url(f"turn:127.0.0.1:{tcp}?transport=tcp"))
    assert over_udp[0] == over_tcp[0] == "127.0.0.1"
    assert over_udp[1] > 0 and over_tcp[1] > 0


async def test_unanswered_udp_times_out(black_hole: int) -> None:
    with pytest.raises(TimeoutError):
        await binding(parse_url(f"stun:127.0.0.1:{black_hole}"), within=0.6)


async def test_first_reachable_turn_url_goes_first_and_dead_stun_is_dropped(
    server: TurnServer, black_hole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tcp, udp = port_of(server, Transport.TCP), port_of(server, Transport.UDP)
    dead_stun = f"stun:127.0.0.1:{black_hole}"
    dead_udp = f"turn:127.0.0.1:{black_hole}?transport=udp"
    live_tcp = f"turn:127.0.0.1:{tcp}?transport=tcp"
    given = hello(stun=[dead_stun, f"stun:127.0.0.1:{udp}"], turn=[dead_udp, live_tcp])
    spans: dict[str, list[float]] = {}  # each probe's (start, end)
    probe = reach._answers

    async def timed(url: IceUrl, within: float) -> bool:
        spans[url.text] = [time.monotonic()]
        try:
            return await probe(url, within)
        finally:
            spans[url.text].append(time.monotonic())

    monkeypatch.setattr(reach, "_answers", timed)
    chosen = await reachable_hello(given, within=3.0)
    # both dead probes wait out `within` at the same time, not one after the other: each began
    # before the other ended (an order of events, whatever a loaded machine adds to their length)
    (stun_start, stun_end), (udp_start, udp_end) = spans[dead_stun], spans[dead_udp]
    assert stun_start < udp_end and udp_start < stun_end, spans
    assert chosen["ice_servers"] == [
        {"urls": [f"stun:127.0.0.1:{udp}"]},
        {
            "urls": [live_tcp, dead_udp],
            "username": "1700000000:alice",
            "credential": "c2VjcmV0",
        },
    ]
    assert chosen["user"] == given["user"] and chosen["ice_transport_policy"] == "all"


async def test_reachable_servers_keep_the_servers_order(server: TurnServer) -> None:
    tcp, udp = port_of(server, Transport.TCP), port_of(server, Transport.UDP)
    given = hello(
        stun=[f"stun:127.0.0.1:{udp}"],
        turn=[f"turn:127.0.0.1:{udp}?transport=udp", f"turn:127.0.0.1:{tcp}?transport=tcp"],
    )
    assert await reachable_hello(given, within=2.0) == given


async def test_nothing_reachable_leaves_turn_as_given(black_hole: int) -> None:
    turn = [f"turn:127.0.0.1:{black_hole}?transport=udp"]
    chosen = await reachable_hello(hello([f"stun:127.0.0.1:{black_hole}"], turn), within=0.5)
    assert [entry["urls"] for entry in chosen["ice_servers"]] == [turn]
