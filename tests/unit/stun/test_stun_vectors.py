"""The published STUN test vectors: RFC 5769 §2.1-2.4 and RFC 8489 Appendix B.1 (erratum 6268).

Each vector is decoded, its attributes read back, its integrity and fingerprint checked, and it is
re-encoded from its attributes to the exact published bytes.
"""

from __future__ import annotations

import hashlib

import pytest

from callgate.stun import attributes as attrs
from callgate.stun.constants import Attr, MessageClass, Method
from callgate.stun.message import (
    Message,
    StunDecodeError,
    build,
    decode,
    encode,
    integrity_attribute,
    verify_integrity,
)
from callgate.turn.auth import long_term_key, long_term_key_sha256


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1: sample request (ICE connectivity check, short-term credential).
RFC5769_REQUEST = _hex(
    """
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
    """
)
# RFC 5769 §2.2: sample IPv4 response.
RFC5769_RESPONSE_V4 = _hex(
    """
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
    """
)
# RFC 5769 §2.3: sample IPv6 response.
RFC5769_RESPONSE_V6 = _hex(
    """
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
    """
)
# RFC 5769 §2.4: sample request with long-term authentication.
RFC5769_LONG_TERM = _hex(
    """
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66
    """
)
# RFC 8489 Appendix B.1 as corrected by erratum 6268 (length 0x90, PASSWORD-ALGORITHM added,
# MESSAGE-INTEGRITY-SHA256 recomputed).
RFC8489_B1 = _hex(
    """
    00 01 00 90 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f
                24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f 34 39 39 6b
                39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1d 00 04 00 02 00 00
    00 1c 00 20 b5 c7 bf 00 5b 6c 52 a2 1c 51 c5 e8 92 f8 19 24
                13 62 96 cb 92 7c 43 14 93 09 27 8c c6 51 8e 65
    """
)

SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID_5769 = bytes.fromhex("b7e7a701bc34d686fa87dfae")
TID_LONG_TERM = bytes.fromhex("78ad3433c6ad72c029da412e")
# U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
# "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep (RFC 5769) / as the B.1 key is computed.
LONG_TERM_PASSWORD = "TheMatrIX"
REALM = "example.org"
NONCE_5769 = "f//499k954d6OL34oL9FSTvy64sA"
NONCE_B1 = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"

LT_KEY_MD5 = long_term_key(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD)
LT_KEY_SHA256 = long_term_key_sha256(LONG_TERM_USERNAME, REALM, LONG_TERM_PASSWORD)

# (vector, key, integrity attribute, padding byte the vector uses, has FINGERPRINT)
VECTORS = {
    "rfc5769-2.1-request": (
        RFC5769_REQUEST,
        SHORT_TERM_PASSWORD,
        Attr.MESSAGE_INTEGRITY,
        b" ",
        True,
    ),
    "rfc5769-2.2-ipv4-response": (
        RFC5769_RESPONSE_V4,
        SHORT_TERM_PASSWORD,
        Attr.MESSAGE_INTEGRITY,
        b" ",
        True,
    ),
    "rfc5769-2.3-ipv6-response": (
        RFC5769_RESPONSE_V6,
        SHORT_TERM_PASSWORD,
        Attr.MESSAGE_INTEGRITY,
        b" ",
        True,
    ),
    "rfc5769-2.4-long-term": (
        RFC5769_LONG_TERM,
        LT_KEY_MD5,
        Attr.MESSAGE_INTEGRITY,
        b"\x00",
        False,
    ),
    "rfc8489-B.1-sha256-userhash": (
        RFC8489_B1,
        LT_KEY_SHA256,
        Attr.MESSAGE_INTEGRITY_SHA256,
        b"\x00",
        False,
    ),
}


def _strip_fingerprint(raw: bytes) -> bytes:
    """The message without its trailing FINGERPRINT, length field fixed up."""
    assert raw[-8:-4] == b"\x80\x28\x00\x04"
    body = raw[:-8]
    return body[:2] + (len(body) - 20).to_bytes(2, "big") + body[4:]


def _flips(raw: bytes) -> list[bytes]:
    """Every single-byte corruption of `raw` (low bit flipped at each offset)."""
    return [raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :] for i in range(len(raw))]


# -- RFC 5769 §2.1 --------------------------------------------------------------------------


