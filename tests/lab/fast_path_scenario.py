"""One relay run across three network namespaces, printed as JSON (tests/lab/test_fast_path.py).

    python -m tests.lab.fast_path_scenario RELAY_NS CLIENT_NS PEER_NS on|off|capped

`capped`: the fast path on, and a bandwidth cap per allocation (generous: nothing is dropped) that
keeps every allocation in userspace, where the cap is enforced.

The relay (a TurnServer in this process) lives in RELAY_NS: listener 10.77.1.1 toward the client's
veth, relayed address 10.77.2.1 toward the peer's. The client's and the peer's sockets are made in
their own namespaces (setns around socket()), so every relayed datagram crosses two veth pairs
and, with the fast path on, the relay namespace's tc ingress. Python 3.11 has no os.setns: libc's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

from callgate.stun.constants import MessageClass, Method
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from tests.integration.turn_client import TurnClient

LISTEN, RELAY, CLIENT, PEER = "10.77.1.1", "10.77.2.1", "10.77.1.2", "10.77.2.2"
CHANNEL = 0x4000
PACKETS = 200
PERMISSION_S = 2
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """This thread in namespace `name` for the block."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        _libc.setns(home, _CLONE_NEWNET)
        os.close(home)
        os.close(target)


def udp_socket(ns: str, host: str) -> socket.socket:
    with netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


