"""The kernel fast path (turn/kernel) across veth pairs: client, relay and peer each in a network
namespace of their own, the relay's tc ingress forwarding channel data. The same scenario runs with
the fast path on and off (tests/lab/fast_path_scenario.py) and must come out the same, except that
with it on the kernel carried the channel data.

Needs root, `ip`, clang and libbpf-dev (scripts/test installs them); skipped without, failed in
CI as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_process import COMMAND, clean_env
from tests.lab.netns import Netns

ROOT = Path(__file__).resolve().parents[2]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the fast path needs root (CAP_BPF, CAP_NET_ADMIN) and network namespaces"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("clang") is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        return "clang and libbpf-dev are not installed (apt-get install clang libbpf-dev)"
    return None


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str, str]]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true" and os.geteuid() == 0:
            pytest.fail(f"CI runs as root, so the fast path tests must run: {reason}")
        pytest.skip(reason)
    lab = Netns(f"cgf{os.getpid()}")
    try:
        relay, client, peer = lab.add("relay"), lab.add("client"), lab.add("peer")
        lab.veth(relay, "r0", client, "c0")
        lab.veth(relay, "r1", peer, "p0")
        lab.ip(relay, "addr", "add", "10.77.1.1/24", "dev", "r0")
        lab.ip(relay, "addr", "add", "10.77.2.1/24", "dev", "r1")
        lab.ip(client, "addr", "add", "10.77.1.2/24", "dev", "c0")
        lab.ip(peer, "addr", "add", "10.77.2.2/24", "dev", "p0")
        lab.ip(client, "route", "add", "default", "via", "10.77.1.1")
        lab.ip(peer, "route", "add", "default", "via", "10.77.2.1")
        lab.sh(relay, "sysctl -qw net.ipv4.conf.lo.forwarding=1")
        yield relay, client, peer
    finally:
        lab.close()


def run_scenario(namespaces: tuple[str, str, str], mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.lab.fast_path_scenario", *namespaces, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_fast_path_relays_what_userspace_relays(namespaces: tuple[str, str, str]) -> None:
    on = run_scenario(namespaces, "on")
    off = run_scenario(namespaces, "off")
    capped = run_scenario(namespaces, "capped")
    for result in (on, off, capped):
        # every datagram, in order, from the relayed address to the peer and back as ChannelData
        assert result["peer_got_in_order"] is True
        assert result["peer_saw_relayed_address"] is True
        assert result["client_got_in_order"] is True
        # an expired permission stops forwarding (no packet reaches the peer without one), a
        # new one brings it back; deallocation leaves no kernel entry behind
        assert result["peer_empty_after_expiry"] is True
        assert result["refreshed_forwards"] is True
        assert result["unbound_stops"] is True  # a withdrawn channel forwards nothing more
        assert result["relay_to_relay_in_order"] is True
        assert result["entries_left"] == 0
    # the same counts (and bytes, so the same CDR) through both paths
    assert on["counters"] == off["counters"] == [201, 200 * 172 + 5, 201, 200 * 172 + 5]
    assert capped["counters"] == off["counters"]
    # with the fast path on, the kernel carried all 402 channel datagrams (the first round trip
    # too: an unresolved neighbour is resolved by bpf_redirect_neigh), and none of 300 malformed
    # or foreign ones (lengths past or short of the datagram, truncated headers, reserved or
    # unbound channel numbers)
    assert on["kernel_forwarded"] == 402
    assert on["kernel_forwarded_malformed"] == 0
    assert off["kernel_forwarded"] == 0
    # between two allocations here: both rewrites in one kernel pass for each datagram
    assert on["relay_to_relay_kernel"] == 50
    assert off["relay_to_relay_kernel"] == 0
    # an allocation under a bandwidth cap stays in userspace, where the cap is counted
    assert capped["kernel_forwarded"] == 0


def _turn_log(ns: str, mode: str, tmp_path: Path) -> tuple[int | None, str]:
    """`callgate turn --fast-path MODE` inside `ns` until it listens (or exits): exit code, log."""
    log_path = tmp_path / f"{ns}-{mode}.log"
    command = [*COMMAND, "turn", "--listen", "127.0.0.1:0"]
    command += ["--user", "alice:alice-password", "--fast-path", mode]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *command], stderr=log, stdout=log, env=clean_env()
        )
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and b"listening on" not in log_path.read_bytes():
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        finally:
            code = proc.poll()
            if code is None:
                proc.terminate()
                proc.wait(10)
    return code, log_path.read_text()


def test_start_up_says_which_path_and_why(namespaces: tuple[str, str, str], tmp_path: Path) -> None:
    relay, client, _peer = namespaces
    # where everything allows it (root, clang, lo forwarding on): on, naming the devices
    code, log = _turn_log(relay, "auto", tmp_path)
    assert code is None and "kernel fast path on: eBPF at tc ingress (tcx) of lo, r0" in log, log
    # the client's namespace has lo forwarding off: auto runs in Python and says why...
    code, log = _turn_log(client, "auto", tmp_path)
    assert code is None, log
    assert "kernel fast path off: net.ipv4.conf.lo.forwarding is 0" in log
    # ...and required refuses to start (exit 1), with the same reason
    code, log = _turn_log(client, "required", tmp_path)
    assert code == 1
    assert "kernel fast path required but unavailable: net.ipv4.conf.lo.forwarding is 0" in log
