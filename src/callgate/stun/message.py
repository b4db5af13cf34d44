"""STUN message framing (RFC 8489 §5, §6): pure decode/encode, no I/O.

A `Message` keeps its attributes raw and in wire order, so several attributes of one type
(XOR-PEER-ADDRESS) survive, unknown ones can be reported (420), and integrity can be checked
against the exact bytes received. Typed values come from `callgate.stun.attributes`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from callgate.errors import CallgateError
from callgate.stun.constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    Attr,
    MessageClass,
)


class StunDecodeError(CallgateError, ValueError):
    """The bytes are not a well-formed STUN message. The one error type codecs raise."""


_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_MAX_MESSAGE = 65535 + HEADER_LENGTH


def _pad(length: int) -> int:
    return (4 - length % 4) % 4


def split_type(message_type: int) -> tuple[int, MessageClass]:
    """Unpack the interleaved method and class bits of the message type (RFC 8489 §5)."""
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    cls = ((message_type & 0x0010) >> 4) | ((message_type & 0x0100) >> 7)
    return method, MessageClass(cls)


def join_type(method: int, cls: MessageClass) -> int:
    c = int(cls)
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
    )


def new_transaction_id() -> bytes:
    return os.urandom(12)


@dataclass(frozen=True, slots=True)
class Message:
    method: int
    cls: MessageClass
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()
    # Set by decode(): the bytes as received and the offset of each attribute header,
    # so integrity can be verified over exactly what the peer sent.
    raw: bytes = field(default=b"", compare=False, repr=False)
    offsets: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def get(self, attr: int) -> bytes | None:
        """Value of the first attribute of this type, or None."""
        for attr_type, value in self.attributes:
            if attr_type == attr:
                return value
        return None

    def get_all(self, attr: int) -> list[bytes]:
        return [value for attr_type, value in self.attributes if attr_type == attr]

    def has(self, attr: int) -> bool:
        return any(attr_type == attr for attr_type, _ in self.attributes)

    def types(self) -> list[int]:
        return [attr_type for attr_type, _ in self.attributes]


def is_stun(data: bytes) -> bool:
    """Cheap check (RFC 7983 first-byte demux plus the magic cookie)."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == MAGIC_COOKIE_BYTES


def decode(data: bytes) -> Message:
    """Parse one STUN message, which must fill `data` exactly.

    Raises StunDecodeError for anything malformed, including a FINGERPRINT that does not match
    (RFC 8489 §14.7) or one that is not the last attribute.
    """
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError(f"message too short: {len(data)} bytes, header needs 20")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise StunDecodeError("first two bits of a STUN message must be zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError(f"bad magic cookie 0x{cookie:08x}")
    if length % 4:
        raise StunDecodeError(f"message length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunDecodeError(
            f"message length field says {length} bytes of attributes, got {len(data) - HEADER_LENGTH}"
        )
    method, cls = split_type(message_type)
    attributes: list[tuple[int, bytes]] = []
    offsets: list[int] = []
    # What may still count after an integrity attribute (RFC 8489 §14.5, §14.6): after
    # MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, after
    # MESSAGE-INTEGRITY-SHA256 only FINGERPRINT. Anything else there is ignored, so an
    # attribute appended on the path to a signed request cannot change what it asks for.
    counted: frozenset[int] | None = None
    pos = HEADER_LENGTH
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise StunDecodeError(f"truncated attribute header at offset {pos}")
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, pos)
        value_end = pos + 4 + attr_len
        if value_end > end:
            raise StunDecodeError(
                f"attribute 0x{attr_type:04x} at offset {pos} claims {attr_len} bytes, "
                f"only {end - pos - 4} left"
            )
        if attributes and attributes[-1][0] == Attr.FINGERPRINT:
            raise StunDecodeError("FINGERPRINT is not the last attribute")
        if counted is None or attr_type in counted:
            offsets.append(pos)
            attributes.append((attr_type, data[pos + 4 : value_end]))
            if attr_type == Attr.MESSAGE_INTEGRITY:
                counted = _AFTER_MESSAGE_INTEGRITY
            elif attr_type == Attr.MESSAGE_INTEGRITY_SHA256:
                counted = _AFTER_MESSAGE_INTEGRITY_SHA256
        pos = value_end + _pad(attr_len)
    if pos != end:
        raise StunDecodeError("attribute padding runs past the end of the message")
    message = Message(method, cls, transaction_id, tuple(attributes), bytes(data), tuple(offsets))
    _check_fingerprint(message)
    return message


_AFTER_MESSAGE_INTEGRITY = frozenset((int(Attr.MESSAGE_INTEGRITY_SHA256), int(Attr.FINGERPRINT)))
_AFTER_MESSAGE_INTEGRITY_SHA256 = frozenset((int(Attr.FINGERPRINT),))


