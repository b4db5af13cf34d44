"""`callgate serve --monitor IFACE` in a network namespace we create: RTP arriving on a veth
becomes a stored finding, visible to admin and security (not to compliance or users, whose
refusal is audited), audited, counted on /metrics, sent to syslog and to a signed webhook; a flow
to an allow-listed relay is stored as sanctioned and raises no alert; and a real capture (a Skype
conference call from nDPI's test data) replayed onto the veth with Debian's `tcpreplay` is found
and named, pushed to a long poll of the console's API (GET /api/findings?after=&wait=) by the
immediate write of new findings (counted), not by the (here 20 s) batched update. The delay
from the replay's start to the API is printed, and the product's own first packet → stored
delay is asserted within the console's 2 s promise (see the comment there).

The test talks to the namespace's loopback from a thread that entered the namespace (setns), so
servers and clients there are plain sockets of this process."""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.cli_process import COMMAND, clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.detect_support import pcaps_dir
from tests.integration.test_cli import free_port
from tests.lab.netns import Netns
from tests.unit.runtime.test_alerts import Receiver

T = TypeVar("T")
SECRET = "webhook-secret-for-the-test"
HTTP, METRICS = "127.0.0.1:18080", "127.0.0.1:18090"
USERS = {"boss": "admin", "sec": "security", "comp": "compliance", "alice": "user"}
SENDER = r"""
import os, socket, struct, time
for port, dest in ((5006, 5004), (5008, 3478)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.9.0.2", port))
    for i in range(40):
        s.sendto(struct.pack("!BBHII", 0x80, 111, i, i * 960, port) + os.urandom(120), ("10.9.0.1", dest))
        time.sleep(0.01)
"""
CLONE_NEWNET = 0x40000000
NFT = shutil.which("nft") or "/usr/sbin/nft"
REPLAYED = "ndpi/skype-conference-call.pcap"  # 200 Ethernet frames over 1.5 s
REPLAYED_HOST, REPLAYED_APP = "192.168.2.20", "Microsoft Teams/Skype"
# Long: only the immediate write of new findings can show them sooner (growth waits for it).
INTERVAL_S = 20
DELAYS = "callgate_detect_new_finding_delay_seconds"


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def inside(ns: str) -> ThreadPoolExecutor:
    """A worker thread in network namespace `ns` (setns(2) moves only the calling thread)."""

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    return ThreadPoolExecutor(1, initializer=enter)


