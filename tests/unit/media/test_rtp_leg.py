"""RTP parsing (RFC 3550 §5.1) and the RTP leg's source rules (symmetric RTP with latching)."""

from __future__ import annotations

import itertools
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


def test_the_servers_own_payloads_continue_the_timeline_and_the_party_follows_on() -> None:
    """The recording prompt to a SIP party (`send_own`): each prompt frame follows the last
    packet sent by its duration, in the leg's codec, and the other party's next packet follows
    the prompt (its timestamps rebased, RFC 3550 §5.1): one unbroken stream for the phone."""

    class Transport:
        def __init__(self) -> None:
            self.sent: list[RtpPacket] = []

        def sendto(self, data: bytes, target: tuple[str, int]) -> None:
            self.sent.append(parse_rtp(data))

    transport = Transport()
    leg = RtpLeg("callee", lambda packet: None, "pcma")
    leg.transport = transport  # type: ignore[assignment]
    leg.set_remote(("192.0.2.10", 4000))
    other = [MediaPacket("caller", b"o" * 160, 5000 + n * 160, n, 7, PCMA, 0.0) for n in range(3)]
    leg.send(other[0])
    leg.send(other[1])
    for _ in range(2):
        assert leg.send_own(b"p" * 160, 160)
    leg.send(other[2])
    stamps = [p.timestamp - transport.sent[0].timestamp for p in transport.sent]
    assert stamps == [0, 160, 320, 480, 640]
    assert [p.payload[:1] for p in transport.sent] == [b"o", b"o", b"p", b"p", b"o"]
    assert {p.payload_type for p in transport.sent} == {PCMA}
    seqs = [p.seq for p in transport.sent]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
