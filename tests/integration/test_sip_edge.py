"""The SIP edge of `callgate serve --sip-listen` over real sockets: SIPp registers over UDP and TCP
(digest MD5), a phone registers with SHA-256 (RFC 8760) and is answered at the address and port
its packets came from (RFC 3581 rport, as behind NAT), replayed and wrong-realm credentials are
refused and audited, bad input gets its precise SIP error, and registered phones show in presence.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pylibsrtp
import pytest
from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket

from callgate.client.audio import dominant_frequency
from callgate.media.rtp_leg import G722, PCMU, RtpPacket, build_rtp, parse_rtp
from callgate.sip.message import MAX_MESSAGE, SipRequest, SipResponse, serialize
from callgate.sip.responses import response
from callgate.sip.sdp import parse_audio
from callgate.sip.via import parse_via
from callgate.tls_local import ensure_local_tls
from tests.cli_process import COMMAND, clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve
from tests.integration.sip_client import (
    G722Tone,
    SipClient,
    authorization,
    challenge_for,
    dominant_hz,
    g722_decode,
    tone_ulaw,
    ulaw_decode,
)
from tests.integration.test_cli import free_port

SIPP_DIR = Path(__file__).parent / "sipp"


def needs(command: str, package: str) -> None:
    """Skip without `command`, except under CI, where scripts/test must have installed it."""
    if shutil.which(command) is None:
        message = f"{command} not found: install Debian's {package} (scripts/test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


CARRIERS: dict[Path, SipClient] = {}  # per test: the carrier's SIP socket, 127.0.0.2


@pytest.fixture
def sip_server(tmp_path: Path) -> Iterator[tuple[WebServer, int, dict[str, str]]]:
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=tmp_path)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))
        # bob's desk phone must be called with SRTP (srtp_phone_called)
        bob = callgate("sip", "add", "bob", "desk", "--srtp", "--data-dir", str(data), "--json",
                       cwd=tmp_path)  # fmt: skip
        assert bob.returncode == 0, bob.stderr
        device["bob_password"] = json.loads(bob.stdout)["password"]
        for args in (("create", "traders"), ("add-member", "traders", "alice"),
                     ("create", "desk"), ("add-member", "desk", "alice"),
                     ("add-member", "desk", "bob")):  # fmt: skip
            done = callgate("group", *args, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr

    port, tls_port = free_port(), free_port()
    pki = ensure_local_tls(tmp_path / "pki", ["127.0.0.1"])
    device.update(ca=str(pki.ca_cert), tls_port=str(tls_port))
    # MD5 offered first: SIPp answers only the first challenge and knows only MD5; the SHA-256
    # client below picks the second.
    metrics = free_port()
    device["metrics"] = f"http://127.0.0.1:{metrics}/metrics"
    listen = ("--sip-listen", f"127.0.0.1:{port}", "--sip-tls-listen", f"127.0.0.1:{tls_port}",
              "--cert", str(pki.cert), "--key", str(pki.key), "--metrics", f"127.0.0.1:{metrics}")  # fmt: skip
    algorithms = '["MD5", "SHA-256"]'
    # a carrier's trunk: INVITEs from 127.0.0.2 need no digest; one DID rings bob
    carrier = CARRIERS[tmp_path] = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    trunks = json.dumps([{"name": "carrier", "addresses": ["127.0.0.2"],
                          "dids": {"+15551230000": "bob", "+15551230001": "alice"},
                          "did_groups": {"+15551230002": "desk"},  # rings alice and bob
                          "outbound": f"127.0.0.2:{carrier.local[1]}",
                          "dial_out_groups": ["traders"], "caller_id": "+15551230000",
                          # the test's carrier is a script that answers no OPTIONS pings
                          "options_interval": 0}])  # fmt: skip
    # media may go to the test phones (127.0.0.1) and the carrier (127.0.0.2) only: the rest of
    # loopback stays refused, as every internal range is by default (docs/sip.md)
    env = {"CALLGATE_SIP__ALGORITHMS": algorithms, "CALLGATE_SIP__TRUNKS": trunks,
           "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32, 127.0.0.2/32",
           # "desk" (alice, bob) is at the limit: a third member makes its DID refuse calls
           "CALLGATE_SIP__RING_GROUP_MAX_MEMBERS": "2",
           # one recorded call at a time: a second one fails closed (recorded_dial_out)
           "CALLGATE_RECORDING__MAX_ACTIVE": "1",
           # recorded calls start with the beeps, which SIP parties hear too (in G.711)
           "CALLGATE_RECORDING__PROMPT": "true"}  # fmt: skip
    try:
        for server in serve(tmp_path, *listen, prepare=prepare, **env):
            yield server, port, device
    finally:
        CARRIERS.pop(tmp_path).close()


def sipp_register(port: int, device: dict[str, str], transport: str, cwd: Path) -> None:
    done = subprocess.run(
        ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "register.xml"), "-s", "alice",
         "-au", device["username"], "-ap", device["password"], "-m", "1", "-t", transport,
         "-i", "127.0.0.1", "-p", str(free_port()), "-timeout", "20s", "-nostdin",
         "-trace_err", "-error_file", str(cwd / f"sipp-{transport}.err")],
        capture_output=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.timeout(360)  # one server for every scenario below, on a busy machine
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

    # and over TLS (RFC 3261 §26.2.1), the server's certificate verified
    tls = SipClient(("127.0.0.1", int(device["tls_port"])), transport="TLS", ca=device["ca"])
    tls_uri = f"sip:127.0.0.1:{device['tls_port']}"
    challenge = challenge_for(tls.exchange(tls.request("REGISTER", aor)), "SHA-256")
    tls_answer = authorization(challenge, user, password, "REGISTER", tls_uri)
    tls_contact = f"Contact: <sips:alice@127.0.0.1:{tls.local[1]}>"
    assert tls.exchange(tls.request("REGISTER", aor, [tls_answer, tls_contact])).status == 200
    # and unregisters (Expires 0): its binding is gone from the answer (RFC 3261 §10.3 step 7)
    bye_answer = authorization(challenge, user, password, "REGISTER", tls_uri, nc=2)
    gone = tls.exchange(tls.request("REGISTER", aor, [bye_answer, tls_contact, "Expires: 0"]))
    assert gone.status == 200
    assert not any(f":{tls.local[1]}>" in c for c in gone.headers.all("contact"))
    tls.close()

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

    # alice's phone calls bob, who answers with the CLI softphone (aiortc, WebRTC): 180, 200
    # with our SDP, tones both ways through the media anchor (G.711, no transcoding), BYE
    call_phone_to_cli(server, port, user, password, tmp_path, device["bob_password"])
    # and the other way: bob's CLI calls alice, whose registered phone rings and answers; bob's
    # CLI offers Opus alone (`--codec opus`), the phone G.711 alone: the anchor transcodes
    call_cli_to_phone(server, port, user, password, tmp_path)
    # a call from the phone network: the carrier's trunk INVITEs bob's DID
    # and a DID that rings a group (ring all): alice's phone and bob's CLI ring, bob answers
    call_trunk_to_cli(server, port, tmp_path, (user, password))
    # and to it: alice (in "traders", the trunk's dial-out group) dials a number; bob may not
    dial_out(server, port, user, password, device["bob_password"], CARRIERS[tmp_path])
    # recorded calls to alice, whose only device is now her desk phone: from the phone network
    # and from bob's CLI softphone, both recorded through the anchor in G.711
    recorded_calls_to_phone(server, port, user, password, tmp_path)
    # and recorded calls to numbers: alice's phone and her CLI softphone dial out
    recorded_dial_out(server, port, user, password, tmp_path, CARRIERS[tmp_path])

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
    assert "sip.register.closed" in actions  # the TCP desk hung up its connection
    assert "sip.unregister" in actions  # the TLS client's Expires: 0
    assert "sip.credential.add" in actions
    # the re-offer, the two offers into forbidden ranges, the offer aimed at another host
    assert actions.count("sip.media.forbidden") == 4
    assert actions.count("sip.dialog.forged") == 2  # the re-INVITE and the BYE
    # and counted for the operator (--metrics)
    with urllib.request.urlopen(device["metrics"], timeout=30) as answer:
        text = answer.read().decode()
    values = dict(re.findall(r'^(callgate_sip_[a-z_]+(?:\{status="\d+"\})?) (\S+)$', text, re.M))
    assert float(values["callgate_sip_messages_malformed_total"]) >= 2  # the 400 and the 513
    assert float(values['callgate_sip_responses_total{status="401"}']) >= 1
    assert float(values['callgate_sip_responses_total{status="405"}']) == 1
    assert float(values["callgate_sip_calls"]) == 0
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    edge_refused = {c["callee_user"]: c for c in cdrs if c["caller_user"] == "sip:alice@127.0.0.1"}
    assert (edge_refused["bob"]["reason"], edge_refused["bob"]["direction"]) == (
        "sip 488",
        "inbound",
    )
    assert edge_refused["bob"]["audit_index"] is not None
    (pstn,) = [c for c in cdrs if c["caller_user"] == "+442071234567"]
    assert (pstn["callee_user"], pstn["direction"]) == ("bob", "inbound")
    assert pstn["caller_user_agent"] == "sip-trunk:carrier" and pstn["reason"] == "hangup"
    # the group's DID: one CDR, its callee the member who answered
    (grouped,) = [c for c in cdrs if c["caller_user"] == "+442071234577"]
    assert (grouped["callee_user"], grouped["direction"]) == ("bob", "inbound")
    assert grouped["answer_at"] is not None and grouped["reason"] == "hangup"
    trail = client_get(server, f"/api/audit/entries?object=call:{grouped['call_id']}", "admin")
    answered = [e["actor"] for e in trail["items"] if e["action"] == "call.answered"]
    assert answered == ["bob"], trail
    (trunk,) = client_get(server, "/api/trunks", "admin")["trunks"]
    assert trunk["ring_groups"] == ["desk"] and trunk["dids"] == 2
    no_did = [c for c in cdrs if c["callee_user"] == "+15559999999"]
    assert [c["reason"] for c in no_did] == ["sip 404"]
    (dialled,) = [
        c for c in cdrs if c["callee_user"] == "+442079460000" and c["direction"] == "outbound"
    ]
    assert (dialled["caller_user"], dialled["direction"]) == ("alice", "outbound")
    assert dialled["answer_at"] is not None and dialled["reason"] == "ended-by-admin"
    assert dialled["ended_by"] == "admin:admin"
    (by_admin,) = [e for e in entries["items"] if e["action"] == "call.end_by_admin"]
    assert (by_admin["actor"], by_admin["object"]) == ("admin", f"call:{dialled['call_id']}")
    (sos,) = [c for c in cdrs if c["callee_user"] == "112" and c["direction"] == "outbound"]
    assert sos["policy_decision"] == "emergency" and sos["caller_user"] == "bob"
    no_rule = [c for c in cdrs if c["callee_user"] == "+442079460000" and c is not dialled]
    assert [c["reason"] for c in no_rule] == ["sip 403"]
    (held,) = [c for c in cdrs if c["callee_user"] == "nobody"]  # c=0.0.0.0 got to the hub
    assert held["reason"] == "unknown-user", held
    recorded, keyed, talked = sorted(
        (c for c in cdrs if c["caller_user"] == "alice" and c["callee_user"] == "bob"
         and c["direction"] != "outbound"),
        key=by_invite,
    )[::-1]  # fmt: skip
    assert (talked["callee_user"], talked["caller_user_agent"]) == ("bob", "sip")
    assert talked["answer_at"] is not None and talked["reason"] == "hangup"
    assert keyed["answer_at"] is not None and keyed["reason"] == "hangup"  # SIPp's DTMF
    assert recorded["answer_at"] is not None and recorded["reason"] == "hangup"

    # bob's desk phone, whose credential says SRTP, is called from the phone network
    srtp_phone_called(port, device["bob_password"], CARRIERS[tmp_path])


def srtp_phone_called(port: int, bob_password: str, carrier: SipClient) -> None:
    """bob's desk phone registers; its credential (`sip add --srtp`) says it must be called with
    SRTP. The carrier calls bob's DID (plain RTP): the phone's INVITE offers RTP/SAVP with our
    SDES key (RFC 4568), the phone answers with its own, and each side hears the other: the
    carrier in plain PCMU, the phone in SRTP that only its keys open."""
    phone = SipClient(("127.0.0.1", port))
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    carrier_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_rtp.bind(("127.0.0.2", 0))
    carrier_rtp.setblocking(False)
    try:
        aor, uri = "sip:bob@callgate", f"sip:127.0.0.1:{port}"
        contact = f"Contact: <sip:bob@127.0.0.1:{phone.local[1]}>;expires=600"
        challenge = challenge_for(phone.exchange(phone.request("REGISTER", aor)), "SHA-256")
        auth = authorization(challenge, "bob.desk", bob_password, "REGISTER", uri)
        assert phone.exchange(phone.request("REGISTER", aor, [auth, contact])).status == 200
        sdp = (
            "v=0\r\no=- 6 6 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            f"m=audio {carrier_rtp.getsockname()[1]} RTP/AVP 0\r\n"
        ).encode()
        caller, did = "sip:+442071234511@carrier.example", f"sip:+15551230000@127.0.0.1:{port}"
        headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
        carrier.call_id += "-srtp"
        carrier.send(carrier.request("INVITE", caller, headers, to=did, body=sdp))
        phone.sock.settimeout(60)
        invite = next_request(phone, "INVITE")
        offer = parse_audio(invite.body)
        assert "RTP/SAVP" in invite.body.decode() and offer.crypto is not None, invite.body
        key = bytes(range(100, 130))
        answer = (
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/SAVP 0\r\n"
            f"a=crypto:{offer.crypto.tag} AES_CM_128_HMAC_SHA1_80 "
            f"inline:{base64.b64encode(key).decode()}\r\n"
        ).encode()
        phone.answer(invite, answer, "sec1", "bob")
        carrier.sock.settimeout(60)
        statuses, reply = carrier.until_final()
        assert statuses[-1] == 200, statuses
        ours = re.search(r"m=audio (\d+) RTP/AVP 0\r\n", reply.body.decode())
        assert ours is not None, reply.body
        to = f"To: {reply.headers.get('to')}".encode()
        carrier.send(
            carrier.request("ACK", caller, to=did, cseq=carrier.cseq).replace(
                f"To: <{did}>".encode(), to
            )
        )
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        out = pylibsrtp.Session(
            pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile)
        )
        into = pylibsrtp.Session(
            pylibsrtp.Policy(offer.crypto.key_salt, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, profile)
        )
        at_server = ("127.0.0.1", offer.port)
        at_carrier = ("127.0.0.1", int(ours.group(1)))
        heard_by_phone, heard_by_carrier, plain = bytearray(), bytearray(), 0
        deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
        while n < 100 or (
            min(len(heard_by_phone), len(heard_by_carrier)) <= 8000 and time.monotonic() < deadline
        ):
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x6161, tone_ulaw(880.0, n * 160))
            rtp.sendto(out.protect(build_rtp(packet)), at_server)
            carrier_rtp.sendto(
                build_rtp(RtpPacket(PCMU, n == 0, n, n * 160, 0x6262, tone_ulaw(440.0, n * 160))),
                at_carrier,
            )
            with contextlib.suppress(BlockingIOError):
                while True:
                    wire = rtp.recv(2048)
                    plain += wire[12:] == tone_ulaw(440.0, 0)  # never in the clear
                    heard_by_phone += parse_rtp(into.unprotect(wire)).payload
            heard_by_carrier += b"".join(p for _, p in received_rtp(carrier_rtp))
            time.sleep(0.02)
            n += 1
        assert plain == 0
        assert abs(dominant_hz(ulaw_decode(bytes(heard_by_phone[-8000:]))) - 440.0) < 10.0
        assert abs(dominant_hz(ulaw_decode(bytes(heard_by_carrier[-8000:]))) - 880.0) < 10.0
        bye = carrier.request("BYE", caller, to=did).replace(f"To: <{did}>".encode(), to)
        assert carrier.exchange(bye).status == 200
        deadline = time.monotonic() + 30
        phone.sock.setblocking(False)
        while "BYE" not in phone_requests(phone) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        phone.close()
        rtp.close()
        carrier_rtp.close()


def by_invite(cdr: dict[str, Any]) -> str:
    return str(cdr["invite_at"])


def client_get(server: WebServer, path: str, who: str) -> Any:
    with server.client() as client:
        answer = client.get(path, headers={"Authorization": f"Bearer {server.token(who)}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def phone_sdp(
    rtp_port: int,
    profile: str = "RTP/AVP",
    key: bytes | None = None,
    direction: str = "",
    address: str = "127.0.0.1",
) -> bytes:
    sdp = (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} {profile} 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    if key is not None:  # SDES (RFC 4568)
        sdp += f"a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}\r\n".encode()
    if direction:  # RFC 3264 §8.4: hold is a=sendonly or a=inactive
        sdp = sdp.replace(b"o=- 1 1", b"o=- 1 2") + f"a={direction}\r\n".encode()
    return sdp


def reinvite(
    phone: SipClient, ok: SipResponse, port: int, user: str, password: str, sdp: bytes
) -> SipResponse:
    """A re-INVITE in the dialog `ok` made, digest answered, its 200 acknowledged."""
    aor, bob_uri = "sip:alice@callgate", f"sip:bob@127.0.0.1:{port}"
    headers = [f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>", "Content-Type: application/sdp"]

    def dialog(request: bytes) -> bytes:
        return request.replace(f"To: <{bob_uri}>".encode(), f"To: {ok.headers.get('to')}".encode())

    reply = phone.exchange(dialog(phone.request("INVITE", aor, headers, to=bob_uri, body=sdp)))
    if reply.status == 401:
        phone.send(dialog(phone.request("ACK", aor, to=bob_uri, cseq=phone.cseq)))
        auth = authorization(challenge_for(reply, "SHA-256"), user, password, "INVITE", bob_uri)
        invite = phone.request("INVITE", aor, [auth, *headers], to=bob_uri, body=sdp)
        reply = phone.exchange(dialog(invite))
    while reply.status < 200:
        reply = phone.receive()
    if reply.status == 200:
        phone.send(dialog(phone.request("ACK", aor, to=bob_uri, cseq=phone.cseq)))
    return reply


def sip_invite(
    port: int,
    user: str,
    password: str,
    rtp_port: int,
    profile: str = "RTP/AVP",
    callee: str = "bob",
    key: bytes | None = None,
    address: str = "127.0.0.1",
) -> tuple[SipClient, list[int], SipResponse]:
    """alice's phone INVITEs bob, answers the digest challenge, and reads responses up to the
    final one; its SDP names `address`."""
    phone = SipClient(("127.0.0.1", port))
    sdp = phone_sdp(rtp_port, profile, key, address=address)
    aor, bob_uri = "sip:alice@callgate", f"sip:{callee}@127.0.0.1:{port}"
    headers = [f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>", "Content-Type: application/sdp",
               "Record-Route: <sip:127.0.0.9;lr>, <sip:127.0.0.8;lr>"]  # fmt: skip
    first = phone.exchange(phone.request("INVITE", aor, headers, to=bob_uri, body=sdp))
    assert first.status == 401
    phone.send(phone.request("ACK", aor, to=bob_uri, cseq=phone.cseq))
    auth = authorization(challenge_for(first, "SHA-256"), user, password, "INVITE", bob_uri)
    phone.send(phone.request("INVITE", aor, [auth, *headers], to=bob_uri, body=sdp))
    statuses, reply = phone.until_final()
    return phone, statuses, reply


def in_dialog(phone: SipClient, method: str, final: SipResponse, port: int) -> bytes:
    """ACK or BYE in the dialog `final` (the 200 OK) set up: its To carries our peer's tag."""
    bob_uri = f"sip:bob@127.0.0.1:{port}"
    cseq = phone.cseq if method == "ACK" else None
    request = phone.request(method, "sip:alice@callgate", to=bob_uri, cseq=cseq)
    return request.replace(f"To: <{bob_uri}>".encode(), f"To: {final.headers.get('to')}".encode())