class _Feed(asyncio.DatagramProtocol):
    def __init__(self, client: TurnClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client.feed(data)


async def recv_all(sock: socket.socket, count: int) -> list[tuple[bytes, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    got = []
    for _ in range(count):
        data, frm = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 10)
        got.append((data, frm))
    return got


def nothing_waiting(sock: socket.socket) -> bool:
    try:
        sock.recvfrom(2048)
    except BlockingIOError:
        return True
    return False


async def scenario(client_ns: str, peer_ns: str, mode: str) -> dict[str, Any]:
    config = TurnConfig(
        listen=((LISTEN, 3478),),
        relay_ip=RELAY,
        relay_port_min=50000,
        relay_port_max=50100,
        realm="lab",
        users={"alice": "alice-password"},
        allow_peers=("10.77.0.0/16",),
        permission_lifetime=PERMISSION_S,
        fast_path="off" if mode == "off" else "required",
        max_bandwidth_per_allocation=10_000_000 if mode == "capped" else 0,
    )
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}
    async with TurnServer(config) as server:
        csock = udp_socket(client_ns, CLIENT)
        peer = udp_socket(peer_ns, PEER)
        peer_address = peer.getsockname()
        client = TurnClient(csock.send, csock.getsockname(), stream=False)
        client.username, client.password = "alice", "alice-password"
        csock.connect((LISTEN, 3478))
        transport, _ = await loop.create_datagram_endpoint(lambda: _Feed(client), sock=csock)
        allocated = await client.allocated()
        assert (await client.channel_bind(CHANNEL, peer_address)).cls is MessageClass.SUCCESS
        allocation = next(iter(server.manager))

        # 1. the same datagrams, in order, both ways; seen from the right addresses. First one
        # round trip, as a call's first packets: the relay's neighbour entries get resolved (the
        # datagrams that wait for that go through userspace and could be overtaken).
        client.send_channel_data(CHANNEL, b"hello")
        ((hello, _),) = await recv_all(peer, 1)
        peer.sendto(hello, (allocated[0], allocated[1]))
        await client.next_data()
        payloads = [struct.pack("!I", i) + os.urandom(168) for i in range(PACKETS)]
        for payload in payloads:
            client.send_channel_data(CHANNEL, payload)
        at_peer = await recv_all(peer, PACKETS)
        for data, _ in at_peer:
            peer.sendto(data[::-1], (allocated[0], allocated[1]))
        echoes = [await client.next_data() for _ in range(PACKETS)]
        out["peer_got_in_order"] = [d for d, _ in at_peer] == payloads
        out["peer_saw_relayed_address"] = all(f == tuple(allocated) for _, f in at_peer)
        expected = [struct.pack("!HH", CHANNEL, len(p)) + p[::-1] for p in payloads]
        out["client_got_in_order"] = echoes == expected
        server.sweep()  # folds the kernel's counts into the allocation
        out["counters"] = [
            allocation.packets_to_peer,
            allocation.bytes_to_peer,
            allocation.packets_to_client,
            allocation.bytes_to_client,
        ]
        fast = server.fast
        out["kernel_forwarded"] = fast.loaded.forwarded()[0] if fast is not None else 0

        # 2. malformed channel data is never forwarded by the kernel
        rng = random.Random(7)
        body = os.urandom(172)
        for _ in range(300):
            kind = rng.randrange(5)
            if kind == 0:  # length past the datagram
                frame = struct.pack("!HH", CHANNEL, len(body) + rng.randrange(1, 600)) + body
            elif kind == 1:  # shorter than the datagram (trailing bytes)
                frame = struct.pack("!HH", CHANNEL, rng.randrange(0, len(body))) + body
            elif kind == 2:  # truncated header
                frame = struct.pack("!H", CHANNEL)[: rng.randrange(1, 3)]
            elif kind == 3:  # reserved channel numbers (RFC 8656 §12)
                frame = struct.pack("!HH", rng.choice([0x5000, 0x7FFF, 0xFFFF]), len(body)) + body
            else:  # a channel never bound
                frame = struct.pack("!HH", 0x4001 + rng.randrange(0x0FFE), len(body)) + body
            csock.send(frame)
        await client.request(Method.BINDING)  # the listener read everything before
        kernel_after = fast.loaded.forwarded()[0] if fast is not None else 0
        out["kernel_forwarded_malformed"] = kernel_after - out["kernel_forwarded"]
        while not nothing_waiting(peer):
            pass  # userspace relays what it accepts (a ChannelData shorter than the datagram)

        # 3. an expired permission stops forwarding; a refresh brings it back
        await asyncio.sleep(PERMISSION_S)  # its lifetime over, userspace drops it from a sweep
        swept_by = loop.time() + 30  # waited for (a loaded machine sweeps late), not 1.5 s
        while peer_address[0] in allocation.permissions:  # the sweep syncs the kernel too
            assert loop.time() < swept_by, "the expired permission was never swept"
            await asyncio.sleep(0.05)
        client.send_channel_data(CHANNEL, b"late" * 10)
        await client.request(Method.BINDING)
        out["peer_empty_after_expiry"] = nothing_waiting(peer)
        assert (await client.create_permission(peer_address)).cls is MessageClass.SUCCESS
        client.send_channel_data(CHANNEL, b"again" * 10)
        ((data, _),) = await recv_all(peer, 1)
        out["refreshed_forwards"] = data == b"again" * 10

        # 4. a channel withdrawn (as call-bound mode does when the call ends) stops at once
        before = fast.loaded.forwarded()[0] if fast is not None else 0
        allocation.unbind_peer(peer_address)
        client.send_channel_data(CHANNEL, b"after the call" * 3)
        await client.request(Method.BINDING)
        after = fast.loaded.forwarded()[0] if fast is not None else 0
        out["unbound_stops"] = nothing_waiting(peer) and after == before

        # 5. two relay-only parties on this server (a call's usual shape): channel data from one
        # client reaches the other as ChannelData, both rewrites in one pass of the kernel
        pair = []
        for _ in range(2):
            sock = udp_socket(client_ns, CLIENT)
            party = TurnClient(sock.send, sock.getsockname(), stream=False)
            party.username, party.password = "alice", "alice-password"
            sock.connect((LISTEN, 3478))
            end, _ = await loop.create_datagram_endpoint(lambda p=party: _Feed(p), sock=sock)
            pair.append((party, await party.allocated(), end))
        (a, a_relay, _), (b, b_relay, _) = pair
        assert (await a.channel_bind(0x4010, b_relay)).cls is MessageClass.SUCCESS
        assert (await b.channel_bind(0x4020, a_relay)).cls is MessageClass.SUCCESS
        before = fast.loaded.forwarded()[0] if fast is not None else 0
        frames = [struct.pack("!I", i) + os.urandom(156) for i in range(50)]
        for frame in frames:
            a.send_channel_data(0x4010, frame)
        got = [await b.next_data() for _ in frames]
        out["relay_to_relay_in_order"] = got == [
            struct.pack("!HH", 0x4020, 160) + f for f in frames
        ]
        after = fast.loaded.forwarded()[0] if fast is not None else 0
        out["relay_to_relay_kernel"] = after - before

        # 6. deallocation removes the kernel's entries
        assert (await client.refresh(0)).cls is MessageClass.SUCCESS
        for party, _, end in pair:
            assert (await party.refresh(0)).cls is MessageClass.SUCCESS
            end.close()
        out["entries_left"] = fast.installed() if fast is not None else 0
        transport.close()
        peer.close()
    return out


def main() -> None:
    relay_ns, client_ns, peer_ns, mode = sys.argv[1:5]
    with netns(relay_ns):
        print(json.dumps(asyncio.run(scenario(client_ns, peer_ns, mode))))


if __name__ == "__main__":
    main()
