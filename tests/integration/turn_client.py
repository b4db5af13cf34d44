"""A minimal STUN/TURN client over real loopback sockets, built on callgate's own codec.

Not aioice: the point is to speak to the server packet by packet, so tests can check framing,
padding and error codes exactly. `run_server` binds a TurnServer on port 0 behind `async with`;
`udp_client` / `stream_client` open a client; `udp_peer` opens a UDP peer on the far side of
the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, cast

from callgate.clock import Clock
from callgate.stun import attributes as attrs
from callgate.stun import channel_data
from callgate.stun.constants import PROTO_UDP, Attr, MessageClass, Method
from callgate.stun.message import Message, build, decode, encode, new_transaction_id
from callgate.turn.auth import long_term_key
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from callgate.types import Address
from callgate.types.events import AllocationEvent, ListSink

TIMEOUT = 15.0  # seconds to wait for any one packet (generous: a loaded machine is late)
QUIET = 0.3  # seconds of silence that end a "collect what arrives" window
RELAY_PORTS = (61000, 61199)  # above Linux's default ephemeral range
USER, PASSWORD = "alice", "wonderland"
REALM = "callgate.test"

Attribute = tuple[int, bytes]


# -- server --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def run_server(
    *, clock: Clock | None = None, events: ListSink | None = None, **overrides: Any
) -> AsyncIterator[TurnServer]:
    """A TurnServer on 127.0.0.1 port 0 (UDP+TCP), loopback peers allowed, one static user."""
    settings: dict[str, Any] = {
        "listen": (("127.0.0.1", 0),),
        "relay_port_min": RELAY_PORTS[0],
        "relay_port_max": RELAY_PORTS[1],
        "realm": REALM,
        "users": {USER: PASSWORD},
        "allow_peers": ("127.0.0.0/8", "::1/128"),
    }
    settings.update(overrides)
    server = TurnServer(TurnConfig(**settings), events=events or ListSink(), clock=clock)
    async with server:
        yield server


def events_of(server: TurnServer) -> list[AllocationEvent]:
    sink = server.events
    assert isinstance(sink, ListSink)
    return sink.events


async def wait_for_event(server: TurnServer, predicate: Callable[[AllocationEvent], bool]) -> None:
    async def poll() -> None:
        while not any(predicate(e) for e in events_of(server)):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), TIMEOUT)


# -- message helpers ----------------------------------------------------------------------


def request_bytes(
    method: int,
    attributes: Iterable[Attribute] = (),
    *,
    key: bytes | None = None,
    fingerprint: bool = False,
    tid: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(transaction id, encoded request)."""
    tid = tid or new_transaction_id()
    message = build(method, MessageClass.REQUEST, tid, attributes)
    return tid, encode(message, key, fingerprint=fingerprint)


def error_code(message: Message) -> int | None:
    value = message.get(Attr.ERROR_CODE)
    return None if value is None else attrs.unpack_error_code(value)[0]


def reason_of(message: Message) -> str | None:
    """The reason phrase of an error response (RFC 8489 §14.8)."""
    value = message.get(Attr.ERROR_CODE)
    return None if value is None else attrs.unpack_error_code(value)[1]


def xor_address(message: Message, attr: int) -> Address:
    value = message.get(attr)
    assert value is not None, f"no attribute 0x{attr:04x} in {message}"
    return attrs.unpack_xor_address(value, message.transaction_id)


def peer_attr(peer: Address, tid: bytes) -> Attribute:
    return (Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(peer, tid))


def parse_data_indication(packet: bytes) -> tuple[Address, bytes]:
    message = decode(packet)
    assert (message.method, message.cls) == (Method.DATA, MessageClass.INDICATION), message
    data = message.get(Attr.DATA)
    assert data is not None
    return xor_address(message, Attr.XOR_PEER_ADDRESS), data


# -- client --------------------------------------------------------------------------------