def _check_fingerprint(message: Message) -> None:
    for index, (attr_type, value) in enumerate(message.attributes):
        if attr_type != Attr.FINGERPRINT:
            continue
        if len(value) != 4:
            raise StunDecodeError(f"FINGERPRINT must be 4 bytes, got {len(value)}")
        offset = message.offsets[index]
        expected = _fingerprint(message.raw[:offset], offset + 8 - HEADER_LENGTH)
        if value != expected:
            raise StunDecodeError("FINGERPRINT does not match the message")


def _with_length(prefix: bytes, length: int) -> bytes:
    """The message prefix with its header length field set to `length` (RFC 8489 §14.5)."""
    return prefix[:2] + length.to_bytes(2, "big") + prefix[4:]


def _fingerprint(prefix: bytes, length: int) -> bytes:
    crc = binascii.crc32(_with_length(prefix, length)) ^ FINGERPRINT_XOR
    return (crc & 0xFFFFFFFF).to_bytes(4, "big")


def _mac(algorithm: int, key: bytes, prefix: bytes, length: int) -> bytes:
    digest = hashlib.sha1 if algorithm == Attr.MESSAGE_INTEGRITY else hashlib.sha256
    return hmac.new(key, _with_length(prefix, length), digest).digest()


def integrity_attribute(message: Message) -> int | None:
    """Which integrity attribute protects the message, if any (SHA-256 preferred, §14.5-14.6)."""
    types = message.types()
    if Attr.MESSAGE_INTEGRITY_SHA256 in types:
        return Attr.MESSAGE_INTEGRITY_SHA256
    if Attr.MESSAGE_INTEGRITY in types:
        return Attr.MESSAGE_INTEGRITY
    return None


def verify_integrity(message: Message, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, over the received bytes.

    Compares in constant time. A message that was not decoded from bytes, or carries no
    integrity attribute, does not verify.
    """
    algorithm = integrity_attribute(message)
    if algorithm is None or not message.raw:
        return False
    index = message.types().index(algorithm)
    value = message.attributes[index][1]
    offset = message.offsets[index]
    expected_len = 20 if algorithm == Attr.MESSAGE_INTEGRITY else 32
    if algorithm == Attr.MESSAGE_INTEGRITY_SHA256 and not 16 <= len(value) <= 32:
        return False
    if algorithm == Attr.MESSAGE_INTEGRITY and len(value) != expected_len:
        return False
    mac = _mac(algorithm, key, message.raw[:offset], offset + 4 + len(value) - HEADER_LENGTH)
    return hmac.compare_digest(mac[: len(value)], value)


def encode(
    message: Message,
    key: bytes | None = None,
    *,
    integrity: int = Attr.MESSAGE_INTEGRITY,
    fingerprint: bool = False,
    padding: bytes = b"\x00",
) -> bytes:
    """Serialize a message; with a key, append the integrity attribute; optionally FINGERPRINT.

    Attributes of `message` that are integrity or fingerprint attributes are written as given
    (used by tests to build vectors); normally they are added here. `padding` is the byte
    values are padded with: zero per RFC 8489 §14; RFC 5389 allowed any value, and the
    RFC 5769 vectors pad with spaces.

    Raises ValueError if the message would not fit STUN's 16-bit length fields.
    """
    if len(padding) != 1:
        raise ValueError("padding must be a single byte")
    body = bytearray()
    for attr_type, value in message.attributes:
        if len(value) > 0xFFFF:
            raise ValueError(f"attribute 0x{attr_type:04x} value too large: {len(value)} bytes")
        body += _ATTR_HEADER.pack(attr_type, len(value)) + value + padding * _pad(len(value))
    mac_len = 20 if integrity == Attr.MESSAGE_INTEGRITY else 32
    trailer = (4 + mac_len if key is not None else 0) + (8 if fingerprint else 0)
    if HEADER_LENGTH + len(body) + trailer > _MAX_MESSAGE:
        raise ValueError("STUN message too large")
    header = _HEADER.pack(
        join_type(message.method, message.cls), len(body), MAGIC_COOKIE, message.transaction_id
    )
    out = bytearray(header) + body
    if key is not None:
        mac = _mac(integrity, key, bytes(out), len(out) + 4 + mac_len - HEADER_LENGTH)
        out += _ATTR_HEADER.pack(integrity, mac_len) + mac
    if fingerprint:
        out += _ATTR_HEADER.pack(Attr.FINGERPRINT, 4) + _fingerprint(
            bytes(out), len(out) + 8 - HEADER_LENGTH
        )
    out[2:4] = (len(out) - HEADER_LENGTH).to_bytes(2, "big")
    return bytes(out)


def build(
    method: int,
    cls: MessageClass,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, bytes]] = (),
) -> Message:
    return Message(method, cls, transaction_id, tuple((int(t), v) for t, v in attributes))
