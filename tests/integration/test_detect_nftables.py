"""`callgate detect --format nftables`: the ruleset names the unsanctioned relay and peer of a
capture and never the allow-listed relay; loaded with `nft` in a network namespace we create, it
drops UDP to the relay and the peer while our relay — a real `callgate turn` in the namespace —
still answers STUN and relays media between two clients (coturn's `turnutils_uclient -y`: two
allocations sending to each other through it, the media path of a relay-only callgate call)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from callgate.detect.command import Args, run
from tests.lab.netns import Netns
from tests.lab.netns import run as lab_run
from tests.unit.detect.detect_packets import ice_check, pcap_bytes, stun, udp_frame, xor_address

HOST = ("10.0.0.2", 50000)
RELAY = ("198.51.100.20", 3478)  # an unsanctioned TURN server
PEER = ("203.0.113.30", 61000)  # a peer-to-peer peer
OURS = ("192.0.2.10", 3478)  # our callgate relay: --allow-relay
UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"


def capture(path: Path) -> None:
    allocate = stun(0x003, 0, [(0x0019, struct.pack("!I", 17 << 24))])
    success = stun(0x003, 1, [(0x0016, xor_address("198.51.100.20", 49152))])
    frames = [udp_frame(HOST, RELAY, allocate), udp_frame(RELAY, HOST, success)]
    for _ in range(3):
        frames += [udp_frame((HOST[0], 50002), PEER, ice_check()),
                   udp_frame(PEER, (HOST[0], 50002), ice_check(b"efgh:abcd"))]  # fmt: skip
        frames += [udp_frame((HOST[0], 50004), OURS, allocate), udp_frame(OURS, (HOST[0], 50004), success)]  # fmt: skip
    path.write_bytes(pcap_bytes((1.0 + i * 0.01, f) for i, f in enumerate(frames)))


def test_the_ruleset_lists_what_to_block_and_never_our_relay(tmp_path: Path) -> None:
    capture(tmp_path / "c.pcap")
    out = tmp_path / "block.nft"
    run(Args([tmp_path / "c.pcap"], relays=[f"{OURS[0]}:{OURS[1]}"], internal=["10.0.0.0/8"],
             fmt="nftables", output=out))  # fmt: skip
    text = out.read_text()
    assert "198.51.100.20 . udp . 3478" in text  # the relay: its address and port only
    assert "203.0.113.30 . udp }" in text  # the p2p peer: any port
    assert "192.0.2.10" not in text


PROBE = r"""
import json, os, select, socket, struct, sys, time
targets, ours = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
servers = []
for ip, port in targets:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((ip, port)); servers.append(s)
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); client.bind(("10.0.0.2", 0))
result = {}
# our relay: STUN Binding requests (RFC 8489 §6) until `callgate turn` answers one
tid = os.urandom(12)
binding = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not result:
    client.sendto(binding, ours)
    if select.select([client], [], [], 0.5)[0]:
        data, _ = client.recvfrom(2000)
        if data[:2] == b"\x01\x01" and data[8:20] == tid:
            result["%s:%d" % ours] = "STUN Binding success"
for ip, port in targets:
    try:
        client.sendto(b"ping", (ip, port))
    except PermissionError:  # an nftables drop in the output hook: EPERM to the sender
        result["%s:%d" % (ip, port)] = "refused"
answered = set()
deadline = time.monotonic() + 5
while time.monotonic() < deadline and len(result) < len(targets) + 1:
    ready, _, _ = select.select(servers + [client], [], [], 0.2)
    for s in ready:
        data, addr = s.recvfrom(100)
        if s is client and addr != ours:  # (late answers to repeated Bindings: ignored)
            result["%s:%d" % addr] = "answered"
        else:
            s.sendto(b"pong", addr)
print(json.dumps(result))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft (Debian nftables) is not installed")
def test_loaded_with_nft_it_drops_the_relay_and_peer_but_not_ours(tmp_path: Path) -> None:
    capture(tmp_path / "c.pcap")
    rules = tmp_path / "block.nft"
    run(Args([tmp_path / "c.pcap"], relays=[f"{OURS[0]}:{OURS[1]}"], internal=["10.0.0.0/8"],
             fmt="nftables", output=rules))  # fmt: skip
    lab = Netns(f"cgd{os.getpid()}")
    try:
        ns = lab.add("fw")
        for address in (HOST[0], RELAY[0], PEER[0], OURS[0]):
            lab.ip(ns, "addr", "add", f"{address}/32", "dev", "lo")
        lab_run(*lab.exec_argv(ns, "nft", "-f", str(rules)))
        lab_run(*lab.exec_argv(ns, "nft", "-f", str(rules)))  # loading twice replaces the table
        turn = lab.exec_argv(ns, str(Path(sys.executable).parent / "callgate"), "turn",
                             "--listen", f"{OURS[0]}:{OURS[1]}", "--relay-ip", OURS[0],
                             "--user", "alice:secret-pass")  # fmt: skip
        lab.processes.append(subprocess.Popen(turn, stdout=subprocess.DEVNULL,  # type: ignore[arg-type]
                                              stderr=subprocess.DEVNULL))  # fmt: skip
        targets = json.dumps([RELAY, PEER])
        probe = lab_run(*lab.exec_argv(ns, sys.executable, "-c", PROBE, targets, json.dumps(OURS)),
                        timeout=60)  # fmt: skip
        assert json.loads(probe.stdout) == {"198.51.100.20:3478": "refused",
                                            "203.0.113.30:61000": "refused",
                                            "192.0.2.10:3478": "STUN Binding success"}  # fmt: skip
        listed = lab_run(*lab.exec_argv(ns, "nft", "list", "chain", "inet", "callgate_detect",
                                        "output")).stdout  # fmt: skip
        assert "counter packets 0" not in listed.split("@services_v4")[1].split("\n")[0]
        uclient = lab_run(*lab.exec_argv(ns, UCLIENT, "-y", "-m", "1", "-n", "10", "-l", "170",
                                         "-u", "alice", "-w", "secret-pass", "-p", str(OURS[1]),
                                         "-L", HOST[0], OURS[0]), timeout=60)  # fmt: skip
        totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", uclient.stdout)
        assert totals and int(totals[1]) > 0 and totals[1] == totals[2], uclient.stdout[-2000:]
        assert "Total lost packets 0 " in uclient.stdout, uclient.stdout[-2000:]
    finally:
        lab.close()
