"""Relay-only enforcement on real SDP (aiortc 1.16 and Chrome shapes) and trickled candidates."""

from __future__ import annotations

import pytest

from callgate.signaling import candidate_type, filter_candidate, filter_sdp
from callgate.signaling.sdp import candidate_address, normalize_addresses

OUR_RELAYS = {"203.0.113.10", "2001:db8::10"}

# An offer as aiortc 1.16 writes it (RTCConfiguration(iceServers=[]), one audio track), with a relay
# candidate added as aiortc would list it had it been given our TURN server.
AIORTC_OFFER = (
    "v=0\r\n"
    "o=- 4004799506 4004799506 IN IP4 0.0.0.0\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\n"
    "m=audio 59805 UDP/TLS/RTP/SAVPF 96 9 0 8\r\n"
    "c=IN IP4 192.0.2.2\r\n"
    "a=sendrecv\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=mid:0\r\n"
    "a=msid:425112f9-2b4e-4797-926e-38a8a6965cc6 c83c5516-7338-4224-b852-40509c6aa6a7\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=rtcp-mux\r\n"
    "a=ssrc:971629201 cname:b3ac5bfc-69ae-4179-bcde-b826019c05f8\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 192.0.2.2 59805 typ host\r\n"
    "a=candidate:d0bcf3d9c29a2bc887618212a1623bfa 1 udp 2130706431 fd00::2 34599 typ host\r\n"
    "a=candidate:6a4e4f1c8d1b5b0f3e2a1c9d8e7f6a5b 1 udp 16777215 203.0.113.10 51234 typ relay"
    " raddr 192.0.2.2 rport 59805\r\n"
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:0AYL\r\n"
    "a=ice-pwd:03ZhMvzpr4nHN4eiAO8hjj\r\n"
    "a=fingerprint:sha-256 70:5D:88:36:BD:9D:0C:5D:A2:36:6D:8D:E3:48:EE:9D:73:44:7B:48:B4:97:"
    "86:3A:98:86:E2:CF:29:A4:A5:47\r\n"
    "a=setup:actpass\r\n"
)

# A Chrome-style offer: mDNS and IP host candidates (UDP and TCP), srflx, relay (ours, foreign,
# IPv6), a TCP relay, `a=end-of-candidates`.
CHROME_OFFER = (
    "v=0\r\n"
    "o=- 8391612735129856 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "a=extmap-allow-mixed\r\n"
    "a=msid-semantic: WMS 7b4e\r\n"
    "m=audio 50123 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n"
    "c=IN IP4 198.51.100.44\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:3421 1 udp 2122260223 10.1.2.3 50123 typ host generation 0 network-id 1\r\n"
    "a=candidate:1111 1 udp 2122262783 2001:db8:1::5 50124 typ host generation 0 network-id 2\r\n"
    "a=candidate:2222 1 udp 2122129151 4a1b2c3d-1111-2222-3333-444455556666.local 50125 typ host"
    " generation 0 network-id 3\r\n"
    "a=candidate:3333 1 tcp 1518280447 10.1.2.3 9 typ host tcptype active generation 0\r\n"
    "a=candidate:4444 1 udp 1686052607 198.51.100.44 50123 typ srflx raddr 10.1.2.3"
    " rport 50123 generation 0\r\n"
    "a=candidate:5555 1 udp 41885439 203.0.113.10 61000 typ relay raddr 198.51.100.44"
    " rport 50123 generation 0\r\n"
    "a=candidate:6666 1 udp 41886207 2001:db8::10 61002 typ relay raddr 2001:db8:1::5"
    " rport 50124 generation 0\r\n"
    "a=candidate:7777 1 udp 41885695 198.51.100.7 62000 typ relay raddr 198.51.100.44"
    " rport 50123 generation 0\r\n"
    "a=candidate:8888 1 tcp 25108223 203.0.113.10 61004 typ relay raddr 198.51.100.44"
    " rport 50126 generation 0\r\n"
    "a=end-of-candidates\r\n"
    "a=ice-ufrag:Yl2u\r\n"
    "a=ice-pwd:CMqB0bKgpT2y6nNnpMkvKq3f\r\n"
    "a=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 1B:5F:AA:12:9C:77:0E:3D:44:58:21:9A:B0:CC:31:47:FE:2D:81:65:09:3A:"
    "B4:6E:D0:11:72:5C:8F:E3:A9:04\r\n"
    "a=setup:actpass\r\n"
    "a=mid:0\r\n"
    "a=sendrecv\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
)


def candidates(sdp: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line.startswith("a=candidate:")]


def test_not_relay_only_leaves_the_sdp_untouched() -> None:
    assert filter_sdp(CHROME_OFFER, False, OUR_RELAYS) is CHROME_OFFER


