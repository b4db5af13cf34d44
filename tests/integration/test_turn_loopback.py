"""TurnServer over real loopback sockets, driven packet by packet by our own codec.

Each test binds a server on 127.0.0.1 port 0 (UDP+TCP, TLS or IPv6 where the test says so),
talks to it from `turn_client`, and relays to UDP peers on loopback. Every receive is bounded
by `turn_client.TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from callgate.clock import ManualClock
from callgate.stun import attributes as attrs
from callgate.stun import channel_data
from callgate.stun.constants import (
    FAMILY_IPV6,
    PROTO_UDP,
    Attr,
    MessageClass,
    Method,
)
from callgate.stun.message import build, encode, new_transaction_id, verify_integrity
from callgate.turn.server import TurnServer
from callgate.types import Address, Transport
from callgate.types.events import EventKind
from tests.integration.turn_client import (
    PASSWORD,
    REALM,
    RELAY_PORTS,
    USER,
    TurnClient,
    UdpPeer,
    drain,
    error_code,
    events_of,
    parse_data_indication,
    reason_of,
    request_bytes,
    run_server,
    stream_client,
    udp_client,
    udp_peer,
    wait_for_event,
    xor_address,
)


@pytest.fixture
async def server() -> AsyncIterator[TurnServer]:
    async with run_server() as running:
        yield running


@pytest.fixture
async def peer() -> AsyncIterator[UdpPeer]:
    async with udp_peer("127.0.0.1") as echo:
        yield echo


def _can_bind(family: socket.AddressFamily, host: str) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = socket.has_ipv6 and _can_bind(socket.AF_INET6, "::1")
HAVE_127_0_0_2 = _can_bind(socket.AF_INET, "127.0.0.2")


def _port_free(address: Address) -> bool:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
    except OSError:
        return False
    return True


async def _relay_ready(client: TurnClient, peer: UdpPeer, *, channel: int | None = None) -> Address:
    """Allocate, permit `peer`, optionally bind `channel` to it; returns the relayed address."""
    relayed = await client.allocated()
    assert (await client.create_permission(peer.address)).cls is MessageClass.SUCCESS
    if channel is not None:
        assert (await client.channel_bind(channel, peer.address)).cls is MessageClass.SUCCESS
    return relayed


async def _assert_channel_round_trip(
    client: TurnClient, peer: UdpPeer, relayed: Address, channel: int, payload: bytes
) -> None:
    client.send_channel_data(channel, payload)
    assert await peer.recv() == (payload, relayed)  # and the echo peer sends it back
    back_channel, back = channel_data.decode(await client.next_data())
    assert (back_channel, back) == (channel, payload)


# -- STUN Binding -------------------------------------------------------------------------


async def test_binding_reports_the_clients_address(server: TurnServer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        response = await client.request(Method.BINDING)

        assert response.cls is MessageClass.SUCCESS
        assert xor_address(response, Attr.XOR_MAPPED_ADDRESS) == client.local


async def test_binding_with_fingerprint_is_answered_with_fingerprint(server: TurnServer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        response = await client.request(Method.BINDING, fingerprint=True)

        # decode() has already checked the CRC; it must also be the last attribute.
        assert response.types()[-1] == Attr.FINGERPRINT
        assert xor_address(response, Attr.XOR_MAPPED_ADDRESS) == client.local


# -- TURN over UDP ------------------------------------------------------------------------


async def test_allocate_is_challenged_then_gives_a_relayed_address(server: TurnServer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        transport = (Attr.REQUESTED_TRANSPORT, attrs.pack_requested_transport(PROTO_UDP))
        challenge = await client.request(Method.ALLOCATE, [transport])
        assert error_code(challenge) == 401
        assert challenge.get(Attr.REALM) == REALM.encode()
        assert challenge.get(Attr.NONCE)

        client.learn(challenge)
        response = await client.allocate()

        assert response.cls is MessageClass.SUCCESS, error_code(response)
        assert verify_integrity(response, client.key)
        host, port = xor_address(response, Attr.XOR_RELAYED_ADDRESS)
        assert host == "127.0.0.1"
        assert RELAY_PORTS[0] <= port <= RELAY_PORTS[1]
        assert xor_address(response, Attr.XOR_MAPPED_ADDRESS) == client.local
        lifetime = response.get(Attr.LIFETIME)
        assert lifetime is not None
        assert attrs.unpack_uint32(lifetime) == server.config.default_lifetime


async def test_send_and_data_indications_reach_the_peer_and_back(
    server: TurnServer, peer: UdpPeer
) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        relayed = await _relay_ready(client, peer)

        client.send_indication(peer.address, b"hello peer")
        assert await peer.recv() == (b"hello peer", relayed)

        source, data = parse_data_indication(await client.next_data())
        assert (source, data) == (peer.address, b"hello peer")


@pytest.mark.parametrize("channel", [0x4001, 0x7FFF], ids=["rfc8656", "rfc5766-range"])
async def test_channel_data_flows_both_ways(
    server: TurnServer, peer: UdpPeer, channel: int
) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        relayed = await _relay_ready(client, peer, channel=channel)

        await _assert_channel_round_trip(client, peer, relayed, channel, b"over a channel")
        # After ChannelBind, peer data comes back as ChannelData, not a Data indication.
        peer.send(b"unprompted", relayed)
        assert channel_data.decode(await client.next_data()) == (channel, b"unprompted")


@pytest.mark.skipif(not HAVE_127_0_0_2, reason="127.0.0.2 is not usable on this host")
async def test_peer_without_permission_is_not_relayed(server: TurnServer, peer: UdpPeer) -> None:
    async with (
        udp_client(server.address(Transport.UDP)) as client,
        udp_peer("127.0.0.2", echo=False) as stranger,
    ):
        relayed = await _relay_ready(client, peer)

        # The stranger's datagram reaches the relay socket before the permitted one, so
        # if it were relayed it would arrive first.
        stranger.send(b"let me in", relayed)
        peer.send(b"permitted", relayed)
        assert parse_data_indication(await client.next_data()) == (peer.address, b"permitted")

        # Nor does the client reach the stranger: only the permitted peer gets data.
        client.send_indication(stranger.address, b"to the stranger")
        client.send_indication(peer.address, b"to the peer")
        assert await peer.recv() == (b"to the peer", relayed)
        echoed = [parse_data_indication(packet) for packet in await drain(client.data, expect=1)]
        assert echoed == [(peer.address, b"to the peer")]
        assert stranger.received.empty()


async def test_refresh_to_zero_ends_the_allocation(server: TurnServer, peer: UdpPeer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        relayed = await _relay_ready(client, peer)
        assert not _port_free(relayed)

        response = await client.refresh(lifetime=0)
        assert response.cls is MessageClass.SUCCESS, error_code(response)
        assert response.get(Attr.LIFETIME) == attrs.pack_uint32(0)

        assert error_code(await client.create_permission(peer.address)) == 437
        assert error_code(await client.refresh()) == 437
        assert _port_free(relayed), "relay port still bound after the allocation ended"
        deleted = [e for e in events_of(server) if e.kind is EventKind.DELETED]
        assert [e.end_reason for e in deleted] == ["refresh-0"]


async def test_retransmitted_allocate_gets_the_same_answer(server: TurnServer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        transport = (Attr.REQUESTED_TRANSPORT, attrs.pack_requested_transport(PROTO_UDP))
        client.learn(await client.request(Method.ALLOCATE, [transport]))  # the 401
        tid, packet = client.signed_bytes(Method.ALLOCATE, lambda _tid: [transport])
        client.expect(tid)
        client.send(packet)
        first = await client.reply(tid)
        client.expect(tid)
        client.send(packet)  # as if the first response had been lost (RFC 8489 §6.3.1)
        second = await client.reply(tid)

        assert first.cls is MessageClass.SUCCESS, error_code(first)
        assert second.raw == first.raw
        created = [e for e in events_of(server) if e.kind is EventKind.CREATED]
        assert len(created) == 1


async def test_loopback_peers_are_refused_unless_allowed(peer: UdpPeer) -> None:
    async with (
        run_server(allow_peers=()) as server,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        await client.allocated()

        assert error_code(await client.create_permission(peer.address)) == 403
        assert error_code(await client.channel_bind(0x4000, peer.address)) == 403
        client.send_indication(peer.address, b"sneaky")
        assert await drain(peer.received) == []


async def test_port_0_tries_again_when_another_process_holds_the_tcp_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With port 0 the TCP listener takes the port UDP was given; when that TCP port is taken
    (other processes bind ephemeral ports too), both are bound again on a new port."""
    listen_stream = TurnServer._listen_stream
    tried: list[int] = []

    async def taken_once(self: TurnServer, *args: Any) -> None:
        tried.append(args[2])
        if len(tried) == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        await listen_stream(self, *args)

    monkeypatch.setattr(TurnServer, "_listen_stream", taken_once)
    async with run_server() as server:
        assert len(tried) == 2
        assert server.address(Transport.UDP)[1] == server.address(Transport.TCP)[1] == tried[1]
        async with udp_client(server.address(Transport.UDP)) as client:
            assert (await client.allocate()).cls is MessageClass.SUCCESS


