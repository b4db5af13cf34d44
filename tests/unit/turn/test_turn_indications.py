"""The data-path Send/Data indication codec agrees with the general STUN codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.stun import attributes as attrs
from callgate.stun.constants import MAGIC_COOKIE, Attr, MessageClass, Method
from callgate.stun.message import StunDecodeError, build, decode, encode
from callgate.turn import indications
from callgate.turn.indications import data_indication, parse_send

peers = st.tuples(
    st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)),
    st.integers(min_value=0, max_value=0xFFFF),
)
payloads = st.binary(max_size=300)
tids = st.binary(min_size=12, max_size=12)


def _send(peer: tuple[str, int], data: bytes, tid: bytes, *extra: tuple[int, bytes]) -> list:
    return [
        (Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(peer, tid)),
        (Attr.DATA, data),
        *extra,
    ]


@given(peers, payloads, tids, st.booleans())
@settings(max_examples=150)
def test_parse_send_reads_what_the_codec_wrote(
    peer: tuple[str, int], data: bytes, tid: bytes, fingerprint: bool
) -> None:
    extra = [(Attr.SOFTWARE, b"x" * (len(data) % 7))]
    message = build(Method.SEND, MessageClass.INDICATION, tid, _send(peer, data, tid, *extra))
    assert parse_send(encode(message, fingerprint=fingerprint)) == (peer, data)


@given(peers, payloads)
@settings(max_examples=150)
def test_data_indication_decodes_with_the_general_codec(peer: tuple[str, int], data: bytes) -> None:
    message = decode(data_indication(peer, data))
    assert (message.method, message.cls) == (Method.DATA, MessageClass.INDICATION)
    value = message.get(Attr.XOR_PEER_ADDRESS)
    assert value is not None
    assert attrs.unpack_xor_address(value, message.transaction_id) == peer
    assert message.get(Attr.DATA) == data


def test_data_indications_get_distinct_transaction_ids() -> None:
    ids = {decode(data_indication(("192.0.2.1", 5000), b"x")).transaction_id for _ in range(50)}
    assert len(ids) == 50


TID = bytes(range(12))
PEER = ("192.0.2.7", 4000)


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        ([(Attr.DATA, b"hi")], "without XOR-PEER-ADDRESS or DATA"),
        ([(Attr.XOR_PEER_ADDRESS, attrs.pack_xor_address(PEER, TID))], "without XOR-PEER-ADDRESS"),
        (_send(PEER, b"hi", TID, (0x0031, b"\x00\x00\x00\x00")), "comprehension-required"),
    ],
)
def test_send_indications_that_must_be_discarded(attributes: list, error: str) -> None:
    packet = encode(build(Method.SEND, MessageClass.INDICATION, TID, attributes))
    with pytest.raises(StunDecodeError, match=error):
        parse_send(packet)


def test_a_wrong_fingerprint_is_refused() -> None:
    packet = bytearray(
        encode(
            build(Method.SEND, MessageClass.INDICATION, TID, _send(PEER, b"hi", TID)),
            fingerprint=True,
        )
    )
    packet[-1] ^= 0xFF
    with pytest.raises(StunDecodeError, match="FINGERPRINT does not match"):
        parse_send(bytes(packet))


def test_optional_unknown_attributes_are_ignored() -> None:
    packet = encode(
        build(Method.SEND, MessageClass.INDICATION, TID, _send(PEER, b"hi", TID, (0x8031, b"zz")))
    )
    assert parse_send(packet) == (PEER, b"hi")


@pytest.mark.parametrize("cut", [19, 21, 30])
def test_truncated_send_indications_are_refused(cut: int) -> None:
    packet = encode(build(Method.SEND, MessageClass.INDICATION, TID, _send(PEER, b"hello", TID)))
    with pytest.raises(StunDecodeError):
        parse_send(packet[:cut])


def _outcome(parse: object, packet: bytes | memoryview) -> tuple[object, ...]:
    try:
        peer, data = parse(packet)  # type: ignore[operator]
    except StunDecodeError:
        return ("refused",)
    return ("ok", peer, bytes(data))


@given(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(min_value=0, max_value=0xFFFF)),
    payloads,
    tids,
    st.booleans(),
    st.booleans(),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
)
@settings(max_examples=400)
def test_the_fixed_offset_reading_agrees_with_the_general_one(
    peer: tuple[str, int],
    data: bytes,
    tid: bytes,
    fingerprint: bool,
    data_first: bool,
    flips: list[tuple[int, int]],
) -> None:
    """The layouts clients send (IPv4 XOR-PEER-ADDRESS and DATA in either order, maybe a
    FINGERPRINT) are read at fixed offsets; with any bytes changed they must be accepted or
    refused exactly as the attribute loop would, from bytes or from a memoryview of the receive
    buffer."""
    attributes = _send(peer, data, tid)
    if data_first:
        attributes.reverse()  # coturn's turnutils_uclient sends DATA first
    message = build(Method.SEND, MessageClass.INDICATION, tid, attributes)
    packet = bytearray(encode(message, fingerprint=fingerprint))
    for position, value in flips:
        packet[position % len(packet)] = value
    expected = _outcome(lambda p: indications._parse_any(p, len(p)), bytes(packet))
    if packet[4:8] != MAGIC_COOKIE.to_bytes(4, "big") or len(packet) - 20 != (
        (packet[2] << 8) | packet[3]
    ):
        expected = ("refused",)
    assert _outcome(parse_send, bytes(packet)) == expected
    assert _outcome(parse_send, memoryview(packet)) == expected
    if not flips:
        assert expected == ("ok", peer, data)