def test_chrome_offer_keeps_only_our_relay_candidates() -> None:
    filtered = filter_sdp(CHROME_OFFER, True, OUR_RELAYS)
    assert [line.split()[0] for line in candidates(filtered)] == [
        "a=candidate:5555",
        "a=candidate:6666",
        "a=candidate:8888",
    ]
    # Everything but candidates and the leaking default address is kept, CRLF and all.
    removed = set(CHROME_OFFER.split("\r\n")) - set(filtered.split("\r\n"))
    assert all(line.startswith(("a=candidate:", "c=", "o=")) for line in removed)
    assert "c=IN IP4 0.0.0.0\r\n" in filtered
    assert "198.51.100.44 " not in filtered.replace("raddr 198.51.100.44", "")
    assert "a=end-of-candidates\r\n" in filtered
    assert filtered.count("\r\n") == filtered.count("\n")
    assert filtered.endswith("a=fmtp:111 minptime=10;useinbandfec=1\r\n")


def test_aiortc_offer_loses_its_host_candidates_and_address() -> None:
    filtered = filter_sdp(AIORTC_OFFER, True, OUR_RELAYS)
    assert [candidate_type(line) for line in candidates(filtered)] == ["relay"]
    assert "192.0.2.2 59805 typ host" not in filtered and "fd00::2" not in filtered
    assert "c=IN IP4 0.0.0.0\r\n" in filtered
    assert "a=rtcp:9 IN IP4 0.0.0.0\r\n" in filtered
    assert len(filtered.split("\r\n")) == len(AIORTC_OFFER.split("\r\n")) - 2


def test_aiortc_still_parses_the_filtered_offer() -> None:
    from aiortc.sdp import SessionDescription

    parsed = SessionDescription.parse(filter_sdp(AIORTC_OFFER, True, OUR_RELAYS))
    (media,) = parsed.media
    assert [(c.type, c.ip, c.port) for c in media.ice_candidates] == [
        ("relay", "203.0.113.10", 51234)
    ]
    assert media.ice_candidates_complete
    assert media.ice is not None and media.ice.usernameFragment == "0AYL"


def test_a_relay_address_of_ours_in_c_line_is_kept() -> None:
    sdp = "v=0\r\nm=audio 61000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP6 2001:db8::10\r\n"
    assert filter_sdp(sdp, True, OUR_RELAYS) == sdp


def test_lf_only_sdp_keeps_its_line_endings() -> None:
    lf = CHROME_OFFER.replace("\r\n", "\n")
    filtered = filter_sdp(lf, True, OUR_RELAYS)
    assert "\r" not in filtered and len(candidates(filtered.replace("\n", "\r\n"))) == 3


def test_every_line_keeps_its_own_ending() -> None:
    """CRLF, LF and a last line ending in CR alone, in one SDP; a second CR before a line's end
    is not printable, so that line is dropped."""
    sdp = "v=0\r\ns=-\nt=0 0\r\r\na=mid:0\na=rtcp-mux\r"
    assert filter_sdp(sdp, True, OUR_RELAYS) == "v=0\r\ns=-\na=mid:0\na=rtcp-mux\r"
    masked = filter_sdp("o=- 1 1 IN IP4 192.0.2.2\nc=IN IP4 192.0.2.2\r\n", True, OUR_RELAYS)
    assert masked == "o=- 1 1 IN IP4 0.0.0.0\nc=IN IP4 0.0.0.0\r\n"


def test_no_relay_addresses_means_no_candidates_survive() -> None:
    assert candidates(filter_sdp(CHROME_OFFER, True, set())) == []


@pytest.mark.parametrize(
    ("line", "kind", "address"),
    [
        ("a=candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host", "host", "10.1.2.3"),
        ("candidate:1 1 UDP 1686052607 198.51.100.44 50123 typ srflx raddr 10.1.2.3 rport 1", "srflx", "198.51.100.44"),
        ("candidate:1 1 udp 1845501695 198.51.100.44 50123 typ prflx", "prflx", "198.51.100.44"),
        ("candidate:1 1 udp 41885439 203.0.113.10 61000 typ relay", "relay", "203.0.113.10"),
        ("candidate:1 1 udp 41885439 203.0.113.10 61000 typ RELAY", None, None),
        ("candidate:1 1 udp 41885439 203.0.113.10 61000 typ bogus", None, None),
        ("candidate:1 1 udp 41885439 203.0.113.10 61000 kind relay", None, None),
        ("candidate:1 1 udp", None, None),
        ("a=ice-ufrag:x", None, None),
        ("", None, None),
    ],
)  # fmt: skip
def test_candidate_type_and_address(line: str, kind: str | None, address: str | None) -> None:
    assert candidate_type(line) == kind
    assert candidate_address(line) == address


