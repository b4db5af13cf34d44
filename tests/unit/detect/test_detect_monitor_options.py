"""`callgate monitor`'s --idle-timeout and --lists act on the live detector as on `detect`'s
(the ring is replaced by a list of frames; tests/integration/test_detect_monitor.py runs the real
ring in a namespace)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.detect.capture.packets import CaptureError
from callgate.detect.live import monitor as live
from tests.unit.detect.detect_packets import rtp, udp_frame

HOST, FAR = ("192.168.1.60", 50000), ("198.51.100.7", 40000)


def burst(start: float) -> list[tuple[float, int, bytes]]:
    """A second of RTP both ways on one 5-tuple."""
    return [(start + i * 0.02, 1, udp_frame(HOST if i % 2 == 0 else FAR,
                                            FAR if i % 2 == 0 else HOST, rtp(i // 2, ssrc=1 + i % 2)))
            for i in range(40)]  # fmt: skip


class FakeRing:
    """Two bursts of the same call 60 s apart, one per `blocks` call."""

    def __init__(self, interface: str) -> None:
        self.pending = [burst(1000.0), burst(1060.0)]

    def blocks(self, timeout: float) -> Iterator[list[tuple[float, int, bytes]]]:
        if self.pending:
            yield self.pending.pop(0)

    def close(self) -> None:
        pass


def run(monkeypatch: pytest.MonkeyPatch, **options: object) -> list[dict[str, object]]:
    monkeypatch.setattr(live, "Ring", FakeRing)
    ticks = iter(range(100))
    out = io.StringIO()
    live.monitor(live.MonitorArgs("veth0", duration=10, **options),  # type: ignore[arg-type]
                 out, clock=lambda: float(next(ticks)))  # fmt: skip
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_idle_timeout_closes_the_quiet_flow_and_zero_never_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [summary] = [e for e in run(monkeypatch, idle_timeout=30.0) if e["event"] == "summary"]
    assert summary["closed_idle"] == 1 and summary["flows"] == 2
    [summary] = [e for e in run(monkeypatch, idle_timeout=0.0) if e["event"] == "summary"]
    assert summary["closed_idle"] == 0 and summary["flows"] == 1


def test_lists_name_the_call_from_the_given_ranges(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lists = tmp_path / "ranges.txt"
    lists.write_text("# source: test\n198.51.100.0/24 udp:40000-40010 Acme Talk\n")
    sessions = [e for e in run(monkeypatch, lists=lists) if e["event"] == "session"]
    assert sessions and {s["app"] for s in sessions} == {"Acme Talk"}
    assert {s["app"] for s in run(monkeypatch) if s["event"] == "session"} == {"unidentified RTP"}


def test_bad_options_fail_before_the_ring_opens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="--idle-timeout"):
        run(monkeypatch, idle_timeout=-1.0)
    bad = tmp_path / "bad.txt"
    bad.write_text("not-a-network any X\n")
    with pytest.raises(CaptureError, match=r"bad\.txt:1"):
        run(monkeypatch, lists=bad)


def test_the_command_reports_a_bad_list_with_status_1_and_a_bad_timeout_with_2(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from callgate.cli.app import app

    bad = tmp_path / "bad.txt"
    bad.write_text("not-a-network any X\n")
    base = ["monitor", "--interface", "lo", "--duration", "1"]
    listed = CliRunner().invoke(app, [*base, "--lists", str(bad)])
    assert listed.exit_code == 1 and "bad.txt:1" in listed.stderr
    timed = CliRunner().invoke(app, [*base, "--idle-timeout", "-5"])
    assert timed.exit_code == 2 and "--idle-timeout" in timed.stderr
