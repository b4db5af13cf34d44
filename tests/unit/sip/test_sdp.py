"""Plain RTP SDP offers (RFC 4566 / RFC 3264): what we take, what gets 488."""

from __future__ import annotations

import base64

import pytest

from callgate.sip.sdp import (
    DIRECTIONS,
    AudioOffer,
    Crypto,
    SdpError,
    answer_key,
    audio_sdp,
    parse_audio,
)

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def test_media_level_address_wins_and_the_first_common_codec_is_chosen() -> None:
    sdp = (
        HEAD
        + "m=audio 4000 RTP/AVP 18 8 0 101\r\nc=IN IP4 192.0.2.9\r\nm=video 5000 RTP/AVP 96\r\n"
    )
    offer = parse_audio(sdp.encode())
    assert offer == AudioOffer("192.0.2.9", 4000, (18, 8, 0, 101))
    assert offer.choose() == "pcma"
    again = parse_audio(audio_sdp("198.51.100.2", 30000, "pcmu"))
    assert again == AudioOffer("198.51.100.2", 30000, (0,)) and again.choose() == "pcmu"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (HEAD + "m=video 5000 RTP/AVP 96\r\n", "No audio stream"),
        (HEAD + "m=audio 4000 RTP/SAVP 0\r\n", "RTP/SAVP without an a=crypto"),
        (HEAD + "m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n", "Only RTP/AVP or RTP/SAVP"),
        (HEAD + "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n",
         "without an a=crypto"),
        (HEAD + "m=audio 0x10 RTP/AVP 0\r\n", "Bad audio port"),
        (HEAD + "m=audio 4000 RTP/AVP 300\r\n", "Bad payload type"),
        (HEAD.replace("IN IP4 192.0.2.1\r\nt", "IN IP6 ::1\r\nt") + "m=audio 4000 RTP/AVP 0\r\n",
         "IN IP4"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "No connection address"),
        ("x" * 9000, "too large"),
    ],
)  # fmt: skip
def test_unusable_offers_are_refused_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_audio(body.encode())


def test_no_common_codec() -> None:
    with pytest.raises(SdpError, match="No common codec"):
        parse_audio((HEAD + "m=audio 4000 RTP/AVP 18 4\r\n").encode()).choose()


def test_g722_is_taken_in_the_phones_order_with_its_8_khz_rtpmap() -> None:
    """G.722 is static payload type 9 with an RTP clock of 8000 for its 16 kHz samples (RFC
    3551 §4.5.2, §6): taken when the phone lists it first, and written G722/8000."""
    offer = parse_audio((HEAD + "m=audio 4000 RTP/AVP 9 0 8 101\r\n").encode())
    assert offer.choose() == "g722" and offer.ours() == ("g722", "pcmu", "pcma")
    assert parse_audio((HEAD + "m=audio 4000 RTP/AVP 0 9\r\n").encode()).choose() == "pcmu"
    ours = audio_sdp("192.0.2.1", 4000, ("g722", "pcmu"), events=101).decode()
    assert "m=audio 4000 RTP/AVP 9 0 101\r\n" in ours
    assert "a=rtpmap:9 G722/8000\r\n" in ours and "a=rtpmap:0 PCMU/8000\r\n" in ours


def test_sdes_offer_is_taken_and_answered_with_our_key() -> None:
    key = bytes(range(30))
    line = f"a=crypto:1 F8_128_HMAC_SHA1_80 inline:{base64.b64encode(bytes(30)).decode()}\r\n"
    ours_line = f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}\r\n"
    offer = parse_audio((HEAD + "m=audio 4000 RTP/SAVP 0\r\n" + line + ours_line).encode())
    assert offer.crypto == Crypto(2, key)  # the first suite we support
    answer = audio_sdp("192.0.2.1", 5000, "pcmu", Crypto(2, bytes(30)))
    assert b"m=audio 5000 RTP/SAVP 0\r\n" in answer
    assert parse_audio(answer).crypto == Crypto(2, bytes(30))


def test_telephone_event_is_kept_and_answered_with_its_payload_type() -> None:
    sdp = (
        HEAD + "m=audio 4000 RTP/AVP 0 96 100\r\na=rtpmap:96 telephone-event/48000\r\n"
        "a=rtpmap:100 Telephone-Event/8000\r\na=fmtp:100 0-16\r\n"
    )
    offer = parse_audio(sdp.encode())
    assert offer.events == 100  # the 8 kHz one, the clock of our G.711
    answer = audio_sdp("198.51.100.2", 30000, offer.choose(), events=offer.events).decode()
    assert "m=audio 30000 RTP/AVP 0 100\r\n" in answer
    assert "a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-15\r\n" in answer
    assert parse_audio(answer.encode()).events == 100
    # an rtpmap for a payload type the m= line does not list is not an offer of events
    unlisted = HEAD + "m=audio 4000 RTP/AVP 0\r\na=rtpmap:101 telephone-event/8000\r\n"
    assert parse_audio(unlisted.encode()).events is None


