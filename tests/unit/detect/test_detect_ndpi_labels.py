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
