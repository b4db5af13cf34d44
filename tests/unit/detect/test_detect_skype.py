"""Classic peer-to-peer Skype: found from its published framing, per flow and per host port, read
from capture files; and what merely looks like it (DNS, games, VPNs, BitTorrent, random UDP) is
not."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from callgate.detect import skype
from callgate.detect.engine import Detector
from callgate.detect.report import Report
from callgate.detect.verdict import CLASSIC_SKYPE
from tests.unit.detect import skype_packets as sp
from tests.unit.detect.detect_packets import Frame, pcap_bytes


def detect(tmp_path: Path, frames: list[Frame]) -> Report:
    path = tmp_path / "capture.pcap"
    path.write_bytes(pcap_bytes(sorted(frames, key=lambda f: f[0])))
    detector = Detector()
    detector.read(path)
    return detector.report()


def skype_flows(report: Report) -> list[str]:
    return [f"{f.peer}:{f.peer_port}" for f in report.flows if f.rtc and f.app == CLASSIC_SKYPE]


def test_chi_square_tells_constant_from_random_nibbles() -> None:
    rng = random.Random(1)
    heads = [rng.randbytes(skype.HEAD) for _ in range(16)]
    assert skype.chi_square(heads, 8) < 42  # uniform: ≈ 15
    assert skype.chi_square([h[:4] + b"\x00" + h[5:] for h in heads], 8) == 15 * 16  # constant
    structured = [h[:3] + bytes(skype.HEAD - 3) for h in heads]  # zeros after the function
    same_id = [b"\x7f\x00" + h[2:] for h in heads]
    counting = [bytes([0x70, i]) + h[2:] for i, h in enumerate(heads)]  # IDs need not be uniform
    assert skype.random_groups(heads) and skype.random_groups(counting)
    assert not skype.random_groups(structured) and not skype.random_groups(same_id)


def test_the_anchor_rule_is_ndpis() -> None:
    assert skype.is_anchor(b"\x12\x34\x02" + bytes(13))
    assert skype.is_anchor(b"\x12\x34\x7d")  # 3 bytes, function 0xd
    assert not skype.is_anchor(b"\x30\x34\x02" + bytes(13))  # SNMP's first byte
    assert not skype.is_anchor(b"\x12\x34\x02" + bytes(12))  # 15 bytes: too short
    assert not skype.is_anchor(b"\x12\x34\x12" + bytes(13))


@pytest.mark.parametrize("counting", [False, True], ids=["random IDs", "counting IDs"])
def test_the_probes_of_a_skype_port_are_all_found(tmp_path: Path, counting: bool) -> None:
    report = detect(tmp_path, sp.skype_probes(random.Random(2), 40, counting=counting))
    found = skype_flows(report)
    assert len(found) == 40 == len(report.flows)
    flow = report.flows[0]
    assert (flow.host, flow.host_port) == sp.HOST and flow.path == "p2p"
    assert "Skype" in flow.protocols and any(
        "local UDP port speaks Skype" in e for e in flow.evidence
    )


def test_a_lone_call_is_found_by_its_own_framing(tmp_path: Path) -> None:
    far = sp.peer(77)
    report = detect(tmp_path, sp.skype_call(random.Random(3), far))
    [flow] = report.flows
    assert flow.rtc and flow.app == CLASSIC_SKYPE and flow.media == ("audio",)
    assert any(e.startswith("Skype UDP framing in 16 messages") for e in flow.evidence)
    assert any(e.startswith("voice by naive Bayes") for e in flow.evidence)  # NBC ∧ CSC
    assert flow.confidence == 0.8


def test_a_call_after_probes_is_skype_through_the_port(tmp_path: Path) -> None:
    rng = random.Random(4)
    far = sp.peer(99)
    report = detect(tmp_path, sp.skype_probes(rng, 10) + sp.skype_call(rng, far))
    assert f"{far[0]}:{far[1]}" in skype_flows(report)
    assert len(skype_flows(report)) == 11


def test_a_few_anchored_flows_are_not_enough(tmp_path: Path) -> None:
    """One message whose third byte is 0x02 happens by chance once in 256: fewer than
    MIN_PEERS anchored flows, and no flow long enough for the framing test, say nothing."""
    report = detect(tmp_path, sp.skype_probes(random.Random(5), skype.MIN_PEERS - 1))
    assert not skype_flows(report) and not report.rtc_flows


LOOKALIKES: dict[str, Callable[[random.Random], list[Frame]]] = {
    "DNS": lambda rng: sp.dns(rng, 60),
    "game": lambda rng: sp.game(rng, 8),
    "WireGuard": sp.wireguard,
    "OpenVPN": sp.openvpn,
    "OpenVPN without its handshake": lambda rng: sp.openvpn(rng, handshake=False),
    "BitTorrent": lambda rng: sp.bittorrent(rng, 300),
    "random UDP": lambda rng: sp.random_p2p(rng, 300),
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_lookalikes_get_no_verdict(tmp_path: Path, name: str) -> None:
    for seed in range(3):
        report = detect(tmp_path, LOOKALIKES[name](random.Random(seed)))
        assert report.flows
        assert [f for f in report.flows if f.rtc] == [], f"{name}, seed {seed}"


def test_skype_among_lookalikes(tmp_path: Path) -> None:
    rng = random.Random(6)
    frames = sp.skype_probes(rng, 30) + sp.skype_call(rng, sp.peer(50))
    for make in LOOKALIKES.values():
        frames += make(rng)
    report = detect(tmp_path, frames)
    rtc_hosts = {(f.host, f.host_port) for f in report.flows if f.rtc}
    assert rtc_hosts == {sp.HOST}
    assert len(skype_flows(report)) == 31
