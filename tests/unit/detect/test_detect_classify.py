"""What the detector concludes from the packets of a flow (no sockets, no files)."""

from __future__ import annotations

import os
import struct

from callgate.detect.engine import Detector, parse_relay
from callgate.detect.report import FlowResult, Report
from tests.unit.detect.detect_packets import (
    dtls_client_hello,
    ethernet,
    ice_check,
    ipv4_tcp,
    rtcp_rr,
    rtp,
    stun,
    udp_frame,
    xor_address,
)

HOST, PEER = ("192.168.1.20", 50000), ("203.0.113.9", 3478)


def run(packets: list[tuple[tuple[str, int], tuple[str, int], bytes]], **kw: object) -> Report:
    detector = Detector(**kw)  # type: ignore[arg-type]
    detector.feed((1000.0 + i * 0.02, 1, udp_frame(s, d, p)) for i, (s, d, p) in enumerate(packets))
    return detector.report()


def only(report: Report) -> FlowResult:
    [flow] = report.flows
    return flow


def test_ice_checks_mean_p2p_webrtc() -> None:
    peer = ("198.51.100.4", 61000)
    flow = only(run([(HOST, peer, ice_check()), (peer, HOST, ice_check(b"efgh:abcd"))]))
    assert flow.rtc and flow.path == "p2p" and "ICE" in flow.protocols
    assert flow.confidence >= 0.9


def test_classic_rfc3489_binding_without_magic_cookie_is_stun() -> None:
    request = stun(1, 0, classic=True)
    response = stun(1, 2, [(0x0001, b"\x00\x01\x1f\x90" + bytes([192, 0, 2, 1]))], classic=True)
    flow = only(run([(HOST, PEER, request), (PEER, HOST, response)]))
    assert flow.rtc and flow.path == "server"
    assert any("classic RFC 3489" in e for e in flow.evidence)


def test_vendor_attributes_name_the_application() -> None:
    teams = stun(1, 0, [(0x8070, b"\x00\x00\x00\x02")])
    whatsapp = stun(3, 0, [(0x4002, b"\x00\x00\x00\x01")])
    signal = stun(3, 3, [(0x0014, b"signal.org"), (0x0015, b"nonce")])
    for payload, app in ((teams, "Microsoft Teams/Skype"), (whatsapp, "WhatsApp"),
                         (signal, "Signal")):  # fmt: skip
        flow = only(run([(HOST, PEER, payload)]))
        assert flow.app == app
        assert flow.confidence == 0.95


def test_turn_channel_data_is_relayed() -> None:
    data = [struct.pack("!HH", 0x4001, 100) + os.urandom(100) for _ in range(3)]
    flow = only(run([(HOST, PEER, d) for d in data]))
    assert flow.rtc and flow.path == "relayed" and "TURN" in flow.protocols


def test_rtp_needs_a_stable_ssrc_and_increasing_sequence_numbers() -> None:
    good = only(run([(HOST, PEER, rtp(i)) for i in range(5)]))
    assert good.rtc
    assert good.media == ("audio",)
    # Same first byte, but every packet a new SSRC and random sequence: not RTP.
    noise = [(HOST, PEER, b"\x80" + os.urandom(171)) for _ in range(5)]
    assert not only(run(noise)).rtc


def test_a_call_with_the_same_payload_type_both_ways_is_rtp_in_both_directions() -> None:
    # Opus 111 both ways, two SSRCs: the second direction must not be hidden by the first.
    packets = []
    for i in range(6):
        packets.append((HOST, PEER, rtp(i, ssrc=0x1111)))
        packets.append((PEER, HOST, rtp(100 + i, ssrc=0x2222)))
    flow = only(run(packets))
    assert flow.rtc
    assert any("both directions" in e for e in flow.evidence), flow.evidence


def test_rtcp_alone_needs_two_packets() -> None:
    assert not only(run([(HOST, PEER, rtcp_rr())])).rtc
    assert only(run([(HOST, PEER, rtcp_rr()), (PEER, HOST, rtcp_rr(7))])).rtc


def test_dtls_with_use_srtp_is_webrtc_media_without_it_is_not() -> None:
    srtp = only(run([(HOST, PEER, dtls_client_hello(use_srtp=True))]))
    assert srtp.rtc and "DTLS-SRTP" in srtp.protocols
    plain = only(run([(HOST, PEER, dtls_client_hello(use_srtp=False))]))
    assert not plain.rtc


def test_an_unanswered_or_failed_dtls_srtp_offer_is_reported_as_the_attempt_it_was() -> None:
    offer = dtls_client_hello(use_srtp=True)
    unanswered = only(run([(HOST, PEER, offer), (HOST, PEER, offer)]))
    assert unanswered.rtc and "DTLS-SRTP" in unanswered.protocols
    assert any("not answered in the capture" in e for e in unanswered.evidence)
    # Both ends acting as DTLS client (RFC 5763 §5 role conflict), then a fatal alert in clear.
    alert = b"\x15\xfe\xff" + bytes(8) + struct.pack("!H", 2) + b"\x02\x0a"
    failed = only(run([(HOST, PEER, offer), (PEER, HOST, offer), (HOST, PEER, alert)]))
    assert failed.rtc
    assert any("fatal alert (unexpected_message): no media set up" in e for e in failed.evidence)
    answered = only(run([(HOST, PEER, offer), (PEER, HOST, dtls_client_hello(use_srtp=True))]))
    assert answered.evidence == ("DTLS handshake offering use_srtp (RFC 5764)",)


