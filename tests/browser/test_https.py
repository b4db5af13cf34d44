"""The softphone over HTTPS from another machine: `callgate serve --self-signed` in one network
namespace (the server, 203.0.113.1), headless Chromium in another (an office PC, 203.0.113.2)
that trusts the server's local CA through its NSS database — the way an operator trusts it on a
desktop (`certutil -A -t C,,`), not by ignoring certificate errors. Over https:// the page is a
secure context, so it gets the (fake) microphone; two colleagues then complete a relay-only call.
Plain http:// on the server redirects to https://. The office lets no UDP out and nothing to
port 3478: the browsers' media goes through TURN over TLS (the `turns:` URL of `hello`).

TEST-NET-3 addresses, inside namespaces this test makes and deletes: nothing reaches the host's
network, and the relay's peer filter (which refuses private ranges) needs no exception.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    add_user,
    colleague,
    sign_in,
    wait_online,
    wait_status,
)
from tests.cli_process import COMMAND, clean_env
from tests.e2e.helpers import CALLS, RELAY_SESSIONS, rows_of
from tests.lab.netns import IP, Netns, remove_stale_labs

SERVER_IP = "203.0.113.1"
OFFICE_IP = "203.0.113.2"
HTTPS_URL = f"https://{SERVER_IP}:8443"


@dataclass
class Office:
    net: Netns
    office_ns: str
    data_dir: Path
    log_path: Path
    home: Path  # the office PC's $HOME, with the NSS database that trusts the server's CA

    @property
    def database(self) -> str:
        return f"sqlite:///{self.data_dir / 'callgate.sqlite3'}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables", "certutil"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/test installs it)"
    return None


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("https")
    remove_stale_labs()
    net = Netns(f"cg{os.getpid()}")
    try:
        server_ns, office_ns = net.add("https-srv"), net.add("https-pc")
        net.veth(server_ns, "cgh-srv", office_ns, "cgh-pc")
        net.ip(server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", "cgh-srv")
        net.ip(office_ns, "addr", "add", f"{OFFICE_IP}/24", "dev", "cgh-pc")
        # the office lets only TCP out, and not to plain STUN/TURN: media must use turns:…:5349
        net.sh(office_ns, "iptables -A OUTPUT -o cgh-pc -p udp -j DROP")
        net.sh(office_ns, "iptables -A OUTPUT -o cgh-pc -p tcp --dport 3478 -j DROP")
        data = root / "data"
        for handle, name in (("alice", "Alice Archer"), ("bob", "Bob Baker")):
            add_user(data, handle, display_name=name)
        log_path = root / "serve.log"
        args = [
            "serve", "--data-dir", str(data), "--self-signed",
            "--http", f"{SERVER_IP}:8080", "--https", f"{SERVER_IP}:8443",
            "--listen", f"{SERVER_IP}:3478", "--tls-listen", f"{SERVER_IP}:5349",
            "--relay-ip", SERVER_IP,
            "--relay-ports", "49152-49252",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                net.exec_argv(server_ns, *COMMAND, *args), env=clean_env(), stdout=log, stderr=log
            )
        net.processes.append(proc)
        deadline = time.monotonic() + 60
        while "callgate serve listening on" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"serve did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        home = root / "home"
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
        subprocess.run(
            ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "callgate-test-ca",
             "-i", str(data / "tls" / "ca.pem")],
            check=True,
        )  # fmt: skip
        yield Office(net, office_ns, data, log_path, home)
    finally:
        net.close()


@pytest.fixture(scope="module")
def office_browser(office: Office, playwright_api: Any, fake_mic: Path) -> Iterator[Any]:
    """Chromium on the office PC: run inside its namespace, with its $HOME (its NSS trust)."""
    wrapper = office.home.parent / "chromium-in-office"
    wrapper.write_text(f'#!/bin/sh\nexec {IP} netns exec {office.office_ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o700)
    chromium = playwright_api.chromium.launch(
        executable_path=str(wrapper),
        headless=True,
        env={**os.environ, "HOME": str(office.home)},
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic}",
        ],
    )
    try:
        yield chromium
    finally:
        chromium.close()


def test_colleagues_call_over_https_from_another_machine(
    office: Office, office_browser: Any
) -> None:
    contexts = [office_browser.new_context() for _ in range(2)]
    try:
        alice, bob = (context.new_page() for context in contexts)
        for page in (alice, bob):
            page.set_default_timeout(30_000)
        # http:// redirects to https://, and the certificate is trusted: no interstitial
        alice.goto(f"http://{SERVER_IP}:8080/")
        assert alice.url.startswith(f"{HTTPS_URL}/"), alice.url
        assert alice.evaluate("() => window.isSecureContext") is True
        sign_in(alice, HTTPS_URL, "alice")
        sign_in(bob, HTTPS_URL, "bob")
        wait_online(alice, "bob", timeout=30_000)
        colleague(alice, "bob").get_by_role("button", name="Call").click()
        bob.locator("#incoming-view").wait_for()
        bob.get_by_role("button", name="Accept").click()
        wait_status(alice, "Connected with Bob Baker", timeout=30_000)
        wait_status(bob, "Connected with Alice Archer", timeout=30_000)
        alice.locator("#q-path", has_text="Relay").wait_for()
        # the microphone was granted and its audio reaches the other side
        received = 0
        deadline = time.monotonic() + 60  # generous: a loaded machine runs the browsers late
        while received <= 50 and time.monotonic() < deadline:
            time.sleep(0.5)
            received = alice.evaluate(
                "async () => (await window.callgate.quality()).packetsReceived"
            )
        assert received > 50, received
        alice.get_by_role("button", name="Hang up").click()
        wait_status(alice, "You hung up")
    finally:
        for context in contexts:
            context.close()

    deadline = time.monotonic() + 30
    while True:
        # finalized, and linked to its relay sessions (written a moment after the end)
        rows = rows_of(office.database, CALLS, CALLS.c.relay_allocation_ids.is_not(None))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 1, (rows, office.log())
    record = rows[0]
    assert (record["caller_user"], record["callee_user"]) == ("alice", "bob")
    assert (record["disposition"], record["reason"]) == ("answered", "hangup")
    assert record["media_path"] == "relay/relay", record
    assert record["caller_address"].startswith(OFFICE_IP), record
    # both browsers took the one way out: TURN over TLS (hello's turns: URL)
    ids = json.loads(record["relay_allocation_ids"] or "[]")
    sessions = rows_of(office.database, RELAY_SESSIONS, RELAY_SESSIONS.c.allocation_id.in_(ids))
    assert {(s["user"], s["transport"]) for s in sessions} >= {("alice", "tls"), ("bob", "tls")}
    assert "Traceback" not in office.log(), office.log()
