"""A SIP desk phone in the lab: Debian's baresip on the `phone` host, behind its NAT router.

It registers with the relay-only server's SIP edge as user `phone` (the device credential
`LabServer.sip_device`) using SIP Outbound (RFC 5626: `sipnat=outbound`, with the server as its
outbound proxy), so it keeps its NAT mapping open with STUN keep-alives at the server's
Flow-Timer. It sends a 440 Hz sine, auto-answers, and baresip's `sndfile` module keeps what it
decoded of each call (`decoded()`). Commands (dial, hang up) go to its `ctrl_tcp` socket inside
the phone's namespace.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.interop.test_baresip import baresip_binary
from tests.lab.netns import IP, run
from tests.lab.service import LabServer
from tests.lab.topology import RELAY_ONLY_HTTP, SIP_PORT, Lab

HANDLE = "phone"
PHONE_TONE = 440.0
CONTROL_PORT = 4444  # ctrl_tcp, on the phone's own loopback
MODULES = ("g711.so", "ausine.so", "aubridge.so", "sndfile.so", "menu.so", "ctrl_tcp.so")

COMMAND = """
import json, socket, sys
body = json.dumps({"command": sys.argv[1], "params": sys.argv[2], "token": "t"}).encode()
with socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=10) as sock:
    sock.sendall(str(len(body)).encode() + b":" + body + b",")
    sock.recv(4096)
"""


class LabPhone:
    def __init__(self, lab: Lab, server: LabServer, workdir: Path) -> None:
        self.lab, self.server, self.workdir = lab, server, workdir
        self.ns = lab.host_ns(HANDLE)
        self.site = lab.hosts[HANDLE][1]
        self.snd = workdir / "snd"
        self.log_path = workdir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = baresip_binary()
        self.snd.mkdir(parents=True)
        config = self.workdir / "baresip"
        config.mkdir()
        lines = [
            f"sip_listen {self.site.host_ip()}:5060",
            "audio_player aubridge,speaker",  # plays nowhere; sndfile keeps what came
            f"audio_source ausine,{PHONE_TONE:.0f}",
            "ausrc_srate 48000",
            "ausrc_channels 2",
            "audio_alert aubridge,speaker",
            "module_path /usr/lib/baresip/modules",
            "module_tmp uuid.so",  # SIP Outbound needs an instance id (+sip.instance)
            *(f"module {name}" for name in MODULES),
            "module_app account.so",
            f"snd_path {self.snd}",
            f"ctrl_tcp_listen 127.0.0.1:{CONTROL_PORT}",
        ]
        (config / "config").write_text("\n".join(lines) + "\n")
        device, server = self.server.sip_device, f"{RELAY_ONLY_HTTP}:{SIP_PORT}"
        account = (
            f"<sip:{HANDLE}@{server};transport=udp>;auth_user={device['username']};"
            f"auth_pass={device['password']};answermode=auto;audio_codecs=PCMU;regint=600;"
            f'sipnat=outbound;outbound="sip:{server};transport=udp"'
        )
        (config / "accounts").write_text(account + "\n")
        argv = [binary, "-f", str(config), "-4", "-n", self.site.host_ip(), "-t", "300"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.lab.net.exec_argv(self.ns, *argv),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.lab.net.processes.append(self.proc)

    def command(self, name: str, params: str = "") -> None:
        argv = self.lab.net.exec_argv(
            self.ns, sys.executable, "-c", COMMAND, name, params, str(CONTROL_PORT)
        )
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def decoded(self) -> list[Path]:
        """What the phone decoded, a file per call, oldest first."""
        return sorted(self.snd.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def sent_to_sip(self) -> int:
        """UDP packets the phone's router has forwarded to the server's SIP port (its counting
        rule, topology.nat_rules): REGISTERs, requests, responses and keep-alives."""
        router = self.lab.net.full(f"r-{self.site.name}")
        listing = run(IP, "netns", "exec", router, "iptables", "-L", "FORWARD", "-vxn").stdout
        for line in listing.splitlines():
            if f"dpt:{SIP_PORT}" in line and RELAY_ONLY_HTTP in line:
                return int(line.split()[0])
        raise AssertionError(f"no counting rule on {router}:\n{listing}")


def audit_entry(db: Path, action: str, actor: str, within: float = 60) -> dict[str, Any]:
    """The first audit entry with this action and actor (waiting for it), details decoded."""
    deadline = time.monotonic() + within
    while True:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute(
                "SELECT details FROM audit_entries WHERE action = ? AND actor = ? ORDER BY seq",
                (action, actor),
            ).fetchone()
        finally:
            conn.close()
        if found is not None:
            details: dict[str, Any] = json.loads(found[0])
            return details
        if time.monotonic() > deadline:
            raise AssertionError(f"no {action} by {actor} in the audit log")
        time.sleep(0.3)