def discord_discovery(kind: int, ssrc: int, address: bytes) -> bytes:
    """Discord's voice IP Discovery message (developer docs, Voice Connections): type, length 70,
    SSRC, 64-byte NUL-padded address, port."""
    return struct.pack("!HHI", kind, 70, ssrc) + address.ljust(64, b"\x00") + b"\xc3\x50"


def test_discord_voice_is_named_from_its_ip_discovery_exchange() -> None:
    voice = ("192.0.2.50", 50003)
    packets = [(HOST, voice, discord_discovery(1, 0x1A7E73, b"")),
               (voice, HOST, discord_discovery(2, 0x1A7E73, b"85.154.2.145"))]  # fmt: skip
    packets += [(HOST, voice, rtp(i, ssrc=0x1A7E73, pt=120)) for i in range(4)]
    packets += [(voice, HOST, rtp(i, ssrc=0x1A759F, pt=120)) for i in range(4)]
    flow = only(run(packets))
    assert flow.rtc and flow.app == "Discord" and flow.path == "server"
    assert {"IP Discovery", "RTP"} <= set(flow.protocols)
    # The same 74-byte size and header with anything but an address is not Discord's: nothing.
    noise = struct.pack("!HHI", 2, 70, 7) + os.urandom(64) + b"\x00\x01"
    for shape in (noise, discord_discovery(2, 7, b"")[:73], discord_discovery(3, 7, b"1.2.3.4")):
        assert not only(run([(HOST, voice, shape), (voice, HOST, shape)])).rtc


def test_dns_and_other_excluded_ports_are_never_rtc() -> None:
    dns = ("192.168.1.1", 53)
    flow = only(run([(HOST, dns, rtp(i)) for i in range(10)]))
    assert not flow.rtc and flow.excluded == "DNS"
    ntp = only(run([(HOST, ("192.0.2.3", 123), ice_check())]))
    assert not ntp.rtc and ntp.excluded == "NTP"


def test_stun_learned_address_labels_later_media() -> None:
    relayed = ("203.0.113.9", 49170)
    allocate_ok = stun(3, 2, [(0x0016, xor_address(*relayed)), (0x0014, b"voice.example")])
    other_host = ("192.168.1.30", 40000)
    media = [(other_host, relayed, os.urandom(120)) for _ in range(3)]
    report = run([(HOST, PEER, stun(3, 0)), (PEER, HOST, allocate_ok), *media])
    flow = next(f for f in report.flows if f.host == "192.168.1.30")
    assert flow.rtc and flow.path == "relayed"
    assert any("STUN relayed address" in e for e in flow.evidence)


def test_same_local_socket_as_ice_carries_the_app_to_other_flows() -> None:
    named = stun(1, 0, [(0x0014, b"turn.signal.org")])
    peer = ("198.51.100.4", 61000)
    report = run([(HOST, PEER, named), (HOST, peer, os.urandom(80)), (peer, HOST, os.urandom(80))])
    flow = next(f for f in report.flows if f.peer == "198.51.100.4")
    assert flow.rtc and flow.app == "Signal"


def test_statistical_fallback_is_low_confidence_voice_like_udp() -> None:
    peer = ("198.51.100.4", 61000)
    packets = []
    for _ in range(200):  # 4 s of 20 ms packets both ways
        packets.append((HOST, peer, os.urandom(90)))
        packets.append((peer, HOST, os.urandom(90)))
    flow = only(run(packets))
    assert flow.rtc and flow.confidence == 0.3 and "statistical" in flow.protocols
    text = [(HOST, peer, b"hello world " * 8) for _ in range(400)]
    assert not only(run(text)).rtc


def test_allow_listed_relay_is_sanctioned_and_so_is_media_to_its_relayed_address() -> None:
    relay = ("198.51.100.50", 3478)
    relayed = ("198.51.100.50", 50010)
    allocate_ok = stun(3, 2, [(0x0016, xor_address(*relayed))])
    other = ("192.168.1.40", 41000)
    report = run(
        [(HOST, relay, stun(3, 0)), (relay, HOST, allocate_ok),
         *[(other, relayed, os.urandom(100)) for _ in range(3)]],
        relays=[parse_relay("198.51.100.50:3478")],
    )  # fmt: skip
    assert all(f.sanctioned for f in report.flows)
    assert report.summary()["unsanctioned_sessions"] == 0


def test_stun_over_tcp_with_rfc4571_framing() -> None:
    message = ice_check()
    framed = struct.pack("!H", len(message)) + message
    detector = Detector()
    frame = ethernet(ipv4_tcp(HOST[0], HOST[1], "198.51.100.4", 443, framed))
    detector.feed([(1.0, 1, frame)])
    flow = only(detector.report())
    assert flow.transport == "tcp" and flow.rtc and "ICE" in flow.protocols


def test_a_wireguard_tunnel_is_not_guessed_to_be_voice() -> None:
    peer = ("198.51.100.4", 40123)
    packets = [(HOST, peer, b"\x01\x00\x00\x00" + os.urandom(144))]
    for _ in range(200):
        packets.append((HOST, peer, b"\x04\x00\x00\x00" + os.urandom(108)))
        packets.append((peer, HOST, b"\x04\x00\x00\x00" + os.urandom(108)))
    assert not only(run(packets)).rtc
