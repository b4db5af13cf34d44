"""`callgate detect --format nftables`: the ruleset names the unsanctioned relay and peer of a
capture and never the allow-listed relay. Loaded with `nft` on a gateway between an office and the
internet — network namespaces we create — it drops what the office sends to that relay and that
peer (a real STUN server and a UDP echo, both answering before the ruleset is loaded), and the
gateway's own sends to them fail with EPERM (the output hook), while a whole callgate call through
the gateway still connects: `callgate serve` (signaling and TURN, relay-only) beyond it, and two
`callgate` CLI softphones in the office, each hearing the other's tone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from callgate.detect.command import Args, run
from tests.cli_process import COMMAND, clean_env
from tests.lab.netns import Netns
from tests.lab.netns import run as lab_run
from tests.lab.service import (
    CALLEE_TONE,
    CALLER_TONE,
    HEALTH_PROBE,
    CallOutcome,
    LabServer,
    add_users,
    place_call,
    start_answerer,
)
from tests.lab.topology import Lab
from tests.unit.detect.detect_packets import ice_check, pcap_bytes, stun, udp_frame, xor_address

HOST = ("10.0.0.2", 50000)
RELAY = ("198.51.100.20", 3478)  # an unsanctioned TURN server
PEER = ("203.0.113.30", 61000)  # a peer-to-peer peer
OURS = ("203.0.113.20", 3478)  # our callgate relay: --allow-relay
SIGNALING = ("203.0.113.10", 443)  # our callgate server's HTTP/WebSocket


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
    assert OURS[0] not in text


PROBE = r"""
import json, os, select, socket, struct, sys, time
targets, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# From the office: a STUN Binding request (RFC 8489 §6) to each STUN server, "ping" to the peer;
# each target is asked again every 0.5 s for up to `wait` seconds until it answers.
wait = float(sys.argv[3])
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); client.bind((sys.argv[4], 0))
tid = os.urandom(12)
binding = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid
asks = {(ip, port): binding if stun else b"ping" for ip, port, stun in targets + [ours + [True]]}
result = {"%s:%d" % t: "no answer" for t in asks}
deadline = time.monotonic() + wait
while time.monotonic() < deadline and "no answer" in result.values():
    for target, message in asks.items():
        if result["%s:%d" % target] == "no answer":
            client.sendto(message, target)
    end = time.monotonic() + 0.5
    while (left := end - time.monotonic()) > 0 and select.select([client], [], [], left)[0]:
        data, addr = client.recvfrom(2000)
        ok = data == b"pong" or (data[:2] == b"\x01\x01" and data[8:20] == tid)
        result["%s:%d" % addr] = "answered" if ok else "garbage"
print(json.dumps(result))
"""

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, addr = s.recvfrom(2000)
    s.sendto(b"pong", addr)
"""

SEND = r"""
import json, socket, sys
result = {}
for ip, port in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"ping", (ip, port)); result["%s:%d" % (ip, port)] = "sent"
    except PermissionError:  # an nftables drop in the output hook: EPERM to the sender
        result["%s:%d" % (ip, port)] = "refused"
print(json.dumps(result))
"""


def gateway_lab(net: Netns) -> tuple[str, str, str]:
    """office (10.0.0.2) — gw (a router) — inet (our server, the foreign relay, the peer)."""
    office, gw, inet = net.add("office"), net.add("gw", forward=True), net.add("inet")
    net.veth(office, "eth0", gw, "lan")
    net.veth(gw, "wan", inet, "eth0")
    net.ip(office, "addr", "add", f"{HOST[0]}/24", "dev", "eth0")
    net.ip(office, "route", "add", "default", "via", "10.0.0.1")
    net.ip(gw, "addr", "add", "10.0.0.1/24", "dev", "lan")
    net.ip(gw, "addr", "add", "100.64.0.1/30", "dev", "wan")
    net.ip(gw, "route", "add", "default", "via", "100.64.0.2")
    net.ip(inet, "addr", "add", "100.64.0.2/30", "dev", "eth0")
    net.ip(inet, "route", "add", "10.0.0.0/24", "via", "100.64.0.1")
    for address in (SIGNALING[0], OURS[0], RELAY[0], PEER[0]):
        net.ip(inet, "addr", "add", f"{address}/32", "dev", "lo")
    return office, gw, inet


def start(net: Netns, ns: str, *argv: str, log: Path, **env: str) -> None:
    with log.open("ab") as out:
        proc = subprocess.Popen(net.exec_argv(ns, *argv), stdout=out, stderr=out,
                                env=clean_env(**env))  # fmt: skip
    net.processes.append(proc)


