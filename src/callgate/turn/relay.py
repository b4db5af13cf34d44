"""Relay sockets: a UDP socket per relayed transport address, drawn from a port range, read
with a non-blocking recvfrom_into per readiness callback registered on the event loop (no asyncio
transport on the data path, see docs/design.md "Hot-path rules"). Each socket is opened for one
allocation and hands what it reads to that allocation's `from_peer`.

EVEN-PORT with the R bit reserves the next higher port under a RESERVATION-TOKEN
(RFC 8656 §7.2, §14.9); an unused reservation is released after 30 s.

With worker processes (runtime/relay_workers.py) the token may come to another worker (it is
presented from another client port). The reserving worker holds the reserved port with
SO_REUSEPORT and records it in the shared ledger; the worker the token reaches takes the record,
binds the same port into that group, and steers the group's datagrams to its own socket with a
one-instruction classic BPF program (SO_ATTACH_REUSEPORT_CBPF); the reserving worker closes its
socket at its next sweep. The port is never free in between, so nothing else can take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from callgate.stun.constants import FAMILY_IPV4, FAMILY_IPV6
from callgate.turn.allocation import Allocation
from callgate.turn.ledger import SharedLedger
from callgate.types import Address

log = logging.getLogger(__name__)

RESERVATION_SECONDS = 30.0
_BUFFER = 65536 + 64
_IP_PMTUDISC_DO = 2  # linux/in.h: always set DF
_SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
# classic BPF "ret #1" (linux/filter.h BPF_RET|BPF_K): the group's member at index 1, the socket
# that joined the reserving worker's one; past the end (once that one closed) the kernel hashes.
_STEER_TO_SECOND = struct.pack("HBBI", 0x06, 0, 0, 1)


class InsufficientCapacity(Exception):
    """No relay port could be had (508)."""


class UdpRelay:
    """One relayed transport address, reading for the allocation it was opened for."""

    __slots__ = ("_loop", "_reading", "address", "allocation", "family", "sendto", "sock")

    def __init__(self, sock: socket.socket, family: int, allocation: Allocation) -> None:
        self.sock = sock
        self.family = family
        self.allocation = allocation
        host, port = sock.getsockname()[:2]
        self.address: Address = (host, port)
        # Toward peers: the socket's own sendto, so a relayed packet costs one call. It raises
        # OSError when the kernel refuses; Allocation.to_peer counts that.
        self.sendto: Callable[[bytes | memoryview, Address], object] = sock.sendto
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False

    def start(self, loop: asyncio.AbstractEventLoop, buf: bytearray) -> None:
        """Read peer datagrams into `buf` at offset 4 and hand them to the allocation's one
        forwarding rule; ChannelData toward a UDP client leaves from the same buffer with its
        header written in front (RFC 8656 §12.5)."""
        self._loop = loop
        view = memoryview(buf)
        tail = view[4:]
        recv = self.sock.recvfrom_into
        v6 = self.family == FAMILY_IPV6
        from_peer = self.allocation.from_peer

        def readable() -> None:
            # One datagram per readiness callback: a relay socket carries one allocation's peer
            # traffic (50 pps for a voice stream), so there is rarely a second one queued, and
            # probing for it would cost a recvfrom ending in EAGAIN per packet. The loop polls
            # level-triggered: what is left is read at the next callback.
            try:
                n, peer = recv(tail)
            except OSError:
                return  # EAGAIN, or an ICMP error (ECONNREFUSED on Linux): nothing to do
            if v6:
                peer = (peer[0], peer[1])
            from_peer(view, n, peer)

        loop.add_reader(self.sock.fileno(), readable)
        self._reading = True

    def set_dont_fragment(self) -> None:
        """DONT-FRAGMENT (RFC 8656 §7.2): set DF on IPv4 relay traffic."""
        mtu_discover = getattr(socket, "IP_MTU_DISCOVER", None)
        if self.family == FAMILY_IPV4 and mtu_discover is not None:
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
        shared: SharedLedger | None = None,
    ) -> None:
        self.ips = {FAMILY_IPV4: ip4, FAMILY_IPV6: ip6}
        self.shared = shared
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
        self, family: int, allocation: Allocation, *, even: bool = False, reserve: bool = False
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
                expires = self._now() + RESERVATION_SECONDS
                self._reservations[token] = _Reservation(partner, family, expires)
                if self.shared is not None:
                    host, port = partner.getsockname()[:2]
                    self.shared.reserve(token, (host, port), family, expires)
        else:
            sock = self._bind_any(ip, family)
        return self._start(sock, family, allocation), token

    def take_reservation(self, token: bytes, allocation: Allocation) -> UdpRelay | None:
        local = self._reservations.pop(token, None)
        if self.shared is None:
            if local is None:
                return None
            return self._start(local.sock, local.family, allocation)
        taken = self.shared.take_reservation(token, self._now())
        if taken is None:
            if local is not None:
                local.sock.close()
            return None
        _worker, address, family = taken
        if local is not None:
            return self._start(local.sock, local.family, allocation)
        sock = self._join_reserved(address, family)
        return None if sock is None else self._start(sock, family, allocation)

    def expire(self, now: float) -> None:
        taken_elsewhere: set[bytes] = set()
        if self.shared is not None and self._reservations:
            taken_elsewhere = set(self._reservations) - self.shared.reservations_held()
        for token in [
            t for t, r in self._reservations.items() if r.expires <= now or t in taken_elsewhere
        ]:
            self._reservations.pop(token).sock.close()
            if self.shared is not None and token not in taken_elsewhere:
                self.shared.drop_reservation(token)

    def close(self) -> None:
        for reservation in self._reservations.values():
            reservation.sock.close()
        self._reservations.clear()

    # -- binding -----------------------------------------------------------------------------

    def _start(self, sock: socket.socket, family: int, allocation: Allocation) -> UdpRelay:
        relay = UdpRelay(sock, family, allocation)
        if self._loop is not None:
            relay.start(self._loop, self._buf)
        return relay

    def _new_socket(self, family: int) -> socket.socket:
        sock = socket.socket(
            socket.AF_INET6 if family == FAMILY_IPV6 else socket.AF_INET, socket.SOCK_DGRAM
        )
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        return sock

    def _joined_elsewhere(self, partner: socket.socket) -> bool:
        """With SO_REUSEPORT the bind of a reserved port succeeds even while another worker
        relays on it (it took an earlier reservation of that port): the ledger knows."""
        if self.shared is None:
            return False
        host, port = partner.getsockname()[:2]
        return self.shared.holds_relay((host, port))

    def _join_reserved(self, address: Address, family: int) -> socket.socket | None:
        """Bind another worker's reserved port (its SO_REUSEPORT group) and take its traffic."""
        sock = self._try_bind(address[0], family, address[1], shared_port=True)
        if sock is None:
            return None
        program = ctypes.create_string_buffer(_STEER_TO_SECOND)
        fprog = struct.pack("@HP", 1, ctypes.addressof(program))
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
        except OSError as exc:
            # still correct, only slower to settle: the reserving worker's socket takes a share
            # of the port's datagrams until its next sweep closes it
            log.warning("reserved port %s: cannot steer its group (%s)", address, exc)
        return sock

    def _try_bind(
        self, ip: str, family: int, port: int, *, shared_port: bool = False
    ) -> socket.socket | None:
        sock = self._new_socket(family)
        try:
            if shared_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
            partner = self._try_bind(ip, family, port + 1, shared_port=self.shared is not None)
            if partner is not None and self._joined_elsewhere(partner):
                partner.close()
                partner = None
            if partner is not None:
                return sock, partner
            sock.close()
        raise InsufficientCapacity("no free even port pair in relay range")
