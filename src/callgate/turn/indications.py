"""Send and Data indications on the data path (RFC 8656 §11), without building a `Message`.

A Send indication carries client data for a peer in XOR-PEER-ADDRESS + DATA; a Data
indication carries peer data to the client the same way. Both are hot when a client does not
use channels (coturn's `uclient -s`, some WebRTC stacks before ChannelBind succeeds), so they are
parsed and built here with fixed offsets; the general codec is the reference the tests compare
against.
"""

from __future__ import annotations

import binascii
import functools
import random
import struct

from callgate.stun import attributes as attrs
from callgate.stun.constants import (
    FAMILY_IPV4,
    FINGERPRINT_XOR,
    KNOWN_ATTRIBUTES,
    MAGIC_COOKIE,
    Attr,
)
from callgate.stun.message import StunDecodeError
from callgate.types import Address

SEND_INDICATION = b"\x00\x16"  # Send method (0x006), indication class
_DATA_INDICATION = 0x0017
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
_HEADER = struct.Struct("!HHI")
_ATTR = struct.Struct("!HH")
_XOR_PEER = int(Attr.XOR_PEER_ADDRESS)
_DATA = int(Attr.DATA)
_FINGERPRINT = int(Attr.FINGERPRINT)
_V4_PEER_HEADER = _ATTR.pack(_XOR_PEER, 8)  # XOR-PEER-ADDRESS with an IPv4 value
_DATA_TYPE = _DATA.to_bytes(2, "big")
_FINGERPRINT_HEADER = _ATTR.pack(_FINGERPRINT, 4)


def parse_send(packet: bytes | memoryview) -> tuple[Address, bytes | memoryview]:
    """Peer address and data of a Send indication; the data is a slice of `packet` (no copy).

    Raises StunDecodeError when malformed, when XOR-PEER-ADDRESS or DATA is missing, when a
    FINGERPRINT does not match, or when an unknown comprehension-required attribute is present
    (such indications are discarded, RFC 8489 §6.3.2).
    """
    n = len(packet)
    if n < 20 or packet[4:8] != _COOKIE:
        raise StunDecodeError("not a STUN message")
    length = (packet[2] << 8) | packet[3]
    if 20 + length != n or length & 3:
        raise StunDecodeError("Send indication length does not match the packet")
    fast = _parse_common(packet, n)
    return fast if fast is not None else _parse_any(packet, n)


def _parse_any(packet: bytes | memoryview, n: int) -> tuple[Address, bytes | memoryview]:
    """Every attribute in turn: the general reading of a Send indication whose header
    `parse_send` checked."""
    tid = bytes(packet[8:20])
    peer_value: bytes | None = None
    data: bytes | memoryview | None = None
    pos = 20
    while pos < n:
        if n - pos < 4:
            raise StunDecodeError(f"truncated attribute header at offset {pos}")
        kind, size = _ATTR.unpack_from(packet, pos)
        end = pos + 4 + size
        if end > n:
            raise StunDecodeError(f"attribute 0x{kind:04x} runs past the end")
        if kind == _XOR_PEER:
            if peer_value is None:
                peer_value = bytes(packet[pos + 4 : end])
        elif kind == _DATA:
            if data is None:
                data = packet[pos + 4 : end]
        elif kind == _FINGERPRINT:
            _check_fingerprint(packet, pos, end)
        elif kind < 0x8000 and kind not in KNOWN_ATTRIBUTES:
            raise StunDecodeError(f"unknown comprehension-required attribute 0x{kind:04x}")
        pos = end + ((4 - size % 4) % 4)
    if peer_value is None or data is None:
        raise StunDecodeError("Send indication without XOR-PEER-ADDRESS or DATA")
    return attrs.unpack_xor_address(peer_value, tid), data


def _parse_common(packet: bytes | memoryview, n: int) -> tuple[Address, bytes | memoryview] | None:
    """The layouts clients send, read at fixed offsets: an IPv4 XOR-PEER-ADDRESS and DATA in
    either order (aioice and our SDK put the address first, coturn's uclient the data), then
    nothing or a FINGERPRINT. None for any other layout, which the general loop in `parse_send`
    reads (so both accept and refuse exactly the same packets)."""
    if n < 36:
        return None
    if packet[20:24] == _V4_PEER_HEADER:
        if packet[32:34] != _DATA_TYPE:
            return None
        size = (packet[34] << 8) | packet[35]
        peer_at, data_at = 24, 36
        padded = 36 + size + (-size & 3)
    elif packet[20:22] == _DATA_TYPE:
        size = (packet[22] << 8) | packet[23]
        after = 24 + size + (-size & 3)
        if packet[after : after + 4] != _V4_PEER_HEADER:
            return None
        peer_at, data_at = after + 4, 24
        padded = after + 12
    else:
        return None
    if padded != n:
        if padded + 8 != n or packet[padded : padded + 4] != _FINGERPRINT_HEADER:
            return None
        _check_fingerprint(packet, padded, n)
    return _peer_v4(bytes(packet[peer_at : peer_at + 8])), packet[data_at : data_at + size]


@functools.lru_cache(maxsize=4096)
def _peer_v4(value: bytes) -> Address:
    """An IPv4 XOR-PEER-ADDRESS value does not depend on the transaction id (RFC 8489 §14.2):
    decoded once per peer. Raises StunDecodeError for a family other than IPv4."""
    if value[1] != FAMILY_IPV4:
        raise StunDecodeError(f"XOR-PEER-ADDRESS family {value[1]} in an 8-byte value")
    return attrs.unpack_xor_address(value, b"")


def _check_fingerprint(packet: bytes | memoryview, pos: int, end: int) -> None:
    if end != len(packet) or end - pos != 8:
        raise StunDecodeError("FINGERPRINT is not the last attribute")
    # CRC-32 of the message up to the FINGERPRINT, with the header's length as if it ended there
    # (RFC 8489 §14.7), computed over the pieces without joining them.
    crc = binascii.crc32(packet[:2])
    crc = binascii.crc32((pos + 8 - 20).to_bytes(2, "big"), crc)
    crc = (binascii.crc32(packet[4:pos], crc) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    if crc.to_bytes(4, "big") != packet[pos + 4 : end]:
        raise StunDecodeError("FINGERPRINT does not match the message")


@functools.lru_cache(maxsize=4096)
def _xor_peer_v4(peer: Address) -> bytes:
    """IPv4 XOR-PEER-ADDRESS does not depend on the transaction id: computed once per peer."""
    value = attrs.pack_xor_address(peer, b"")
    return _ATTR.pack(_XOR_PEER, len(value)) + value


def data_indication(peer: Address, data: bytes | memoryview) -> bytes:
    """A Data indication carrying `data` from `peer` (RFC 8656 §11.4). Indications get no
    response, so the transaction id needs uniqueness, not secrecy."""
    tid = random.randbytes(12)
    if ":" in peer[0]:
        value = attrs.pack_xor_address(peer, tid)
        peer_attr = _ATTR.pack(_XOR_PEER, len(value)) + value
    else:
        peer_attr = _xor_peer_v4(peer)
    size = len(data)
    pad = (4 - size % 4) % 4
    length = len(peer_attr) + 4 + size + pad
    return b"".join(
        (
            _HEADER.pack(_DATA_INDICATION, length, MAGIC_COOKIE),
            tid,
            peer_attr,
            _ATTR.pack(_DATA, size),
            data,
            b"\x00" * pad,
        )
    )
