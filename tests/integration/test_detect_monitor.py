"""`callgate monitor --interface`: RTP sent over a veth between two network namespaces we create
is reported as a live session; the flow table stays bounded under a flood of new 5-tuples."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callgate.detect.flowtable import FlowTable
from tests.lab.netns import Netns
from tests.unit.detect.detect_packets import rtp, udp_frame

CALLGATE = Path(sys.executable).parent / "callgate"
SENDER = r"""
import os, socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.9.0.2", 5006))
for i in range(60):
    s.sendto(struct.pack("!BBHII", 0x80, 111, i, i * 960, 0xC0FFEE) + os.urandom(120), ("10.9.0.1", 5004))
    time.sleep(0.02)
"""


def lines_until(
    proc: subprocess.Popen[str], want: str, timeout: float = 60
) -> list[dict[str, object]]:
    """JSON lines from the monitor until one whose event is `want` (generous timeout: a busy
    machine may be slow to start Python; nothing here depends on speed)."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(0.5):
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if seen[-1]["event"] == want:
            return seen
    raise AssertionError(f"no {want!r} line; got {seen}")


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and AF_PACKET need root")
def test_rtp_on_a_veth_is_reported_live() -> None:
    lab = Netns(f"cgm{os.getpid()}")
    try:
        a, b = lab.add("a"), lab.add("b")
        lab.veth(a, "va", b, "vb")
        lab.ip(a, "addr", "add", "10.9.0.1/24", "dev", "va")
        lab.ip(b, "addr", "add", "10.9.0.2/24", "dev", "vb")
        argv = lab.exec_argv(a, str(CALLGATE), "monitor", "--interface", "va", "--interval",
                             "0.2", "--duration", "120", "--internal", "10.9.0.1/32")  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        lab.processes.append(proc)  # type: ignore[arg-type]
        lines_until(proc, "listening")
        subprocess.run(lab.exec_argv(b, sys.executable, "-c", SENDER), check=True, timeout=60)
        deadline = time.monotonic() + 60
        session: dict[str, object] = {}
        while time.monotonic() < deadline and session.get("peer") != "10.9.0.2":
            session = lines_until(proc, "session")[-1]
        assert session["host"] == "10.9.0.1" and session["app"] == "unidentified RTP"
        assert "RTP" in session["protocols"]  # type: ignore[operator]
        proc.send_signal(signal.SIGINT)
        summary = lines_until(proc, "summary")[-1]
        assert summary["evicted"] == 0 and int(summary["packets"]) >= 3  # type: ignore[call-overload]
        proc.wait(30)
    finally:
        lab.close()


def test_the_flow_table_stays_bounded_under_a_flood() -> None:
    table = FlowTable(max_flows=100)
    far = ("203.0.113.9", 5004)
    for i in range(2000):
        ts = 1000.0 + i * 0.01
        table.packet(
            ts, 1, udp_frame(("192.168.1.5", 10000 + i), ("198.51.100.1", 53000), b"x" * 20)
        )
        table.packet(ts, 1, udp_frame(("192.168.1.6", 5006), far, rtp(i)))  # a call all along
    assert len(table.flows) <= 100 and table.evicted >= 1900
    call = [f for f in table.flows if f.b == (bytes([203, 0, 113, 9]), 5004)]
    assert len(call) == 1 and call[0].packets == 2000  # the active flow was never evicted