async def test_two_parties_on_this_relay_reach_each_other_without_a_peer_allow_list() -> None:
    """Two relay-only callers on one server: each may permit the other's relayed address even
    though loopback peers are refused, and the media is handed across inside the server."""
    async with (
        run_server(allow_peers=()) as server,
        udp_client(server.address(Transport.UDP)) as alice,
        udp_client(server.address(Transport.UDP)) as bob,
    ):
        relay_a = await alice.allocated()
        relay_b = await bob.allocated()
        # A relayed address that is not live stays refused by the peer filter.
        assert error_code(await alice.create_permission((relay_b[0], relay_b[1] + 1))) == 403
        assert (await alice.create_permission(relay_b)).cls is MessageClass.SUCCESS
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS

        alice.send_indication(relay_b, b"hi bob")
        assert await bob.next_data() == b"\x40\x01\x00\x06hi bob"
        bob.send_channel_data(0x4001, b"hi alice")
        assert parse_data_indication(await alice.next_data()) == (relay_b, b"hi alice")
        server.sweep()
        assert server.counters.packets_to_peer == 2
        assert server.counters.packets_to_client == 2


async def test_call_bound_send_indications_over_udp_reach_only_the_admitted_peer() -> None:
    """Call-bound mode over UDP: a permission is per IP and every allocation here shares the
    relay IP, so a Send indication toward a third party's relayed address is dropped and counted
    although alice's permission covers that IP; the partner admitted for alice gets its own."""
    async with (
        run_server(allow_peers=(), call_bound=True) as server,
        udp_client(server.address(Transport.UDP)) as alice,
        udp_client(server.address(Transport.UDP)) as bob,
        udp_client(server.address(Transport.UDP)) as carol,
    ):
        # One static user: this guard puts everyone in a call with everyone, so what admits a
        # peer is only the permission each client asked for (turn/callbound.py `admit`).
        server.handler.call_guard = lambda _user, _owner: True
        relay_a = await alice.allocated()
        relay_b = await bob.allocated()
        relay_c = await carol.allocated()
        assert (await alice.create_permission(relay_b)).cls is MessageClass.SUCCESS
        assert (await bob.create_permission(relay_a)).cls is MessageClass.SUCCESS
        assert (await carol.create_permission(relay_a)).cls is MessageClass.SUCCESS
        refused = server.counters.peers_refused

        alice.send_indication(relay_c, b"not for carol")
        alice.send_indication(relay_b, b"hi bob")
        assert parse_data_indication(await bob.next_data()) == (relay_a, b"hi bob")
        # the listener reads in order: carol's indication was handled before bob's
        assert server.counters.peers_refused == refused + 1
        assert await drain(carol.data) == []