@pytest.mark.parametrize(
    ("candidate", "allowed"),
    [
        ("", True),  # end-of-candidates
        ("candidate:1 1 udp 41885439 203.0.113.10 61000 typ relay raddr 0.0.0.0 rport 0", True),
        ("a=candidate:1 1 udp 41885439 203.0.113.10 61000 typ relay", True),
        ("candidate:1 1 udp 41885439 2001:DB8:0::10 61000 typ relay", True),
        ("candidate:1 1 udp 41885439 ::ffff:203.0.113.10 61000 typ relay", True),
        ("candidate:1 1 tcp 25108223 203.0.113.10 61004 typ relay tcptype passive", True),
        ("candidate:1 1 udp 41885439 198.51.100.7 62000 typ relay", False),  # not our relay
        ("candidate:1 1 udp 41885439 relay.example.com 62000 typ relay", False),
        ("candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host", False),
        ("candidate:1 1 udp 2122129151 4a1b2c3d.local 50125 typ host", False),
        (
            "candidate:1 1 udp 1686052607 198.51.100.44 50123 typ srflx raddr 10.1.2.3 rport 1",
            False,
        ),
        ("candidate:1 1 udp 1845501695 198.51.100.44 50123 typ prflx", False),
        ("garbage", False),
    ],
)
def test_filter_candidate_relay_only(candidate: str, allowed: bool) -> None:
    assert (filter_candidate(candidate, True, OUR_RELAYS) == candidate) is allowed
    assert filter_candidate(candidate, False, OUR_RELAYS) == candidate


def test_relay_addresses_are_normalized() -> None:
    assert normalize_addresses(["2001:DB8:0:0::10", "::ffff:203.0.113.10", "relay.example"]) == {
        "2001:db8::10",
        "203.0.113.10",
    }


def test_engine_filters_sdp_and_candidates_when_either_party_is_relay_only() -> None:
    from callgate.clock import ManualClock
    from callgate.signaling import CallEngine, CdrOpen
    from callgate.signaling.messages import IceCandidate
    from tests.unit.signaling.signaling_helpers import reply, sends, sent_types

    engine = CallEngine(ManualClock(), relay_addresses=OUR_RELAYS)
    engine.device_connected("a1", "alice", "Alice")
    engine.device_connected("b1", "bob", "Bob", relay_only=True)
    effects = engine.invite("a1", "r1", "bob", CHROME_OFFER, callee_exists=True)
    opened = effects[0]
    assert isinstance(opened, CdrOpen) and opened.call.relay_only
    call_id = reply(effects, "a1")["call_id"]
    offer = sends(effects, "b1")[0]["sdp"]
    assert offer == filter_sdp(CHROME_OFFER, True, OUR_RELAYS)

    host = IceCandidate(candidate="candidate:1 1 udp 2122260223 10.1.2.3 50123 typ host")
    effects = engine.candidate("a1", "r2", call_id, host)
    assert [device for device, _ in sent_types(effects)] == ["a1"]
    assert reply(effects, "a1") == {"type": "ack", "id": "r2", "forwarded": False}
    relay = IceCandidate(candidate="candidate:5 1 udp 41885439 203.0.113.10 61000 typ relay")
    effects = engine.candidate("a1", "r3", call_id, relay)
    assert sends(effects, "b1")[0]["candidate"] == {"candidate": relay.candidate}

    effects = engine.answer("b1", "r4", call_id, AIORTC_OFFER)
    assert sends(effects, "a1")[0]["sdp"] == filter_sdp(AIORTC_OFFER, True, OUR_RELAYS)


def test_relay_candidates_lists_udp_relay_addresses_once() -> None:
    from callgate.signaling.sdp import relay_candidates

    sdp = "\r\n".join(
        [
            "v=0",
            "a=candidate:1 1 udp 2130706431 192.168.1.5 50000 typ host",
            "a=candidate:2 1 udp 16777215 203.0.113.7 61000 typ relay raddr 0.0.0.0 rport 0",
            "a=candidate:3 1 tcp 16777214 203.0.113.7 61002 typ relay tcptype passive",
            "a=candidate:4 2 udp 16777215 203.0.113.7 61000 typ relay",
            "a=candidate:5 1 udp 16777215 ::ffff:203.0.113.8 61004 typ relay",
            " a=candidate:6 1 udp 16777215 203.0.113.9 61006 typ relay",  # not the grammar
            "a=Candidate:7 1 udp 16777215 203.0.113.9 61008 typ relay",
            "candidate:8 1 udp 16777215 203.0.113.9 61010 typ relay",  # a trickled one
            "",
        ]
    )
    assert relay_candidates(sdp) == ["203.0.113.7:61000", "203.0.113.8:61004", "203.0.113.9:61010"]
