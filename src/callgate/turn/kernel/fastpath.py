"""The control plane of the kernel fast path: keep the program's maps in step with allocations.

Per bound channel of a UDP allocation whose peer has a live permission, two entries
(relay_tc.bpf.c): to_peer, keyed by the client's 5-tuple and the channel number, and to_client,
keyed by the peer and the relayed address. Each carries the earlier of the channel's and the
permission's expiry in CLOCK_MONOTONIC nanoseconds, so the kernel itself stops forwarding the
moment either lapses (RFC 8656 §9, §12), before any sweep. Allocation.permit, bind_channel,
unbind_peer and close call `sync`/`release`; the once-a-second sweep calls `sync_all` and
`collect`, which folds the kernel's packet and byte counts into the allocation (records, CDRs, metrics).

Left to userspace (never written): TCP/TLS clients, IPv6, allocations under a bandwidth cap (the
cap is enforced where it is counted), a listener on a wildcard address (the key needs the
address the client sent to).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

from callgate.clock import Clock
from callgate.stun.constants import FAMILY_IPV4
from callgate.turn.allocation import Allocation
from callgate.turn.counters import TurnCounters
from callgate.turn.kernel.loader import (
    Loaded,
    Unavailable,
    check_forwarding,
    compiled,
    devices,
    load,
)
from callgate.types import Address, Transport

log = logging.getLogger(__name__)

# struct layouts of relay_tc.bpf.c: addresses and ports in network order, channel in host order
_TO_PEER_KEY = struct.Struct("=4s4s2s2sHH")
_TO_CLIENT_KEY = struct.Struct("=4s4s2s2s")
_TO_PEER_VALUE = struct.Struct("=4s4s2s2sIQQQ")
_TO_CLIENT_VALUE = struct.Struct("=4s4s2s2sHHQQQ")


def _ip(host: str) -> bytes:
    return socket.inet_aton(host)


def _port(port: int) -> bytes:
    return struct.pack("!H", port)


@dataclass
class _Entry:
    peer: Address
    expires_ns: int
    to_peer_key: bytes
    to_client_key: bytes
    # kernel counts already folded into the allocation: packets/bytes each way
    seen: tuple[int, int, int, int] = (0, 0, 0, 0)


class FastPath:
    def __init__(self, loaded: Loaded, clock: Clock) -> None:
        self.loaded = loaded
        self.clock = clock
        self._entries: dict[str, dict[int, _Entry]] = {}
        self._allocations: dict[str, Allocation] = {}

    def adopt(self, allocation: Allocation) -> bool:
        """Let the kernel forward this allocation's channel data when it can (see module doc)."""
        relay = allocation.relays.get(FAMILY_IPV4)
        server = allocation.five_tuple.server[0]
        if (
            allocation.five_tuple.transport is not Transport.UDP
            or allocation.stream
            or allocation.bucket is not None
            or relay is None
            or ":" in server
            or ipaddress.ip_address(server).is_unspecified
        ):
            return False
        allocation.kernel = self
        self._entries[allocation.id] = {}
        self._allocations[allocation.id] = allocation
        self.sync(allocation)
        return True

    def _ns(self, expires: float) -> int:
        """A deadline on the server's clock as CLOCK_MONOTONIC ns (bpf_ktime_get_ns)."""
        return time.monotonic_ns() + int((expires - self.clock.monotonic()) * 1e9)

    def sync(self, allocation: Allocation) -> None:
        """Write, refresh and remove this allocation's entries to match its channels and
        permissions now."""
        entries = self._entries.get(allocation.id)
        if entries is None:
            return
        wanted: dict[int, tuple[Address, float]] = {}
        # Early packets held from another allocation here wait for the client to send toward
        # their IP (Allocation.from_peer): while any are, that IP's channels stay in userspace,
        # where that send is seen (Allocation._release syncs again).
        holding = {entry.peer[0] for entry in allocation.held}
        for number, channel in allocation.channels.items():
            permitted = allocation.permissions.get(channel.peer[0])
            if (
                permitted is not None
                and ":" not in channel.peer[0]
                and channel.peer[0] not in holding
            ):
                wanted[number] = (channel.peer, min(permitted, channel.expires))
        for number in [n for n, e in entries.items() if wanted.get(n, (None,))[0] != e.peer]:
            self._remove(allocation, entries.pop(number))
        for number, (peer, expires) in wanted.items():
            expires_ns = self._ns(expires)
            entry = entries.get(number)
            if entry is not None and abs(entry.expires_ns - expires_ns) < 1_000_000:
                continue
            if entry is not None:
                self._fold(allocation, entry)  # the rewrite below starts the counts again
            try:
                entries[number] = self._write(allocation, number, peer, expires_ns)
            except OSError as exc:  # the maps are full (65536 channels): Python relays it
                if entry is not None:
                    self._remove(allocation, entries.pop(number))
                log.warning("kernel fast path: channel 0x%04x stays in userspace: %s", number, exc)

    def _write(self, allocation: Allocation, number: int, peer: Address, expires_ns: int) -> _Entry:
        client, server = allocation.five_tuple.client, allocation.five_tuple.server
        relay = allocation.relays[FAMILY_IPV4].address
        to_peer_key = _TO_PEER_KEY.pack(
            _ip(client[0]), _ip(server[0]), _port(client[1]), _port(server[1]), number, 0
        )
        to_client_key = _TO_CLIENT_KEY.pack(
            _ip(peer[0]), _ip(relay[0]), _port(peer[1]), _port(relay[1])
        )
        self.loaded.to_peer.put(
            to_peer_key,
            _TO_PEER_VALUE.pack(
                _ip(peer[0]), _ip(relay[0]), _port(peer[1]), _port(relay[1]), 0, expires_ns, 0, 0
            ),
        )
        try:
            self.loaded.to_client.put(
                to_client_key,
                _TO_CLIENT_VALUE.pack(
                    _ip(client[0]),
                    _ip(server[0]),
                    _port(client[1]),
                    _port(server[1]),
                    number,
                    0,
                    expires_ns,
                    0,
                    0,
                ),
            )
        except OSError:
            self.loaded.to_peer.delete(to_peer_key)
            raise
        return _Entry(peer, expires_ns, to_peer_key, to_client_key)

    def _fold(self, allocation: Allocation, entry: _Entry) -> None:
        """Add what the kernel counted since the last look to the allocation's counters."""
        out = self.loaded.to_peer.get(entry.to_peer_key)
        back = self.loaded.to_client.get(entry.to_client_key)
        now = (
            *(_TO_PEER_VALUE.unpack(out)[6:8] if out else entry.seen[0:2]),
            *(_TO_CLIENT_VALUE.unpack(back)[7:9] if back else entry.seen[2:4]),
        )
        seen = entry.seen
        allocation.packets_to_peer += now[0] - seen[0]
        allocation.bytes_to_peer += now[1] - seen[1]
        allocation.packets_to_client += now[2] - seen[2]
        allocation.bytes_to_client += now[3] - seen[3]
        entry.seen = (now[0], now[1], now[2], now[3])

    def _remove(self, allocation: Allocation, entry: _Entry) -> None:
        self._fold(allocation, entry)
        self.loaded.to_peer.delete(entry.to_peer_key)
        self.loaded.to_client.delete(entry.to_client_key)

    def collect(self, counters: TurnCounters) -> None:
        """The kernel's counts into the allocations (before the server totals them), and the
        program's own totals into the server's counters."""
        for allocation in self._allocations.values():
            for entry in self._entries.get(allocation.id, {}).values():
                self._fold(allocation, entry)
        counters.fast_path_packets, counters.fast_path_passed = self.loaded.forwarded()

    def sync_all(self) -> None:
        """After the sweep's expiry and call-bound withdrawals (which pop permissions directly)."""
        for allocation in list(self._allocations.values()):
            self.sync(allocation)

    def release(self, allocation: Allocation) -> None:
        """The allocation is going: count what the kernel relayed for it, remove its entries."""
        entries = self._entries.pop(allocation.id, None)
        self._allocations.pop(allocation.id, None)
        allocation.kernel = None
        for entry in (entries or {}).values():
            self._remove(allocation, entry)

    def installed(self) -> int:
        """Channels the kernel forwards now (each one entry per direction)."""
        return sum(len(entries) for entries in self._entries.values())

    def close(self) -> None:
        self._entries.clear()
        self.loaded.close()


def open_fast_path(mode: str, clock: Clock) -> FastPath | None:
    """The fast path for `turn.fast_path` = mode, logging which path the relay takes and why."""
    if mode == "off":
        log.info("kernel fast path off (turn.fast_path = off): channel data is relayed in Python")
        return None
    try:
        check_forwarding()  # first: the cheapest reason to stay off
        loaded = load(compiled(), devices())
    except (OSError, subprocess.SubprocessError) as exc:
        if mode == "required":
            raise Unavailable(f"kernel fast path required but unavailable: {exc}") from exc
        log.info("kernel fast path off: %s; channel data is relayed in Python", exc)
        return None
    log.info(
        "kernel fast path on: eBPF at tc ingress (tcx) of %s forwards UDP/IPv4 channel data",
        ", ".join(loaded.devices),
    )
    return FastPath(loaded, clock)
