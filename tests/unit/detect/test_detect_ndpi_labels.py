"""How nDPI's ndpiReader lines are read as RTC or not (the reference side of the comparison)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.detect.ndpi import parse_out

LINE = (
    "\t7\tUDP 192.168.43.169:48854 <-> 134.224.90.111:8801 [proto: 30/DTLS][IP: 189/Zoom]"
    "[Encrypted][Confidence: DPI][FPC: 78/STUN, Confidence: DPI][cat: Network/14]"
    "[3 pkts/660 bytes <-> 1 pkts/106 bytes]{alpn}[DTLSv1.2]\n"
)


@pytest.mark.parametrize(
    ("alpn", "rtc"),
    [
        ("[(Advertised) ALPNs: webrtc;c-webrtc]", True),  # RFC 8833: WebRTC over DTLS
        ("[(Advertised) ALPNs: c-webrtc]", True),
        ("[(Advertised) ALPNs: h2;http/1.1]", False),
        ("[(Advertised) ALPNs: xwebrtcx]", False),
        ("", False),  # a plain DTLS flow in a non-media category stays non-RTC
    ],
)
def test_dtls_flow_is_rtc_when_ndpi_reports_the_webrtc_alpn(
    tmp_path: Path, alpn: str, rtc: bool
) -> None:
    out = tmp_path / "x.pcap.out"
    out.write_text(LINE.format(alpn=alpn), encoding="utf-8")
    [flow] = parse_out(out)
    assert flow.label == "DTLS"
    assert flow.rtc is rtc


DISCORD = (
    "\t3\t{proto} 150.219.118.19:54234 <-> 192.113.193.227:50003 [proto: {label}][IP: 0/Unknown]"
    "[Encrypted][Confidence: DPI][DPI packets: 2][cat: Collaborative/15]"
    "[11 pkts/1455 bytes <-> 19 pkts/14637 bytes]{client}[Plen Bins: 0,20,6]\n"
)


@pytest.mark.parametrize(
    ("proto", "label", "client", "rtc"),
    [
        # nDPI keeps a client IP only from the voice server's IP Discovery response.
        ("UDP", "58/Discord", "[Client IP: 85.154.2.145]", True),
        ("UDP", "58/Discord", "", False),  # its 8-byte packet rule or an IP list: not voice
        ("TCP", "91.58/TLS.Discord", "[Client IP: 85.154.2.145]", False),
        ("UDP", "5/DNS", "[Client IP: 85.154.2.145]", False),
    ],
)
def test_discord_udp_flow_is_rtc_when_ndpi_read_its_voice_ip_discovery(
    tmp_path: Path, proto: str, label: str, client: str, rtc: bool
) -> None:
    out = tmp_path / "x.pcap.out"
    out.write_text(DISCORD.format(proto=proto, label=label, client=client), encoding="utf-8")
    [flow] = parse_out(out)
    assert flow.rtc is rtc
    assert flow.app == ("Discord" if "Discord" in label else None)
