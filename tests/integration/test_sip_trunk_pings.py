"""OPTIONS pings to carriers (RFC 3261 §11) over real sockets: two carriers, played by Python UDP
responders on 127.0.0.5 and 127.0.0.6, carry the same prefix. While both answer, a desk phone's
call goes to the first; when it stops answering it is marked down (console/API, /metrics,
/healthz degraded, audited) and the next call goes to the second; when it answers again it is
up again. Last, a call that rings at the carrier is ended by an administrator from the live
calls: CANCEL to the carrier, 480 to the phone, CDR `ended-by-admin`."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.sip.message import SipRequest, parse_datagram, serialize
from callgate.sip.responses import response
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import WebServer, serve
from tests.integration.test_cli import free_port
from tests.integration.test_sip_edge import client_get, sip_invite

pytestmark = pytest.mark.timeout(120)


class Carrier:
    """A carrier's SIP side on a loopback address: answers OPTIONS with 200 while `answering`,
    refuses every INVITE with 486 (and remembers it) — or, with `ring`, rings (180) until a
    CANCEL (200, then 487 to the INVITE, RFC 3261 §9.2) — and ignores ACKs."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.answering = True
        self.options = 0
        self.invites: list[str] = []
        self.ring = False
        self.cancels = 0
        self._ringing: SipRequest | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            message = parse_datagram(data)
            if not isinstance(message, SipRequest):
                continue
            if message.method == "OPTIONS":
                self.options += 1
                if self.answering:
                    reply = response(message, 200, "OK", [("Allow", "INVITE, ACK, BYE")])
                    self.sock.sendto(serialize(reply), source)
            elif message.method == "INVITE":
                if message.uri not in self.invites:  # not a retransmission
                    self.invites.append(message.uri)
                if self.ring:
                    self._ringing = message
                    reply = response(message, 180, "Ringing", to_tag="ring")
                    self.sock.sendto(serialize(reply), source)
                else:
                    self.sock.sendto(serialize(response(message, 486, "Busy Here")), source)
            elif message.method == "CANCEL" and self._ringing is not None:
                self.cancels += 1
                self.sock.sendto(serialize(response(message, 200, "OK")), source)
                ended = response(self._ringing, 487, "Request Terminated", to_tag="ring")
                self.sock.sendto(serialize(ended), source)
                self._ringing = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def two_carriers(
    tmp_path: Path,
) -> Iterator[tuple[WebServer, int, dict[str, str], Carrier, Carrier]]:
    first, second = Carrier("127.0.0.5"), Carrier("127.0.0.6")
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))
        for args in (("create", "traders"), ("add-member", "traders", "alice")):
            done = callgate("group", *args, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr

    both = {"routes": ["+44"], "dial_out_groups": ["traders"], "options_interval": 1,
            "options_failures": 2}  # fmt: skip
    trunks = [
        {"name": "first", "addresses": ["127.0.0.5"], "outbound": first.address, **both},
        {"name": "second", "addresses": ["127.0.0.6"], "outbound": second.address, **both},
    ]
    port, metrics = free_port(), free_port()
    device["metrics"] = f"http://127.0.0.1:{metrics}/metrics"
    env = {"CALLGATE_SIP__TRUNKS": json.dumps(trunks), "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32",
           "CALLGATE_SIP__ALGORITHMS": '["SHA-256"]'}  # fmt: skip
    listen = ("--sip-listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{metrics}")
    try:
        for server in serve(tmp_path, *listen, prepare=prepare, **env):
            yield server, port, device, first, second
    finally:
        first.close()
        second.close()


def until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def reachable(server: WebServer) -> dict[str, str]:
    trunks = client_get(server, "/api/trunks", "admin")["trunks"]
    return {t["name"]: t["reachable"] for t in trunks}


def dial_number(port: int, device: dict[str, str]) -> int:
    """alice's desk phone dials +44 20 7946 0000; the final status it gets."""
    phone, _, final = sip_invite(port, device["username"], device["password"], 40000,
                                 callee="+442079460000")  # fmt: skip
    phone.close()
    return final.status


def health(server: WebServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_a_carrier_that_stops_answering_is_passed_over(
    two_carriers: tuple[WebServer, int, dict[str, str], Carrier, Carrier],
) -> None:
    server, port, device, first, second = two_carriers
    until("both carriers up", lambda: reachable(server) == {"first": "up", "second": "up"})
    # equal routes: the first in the config takes the call (its 486 reaches the phone)
    assert dial_number(port, device) == 486
    assert (len(first.invites), len(second.invites)) == (1, 0)

    first.answering = False
    until("first down", lambda: reachable(server)["first"] == "down")
    trunks = {t["name"]: t for t in client_get(server, "/api/trunks", "admin")["trunks"]}
    assert trunks["first"]["options"]["failures"] >= 2
    assert trunks["first"]["options"]["last_status"] is None
    with urllib.request.urlopen(device["metrics"], timeout=10) as answer:
        text = answer.read().decode()
    assert 'callgate_sip_trunk_up{trunk="first"} 0.0' in text
    assert 'callgate_sip_trunk_up{trunk="second"} 1.0' in text
    status, body = health(server)
    # degraded, not down: calls between users and through the other trunk go on
    assert (status, body["status"]) == (200, "degraded"), body
    assert body["sip_trunks"] == {"ok": False, "critical": False, "pinged": 2, "down": 1}
    assert "127.0.0.5" not in json.dumps(body)  # /healthz answers anyone

    # the next call to the same prefix goes to the carrier that answers
    assert dial_number(port, device) == 486
    assert (len(first.invites), len(second.invites)) == (1, 1)

    first.answering = True
    until("first up again", lambda: reachable(server)["first"] == "up")
    assert health(server)[1]["status"] == "ok"
    entries = client_get(server, "/api/audit/entries?limit=200", "admin")["items"]
    changes = [(e["action"], e["object"]) for e in entries if e["action"].startswith("sip.trunk.")]
    assert ("sip.trunk.down", "trunk:first") in changes and (
        "sip.trunk.up",
        "trunk:first",
    ) in changes
    assert not [c for c in changes if c[1] == "trunk:second"], changes

    # a call ringing at the carrier, ended by an administrator from the live calls
    first.ring = True
    finals: list[int] = []
    phone = threading.Thread(target=lambda: finals.append(dial_number(port, device)))
    phone.start()

    def ringing() -> list[dict[str, Any]]:
        live = client_get(server, "/api/live-calls", "admin")["calls"]
        return [c for c in live if c["trunk"] == "first" and c["state"] == "ringing"]

    until("the call rings", lambda: bool(ringing()))
    (call,) = ringing()
    with server.client() as client:
        admin = {"Authorization": f"Bearer {server.token('admin')}"}
        done = client.post(f"/api/live-calls/{call['call_id']}/end", headers=admin)
    assert done.status_code == 202, done.text
    phone.join(timeout=30)
    assert finals == [480] and first.cancels == 1
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    (cdr,) = [c for c in cdrs if c["call_id"] == call["call_id"]]
    assert (cdr["disposition"], cdr["reason"], cdr["ended_by"]) == (
        "cancelled", "ended-by-admin", "admin:admin"
    )  # fmt: skip
