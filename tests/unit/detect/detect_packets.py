"""Builders of captured frames and capture files for the detector's tests (no sockets)."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable

MAGIC = 0x2112A442
Frame = tuple[float, bytes]  # (timestamp, Ethernet frame)


def ipv4_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet (checksums zero: the detector does not check them)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)  # fmt: skip
    return header + udp


def ipv4_tcp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)  # fmt: skip
    return header + tcp


def ipv6_udp(
    src: str, sport: int, dst: str, dport: int, payload: bytes, *, ext: bool = False
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    body = (bytes([17, 0]) + bytes(6) + udp) if ext else udp  # a hop-by-hop header first
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), 0 if ext else 17, 64,
                         ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)  # fmt: skip
    return header + body


def ethernet(ip_packet: bytes, *, vlan: int | None = None) -> bytes:
    version = ip_packet[0] >> 4
    ethertype = struct.pack("!H", 0x0800 if version == 4 else 0x86DD)
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return b"\x02" * 6 + b"\x04" * 6 + tag + ethertype + ip_packet


def udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    return ethernet(ipv4_udp(src[0], src[1], dst[0], dst[1], payload))


def pcap_bytes(frames: Iterable[Frame], linktype: int = 1, *, nano: bool = False,
               big_endian: bool = False) -> bytes:  # fmt: skip
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    scale = 1_000_000_000 if nano else 1_000_000
    for ts, frame in frames:
        sec = int(ts)
        frac = round((ts - sec) * scale)
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def pcapng_bytes(frames: Iterable[Frame], linktype: int = 1, *, tsresol: int = 9) -> bytes:
    """SHB, one IDB with if_tsresol = 10^-tsresol, and one EPB per frame."""
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    out = [_block(0x0A0D0D0A, shb_body)]
    option = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    out.append(_block(1, struct.pack("<HHI", linktype, 0, 65535) + option))
    for ts, frame in frames:
        units = round(ts * 10**tsresol)
        body = struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame))
        out.append(_block(6, body + frame + bytes(-len(frame) % 4)))
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


# ---- protocol payloads ----
def stun(method: int, cls: int, attrs: Iterable[tuple[int, bytes]] = (), *,
         classic: bool = False, tid: bytes | None = None) -> bytes:  # fmt: skip
    """A STUN message (RFC 8489 §5), or RFC 3489 classic (128-bit transaction ID, no cookie)."""
    body = b""
    for atype, value in attrs:
        body += struct.pack("!HH", atype, len(value)) + value + bytes(-len(value) % 4)
    mtype = (
        (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4) | ((cls & 2) << 7)
    )  # fmt: skip
    cookie = os.urandom(4) if classic else struct.pack("!I", MAGIC)
    return struct.pack("!HH", mtype, len(body)) + cookie + (tid or os.urandom(12)) + body


def xor_address(ip: str, port: int) -> bytes:
    packed = ipaddress.IPv4Address(ip).packed
    xored = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", MAGIC), strict=True))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + xored


def ice_check(username: bytes = b"abcd:efgh") -> bytes:
    """An ICE connectivity check (RFC 8445 §7.1.1)."""
    return stun(1, 0, [(0x0006, username), (0x0024, struct.pack("!I", 0x6E7F1EFF)),
                       (0x802A, os.urandom(8)), (0x0008, os.urandom(20))])  # fmt: skip


def rtp(seq: int, ssrc: int = 0x1234ABCD, pt: int = 111, size: int = 160) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 960, ssrc) + os.urandom(size)


def rtcp_rr(ssrc: int = 0x1234ABCD) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def dtls_client_hello(use_srtp: bool) -> bytes:
    """A DTLS 1.2 ClientHello record, with or without the use_srtp extension (RFC 5764)."""
    ext = struct.pack("!HH", 0x000A, 4) + b"\x00\x02\x00\x17"  # supported_groups
    if use_srtp:
        ext += struct.pack("!HH", 0x000E, 5) + b"\x00\x02\x00\x01\x00"
    hello = (b"\xfe\xfd" + os.urandom(32) + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00"
             + struct.pack("!H", len(ext)) + ext)  # fmt: skip
    handshake = b"\x01" + len(hello).to_bytes(3, "big") + b"\x00\x00" + b"\x00\x00\x00"
    handshake += len(hello).to_bytes(3, "big") + hello
    return b"\x16\xfe\xff" + bytes(8) + struct.pack("!H", len(handshake)) + handshake
