"""The codec a recorded call's anchor legs use, from the caller's offer (anchoring.py)."""

from __future__ import annotations

import pytest

from callgate.signaling.anchoring import recorded_codec, recorded_codecs

HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("media", "codec"),
    [
        # a browser: Opus first, G.711 too: Opus
        ("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\na=rtpmap:111 opus/48000/2\r\n"
         "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "opus"),
        # the SIP edge's bridge towards a PCMU phone (aiortc writes the rtpmap)
        ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n", "pcmu"),
        ("m=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=rtpmap:8 PCMA/8000\r\n", "pcma"),
        # static payload types without rtpmap (RFC 3551 §6)
        ("m=audio 9 RTP/AVP 8\r\n", "pcma"),
        ("m=audio 9 RTP/AVP 0 8\r\n", "pcmu"),
        # G.722 (a SIP bridge towards a G.722 phone): kept, on its 8 kHz RTP clock
        ("m=audio 9 RTP/AVP 9 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 opus/48000/2\r\n",
         "g722"),
        # nothing we record: Opus, whose answer then says the offer has none
        ("m=audio 9 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n", "opus"),
    ],
)  # fmt: skip
def test_the_callers_codec_is_kept(media: str, codec: str) -> None:
    assert recorded_codec(HEAD + media) == codec


def test_a_callee_with_a_sip_phone_gets_g711_when_the_caller_offers_it() -> None:
    browser = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 8 0\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    assert recorded_codec(HEAD + browser, g711=True) == "pcmu"  # PCMU first, as phones are rung
    assert (
        recorded_codec(
            HEAD + browser.replace(" 8 0", " 8").replace("a=rtpmap:0 PCMU/8000\r\n", ""), g711=True
        )
        == "pcma"
    )
    # a caller without G.711 keeps Opus; the callee's leg offers PCMU, the anchor transcodes
    only_opus = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    assert recorded_codec(HEAD + only_opus, g711=True) == "opus"
    assert recorded_codecs(HEAD + only_opus, g711=True) == ("opus", "pcmu")
    assert recorded_codecs(HEAD + only_opus) == ("opus", "opus")  # no phone: no transcoding
    assert recorded_codecs(HEAD + browser, g711=True) == ("pcmu", "pcmu")


def test_a_sip_bridge_listing_g711_before_opus_is_recorded_in_g711() -> None:
    """The SIP edge's bridge offers the phone's codec first and Opus after it (for callees
    without G.711): the recording keeps the phone's codec, untranscoded."""
    bridge = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 opus/48000/2\r\n"
    )
    assert recorded_codecs(HEAD + bridge) == ("pcmu", "pcmu")
    assert recorded_codecs(HEAD + bridge.replace("0 96", "96 0")) == ("opus", "opus")


def test_a_g722_first_caller_reaches_a_g711_phone() -> None:
    """A G.722-first phone's or carrier's bridge lists its G.711 after G.722 (sip_media.py): a
    callee with a SIP phone gets PCMU on both legs; a caller with G.722 alone is transcoded to
    PCMU, which every phone takes."""
    bridge = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 9 0 96\r\na=rtpmap:9 G722/8000\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 opus/48000/2\r\n"
    )
    assert recorded_codecs(HEAD + bridge, g711=True) == ("pcmu", "pcmu")
    assert recorded_codecs(HEAD + bridge) == ("g722", "g722")  # no phone: G.722 unchanged
    g722_only = bridge.replace(" 9 0 96", " 9 96").replace("a=rtpmap:0 PCMU/8000\r\n", "")
    assert recorded_codecs(HEAD + g722_only, g711=True) == ("g722", "pcmu")