@pytest.mark.parametrize(
    ("lines", "offered", "answered"),
    [
        ("", "sendrecv", "sendrecv"),
        ("a=sendonly\r\n", "sendonly", "recvonly"),  # hold (RFC 3264 §8.4)
        ("a=inactive\r\n", "inactive", "inactive"),
        ("a=recvonly\r\n", "recvonly", "sendonly"),
    ],
)
def test_the_offers_direction_is_answered_by_rfc_3264(
    lines: str, offered: str, answered: str
) -> None:
    offer = parse_audio((HEAD + "m=audio 4000 RTP/AVP 0\r\n" + lines).encode())
    assert offer.direction == offered
    answer = audio_sdp("198.51.100.2", 30000, "pcmu", direction=DIRECTIONS[offered], origin=(7, 3))
    assert f"a={answered}\r\n".encode() in answer and b"o=callgate 7 3 IN IP4" in answer


def test_a_session_level_direction_applies_unless_the_stream_says_otherwise() -> None:
    held = HEAD.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n") + "m=audio 4000 RTP/AVP 0\r\n"
    assert parse_audio(held.encode()).direction == "sendonly"
    assert parse_audio((held + "a=sendrecv\r\n").encode()).direction == "sendrecv"


def test_a_stream_at_0_0_0_0_is_held_not_refused() -> None:
    """RFC 2543's hold, which RFC 3264 §8.4 says an answerer must take, in any SDP."""
    held = HEAD.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0") + "m=audio 4000 RTP/AVP 0\r\n"
    offer = parse_audio(held.encode())
    assert offer.held and offer.address == "0.0.0.0" and offer.choose() == "pcmu"
    assert not parse_audio((HEAD + "m=audio 4000 RTP/AVP 0\r\n").encode()).held


@pytest.mark.parametrize(
    ("line", "rtcp"),
    [
        ("", None),  # RTCP on the RTP port + 1 (RFC 3550 §11)
        ("a=rtcp:53020\r\n", ("192.0.2.1", 53020)),  # RFC 3605 §2.1: the stream's address
        ("a=rtcp:53020 IN IP4 198.51.100.4\r\n", ("198.51.100.4", 53020)),
        ("a=rtcp-mux\r\na=rtcp-fb:0 nack\r\n", None),  # other attributes, not a=rtcp
    ],
)
def test_a_rtcp_gives_the_rtcp_destination(line: str, rtcp: tuple[str, int] | None) -> None:
    offer = parse_audio((HEAD + "m=audio 4000 RTP/AVP 0\r\n" + line).encode())
    assert offer.rtcp == rtcp


def test_a_session_level_a_rtcp_is_not_the_streams() -> None:
    sdp = HEAD.replace("t=0 0\r\n", "t=0 0\r\na=rtcp:9\r\n") + "m=audio 4000 RTP/AVP 0\r\n"
    assert parse_audio(sdp.encode()).rtcp is None  # RFC 3605: a media-level attribute


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("a=rtcp:\r\n", "Bad a=rtcp port"),
        ("a=rtcp:0\r\n", "Bad a=rtcp port"),
        ("a=rtcp:70000\r\n", "Bad a=rtcp port"),
        ("a=rtcp:x1\r\n", "Bad a=rtcp port"),
        ("a=rtcp:5000 IN IP4\r\n", "Bad a=rtcp attribute"),
        ("a=rtcp:5000 IN IP6 ::1\r\n", "IN IP4"),
        ("a=rtcp:5000 IN IP4 example.com\r\n", "not an IPv4 address"),
    ],
)
def test_a_bad_a_rtcp_is_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_audio((HEAD + "m=audio 4000 RTP/AVP 0\r\n" + line).encode())


BEST_EFFORT = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\na=tcap:1 RTP/SAVPF RTP/SAVP\r\n"
    "a=acap:1 crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\n"
    "a=acap:2 crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    "a=pcfg:2 t=2 a=1|2\r\na=pcfg:1 t=1 a=2\r\n"
)


