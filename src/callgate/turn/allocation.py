"""One allocation: its relayed transport addresses, permissions, channels and counters
(RFC 8656 §2.2, §9, §12). Pure state plus the per-packet forwarding steps.

Hot-path rules (docs/design.md): per packet, one dict lookup, one send, integer counters. Permission
and channel expiry is exact in the request handlers and swept once a second for the data path.
Peer data reaches the client through one rule, `Allocation.from_peer`, whichever way it came (a
relay socket, or another allocation on this server).
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from callgate.rate import TokenBucket
from callgate.stun.constants import FAMILY_IPV4, FAMILY_IPV6, Attr
from callgate.turn.counters import TurnCounters
from callgate.turn.indications import data_indication
from callgate.types import Address, FiveTuple

ClientSend = Callable[[bytes], None]
# An in-process client (the media anchor's legs, media/srtp_path.py): takes one packet from a peer
# over a bound channel, returns False to have it sent to the client's socket as usual.
LocalClient = Callable[[memoryview, Address], bool]
_channel_header_into = struct.Struct("!HH").pack_into  # RFC 8656 §12.4: channel number, length
# Packets from another allocation on this server that arrive before this client has shown it can
# take them are held, at most this many per allocation (see Allocation.from_peer).
HELD_MAX = 8


class RelayEndpoint(Protocol):
    """A relayed transport address: a UDP socket toward peers, reading for one allocation."""

    address: Address
    family: int  # FAMILY_IPV4 or FAMILY_IPV6

    def sendto(self, data: bytes | memoryview, peer: Address) -> object:
        """Send one datagram; raises OSError when the kernel refuses it."""
        ...

    def set_dont_fragment(self) -> None:
        """DONT-FRAGMENT (RFC 8656 §7.2)."""
        ...

    def close(self) -> None: ...


def framed(data: bytes | memoryview) -> memoryview:
    """`data` behind 4 bytes of headroom, the form `Allocation.from_peer` takes."""
    return memoryview(bytearray(4) + data)


@dataclass(slots=True)
class Held:
    """A packet from another allocation here, held until this client can take it."""

    frame: memoryview  # 4 bytes of headroom, then the data
    peer: Address
    aged: bool = False  # survived one sweep; dropped at the next


@dataclass(slots=True)
class Channel:
    number: int
    peer: Address
    expires: float


class KernelPath(Protocol):
    """What an allocation tells the kernel fast path (turn/kernel/fastpath.py)."""

    def sync(self, allocation: Allocation) -> None: ...

    def release(self, allocation: Allocation) -> None: ...


class Allocation:
    __slots__ = (
        "allocate_response",
        "allocate_tid",
        "bucket",
        "bucket_clock",
        "bytes_to_client",
        "bytes_to_peer",
        "call_peers",
        "channel_peers",
        "channels",
        "client_address",
        "client_send",
        "counters",
        "dont_fragment",
        "dropped",
        "expires",
        "five_tuple",
        "held",
        "id",
        "integrity",
        "kernel",
        "key",
        "lifetime",
        "local_client",
        "local_relays",
        "packets_to_client",
        "packets_to_peer",
        "peer_channels",
        "peers_seen",
        "permissions",
        "relay_address",
        "relays",
        "started",
        "stream",
        "udp_sendto",
        "user",
        "username",
    )

    def __init__(
        self,
        five_tuple: FiveTuple,
        username: str,
        user: str,
        key: bytes,
        client_send: ClientSend,
        stream: bool,
        started: float,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.five_tuple = five_tuple
        self.client_address = five_tuple.client
        self.username = username
        self.user = user
        self.key = key
        self.relays: dict[int, RelayEndpoint] = {}
        self.relay_address: Address = ("", 0)  # first relayed address, kept for records
        self.expires = 0.0
        self.lifetime = 0
        self.started = started
        self.permissions: dict[str, float] = {}  # peer IP -> monotonic expiry
        self.channels: dict[int, Channel] = {}
        self.peer_channels: dict[Address, int] = {}  # hot path: peer -> channel number
        self.channel_peers: dict[int, Address] = {}  # hot path: channel number -> peer
        self.peers_seen: set[str] = set()
        # Call-bound mode only (turn/callbound.py): the exact peer addresses this allocation was
        # admitted to reach; None when the mode is off.
        self.call_peers: set[Address] | None = None
        self.held: list[Held] = []  # early packets from other allocations here, see from_peer
        self.client_send = client_send
        # UDP clients: the listener socket's sendto, so ChannelData leaves from the relay's buffer.
        self.udp_sendto: Callable[[bytes | memoryview, Address], object] | None = None
        self.stream = stream
        self.packets_to_peer = 0
        self.bytes_to_peer = 0
        self.packets_to_client = 0
        self.bytes_to_client = 0
        self.dropped = 0
        self.bucket: TokenBucket | None = None  # the bandwidth cap, in bytes (`cap`)
        self.bucket_clock: Callable[[], float] = time.monotonic  # the server's, from `cap`
        # This server's relayed addresses -> their allocations (shared with the manager), so
        # traffic between two allocations here skips the kernel round trip.
        self.local_relays: dict[Address, Allocation] | None = None
        self.counters: TurnCounters | None = None  # server totals, for drops by the bandwidth cap
        # When this allocation's client lives in this process (see `attach_local`): channel data
        # for it is handed over here instead of through the loopback socket.
        self.local_client: LocalClient | None = None
        self.allocate_tid = b""
        self.allocate_response = b""
        self.dont_fragment = False
        self.integrity = int(Attr.MESSAGE_INTEGRITY)
        # The kernel fast path (turn/kernel/fastpath.py) when it forwards this allocation's
        # channel data: told of every change to channels and permissions.
        self.kernel: KernelPath | None = None

    # -- state changes (called by handlers) ------------------------------------------------

    def cap(self, rate: int, clock: Callable[[], float]) -> None:
        """At most `rate` bytes a second each way, with one second of burst (RFC 8656 §7.2
        leaves policing to the server); `clock`: monotonic seconds."""
        self.bucket, self.bucket_clock = TokenBucket(rate, rate, clock()), clock

    def relay_for(self, host: str) -> RelayEndpoint | None:
        return self.relays.get(FAMILY_IPV6 if ":" in host else FAMILY_IPV4)

    def permit(self, peer_ip: str, expires: float) -> None:
        """Install or refresh a permission (RFC 8656 §9)."""
        self.permissions[peer_ip] = expires
        self.peers_seen.add(peer_ip)
        if self.kernel is not None:
            self.kernel.sync(self)

    def bind_channel(self, number: int, peer: Address, expires: float) -> None:
        """Bind or refresh a channel (RFC 8656 §12); the caller checked the binding is consistent."""
        channel = self.channels.get(number)
        if channel is None:
            self.channels[number] = Channel(number, peer, expires)
            self.peer_channels[peer] = number
            self.channel_peers[number] = peer
        else:
            channel.expires = expires
        if self.kernel is not None:
            self.kernel.sync(self)

    def unbind_peer(self, peer: Address) -> None:
        """Remove the channel bound to `peer`, if any (call-bound mode withdraws it)."""
        number = self.peer_channels.pop(peer, None)
        if number is not None:
            self.channels.pop(number, None)
            self.channel_peers.pop(number, None)
            if self.kernel is not None:
                self.kernel.sync(self)

    def expire(self, now: float) -> None:
        """Drop permissions and channels whose lifetime is over (RFC 8656 §9, §12)."""
        for ip in [ip for ip, exp in self.permissions.items() if exp <= now]:
            del self.permissions[ip]
        for number in [n for n, ch in self.channels.items() if ch.expires <= now]:
            channel = self.channels.pop(number)
            self.peer_channels.pop(channel.peer, None)
            self.channel_peers.pop(number, None)
        if self.held:
            # A client that got a permission but never sends toward the peer gets the held packets
            # now; the rest are dropped after one to two sweeps.
            held, self.held = self.held, []
            for entry in held:
                if entry.peer[0] in self.permissions:
                    self._deliver(entry.frame, len(entry.frame) - 4, entry.peer)
                elif entry.aged:
                    self.dropped += 1
                else:
                    entry.aged = True
                    self.held.append(entry)

    def _capped(self) -> None:
        self.dropped += 1
        if self.counters is not None:
            self.counters.bandwidth_dropped += 1

    def _refused(self) -> None:
        """The kernel refused a send (full socket buffer, unreachable)."""
        self.dropped += 1
        if self.counters is not None:
            self.counters.send_dropped += 1

    def attach_local(self, client: LocalClient | None) -> None:
        """Hand channel data for this allocation's client to `client` in-process (None: back to
        the client's socket). Only for a client whose transport address is a socket of this
        process (the server found the allocation by it), so permissions, channels, the bandwidth
        cap and the counters apply exactly as for ChannelData on the wire."""
        self.local_client = client

    def close(self) -> None:
        self.local_client = None
        if self.kernel is not None:
            self.kernel.release(self)  # counts what the kernel relayed before the records close
        for relay in self.relays.values():
            relay.close()
        self.relays.clear()
        self.channel_peers.clear()
        self.peer_channels.clear()
        self.permissions.clear()
        self.held.clear()

    # -- data path ---------------------------------------------------------------------------

    def channel_data(self, number: int, data: bytes | memoryview) -> bool:
        """ChannelData from the client on channel `number` (RFC 8656 §12.6): what the UDP
        listener does with it, for an in-process client; False if dropped."""
        peer = self.channel_peers.get(number)
        if peer is None:
            self.dropped += 1
            return False
        return self.to_peer(data, peer)

    def to_peer(self, data: bytes | memoryview, peer: Address) -> bool:
        """Relay client data to a peer with a permission; False if dropped."""
        ip = peer[0]
        relay = self.relays.get(FAMILY_IPV6 if ":" in ip else FAMILY_IPV4)
        if relay is None or ip not in self.permissions:
            self.dropped += 1
            return False
        size = len(data)
        if self.bucket is not None and not self.bucket.take(self.bucket_clock(), size):
            self._capped()
            return False
        local = self.local_relays.get(peer) if self.local_relays is not None else None
        if local is None:
            try:
                relay.sendto(data, peer)
            except OSError:
                self._refused()
                return False
        else:
            local.from_peer(memoryview(bytearray(4) + data), size, relay.address)  # framed()
        self.packets_to_peer += 1
        self.bytes_to_peer += size
        if self.held:
            self._release(ip)
        return True

    def from_peer(self, frame: memoryview, size: int, peer: Address) -> bool:
        """Deliver peer data `frame[4 : 4 + size]` to the client as ChannelData or a Data
        indication (RFC 8656 §11.3, §12.5); `frame[:4]` is headroom for the ChannelData header,
        so a UDP client gets it from the same buffer. The one rule for peer data, whether it came
        in on a relay socket or from another allocation on this server.

        Data from peers without a permission is dropped silently (§9), except from another
        allocation on this server: in a call the callee starts its connectivity checks as soon as
        it has the answer, before the caller has it, so the callee's first check reaches the
        caller's relay before the caller's permission for it. Such packets are held (up to
        HELD_MAX, for one to two sweeps) and delivered once this client has sent something to
        that peer IP itself. Not at permission time: a client such as aioice drops Data
        indications and ChannelData from a peer until its own ChannelBind *response* has been
        processed, and acts on it only in a later event-loop step (or, over TCP, after the rest
        of the same read); its first packet toward the peer proves it is ready. While packets
        from an IP are held, later ones from it queue behind them, so nothing is reordered.
        """
        if peer[0] not in self.permissions or self.held:
            if self._hold(frame, size, peer):
                return False
            if peer[0] not in self.permissions:
                self.dropped += 1
                return False
        return self._deliver(frame, size, peer)

    def _hold(self, frame: memoryview, size: int, peer: Address) -> bool:
        """Hold an early packet from another allocation here; False if it is not one to hold."""
        ip = peer[0]
        if ip in self.permissions and not any(h.peer[0] == ip for h in self.held):
            return False  # permitted, nothing held before it: deliver in order as usual
        if self.local_relays is None or peer not in self.local_relays:
            return False
        if len(self.held) >= HELD_MAX:
            self.dropped += 1
            return True
        self.held.append(Held(memoryview(bytearray(frame[: 4 + size])), peer))
        return True

    def _release(self, ip: str) -> None:
        """This client has sent toward `ip`: deliver what was held from there, in order."""
        held, self.held = self.held, []
        for entry in held:
            if entry.peer[0] == ip:
                self._deliver(entry.frame, len(entry.frame) - 4, entry.peer)
            else:
                self.held.append(entry)
        if self.kernel is not None:
            self.kernel.sync(self)  # the kernel may take this peer's channel now

    def _deliver(self, frame: memoryview, size: int, peer: Address) -> bool:
        if self.bucket is not None and not self.bucket.take(self.bucket_clock(), size):
            self._capped()
            return False
        number = self.peer_channels.get(peer)
        if number is None:
            indication = data_indication(peer, frame[4 : 4 + size])
            sendto = self.udp_sendto
            if sendto is None:
                self.client_send(indication)
            else:
                try:
                    sendto(indication, self.client_address)
                except OSError:
                    self._refused()
                    return False
        elif self.local_client is not None and self.local_client(frame[4 : 4 + size], peer):
            pass  # taken in-process by the client (attach_local)
        else:
            _channel_header_into(frame, 0, number, size)
            sendto = self.udp_sendto
            if sendto is not None:
                try:
                    sendto(frame[: 4 + size], self.client_address)
                except OSError:
                    self._refused()
                    return False
            elif self.stream and size & 3:
                self.client_send(frame[: 4 + size].tobytes() + bytes(4 - (size & 3)))
            else:
                self.client_send(frame[: 4 + size].tobytes())
        self.packets_to_client += 1
        self.bytes_to_client += size
        return True
