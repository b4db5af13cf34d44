"""aioice's TURN client (the one aiortc uses) against the relay under test, over UDP and TCP.

aioice binds a channel before its first send to a peer (channels from 0x4000), so the data goes out
and comes back as ChannelData.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from callgate.types.events import EventKind
from tests.conftest import LOOPBACK, PASSWORD, USER, EchoPeer, eventually, rest_credentials
from tests.interop.conftest import Relay

pytestmark = pytest.mark.interop

TRANSPORTS = [pytest.param("udp", id="udp"), pytest.param("tcp", id="tcp")]
MESSAGES = 20


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


def server_for(relay: Relay, transport: str, *, rest: bool = False) -> tuple[str, int]:
    if rest:
        return relay.rest_tcp if transport == "tcp" else relay.rest_udp
    return relay.tcp if transport == "tcp" else relay.udp


async def echo_round_trip(
    server: tuple[str, int], username: str, password: str, transport: str, peer: EchoPeer
) -> tuple[str, int]:
    """Allocate, send MESSAGES datagrams to the echo peer, get each back; return the relay address."""
    turn, client = await asyncio.wait_for(
        create_turn_endpoint(Collect, server, username, password, transport=transport), 10
    )
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == LOOPBACK
        assert turn.get_extra_info("related_address")[0] == LOOPBACK
        for i in range(MESSAGES):
            payload = f"hello {i} ".encode() * (i + 1)
            turn.sendto(payload, peer.address)
            data, addr = await asyncio.wait_for(client.received.get(), 30)
            assert data == payload
            assert addr == peer.address
        # The peer saw the relay address, never the client's own.
        assert peer.protocol.senders == {relayed}
        return relayed
    finally:
        turn.close()
        await asyncio.sleep(0.2)  # let the Refresh(0) that deletes the allocation go out


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_allocate_and_echo_through_channel(
    relay: Relay, echo_peer: EchoPeer, transport: str
) -> None:
    relayed = await echo_round_trip(
        server_for(relay, transport), USER, PASSWORD, transport, echo_peer
    )
    assert echo_peer.protocol.received == MESSAGES

    if relay.is_callgate:
        counters = relay.server.counters
        await eventually(
            lambda: (
                counters.packets_to_peer == MESSAGES
                and counters.packets_to_client == MESSAGES
                and counters.bytes_to_peer > 0
            ),
            what=f"counters {counters} show {MESSAGES} packets each way",
        )
        assert counters.bytes_to_peer == counters.bytes_to_client
        events = relay.events.events
        await eventually(lambda: any(e.kind == EventKind.DELETED for e in events), what="DELETED")
        created = [e for e in events if e.kind == EventKind.CREATED]
        assert len(created) == 1
        assert created[0].user == USER
        assert created[0].relay == relayed
        assert created[0].transport.value == transport
        assert any(e.kind == EventKind.CHANNEL for e in events)
        (deleted,) = [e for e in events if e.kind == EventKind.DELETED]
        assert deleted.allocation_id == created[0].allocation_id
        assert deleted.packets_to_peer == MESSAGES
        assert deleted.packets_to_client == MESSAGES
        assert deleted.bytes_to_peer == deleted.bytes_to_client > 0
        assert deleted.peers == (LOOPBACK,)
        assert deleted.end_reason == "refresh-0"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_password_is_refused_with_401(relay: Relay, transport: str) -> None:
    with pytest.raises(stun.TransactionFailed) as failure:
        await asyncio.wait_for(
            create_turn_endpoint(
                Collect, server_for(relay, transport), USER, "wrong", transport=transport
            ),
            10,
        )
    assert failure.value.response.error_code == 401
    if relay.is_callgate:
        assert relay.server.counters.auth_failures >= 1
        assert relay.server.counters.allocations_total == 0
        assert relay.events.events == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_user_is_refused_with_401(relay: Relay, transport: str) -> None:
    with pytest.raises(stun.TransactionFailed) as failure:
        await asyncio.wait_for(
            create_turn_endpoint(
                Collect, server_for(relay, transport), "mallory", PASSWORD, transport=transport
            ),
            10,
        )
    assert failure.value.response.error_code == 401


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_valid_rest_credentials_relay(
    relay: Relay, echo_peer: EchoPeer, transport: str
) -> None:
    username, password = rest_credentials(ttl=600)
    await echo_round_trip(
        server_for(relay, transport, rest=True), username, password, transport, echo_peer
    )
    if relay.is_callgate:
        created = [e for e in relay.events.events if e.kind == EventKind.CREATED]
        assert [(e.username, e.user) for e in created] == [(username, USER)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_expired_rest_credentials_are_refused_with_401(relay: Relay, transport: str) -> None:
    username, password = rest_credentials(now=time.time() - 3600, ttl=60)  # expired 59 min ago
    with pytest.raises(stun.TransactionFailed) as failure:
        await asyncio.wait_for(
            create_turn_endpoint(
                Collect,
                server_for(relay, transport, rest=True),
                username,
                password,
                transport=transport,
            ),
            10,
        )
    assert failure.value.response.error_code == 401
    if relay.is_callgate:
        assert relay.server.counters.allocations_total == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rest_credentials_signed_with_another_secret_are_refused(
    relay: Relay, transport: str
) -> None:
    username, password = rest_credentials(secret="not-the-secret")
    with pytest.raises(stun.TransactionFailed) as failure:
        await asyncio.wait_for(
            create_turn_endpoint(
                Collect,
                server_for(relay, transport, rest=True),
                username,
                password,
                transport=transport,
            ),
            10,
        )
    assert failure.value.response.error_code == 401