def signed_bye(
    phone: SipClient, final: SipResponse, port: int, user: str, password: str
) -> SipResponse:
    """alice's BYE in the dialog `final` set up: the edge challenges it (RFC 3261 §22) and the
    phone answers with its digest credential; the final response to the signed one."""
    challenge = phone.exchange(in_dialog(phone, "BYE", final, port))
    assert challenge.status == 401, challenge.status
    auth = authorization(
        challenge_for(challenge, "SHA-256"), user, password, "BYE", f"sip:bob@127.0.0.1:{port}"
    )
    bye = in_dialog(phone, "BYE", final, port)
    return phone.exchange(
        bye.replace(b"Max-Forwards: 70\r\n", f"{auth}\r\nMax-Forwards: 70\r\n".encode())
    )


def read_events(bob: subprocess.Popen[str], until: str) -> list[dict[str, Any]]:
    assert bob.stdout is not None
    events: list[dict[str, Any]] = []
    while not events or events[-1]["event"] != until:
        line = bob.stdout.readline()
        assert line, f"bob's CLI ended early: {events}"
        events.append(json.loads(line))
    return events


def call_phone_to_cli(
    server: WebServer, port: int, user: str, password: str, tmp_path: Path, bob_password: str
) -> None:
    """A call from the phone with SRTP (SDES keys), answered by bob's CLI softphone, which takes
    Opus alone (`--codec opus`: every call here is transcoded); then, once a policy rule says
    alice's calls to bob must be recorded, a second call (plain RTP) is recorded like any
    recorded call, the phone's side in PCMU and bob's in Opus: bob rings only once the recorder holds the
    phone's side (silence until its RTP flows), each hears the other, and the exported bundle
    has the phone's tone left, bob's right, and passes `callgate recording verify`."""
    recording = tmp_path / "bob.wav"
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
    )  # fmt: skip
    bob = subprocess.Popen(
        # bob's CLI takes Opus alone: each call from the phone is transcoded (G.711 <-> Opus)
        [*COMMAND, "answer", "--tone", "880", "--record", str(recording), "--json",
         "--count", "3", "--codec", "opus"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rtp, rtcp = rtp_pair()  # the phone's RTCP on its RTP port + 1 (RFC 3550 §11)
    try:
        assert read_events(bob, "ready")
        key = bytes(range(30))
        phone, statuses, ok = sip_invite(
            port, user, password, rtp.getsockname()[1], "RTP/SAVP", key=key
        )
        assert statuses[0] == 100 and 180 in statuses and statuses[-1] == 200, statuses
        # the proxies that recorded the route stay in the dialog (RFC 3261 §12.1.1)
        assert ok.headers.all("record-route") == ["<sip:127.0.0.9;lr>", "<sip:127.0.0.8;lr>"]
        offer = ok.body.decode()
        media = re.search(r"m=audio (\d+) RTP/SAVP 0 101\r\n", offer)
        assert media is not None and "c=IN IP4 127.0.0.1" in offer, offer
        theirs = parse_audio(ok.body).crypto
        assert theirs is not None and theirs.tag == 7 and theirs.key_salt != key
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        outbound = pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile)
        inbound = pylibsrtp.Policy(theirs.key_salt, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, profile)
        srtp_out, srtp_in = pylibsrtp.Session(outbound), pylibsrtp.Session(inbound)
        phone.send(in_dialog(phone, "ACK", ok, port))
        # 440 Hz to bob for 3 s and on until more than a second of bob's 880 Hz came back (an
        # outcome: on a loaded machine bob's softphone may start sending late)
        target = ("127.0.0.1", int(media.group(1)))
        heard = bytearray()
        deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
        while n < 150 or (len(heard) <= 8000 and time.monotonic() < deadline):
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x5150, tone_ulaw(440.0, n * 160))
            rtp.sendto(srtp_out.protect(build_rtp(packet)), target)
            with contextlib.suppress(BlockingIOError):
                while True:
                    heard += parse_rtp(srtp_in.unprotect(rtp.recv(2048))).payload
            time.sleep(0.02)
            n += 1
        assert len(heard) > 8000, len(heard)  # more than a second of bob
        assert abs(dominant_hz(ulaw_decode(bytes(heard[-8000:]))) - 880.0) < 10.0
        assert signed_bye(phone, ok, port, user, password).status == 200
        phone.close()
        events = read_events(bob, "ended")
        assert events[-1]["reason"] == "hangup", events
        assert abs(dominant_frequency(recording) - 440.0) < 5.0

        # SIPp calls bob and presses "1" as RFC 4733 events: bob's WebRTC leg cannot carry
        # them, so he hears the key's tones (697 + 1209 Hz, ITU-T Q.23)
        sipp_dtmf_call(port, user, password, tmp_path)
        events = read_events(bob, "ended")
        assert "answered" in [e["event"] for e in events], events
        low, high = dtmf_tones(tmp_path / "bob-2.wav")
        assert abs(low - 697) < 10 and abs(high - 1209) < 10, (low, high)

        rule = callgate("policy", "add", "record-alice", "allow", "--from-user", "alice",
                        "--to-user", "bob", "--recording-required", "--position", "1",
                        "--data-dir", str(server.root / "data"), cwd=tmp_path)  # fmt: skip
        assert rule.returncode == 0, rule.stderr
        time.sleep(1.5)  # a running server sees policy changes within a second
        with contextlib.suppress(BlockingIOError):
            while rtcp.recv(2048):
                pass  # SRTCP of the first call, if it lasted 5 s
        phone, statuses, ok = sip_invite(port, user, password, rtp.getsockname()[1])
        assert statuses[0] == 100 and 180 in statuses and statuses[-1] == 200, statuses
        phone.send(in_dialog(phone, "ACK", ok, port))
        media = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", ok.body.decode())
        assert media is not None, ok.body
        heard = talk(rtp, ("127.0.0.1", int(media.group(1))), 330.0)
        assert abs(dominant_hz(ulaw_decode(heard[-8000:])) - 880.0) < 10.0
        ours = parse_rtp(heard_packet(rtp)).ssrc
        # the phone's RTCP receiver report on our stream: 7 lost, jitter 160 (20 ms at 8 kHz)
        report = RtcpRrPacket(ssrc=0x5151, reports=[RtcpReceiverInfo(ours, 0, 7, 0, 160, 0, 0)])
        rtcp.sendto(bytes(report), ("127.0.0.1", int(media.group(1)) + 1))
        # a session refresh (the same offer again) changes nothing; then the phone holds the
        # call (a=inactive, RFC 3264 §8.4) for longer than the recorder's silence limit, and
        # resumes: the call and its recording go on, bob is heard again
        rtp_port = rtp.getsockname()[1]
        refresh = reinvite(phone, ok, port, user, password, phone_sdp(rtp_port))
        assert (refresh.status, refresh.body) == (200, ok.body)
        # the phone points our media at the cloud metadata address: 488 with a Warning (RFC
        # 3261 §21.4.26, §20.43), the session unchanged (§14.2), audited sip.media.forbidden
        metadata = phone_sdp(rtp_port, direction="sendrecv", address="169.254.169.254")
        moved = reinvite(phone, ok, port, user, password, metadata)
        assert (moved.status, moved.headers.get("warning")) == (
            488, '399 callgate "media address 169.254.169.254 is not permitted"'
        ), moved.reason  # fmt: skip
        # in-dialog requests from others (RFC 3261 §26.1.4), with the dialog's Call-ID and
        # tags: bob's desk phone's credential re-INVITEs alice's call towards its own socket,
        # and a host at 127.0.0.3 sends BYE; both get 403, the call goes on unchanged
        forged_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forged_rtp.bind(("127.0.0.1", 0))
        forged_rtp.setblocking(False)
        intruder = SipClient(("127.0.0.1", port), call_id=phone.call_id, tag=phone.tag)
        intruder.cseq = phone.cseq + 10
        stolen = reinvite(intruder, ok, port, "bob.desk", bob_password,
                          phone_sdp(forged_rtp.getsockname()[1], direction="sendrecv"))  # fmt: skip
        assert (stolen.status, stolen.reason) == (403, "Forbidden (not a party to this dialog)")
        elsewhere = SipClient(("127.0.0.1", port), bind="127.0.0.3", call_id=phone.call_id,
                              tag=phone.tag)  # fmt: skip
        elsewhere.cseq = phone.cseq + 20
        torn = elsewhere.exchange(in_dialog(elsewhere, "BYE", ok, port))
        assert (torn.status, torn.reason) == (403, "Forbidden (not a party to this dialog)")
        intruder.close()
        elsewhere.close()
        heard = talk(rtp, ("127.0.0.1", int(media.group(1))), 330.0)  # still bob, still here
        assert abs(dominant_hz(ulaw_decode(heard[-8000:])) - 880.0) < 10.0
        with pytest.raises(BlockingIOError):
            forged_rtp.recv(2048)  # none of the call's media went to the forged address
        forged_rtp.close()
        held = reinvite(phone, ok, port, user, password, phone_sdp(rtp_port, direction="inactive"))
        assert held.status == 200 and b"a=inactive\r\n" in held.body, held.body
        time.sleep(1.0)
        with contextlib.suppress(BlockingIOError):
            while rtp.recv(2048):
                pass  # what was on its way before the hold
        time.sleep(5.5)
        with pytest.raises(BlockingIOError):  # nothing is sent to a phone on hold
            rtp.recv(2048)
        resumed = reinvite(
            phone, ok, port, user, password, phone_sdp(rtp_port, direction="sendrecv")
        )
        assert resumed.status == 200 and b"a=sendrecv\r\n" in resumed.body, resumed.body
        heard = talk(rtp, ("127.0.0.1", int(media.group(1))), 330.0)
        assert abs(dominant_hz(ulaw_decode(heard[-8000:])) - 880.0) < 10.0
        assert signed_bye(phone, ok, port, user, password).status == 200
        phone.close()
        events = read_events(bob, "ended")
        assert "recording" in [e["event"] for e in events], events
        assert abs(dominant_frequency(tmp_path / "bob-3.wav") - 330.0) < 5.0
        call_id = next(e["call_id"] for e in events if e["event"] == "incoming")
        # recorded as each party sent: the phone's PCMU, bob's Opus (the anchor transcoded)
        check_recording(server, call_id, tmp_path, 330.0, 880.0, ("pcmu/8000/1", "opus/48000/2"))
        # our sender reports reached the phone's RTCP port (every 5 s, the call lasted longer),
        # and its report is in the call's quality rows as what the phone received
        reports = []
        with contextlib.suppress(BlockingIOError):
            while True:
                reports += RtcpPacket.parse(rtcp.recv(2048))
        ours_sr = [r for r in reports if isinstance(r, RtcpSrPacket) and r.ssrc == ours]
        assert ours_sr and ours_sr[-1].sender_info.packet_count > 100, reports
        rows = client_get(server, f"/api/quality?call_id={call_id}", "admin")["items"]
        assert any(
            (r["direction"], r["packets_lost"], r["jitter_ms"]) == ("inbound", 7, 20.0)
            for r in rows
        ), rows
        # SRTP offered: refused at the edge (488), before the hub; the edge writes its CDR
        phone, _, srtp = sip_invite(port, user, password, rtp.getsockname()[1], "RTP/SAVP")
        assert srtp.status == 488, srtp.reason
        phone.close()
        # offers whose media address is forbidden: loopback outside sip.allow_media, link-local
        for address in ("127.0.0.3", "169.254.1.1"):
            phone, _, refused = sip_invite(
                port, user, password, rtp.getsockname()[1], address=address
            )
            assert refused.status == 488, refused.reason
            assert refused.headers.get("warning") == (
                f'399 callgate "media address {address} is not permitted"'
            )
            phone.close()
        # a device may name only its own signaling IP unless sip.allow_media covers the one it
        # names: a public host is refused, so the server never forwards a call's media there
        phone, _, aimed = sip_invite(
            port, user, password, rtp.getsockname()[1], address="203.0.113.7"
        )
        assert aimed.status == 488, aimed.reason
        assert aimed.headers.get("warning") == (
            '399 callgate "media address 203.0.113.7 is not the device\'s signaling address"'
        )
        phone.close()
        # RFC 2543 hold (c=0.0.0.0) in a first INVITE is taken (RFC 3264 §8.4), not refused
        # with 488: it gets past the media check to the hub, which knows no user "nobody"
        phone, _, held = sip_invite(
            port, user, password, rtp.getsockname()[1], callee="nobody", address="0.0.0.0"
        )
        assert (held.status, held.reason) == (404, "Not Found"), held.reason
        phone.close()

    finally:
        if bob.poll() is None:
            bob.kill()
        out, _ = bob.communicate()
        rtp.close()
        rtcp.close()
    assert "incoming" not in [json.loads(line)["event"] for line in out.splitlines() if line]


