"""Tolerant STUN recognition for detection: every generation, nothing verified.

Unlike `callgate.stun.message` (a server's strict codec), this accepts RFC 3489 classic STUN (no
magic cookie, 128-bit transaction ID), RFC 5389/8489 messages, and the vendor dialects seen in the
wild, and pulls out only what detection needs: method and class, ICE attributes (RFC 8445 §7.1.1),
TURN usage (RFC 8656), addresses (mapped, relayed, peer) and strings naming an application.
"""

from __future__ import annotations

import struct

MAGIC_COOKIE = 0x2112A442
_HDR = struct.Struct("!HHI")
_ATTR = struct.Struct("!HH")

# Attribute types (RFC 3489 §11.2, RFC 8489 §18.3, RFC 8656 §18, RFC 8445 §16.1).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_PEER_ADDRESS = 0x0012
DATA = 0x0013
REALM = 0x0014
XOR_RELAYED_ADDRESS = 0x0016
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
_ADDRESS_ATTRS = {MAPPED_ADDRESS: "mapped", XOR_MAPPED_ADDRESS: "mapped",
                  XOR_RELAYED_ADDRESS: "relayed", XOR_PEER_ADDRESS: "peer"}  # fmt: skip
_XOR_ATTRS = {XOR_MAPPED_ADDRESS, XOR_RELAYED_ADDRESS, XOR_PEER_ADDRESS}
# TURN methods (RFC 8656 §17, RFC 6062 §6.1): Allocate … ConnectionAttempt.
SEND, DATA_INDICATION = 0x006, 0x007  # RFC 8656 §17
TURN_METHODS = {0x003, 0x004, 0x006, 0x007, 0x008, 0x009, 0x00A, 0x00B, 0x00C}
# Methods a STUN message may carry: Binding, classic Shared Secret, the TURN ones.
_KNOWN_METHODS = {0x001, 0x002} | TURN_METHODS
VENDOR_TYPES = frozenset({0x0800, 0x0801, 0x0802})  # WhatsApp (seen in the wild; nDPI agrees)


class StunInfo:
    """What one STUN message says. (A plain class, as in the rest of detect's start-up path:
    importing `dataclasses` costs a small capture's `callgate detect` ≈ 9 ms, docs/detection.md
    "Speed".)"""

    __slots__ = ("addresses", "attrs", "classic", "cls", "method")

    def __init__(self, method: int, cls: int, classic: bool) -> None:
        self.method = method
        self.cls = cls  # 0 request, 1 indication, 2 success, 3 error
        self.classic = classic  # RFC 3489: no magic cookie
        self.attrs: list[tuple[int, bytes]] = []
        self.addresses: list[tuple[str, bytes, int]] = []  # (kind, ip, port)

    @property
    def types(self) -> set[int]:
        return {t for t, _ in self.attrs}

    def get(self, attr: int) -> bytes | None:
        for t, v in self.attrs:
            if t == attr:
                return v
        return None

    @property
    def ice_check(self) -> bool:
        """An ICE connectivity check (RFC 8445 §7.1.1): Binding with USERNAME "a:b" and PRIORITY
        or a role attribute."""
        if self.method != 1:
            return False
        names = self.types
        username = self.get(USERNAME)
        role = bool(names & {PRIORITY, ICE_CONTROLLED, ICE_CONTROLLING, USE_CANDIDATE})
        return role or (username is not None and b":" in username and self.cls == 0)


def split_type(message_type: int) -> tuple[int, int]:
    """(method, class) from the interleaved bits of the message type (RFC 8489 §5). The server's
    codec has the same (`callgate.stun.message.split_type`); importing it costs a small capture's
    `callgate detect` ~10 ms of start-up (hashlib, hmac and the codec's classes), more than
    reading the capture."""
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    return method, ((message_type & 0x0010) >> 4) | ((message_type & 0x0100) >> 7)


def parse_stun(data: bytes) -> StunInfo | None:
    """The STUN message at the start of `data`, or None. Trailing bytes are allowed (RFC 4571 /
    TCP segments may carry more), a length beyond the data is not."""
    if len(data) < 20 or data[0] & 0xC0:
        return None
    mtype, length, cookie = _HDR.unpack_from(data, 0)
    if length % 4 or 20 + length > len(data):
        return None
    if mtype in VENDOR_TYPES:  # WhatsApp's private message types: keep the raw type as method
        method, cls = mtype, 0
    else:
        method, cls = split_type(mtype)
        if method not in _KNOWN_METHODS:
            return None
    info = StunInfo(method=method, cls=cls, classic=cookie != MAGIC_COOKIE)
    pos, end = 20, 20 + length
    while pos + 4 <= end:
        atype, alen = _ATTR.unpack_from(data, pos)
        if pos + 4 + alen > end:
            return None
        value = data[pos + 4 : pos + 4 + alen]
        info.attrs.append((atype, value))
        kind = _ADDRESS_ATTRS.get(atype)
        if kind is not None:
            address = _address(value, atype in _XOR_ATTRS and not info.classic, data[4:20])
            if address is not None:
                info.addresses.append((kind, *address))
        pos += 4 + alen + (-alen % 4)
    if pos != end and not info.classic:
        return None
    if not info.attrs and length == 0 and cls == 0 and method != 1:
        return None
    return info


def _address(value: bytes, xored: bool, magic_and_tid: bytes) -> tuple[bytes, int] | None:
    """(packed ip, port) of a (XOR-)MAPPED-ADDRESS style value (RFC 8489 §14.1, §14.2)."""
    if len(value) < 8:
        return None
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    size = 4 if family == 1 else 16 if family == 2 else 0
    if not size or len(value) < 4 + size:
        return None
    ip = value[4 : 4 + size]
    if xored:
        port ^= MAGIC_COOKIE >> 16
        ip = bytes(a ^ b for a, b in zip(ip, magic_and_tid[:size], strict=True))
    return ip, port


def split_rfc4571(data: bytes) -> list[bytes]:
    """Frames of an RFC 4571 §2 stream segment (16-bit length prefix), or [] when it is not one."""
    frames: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data):
        length = (data[pos] << 8) | data[pos + 1]
        if length == 0 or pos + 2 + length > len(data):
            break
        frames.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return frames if frames and pos == len(data) else frames[:1]
