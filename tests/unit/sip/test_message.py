"""The strict SIP parser against RFC 4475 torture messages (re-typed from the RFC's
descriptions) and our size limits: valid ones parse to the right fields, invalid ones raise the
precise response, and nothing else ever escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.sip.errors import error_response
from callgate.sip.message import (
    MAX_MESSAGE,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_datagram,
    serialize,
)

H = (
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw\r\nMax-Forwards: 70\r\n"
    "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: x@y\r\n"
)

# RFC 4475 §3.1.1.1 "wsinv": odd but valid whitespace, folding, compact forms, case.
WSINV = (
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
    "MaX-fOrWaRdS: 0068\r\nCall-ID\r\n\t:\r\n 0ha0isndaksdj@192.0.2.1\r\n"
    "cseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n  /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
    "s :\r\nl: 0\r\n\r\n"
)


def invite(
    extra: str, cseq: str = "1 INVITE", start: str = "INVITE sip:b@example.com SIP/2.0"
) -> bytes:
    return f"{start}\r\n{H}CSeq: {cseq}\r\n{extra}\r\n".encode()


def test_torture_wsinv_is_valid() -> None:
    message = parse_datagram(WSINV.encode())
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.headers.get("call-id") == "0ha0isndaksdj@192.0.2.1"
    assert message.cseq == (9, "INVITE")
    assert message.headers.get("max-forwards") == "0068"
    assert message.headers.get("subject") == ""
    assert message.headers.all("via") == ["SIP / 2.0 /UDP 192.0.2.2;branch=390skdjuw"]


@pytest.mark.parametrize(
    ("name", "data", "status", "reason"),
    [
        (
            "badinv01 header line without colon",
            invite("Garbage line\r\nContent-Length: 0\r\n"),
            400,
            "Malformed header line",
        ),
        (
            "clerr Content-Length beyond the datagram",
            invite("Content-Length: 9999\r\n") + b"v=0\r\n",
            400,
            "Content-Length larger than the message",
        ),
        (
            "ncl negative Content-Length",
            invite("Content-Length: -999\r\n"),
            400,
            "Bad Content-Length",
        ),
        (
            "scalar02 CSeq over 2**31",
            invite("Content-Length: 0\r\n", cseq="36893488147419103232 INVITE"),
            400,
            "CSeq number out of range",
        ),
        (
            "mismatch01 CSeq method",
            invite("Content-Length: 0\r\n", cseq="1 OPTIONS"),
            400,
            "CSeq method does not match",
        ),
        (
            "badvers SIP/7.0",
            invite("Content-Length: 0\r\n", start="INVITE sip:b@example.com SIP/7.0"),
            505,
            "Version Not Supported",
        ),
        (
            "ltgtruri",
            invite("Content-Length: 0\r\n", start="INVITE <sip:b@example.com> SIP/2.0"),
            400,
            "Bad Request-URI",
        ),
        (
            "unknown scheme",
            invite("Content-Length: 0\r\n", start="INVITE http://example.com/ SIP/2.0"),
            400,
            "Bad Request-URI",
        ),
        (
            "lwsruri spaces in the request line",
            invite("Content-Length: 0\r\n", start="INVITE  sip:b@example.com SIP/2.0"),
            400,
            "Malformed request line",
        ),
        (
            "bare LF",
            invite("Content-Length: 0\r\n").replace(b"Call-ID: x@y\r\n", b"Call-ID: x@y\n"),
            400,
            "Bare CR, LF or NUL in head",
        ),
        (
            "Max-Forwards 300",
            invite("Content-Length: 0\r\n").replace(b"Max-Forwards: 70", b"Max-Forwards: 300"),
            400,
            "Bad Max-Forwards",
        ),
        (
            "not UTF-8",
            invite("Subject: \xff\r\n").replace("\xff".encode(), b"\xff"),
            400,
            "Message is not UTF-8",
        ),
    ],
)
def test_torture_invalid(name: str, data: bytes, status: int, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    assert (caught.value.status, caught.value.reason) == (status, reason), name
    # and it can be answered: a response with the request's Via, Call-ID and the status
    reply = error_response(data, caught.value)
    assert reply is not None
    assert reply.startswith(f"SIP/2.0 {status} {reason}\r\n".encode())
    assert b"branch=z9hG4bKkdjuw" in reply and b"Call-Id" not in reply
    assert b"\r\nCall-ID: x@y" in reply


def test_missing_mandatory_header_is_named() -> None:
    data = b"INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n"
    with pytest.raises(SipParseError, match="Missing To"):
        parse_datagram(data)


def test_oversize_is_513_and_unanswerable_garbage_gets_no_reply() -> None:
    big = invite("X-Pad: " + "a" * MAX_MESSAGE + "\r\nContent-Length: 0\r\n")
    with pytest.raises(SipParseError) as caught:
        parse_datagram(big)
    assert caught.value.status == 513
    assert error_response(b"\x00\x01garbage", SipParseError("x")) is None
    # a response is never answered
    assert error_response(b"SIP/2.0 200 OK\r\n" + H.encode() + b"\r\n", SipParseError("x")) is None


def test_body_is_cut_at_content_length_and_round_trips() -> None:
    data = invite("Content-Type: application/sdp\r\nContent-Length: 4\r\n") + b"v=0\r\nextra"
    message = parse_datagram(data)
    assert message.body == b"v=0\r"
    again = parse_datagram(serialize(message))
    assert isinstance(again, SipRequest) and again.body == b"v=0\r" and again.cseq == (1, "INVITE")


def test_response_parses() -> None:
    message = parse_datagram(b"SIP/2.0 180 Ringing\r\n" + H.encode() + b"CSeq: 1 INVITE\r\n\r\n")
    assert isinstance(message, SipResponse) and message.status == 180


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=400))
def test_never_raises_anything_else(noise: bytes, cut: int) -> None:
    """Random bytes, and valid messages cut or spliced with noise: SipParseError or a message."""
    for data in (noise, WSINV.encode()[:cut] + noise, invite("l: 0\r\n")[:cut]):
        try:
            parse_datagram(data)
        except SipParseError as exc:
            assert 400 <= exc.status < 600
            error_response(data, exc)