def probe(net: Netns, office: str, wait: float) -> dict[str, str]:
    targets = json.dumps([[*RELAY, True], [*PEER, False]])
    out = lab_run(*net.exec_argv(office, sys.executable, "-c", PROBE, targets,
                                 json.dumps(list(OURS)), str(wait), HOST[0]),
                  timeout=wait + 30)  # fmt: skip
    result: dict[str, str] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft (Debian nftables) is not installed")
def test_on_a_gateway_it_drops_the_relay_and_peer_while_a_callgate_call_connects(
    tmp_path: Path,
) -> None:
    capture(tmp_path / "c.pcap")
    rules = tmp_path / "block.nft"
    run(Args([tmp_path / "c.pcap"], relays=[f"{OURS[0]}:{OURS[1]}"], internal=["10.0.0.0/8"],
             fmt="nftables", output=rules))  # fmt: skip
    data = tmp_path / "server"
    add_users(data, ["alice", "bob"])
    net = Netns(f"cgd{os.getpid()}")
    try:
        office, gw, inet = gateway_lab(net)
        log = tmp_path / "inet.log"
        # beyond the gateway: a STUN/TURN server nobody sanctioned, a peer, and our server
        start(net, inet, *COMMAND, "turn", "--listen", f"{RELAY[0]}:{RELAY[1]}", "--relay-ip",
              RELAY[0], "--user", "someone:else-pass", log=log)  # fmt: skip
        start(net, inet, sys.executable, "-c", ECHO, PEER[0], str(PEER[1]), log=log)
        server = LabServer("ours", SIGNALING[0], OURS[0], "relay", data, tmp_path / "serve.log")
        start(net, inet, *COMMAND, "serve", "--data-dir", str(data),
              "--http", f"{SIGNALING[0]}:{SIGNALING[1]}", "--listen", f"{OURS[0]}:{OURS[1]}",
              "--relay-ip", OURS[0], "--relay-ports", "49152-49407",
              log=server.log_path, CALLGATE_CALLS__SETUP_TIMEOUT="20")  # fmt: skip
        # before the ruleset, the office reaches all three
        answered = {f"{ip}:{port}": "answered" for ip, port in (RELAY, PEER, OURS)}
        assert probe(net, office, 60) == answered, (log.read_text(), server.log())
        health = lab_run(*net.exec_argv(office, sys.executable, "-c", HEALTH_PROBE,
                                        f"http://{SIGNALING[0]}:{SIGNALING[1]}/healthz", "60"),
                         check=False, timeout=90)  # fmt: skip
        assert health.returncode == 0, server.log()

        lab_run(*net.exec_argv(gw, "nft", "-f", str(rules)))
        lab_run(*net.exec_argv(gw, "nft", "-f", str(rules)))  # loading twice replaces the table
        # forwarded: dropped by the forward hook (the sender just hears nothing back)
        assert probe(net, office, 5) == {**answered, "198.51.100.20:3478": "no answer",
                                         "203.0.113.30:61000": "no answer"}  # fmt: skip
        # the gateway's own sends: the output hook, EPERM
        sent = lab_run(*net.exec_argv(gw, sys.executable, "-c", SEND,
                                      json.dumps([RELAY, PEER, OURS])))  # fmt: skip
        assert json.loads(sent.stdout) == {"198.51.100.20:3478": "refused",
                                           "203.0.113.30:61000": "refused",
                                           "203.0.113.20:3478": "sent"}  # fmt: skip
        forward = lab_run(*net.exec_argv(gw, "nft", "list", "chain", "inet", "callgate_detect",
                                         "forward")).stdout  # fmt: skip
        for rule in ("ip daddr . meta l4proto . th dport @services_v4",
                     "ip daddr . meta l4proto @peers_v4"):  # fmt: skip
            line = next(x for x in forward.splitlines() if rule in x)
            assert "counter packets 0 " not in line, forward

        # a whole callgate call through the same gateway: signaling, TURN, media both ways
        lab = Lab(net, [], server_ns=inet, hosts={"alice": (office, None), "bob": (office, None)})  # type: ignore[dict-item]
        outcome = asyncio.run(_call(lab, server, tmp_path / "calls"))
        assert outcome.caller_code == 0 and outcome.reason == "hangup", outcome.describe()
        assert outcome.callee_reason == "hangup", outcome.describe()
        assert outcome.path == "relay", outcome.describe()  # relay-only: through our TURN
        assert (
            outcome.heard_by_callee is not None and abs(outcome.heard_by_callee - CALLER_TONE) < 5
        )
        assert (
            outcome.heard_by_caller is not None and abs(outcome.heard_by_caller - CALLEE_TONE) < 5
        )
    finally:
        net.close()


async def _call(lab: Lab, server: LabServer, workdir: Path) -> CallOutcome:
    answerer = await start_answerer(lab, server, "bob", 1, workdir)
    try:
        return await place_call(lab, server, "alice", answerer, workdir, duration=2.0)
    finally:
        await answerer.finish(15)