def test_best_effort_srtp_offered_as_an_rfc_5939_capability_is_taken() -> None:
    """RTP/AVP with RTP/SAVP and an SDES key as a potential configuration: the most preferred
    configuration we can honour is taken (pcfg 1 wants RTP/SAVPF: no; pcfg 2's first
    alternative a suite we lack: its second), and our answer is RTP/SAVP with our key under the
    offer's tag and the `a=acfg` naming the configuration (RFC 5939 §3.6.2)."""
    key = bytes(range(30))
    offer = parse_audio(BEST_EFFORT.format(key=base64.b64encode(key).decode()).encode())
    assert offer.crypto == Crypto(4, key, "2 t=2 a=2")
    ours = answer_key(offer.crypto)
    assert (ours.tag, ours.acfg) == (4, "2 t=2 a=2") and ours.key_salt != key
    answer = audio_sdp("198.51.100.1", 5000, "pcmu", ours).decode()
    assert "m=audio 5000 RTP/SAVP 0\r\n" in answer and "a=acfg:2 t=2 a=2\r\n" in answer
    assert (
        f"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(ours.key_salt).decode()}"
        in answer
    )


@pytest.mark.parametrize(
    "change",
    [
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=1"),  # only the suite we lack
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=1,2"),  # two capabilities at once
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=[2]"),  # an optional one
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=-m:2"),  # deleting attributes
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=2 m=1"),  # an RFC 6871 media configuration
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=1 a=2"),  # RTP/SAVPF only
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=2 a=2\r\na=creq:med-v0"),  # an extension required
        ("", ""),  # the capabilities at session level
        ("t=0 0\r\n", "t=0 0\r\na=creq:med-v0\r\n"),  # an extension required, for the session
    ],
)
def test_capabilities_we_cannot_honour_leave_the_stream_plain_rtp(change: tuple[str, str]) -> None:
    """An offer whose only configurations we cannot honour is taken as its plain RTP/AVP stream
    (as an answerer without RFC 5939 takes it): no key, a plain answer."""
    key = base64.b64encode(bytes(range(30))).decode()
    body = BEST_EFFORT.format(key=key).replace(*change)
    if not change[0]:  # the capabilities before the m= line
        head, media = body.split("m=audio 4000 RTP/AVP 0\r\n")
        body = head + media + "m=audio 4000 RTP/AVP 0\r\n"
    offer = parse_audio(body.replace("a=pcfg:1 t=1 a=2\r\n", "").encode())
    assert offer.crypto is None and offer.choose() == "pcmu"


@pytest.mark.parametrize(
    "line",
    [
        "m=audio 4²00 RTP/AVP 0\r\n",  # str.isdigit() is true for "²", int() refuses it
        "m=audio 4000 RTP/AVP 0 ²\r\n",
        "m=audio " + "4" * 5000 + " RTP/AVP 0\r\n",  # past int()'s 4300-digit limit
        "m=audio 4000 RTP/AVP " + "1" * 5000 + "\r\n",
        "m=audio 4000 RTP/AVP 0\r\na=rtcp:²\r\n",
        "m=audio 4000 RTP/AVP 0\r\na=rtcp:" + "9" * 5000 + "\r\n",
    ],
)
def test_hostile_sdp_integers_are_an_sdp_error_not_a_crash(line: str) -> None:
    """Unicode digits and integers of thousands of digits (which fit in MAX_SDP) are refused
    with SdpError (488, or the carrier leg's BYE), never a ValueError (a 500 and a trace)."""
    with pytest.raises(SdpError):
        parse_audio((HEAD + line).encode())


@pytest.mark.parametrize(
    "change",
    [
        ("a=acap:2 crypto:4 ", "a=acap:2 crypto:² "),  # the capability's crypto tag
        ("a=acap:2 crypto:4 ", "a=acap:2 crypto:" + "4" * 5000 + " "),
        ("a=acap:2 ", "a=acap:²"),  # the capability's number
        ("a=pcfg:2 t=2 a=1|2", "a=pcfg:2 t=²|2 a=²|" + "2" * 5000),
        ("a=tcap:1 ", "a=tcap:" + "1" * 5000 + " "),
        ("m=audio 4000 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:²01 telephone-event/8000\r\n"),
    ],
)  # fmt: skip
def test_hostile_capability_integers_are_ignored_or_refused_never_a_crash(
    change: tuple[str, str],
) -> None:
    key = base64.b64encode(bytes(range(30))).decode()
    body = BEST_EFFORT.format(key=key)
    assert change[0] in body
    try:
        offer = parse_audio(body.replace(*change).encode())
    except SdpError:
        return
    assert offer.crypto is None or offer.crypto.tag < 1_000_000_000


def test_a_plain_crypto_tag_of_unicode_digits_is_no_key() -> None:
    key = base64.b64encode(bytes(range(30))).decode()
    body = HEAD + f"m=audio 4000 RTP/SAVP 0\r\na=crypto:² AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    with pytest.raises(SdpError, match="without an a=crypto"):
        parse_audio(body.encode())
