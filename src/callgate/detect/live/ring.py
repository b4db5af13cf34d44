"""Packets from a network interface through an AF_PACKET TPACKET_V3 receive ring (packet(7),
Documentation/networking/packet_mmap.rst): the kernel fills blocks of a memory-mapped ring and
hands each block over whole, so reading costs no system call per packet and no libpcap.

`Ring.blocks()` yields, per block the kernel retired, the (timestamp, link type, frame) of its
packets, then gives the block back. Root (CAP_NET_RAW) is needed.
"""

from __future__ import annotations

import mmap
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_STATISTICS = 6
_STATS3 = struct.Struct("=III")  # struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt
TPACKET_V3 = 2
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
PACKET_OUTGOING = 4
_REQ3 = struct.Struct("=7I")  # struct tpacket_req3
_BLOCK = struct.Struct("=II" + "IIIIQ")  # tpacket_block_desc: version, offset_to_priv, hdr_v1…
_PKT = struct.Struct(
    "=IIIIIIHH"
)  # tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net
_SLL_AT = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): where struct sockaddr_ll follows
_SLL_PKTTYPE = 10  # byte offset of sll_pkttype in struct sockaddr_ll
_ARPHRD_LINKTYPE = {1: 1, 772: 1, 65534: 101}  # Ethernet, loopback (Ethernet header), raw IP

Packet = tuple[float, int, bytes]


class RingError(OSError):
    """The interface cannot be opened (missing, no permission, not supported)."""


def link_type(interface: str) -> int:
    """The pcap link type of what the interface's packet socket delivers."""
    try:
        arphrd = int(Path(f"/sys/class/net/{interface}/type").read_text())
    except (OSError, ValueError):
        raise RingError(f"--interface: no such interface: {interface!r}") from None
    kind = _ARPHRD_LINKTYPE.get(arphrd)
    if kind is None:
        raise RingError(f"--interface: {interface}: unsupported link type (ARPHRD {arphrd})")
    return kind


class Ring:
    """One TPACKET_V3 receive ring bound to `interface`."""

    def __init__(self, interface: str, block_size: int = 1 << 20, blocks: int = 16,
                 retire_ms: int = 100) -> None:  # fmt: skip
        self.linktype = link_type(interface)
        self.loopback = Path(f"/sys/class/net/{interface}/type").read_text().strip() == "772"
        self.block_size, self.count = block_size, blocks
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise RingError("--interface: capturing needs root (CAP_NET_RAW)") from None
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            request = _REQ3.pack(block_size, blocks, 2048, block_size // 2048 * blocks,
                                 retire_ms, 0, 0)  # fmt: skip
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip
            self.sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise RingError(f"--interface: {interface}: {exc.strerror or exc}") from None
        self.next = 0
        self.dropped = 0  # packets the kernel dropped because the ring was full

    def count_drops(self) -> int:
        """Add the kernel's drop count since the last call (reading resets it) to `dropped`."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        self.dropped += _STATS3.unpack(raw)[1]
        return self.dropped

    def close(self) -> None:
        self.map.close()
        self.sock.close()

    def blocks(self, timeout: float) -> Iterator[list[Packet]]:
        """The packets of each block the kernel hands over within `timeout` seconds (a block is
        retired when full or after `retire_ms`), at most one ring's worth per call so the caller
        gets control back under a flood."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLERR)
        base = self.next * self.block_size
        if _BLOCK.unpack_from(self.map, base)[2] & TP_STATUS_USER == 0:
            poller.poll(int(timeout * 1000))
        for _ in range(self.count):
            base = self.next * self.block_size
            status = _BLOCK.unpack_from(self.map, base)[2]
            if not status & TP_STATUS_USER:
                return
            yield self._read(base)
            struct.pack_into("=I", self.map, base + 8, TP_STATUS_KERNEL)
            self.next = (self.next + 1) % self.count

    def _read(self, base: int) -> list[Packet]:
        _, _, _, count, first, _, _ = _BLOCK.unpack_from(self.map, base)
        packets: list[Packet] = []
        at = base + first
        header = _SLL_AT
        for _ in range(count):
            step, sec, nsec, snaplen, _, _, mac, _ = _PKT.unpack_from(self.map, at)
            if not (self.loopback and self.map[at + header + _SLL_PKTTYPE] == PACKET_OUTGOING):
                # loopback frames are seen leaving and arriving: keep one copy, as libpcap does
                packets.append(
                    (sec + nsec * 1e-9, self.linktype, self.map[at + mac : at + mac + snaplen])
                )
            if not step:
                break
            at += step
        return packets
