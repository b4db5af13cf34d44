"""Plain RTP SDP offers (RFC 4566 / RFC 3264): what we take, what gets 488."""

from __future__ import annotations

import pytest

from callgate.sip.sdp import AudioOffer, SdpError, audio_sdp, parse_audio

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
        (HEAD + "m=audio 4000 RTP/SAVP 0\r\n", "Only RTP/AVP"),
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
        parse_audio((HEAD + "m=audio 4000 RTP/AVP 9 18\r\n").encode()).choose()
