"""Relay sockets: a UDP socket per relayed transport address, drawn from a port range, read
with a non-blocking recvfrom_into loop registered on the event loop (no asyncio transport on
the data path, see docs/design.md "Hot-path rules").

EVEN-PORT with the R bit reserves the next higher port under a RESERVATION-TOKEN
(RFC 8656 §7.2, §14.9); an unused reservation is released after 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from callgate.turn.allocation import Allocation
from callgate.types import Address

log = logging.getLogger(__name__)

RESERVATION_SECONDS = 30.0
_BUFFER = 65536 + 64
_IP_PMTUDISC_DO = 2  # linux/in.h: always set DF
_BATCH = 64  # packets read per readiness event before yielding to the loop


class InsufficientCapacity(Exception):
    """No relay port could be had (508)."""


PeerHandler = Callable[[bytes, Address], object]


class UdpRelay:
    """One relayed transport address."""

    __slots__ = ("_handler", "_loop", "_reading", "address", "family", "send_errors", "sock")

    def __init__(self, sock: socket.socket, family: int) -> None:
        self.sock = sock
        self.family = family
        host, port = sock.getsockname()[:2]
        self.address: Address = (host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: PeerHandler | None = None
        self._reading = False
        self.send_errors = 0

    def start(self, loop: asyncio.AbstractEventLoop, handler: PeerHandler, buf: bytearray) -> None:
        """Read peer datagrams into `buf` at offset 4, so ChannelData toward a UDP client is
        sent from the same buffer with its header written in front: no copy (RFC 8656 §12.5)."""
        self._loop = loop
        self._handler = handler
        view = memoryview(buf)
        tail = view[4:]
        recv = self.sock.recvfrom_into
        v6 = self.family == 2
        owner = getattr(handler, "__self__", None)
        a: Allocation | None = owner if isinstance(owner, Allocation) else None
        sendto = a.udp_sendto if a is not None else None
        client = a.five_tuple.client if a is not None else ("", 0)

        def readable() -> None:
            for _ in range(_BATCH):
                try:
                    n, peer = recv(tail)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    # ICMP errors surface here (ECONNREFUSED on Linux); nothing to do.
                    continue
                if v6:
                    peer = (peer[0], peer[1])
                if a is not None and sendto is not None:
                    number = a.peer_channels.get(peer)
                    if number is not None and a.bucket is None and peer[0] in a.permissions:
                        buf[0] = number >> 8
                        buf[1] = number & 0xFF
                        buf[2] = n >> 8
                        buf[3] = n & 0xFF
                        try:
                            sendto(view[: n + 4], client)
                        except OSError:
                            a.dropped += 1
                            continue
                        a.packets_to_client += 1
                        a.bytes_to_client += n
                        continue
                handler(tail[:n].tobytes(), peer)

        loop.add_reader(self.sock.fileno(), readable)
        self._reading = True

    def sendto(self, data: bytes | memoryview, peer: Address) -> None:
        try:
            self.sock.sendto(data, peer)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1
        except OSError as exc:
            self.send_errors += 1
            log.debug("relay %s sendto %s failed: %s", self.address, peer, exc)

    def set_dont_fragment(self) -> None:
        """DONT-FRAGMENT (RFC 8656 §7.2): set DF on IPv4 relay traffic."""
        mtu_discover = getattr(socket, "IP_MTU_DISCOVER", None)
        if self.family == 1 and mtu_discover is not None:
            self.sock.setsockopt(socket.IPPROTO_IP, mtu_discover, _IP_PMTUDISC_DO)

    def close(self) -> None:
        if self._reading and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        self.sock.close()


@dataclass(slots=True)
class _Reservation:
    sock: socket.socket
    family: int
    expires: float


class RelayAllocator:
    """Binds relay sockets inside [port_min, port_max] on the relay IPs."""

    def __init__(
        self,
        ip4: str | None,
        ip6: str | None,
        port_min: int,
        port_max: int,
        loop: asyncio.AbstractEventLoop | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.ips = {1: ip4, 2: ip6}
        self.port_min = port_min
        self.port_max = port_max
        self._loop = loop
        self._now = now or (lambda: 0.0)
        self._reservations: dict[bytes, _Reservation] = {}
        self._buf = bytearray(_BUFFER)  # shared: one read at a time on one loop

    def supports(self, family: int) -> bool:
        return self.ips.get(family) is not None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def allocate(
        self, family: int, handler: PeerHandler, *, even: bool = False, reserve: bool = False
    ) -> tuple[UdpRelay, bytes | None]:
        """A started relay; with `reserve`, also a token for the next port (EVEN-PORT R bit)."""
        ip = self.ips.get(family)
        if ip is None:
            raise InsufficientCapacity(f"no relay address for family {family}")
        token: bytes | None = None
        if even:
            sock, partner = self._bind_even_pair(ip, family, reserve)
            if partner is not None:
                token = os.urandom(8)
                self._reservations[token] = _Reservation(
                    partner, family, self._now() + RESERVATION_SECONDS
                )
        else:
            sock = self._bind_any(ip, family)
        return self._start(sock, family, handler), token

    def take_reservation(self, token: bytes, handler: PeerHandler) -> UdpRelay | None:
        reservation = self._reservations.pop(token, None)
        if reservation is None:
            return None
        return self._start(reservation.sock, reservation.family, handler)

    def expire(self, now: float) -> None:
        for token in [t for t, r in self._reservations.items() if r.expires <= now]:
            self._reservations.pop(token).sock.close()

    def close(self) -> None:
        for reservation in self._reservations.values():
            reservation.sock.close()
        self._reservations.clear()

    # -- binding -----------------------------------------------------------------------------

    def _start(self, sock: socket.socket, family: int, handler: PeerHandler) -> UdpRelay:
        relay = UdpRelay(sock, family)
        if self._loop is not None:
            relay.start(self._loop, handler, self._buf)
        return relay

    def _new_socket(self, family: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET if family == 1 else socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        return sock

    def _try_bind(self, ip: str, family: int, port: int) -> socket.socket | None:
        sock = self._new_socket(family)
        try:
            sock.bind((ip, port))
        except OSError:
            sock.close()
            return None
        return sock

    def _bind_any(self, ip: str, family: int) -> socket.socket:
        span = self.port_max - self.port_min + 1
        start = random.randrange(span)
        for i in range(min(span, 256)):
            port = self.port_min + (start + i * 7919) % span
            sock = self._try_bind(ip, family, port)
            if sock is not None:
                return sock
        raise InsufficientCapacity("no free relay port in range")

    def _bind_even_pair(
        self, ip: str, family: int, reserve: bool
    ) -> tuple[socket.socket, socket.socket | None]:
        low = self.port_min + (self.port_min & 1)
        evens = (self.port_max - low) // 2 + 1
        if evens <= 0:
            raise InsufficientCapacity("no even port in relay range")
        start = random.randrange(evens)
        for i in range(min(evens, 256)):
            port = low + 2 * ((start + i * 7919) % evens)
            if reserve and port + 1 > self.port_max:
                continue
            sock = self._try_bind(ip, family, port)
            if sock is None:
                continue
            if not reserve:
                return sock, None
            partner = self._try_bind(ip, family, port + 1)
            if partner is not None:
                return sock, partner
            sock.close()
        raise InsufficientCapacity("no free even port pair in relay range")
