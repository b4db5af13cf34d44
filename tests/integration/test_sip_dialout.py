"""Softphones dial numbers (docs/sip.md, "Dialling numbers"): `callgate call +44…` reaches a
carrier played by SIPp (Debian's sip-tester) on 127.0.0.2 through the trunk the dial plan picks,
with the number in that carrier's format, after answering the carrier's digest challenge with the
trunk's credentials (the password appears in no log); the carrier echoes the media, so the caller hears its
own tone through both legs of the bridge; the CDR says outbound, the number and the trunk. A
user the server does not let dial out is refused by the server (CDR `denied`), a number no
trunk takes is recorded as `no-route`, a policy rule on a number prefix refuses premium numbers
even to a trader while another rule lets traders call UK numbers for three seconds (the server
ends the call: `max-duration`), and an inbound rule screens a caller's prefix (403, CDR `policy-denied`). A trunk's call rate
refuses a second INVITE with 503 and Retry-After, counted in /metrics and audited once.

The server's recorder is broken (its directory lies under a file) and `calls.silence_timeout`
is 3 s: a carrier (SIPp's UAS on 127.0.0.5) that answers a number call and then sends no RTP
is gone, and the call ends `media-lost` (runtime/sip_quiet.py); and alice's desk phone dialling
a number a rule says must be recorded gets `503 (recording unavailable)`, CDR
`recording-unavailable`, and the carrier never hears of it (fail-closed before connect).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.client.audio import dominant_frequency
from callgate.sip.message import SipResponse
from tests.cli_process import COMMAND, clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve
from tests.integration.sip_client import SipClient
from tests.integration.test_cli import free_port
from tests.integration.test_sip_edge import client_get, needs, sip_invite

pytestmark = pytest.mark.timeout(240)  # five CLI processes, each seconds on a busy machine
SIPP_DIR = Path(__file__).parent / "sipp"
SECRET = "carrier-secret-7"
WORLD: dict[
    Path, int
] = {}  # per test: the "world" trunk's carrier port (127.0.0.3)  # the UK trunk's password at the carrier (sipp/carrier_auth.xml)
QUIET: dict[Path, int] = {}  # per test: the "quiet" trunk's carrier port (127.0.0.5)
PHONE: dict[Path, dict[str, str]] = {}  # per test: alice's desk phone's credential
SILENCE_TIMEOUT = 3  # s: calls.silence_timeout of this server


@pytest.fixture
def carrier_server(tmp_path: Path) -> Iterator[tuple[WebServer, int, int]]:
    needs("sipp", "sip-tester")

    def prepare(data: Path) -> None:
        for args in (("create", "traders"), ("add-member", "traders", "alice")):
            done = callgate("group", *args, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        for rule in (
            ("premium", "deny", "--to-number", "+44909", "--reason", "premium-rate numbers"),
            ("screen", "deny", "--from-number", "+1900", "--direction", "inbound"),
            # traders may call UK numbers, three seconds at most
            (
                "uk-traders",
                "allow",
                "--from-group",
                "traders",
                "--to-number",
                "+44",
                "--max-duration",
                "3",
            ),
        ):
            done = callgate("policy", "add", *rule, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        # calls from traders to German numbers must be recorded (the recorder is broken here)
        done = callgate("policy", "add", "record-de", "allow", "--from-group", "traders",
                        "--to-number", "+49", "--direction", "outbound", "--recording-required",
                        "--data-dir", str(data), cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        PHONE[tmp_path] = json.loads(added.stdout)

    carrier_port, sip_port, world_port = free_port(), free_port(), free_port()
    quiet_port = free_port()
    trunks = [
        # UK numbers go to this carrier, which wants them in national format
        {"name": "uk", "addresses": ["127.0.0.2"], "outbound": f"127.0.0.2:{carrier_port}",
         "dids": {"+442071234567": "bob"},
         "routes": ["+44"], "country_code": "44", "number_format": "national",
         "dial_out_groups": ["traders"], "caller_id": "+442071234500",
         "username": "callgate-trunk", "password": SECRET,
         "options_interval": 0},  # SIPp's scenario expects INVITEs only, no OPTIONS pings
        # North America to another carrier (SIPp's built-in UAS), which needs no digest; a
        # user may have one call at once on it, and one an hour
        {"name": "world", "addresses": ["127.0.0.3"], "outbound": f"127.0.0.3:{world_port}",
         "routes": ["+1"], "dial_out_groups": ["traders"], "max_calls_per_user": 1,
         "max_calls_per_user_hour": 1, "options_interval": 0},
        # inbound only, one new call every 20 s
        {"name": "slow", "addresses": ["127.0.0.4"], "dids": {"+442071234599": "bob"},
         "max_cps": 0.05},
        # France and Germany: a carrier that answers and then sends no RTP
        {"name": "quiet", "addresses": ["127.0.0.5"], "outbound": f"127.0.0.5:{quiet_port}",
         "routes": ["+33", "+49"], "dial_out_groups": ["traders"], "options_interval": 0},
    ]  # fmt: skip
    env = {
        "CALLGATE_SIP__TRUNKS": json.dumps(trunks),
        "CALLGATE_CALLS__SILENCE_TIMEOUT": str(SILENCE_TIMEOUT),
        # a recorder that cannot create a recording: the directory lies under a file
        "CALLGATE_RECORDING__DIRECTORY": str(tmp_path / "not-a-directory" / "recordings"),
        # alice's desk phone's SDP names its own address (docs/sip.md, "Media addresses")
        "CALLGATE_SIP__ALLOW_MEDIA": '["127.0.0.1/32"]',
    }
    (tmp_path / "not-a-directory").write_text("a file where the recordings should be\n")
    metrics = f"127.0.0.1:{free_port()}"
    # the carrier's media (127.0.0.2) opened the way the relay's tests open loopback peers:
    # without it the carrier's answer would be refused (docs/sip.md, "Media addresses")
    listen = ("--sip-listen", f"127.0.0.1:{sip_port}", "--metrics", metrics,
              "--allow-peer", "127.0.0.2/32", "--allow-peer", "127.0.0.3/32",
              "--allow-peer", "127.0.0.5/32")  # fmt: skip
    for server in serve(tmp_path, *listen, prepare=prepare, metrics_url=f"http://{metrics}/metrics",
                        **env):  # fmt: skip
        WORLD[tmp_path], QUIET[tmp_path] = world_port, quiet_port
        yield server, carrier_port, sip_port
        WORLD.pop(tmp_path), QUIET.pop(tmp_path), PHONE.pop(tmp_path)


def dial(server: WebServer, who: str, number: str, tmp_path: Path, *extra: str) -> Any:
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER=who, CALLGATE_PASSWORD=PASSWORDS[who],
        CALLGATE_CONFIG_DIR=str(tmp_path / f"cfg-{who}"),
    )  # fmt: skip
    return subprocess.Popen(
        [*COMMAND, "call", number, "--json", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def events(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, errors = proc.communicate(timeout=90)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines, errors
    return lines


def assert_digest_answer(traffic: str) -> None:
    """The second INVITE answers the 407 (RFC 7616 §3.4.1, computed here independently)."""
    found = re.search(r"Proxy-Authorization: Digest (.*)", traffic)
    assert found is not None, traffic[:3000]
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', found.group(1)))
    assert fields["username"] == "callgate-trunk" and fields["realm"] == "carrier.example"
    assert fields["qop"] == "auth" and fields["algorithm"] == "MD5"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"callgate-trunk:carrier.example:{SECRET}")
    ha2 = md5(f"INVITE:{fields['uri']}")
    expected = md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    assert fields["response"] == expected


def trunk_call(sip_port: int, source: str, caller_number: str, did: str) -> SipResponse:
    """A carrier at `source` INVITEs `did` from `caller_number`: the final response."""
    carrier = SipClient(("127.0.0.1", sip_port), bind=source)
    try:
        sdp = (
            b"v=0\r\no=- 3 3 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            b"m=audio 40000 RTP/AVP 0\r\n"
        )
        caller, did = f"sip:{caller_number}@carrier.example", f"sip:{did}@127.0.0.1:{sip_port}"
        headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
        reply = carrier.exchange(carrier.request("INVITE", caller, headers, to=did, body=sdp))
        while reply.status < 200:
            reply = carrier.receive()
        carrier.send(carrier.request("ACK", caller, to=did, cseq=carrier.cseq))
        return reply
    finally:
        carrier.close()


def admin_ends_a_number_call(server: WebServer, world_port: int, tmp_path: Path) -> None:
    """alice's CLI calls +1 212 555 0100 (no time limit) through the "world" trunk, answered by
    SIPp's built-in UAS: the call is in the admin API's live calls like any other, and an
    administrator ends it there: the carrier gets BYE, alice `ended-by-admin`, the CDR
    `ended_by` `admin:admin`, the audit log `call.end_by_admin`. The trunk lets a user have one
    call at once and one an hour: alice's second call while the first is up, and her third
    after it, are refused (`dial-out-limit`), recorded, counted and audited."""
    world = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.3", "-p", str(world_port), "-mi", "127.0.0.3",
         "-mp", str(free_port()), "-rtp_echo", "-m", "1", "-timeout", "60s", "-nostdin"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    caller = dial(server, "alice", "+1 212 555 0100", tmp_path, "--duration", "60")
    try:
        assert caller.stdout is not None
        said: list[dict[str, Any]] = []
        while not said or said[-1]["event"] != "connected":
            line = caller.stdout.readline()
            assert line, f"the call ended early: {said}"
            said.append(json.loads(line))
        # a second call while this one is up: past alice's share of the trunk
        second = events(dial(server, "alice", "+1 212 555 0101", tmp_path))
        assert (second[-1]["event"], second[-1]["reason"]) == ("ended", "dial-out-limit"), second
        live = client_get(server, "/api/live-calls", "admin")["calls"]
        (call,) = [c for c in live if c["callee"] == "+12125550100"]
        assert (call["caller"], call["state"], call["trunk"]) == ("alice", "connected", "world")
        assert call["answered_at"] is not None and call["media_path"] == "relay/rtp"
        with server.client() as client:
            admin = {"Authorization": f"Bearer {server.token('admin')}"}
            done = client.post(f"/api/live-calls/{call['call_id']}/end", headers=admin)
        assert done.status_code == 202, done.text
        rest = events(caller)
        assert (rest[-1]["event"], rest[-1]["reason"]) == ("ended", "ended-by-admin"), rest
        world.wait(timeout=30)  # the UAS scenario ends with our BYE, answered
        assert world.returncode == 0, world.communicate()
    finally:
        for proc in (world, caller):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    # and after it: her one call this hour is used
    third = events(dial(server, "alice", "+1 212 555 0102", tmp_path))
    assert (third[-1]["event"], third[-1]["reason"]) == ("ended", "dial-out-limit"), third
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    for number in ("+12125550101", "+12125550102"):
        (limited,) = [c for c in cdrs if c["callee_user"] == number]
        assert (limited["disposition"], limited["reason"]) == ("denied", "dial-out-limit")
    (cdr,) = [c for c in cdrs if c["callee_user"] == "+12125550100"]
    assert (cdr["reason"], cdr["ended_by"], cdr["disposition"]) == (
        "ended-by-admin", "admin:admin", "answered"
    )  # fmt: skip
    entries = client_get(server, "/api/audit/entries?limit=200", "admin")["items"]
    (ended,) = [e for e in entries if e["action"] == "call.end_by_admin"]
    assert (ended["actor"], ended["object"]) == ("admin", f"call:{call['call_id']}")
    attempts = {e["details"]["number"] for e in entries if e["action"] == "sip.dialout"}
    assert {"+12125550100", "+12125550101", "+12125550102"} <= attempts  # each audited
    # one alert for the run of refusals (no call got through between them)
    (alert,) = [e for e in entries if e["action"] == "sip.dialout.limit"]
    assert (alert["actor"], alert["details"]["limit"]) == ("alice", "user-calls")
    live = client_get(server, "/api/live-calls", "admin")["calls"]
    assert not live, live


def silent_carrier_and_unrecordable_call(server: WebServer, sip_port: int, tmp_path: Path) -> None:
    """The carrier on 127.0.0.5 (SIPp's UAS, no RTP) answers alice's call to a French number
    and then stays silent: after `calls.silence_timeout` the server ends the call `media-lost`
    (BYE to the carrier, `call.ended` to the CLI, CDR). Before that, alice's desk phone dials
    a German number, which a rule says must be recorded; the recorder cannot create the
    recording, so the phone gets 503 and the carrier is never called."""
    messages = tmp_path / "quiet-messages.log"
    quiet = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.5", "-p", str(QUIET[tmp_path]), "-mi", "127.0.0.5",
         "-mp", str(free_port()), "-m", "1", "-timeout", "60s", "-nostdin",
         "-trace_msg", "-message_file", str(messages)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        device = PHONE[tmp_path]
        phone, statuses, final = sip_invite(
            sip_port, device["username"], device["password"], free_port(), callee="+49301234567"
        )
        phone.send(phone.request("ACK", "sip:alice@callgate", to=f"sip:+49301234567@127.0.0.1:"
                                 f"{sip_port}", cseq=phone.cseq))  # fmt: skip
        phone.close()
        assert (final.status, final.reason) == (503, "Service Unavailable (recording unavailable)")
        assert 180 not in statuses, statuses
        said = events(dial(server, "alice", "+33 1 23 45 67 89", tmp_path, "--tone", "880",
                           "--duration", "60"))  # fmt: skip
        kinds = [e["event"] for e in said]
        assert "connected" in kinds, said
        assert (said[-1]["event"], said[-1]["reason"]) == ("ended", "media-lost"), said
        assert said[-1]["ended_by"] == "server", said
        quiet.wait(timeout=30)  # its scenario ends with our BYE, answered
        assert quiet.returncode == 0, quiet.communicate()
    finally:
        if quiet.poll() is None:
            quiet.kill()
        quiet.communicate()
    traffic = messages.read_text(errors="replace")
    assert "INVITE sip:+33123456789@127.0.0.5" in traffic, traffic[:2000]
    assert "4930" not in traffic  # the unrecordable call never reached the carrier
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    (lost,) = [c for c in cdrs if c["callee_user"] == "+33123456789"]
    assert (lost["disposition"], lost["reason"], lost["ended_by"]) == (
        "answered", "media-lost", "server"
    ), lost  # fmt: skip
    (unrecorded,) = [c for c in cdrs if c["callee_user"] == "+49301234567"]
    assert (unrecorded["disposition"], unrecorded["reason"], unrecorded["answer_at"]) == (
        "failed", "recording-unavailable", None
    ), unrecorded  # fmt: skip
    assert unrecorded["recording_required"], unrecorded


def test_cli_dials_a_number_through_the_dial_plan(
    carrier_server: tuple[WebServer, int, int], tmp_path: Path
) -> None:
    server, carrier_port, sip_port = carrier_server
    messages = tmp_path / "carrier-messages.log"
    carrier = subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "carrier_auth.xml"), "-i", "127.0.0.2", "-p", str(carrier_port), "-mi", "127.0.0.2",
         "-mp", str(free_port()), "-rtp_echo", "-m", "1", "-timeout", "90s", "-nostdin",
         "-trace_msg", "-message_file", str(messages)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # bob is in no group allowed to dial out: the server refuses, the carrier never hears
        refused = events(dial(server, "bob", "+44 20 7946 0001", tmp_path))
        assert refused[-1]["event"] == "ended" and refused[-1]["reason"] == "policy-denied"
        nowhere = events(dial(server, "alice", "tel:123", tmp_path))
        assert nowhere[-1]["reason"] == "no-route", nowhere
        premium = events(dial(server, "alice", "tel:0909 879 0000", tmp_path))  # national
        assert premium[-1]["reason"] == "policy-denied", premium
        # inbound screening: +1 900… calling bob's DID through the UK trunk
        screened = trunk_call(sip_port, "127.0.0.2", "+19005550100", "+442071234567")
        assert (screened.status, screened.reason) == (403, "Forbidden")
        # the slow trunk takes one call (bob is offline: 480), the next is too soon
        first = trunk_call(sip_port, "127.0.0.4", "+442071110000", "+442071234599")
        assert first.status == 480
        second = trunk_call(sip_port, "127.0.0.4", "+442071110001", "+442071234599")
        assert (second.status, second.headers.get("retry-after")) == (503, "1"), second.reason

        recording = tmp_path / "alice-hears.wav"
        caller = dial(server, "alice", "+44 20 7946 0000", tmp_path,
                      "--tone", "880", "--duration", "30", "--record", str(recording))  # fmt: skip
        said = events(caller)
        kinds = [e["event"] for e in said]
        assert "ringing" in kinds and "connected" in kinds, said
        # the allowing rule's max_duration_s, not the caller, ended it
        assert said[-1]["event"] == "ended" and said[-1]["reason"] == "max-duration", said
        assert said[-1]["ended_by"] == "server"
        # the carrier echoed alice's tone: it crossed the bridge both ways
        assert abs(dominant_frequency(recording) - 880.0) < 5.0
        carrier.wait(timeout=30)
        assert carrier.returncode == 0, carrier.communicate()
        admin_ends_a_number_call(server, WORLD[tmp_path], tmp_path)
        silent_carrier_and_unrecordable_call(server, sip_port, tmp_path)
    finally:
        if carrier.poll() is None:
            carrier.kill()
        carrier.communicate()
    traffic = messages.read_text(errors="replace")
    # the dial plan chose the UK trunk, which wants the national format, from our caller ID
    assert "INVITE sip:02079460000@127.0.0.2:" in traffic, traffic[:2000]
    assert "<sip:+442071234500@" in traffic
    assert_digest_answer(traffic)
    assert SECRET not in traffic and SECRET not in server.log_path.read_text()

    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    (answered,) = [c for c in cdrs if c["callee_user"] == "+442079460000"]
    assert answered["direction"] == "outbound" and answered["caller_user"] == "alice"
    assert answered["policy_rule"] == "3:uk-traders" and answered["disposition"] == "answered"
    assert answered["answer_at"] and answered["reason"] == "max-duration"
    assert answered["encryption"] == "rtp"  # a plain RTP trunk (SIPp's carrier)
    (denied,) = [c for c in cdrs if c["callee_user"] == "+442079460001"]
    assert denied["caller_user"] == "bob" and denied["disposition"] == "denied"
    assert denied["policy_decision"] == "deny" and denied["reason"] == "policy-denied"
    (lost,) = [c for c in cdrs if c["callee_user"] == "tel:123"]
    assert lost["disposition"] == "failed" and lost["reason"] == "no-route"
    (premium_cdr,) = [c for c in cdrs if c["callee_user"] == "+449098790000"]
    assert premium_cdr["policy_rule"] == "1:premium" and premium_cdr["disposition"] == "denied"
    (screened_cdr,) = [c for c in cdrs if c["caller_user"] == "+19005550100"]
    assert screened_cdr["direction"] == "inbound" and screened_cdr["reason"] == "policy-denied"
    assert screened_cdr["policy_rule"] == "2:screen"
    (too_soon,) = [c for c in cdrs if c["caller_user"] == "sip:+442071110001@127.0.0.4"]
    assert too_soon["reason"] == "sip 503"
    entries = client_get(server, "/api/audit/entries?limit=200", "admin")["items"]
    dialouts = [e for e in entries if e["action"] == "sip.dialout"]
    assert {e["actor"] for e in dialouts} == {"alice", "bob"}
    (alert,) = [e for e in entries if e["action"] == "sip.trunk.limit"]
    assert alert["object"] == "trunk:slow" and alert["details"]["limit"] == "rate"
    assert server.metrics_url is not None
    with urllib.request.urlopen(server.metrics_url, timeout=30) as reply:
        metrics = reply.read().decode()
    assert 'callgate_sip_trunk_refused_total{limit="rate",trunk="slow"} 1.0' in metrics
    assert 'callgate_sip_trunk_attempts_total{direction="outbound",trunk="uk"} 1.0' in metrics
    assert 'callgate_sip_trunk_calls{trunk="uk"} 0.0' in metrics
    # the console's Trunks page reads this: state and counts, never the password
    trunks = {t["name"]: t for t in client_get(server, "/api/trunks", "admin")["trunks"]}
    assert trunks["slow"]["state"] == "refusing" and trunks["slow"]["refused"]["rate"] == 1
    uk = trunks["uk"]
    assert uk["state"] == "idle" and uk["attempts"]["outbound"] == 1
    assert uk["carrier_auth"] == {"username": "callgate-trunk"} and uk["routes"] == ["+44"]
    assert SECRET not in json.dumps(trunks)
    with server.client() as client:
        token = server.token("alice")
        refused_view = client.get("/api/trunks", headers={"Authorization": f"Bearer {token}"})
    assert refused_view.status_code == 403
