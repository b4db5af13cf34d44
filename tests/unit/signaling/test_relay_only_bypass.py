"""The relay-only bypasses an independent test found (issue 12 item 4), each replayed against the
filter: a private address must not reach the other party in any spelling."""

from __future__ import annotations

import pytest

from callgate.signaling import filter_candidate, filter_sdp
from callgate.signaling.candidate import parse_candidate

OUR_RELAYS = {"203.0.113.10", "2001:db8::10"}
PRIVATE = "10.1.2.3"
RELAY = "candidate:5555 1 udp 41885439 203.0.113.10 61000 typ relay"
HOST = f"candidate:3421 1 udp 2122260223 {PRIVATE} 50123 typ host generation 0"


def sdp(*lines: str) -> str:
    head = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "m=audio 9 UDP/TLS/RTP/SAVPF 111"]
    return "\r\n".join([*head, *lines, "a=ice-ufrag:Yl2u", ""])


@pytest.mark.parametrize(
    "line",
    [
        f"a={RELAY} raddr {PRIVATE} rport 50123 generation 0",  # raddr on a relay candidate
        f"a={HOST}".replace(" ", "\t"),  # tabs
        f"a={HOST}".replace(" ", "\u00a0"),  # no-break spaces
        f"a={HOST}".replace(" ", "  "),  # two spaces
        f" a={HOST}",  # a leading space before the line
        f"a= {HOST}",  # a space after =
        f"a={HOST} ",  # a trailing space
        f"a=Candidate:{HOST.removeprefix('candidate:')}",
        f"a=CANDIDATE:{HOST.removeprefix('candidate:')}",
        f"a=candidate :{HOST.removeprefix('candidate:')}",
        f"a=remote-candidates:1 {PRIVATE} 50123",
        f"a=Remote-Candidates:1 {PRIVATE} 50123",
        f"o=- 1 2 IN IP4 {PRIVATE} ",  # o= with a trailing space
        f"o=- 1 2 IN IP4 {PRIVATE}",
        f"c=IN IP4 {PRIVATE} ",  # c= with a trailing space
        f"c=IN\tIP4\t{PRIVATE}",
        f"c=IN IP4 {PRIVATE}/127",
        f"a=rtcp:9 IN IP4 {PRIVATE} ",
        f"a=RTCP:9 IN IP4 {PRIVATE}",
        f"C=IN IP4 {PRIVATE}",
        f"a=x\u2028a={HOST}",  # a Unicode line separator: one line to an SDP parser
    ],
)
def test_no_spelling_of_a_private_address_survives_relay_only(line: str) -> None:
    filtered = filter_sdp(sdp(line), True, OUR_RELAYS)
    assert PRIVATE not in filtered
    assert "a=ice-ufrag:Yl2u\r\n" in filtered  # the rest of the SDP is still there


def test_relay_candidate_keeps_its_address_and_loses_raddr() -> None:
    filtered = filter_sdp(
        sdp(f"a={RELAY} raddr {PRIVATE} rport 50123 generation 0"), True, OUR_RELAYS
    )
    assert f"a={RELAY} raddr 0.0.0.0 rport 0 generation 0\r\n" in filtered
    assert "o=- 1 2 IN IP4 0.0.0.0\r\n" in filtered


def test_an_unparseable_origin_or_connection_line_becomes_a_neutral_one() -> None:
    filtered = filter_sdp(sdp(f"c=IN IP4 {PRIVATE} extra", "c=bogus"), True, OUR_RELAYS)
    assert filtered.count("c=IN IP4 0.0.0.0\r\n") == 2
    filtered = filter_sdp(sdp().replace("o=- 1 2 IN IP4 127.0.0.1", "o=junk"), True, OUR_RELAYS)
    assert "o=- 0 0 IN IP4 0.0.0.0\r\n" in filtered


@pytest.mark.parametrize(
    "candidate",
    [
        f"{RELAY} raddr {PRIVATE} rport 50123",
        f" {RELAY}",
        f"{RELAY} ",
        RELAY.replace(" ", "\t"),
        RELAY.replace(" ", "\u00a0"),
        RELAY.replace(" ", "  "),
        RELAY.replace("candidate:", "Candidate:"),
        RELAY.replace("typ relay", "typ RELAY"),
        RELAY.replace("typ relay", "TYP relay"),
        f"{RELAY} raddr {PRIVATE} x-private {PRIVATE}",
        f"{RELAY} rport 1 raddr {PRIVATE}",  # out of order: not the grammar
        f"{RELAY} generation",  # an extension without a value
    ],
)
def test_trickled_relay_candidate_is_rewritten_or_dropped(candidate: str) -> None:
    forwarded = filter_candidate(candidate, True, OUR_RELAYS)
    assert forwarded is None or PRIVATE not in forwarded
    if forwarded is not None:
        assert parse_candidate(forwarded) is not None


def test_trickled_relay_candidate_raddr_is_zeroed() -> None:
    candidate = f"{RELAY} raddr {PRIVATE} rport 50123 generation 0 ufrag Yl2u network-id 1"
    assert filter_candidate(candidate, True, OUR_RELAYS) == (
        f"{RELAY} raddr 0.0.0.0 rport 0 generation 0 ufrag Yl2u network-id 1"
    )
    assert filter_candidate(candidate, False, OUR_RELAYS) == candidate
    assert filter_candidate("", True, OUR_RELAYS) == ""


@pytest.mark.parametrize(
    "line",
    [
        "candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host",
        "a=candidate:1 1 UDP 2122260223 10.1.2.3 50123 typ host",
        "candidate:a+/Z 2 tcp 1518280447 10.1.2.3 9 typ host tcptype active generation 0",
        "candidate:1 1 udp 2122129151 4a1b2c3d-1111-2222-3333-444455556666.local 50125 typ host",
        "candidate:1 1 udp 41886207 2001:db8::10 61002 typ relay raddr :: rport 0",
    ],
)
def test_what_browsers_and_aioice_write_parses_and_round_trips(line: str) -> None:
    parsed = parse_candidate(line)
    assert parsed is not None and str(parsed) == line


@pytest.mark.parametrize(
    "line",
    [
        "candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host ",
        "candidate:1 1 udp 2122260223 10.1.2.3 70000 typ host",
        "candidate:1 1 udp 99999999999 10.1.2.3 50123 typ host",
        "candidate:1 1 sctp 2122260223 10.1.2.3 50123 typ host",
        "candidate:1 1 udp 2122260223 10.1.2.3 50123 typ bogus",
        "candidate:" + "f" * 33 + " 1 udp 2122260223 10.1.2.3 50123 typ host",
        "candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host raddr",
        "candidate:1 1 udp 2122260223 10.1.2.3 \uff15\uff10 typ host",  # full-width digits
        "garbage",
        "",
    ],
)
def test_what_does_not_follow_the_grammar_does_not_parse(line: str) -> None:
    assert parse_candidate(line) is None