def until(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll `check` until it returns something (generous: nothing here depends on speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lab() -> Iterator[Netns]:
    net = Netns(f"cgs{os.getpid()}")
    try:
        a, b = net.add("a"), net.add("b")
        net.veth(a, "va", b, "vb")
        net.ip(a, "addr", "add", "10.9.0.1/24", "dev", "va")
        net.ip(b, "addr", "add", "10.9.0.2/24", "dev", "vb")
        yield net
    finally:
        net.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and AF_PACKET need root")
def test_serve_monitors_stores_shows_audits_counts_and_alerts(lab: Netns, tmp_path: Path) -> None:
    capture = pcaps_dir() / REPLAYED
    tcpreplay = shutil.which("tcpreplay")
    assert tcpreplay, "tcpreplay is missing (scripts/test installs Debian's tcpreplay)"
    a, b = lab.full("a"), lab.full("b")
    data = tmp_path / "data"
    tokens: dict[str, str] = {}
    for handle, role in USERS.items():
        added = callgate("user", "add", handle, "--role", role, "--data-dir", str(data),
                         "--password-stdin", cwd=tmp_path, stdin=f"Tr0ub4dor-{len(handle)}-horse\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
    pool = inside(a)
    receiver = pool.submit(Receiver, [200]).result()
    syslog = pool.submit(socket.socket, socket.AF_INET, socket.SOCK_DGRAM).result()
    pool.submit(syslog.bind, ("127.0.0.1", 0)).result()
    config = tmp_path / "callgate.toml"
    config.write_text(
        f'[monitor]\ninternal = ["10.9.0.1/32", "{REPLAYED_HOST}/32"]\nallow_relays = ["10.9.0.2:5008"]\n'
        f'interval_s = {INTERVAL_S}\nsyslog = "127.0.0.1:{syslog.getsockname()[1]}"\n'
        f'webhook_url = "{receiver.url}"\nwebhook_secret = "{SECRET}"\n'
    )
    log = (tmp_path / "server.log").open("wb")
    argv = lab.exec_argv(a, *COMMAND, "serve", "--config", str(config), "--data-dir", str(data),
                         "--http", HTTP, "--listen", "127.0.0.1:3478", "--metrics", METRICS,
                         "--monitor", "va")  # fmt: skip
    server = subprocess.Popen(argv, stdout=log, stderr=log, env=clean_env())
    lab.processes.append(server)  # type: ignore[arg-type]
    client = pool.submit(httpx.Client, base_url=f"http://{HTTP}", timeout=30).result()

    def get(path: str, who: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
        return pool.submit(client.get, path, headers=headers).result()

    def healthy() -> bool | None:
        try:
            return get("/healthz").status_code == 200 or None
        except httpx.HTTPError:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            return None

    try:
        until(healthy, "serve to answer")
        for handle in USERS:
            body = {"handle": handle, "password": f"Tr0ub4dor-{len(handle)}-horse"}
            answer = pool.submit(client.post, "/api/login", json=body).result()
            tokens[handle] = answer.json()["token"]
        subprocess.run(lab.exec_argv(b, sys.executable, "-c", SENDER), check=True, timeout=60)

        def both_found() -> list[dict[str, Any]] | None:
            found = get("/api/findings", "sec").json()["findings"]
            return found if len(found) == 2 and all(f["packets_in"] >= 3 for f in found) else None

        findings = {f["sanctioned"]: f for f in until(both_found, "two findings")}
        assert findings[False]["host"] == "10.9.0.1" and findings[False]["peer"] == "10.9.0.2"
        assert (
            findings[False]["app"] == "unidentified RTP" and "RTP" in findings[False]["protocols"]
        )
        assert findings[True]["app"] == "allow-listed relay"
        admin_view = get("/api/findings?unsanctioned=true", "boss").json()
        assert admin_view["monitor"]["interface"] == "va" and admin_view["monitor"]["running"]
        assert [f["sanctioned"] for f in admin_view["findings"]] == [False]
        assert get("/api/findings", "comp").status_code == 403
        assert get("/api/findings", "alice").status_code == 403
        audited = get("/api/audit/entries?action=detect.finding", "boss").json()["items"]
        assert [(e["actor"], e["object"]) for e in audited] == [("monitor", "host:10.9.0.1")]
        refused = get("/api/audit/entries?action=detect.access_denied", "boss").json()["items"]
        assert sorted(e["actor"] for e in refused) == ["alice", "comp"]
        page = get("/console/unmanaged")
        assert page.status_code == 200 and "unmanaged.js" in page.text
        metrics = pool.submit(httpx.get, f"http://{METRICS}/metrics").result().text
        assert 'callgate_detect_findings_total{sanctioned="false"} 1.0' in metrics
        assert 'callgate_detect_findings_total{sanctioned="true"} 1.0' in metrics
        assert "callgate_detect_ring_drops_total" in metrics
        syslog.settimeout(30)
        message = syslog.recv(4096)
        assert b"detect.finding" in message and b'host="10.9.0.1"' in message

        # a real capture replayed onto the veth at its own pace is found, named, written at once
        # and pushed to the console's long poll
        def scrape() -> str:
            return pool.submit(httpx.get, f"http://{METRICS}/metrics").result().text

        version = get("/api/findings", "sec").json()["version"]
        early = metric(scrape(), "callgate_detect_early_writes_total")
        started = time.time()  # before tcpreplay starts, so before its first packet
        replay = subprocess.Popen(lab.exec_argv(b, tcpreplay, "-q", "--intf1=vb", str(capture)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

        found, deadline = None, time.monotonic() + 60
        while found is None and time.monotonic() < deadline:  # as the page does: no sleep
            body = get(f"/api/findings?after={version}&wait=25", "sec").json()
            version, seen_at = body["version"], time.time()
            named = [f for f in body["findings"] if (f["host"], f["app"]) == (REPLAYED_HOST, REPLAYED_APP)]  # fmt: skip
            found = named[0] if named else None
        assert found is not None, "the replayed call was not found within 60 s"
        output, _ = replay.communicate(timeout=60)
        assert replay.returncode == 0, output
        first = datetime.fromisoformat(found["first_seen"]).timestamp()
        print(f"replayed call on the console's API {seen_at - started:.2f} s after the replay "
              f"started ({seen_at - first:.2f} s after its first packet's capture time)")  # fmt: skip
        assert not found["sanctioned"] and found["packets_out"] + found["packets_in"] > 0

        def counted() -> str | None:
            text = scrape()
            # only the replay brings new findings now: an immediate write is its, not the batch
            pushed = metric(text, "callgate_detect_early_writes_total") > early
            return text if pushed and metric(text, DELAYS + "_count") >= 3 else None

        metrics = until(counted, "the immediate write counted")
        # The 2 s promise, as the product measures it (first packet's kernel timestamp → row
        # committed, every finding seen for the first time: the two of the first part and the
        # replayed call's). The test's own wall-clock delay above adds this process's polling
        # and scheduling on a shared box, so it is printed, not asserted.
        within = metric(metrics, DELAYS + '_bucket{le="2.0"}')
        assert within == metric(metrics, DELAYS + "_count"), metrics

        # the console's block list drops that call's peer and spares our relay (10.9.0.2)
        assert get("/api/findings/nftables", "comp").status_code == 403
        answer = get("/api/findings/nftables", "sec")
        assert answer.status_code == 200 and "attachment" in answer.headers["content-disposition"]
        assert f"{found['peer']} . udp" in answer.text and "10.9.0.2" not in answer.text
        (tmp_path / "block.nft").write_text(answer.text)
        subprocess.run(lab.exec_argv(a, NFT, "-f", str(tmp_path / "block.nft")), check=True)
        lab.ip(a, "route", "add", f"{found['peer']}/32", "dev", "va")  # stays in our namespaces
        listener = inside(b)
        relay = listener.submit(socket.socket, socket.AF_INET, socket.SOCK_DGRAM).result()
        listener.submit(relay.bind, ("10.9.0.2", 5008)).result()
        relay.settimeout(30)
        sender = pool.submit(socket.socket, socket.AF_INET, socket.SOCK_DGRAM).result()
        with pytest.raises(PermissionError):  # dropped in the output hook
            pool.submit(sender.sendto, b"blocked", (found["peer"], 5000)).result()
        pool.submit(sender.sendto, b"still ours", ("10.9.0.2", 5008)).result()
        assert listener.submit(relay.recv, 100).result() == b"still ours"
        sender.close()
        relay.close()
        listener.shutdown()
        exported = get("/api/audit/entries?action=detect.nftables", "boss").json()["items"]
        assert [e["actor"] for e in exported] == ["sec"]
        # the replayed call's alert is sent off the monitor's thread: delivered before the
        # stop (which gives queued alerts only 2 s), however late a loaded machine sends it
        until(
            lambda: any(REPLAYED_HOST in body.decode() for _, body in receiver.requests) or None,
            "the replayed call's webhook alert",
        )
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
        pool.submit(client.close).result()
        syslog.close()
        receiver.server.shutdown()
        pool.shutdown()
    assert code == 0, (tmp_path / "server.log").read_text()
    alerted = [json.loads(body)["finding"] for _, body in receiver.requests]
    # one alert per unsanctioned finding; the allow-listed relay raises none
    assert sorted((f["host"], f["peer"]) for f in alerted if f["host"] == "10.9.0.1") == [
        ("10.9.0.1", "10.9.0.2")
    ]
    assert all(not f["sanctioned"] for f in alerted)
    assert REPLAYED_HOST in {f["host"] for f in alerted}
    headers, body = receiver.requests[0]
    stamp = headers["X-Callgate-Timestamp"]
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Callgate-Signature"] == f"sha256={mac}"
    assert json.loads(body)["finding"]["host"] == "10.9.0.1"


def test_serve_refuses_to_start_when_the_monitor_cannot_open_its_interface(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(  # `serve` itself: a process of its own
        [*COMMAND, "serve", "--data-dir", str(tmp_path / "data"), "--monitor", "nosuch0",
         "--http", f"127.0.0.1:{free_port()}", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "monitor.interface (--monitor): no such interface: 'nosuch0'" in result.stderr
    assert "Traceback" not in result.stderr
