"""Random and mutated STUN / ChannelData input must not stop the server from serving.

Seeded `random`, a bounded number of packets: the same run every time. The fuzz traffic comes from
fresh sockets and from the five-tuple of a real, authenticated allocation with a channel bound,
so mutations reach the auth path and the ChannelData fast path, not only the unauthenticated front.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from aioice import stun
from aioice.utils import random_transaction_id

from callgate.types import Address, Transport
from tests.conftest import (
    LOOPBACK,
    PASSWORD,
    USER,
    EchoPeer,
    eventually,
    run_turn_server,
    server_address,
)

SEED = 20260601
UDP_PACKETS = 3000
TCP_CONNECTIONS = 12
TCP_FRAMES = 150
CHANNEL = 0x4001
MAGIC = 0x2112A442


def request(method: stun.Method, **attributes: Any) -> stun.Message:
    return stun.Message(method, stun.Class.REQUEST, random_transaction_id(), attributes)


def indication(method: stun.Method, **attributes: Any) -> stun.Message:
    return stun.Message(method, stun.Class.INDICATION, random_transaction_id(), attributes)


def seeds(peer: Address, key: bytes | None, nonce: bytes | None) -> list[bytes]:
    """Valid messages of every kind the server handles; the mutations start from these."""
    auth: dict[str, Any] = {}
    if key is not None and nonce is not None:
        auth = {"USERNAME": USER, "REALM": "test", "NONCE": nonce}
    messages = [
        request(stun.Method.BINDING),
        request(stun.Method.BINDING, SOFTWARE="fuzz", PRIORITY=12345),
        request(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 0x11000000, "LIFETIME": 600}),
        request(
            stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 0x11000000, "LIFETIME": 60}, **auth
        ),
        request(stun.Method.REFRESH, LIFETIME=600, **auth),
        request(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": peer}, **auth),
        request(
            stun.Method.CHANNEL_BIND,
            **{"CHANNEL-NUMBER": CHANNEL, "XOR-PEER-ADDRESS": peer},
            **auth,
        ),
        indication(stun.Method.SEND, **{"XOR-PEER-ADDRESS": peer, "DATA": b"x" * 40}),
    ]
    out = []
    for message in messages:
        if key is not None and "USERNAME" in message.attributes:
            message.add_message_integrity(key)
        message.add_fingerprint()
        out.append(bytes(message))
    out.append(struct.pack("!HH", CHANNEL, 5) + b"hello")
    out.append(struct.pack("!HH", 0x7FFF, 8) + b"12345678")
    return out


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """One of: byte flips, truncation, a bad length field, a bogus attribute, junk, a splice."""
    data = bytearray(packet)
    choice = rng.randrange(9)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del data[rng.randrange(len(data)) :]
    elif choice == 2 and len(data) >= 4:
        data[2:4] = struct.pack("!H", rng.choice([0, 1, 3, 0xFFFF, rng.randrange(0x10000)]))
    elif choice == 3 and len(data) >= 20:
        # An attribute whose length runs past the end, or an unknown comprehension-required one.
        kind = rng.choice([0x0001, 0x0006, 0x0008, 0x000C, 0x0012, 0x0019, 0x7777, 0x8028])
        length = rng.choice([0, 1, 3, 200, 0xFFFF])
        value = bytes(rng.randrange(256) for _ in range(min(length, rng.randrange(8))))
        data[20:20] = struct.pack("!HH", kind, length) + value
        data[2:4] = struct.pack("!H", max(0, len(data) - 20) & 0xFFFF)
    elif choice == 4:
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    elif choice == 5:
        # Random bytes that still look like STUN (first byte 0x00-0x3F) or ChannelData (0x40-0x7F).
        first = rng.choice([rng.randrange(0x40), rng.randrange(0x40, 0x80), rng.randrange(256)])
        data = bytearray([first]) + bytearray(rng.randbytes(rng.randrange(0, 120)))
    elif choice == 6 and len(data) >= 8:
        data[4:8] = struct.pack("!I", MAGIC ^ (1 << rng.randrange(32)))  # bad magic cookie
    elif choice == 7:
        data[0:2] = struct.pack("!H", rng.randrange(0x10000))  # any message type / channel
    else:
        data = bytearray(b"")
    return bytes(data)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.queue.put_nowait(data)


async def udp_socket(server: Address) -> tuple[asyncio.DatagramTransport, Inbox]:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Inbox, remote_addr=server)
    return transport, inbox


async def transact(
    transport: asyncio.DatagramTransport, inbox: Inbox, message: stun.Message
) -> stun.Message:
    """Send a request and wait for the response with its transaction id (other input ignored)."""
    transport.sendto(bytes(message))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15  # generous: a loaded machine answers late
    while True:
        data = await asyncio.wait_for(inbox.queue.get(), max(0.01, deadline - loop.time()))
        if data[:1] < b"\x40" and len(data) >= 20 and data[8:20] == message.transaction_id:
            return stun.parse_message(data)


async def binding(server: Address, kind: Transport) -> Address:
    """A Binding request over UDP or TCP; returns the XOR-MAPPED-ADDRESS."""
    message = request(stun.Method.BINDING)
    if kind == Transport.UDP:
        transport, inbox = await udp_socket(server)
        try:
            response = await transact(transport, inbox, message)
        finally:
            transport.close()
    else:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server), 15)
        try:
            writer.write(bytes(message))
            header = await asyncio.wait_for(reader.readexactly(20), 15)
            body = await asyncio.wait_for(
                reader.readexactly(struct.unpack("!H", header[2:4])[0]), 15
            )
            response = stun.parse_message(header + body)
        finally:
            writer.close()
    assert response.message_method == stun.Method.BINDING
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == message.transaction_id
    mapped: Address = response.attributes["XOR-MAPPED-ADDRESS"]
    return mapped


async def allocate_with_channel(
    server: Address, peer: Address
) -> tuple[asyncio.DatagramTransport, Inbox, bytes, bytes]:
    """A real allocation with CHANNEL bound to `peer`; returns the socket, key and nonce."""
    transport, inbox = await udp_socket(server)
    attrs = {"REQUESTED-TRANSPORT": 0x11000000}
    challenge = await transact(transport, inbox, request(stun.Method.ALLOCATE, **attrs))
    assert challenge.error_code == 401
    realm, nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
    key = hashlib.md5(f"{USER}:{realm}:{PASSWORD}".encode()).digest()
    auth = {"USERNAME": USER, "REALM": realm, "NONCE": nonce}

    async def authed(message: stun.Message) -> stun.Message:
        message.add_message_integrity(key)
        message.add_fingerprint()
        response = await transact(transport, inbox, message)
        assert response.message_class == stun.Class.RESPONSE, response.attributes
        return response

    await authed(request(stun.Method.ALLOCATE, **attrs, **auth))
    await authed(
        request(
            stun.Method.CHANNEL_BIND,
            **{"CHANNEL-NUMBER": CHANNEL, "XOR-PEER-ADDRESS": peer},
            **auth,
        )
    )
    return transport, inbox, key, nonce


async def paced(count: int, send: Callable[[int], None]) -> None:
    """Call send(i) count times, yielding to the loop (the server shares it) every few packets."""
    for i in range(count):
        send(i)
        if i % 25 == 24:
            await asyncio.sleep(0.002)


async def test_server_survives_fuzzing_and_still_answers_binding(echo_peer: EchoPeer) -> None:
    rng = random.Random(SEED)
    async with run_turn_server() as server:
        udp = server_address(server, Transport.UDP)
        tcp = server_address(server, Transport.TCP)
        assert await binding(udp, Transport.UDP) is not None

        # The allocation's channel works before the fuzzing.
        owner, owner_inbox, key, nonce = await allocate_with_channel(udp, echo_peer.address)
        owner.sendto(struct.pack("!HH", CHANNEL, 4) + b"ping")
        echoed = await asyncio.wait_for(owner_inbox.queue.get(), 15)
        assert echoed[:4] == struct.pack("!HH", CHANNEL, 4) and echoed[4:8] == b"ping"

        corpus = seeds(echo_peer.address, key, nonce)
        strangers = [await udp_socket(udp) for _ in range(4)]
        senders = [owner, *(transport for transport, _ in strangers)]

        def send_udp(i: int) -> None:
            packet = rng.choice(corpus)
            if rng.random() < 0.9:
                packet = mutate(rng, packet)
            rng.choice(senders).sendto(packet)

        await paced(UDP_PACKETS, send_udp)

        # TCP: framed streams of mutated messages, some announcing huge lengths and stopping.
        # The server may close a connection on bad framing; then the rest of it is not sent.
        loop = asyncio.get_running_loop()
        streams = []
        closed_by_server = 0
        for c in range(TCP_CONNECTIONS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            streams.append(sock)
            await loop.sock_connect(sock, tcp)
            frames = [mutate(rng, rng.choice(corpus)) for _ in range(TCP_FRAMES)]
            if c % 3 == 0:
                frames.append(struct.pack("!HHI", 0x0003, 0xFFFC, MAGIC) + b"\x00" * 12)
            elif c % 3 == 1:
                frames.append(struct.pack("!HH", 0x4000, 0xFFFF) + b"\x00" * 100)
            try:
                for i, frame in enumerate(frames):
                    await loop.sock_sendall(sock, frame)
                    if i % 30 == 29:
                        await asyncio.sleep(0.002)
            except OSError:
                closed_by_server += 1

        await asyncio.sleep(0.3)
        # Whatever the fuzzing did, the server answers STUN on both transports, new and old.
        assert (await binding(udp, Transport.UDP))[0] == LOOPBACK
        assert (await binding(tcp, Transport.TCP))[0] == LOOPBACK
        assert (await binding(udp, Transport.UDP))[0] == LOOPBACK
        await eventually(
            lambda: server.counters.malformed_dropped > 0, what="malformed input was counted"
        )
        assert server.counters.binding_requests >= 3

        for sock in streams:
            sock.close()
        for transport, _ in strangers:
            transport.close()
        owner.close()
