"""Flows idle beyond the timeout are closed: the 5-tuple's next packet starts a new flow, both are
reported, the same whether the capture is read in batches or one packet at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.detect.capture import PcapReader
from callgate.detect.command import Args, Failure, run
from callgate.detect.engine import Detector
from callgate.detect.report import Report
from tests.unit.detect.detect_packets import pcap_bytes, rtp, udp_frame

HOST, FAR = ("192.168.1.70", 50000), ("203.0.113.80", 50002)


def burst(start: float, count: int = 20) -> list[tuple[float, bytes]]:
    """RTP both ways, 20 ms apart."""
    return [(start + i * 0.02, udp_frame(HOST if i % 2 == 0 else FAR, FAR if i % 2 == 0 else HOST,
                                         rtp(i // 2, ssrc=1 + i % 2)))
            for i in range(count)]  # fmt: skip


def both_ways(path: Path, idle: float) -> Report:
    fast = Detector()
    fast.flows.idle = idle
    fast.batch_from = 0  # the batch path however small the file
    fast.read(path)
    slow = Detector()
    slow.flows.idle = idle
    slow.feed(PcapReader(path))
    slow.files.append(str(path))
    assert fast.report().flows == slow.report().flows
    assert fast.flows.closed == slow.flows.closed
    return fast.report()


@pytest.mark.parametrize("gap", [100.0, 400.0])
def test_a_flow_idle_beyond_the_timeout_is_closed(tmp_path: Path, gap: float) -> None:
    path = tmp_path / "idle.pcap"
    path.write_bytes(pcap_bytes(burst(1000.0) + burst(1000.0 + gap)))
    report = both_ways(path, 180.0)
    flows = report.flows
    if gap < 180:
        assert len(flows) == 1 and flows[0].packets_out + flows[0].packets_in == 40
        return
    assert [(f.first_seen, f.packets_out, f.packets_in) for f in flows] == [
        (1000.0, 10, 10), (1000.0 + gap, 10, 10)]  # fmt: skip
    assert all(f.rtc for f in flows)


def test_zero_never_closes(tmp_path: Path) -> None:
    path = tmp_path / "idle.pcap"
    path.write_bytes(pcap_bytes(burst(1000.0) + burst(5000.0)))
    assert len(both_ways(path, 0.0).flows) == 1


def test_gaps_inside_a_large_batch(tmp_path: Path) -> None:
    """Many bursts in one chunk of the file, the first and last hours apart."""
    starts = [1000.0]
    for k in range(1, 30):  # gaps of 200 s and 10 s in turn (a burst lasts 0.4 s)
        starts.append(starts[-1] + (200.0 if k % 2 else 10.0))
    frames = [f for start in starts for f in burst(start)]
    path = tmp_path / "sparse.pcap"
    path.write_bytes(pcap_bytes(frames))
    report = both_ways(path, 180.0)
    assert len(report.flows) == 16  # a new flow after each of the 15 gaps of 200 s


def test_the_option_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "idle.pcap"
    path.write_bytes(pcap_bytes(burst(1000.0)))
    for bad in ("-1", "soon"):
        with pytest.raises(Failure, match="--idle-timeout"):
            run(Args([path], idle=bad, fmt="json", output=tmp_path / "out.json"))
    run(Args([path], idle="30", fmt="json", output=tmp_path / "out.json"))
    assert (tmp_path / "out.json").exists()


def test_a_gap_between_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each burst in its own chunk: the batch path's own check (not the one-by-one fallback)."""
    from callgate.detect.capture import chunks

    first = pcap_bytes(burst(1000.0))
    monkeypatch.setattr(chunks, "CHUNK", len(first) - 24)  # the file header is read apart
    path = tmp_path / "two.pcap"
    path.write_bytes(first + pcap_bytes(burst(1400.0))[24:] + pcap_bytes(burst(1401.0))[24:])
    report = both_ways(path, 180.0)
    assert [(f.first_seen, f.packets_out + f.packets_in) for f in report.flows] == [
        (1000.0, 20), (1400.0, 40)]  # fmt: skip
