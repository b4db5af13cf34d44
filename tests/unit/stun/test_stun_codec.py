"""STUN codec: round trips (hypothesis), attribute pack/unpack pairs, exact decode errors,
and ChannelData framing (RFC 8489, RFC 8656 §12.4-12.5)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.stun import attributes as attrs
from callgate.stun import channel_data
from callgate.stun.constants import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    MAGIC_COOKIE_BYTES,
    PROTO_TCP,
    PROTO_UDP,
    Attr,
    MessageClass,
    Method,
)
from callgate.stun.message import (
    Message,
    StunDecodeError,
    build,
    decode,
    encode,
    is_stun,
    join_type,
    split_type,
    verify_integrity,
)

TID = bytes(range(1, 13))
KEY = b"0123456789abcdef"
SPECIAL = {int(Attr.MESSAGE_INTEGRITY), int(Attr.MESSAGE_INTEGRITY_SHA256), int(Attr.FINGERPRINT)}
# Plain attributes never take the type the round trip decodes as addresses.
NOT_PLAIN = SPECIAL | {int(Attr.XOR_PEER_ADDRESS)}

methods = st.integers(min_value=0, max_value=0xFFF)
classes = st.sampled_from(list(MessageClass))
tids = st.binary(min_size=12, max_size=12)
ports = st.integers(min_value=0, max_value=0xFFFF)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.tuples(st.one_of(ipv4, ipv6), ports)
plain_attribute = st.tuples(
    st.integers(min_value=0, max_value=0xFFFF).filter(lambda t: t not in NOT_PLAIN),
    st.binary(max_size=40),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """Random messages, including several XOR-PEER-ADDRESS attributes."""
    tid = draw(tids)
    peers = draw(st.lists(addresses, max_size=4))
    items = draw(st.lists(plain_attribute, max_size=8))
    items += [(int(Attr.XOR_PEER_ADDRESS), attrs.pack_xor_address(p, tid)) for p in peers]
    items = draw(st.permutations(items))
    return build(draw(methods), draw(classes), tid, items)


def _exact(message: str) -> str:
    """A pytest.raises pattern matching exactly `message`."""
    return f"^{re.escape(message)}$"


def _header(length: int, message_type: int = 0x0001, cookie: bytes = MAGIC_COOKIE_BYTES) -> bytes:
    return struct.pack("!HH", message_type, length) + cookie + TID


# -- message type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cls", "wire"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.SUCCESS, 0x0101),
        (Method.BINDING, MessageClass.ERROR, 0x0111),
        (Method.ALLOCATE, MessageClass.REQUEST, 0x0003),
        (Method.ALLOCATE, MessageClass.SUCCESS, 0x0103),
        (Method.ALLOCATE, MessageClass.ERROR, 0x0113),
        (Method.SEND, MessageClass.INDICATION, 0x0016),
        (Method.DATA, MessageClass.INDICATION, 0x0017),
        (Method.CHANNEL_BIND, MessageClass.SUCCESS, 0x0109),
    ],
)
def test_message_type_on_the_wire(method: int, cls: MessageClass, wire: int) -> None:
    assert join_type(method, cls) == wire
    assert split_type(wire) == (method, cls)


@given(methods, classes)
@settings(max_examples=100)
def test_message_type_roundtrip(method: int, cls: MessageClass) -> None:
    assert split_type(join_type(method, cls)) == (method, cls)


# -- round trips ----------------------------------------------------------------------------


@given(messages())
@settings(max_examples=150)
def test_encode_decode_roundtrip(message: Message) -> None:
    raw = encode(message)
    assert len(raw) % 4 == 0
    assert is_stun(raw)
    decoded = decode(raw)
    assert decoded == message
    tid = message.transaction_id
    peers = [attrs.unpack_xor_address(v, tid) for v in message.get_all(Attr.XOR_PEER_ADDRESS)]
    assert [
        attrs.unpack_xor_address(v, tid) for v in decoded.get_all(Attr.XOR_PEER_ADDRESS)
    ] == peers


@given(
    messages(),
    st.sampled_from([Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256]),
    st.booleans(),
)
@settings(max_examples=150)
def test_integrity_roundtrip(message: Message, integrity: Attr, fingerprint: bool) -> None:
    raw = encode(message, KEY, integrity=integrity, fingerprint=fingerprint)
    decoded = decode(raw)
    expected = [*message.types(), int(integrity)] + ([int(Attr.FINGERPRINT)] if fingerprint else [])
    assert decoded.types() == expected
    assert decoded.attributes[: len(message.attributes)] == message.attributes
    assert verify_integrity(decoded, KEY)
    assert not verify_integrity(decoded, b"another key")


@given(messages())
@settings(max_examples=100)
def test_fingerprint_roundtrip_and_detects_corruption(message: Message) -> None:
    raw = encode(message, fingerprint=True)
    assert decode(raw).types()[-1] == Attr.FINGERPRINT
    corrupted = bytearray(raw)
    corrupted[-1] ^= 0xFF
    with pytest.raises(StunDecodeError, match=_exact("FINGERPRINT does not match the message")):
        decode(bytes(corrupted))


def test_message_without_integrity_does_not_verify() -> None:
    assert not verify_integrity(decode(encode(build(1, MessageClass.REQUEST, TID))), KEY)
    # Nor does one that was built rather than received: there are no bytes to check.
    assert not verify_integrity(
        build(1, MessageClass.REQUEST, TID, [(Attr.MESSAGE_INTEGRITY, b"\0" * 20)]), KEY
    )


def test_truncated_sha256_integrity_verifies() -> None:
    """MESSAGE-INTEGRITY-SHA256 may be truncated to 16 bytes or more (RFC 8489 §14.6)."""
    header = _header(4 + 16)
    mac = hmac.new(KEY, header, hashlib.sha256).digest()[:16]
    raw = header + b"\x00\x1c\x00\x10" + mac
    assert verify_integrity(decode(raw), KEY)
    assert not verify_integrity(decode(raw[:-1] + bytes([raw[-1] ^ 1])), KEY)
    # Shorter than 16 bytes is not accepted, whatever its content.
    short_header = _header(4 + 12)
    short_mac = hmac.new(KEY, short_header, hashlib.sha256).digest()[:12]
    short = short_header + b"\x00\x1c\x00\x0c" + short_mac
    assert not verify_integrity(decode(short), KEY)


def test_padding_is_zero_by_default() -> None:
    raw = encode(build(1, MessageClass.REQUEST, TID, [(Attr.USERNAME, b"abcde")]))
    assert raw[20:] == b"\x00\x06\x00\x05abcde\x00\x00\x00"
    assert raw[2:4] == b"\x00\x0c"


def test_oversized_message_is_refused_with_value_error() -> None:
    with pytest.raises(ValueError, match="value too large: 65536 bytes"):
        encode(build(1, MessageClass.REQUEST, TID, [(Attr.DATA, b"x" * 65536)]))
    fits = build(1, MessageClass.REQUEST, TID, [(Attr.DATA, b"x" * 65528)])
    assert len(encode(fits)) == 20 + 65532
    with pytest.raises(ValueError, match=_exact("STUN message too large")):
        encode(fits, KEY)


# -- attributes after MESSAGE-INTEGRITY (RFC 8489 §14.5, §14.6) -----------------------------


def _append(raw: bytes, attr_type: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    out = raw + struct.pack("!HH", attr_type, len(value)) + value + b"\0" * pad
    return out[:2] + (len(out) - 20).to_bytes(2, "big") + out[4:]


def test_attributes_after_message_integrity_are_ignored() -> None:
    signed = encode(
        build(Method.REFRESH, MessageClass.REQUEST, TID, [(Attr.LIFETIME, attrs.pack_uint32(600))]),
        KEY,
    )
    tampered = _append(signed, Attr.LIFETIME, attrs.pack_uint32(0))
    message = decode(tampered)
    assert message.get_all(Attr.LIFETIME) == [attrs.pack_uint32(600)]
    assert verify_integrity(message, KEY)
    unknown = decode(_append(signed, 0x0031, b"\0" * 4))
    assert 0x0031 not in unknown.types()


def test_sha256_integrity_and_fingerprint_after_message_integrity_count() -> None:
    signed = encode(build(1, MessageClass.REQUEST, TID), KEY)
    both = _append(signed, Attr.MESSAGE_INTEGRITY_SHA256, b"\0" * 32)
    assert decode(both).types() == [Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256]
    sha = encode(build(1, MessageClass.REQUEST, TID), KEY, integrity=Attr.MESSAGE_INTEGRITY_SHA256)
    after_sha = _append(sha, Attr.USERNAME, b"mallory")
    assert decode(after_sha).types() == [Attr.MESSAGE_INTEGRITY_SHA256]
    with_fp = encode(build(1, MessageClass.REQUEST, TID), KEY, fingerprint=True)
    assert decode(with_fp).types() == [Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT]


# -- malformed input: one error type, exact messages ---------------------------------------


def _fingerprinted() -> bytes:
    return encode(build(1, MessageClass.REQUEST, TID, [(Attr.SOFTWARE, b"x")]), fingerprint=True)


MALFORMED = [
    (
        "short header",
        b"\x00\x01\x00\x00" + MAGIC_COOKIE_BYTES + TID[:11],
        "message too short: 19 bytes, header needs 20",
    ),
    ("empty", b"", "message too short: 0 bytes, header needs 20"),
    (
        "top bits set",
        _header(0, message_type=0xC001),
        "first two bits of a STUN message must be zero",
    ),
    ("bad cookie", _header(0, cookie=b"\xde\xad\xbe\xef"), "bad magic cookie 0xdeadbeef"),
    ("length not multiple of 4", _header(5) + b"\0" * 5, "message length 5 is not a multiple of 4"),
    (
        "length longer than data",
        _header(8) + b"\0" * 4,
        "message length field says 8 bytes of attributes, got 4",
    ),
    (
        "length shorter than data",
        _header(0) + b"\0" * 4,
        "message length field says 0 bytes of attributes, got 4",
    ),
    (
        "truncated attribute",
        _header(8) + b"\x00\x06\x00\x08abcd",
        "attribute 0x0006 at offset 20 claims 8 bytes, only 4 left",
    ),
    (
        "bad fingerprint",
        _fingerprinted()[:-1] + bytes([_fingerprinted()[-1] ^ 1]),
        "FINGERPRINT does not match the message",
    ),
    (
        "fingerprint not last",
        _append(_fingerprinted(), Attr.SOFTWARE, b"late"),
        "FINGERPRINT is not the last attribute",
    ),
    (
        "fingerprint wrong size",
        _header(12) + b"\x80\x28\x00\x08" + b"\0" * 8,
        "FINGERPRINT must be 4 bytes, got 8",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [(d, m) for _, d, m in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_raises_stun_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        decode(data)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@given(st.binary(max_size=120))
@settings(max_examples=200)
def test_decode_arbitrary_bytes_only_raises_stun_decode_error(data: bytes) -> None:
    with contextlib.suppress(StunDecodeError):
        decode(data)


@given(st.binary(max_size=100), st.integers(min_value=0, max_value=0x3FFF))
@settings(max_examples=200)
def test_decode_arbitrary_bodies_behind_a_valid_header(body: bytes, message_type: int) -> None:
    """Past the cookie check, random attribute bytes still only raise StunDecodeError."""
    data = _header(len(body), message_type) + body
    try:
        message = decode(data)
    except StunDecodeError:
        return
    # What was decoded can be sent again, and is never longer than what came in.
    plain = Message(message.method, message.cls, message.transaction_id, message.attributes)
    assert len(encode(plain)) <= len(data)


@given(messages(), st.data())
@settings(max_examples=150)
def test_decode_mutated_messages_only_raises_stun_decode_error(
    message: Message, data: st.DataObject
) -> None:
    raw = bytearray(encode(message, KEY, fingerprint=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] = data.draw(
            st.integers(0, 255)
        )
    try:
        decoded = decode(bytes(raw))
    except StunDecodeError:
        return
    verify_integrity(decoded, KEY)


# -- attribute pack/unpack pairs ------------------------------------------------------------


@given(ipv4, ports, tids)
@settings(max_examples=100)
def test_xor_address_ipv4_roundtrip(host: str, port: int, tid: bytes) -> None:
    value = attrs.pack_xor_address((host, port), tid)
    assert len(value) == 8 and value[1] == FAMILY_IPV4
    assert attrs.unpack_xor_address(value, tid) == (host, port)
    assert attrs.address_family(value) == FAMILY_IPV4


@given(ipv6, ports, tids)
@settings(max_examples=100)
def test_xor_address_ipv6_roundtrip(host: str, port: int, tid: bytes) -> None:
    value = attrs.pack_xor_address((host, port), tid)
    assert len(value) == 20 and value[1] == FAMILY_IPV6
    assert attrs.unpack_xor_address(value, tid) == (host, port)
    # On the wire the address is XORed with the magic cookie and the transaction id.
    mask = MAGIC_COOKIE_BYTES + tid
    packed = ipaddress.IPv6Address(host).packed
    assert value[4:] == bytes(x ^ y for x, y in zip(packed, mask, strict=True))


@given(addresses)
@settings(max_examples=100)
def test_plain_address_roundtrip(address: tuple[str, int]) -> None:
    assert attrs.unpack_address(attrs.pack_address(address)) == address


def test_xor_address_known_value() -> None:
    assert attrs.pack_xor_address(("192.0.2.1", 32853), TID) == bytes.fromhex("0001a147e112a643")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00\x01\x00", "XOR address attribute too short: 3 bytes"),
        (b"\x00\x01\x00\x00\x01\x02\x03", "XOR address attribute: family 1 with 3 address bytes"),
        (b"\x00\x02\x00\x00" + b"\0" * 4, "XOR address attribute: family 2 with 4 address bytes"),
        (b"\x00\x03\x00\x00" + b"\0" * 4, "XOR address attribute: family 3 with 4 address bytes"),
    ],
)
def test_xor_address_malformed(value: bytes, message: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        attrs.unpack_xor_address(value, TID)
    assert str(info.value) == message


def test_plain_address_malformed() -> None:
    with pytest.raises(StunDecodeError, match=_exact("address attribute too short: 2 bytes")):
        attrs.unpack_address(b"\x00\x01")
    with pytest.raises(
        StunDecodeError, match=_exact("address attribute: family 1 with 16 address bytes")
    ):
        attrs.unpack_address(b"\x00\x01\x00\x00" + b"\0" * 16)


@given(st.integers(min_value=300, max_value=699), st.text(max_size=60))
@settings(max_examples=100)
def test_error_code_roundtrip(code: int, reason: str) -> None:
    assert attrs.unpack_error_code(attrs.pack_error_code(code, reason)) == (code, reason)


def test_error_code_wire_format() -> None:
    assert attrs.pack_error_code(438, "Stale Nonce") == b"\x00\x00\x04\x26Stale Nonce"
    with pytest.raises(StunDecodeError, match=_exact("ERROR-CODE too short: 3 bytes")):
        attrs.unpack_error_code(b"\x00\x00\x04")
    with pytest.raises(StunDecodeError, match=_exact("ERROR-CODE class 2 number 0 out of range")):
        attrs.unpack_error_code(b"\x00\x00\x02\x00")
    with pytest.raises(StunDecodeError, match=_exact("ERROR-CODE class 4 number 100 out of range")):
        attrs.unpack_error_code(b"\x00\x00\x04\x64")
    with pytest.raises(StunDecodeError, match=_exact("ERROR-CODE reason is not valid UTF-8")):
        attrs.unpack_error_code(b"\x00\x00\x04\x00\xff")


@given(st.lists(st.integers(min_value=0, max_value=0xFFFF), max_size=10))
@settings(max_examples=100)
def test_unknown_attributes_roundtrip(types: list[int]) -> None:
    assert attrs.unpack_unknown_attributes(attrs.pack_unknown_attributes(types)) == types


def test_unknown_attributes_wire_and_malformed() -> None:
    assert attrs.pack_unknown_attributes([0x0031, 0x7FFF]) == b"\x00\x31\x7f\xff"
    with pytest.raises(StunDecodeError, match=_exact("UNKNOWN-ATTRIBUTES length is odd")):
        attrs.unpack_unknown_attributes(b"\x00\x31\x00")


@given(st.integers(min_value=0, max_value=0xFFFF))
@settings(max_examples=50)
def test_channel_number_roundtrip(channel: int) -> None:
    value = attrs.pack_channel_number(channel)
    assert value[2:] == b"\x00\x00"  # RFFU
    assert attrs.unpack_channel_number(value) == channel


def test_channel_number_wire_and_malformed() -> None:
    assert attrs.pack_channel_number(0x4000) == b"\x40\x00\x00\x00"
    with pytest.raises(StunDecodeError, match=_exact("CHANNEL-NUMBER must be 4 bytes, got 2")):
        attrs.unpack_channel_number(b"\x40\x00")


@pytest.mark.parametrize("protocol", [PROTO_UDP, PROTO_TCP])
def test_requested_transport_roundtrip(protocol: int) -> None:
    value = attrs.pack_requested_transport(protocol)
    assert value == bytes([protocol, 0, 0, 0])
    assert attrs.unpack_requested_transport(value) == protocol


def test_requested_transport_malformed() -> None:
    with pytest.raises(StunDecodeError, match=_exact("REQUESTED-TRANSPORT must be 4 bytes, got 1")):
        attrs.unpack_requested_transport(b"\x11")


@pytest.mark.parametrize("family", [FAMILY_IPV4, FAMILY_IPV6])
def test_family_roundtrip(family: int) -> None:
    value = attrs.pack_family(family)
    assert value == bytes([family, 0, 0, 0])
    assert attrs.unpack_family(value) == family


def test_family_malformed() -> None:
    with pytest.raises(
        StunDecodeError, match=_exact("address family attribute must be 4 bytes, got 3")
    ):
        attrs.unpack_family(b"\x01\x00\x00")


@pytest.mark.parametrize(
    ("value", "reserve"),
    [(b"\x80", True), (b"\x00", False), (b"\x80\x00\x00\x00", True), (b"\x7f", False)],
)
def test_even_port(value: bytes, reserve: bool) -> None:
    assert attrs.unpack_even_port(value) is reserve


def test_even_port_malformed() -> None:
    with pytest.raises(StunDecodeError, match=_exact("EVEN-PORT must be 1 byte, got 2")):
        attrs.unpack_even_port(b"\x80\x00")
    with pytest.raises(StunDecodeError, match=_exact("EVEN-PORT must be 1 byte, got 0")):
        attrs.unpack_even_port(b"")


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
@settings(max_examples=50)
def test_uint32_roundtrip(number: int) -> None:
    assert attrs.unpack_uint32(attrs.pack_uint32(number)) == number


def test_uint32_malformed() -> None:
    with pytest.raises(StunDecodeError, match=_exact("LIFETIME must be 4 bytes, got 5")):
        attrs.unpack_uint32(b"\0" * 5, "LIFETIME")


@given(st.text(max_size=100))
@settings(max_examples=100)
def test_text_roundtrip(text: str) -> None:
    assert attrs.unpack_text(attrs.pack_text(text), "SOFTWARE") == text


def test_text_limits_and_encoding() -> None:
    assert attrs.unpack_text(b"u" * 513, "USERNAME") == "u" * 513
    with pytest.raises(StunDecodeError, match=_exact("USERNAME is 514 bytes, limit 513")):
        attrs.unpack_text(b"u" * 514, "USERNAME")
    with pytest.raises(StunDecodeError, match=_exact("NONCE is 764 bytes, limit 763")):
        attrs.unpack_text(b"n" * 764, "NONCE")
    with pytest.raises(StunDecodeError, match=_exact("REALM is not valid UTF-8")):
        attrs.unpack_text(b"\xff\xfe", "REALM")


def test_address_error_code_wire_format() -> None:
    """ADDRESS-ERROR-CODE: family, 13 reserved bits, class, number, reason (RFC 8656 §18.12)."""
    value = attrs.pack_address_error_code(FAMILY_IPV6, 440, "IPv6 unavailable")
    assert value == b"\x02\x00\x04\x28IPv6 unavailable"


# -- ChannelData (RFC 8656 §12.4, §12.5) ---------------------------------------------------


def test_channel_data_encode_unpadded_and_padded() -> None:
    assert channel_data.encode(0x4000, b"hello") == b"\x40\x00\x00\x05hello"
    padded = channel_data.encode(0x4000, b"hello", pad=True)
    assert padded == b"\x40\x00\x00\x05hello\x00\x00\x00"
    assert channel_data.encode(0x4001, b"four", pad=True) == b"\x40\x01\x00\x04four"
    assert channel_data.framed_length(padded[:4]) == len(padded) == 12
    assert channel_data.decode(padded) == (0x4000, b"hello")


@pytest.mark.parametrize("channel", [0x4000, 0x4FFF, 0x5000, 0x7FFF])
def test_channel_data_accepts_the_whole_range(channel: int) -> None:
    packet = channel_data.encode(channel, b"x")
    assert channel_data.is_channel_data(packet)
    assert not is_stun(packet)
    assert channel_data.decode(packet) == (channel, b"x")


@pytest.mark.parametrize("channel", [0x3FFF, 0x8000, 0x0001, 0xFFFF])
def test_channel_data_refuses_outside_the_range(channel: int) -> None:
    with pytest.raises(StunDecodeError) as info:
        channel_data.decode(channel_data.encode(channel, b"x"))
    assert str(info.value) == f"channel number 0x{channel:04x} outside 0x4000-0x7FFF"


def test_channel_data_malformed() -> None:
    with pytest.raises(StunDecodeError, match=_exact("ChannelData too short: 3 bytes")):
        channel_data.decode(b"\x40\x00\x00")
    with pytest.raises(
        StunDecodeError, match=_exact("ChannelData length 8 exceeds the 4 bytes sent")
    ):
        channel_data.decode(b"\x40\x00\x00\x08abcd")


@given(
    st.integers(min_value=0x4000, max_value=0x7FFF),
    st.binary(max_size=300),
    st.booleans(),
)
@settings(max_examples=150)
def test_channel_data_roundtrip(channel: int, data: bytes, pad: bool) -> None:
    packet = channel_data.encode(channel, data, pad=pad)
    if pad:
        assert len(packet) % 4 == 0
        assert channel_data.framed_length(packet[:4]) == len(packet)
    assert channel_data.decode(packet) == (channel, data)


@given(st.binary(max_size=40))
@settings(max_examples=200)
def test_channel_data_decode_arbitrary_bytes_only_raises_stun_decode_error(data: bytes) -> None:
    try:
        channel, payload = channel_data.decode(data)
    except StunDecodeError:
        return
    assert channel_data.valid_channel(channel)
    assert len(payload) == int.from_bytes(data[2:4], "big")