async def test_early_packet_from_another_party_here_waits_until_the_client_sends_to_it() -> None:
    """The callee's first check reaches the caller's relay before the caller's permission for it:
    held, not dropped, and delivered only once the caller has sent toward that peer itself (after
    its ChannelBind *response*, which aioice needs before it accepts data from the peer)."""
    async with (
        run_server(allow_peers=()) as server,
        udp_client(server.address(Transport.UDP)) as alice,
        udp_client(server.address(Transport.UDP)) as bob,
    ):
        relay_a = await alice.allocated()
        relay_b = await bob.allocated()
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS
        bob.send_channel_data(0x4001, b"early check")
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS  # in order
        assert await drain(alice.data) == []  # no permission at alice's relay yet: held
        assert (await alice.channel_bind(0x4002, relay_b)).cls is MessageClass.SUCCESS
        assert await drain(alice.data) == []  # permitted, but alice has not sent toward bob yet
        alice.send_channel_data(0x4002, b"own check")
        assert await bob.next_data() == b"\x40\x01\x00\x09own check"
        assert await alice.next_data() == b"\x40\x02\x00\x0bearly check"
        bob.send_channel_data(0x4001, b"later")
        assert await alice.next_data() == b"\x40\x02\x00\x05later"


async def test_held_packets_go_to_a_silent_client_at_the_sweep_or_are_dropped() -> None:
    async with (
        run_server(allow_peers=()) as server,
        udp_client(server.address(Transport.UDP)) as alice,
        udp_client(server.address(Transport.UDP)) as bob,
        udp_client(server.address(Transport.UDP)) as carol,
    ):
        relay_a = await alice.allocated()
        relay_b = await bob.allocated()
        relay_c = await carol.allocated()
        # Never permitted: held across two sweeps, then dropped.
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS
        bob.send_channel_data(0x4001, b"stale")
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS  # in order
        server.sweep()
        server.sweep()
        assert (await alice.create_permission(relay_b)).cls is MessageClass.SUCCESS
        alice.send_indication(relay_b, b"hello")
        assert await bob.next_data() == b"\x40\x01\x00\x05hello"
        assert await drain(alice.data) == []
        # Permitted but silent: what was held (at most 8) is delivered at the next sweep.
        assert (await bob.channel_bind(0x4002, relay_c)).cls is MessageClass.SUCCESS
        for n in range(12):
            bob.send_channel_data(0x4002, b"p%02d" % n)
        assert (await bob.channel_bind(0x4002, relay_c)).cls is MessageClass.SUCCESS  # in order
        assert (await carol.create_permission(relay_b)).cls is MessageClass.SUCCESS
        assert await drain(carol.data) == []
        server.sweep()
        received = [parse_data_indication(d) for d in await drain(carol.data, expect=8)]
        assert received == [(relay_b, b"p%02d" % n) for n in range(8)]