def sipp_dtmf_call(port: int, user: str, password: str, cwd: Path) -> None:
    done = subprocess.run(
        ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "dtmf_call.xml"), "-s", "bob",
         "-au", user, "-ap", password, "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()),
         "-mi", "127.0.0.1", "-mp", str(free_port()), "-timeout", "40s", "-nostdin",
         "-trace_err", "-error_file", str(cwd / "sipp-dtmf.err")],
        capture_output=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip
    errors = (cwd / "sipp-dtmf.err").read_text() if (cwd / "sipp-dtmf.err").exists() else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + errors[-2000:]


def dtmf_tones(path: Path) -> tuple[float, float]:
    """The two strongest frequencies of a recording, lowest first."""
    with wave.open(str(path)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    mono = frames.reshape(-1, channels).mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    freqs = np.fft.rfftfreq(mono.size, 1 / rate)
    first = int(np.argmax(spectrum))
    spectrum[np.abs(freqs - freqs[first]) < 50] = 0  # the other tone, not the first one's skirt
    second = int(np.argmax(spectrum))
    low, high = sorted((float(freqs[first]), float(freqs[second])))
    return low, high


def rtp_pair() -> tuple[socket.socket, socket.socket]:
    """A phone's RTP socket and its RTCP socket on the next port, both non-blocking."""
    for _ in range(20):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind(("127.0.0.1", rtp.getsockname()[1] + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise OSError("no free port pair")


def heard_packet(rtp: socket.socket) -> bytes:
    """The next packet the phone gets (waiting up to 30 s)."""
    rtp.settimeout(30)
    try:
        return rtp.recv(2048)
    finally:
        rtp.setblocking(False)


TALK_DEADLINE_S = 30.0


def received_rtp(sock: socket.socket) -> list[tuple[int, bytes]]:
    """(payload type, payload) of every RTP packet waiting on non-blocking `sock`."""
    got: list[tuple[int, bytes]] = []
    with contextlib.suppress(BlockingIOError):
        while True:
            packet = parse_rtp(sock.recv(2048))
            got.append((packet.payload_type, packet.payload))
    return got


def talk(rtp: socket.socket, target: tuple[str, int], hz: float) -> bytes:
    """3 s of a PCMU tone from the phone's RTP socket, and on until more than a second of the
    other side was heard (up to 30 s: an outcome, not luck); returns the payloads heard."""
    heard = bytearray()
    deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
    while n < 150 or (len(heard) <= 8000 and time.monotonic() < deadline):
        packet = RtpPacket(PCMU, n == 0, n, 4000 + n * 160, 0x5151, tone_ulaw(hz, n * 160))
        rtp.sendto(build_rtp(packet), target)
        with contextlib.suppress(BlockingIOError):
            while True:
                heard += parse_rtp(rtp.recv(2048)).payload
        time.sleep(0.02)
        n += 1
    assert len(heard) > 8000, len(heard)  # more than a second of the other side
    return bytes(heard)


def check_recording(
    server: WebServer,
    call_id: str,
    tmp_path: Path,
    caller_hz: float,
    callee_hz: float,
    codecs: tuple[str, str] = ("pcmu/8000/1", "pcmu/8000/1"),
) -> None:
    """The call's recording closes, exports (each side decoded with the codec it sent — G.711,
    or a transcoded call's Opus caller — to the stereo WAV: caller left, callee right) and its
    bundle verifies offline."""
    data = ("--data-dir", str(server.root / "data"))
    deadline = time.monotonic() + 60  # the recording closes just after the call (generous)
    while True:
        (row,) = client_get(server, f"/api/recordings?call_id={call_id}", "admin")["items"]
        if row["state"] != "open":
            break
        assert time.monotonic() < deadline, "the recording did not close"
        time.sleep(0.3)
    stored = codecs[0] if codecs[0] == codecs[1] else "+".join(codecs)
    assert (row["state"], row["codec"]) == ("closed", stored), row
    bundle = tmp_path / f"bundle-{call_id}"
    exported = callgate("recording", "export", call_id, "--out", str(bundle), *data, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    verified = callgate("recording", "verify", str(bundle), "--json", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert [s["codec"] for s in metadata["streams"]] == list(codecs)
    with wave.open(str(bundle / "audio.wav")) as reader:
        rate = reader.getframerate()
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2).astype(np.int32)
    assert len(stereo) > 2 * rate  # the silence while bob rang, then 3 s of talk
    for channel, hz in ((stereo[:, 0], caller_hz), (stereo[:, 1], callee_hz)):
        assert abs(dominant_hz(channel, rate) - hz) < 5.0, (hz, dominant_hz(channel, rate))


def call_cli_to_phone(
    server: WebServer, port: int, user: str, password: str, tmp_path: Path
) -> None:
    phone = register_phone(port, user, password)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    recording = tmp_path / "bob-calls.wav"
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
    )  # fmt: skip
    bob = subprocess.Popen(
        [*COMMAND, "call", "alice", "--tone", "880", "--duration", "3", "--record",
         str(recording), "--json", "--codec", "opus"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        phone.sock.settimeout(60)  # bob's CLI starts, signs in and calls: slow on a busy machine
        try:
            invite = phone.receive_request()
        except TimeoutError:
            bob.kill()
            raise AssertionError(f"no INVITE; bob: {bob.communicate()}") from None
        assert invite.method == "INVITE" and invite.uri == f"sip:alice@127.0.0.1:{phone.local[1]}"
        assert "<sip:bob@" in (invite.headers.get("from") or "")
        media = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", invite.body.decode())
        assert media is not None, invite.body
        tag = "phone1"
        phone.send(serialize(response(invite, 180, "Ringing", to_tag=tag)))
        answer = (
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\n"
        ).encode()
        phone.answer(invite, answer, tag, "alice")
        target = ("127.0.0.1", int(media.group(1)))
        heard, methods, n = bytearray(), [], 0
        phone.sock.setblocking(False)
        deadline = time.monotonic() + 60  # generous: a loaded machine runs bob's CLI late
        while "BYE" not in methods and time.monotonic() < deadline:  # bob hangs up after 3 s
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x7777, tone_ulaw(440.0, n * 160))
            rtp.sendto(build_rtp(packet), target)
            with contextlib.suppress(BlockingIOError):
                while True:
                    heard += parse_rtp(rtp.recv(2048)).payload
            with contextlib.suppress(BlockingIOError):
                request = phone.receive_request()
                methods.append(request.method)
                if request.method == "BYE":
                    phone.send(serialize(response(request, 200, "OK")))
            n += 1
            time.sleep(0.02)
        assert methods == ["ACK", "BYE"], methods
        assert len(heard) > 8000 and abs(dominant_hz(ulaw_decode(bytes(heard[-8000:]))) - 880) < 10
        out, errors = bob.communicate(timeout=30)
        assert bob.returncode == 0, errors
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert events[-1]["event"] == "ended" and events[-1]["reason"] == "hangup", events
        # bob's side was Opus end to end: the anchor transcoded both ways
        assert {e.get("codec") for e in events if e["event"] == "connected"} == {"opus"}, events
        assert abs(dominant_frequency(recording) - 440.0) < 5.0
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.communicate()
        phone.close()
        rtp.close()


def register_phone(port: int, user: str, password: str) -> SipClient:
    """alice's phone registers (SHA-256 digest); its INVITEs come to this client's socket."""
    phone = SipClient(("127.0.0.1", port))
    aor, uri = "sip:alice@callgate", f"sip:127.0.0.1:{port}"
    contact = f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>;expires=600"
    challenge = challenge_for(phone.exchange(phone.request("REGISTER", aor)), "SHA-256")
    auth = authorization(challenge, user, password, "REGISTER", uri)
    assert phone.exchange(phone.request("REGISTER", aor, [auth, contact])).status == 200
    return phone


def phone_answers(phone: SipClient, rtp: socket.socket) -> tuple[str, tuple[str, int]]:
    """The registered phone's next INVITE (waiting up to 60 s), answered 180 then 200 with its
    RTP socket; the Call-ID and where the server wants the phone's RTP."""
    phone.sock.settimeout(60)
    invite = next_request(phone, "INVITE")
    media = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", invite.body.decode())
    assert media is not None, invite.body
    phone.send(serialize(response(invite, 180, "Ringing", to_tag="rec1")))
    answer = (
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\n"
    ).encode()
    phone.answer(invite, answer, "rec1", "alice")
    phone.sock.setblocking(False)
    return invite.headers.get("call-id") or "", ("127.0.0.1", int(media.group(1)))


def beeped(heard: bytes, g722: bool = False) -> bool:
    """Whether the recording prompt's beeps (1400 Hz, media/prompt.py) are in what a SIP party
    heard (PCMU, or G.722): some 0.1 s of it is mostly 1400 Hz."""
    samples, rate = (g722_decode(heard), 16000) if g722 else (ulaw_decode(heard), 8000)
    step = rate // 20
    windows = range(0, len(samples) - 2 * step, step)
    return any(abs(dominant_hz(samples[i : i + 2 * step], rate) - 1400.0) < 20.0 for i in windows)


def phone_requests(phone: SipClient) -> list[str]:
    """The methods of requests waiting at the phone; a BYE is answered 200."""
    methods = []
    with contextlib.suppress(BlockingIOError):
        while True:
            request = phone.receive_request()
            methods.append(request.method)
            if request.method == "BYE":
                phone.send(serialize(response(request, 200, "OK")))
    return methods


def recorded_call_id(server: WebServer, caller: str) -> str:
    """The call id of the latest anchored call from `caller` to alice."""
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    calls = [c for c in cdrs if (c["caller_user"], c["callee_user"]) == (caller, "alice")]
    latest = max(calls, key=by_invite)
    assert latest["anchored"] and latest["recording_required"], latest
    return str(latest["call_id"])


def recorded_calls_to_phone(
    server: WebServer, port: int, user: str, password: str, tmp_path: Path
) -> None:
    """A rule says calls to alice must be recorded, and her only device is her desk phone. The
    phone network calls her DID offering G.722 first, then PCMU (the carrier's G.722 through
    the SIP bridge, which offers the anchor its PCMU too: the recording anchor takes PCMU, the
    only codec her G.711 phone is offered; the carrier's bridge transcodes), then bob's CLI softphone calls her offering Opus
    alone (the anchor's leg to bob is Opus, its offer to alice's devices PCMU, which the phone
    takes: the anchor transcodes, and records each side in the codec it sent): each time the
    phone rings, both sides hear each other, and the exported recording holds the caller left,
    alice right, and verifies."""
    rule = callgate("policy", "add", "record-to-alice", "allow", "--to-user", "alice",
                    "--recording-required", "--position", "1",
                    "--data-dir", str(server.root / "data"), cwd=tmp_path)  # fmt: skip
    assert rule.returncode == 0, rule.stderr
    time.sleep(1.5)  # a running server sees policy changes within a second
    phone = register_phone(port, user, password)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    carrier = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    carrier_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_rtp.bind(("127.0.0.2", 0))
    carrier_rtp.setblocking(False)
    bob: subprocess.Popen[str] | None = None
    try:
        # the phone network calls alice's DID
        sdp = (
            "v=0\r\no=- 3 3 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            f"m=audio {carrier_rtp.getsockname()[1]} RTP/AVP 9 0\r\n"
        ).encode()
        caller, did = "sip:+442071234599@carrier.example", f"sip:+15551230001@127.0.0.1:{port}"
        headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
        carrier.send(carrier.request("INVITE", caller, headers, to=did, body=sdp))
        _, at_server = phone_answers(phone, rtp)  # rung once the recorder has the caller
        carrier.sock.settimeout(60)
        statuses, reply = carrier.until_final()
        assert statuses[-1] == 200 and 180 in statuses, statuses
        ours = re.search(r"m=audio (\d+) RTP/AVP 9\r\n", reply.body.decode())  # its G.722
        assert ours is not None, reply.body
        to = f"To: {reply.headers.get('to')}".encode()
        ack = carrier.request("ACK", caller, to=did, cseq=carrier.cseq)
        carrier.send(ack.replace(f"To: <{did}>".encode(), to))
        # 3 s of tones both ways, and on until each side heard more than a second of the other
        at_carrier, at_phone = ("127.0.0.1", int(ours.group(1))), at_server
        heard_by_carrier, heard_by_phone = bytearray(), bytearray()
        deadline, n, tone = time.monotonic() + TALK_DEADLINE_S, 0, G722Tone(440.0)
        while n < 150 or (
            min(len(heard_by_carrier), len(heard_by_phone)) <= 8000 and time.monotonic() < deadline
        ):
            carrier_rtp.sendto(
                build_rtp(RtpPacket(G722, n == 0, n, n * 160, 0x3333, tone.next())), at_carrier
            )
            rtp.sendto(build_rtp(RtpPacket(PCMU, n == 0, n, n * 160, 0x4444,
                                           tone_ulaw(880.0, n * 160))), at_phone)  # fmt: skip
            heard_by_carrier += b"".join(p for _, p in received_rtp(carrier_rtp))
            heard_by_phone += b"".join(p for _, p in received_rtp(rtp))
            time.sleep(0.02)
            n += 1
        carrier_heard = g722_decode(bytes(heard_by_carrier[-8000:]))
        assert abs(dominant_hz(carrier_heard, 16000) - 880.0) < 10.0
        assert abs(dominant_hz(ulaw_decode(bytes(heard_by_phone[-8000:]))) - 440.0) < 10.0
        # both were told by the beeps that the call is recorded
        assert beeped(bytes(heard_by_phone)) and beeped(bytes(heard_by_carrier), g722=True)
        bye = carrier.request("BYE", caller, to=did).replace(f"To: <{did}>".encode(), to)
        assert carrier.exchange(bye).status == 200
        deadline = time.monotonic() + 30
        while "BYE" not in phone_requests(phone) and time.monotonic() < deadline:
            time.sleep(0.05)
        call_id = recorded_call_id(server, "+442071234599")
        check_recording(server, call_id, tmp_path, 440.0, 880.0)

        # bob's CLI softphone calls alice with Opus alone: transcoded to her phone's PCMU
        env = clean_env(
            CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
            CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
        )  # fmt: skip
        bob = subprocess.Popen(
            [*COMMAND, "call", "alice", "--tone", "660", "--duration", "3", "--json",
             "--codec", "opus"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _, at_server = phone_answers(phone, rtp)
        heard, methods, n = bytearray(), [], 0
        deadline = time.monotonic() + 60  # bob hangs up after 3 s; generous on a busy machine
        while "BYE" not in methods and time.monotonic() < deadline:
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x5555, tone_ulaw(880.0, n * 160))
            rtp.sendto(build_rtp(packet), at_server)
            heard += b"".join(p for _, p in received_rtp(rtp))
            methods += phone_requests(phone)
            time.sleep(0.02)
            n += 1
        assert "BYE" in methods, methods
        assert len(heard) > 8000 and abs(dominant_hz(ulaw_decode(bytes(heard[-8000:]))) - 660) < 10
        assert beeped(bytes(heard))  # the phone was told the call is recorded
        out, errors = bob.communicate(timeout=30)
        assert bob.returncode == 0, errors
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert "recording" in [e["event"] for e in events], events
        assert {e.get("codec") for e in events if e["event"] == "connected"} == {"opus"}, events
        bob_id = recorded_call_id(server, "bob")
        check_recording(server, bob_id, tmp_path, 660.0, 880.0, ("opus/48000/2", "pcmu/8000/1"))
    finally:
        if bob is not None and bob.poll() is None:
            bob.kill()
            bob.communicate()
        phone.close()
        carrier.close()
        rtp.close()
        carrier_rtp.close()


def carrier_answers(
    carrier: SipClient, carrier_rtp: socket.socket, meanwhile: Callable[[], None] | None = None
) -> tuple[str, int]:
    """The carrier's next INVITE (up to 60 s), answered 200 with its RTP socket (after
    `meanwhile()`, while it rings); the number it was for and the port the server wants the
    carrier's RTP on."""
    carrier.sock.settimeout(60)
    invite = next_request(carrier, "INVITE")
    if meanwhile is not None:
        meanwhile()
    media = re.search(r"m=audio (\d+) RTP/AVP 0\r\n", invite.body.decode())
    assert media is not None, invite.body  # recorded: no telephone-event, keys go as tones
    answer = (
        "v=0\r\no=- 5 5 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        f"m=audio {carrier_rtp.getsockname()[1]} RTP/AVP 0\r\n"
    ).encode()
    extra = [("Contact", "<sip:gw@127.0.0.2>"), ("Content-Type", "application/sdp")]
    carrier.send(serialize(response(invite, 200, "OK", extra, body=answer, to_tag="crec")))
    next_request(carrier, "ACK")
    carrier.sock.setblocking(False)
    return invite.uri.split("@")[0].removeprefix("sip:"), int(media.group(1))


def carrier_requests(carrier: SipClient) -> list[str]:
    """The methods of requests waiting at the carrier; a BYE is answered 200."""
    return phone_requests(carrier)


def dialled_call_id(server: WebServer, number: str) -> str:
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    (cdr,) = [c for c in cdrs if c["callee_user"] == number]
    assert (cdr["direction"], cdr["recording_required"], cdr["anchored"]) == (
        "outbound", True, True
    ), cdr  # fmt: skip
    return str(cdr["call_id"])


def recorded_dial_out(
    server: WebServer, port: int, user: str, password: str, tmp_path: Path, carrier: SipClient
) -> None:
    """A rule says alice's calls to +44 numbers must be recorded. Her desk phone dials one: the
    carrier is called only once the recorder holds the phone's side (silence until its RTP),
    each hears the other, the phone hangs up; then her CLI softphone dials another, connects to
    the server's bridge first (`call.recording`), and hangs up after 3 s. Each recording holds
    the caller left and the carrier right, and verifies."""
    rule = callgate("policy", "add", "record-dial-out", "allow", "--from-user", "alice",
                    "--to-number", "+44", "--direction", "outbound", "--recording-required",
                    "--position", "1", "--data-dir", str(server.root / "data"),
                    cwd=tmp_path)  # fmt: skip
    assert rule.returncode == 0, rule.stderr
    time.sleep(1.5)  # a running server sees policy changes within a second
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    carrier_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_rtp.bind(("127.0.0.2", 0))
    carrier_rtp.setblocking(False)
    phone = SipClient(("127.0.0.1", port))
    alice: subprocess.Popen[str] | None = None
    try:
        offer = (
            "v=0\r\no=- 4 4 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        aor, number = "sip:alice@callgate", f"sip:+442079460001@127.0.0.1:{port}"
        headers = [f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>",
                   "Content-Type: application/sdp"]  # fmt: skip
        first = phone.exchange(phone.request("INVITE", aor, headers, to=number, body=offer))
        phone.send(phone.request("ACK", aor, to=number, cseq=phone.cseq))
        auth = authorization(challenge_for(first, "SHA-256"), user, password, "INVITE", number)
        phone.send(phone.request("INVITE", aor, [auth, *headers], to=number, body=offer))
        _, at_server = carrier_answers(carrier, carrier_rtp)
        phone.sock.settimeout(60)
        statuses, reply = phone.until_final()
        assert statuses[-1] == 200, statuses
        ours = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", reply.body.decode())
        assert ours is not None, reply.body
        to = f"To: {reply.headers.get('to')}".encode()
        ack = phone.request("ACK", aor, to=number, cseq=phone.cseq)
        phone.send(ack.replace(f"To: <{number}>".encode(), to))
        heard_by_phone, heard_by_carrier = bytearray(), bytearray()
        deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
        while n < 150 or (
            min(len(heard_by_carrier), len(heard_by_phone)) <= 8000 and time.monotonic() < deadline
        ):
            rtp.sendto(
                build_rtp(RtpPacket(PCMU, n == 0, n, n * 160, 0x6666, tone_ulaw(440.0, n * 160))),
                ("127.0.0.1", int(ours.group(1))),
            )
            carrier_rtp.sendto(build_rtp(RtpPacket(PCMU, n == 0, n, n * 160, 0x7777,
                                                   tone_ulaw(880.0, n * 160))),
                               ("127.0.0.1", at_server))  # fmt: skip
            heard_by_phone += b"".join(p for _, p in received_rtp(rtp))
            heard_by_carrier += b"".join(p for _, p in received_rtp(carrier_rtp))
            time.sleep(0.02)
            n += 1
        assert abs(dominant_hz(ulaw_decode(bytes(heard_by_phone[-8000:]))) - 880.0) < 10.0
        assert abs(dominant_hz(ulaw_decode(bytes(heard_by_carrier[-8000:]))) - 440.0) < 10.0
        assert beeped(bytes(heard_by_phone)) and beeped(bytes(heard_by_carrier))
        bye = phone.request("BYE", aor, to=number).replace(f"To: <{number}>".encode(), to)
        challenge = phone.exchange(bye)  # a registered phone's BYE is signed (RFC 3261 §22)
        assert challenge.status == 401, challenge.status
        auth = authorization(challenge_for(challenge, "SHA-256"), user, password, "BYE", number)
        bye = phone.request("BYE", aor, [auth], to=number).replace(f"To: <{number}>".encode(), to)
        assert phone.exchange(bye).status == 200
        deadline = time.monotonic() + 30
        while "BYE" not in carrier_requests(carrier) and time.monotonic() < deadline:
            time.sleep(0.05)
        check_recording(server, dialled_call_id(server, "+442079460001"), tmp_path, 440.0, 880.0)

        # alice's CLI softphone dials another +44 number
        env = clean_env(
            CALLGATE_SERVER=server.url, CALLGATE_USER="alice",
            CALLGATE_PASSWORD=PASSWORDS["alice"], CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-alice"),
        )  # fmt: skip
        alice = subprocess.Popen(
            # Opus alone: the carrier gets PCMU, transcoded; each side recorded as it sent
            [*COMMAND, "call", "+442079460002", "--tone", "660", "--duration", "3", "--json",
             "--codec", "opus"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        def refused_while_recording() -> None:
            """`recording.max_active` is 1 here and alice's call is being recorded: another
            recorded call cannot be, so it fails closed: her phone dialling a number gets 503
            and the carrier is never called; the phone network calling her DID (rule
            record-to-alice) gets 503 and nobody is rung."""
            phone, _, refused = sip_invite(
                port, user, password, rtp.getsockname()[1], callee="+442079460003"
            )
            phone.close()
            assert (refused.status, refused.reason) == (
                503, "Service Unavailable (recording unavailable)"
            ), refused  # fmt: skip
            network = SipClient(("127.0.0.1", port), bind="127.0.0.2")
            sdp = (
                "v=0\r\no=- 3 3 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
                f"m=audio {carrier_rtp.getsockname()[1]} RTP/AVP 0\r\n"
            ).encode()
            did = f"sip:+15551230001@127.0.0.1:{port}"
            headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
            network.sock.settimeout(60)
            statuses = [network.exchange(network.request(
                "INVITE", "sip:+442071234598@carrier.example", headers, to=did, body=sdp
            ))]  # fmt: skip
            while statuses[-1].status < 200:
                statuses.append(network.receive())
            network.close()
            assert [(r.status, r.reason) for r in statuses][-1] == (
                503, "Service Unavailable (recording unavailable)"
            ), [r.status for r in statuses]  # fmt: skip
            assert 180 not in [r.status for r in statuses]

        dialled, at_server = carrier_answers(carrier, carrier_rtp, refused_while_recording)
        assert dialled == "+442079460002", dialled
        heard, methods, n = bytearray(), [], 0
        deadline = time.monotonic() + 60  # alice hangs up after 3 s; generous on a busy machine
        while "BYE" not in methods and time.monotonic() < deadline:
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x8888, tone_ulaw(880.0, n * 160))
            carrier_rtp.sendto(build_rtp(packet), ("127.0.0.1", at_server))
            heard += b"".join(p for _, p in received_rtp(carrier_rtp))
            methods += carrier_requests(carrier)
            time.sleep(0.02)
            n += 1
        assert "BYE" in methods and "INVITE" not in methods, methods
        assert len(heard) > 8000 and abs(dominant_hz(ulaw_decode(bytes(heard[-8000:]))) - 660) < 10
        assert beeped(bytes(heard))  # the carrier was told the call is recorded
        out, errors = alice.communicate(timeout=30)
        assert alice.returncode == 0, errors
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert "recording" in [e["event"] for e in events], events
        assert {e.get("codec") for e in events if e["event"] == "connected"} == {"opus"}, events
        dialled_id = dialled_call_id(server, "+442079460002")
        check_recording(server, dialled_id, tmp_path, 660.0, 880.0, ("opus/48000/2", "pcmu/8000/1"))
        cdrs = client_get(server, "/api/cdrs", "admin")["items"]
        (refused,) = [c for c in cdrs if c["callee_user"] == "+442079460003"]
        assert (refused["disposition"], refused["reason"], refused["answer_at"]) == (
            "failed", "recording-unavailable", None
        ), refused  # fmt: skip
        (unrecorded,) = [c for c in cdrs if c["caller_user"] == "+442071234598"]
        assert (unrecorded["reason"], unrecorded["ring_at"], unrecorded["answer_at"]) == (
            "recording-unavailable", None, None
        ), unrecorded  # fmt: skip
    finally:
        if alice is not None and alice.poll() is None:
            alice.kill()
            alice.communicate()
        phone.close()
        rtp.close()
        carrier_rtp.close()


def call_trunk_to_cli(server: WebServer, port: int, tmp_path: Path, alice: tuple[str, str]) -> None:
    """The carrier (a SIP client on 127.0.0.2, the trunk's address) calls +1 555 123 0000, the
    DID of bob, whose CLI answers; each hears the other, the call is in the admin API's live
    calls; the carrier hangs up. A number that is no DID gets 404. The carrier offers G.722
    first: it is taken (RFC 3551 payload type 9, 160 RTP ticks per 20 ms of 16 kHz audio) and
    bob's CLI (aiortc has G.722) gets it unchanged: nothing is transcoded.

    Then it calls +1 555 123 0002, the DID of the ring group "desk" (alice and bob): alice's
    registered phone (`alice`: its device credential) rings with bob's CLI, bob's CLI answers
    and talks, and the phone gets CANCEL saying the call was completed elsewhere (RFC 3326)."""
    phone = register_phone(port, *alice)
    carrier = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.2", 0))
    rtp.setblocking(False)
    recording = tmp_path / "bob-pstn.wav"  # the group's call: bob-pstn-2.wav
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
    )  # fmt: skip
    bob = subprocess.Popen(
        [*COMMAND, "answer", "--tone", "880", "--record", str(recording), "--count", "2",
         "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert read_events(bob, "ready")
        sdp = (
            "v=0\r\no=- 3 3 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 9 0 8\r\n"
        ).encode()
        headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
        nobody = f"sip:+1 555 999 9999@127.0.0.1:{port}".replace(" ", "")
        caller = "sip:+442071234567@carrier.example"
        lost = carrier.exchange(carrier.request("INVITE", caller, headers, to=nobody, body=sdp))
        statuses = [lost.status]
        while statuses[-1] < 200:
            statuses.append(carrier.receive().status)
        assert statuses[-1] == 404, statuses
        calls = [("+442071234567", "+15551230000", None, recording),
                 ("+442071234577", "+15551230002", phone, tmp_path / "bob-pstn-2.wav")]  # fmt: skip
        for number, did_user, rung, recorded in calls:
            carrier.call_id += "-2"
            caller = f"sip:{number}@carrier.example"
            did = f"sip:{did_user}@127.0.0.1:{port}"
            carrier.send(carrier.request("INVITE", caller, headers, to=did, body=sdp))
            statuses, reply = carrier.until_final()
            assert statuses[-1] == 200, statuses
            if rung is not None:
                phone_completed_elsewhere(rung)
            media = re.search(r"m=audio (\d+) RTP/AVP 9\r\n", reply.body.decode())
            assert media is not None and "a=rtpmap:9 G722/8000" in reply.body.decode()
            ack = carrier.request("ACK", caller, to=did, cseq=carrier.cseq)
            carrier.send(
                ack.replace(f"To: <{did}>".encode(), f"To: {reply.headers.get('to')}".encode())
            )
            received_rtp(rtp)  # what the last call left
            target, heard, stamps = ("127.0.0.1", int(media.group(1))), bytearray(), []
            # 3 s of tone, and on until more than a second of bob came back (an outcome)
            deadline, n, tone = time.monotonic() + TALK_DEADLINE_S, 0, G722Tone(440.0)
            while n < 150 or (len(heard) <= 8000 and time.monotonic() < deadline):
                packet = RtpPacket(G722, n == 0, n, n * 160, 0x2222, tone.next())
                rtp.sendto(build_rtp(packet), target)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        got = parse_rtp(rtp.recv(2048))
                        assert got.payload_type == G722, got
                        heard += got.payload
                        stamps.append(got.timestamp)
                time.sleep(0.02)
                n += 1
            assert len(heard) > 8000, len(heard)  # a second: 8000 bytes, 16000 samples
            assert abs(dominant_hz(g722_decode(bytes(heard[-8000:])), 16000) - 880.0) < 10.0
            steps = [(b - a) % (1 << 32) for a, b in itertools.pairwise(stamps[-50:])]
            assert steps.count(160) >= len(steps) - 2, steps  # 20 ms: 160 ticks of 8 kHz
            # a call from the phone network is among the live calls, the caller its number
            live = client_get(server, "/api/live-calls", "admin")["calls"]
            assert [(c["caller"], c["callee"]) for c in live] == [(number, "bob")], live
            assert live[0]["state"] in ("connecting", "connected") and live[0]["answered_at"]
            bye = carrier.request("BYE", caller, to=did)
            bye = bye.replace(f"To: <{did}>".encode(), f"To: {reply.headers.get('to')}".encode())
            assert carrier.exchange(bye).status == 200
            events = read_events(bob, "ended")
            assert events[-1]["reason"] == "hangup", events
            # bob's side was G.722 too: forwarded, not transcoded
            codecs = {e.get("codec") for e in events if e["event"] == "connected"}
            assert codecs == {"g722"}, events
            incoming = next(e for e in events if e["event"] == "incoming")
            assert number in json.dumps(incoming), incoming
            assert abs(dominant_frequency(recorded) - 440.0) < 5.0
        over_limit(server, carrier, port, headers, sdp)
    finally:
        if bob.poll() is None:
            bob.kill()
        bob.communicate()
        carrier.close()
        rtp.close()
        phone.close()


def over_limit(
    server: WebServer, carrier: SipClient, port: int, headers: list[str], sdp: bytes
) -> None:
    """A third member joins "desk" (sip.ring_group_max_members is 2 here): the carrier's call
    to its DID is refused 503 saying why, nobody rings, and the CDR names the limit."""
    path = "/api/groups/desk/members/admin"
    auth = {"Authorization": f"Bearer {server.token('admin')}"}
    with server.client() as client:
        assert client.put(path, headers=auth).status_code == 200
    try:
        carrier.call_id += "-3"
        did, caller = f"sip:+15551230002@127.0.0.1:{port}", "sip:+442071234599@carrier.example"
        carrier.send(carrier.request("INVITE", caller, headers, to=did, body=sdp))
        statuses = [carrier.receive()]
        while statuses[-1].status < 200:
            statuses.append(carrier.receive())
        refused = statuses[-1]
        assert (refused.status, refused.reason) == (
            503,
            "Service Unavailable (ring group over its size limit)",
        )
        cdrs = client_get(server, "/api/cdrs", "admin")["items"]
        (row,) = [c for c in cdrs if c["caller_user"] == "+442071234599"]
        assert (row["callee_user"], row["policy_rule"]) == ("group:desk", "ring-group-size")
        assert (row["disposition"], row["answer_at"]) == ("denied", None)
    finally:
        with server.client() as client:
            assert client.delete(path, headers=auth).status_code == 200


def phone_completed_elsewhere(phone: SipClient) -> None:
    """alice's phone was rung (INVITE, answered 180) and, once bob's CLI answered, cancelled
    with `Reason: SIP;cause=200;text="Call completed elsewhere"`; it ends its INVITE 487."""
    phone.sock.settimeout(30)
    invite = next_request(phone, "INVITE")
    # the carrier offered G.722, PCMU, PCMA: all three are offered on, so that a phone without
    # G.722 could answer with G.711
    assert re.search(r"m=audio \d+ RTP/AVP 9 0 8\b", invite.body.decode()), invite.body
    phone.send(serialize(response(invite, 180, "Ringing", to_tag="grp1")))
    cancel = next_request(phone, "CANCEL")
    assert cancel.headers.get("call-id") == invite.headers.get("call-id")
    assert cancel.headers.get("reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    phone.send(serialize(response(cancel, 200, "OK")))
    phone.send(serialize(response(invite, 487, "Request Terminated", to_tag="grp1")))


def dial_out(
    server: WebServer, port: int, user: str, password: str, bob_password: str, carrier: SipClient
) -> None:
    """alice's phone dials +44 20 7946 0000: the carrier gets the INVITE with the normalised
    number and our caller ID, answers, media flows both ways; the call is in the admin API's
    live calls, and an administrator ends it there: BYE to the carrier and to the phone. bob's
    phone may not dial out (no rule: 403) but may call 112, which goes to the carrier too.
    alice's phone prefers G.722; the carrier is offered the phone's codecs in its order and
    takes PCMU: both legs use PCMU, payloads unchanged."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    carrier_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_rtp.bind(("127.0.0.2", 0))
    carrier_rtp.setblocking(False)
    try:
        phone, statuses, refused = sip_invite(
            port, "bob.desk", bob_password, rtp.getsockname()[1], callee="+442079460000"
        )
        assert (refused.status, refused.reason) == (
            403,
            "Forbidden (no dial-out rule for this user)",
        )
        phone.close()

        phone = SipClient(("127.0.0.1", port))
        offer = (
            "v=0\r\no=- 4 4 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 9 0 101\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        aor, number = "sip:alice@callgate", f"sip:+44-20-7946-0000@127.0.0.1:{port}"
        headers = [
            f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>",
            "Content-Type: application/sdp",
        ]
        first = phone.exchange(phone.request("INVITE", aor, headers, to=number, body=offer))
        phone.send(phone.request("ACK", aor, to=number, cseq=phone.cseq))
        auth = authorization(challenge_for(first, "SHA-256"), user, password, "INVITE", number)
        phone.send(phone.request("INVITE", aor, [auth, *headers], to=number, body=offer))
        invite = next_request(carrier, "INVITE")  # the carrier's side
        assert invite.uri.startswith("sip:+442079460000@127.0.0.2:")
        assert "+15551230000" in (invite.headers.get("from") or "")
        # the phone offered RFC 4733 events, so the carrier is offered them too, and its
        # codecs in its order
        media = re.search(r"m=audio (\d+) RTP/AVP 9 0 101\r\n", invite.body.decode())
        assert media is not None, invite.body
        answer = (
            "v=0\r\no=- 5 5 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            f"m=audio {carrier_rtp.getsockname()[1]} RTP/AVP 0 101\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        extra = [("Contact", "<sip:gw@127.0.0.2>"), ("Content-Type", "application/sdp")]
        carrier.send(serialize(response(invite, 200, "OK", extra, body=answer, to_tag="cx")))
        statuses, reply = phone.until_final()
        assert statuses[-1] == 200, statuses
        next_request(carrier, "ACK")
        ours = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", reply.body.decode())
        assert ours is not None, reply.body
        ack = phone.request("ACK", aor, to=number, cseq=phone.cseq)
        phone.send(
            ack.replace(f"To: <{number}>".encode(), f"To: {reply.headers.get('to')}".encode())
        )
        at_carrier: list[tuple[int, bytes]] = []
        at_phone: list[tuple[int, bytes]] = []
        key_5, key_hash = b"\x05\x8a\x03\x20", b"\x0b\x8a\x03\x20"  # RFC 4733 ends
        for n in range(20):  # phone -> carrier and carrier -> phone, payloads unchanged
            audio = n != 10  # one packet each way is a key press (telephone-event, PT 101)
            rtp.sendto(
                build_rtp(RtpPacket(PCMU if audio else 101, not audio, n, n * 160, 1,
                                    b"p" * 160 if audio else key_5)),
                ("127.0.0.1", int(ours.group(1))),
            )  # fmt: skip
            carrier_rtp.sendto(
                build_rtp(RtpPacket(PCMU if audio else 101, not audio, n, n * 160, 2,
                                    b"c" * 160 if audio else key_hash)),
                ("127.0.0.1", int(media.group(1))),
            )  # fmt: skip
            time.sleep(0.02)
            at_carrier += received_rtp(carrier_rtp)
            at_phone += received_rtp(rtp)
        # what is still on its way (a loaded machine forwards late): waited for, up to 30 s
        expected_at_carrier = {(0, b"p" * 160), (101, key_5)}
        expected_at_phone = {(0, b"c" * 160), (101, key_hash)}
        deadline = time.monotonic() + 30
        while not (
            expected_at_carrier <= set(at_carrier) and expected_at_phone <= set(at_phone)
        ) and (time.monotonic() < deadline):
            time.sleep(0.02)
            at_carrier += received_rtp(carrier_rtp)
            at_phone += received_rtp(rtp)
        assert expected_at_carrier <= set(at_carrier), at_carrier[:3]
        assert expected_at_phone <= set(at_phone), at_phone[:3]
        # the carrier presses 5 by SIP INFO instead: taken, and the phone hears the key's two
        # tones (770 + 1336 Hz) in the carrier's audio (docs/sip.md, "DTMF")
        carrier.sock.settimeout(30)
        taken = carrier.exchange(
            carrier_info(carrier, invite, "cx", b"Signal=5\r\nDuration=400\r\n")
        )
        assert taken.status == 200, (taken.status, taken.reason)
        toned: list[bytes] = []
        deadline, n = time.monotonic() + 30, 20
        while len(toned) < 10 and time.monotonic() < deadline:
            carrier_rtp.sendto(build_rtp(RtpPacket(PCMU, False, n, n * 160, 2, b"c" * 160)),
                               ("127.0.0.1", int(media.group(1))))  # fmt: skip
            time.sleep(0.02)
            n += 1
            toned += [p for t, p in received_rtp(rtp) if t == PCMU and p != b"c" * 160]
        low, high = two_tones(b"".join(toned[:10]))
        assert abs(low - 770) < 15 and abs(high - 1336) < 15, (low, high)
        # an administrator sees the call among the live calls and ends it: BYE both ways
        live = client_get(server, "/api/live-calls", "admin")["calls"]
        (dialled,) = [c for c in live if c["callee"] == "+442079460000"]
        assert (dialled["caller"], dialled["state"], dialled["trunk"]) == (
            "alice", "connected", "carrier"
        ), dialled  # fmt: skip
        with server.client() as client:
            admin = {"Authorization": f"Bearer {server.token('admin')}"}
            ended = client.post(f"/api/live-calls/{dialled['call_id']}/end", headers=admin)
        assert ended.status_code == 202, ended.text
        carrier.sock.settimeout(30)
        carrier_bye = next_request(carrier, "BYE")
        carrier.send(serialize(response(carrier_bye, 200, "OK")))
        phone_bye = phone.receive_request()
        assert phone_bye.method == "BYE", phone_bye
        phone.send(serialize(response(phone_bye, 200, "OK")))
        phone.close()
        live = client_get(server, "/api/live-calls", "admin")["calls"]
        assert not [c for c in live if c["call_id"] == dialled["call_id"]], live

        # 112 from bob (no dial-out rule): let through to the carrier, which refuses it here
        phone = SipClient(("127.0.0.1", port))
        headers = [
            f"Contact: <sip:bob@127.0.0.1:{phone.local[1]}>",
            "Content-Type: application/sdp",
        ]
        sos_uri = f"sip:112@127.0.0.1:{port}"
        first = phone.exchange(
            phone.request("INVITE", "sip:bob@callgate", headers, to=sos_uri, body=offer)
        )
        phone.send(phone.request("ACK", "sip:bob@callgate", to=sos_uri, cseq=phone.cseq))
        auth = authorization(
            challenge_for(first, "SHA-256"), "bob.desk", bob_password, "INVITE", sos_uri
        )
        phone.send(
            phone.request("INVITE", "sip:bob@callgate", [auth, *headers], to=sos_uri, body=offer)
        )
        sos = next_request(carrier, "INVITE")
        assert sos.uri.startswith("sip:112@127.0.0.2:")
        carrier.send(serialize(response(sos, 486, "Busy Here", to_tag="cy")))
        statuses, _ = phone.until_final()
        assert statuses[-1] == 486, statuses
        phone.close()
    finally:
        rtp.close()
        carrier_rtp.close()


def carrier_info(carrier: SipClient, invite: SipRequest, tag: str, body: bytes) -> bytes:
    """An INFO (application/dtmf-relay) from the carrier in the dialog our `invite` made and it
    answered with To-tag `tag` (RFC 3261 §12.2.1.1: From and To swap, to our Contact)."""
    contact = re.search(r"<([^>]+)>", invite.headers.get("contact") or "")
    assert contact is not None, invite.headers.get("contact")
    host, port = carrier.local
    carrier.cseq += 1
    lines = [
        f"INFO {contact.group(1)} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        f"From: {invite.headers.get('to')};tag={tag}",
        f"To: {invite.headers.get('from')}",
        f"Call-ID: {invite.headers.get('call-id')}",
        f"CSeq: {carrier.cseq} INFO",
        "Max-Forwards: 70",
        "Content-Type: application/dtmf-relay",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def two_tones(ulaw: bytes) -> tuple[float, float]:
    """The two strongest frequencies of PCMU audio (8 kHz), lowest first."""
    samples = ulaw_decode(ulaw).astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / 8000)
    first = int(np.argmax(spectrum))
    spectrum[np.abs(freqs - freqs[first]) < 60] = 0  # the other tone, not the first's skirt
    second = int(np.argmax(spectrum))
    low, high = sorted((float(freqs[first]), float(freqs[second])))
    return low, high


def next_request(client: SipClient, method: str) -> SipRequest:
    """The next request of `method` (our retransmissions before it are skipped)."""
    while True:
        request = client.receive_request()
        if request.method == method:
            return request
