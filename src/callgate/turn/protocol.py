"""Listeners: the UDP socket read loop and the TCP/TLS stream protocol (RFC 8656 §3.1).

Demux on the first byte (RFC 7983): 0x00-0x3F STUN, 0x40-0x7F ChannelData. ChannelData from a
client takes the fast path: client address -> allocation -> channel -> sendto(peer), with no
STUN parsing and no authentication (that happened at ChannelBind, RFC 8656 §12).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import cast

from callgate.stun.channel_data import framed_length
from callgate.turn.allocation import Allocation
from callgate.turn.counters import TurnCounters
from callgate.turn.handlers import Client, TurnHandler
from callgate.turn.manager import AllocationManager
from callgate.turn.send import relay_send_indication
from callgate.types import Address, FiveTuple, Transport

log = logging.getLogger(__name__)

_BATCH = 64
_MAX_STREAM_BUFFER = 1 << 20  # drop a TCP client whose unsent backlog passes this


class UdpListener:
    """A UDP STUN/TURN listener driven by add_reader and a recvfrom_into batch loop."""

    def __init__(
        self,
        sock: socket.socket,
        handler: TurnHandler,
        manager: AllocationManager,
        counters: TurnCounters,
    ) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.address: Address = (host, port)
        self.handler = handler
        self.manager = manager
        self.counters = counters
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[Address, Allocation] = manager.by_listener.setdefault(
            (self.address, Transport.UDP.value), {}
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        sock = self.sock
        buf = bytearray(65536 + 64)
        view = memoryview(buf)
        recv = sock.recvfrom_into
        sendto = sock.sendto
        clients = self._clients
        counters = self.counters
        v6 = sock.family == socket.AF_INET6
        server = self.address
        call_bound = self.handler.config.call_bound

        def send_to(client: Address) -> Client:
            def send(data: bytes) -> None:
                try:
                    sendto(data, client)
                except OSError:
                    counters.send_dropped += 1

            return Client(FiveTuple(client, server, Transport.UDP), send, False, sendto)

        budget = 1

        def readable() -> None:
            # The listener carries every client, so it reads in batches. A read that ends in
            # EAGAIN costs a syscall and an exception, and the loop polls level-triggered (what
            # is left is read at the next callback), so each callback reads at most as many
            # datagrams as the last one found, doubling after a full batch, up to _BATCH.
            nonlocal budget
            for i in range(budget):
                try:
                    n, addr = recv(buf)
                except (BlockingIOError, InterruptedError):
                    budget = i or 1
                    return
                except OSError:
                    continue
                if v6:
                    addr = (addr[0], addr[1])
                if n < 4:
                    counters.malformed_dropped += 1
                    continue
                first = buf[0]
                if 0x40 <= first <= 0x7F:
                    # ChannelData fast path (RFC 8656 §12.6).
                    allocation = clients.get(addr)
                    if allocation is None:
                        counters.malformed_dropped += 1
                        continue
                    peer = allocation.channel_peers.get((first << 8) | buf[1])
                    length = (buf[2] << 8) | buf[3]
                    if peer is None or length + 4 > n:
                        counters.malformed_dropped += 1
                        continue
                    allocation.to_peer(view[4 : 4 + length], peer)
                elif first == 0 and buf[1] == 0x16:
                    # Send indication (RFC 8656 §11.2): no Client context needed; the same rule
                    # as TurnHandler's (turn/send.py)
                    relay_send_indication(view[:n], clients.get(addr), call_bound, counters)
                elif first < 0x40:
                    response = self.handler.handle(view[:n].tobytes(), send_to(addr))
                    if response is not None:
                        try:
                            sendto(response, addr)
                        except OSError as exc:
                            log.debug("UDP send to %s failed: %s", addr, exc)
                else:
                    counters.malformed_dropped += 1
            budget = min(2 * budget, _BATCH)

        loop.add_reader(sock.fileno(), readable)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class StreamProtocol(asyncio.Protocol):
    """One TCP or TLS client connection: frames STUN messages and padded ChannelData (§12.5)."""

    def __init__(
        self,
        handler: TurnHandler,
        manager: AllocationManager,
        counters: TurnCounters,
        transport_kind: Transport,
        connections: set[StreamProtocol],
    ) -> None:
        self.connections = connections
        self.last_activity = handler.clock.monotonic()
        self.handler = handler
        self.manager = manager
        self.counters = counters
        self.kind = transport_kind
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement its interface.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        five_tuple = FiveTuple((peer[0], peer[1]), (local[0], local[1]), self.kind)
        self.client = Client(five_tuple, self._send, True)
        self.connections.add(self)

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > _MAX_STREAM_BUFFER:
            self.counters.send_dropped += 1
            return
        transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.handler.clock.monotonic()
        buffer = self.buffer
        buffer += data
        client = self.client
        assert client is not None
        while len(buffer) >= 4:
            first = buffer[0]
            if first < 0x40:
                if len(buffer) < 20:
                    return
                size = 20 + ((buffer[2] << 8) | buffer[3])
                if len(buffer) < size:
                    return
                frame = bytes(buffer[:size])
                del buffer[:size]
                response = self.handler.handle(frame, client)
                if response is not None:
                    self._send(response)
            elif first <= 0x7F:
                size = framed_length(buffer[:4])
                if len(buffer) < size:
                    return
                self._channel_data(buffer, size)
                del buffer[:size]
            else:
                # Cannot resynchronise a byte stream: drop the connection (RFC 8656 §12.5).
                self.counters.malformed_dropped += 1
                self._abort()
                return

    def _channel_data(self, buffer: bytearray, size: int) -> None:
        client = self.client
        assert client is not None
        allocation = self.manager.get(client.five_tuple)
        length = (buffer[2] << 8) | buffer[3]
        peer = (
            None
            if allocation is None
            else allocation.channel_peers.get((buffer[0] << 8) | buffer[1])
        )
        if allocation is None or peer is None:
            self.counters.malformed_dropped += 1
            return
        allocation.to_peer(bytes(buffer[4 : 4 + length]), peer)

    def idle_without_allocation(self, now: float, limit: float) -> bool:
        """A connection that never allocated (or whose allocation ended) and went quiet."""
        if self.client is None or self.manager.get(self.client.five_tuple) is not None:
            return False
        return now - self.last_activity > limit

    def abort(self) -> None:
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        # Closing the control connection deletes the allocation (RFC 8656 §3.1).
        if self.client is not None:
            self.manager.remove_client(self.client.five_tuple, "client-closed")
        self.connections.discard(self)
        self.transport = None
