"""Vendor address ranges: the shipped list (with its source and date), naming calls by their
peer's range, and `--lists FILE` replacing it, with precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.detect.command import Args, Failure, run
from callgate.detect.engine import Detector
from callgate.detect.ranges import RangeError, default_ranges, load_ranges, parse_ranges
from callgate.detect.report import FlowResult
from tests.unit.detect.detect_packets import pcap_bytes, rtp, udp_frame

HOST = ("192.168.1.60", 50000)


def call(tmp_path: Path, far: tuple[str, int]) -> Path:
    frames = [(1.0 + i * 0.02, udp_frame(HOST if i % 2 == 0 else far, far if i % 2 == 0 else HOST,
                                         rtp(i // 2, ssrc=1 + i % 2)))
              for i in range(40)]  # fmt: skip
    path = tmp_path / "call.pcap"
    path.write_bytes(pcap_bytes(frames))
    return path


def only_call(detector: Detector, path: Path) -> FlowResult:
    detector.read(path)
    [flow] = detector.report().rtc_flows
    return flow


def test_the_shipped_list_says_where_it_comes_from() -> None:
    shipped = default_ranges()
    assert "learn.microsoft.com" in shipped.source and shipped.date.startswith("2026-")
    assert "support.google.com/a/answer/1279090" in shipped.source
    networks = {str(r.network): r.app for r in shipped.ranges}
    assert networks["52.112.0.0/14"] == networks["2603:1063::/38"] == "Microsoft Teams/Skype"
    assert networks["142.250.82.0/24"] == "Google Meet"


def test_a_call_to_a_teams_media_relay_is_named(tmp_path: Path) -> None:
    flow = only_call(Detector(), call(tmp_path, ("52.113.10.20", 3479)))
    assert flow.app == "Microsoft Teams/Skype"
    assert any("published range 52.112.0.0/14" in e for e in flow.evidence)
    other_port = only_call(Detector(), call(tmp_path, ("52.113.10.20", 40000)))
    assert other_port.app == "unidentified RTP"


def test_lists_replace_the_shipped_ranges(tmp_path: Path) -> None:
    lists = tmp_path / "ranges.txt"
    lists.write_text("# source: our own\n203.0.113.0/24 any Zoom\n")
    mine = load_ranges(lists)
    assert mine.source == "our own"
    assert only_call(Detector(ranges=mine), call(tmp_path, ("203.0.113.5", 8801))).app == "Zoom"
    teams = only_call(Detector(ranges=mine), call(tmp_path, ("52.113.10.20", 3479)))
    assert teams.app == "unidentified RTP"


@pytest.mark.parametrize(
    ("text", "message"),
    [("10.0.0.0/8 udp:1-2\n", ":1: expected 'CIDR PORTS APPLICATION'"),
     ("# c\n10.0.0.300/8 any X\n", ":2: not a network: '10.0.0.300/8'"),
     ("10.0.0.0/8 udp:9-1 X\n", ":1: bad ports 'udp:9-1'"),
     ("10.0.0.0/8 sctp:5 X\n", ":1: bad ports 'sctp:5'")],
)  # fmt: skip
def test_a_bad_line_is_an_error_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(RangeError, match=message.replace("(", r"\(")):
        parse_ranges(text, "f.txt")


def test_the_command_fails_with_status_1_on_a_bad_list(tmp_path: Path) -> None:
    lists = tmp_path / "bad.txt"
    lists.write_text("nonsense\n")
    with pytest.raises(Failure) as caught:
        run(Args([call(tmp_path, ("52.113.10.20", 3479))], lists=lists))
    assert caught.value.code == 1 and "bad.txt:1" in caught.value.message
    with pytest.raises(Failure, match="cannot read"):
        run(Args([tmp_path / "call.pcap"], lists=tmp_path / "missing.txt"))