def test_sample_request_attributes() -> None:
    message = decode(RFC5769_REQUEST)
    assert (message.method, message.cls) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TID_5769
    assert message.types() == [
        Attr.SOFTWARE,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert attrs.unpack_text(message.get(Attr.SOFTWARE) or b"", "SOFTWARE") == "STUN test client"
    assert attrs.unpack_uint32(message.get(Attr.PRIORITY) or b"") == 0x6E0001FF
    assert message.get(Attr.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert attrs.unpack_text(message.get(Attr.USERNAME) or b"", "USERNAME") == "evtj:h6vY"


# -- RFC 5769 §2.2 / §2.3 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (RFC5769_RESPONSE_V4, ("192.0.2.1", 32853)),
        (RFC5769_RESPONSE_V6, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_sample_response_xor_mapped_address(raw: bytes, expected: tuple[str, int]) -> None:
    message = decode(raw)
    assert (message.method, message.cls) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.transaction_id == TID_5769
    assert attrs.unpack_text(message.get(Attr.SOFTWARE) or b"", "SOFTWARE") == "test vector"
    value = message.get(Attr.XOR_MAPPED_ADDRESS)
    assert value is not None
    assert attrs.unpack_xor_address(value, message.transaction_id) == expected
    # And the encoder produces the published XOR-MAPPED-ADDRESS value for that address.
    assert attrs.pack_xor_address(expected, TID_5769) == value


# -- RFC 5769 §2.4 --------------------------------------------------------------------------


def test_long_term_request_attributes() -> None:
    message = decode(RFC5769_LONG_TERM)
    assert (message.method, message.cls) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TID_LONG_TERM
    username = attrs.unpack_text(message.get(Attr.USERNAME) or b"", "USERNAME")
    assert username == LONG_TERM_USERNAME
    assert attrs.unpack_text(message.get(Attr.NONCE) or b"", "NONCE") == NONCE_5769
    assert attrs.unpack_text(message.get(Attr.REALM) or b"", "REALM") == REALM
    assert not message.has(Attr.FINGERPRINT)


def test_long_term_key_from_the_vector_attributes_verifies() -> None:
    message = decode(RFC5769_LONG_TERM)
    username = attrs.unpack_text(message.get(Attr.USERNAME) or b"", "USERNAME")
    realm = attrs.unpack_text(message.get(Attr.REALM) or b"", "REALM")
    assert verify_integrity(message, long_term_key(username, realm, LONG_TERM_PASSWORD))
    # The unprocessed password is a different key.
    raw_password = "The\u00adM\u00aatr\u2168"
    assert not verify_integrity(message, long_term_key(username, realm, raw_password))


# -- RFC 8489 Appendix B.1 (erratum 6268) ----------------------------------------------------


def test_b1_attributes() -> None:
    message = decode(RFC8489_B1)
    assert (message.method, message.cls) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TID_LONG_TERM
    assert message.types() == [
        Attr.USERHASH,
        Attr.NONCE,
        Attr.REALM,
        Attr.PASSWORD_ALGORITHM,
        Attr.MESSAGE_INTEGRITY_SHA256,
    ]
    # USERHASH = SHA-256(username ":" realm) (RFC 8489 §14.4).
    userhash = hashlib.sha256(f"{LONG_TERM_USERNAME}:{REALM}".encode()).digest()
    assert message.get(Attr.USERHASH) == userhash
    assert attrs.unpack_text(message.get(Attr.NONCE) or b"", "NONCE") == NONCE_B1
    assert attrs.unpack_text(message.get(Attr.REALM) or b"", "REALM") == REALM
    # PASSWORD-ALGORITHM: SHA-256 (0x0002), no parameters (RFC 8489 §14.12, §18.5).
    assert message.get(Attr.PASSWORD_ALGORITHM) == b"\x00\x02\x00\x00"
    assert integrity_attribute(message) == Attr.MESSAGE_INTEGRITY_SHA256


def test_b1_needs_the_sha256_key() -> None:
    message = decode(RFC8489_B1)
    material = f"{LONG_TERM_USERNAME}:{REALM}:TheMatrIX".encode()
    assert hashlib.sha256(material).digest() == LT_KEY_SHA256
    assert verify_integrity(message, LT_KEY_SHA256)
    assert not verify_integrity(message, LT_KEY_MD5)


def test_b1_as_originally_published_does_not_decode() -> None:
    """The uncorrected vector's length field (0x9c) counts the header: not a STUN message."""
    original = RFC8489_B1[:2] + b"\x00\x9c" + RFC8489_B1[4:]
    with pytest.raises(StunDecodeError, match="message length field says 156 bytes"):
        decode(original)


# -- all vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_integrity_verifies(name: str) -> None:
    raw, key, algorithm, _, has_fingerprint = VECTORS[name]
    message = decode(raw)  # decode checks FINGERPRINT when present
    assert integrity_attribute(message) == algorithm
    assert message.has(Attr.FINGERPRINT) is has_fingerprint
    assert verify_integrity(message, key)
    assert not verify_integrity(message, key[:-1] + bytes([key[-1] ^ 0x01]))


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_reencodes_to_the_exact_bytes(name: str) -> None:
    raw, key, algorithm, padding, has_fingerprint = VECTORS[name]
    message = decode(raw)
    computed = {
        int(Attr.MESSAGE_INTEGRITY),
        int(Attr.MESSAGE_INTEGRITY_SHA256),
        int(Attr.FINGERPRINT),
    }
    body = [(t, v) for t, v in message.attributes if t not in computed]
    rebuilt = build(message.method, message.cls, message.transaction_id, body)
    out = encode(rebuilt, key, integrity=algorithm, fingerprint=has_fingerprint, padding=padding)
    assert out == raw


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_roundtrips_with_attributes_as_given(name: str) -> None:
    """Encoding the decoded message (integrity and fingerprint written as given) is lossless."""
    raw, _, _, padding, _ = VECTORS[name]
    message = decode(raw)
    plain = Message(message.method, message.cls, message.transaction_id, message.attributes)
    assert encode(plain, padding=padding) == raw


@pytest.mark.parametrize("name", list(VECTORS))
def test_any_flipped_byte_fails_integrity(name: str) -> None:
    raw, key, _, _, has_fingerprint = VECTORS[name]
    protected = _strip_fingerprint(raw) if has_fingerprint else raw
    assert verify_integrity(decode(protected), key)
    for corrupted in _flips(protected):
        try:
            message = decode(corrupted)
        except StunDecodeError:
            continue
        assert not verify_integrity(message, key), corrupted.hex()


@pytest.mark.parametrize("name", [n for n, v in VECTORS.items() if v[4]])
def test_any_flipped_byte_fails_fingerprint(name: str) -> None:
    raw = VECTORS[name][0]
    fingerprint_header = range(len(raw) - 8, len(raw) - 4)  # flipped, it is another attribute
    for offset, corrupted in enumerate(_flips(raw)):
        if offset in fingerprint_header:
            continue
        with pytest.raises(StunDecodeError):
            decode(corrupted)
