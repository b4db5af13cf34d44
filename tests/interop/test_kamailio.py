"""A real SIP server in front: Debian's Kamailio as a proxy between SIPp and `callgate serve
--sip-listen`. SIPp registers through it with digest (the challenge and the answer pass through
the proxy untouched, end to end), and the binding callgate keeps is the proxy's flow. This
server has no trunk: an emergency number gets a 503 that says so."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import WebServer, serve
from tests.integration.sip_client import SipClient, authorization, challenge_for
from tests.integration.test_cli import free_port

pytestmark = pytest.mark.interop

SCENARIO = Path(__file__).resolve().parent.parent / "integration/sipp/register.xml"
CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{proxy}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag() && loose_route()) {{ t_relay(); exit; }}
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if ($sp == {edge}) {{ t_relay(); exit; }}  # from callgate towards a phone
    $du = "sip:127.0.0.1:{edge}";
    t_relay();
}}
"""


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        message = f"{name} not found: install Debian's {package} (scripts/test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[WebServer, int, dict[str, str]]]:
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))

    port = free_port()
    listen = ("--sip-listen", f"127.0.0.1:{port}")
    algorithms = '["MD5", "SHA-256"]'  # SIPp answers the first challenge, MD5 only
    for web in serve(tmp_path, *listen, prepare=prepare, CALLGATE_SIP__ALGORITHMS=algorithms):
        yield web, port, device


def port_free(port: int) -> bool:
    """Whether UDP `port` on 127.0.0.1 can still be bound (nobody listens there yet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sipp_registers_through_kamailio(
    server: tuple[WebServer, int, dict[str, str]], tmp_path: Path
) -> None:
    kamailio = tool("kamailio", "kamailio")
    sipp = tool("sipp", "sip-tester")
    modules = next(iter(sorted(Path("/usr/lib").glob("*/kamailio/modules"))), None)
    assert modules is not None, "Kamailio's modules not found under /usr/lib/*/kamailio/modules"
    web, edge, device = server
    proxy = free_port()
    config = tmp_path / "kamailio.cfg"
    config.write_text(CONFIG.format(proxy=proxy, edge=edge, modules=modules))
    log = (tmp_path / "kamailio.log").open("w")
    proc = subprocess.Popen(
        [kamailio, "-f", str(config), "-DD", "-E", "-n", "1", "-P", str(tmp_path / "kam.pid")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Kamailio has no readiness signal: it is up once it holds its UDP port (waited for,
        # where a fixed 1 s sleep was luck on a loaded machine)
        deadline = time.monotonic() + 60
        while port_free(proxy):
            assert proc.poll() is None, (tmp_path / "kamailio.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "kamailio.log").read_text()
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "kamailio.log").read_text()
        done = subprocess.run(
            [sipp, f"127.0.0.1:{proxy}", "-sf", str(SCENARIO), "-s", "alice",
             "-au", device["username"], "-ap", device["password"], "-m", "1", "-t", "u1",
             "-i", "127.0.0.1", "-p", str(free_port()), "-timeout", "20s", "-nostdin"],
            capture_output=True, cwd=tmp_path, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (tmp_path / "kamailio.log").read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    # without a trunk an emergency number cannot be called: the phone is told so, precisely
    phone = SipClient(("127.0.0.1", edge))
    sos_uri = f"sip:112@127.0.0.1:{edge}"
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    headers = ["Content-Type: application/sdp"]
    first = phone.exchange(
        phone.request("INVITE", "sip:alice@callgate", headers, to=sos_uri, body=sdp)
    )
    phone.send(phone.request("ACK", "sip:alice@callgate", to=sos_uri, cseq=phone.cseq))
    auth = authorization(
        challenge_for(first, "MD5"), device["username"], device["password"], "INVITE", sos_uri
    )
    phone.send(
        phone.request("INVITE", "sip:alice@callgate", [auth, *headers], to=sos_uri, body=sdp)
    )
    statuses = [phone.receive()]
    while statuses[-1].status < 200:
        statuses.append(phone.receive())
    phone.close()
    assert statuses[-1].status == 503 and "emergency" in statuses[-1].reason, statuses[-1].reason

    # callgate's binding is the proxy's flow: the REGISTER reached it from Kamailio
    with web.client() as client:
        admin = {"Authorization": f"Bearer {web.token('admin')}"}
        entries = client.get(
            "/api/audit/entries", params={"action": "sip.register"}, headers=admin
        ).json()["items"]
    assert [e["details"]["address"] for e in entries] == [f"127.0.0.1:{proxy}"]