async def _bursts_both_ways(count: int) -> tuple[list[bytes], list[bytes]]:
    """`count` datagrams sent back to back by the client, then by the peer: what each side got."""
    async with (
        run_server() as server,
        udp_peer(echo=False) as peer,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        relayed = await _relay_ready(client, peer, channel=0x4006)
        for i in range(count):
            client.send_channel_data(0x4006, i.to_bytes(2, "big") * 80)
        at_peer = [data[:2] for data, _ in await drain(peer.received, expect=count)]
        for i in range(count):
            peer.send(i.to_bytes(2, "big") * 80, relayed)
        at_client = [channel_data.decode(d)[1][:2] for d in await drain(client.data, expect=count)]
        return at_peer, at_client


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_bursts_arrive_whole_and_in_order_both_ways(loop: str) -> None:
    """The listener reads at most as many datagrams per callback as it found last time, a relay
    socket one: the loop (uvloop in production, asyncio's selector loop without it) must call
    again while datagrams are queued."""
    bursts = _bursts_both_ways(200)
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        at_peer, at_client = uvloop.run(bursts)
    else:
        at_peer, at_client = asyncio.run(bursts)
    sent = [i.to_bytes(2, "big") for i in range(200)]
    assert at_peer == sent
    assert at_client == sent


async def test_held_packets_keep_their_order_and_a_peer_on_the_same_ip_is_not_held() -> None:
    """One forwarding rule for peer data: packets arriving on the relay socket from an outside
    peer on the relay's own IP go through at once, while another party's early packets stay held
    and reach the client in their order, ahead of what that party sends later."""
    async with (
        run_server() as server,
        udp_client(server.address(Transport.UDP)) as alice,
        udp_client(server.address(Transport.UDP)) as bob,
        udp_peer("127.0.0.1", echo=False) as outside,
    ):
        relay_a = await alice.allocated()
        relay_b = await bob.allocated()
        assert relay_a[0] == relay_b[0] == outside.address[0]
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS
        for n in range(3):
            bob.send_channel_data(0x4001, b"early %d" % n)
        assert (await bob.channel_bind(0x4001, relay_a)).cls is MessageClass.SUCCESS  # in order
        # Alice's channel to the outside peer permits its IP, the IP of bob's relay too.
        assert (await alice.channel_bind(0x4003, outside.address)).cls is MessageClass.SUCCESS
        outside.send(b"from outside", relay_a)
        assert await alice.next_data() == b"\x40\x03\x00\x0cfrom outside"
        assert await drain(alice.data) == []  # bob's packets wait for alice to send toward bob
        bob.send_channel_data(0x4001, b"later")
        alice.send_indication(relay_b, b"hi bob")
        assert await bob.next_data() == b"\x40\x01\x00\x06hi bob"
        received = [parse_data_indication(d) for d in await drain(alice.data)]
        assert received == [(relay_b, b"early %d" % n) for n in range(3)] + [(relay_b, b"later")]


# -- TURN over TCP ------------------------------------------------------------------------


async def test_tcp_relay_with_data_indications_and_padded_channel_data(
    server: TurnServer, peer: UdpPeer
) -> None:
    async with stream_client(server.address(Transport.TCP)) as client:
        relayed = await _relay_ready(client, peer)

        client.send_indication(peer.address, b"tcp hello")
        assert await peer.recv() == (b"tcp hello", relayed)
        assert parse_data_indication(await client.next_data()) == (peer.address, b"tcp hello")

        assert (await client.channel_bind(0x4002, peer.address)).cls is MessageClass.SUCCESS
        client.send_channel_data(0x4002, b"12345")  # 5 bytes, padded to 8 on the wire
        assert await peer.recv() == (b"12345", relayed)  # exactly 5 bytes, no padding
        frame = await client.next_data()
        assert frame == b"\x40\x02\x00\x05" + b"12345" + b"\x00\x00\x00"


async def test_tcp_framing_two_messages_in_one_write_and_one_split_in_two(
    server: TurnServer,
) -> None:
    async with stream_client(server.address(Transport.TCP)) as client:
        tid1, first = request_bytes(Method.BINDING)
        tid2, second = request_bytes(Method.BINDING, fingerprint=True)
        client.expect(tid1)
        client.expect(tid2)
        client.send(first + second)
        for tid in (tid1, tid2):
            response = await client.reply(tid)
            assert xor_address(response, Attr.XOR_MAPPED_ADDRESS) == client.local

        tid3, third = request_bytes(Method.BINDING)
        client.expect(tid3)
        client.send(third[:7])
        await asyncio.sleep(0.05)  # let the first half arrive on its own
        client.send(third[7:])
        assert (await client.reply(tid3)).cls is MessageClass.SUCCESS


async def test_closing_the_tcp_connection_deletes_the_allocation(
    server: TurnServer, peer: UdpPeer
) -> None:
    async with stream_client(server.address(Transport.TCP)) as client:
        relayed = await _relay_ready(client, peer)
        assert len(server.manager) == 1

    await wait_for_event(server, lambda e: e.kind is EventKind.DELETED)
    deleted = [e for e in events_of(server) if e.kind is EventKind.DELETED]
    assert [(e.end_reason, e.transport, e.relay) for e in deleted] == [
        ("client-closed", Transport.TCP, relayed)
    ]
    assert len(server.manager) == 0
    assert _port_free(relayed)


async def test_stopping_the_server_disconnects_tcp_clients() -> None:
    async with (
        run_server() as server,
        stream_client(server.address(Transport.TCP)) as client,
    ):
        await client.allocated()
        await server.stop()

        await asyncio.wait_for(client.closed.wait(), 30.0)


# -- TURN over TLS ------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca, str(cert_file), str(key_file)


async def test_tls_binding_and_allocate(tls_files: tuple[trustme.CA, str, str]) -> None:
    ca, cert_file, key_file = tls_files
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with (
        run_server(
            tls_listen=(("127.0.0.1", 0),), cert_file=cert_file, key_file=key_file
        ) as server,
        udp_peer() as peer,
        stream_client(server.address(Transport.TLS), context) as client,
    ):
        binding = await client.request(Method.BINDING)
        assert xor_address(binding, Attr.XOR_MAPPED_ADDRESS) == client.local

        relayed = await _relay_ready(client, peer, channel=0x4003)
        client.send_channel_data(0x4003, b"tls!!")
        assert await peer.recv() == (b"tls!!", relayed)
        assert await client.next_data() == b"\x40\x03\x00\x05tls!!\x00\x00\x00"
        created = [e for e in events_of(server) if e.kind is EventKind.CREATED]
        assert [e.transport for e in created] == [Transport.TLS]


# -- IPv6 (RFC 6156) ----------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_allocation_relays_to_an_ipv6_peer() -> None:
    family_v6 = (Attr.REQUESTED_ADDRESS_FAMILY, attrs.pack_family(FAMILY_IPV6))
    async with (
        run_server(listen=(("127.0.0.1", 0), ("::1", 0)), relay_ip6="::1") as server,
        udp_peer("::1") as peer,
        udp_peer("127.0.0.1") as peer4,
    ):
        v6_listener = next(a for t, a in server.bound if t is Transport.UDP and ":" in a[0])
        async with udp_client(v6_listener) as client:
            binding = await client.request(Method.BINDING)
            assert xor_address(binding, Attr.XOR_MAPPED_ADDRESS) == client.local

            relayed = await client.allocated(family_v6)
            assert relayed[0] == "::1"
            assert RELAY_PORTS[0] <= relayed[1] <= RELAY_PORTS[1]

            assert (await client.create_permission(peer.address)).cls is MessageClass.SUCCESS
            client.send_indication(peer.address, b"over v6")
            assert await peer.recv() == (b"over v6", relayed)
            assert parse_data_indication(await client.next_data()) == (peer.address, b"over v6")

            # An IPv6-only allocation cannot reach an IPv4 peer (RFC 8656 §10.2: 443).
            assert error_code(await client.create_permission(peer4.address)) == 443


# -- lifetimes on an injected clock -------------------------------------------------------


async def test_allocation_expires_after_its_lifetime() -> None:
    clock = ManualClock()
    async with (
        run_server(clock=clock) as server,
        udp_peer() as peer,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        await _relay_ready(client, peer)
        lifetime = server.config.default_lifetime

        clock.advance(lifetime - 1)
        server.sweep()
        assert (await client.create_permission(peer.address)).cls is MessageClass.SUCCESS

        clock.advance(2)
        server.sweep()
        deleted = [e for e in events_of(server) if e.kind is EventKind.DELETED]
        assert [e.end_reason for e in deleted] == ["expired"]
        assert error_code(await client.refresh()) == 437


async def test_refresh_below_the_default_lifetime_gets_the_default() -> None:
    clock = ManualClock()
    async with (
        run_server(clock=clock) as server,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        await client.allocated()
        response = await client.refresh(lifetime=30)
        clock.advance(31)
        server.sweep()

        assert response.get(Attr.LIFETIME) == attrs.pack_uint32(server.config.default_lifetime)
        assert len(server.manager) == 1


@pytest.mark.skipif(not HAVE_127_0_0_2, reason="127.0.0.2 is not usable on this host")
async def test_expired_permission_stops_peer_data() -> None:
    clock = ManualClock()
    async with (
        run_server(clock=clock) as server,
        udp_peer() as peer,
        udp_peer("127.0.0.2") as later_peer,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        relayed = await _relay_ready(client, peer)
        clock.advance(server.config.permission_lifetime + 1)
        server.sweep()
        assert (await client.create_permission(later_peer.address)).cls is MessageClass.SUCCESS

        # Both datagrams land on the same relay socket in this order; only the second may pass.
        peer.send(b"expired", relayed)
        later_peer.send(b"fresh", relayed)
        assert parse_data_indication(await client.next_data()) == (later_peer.address, b"fresh")
        assert await drain(client.data) == []


# -- quotas -------------------------------------------------------------------------------


async def test_second_allocation_over_the_user_quota_is_refused() -> None:
    async with run_server(max_allocations_per_user=1) as server:
        address = server.address(Transport.UDP)
        async with udp_client(address) as first, udp_client(address) as second:
            await first.allocated()
            refused = await second.allocate()
            assert error_code(refused) == 486
            # the reason phrase names the limit, so an operator knows which setting to change
            assert reason_of(refused) == (
                "Allocation Quota Reached: 1 per user (max_allocations_per_user)"
            )

            # Ending the first allocation gives the quota back.
            assert (await first.refresh(lifetime=0)).cls is MessageClass.SUCCESS
            assert (await second.allocate()).cls is MessageClass.SUCCESS


async def _burst_through_capped_relay(server: TurnServer, peer: UdpPeer) -> list[bytes]:
    async with udp_client(server.address(Transport.UDP)) as client:
        await _relay_ready(client, peer, channel=0x4004)
        for i in range(50):
            client.send_channel_data(0x4004, i.to_bytes(2, "big") * 250)  # 500 bytes each
        return [data for data, _ in await drain(peer.received)]


async def test_bandwidth_cap_drops_most_of_a_burst() -> None:
    async with (
        run_server(max_bandwidth_per_allocation=2000) as server,
        udp_peer(echo=False) as peer,
    ):
        received = await _burst_through_capped_relay(server, peer)

        # 2000 B/s with one second of burst: about 4 of the 50 packets of 500 bytes pass.
        assert 1 <= len(received) <= 10, len(received)
        assert all(len(data) == 500 for data in received)


async def test_bandwidth_cap_drops_are_counted() -> None:
    async with (
        run_server(max_bandwidth_per_allocation=2000) as server,
        udp_peer(echo=False) as peer,
    ):
        received = await _burst_through_capped_relay(server, peer)

        assert server.counters.bandwidth_dropped == 50 - len(received)


async def test_bandwidth_cap_holds_for_channel_data_from_the_peer() -> None:
    async with (
        run_server(max_bandwidth_per_allocation=2000) as server,
        udp_peer(echo=False) as peer,
        udp_client(server.address(Transport.UDP)) as client,
    ):
        relayed = await _relay_ready(client, peer, channel=0x4005)
        for i in range(50):
            peer.send(i.to_bytes(2, "big") * 250, relayed)
        received = [channel_data.decode(d) for d in await drain(client.data)]

        assert 1 <= len(received) <= 10, len(received)
        assert [channel for channel, _ in received] == [0x4005] * len(received)
        assert [data for _, data in received] == sorted(data for _, data in received)  # in order
        assert server.counters.bandwidth_dropped == 50 - len(received)


# -- robustness ---------------------------------------------------------------------------


async def test_garbage_datagrams_are_dropped_and_counted(server: TurnServer) -> None:
    tid = new_transaction_id()
    binding = encode(build(Method.BINDING, MessageClass.REQUEST, tid))
    bad_length = binding[:2] + (8).to_bytes(2, "big") + binding[4:]  # says 8, carries 0
    garbage = [
        b"\xff" * 40,  # neither STUN nor ChannelData
        b"\x00\x01",  # too short for anything
        bad_length,
        binding[:12],  # truncated header
        channel_data.encode(0x4000, b"no allocation"),  # ChannelData from a stranger
    ]
    async with udp_client(server.address(Transport.UDP)) as client:
        before = server.counters.malformed_dropped
        for packet in garbage:
            client.send(packet)
        # Same socket, same order: by the time this is answered, all the garbage was read.
        response = await client.request(Method.BINDING)

        assert xor_address(response, Attr.XOR_MAPPED_ADDRESS) == client.local
        assert server.counters.malformed_dropped - before == len(garbage)
        assert client.data.empty()  # nothing answered the garbage


async def test_tcp_garbage_closes_that_connection_only(server: TurnServer, peer: UdpPeer) -> None:
    async with (
        udp_client(server.address(Transport.UDP)) as bystander,
        stream_client(server.address(Transport.TCP)) as tcp_bystander,
        stream_client(server.address(Transport.TCP)) as vandal,
    ):
        relayed = await _relay_ready(bystander, peer, channel=0x4005)

        vandal.send(b"\xff" * 16)
        await asyncio.wait_for(vandal.closed.wait(), 30.0)

        await _assert_channel_round_trip(bystander, peer, relayed, 0x4005, b"still here")
        binding = await tcp_bystander.request(Method.BINDING)
        assert xor_address(binding, Attr.XOR_MAPPED_ADDRESS) == tcp_bystander.local


# -- accounting events --------------------------------------------------------------------


async def test_events_account_for_the_traffic_both_ways(server: TurnServer, peer: UdpPeer) -> None:
    async with udp_client(server.address(Transport.UDP)) as client:
        relayed = await _relay_ready(client, peer, channel=0x4006)
        # Echo peer: each payload goes to the peer and comes back once.
        client.send_indication(peer.address, b"a" * 11)
        await peer.recv()
        await client.next_data()
        await _assert_channel_round_trip(client, peer, relayed, 0x4006, b"b" * 29)
        # the counters so far, as the sweeper sends them every few seconds while they grow
        # (it may already have sent them itself on a slow machine: then this sends nothing)
        server.manager.report_progress()
        assert server.manager.report_progress() == 0  # nothing new relayed since
        assert (await client.refresh(lifetime=0)).cls is MessageClass.SUCCESS

    # (the sweeper may have sent its own PROGRESS events on a slow machine)
    progress = [e for e in events_of(server) if e.kind is EventKind.PROGRESS]
    assert progress and (progress[-1].packets_to_peer, progress[-1].bytes_to_client) == (2, 40)
    events = [e for e in events_of(server) if e.kind is not EventKind.PROGRESS]
    assert [e.kind for e in events] == [
        EventKind.CREATED,
        EventKind.PERMISSION,
        EventKind.CHANNEL,
        EventKind.DELETED,
    ]
    created, permission, channel, deleted = events
    assert permission.detail == peer.address[0]
    assert channel.detail == f"0x4006 {peer.address[0]}:{peer.address[1]}"
    assert len({e.allocation_id for e in events_of(server)}) == 1
    assert (created.user, created.username, created.client, created.relay) == (
        USER,
        USER,
        client.local,
        relayed,
    )
    assert deleted.end_reason == "refresh-0"
    assert deleted.peers == (peer.address[0],)
    assert (deleted.packets_to_peer, deleted.bytes_to_peer) == (2, 40)
    assert (deleted.packets_to_client, deleted.bytes_to_client) == (2, 40)
    assert PASSWORD not in repr(deleted)