class TurnClient:
    """Sends requests and matches responses by transaction id; everything else the server
    sends (Data indications, ChannelData) lands in `data`, one packet per item, as received."""

    def __init__(self, send: Callable[[bytes], None], local: Address, *, stream: bool) -> None:
        self.send = send
        self.local = local
        self.stream = stream
        self.data: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.username = USER
        self.password = PASSWORD
        self.realm: str | None = None
        self.nonce: str | None = None
        self._pending: dict[bytes, asyncio.Future[Message]] = {}

    # incoming
    def feed(self, packet: bytes) -> None:
        if packet and packet[0] < 0x40:
            message = decode(packet)
            future = self._pending.get(message.transaction_id)
            if message.cls in (MessageClass.SUCCESS, MessageClass.ERROR) and future is not None:
                if not future.done():
                    future.set_result(message)
                return
        self.data.put_nowait(packet)

    async def next_data(self) -> bytes:
        return await asyncio.wait_for(self.data.get(), TIMEOUT)

    # requests
    def expect(self, tid: bytes) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[tid] = future
        return future

    async def reply(self, tid: bytes) -> Message:
        try:
            return await asyncio.wait_for(self._pending[tid], TIMEOUT)
        finally:
            self._pending.pop(tid, None)

    async def request(
        self,
        method: int,
        attributes: Iterable[Attribute] = (),
        *,
        key: bytes | None = None,
        fingerprint: bool = False,
    ) -> Message:
        tid, packet = request_bytes(method, attributes, key=key, fingerprint=fingerprint)
        self.expect(tid)
        self.send(packet)
        return await self.reply(tid)

    # long-term credentials (RFC 8489 §9.2)
    @property
    def key(self) -> bytes:
        assert self.realm is not None, "no challenge seen yet"
        return long_term_key(self.username, self.realm, self.password)

    def learn(self, challenge: Message) -> None:
        """Take REALM and NONCE from a 401/438 response."""
        realm, nonce = challenge.get(Attr.REALM), challenge.get(Attr.NONCE)
        assert realm is not None and nonce is not None, challenge
        self.realm, self.nonce = realm.decode(), nonce.decode()

    async def authed(
        self, method: int, build_attrs: Callable[[bytes], Sequence[Attribute]] | None = None
    ) -> Message:
        """An authenticated request. `build_attrs(tid)` gives the attributes (XOR values depend
        on the transaction id). Answers a 401 (first time) or 438 (stale nonce) once."""
        make = build_attrs or (lambda _tid: ())
        if self.nonce is None:
            response = await self._send_request(method, make, sign=False)
            if error_code(response) != 401:
                return response
            self.learn(response)
        response = await self._send_request(method, make, sign=True)
        if error_code(response) == 438:
            self.learn(response)
            response = await self._send_request(method, make, sign=True)
        return response

    async def _send_request(
        self, method: int, make: Callable[[bytes], Sequence[Attribute]], *, sign: bool
    ) -> Message:
        if sign:
            tid, packet = self.signed_bytes(method, make)
        else:
            tid = new_transaction_id()
            packet = request_bytes(method, make(tid), tid=tid)[1]
        self.expect(tid)
        self.send(packet)
        return await self.reply(tid)

    def signed_bytes(
        self, method: int, make: Callable[[bytes], Sequence[Attribute]] = lambda _tid: ()
    ) -> tuple[bytes, bytes]:
        """(transaction id, request) with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY."""
        assert self.realm is not None and self.nonce is not None
        tid = new_transaction_id()
        body = [
            *make(tid),
            (Attr.USERNAME, self.username.encode()),
            (Attr.REALM, self.realm.encode()),
            (Attr.NONCE, self.nonce.encode()),
        ]
        return tid, encode(build(method, MessageClass.REQUEST, tid, body), self.key)

    # TURN methods (RFC 8656)
    async def allocate(self, *extra: Attribute) -> Message:
        transport = (Attr.REQUESTED_TRANSPORT, attrs.pack_requested_transport(PROTO_UDP))
        return await self.authed(Method.ALLOCATE, lambda _tid: [transport, *extra])

    async def refresh(self, lifetime: int | None = None) -> Message:
        body = [] if lifetime is None else [(Attr.LIFETIME, attrs.pack_uint32(lifetime))]
        return await self.authed(Method.REFRESH, lambda _tid: body)

    async def create_permission(self, *peers: Address) -> Message:
        return await self.authed(
            Method.CREATE_PERMISSION, lambda tid: [peer_attr(p, tid) for p in peers]
        )

    async def channel_bind(self, channel: int, peer: Address) -> Message:
        number = (Attr.CHANNEL_NUMBER, attrs.pack_channel_number(channel))
        return await self.authed(Method.CHANNEL_BIND, lambda tid: [number, peer_attr(peer, tid)])

    def send_indication(self, peer: Address, data: bytes) -> None:
        tid = new_transaction_id()
        body = [peer_attr(peer, tid), (Attr.DATA, data)]
        self.send(encode(build(Method.SEND, MessageClass.INDICATION, tid, body)))

    def send_channel_data(self, channel: int, data: bytes) -> None:
        """ChannelData, padded to 4 bytes over TCP/TLS (RFC 8656 §12.5)."""
        self.send(channel_data.encode(channel, data, pad=self.stream))

    async def allocated(self, *extra: Attribute) -> Address:
        """Allocate and return the relayed address; fails the test on an error response."""
        response = await self.allocate(*extra)
        assert response.cls is MessageClass.SUCCESS, f"Allocate failed: {error_code(response)}"
        return xor_address(response, Attr.XOR_RELAYED_ADDRESS)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_packet(data)


