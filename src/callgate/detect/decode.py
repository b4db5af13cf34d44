"""Frame decoding down to the transport payload: link layer → IPv4/IPv6 → UDP/TCP.

Link types (tcpdump.org LINKTYPE_*): 0 NULL/loopback, 1 Ethernet (802.1Q/802.1ad VLAN tags), 12/14/101
raw IP, 108 LOOP, 113 Linux cooked (SLL), 228 IPv4, 229 IPv6, 276 Linux cooked v2 (SLL2). GTP-U
(3GPP TS 29.281, UDP port 2152) is unwrapped so mobile-core captures show the subscriber's flows.
Non-first IP fragments and other transports are skipped (None).
"""

from __future__ import annotations

import struct

UDP = 17
TCP = 6
GTP_U_PORT = 2152
_ETH_IPV4, _ETH_IPV6, _ETH_VLAN, _ETH_QINQ = 0x0800, 0x86DD, 0x8100, 0x88A8
_IPV6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options (RFC 8200 §4)
_IPV6_FRAG = 44
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")

# (transport, src ip, src port, dst ip, dst port, payload)
Decoded = tuple[int, bytes, int, bytes, int, bytes]


def decode(linktype: int, frame: bytes) -> Decoded | None:
    """The transport 5-tuple and payload of one captured frame, or None when not UDP/TCP over IP."""
    ethertype, offset = _link(linktype, frame)
    if ethertype == _ETH_IPV4:
        return _ipv4(frame, offset)
    if ethertype == _ETH_IPV6:
        return _ipv6(frame, offset)
    return None


def _link(linktype: int, frame: bytes) -> tuple[int, int]:
    """(ethertype, offset of the network header); ethertype 0 when unknown."""
    if linktype == 1:
        if len(frame) < 14:
            return 0, 0
        ethertype = _H.unpack_from(frame, 12)[0]
        offset = 14
        while ethertype in (_ETH_VLAN, _ETH_QINQ) and len(frame) >= offset + 4:
            ethertype = _H.unpack_from(frame, offset + 2)[0]
            offset += 4
        return ethertype, offset
    if linktype in (12, 14, 101):
        return _version_type(frame, 0), 0
    if linktype == 228:
        return _ETH_IPV4, 0
    if linktype == 229:
        return _ETH_IPV6, 0
    if linktype == 113:
        return (_H.unpack_from(frame, 14)[0], 16) if len(frame) >= 16 else (0, 0)
    if linktype == 276:
        return (_H.unpack_from(frame, 0)[0], 20) if len(frame) >= 20 else (0, 0)
    if linktype in (0, 108):
        # BSD loopback: 4-byte address family (host order for NULL, network order for LOOP).
        return (_version_type(frame, 4), 4) if len(frame) >= 5 else (0, 0)
    return 0, 0


def _version_type(frame: bytes, offset: int) -> int:
    if len(frame) <= offset:
        return 0
    version = frame[offset] >> 4
    return _ETH_IPV4 if version == 4 else _ETH_IPV6 if version == 6 else 0


def _ipv4(frame: bytes, off: int) -> Decoded | None:
    """RFC 791: header length from IHL, payload bounded by Total Length (Ethernet padding)."""
    if len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    total = _H.unpack_from(frame, off + 2)[0]
    if ihl < 20 or total < ihl:
        return None
    if _H.unpack_from(frame, off + 6)[0] & 0x1FFF:  # not the first fragment
        return None
    end = min(len(frame), off + total) if total else len(frame)
    return _transport(frame[off + 9], frame[off + 12 : off + 16], frame[off + 16 : off + 20],
                      frame, off + ihl, end)  # fmt: skip


def _ipv6(frame: bytes, off: int) -> Decoded | None:
    """RFC 8200: walk extension headers to the upper-layer header."""
    if len(frame) < off + 40:
        return None
    plen = _H.unpack_from(frame, off + 4)[0]
    nxt = frame[off + 6]
    src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
    end = min(len(frame), off + 40 + plen) if plen else len(frame)
    pos = off + 40
    while nxt in _IPV6_EXT or nxt == _IPV6_FRAG:
        if pos + 8 > end:
            return None
        if nxt == _IPV6_FRAG:
            if _H.unpack_from(frame, pos + 2)[0] & 0xFFF8:  # fragment offset ≠ 0
                return None
            nxt, pos = frame[pos], pos + 8
        else:
            nxt, pos = frame[pos], pos + 8 + frame[pos + 1] * 8
    return _transport(nxt, src, dst, frame, pos, end)


def _transport(
    proto: int, src: bytes, dst: bytes, frame: bytes, pos: int, end: int
) -> Decoded | None:
    if proto == UDP and pos + 8 <= end:
        sport, dport = _HH.unpack_from(frame, pos)
        if GTP_U_PORT in (sport, dport):
            inner = _gtp_u(frame, pos + 8, end)
            if inner is not None:
                return inner
        return UDP, src, sport, dst, dport, frame[pos + 8 : end]
    if proto == TCP and pos + 20 <= end:
        sport, dport = _HH.unpack_from(frame, pos)
        data_off = (frame[pos + 12] >> 4) * 4
        return TCP, src, sport, dst, dport, frame[pos + data_off : end]
    return None


def _gtp_u(frame: bytes, pos: int, end: int) -> Decoded | None:
    """GTPv1-U G-PDU (message type 255) carrying an IP packet (TS 29.281 §5.1)."""
    if pos + 8 > end or frame[pos] >> 5 != 1 or frame[pos + 1] != 0xFF:
        return None
    flags = frame[pos]
    inner = pos + 8
    if flags & 0x07:  # E, S or PN: 4 more bytes, then extension headers while E chains them
        if inner + 4 > end:
            return None
        nxt = frame[inner + 3]
        inner += 4
        while nxt and inner < end:
            length = frame[inner] * 4
            if length == 0 or inner + length > end:
                return None
            nxt = frame[inner + length - 1]
            inner += length
    kind = _version_type(frame, inner)
    inner_frame = frame[inner:end]
    if kind == _ETH_IPV4:
        return _ipv4(inner_frame, 0)
    if kind == _ETH_IPV6:
        return _ipv6(inner_frame, 0)
    return None
