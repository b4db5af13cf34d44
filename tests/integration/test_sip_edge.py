"""The SIP edge of `callgate serve --sip-listen` over real sockets: SIPp registers over UDP and TCP
(digest MD5), a phone registers with SHA-256 (RFC 8760) and is answered at the address and port
its packets came from (RFC 3581 rport, as behind NAT), replayed and wrong-realm credentials are
refused and audited, bad input gets its precise SIP error, and registered phones show in presence.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.sip.message import MAX_MESSAGE
from callgate.sip.via import parse_via
from tests.integration.serve_fixture import WebServer, serve
from tests.integration.sip_client import SipClient, authorization, challenge_for
from tests.integration.test_cli import callgate, free_port

SIPP_DIR = Path(__file__).parent / "sipp"


def needs(command: str, package: str) -> None:
    """Skip without `command`, except under CI, where scripts/test must have installed it."""
    if shutil.which(command) is None:
        message = f"{command} not found: install Debian's {package} (scripts/test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def sip_server(tmp_path: Path) -> Iterator[tuple[WebServer, int, dict[str, str]]]:
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))

    port = free_port()
    # MD5 offered first: SIPp answers only the first challenge and knows only MD5; the SHA-256
    # client below picks the second.
    listen = ("--sip-listen", f"127.0.0.1:{port}")
    algorithms = '["MD5", "SHA-256"]'
    for server in serve(tmp_path, *listen, prepare=prepare, CALLGATE_SIP__ALGORITHMS=algorithms):
        yield server, port, device


def sipp_register(port: int, device: dict[str, str], transport: str, cwd: Path) -> None:
    done = subprocess.run(
        ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "register.xml"), "-s", "alice",
         "-au", device["username"], "-ap", device["password"], "-m", "1", "-t", transport,
         "-i", "127.0.0.1", "-p", str(free_port()), "-timeout", "20s", "-nostdin",
         "-trace_err", "-error_file", str(cwd / f"sipp-{transport}.err")],
        capture_output=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_phones_register_with_digest_over_udp_and_tcp(
    sip_server: tuple[WebServer, int, dict[str, str]], tmp_path: Path
) -> None:
    needs("sipp", "sip-tester")
    server, port, device = sip_server
    user, password = device["username"], device["password"]
    aor = "sip:alice@callgate"

    # SIPp, a real SIP implementation, over UDP and over TCP (MD5)
    sipp_register(port, device, "u1", tmp_path)
    sipp_register(port, device, "t1", tmp_path)

    # A phone behind NAT: its Via names a private address; the answer comes back to the source
    # port with received/rport filled in (RFC 3581 §4), and it registers with SHA-256.
    phone = SipClient(("127.0.0.1", port))
    first = phone.exchange(phone.request("REGISTER", aor, via_host="10.1.2.3"))
    assert first.status == 401
    via = parse_via(first.headers.all("via")[0])
    assert via.params["received"] == "127.0.0.1"
    assert via.params["rport"] == str(phone.local[1])
    assert [
        c.split("algorithm=")[1].split(",")[0] for c in first.headers.all("www-authenticate")
    ] == [
        "MD5",
        "SHA-256",
    ]
    sha = challenge_for(first, "SHA-256")
    uri = f"sip:127.0.0.1:{port}"
    answer = authorization(sha, user, password, "REGISTER", uri)
    contact = f"Contact: <sip:alice@{phone.local[0]}:{phone.local[1]}>;expires=600"
    ok = phone.exchange(phone.request("REGISTER", aor, [answer, contact], via_host="10.1.2.3"))
    assert ok.status == 200, ok.reason
    assert any(f":{phone.local[1]}>;expires=" in c for c in ok.headers.all("contact"))

    # the same Authorization again (same nonce and nonce-count): a replay, challenged again
    replay = phone.exchange(phone.request("REGISTER", aor, [answer, contact]))
    assert replay.status == 401
    # the next nonce-count with the right password is fine; a wrong realm or password is not
    again = authorization(sha, user, password, "REGISTER", uri, nc=2)
    assert phone.exchange(phone.request("REGISTER", aor, [again, contact])).status == 200
    realm = authorization(sha, user, password, "REGISTER", uri, nc=3, realm="elsewhere")
    assert phone.exchange(phone.request("REGISTER", aor, [realm, contact])).status == 401
    # a device may bind only its own user's address-of-record
    bob = authorization(sha, user, password, "REGISTER", uri, nc=4)
    refused = phone.exchange(phone.request("REGISTER", "sip:bob@callgate", [bob, contact]))
    assert (refused.status, refused.reason) == (403, "Forbidden (not your address-of-record)")

    # over TCP with SHA-256 too
    desk = SipClient(("127.0.0.1", port), transport="TCP")
    challenge = challenge_for(desk.exchange(desk.request("REGISTER", aor)), "SHA-256")
    tcp_answer = authorization(challenge, user, password, "REGISTER", uri)
    tcp_contact = f"Contact: <sip:alice@127.0.0.1:{desk.local[1]};transport=tcp>"
    assert desk.exchange(desk.request("REGISTER", aor, [tcp_answer, tcp_contact])).status == 200

    # bad input: a precise error, and the server goes on
    torture = re.sub(rb"CSeq: (\d+) INVITE", rb"CSeq: \1 OPTIONS", phone.request("INVITE", aor))
    mismatch = phone.exchange(torture)
    assert (mismatch.status, mismatch.reason) == (400, "CSeq method does not match")
    big = phone.request("OPTIONS", aor, [f"X-Pad: {'a' * MAX_MESSAGE}"])
    assert phone.exchange(big).status == 513
    assert phone.exchange(phone.request("OPTIONS", aor)).status == 200
    unknown = phone.exchange(phone.request("SUBSCRIBE", aor))
    assert unknown.status == 405 and unknown.headers.get("allow")
    phone.close()
    desk.close()

    # presence: alice's phones count as online for her colleagues
    with server.client() as client:
        headers = {"Authorization": f"Bearer {server.token('bob')}"}
        users = client.get("/api/directory", headers=headers).json()["users"]
        assert {u["handle"]: u["presence"] for u in users}["alice"] == "online"
        # and every step is in the audit log
        admin = {"Authorization": f"Bearer {server.token('admin')}"}
        entries = client.get("/api/audit/entries", params={"limit": 500}, headers=admin).json()
    actions = [e["action"] for e in entries["items"] if e["action"].startswith("sip.")]
    assert actions.count("sip.register") >= 3  # SIPp UDP, SIPp TCP, the phone, the desk
    assert "sip.auth.replay" in actions and "sip.auth.failure" in actions
    assert "sip.credential.add" in actions