@contextlib.asynccontextmanager
async def udp_client(server: Address, local_host: str | None = None) -> AsyncIterator[TurnClient]:
    """A UDP TURN client; `local_host` picks its source address (e.g. another 127/8 address)."""
    loop = asyncio.get_running_loop()
    holder: list[TurnClient] = []
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpProtocol(lambda data: holder[0].feed(data)),
        remote_addr=server,
        local_addr=(local_host, 0) if local_host is not None else None,
    )
    local = transport.get_extra_info("sockname")
    # Room for a burst: the kernel fast path delivers one as fast as the sender sends it.
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client = TurnClient(transport.sendto, (local[0], local[1]), stream=False)
    holder.append(client)
    try:
        yield client
    finally:
        transport.close()


async def _read_frames(reader: asyncio.StreamReader, client: TurnClient) -> None:
    """Split the byte stream into STUN messages and padded ChannelData (RFC 8656 §12.5)."""
    try:
        while True:
            head = await reader.readexactly(4)
            length = int.from_bytes(head[2:4], "big")
            if head[0] < 0x40:
                rest = await reader.readexactly(16 + length)
            else:
                rest = await reader.readexactly(length + (4 - length % 4) % 4)
            client.feed(head + rest)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        client.closed.set()


@contextlib.asynccontextmanager
async def stream_client(
    server: Address, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[TurnClient]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            server[0],
            server[1],
            ssl=ssl_context,
            server_hostname=server[0] if ssl_context else None,
        ),
        TIMEOUT,
    )
    local = writer.get_extra_info("sockname")
    client = TurnClient(writer.write, (local[0], local[1]), stream=True)
    task = asyncio.create_task(_read_frames(reader, client))
    try:
        yield client
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- peers ----------------------------------------------------------------------------------


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP endpoint on the far side of the relay; echoes what it receives when `echo`."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        local = transport.get_extra_info("sockname")
        self.address = (local[0], local[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source = (addr[0], addr[1])
        self.received.put_nowait((data, source))
        if self.echo:
            self.send(data, source)

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def recv(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.received.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def udp_peer(host: str = "127.0.0.1", *, echo: bool = True) -> AsyncIterator[UdpPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: UdpPeer(echo), local_addr=(host, 0)
    )
    try:
        yield peer
    finally:
        transport.close()


async def drain(queue: asyncio.Queue[Any], quiet: float = QUIET, expect: int = 0) -> list[Any]:
    """Everything that arrives until `quiet` seconds pass with nothing new; the first `expect`
    items are waited for up to TIMEOUT each (a loaded machine can pause longer than `quiet`
    between two of them), so only what comes beyond them is judged by the quiet window."""
    items: list[Any] = []
    while True:
        try:
            wait = TIMEOUT if len(items) < expect else quiet
            items.append(await asyncio.wait_for(queue.get(), wait))
        except TimeoutError:
            return items
