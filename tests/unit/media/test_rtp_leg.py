"""RTP parsing (RFC 3550 §5.1) and the RTP leg's source rules (symmetric RTP with latching)."""

from __future__ import annotations

import struct

import pytest

from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import PCMA, PCMU, RtpError, RtpLeg, RtpPacket, build_rtp, parse_rtp


def test_parse_skips_csrcs_extension_and_padding() -> None:
    head = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | PCMA, 7, 160, 99)
    csrcs = struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
    data = head + csrcs + extension + b"voice" + b"\x00\x00\x03"
    packet = parse_rtp(data)
    assert packet == RtpPacket(PCMA, True, 7, 160, 99, b"voice")
    assert parse_rtp(build_rtp(packet)) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00", "size"),
        (struct.pack("!BBHII", 0x40, 0, 1, 1, 1), "version"),
        (struct.pack("!BBHII", 0x90, 0, 1, 1, 1) + b"\x00", "extension"),
        (struct.pack("!BBHII", 0xA0, 0, 1, 1, 1) + b"\x09", "length"),
    ],
)
def test_malformed_rtp_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        parse_rtp(data)


def rtp(pt: int = PCMU, seq: int = 1) -> bytes:
    return build_rtp(RtpPacket(pt, False, seq, seq * 160, 5, b"x" * 160))


def test_only_allowed_sources_then_only_the_latched_one() -> None:
    got: list[MediaPacket] = []
    leg = RtpLeg("phone", got.append, "pcmu")
    leg.set_remote(("192.0.2.10", 4000), also_from=["198.51.100.7"])
    leg.received_datagram(rtp(), ("203.0.113.9", 4000))  # a stranger
    leg.received_datagram(rtp(PCMA), ("198.51.100.7", 30000))  # not the negotiated codec
    assert got == [] and leg.dropped == {"source": 1, "payload type": 1}
    # behind NAT: the signaling address with another port latches
    leg.received_datagram(rtp(seq=2), ("198.51.100.7", 30000))
    assert leg.remote == ("198.51.100.7", 30000) and [p.seq for p in got] == [2]
    leg.received_datagram(rtp(seq=3), ("192.0.2.10", 4000))  # the SDP address: too late
    leg.received_datagram(rtp(seq=4), ("198.51.100.7", 30000))
    assert [p.seq for p in got] == [2, 4] and leg.dropped["source"] == 2
    assert got[0].leg == "phone" and got[0].payload == b"x" * 160
