"""SIP over UDP and TCP (RFC 3261 §18): listeners, framing, and where responses go.

UDP: one datagram is one message. TCP: messages framed by Content-Length (mandatory there),
at most `MAX_CONNECTIONS` connections, each closed after `IDLE_TIMEOUT` without a message and
after any framing error (the stream cannot be trusted past it). A double CRLF is a keep-alive
ping and gets a single CRLF pong (RFC 5626 §3.5.1). On UDP a STUN Binding request is the
keep-alive of RFC 5626 §3.5.2 (phones using SIP Outbound, §4.4.2): it gets a Binding success
response with XOR-MAPPED-ADDRESS, the address the NAT gave the phone (RFC 5626 §8 has every
SIP server that takes Outbound registrations answer them on its SIP UDP ports); SIP and STUN
are told apart by the first byte (RFC 5626 §5.4, RFC 7983). A malformed request gets the precise
error `SipParseError` carries, when it has enough of a Via to be answered (`errors.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from callgate.sip.errors import error_response
from callgate.sip.message import (
    MAX_MESSAGE,
    SipMessage,
    SipParseError,
    body_length,
    build,
    parse_datagram,
    parse_head,
    split_head,
)
from callgate.stun.attributes import pack_xor_address
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import StunDecodeError, is_stun
from callgate.stun.message import build as build_stun
from callgate.stun.message import decode as decode_stun
from callgate.stun.message import encode as encode_stun

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1000
IDLE_TIMEOUT = 900.0  # phones refresh registrations and ping within this
READ_CHUNK = 4096
PING, PONG = b"\r\n\r\n", b"\r\n"


@dataclass(slots=True)
class Peer:
    """Where a message came from, and how to answer it."""

    transport: str  # "UDP" | "TCP" | "TLS"
    address: tuple[str, int]
    send_to: Callable[[bytes, tuple[str, int]], None]
    local: tuple[str, int] = ("", 0)

    def send(self, data: bytes, target: tuple[str, int] | None = None) -> None:
        self.send_to(data, target or self.address)


@dataclass(slots=True)
class Counters:
    received: int = 0
    malformed: int = 0
    oversize: int = 0
    refused_connections: int = 0
    keepalives: int = 0  # CRLF pings and STUN Binding requests answered (RFC 5626 §3.5)
    by_status: dict[int, int] = field(default_factory=dict)


Dispatch = Callable[[SipMessage, Peer], None]


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, dispatch: Dispatch, counters: Counters) -> None:
        self._dispatch = dispatch
        self._counters = counters
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, target)

    def peer(self, address: tuple[str, int]) -> Peer:
        """A peer we send to first (a carrier), from this listener's socket."""
        return Peer("UDP", address, self._send, self.local)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        peer = Peer("UDP", (addr[0], addr[1]), self._send, self.local)
        if data == PING:
            self._counters.keepalives += 1
            peer.send(PONG)
            return
        if is_stun(data):
            reply = stun_keepalive_reply(data, peer.address)
            if reply is not None:
                self._counters.keepalives += 1
                peer.send(reply)
            return
        if not data.strip(b"\r\n"):
            return  # a single CRLF keep-alive (RFC 5626 §4.4.1 allows it over UDP)
        self._counters.received += 1
        try:
            message = parse_datagram(data)
        except SipParseError as exc:
            _refuse(exc, data, peer, self._counters)
            return
        self._dispatch(message, peer)


def stun_keepalive_reply(data: bytes, source: tuple[str, int]) -> bytes | None:
    """The answer to a STUN keep-alive (RFC 5626 §4.4.2, §8; RFC 8489 §6.3.1): a Binding
    success response carrying the request's source as XOR-MAPPED-ADDRESS. Nothing (dropped)
    for anything else in STUN framing: other methods and classes, bad messages. The answer is
    32 bytes (IPv4), 12 more than the smallest request: nothing worth reflecting."""
    try:
        request = decode_stun(data)
    except StunDecodeError:
        return None
    if request.method != Method.BINDING or request.cls != MessageClass.REQUEST:
        return None
    xor = pack_xor_address(source, request.transaction_id)
    answer = build_stun(
        Method.BINDING, MessageClass.SUCCESS, request.transaction_id,
        [(Attr.XOR_MAPPED_ADDRESS, xor)],
    )  # fmt: skip
    return encode_stun(answer)


def _refuse(exc: SipParseError, data: bytes, peer: Peer, counters: Counters) -> None:
    counters.malformed += 1
    if exc.status == 513:
        counters.oversize += 1
    reply = error_response(data, exc)
    if reply is not None:
        peer.send(reply)
    log.info("sip %s %s: %d %s", peer.transport, peer.address[0], exc.status, exc.reason)


class TcpTransport:
    """SIP over TCP, or over TLS (RFC 3261 §26.2.1, `Via: SIP/2.0/TLS`) with an `ssl` context."""

    def __init__(
        self, dispatch: Dispatch, counters: Counters, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self._dispatch = dispatch
        self._counters = counters
        self._ssl = ssl
        self.kind = "TLS" if ssl is not None else "TCP"
        self.on_close: Callable[[Peer], None] | None = None  # a connection ended
        self._connections: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        if self._ssl is None:
            self.server = await asyncio.start_server(self._serve, host, port)
        else:
            self.server = await asyncio.start_server(
                self._serve, host, port, ssl=self._ssl, ssl_handshake_timeout=10
            )
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._connections):
            writer.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 3)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            self._counters.refused_connections += 1
            writer.close()
            return
        self._connections.add(writer)
        remote = writer.get_extra_info("peername")[:2]
        local = writer.get_extra_info("sockname")[:2]

        def send(data: bytes, _target: tuple[str, int]) -> None:
            if not writer.is_closing():
                writer.write(data)

        peer = Peer(self.kind, (remote[0], remote[1]), send, (local[0], local[1]))
        try:
            await self._read_loop(reader, peer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl_module.SSLError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            if self.on_close is not None:
                self.on_close(peer)

    async def _read_loop(self, reader: asyncio.StreamReader, peer: Peer) -> None:
        buffer = b""
        while True:
            while buffer.startswith(b"\r\n"):  # keep-alives between messages
                if buffer.startswith(PING):
                    self._counters.keepalives += 1
                    peer.send(PONG)
                    buffer = buffer[4:]
                else:
                    buffer = buffer[2:]
            try:
                parts = split_head(buffer)
                if parts is None:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), IDLE_TIMEOUT)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                head, rest = parts
                self._counters.received += 1
                method, uri_or_code, reason, headers = parse_head(head, stream=True)
                length = body_length(headers, len(rest), stream=True)
                while len(rest) < length:
                    chunk = await asyncio.wait_for(reader.read(READ_CHUNK), IDLE_TIMEOUT)
                    if not chunk:
                        return
                    rest += chunk
                    if len(head) + len(rest) > MAX_MESSAGE + READ_CHUNK:
                        raise SipParseError("Message Too Large", 513)
                message = build(method, uri_or_code, reason, headers, rest[:length])
                buffer = rest[length:]
            except SipParseError as exc:
                _refuse(exc, buffer, peer, self._counters)
                return  # framing is lost: close
            self._dispatch(message, peer)
