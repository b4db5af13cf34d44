"""SRTP towards carriers (docs/sip.md, "SRTP towards carriers"): a trunk with `srtp = "required"`
over real sockets, one `callgate serve`. The carrier on 127.0.0.2 is a Python SIP client whose
media really is SRTP: it encrypts and decrypts with libsrtp (pylibsrtp) under the SDES keys of
the SDP (RFC 4568, AES_CM_128_HMAC_SHA1_80), so a packet sent or taken in the clear fails.

- Inbound: its plain RTP INVITE gets 488 with a Warning (and its CDR); its RTP/SAVP INVITE with a
  key reaches bob's desk phone (itself called with SRTP: `sip add --srtp`) and each hears the
  other. When that phone answers our SRTP offer with plain RTP, the edge ACKs its 200 and BYEs
  the dialog (RFC 3261 §13.2.2.4, §15), and the CDR says why.
- Outbound: alice's desk phone (plain RTP) and her CLI softphone dial numbers through it; each
  INVITE offers RTP/SAVP with our key, tones pass both ways, and a recorded dial-out's recording
  holds the plain audio (the carrier's leg decrypted before the recorder). A carrier answering
  plain RTP, or SRTP under another tag than our key's, gets ACK then BYE on the wire, the phone a
  502, and the CDR says why. In the recorded dial-out the carrier re-INVITEs (RFC 3261 §14.2):
  a refresh and a hold keeping its key are answered with our key, a new key or plain RTP gets
  488, and after the hold SRTP flows on with the same keys.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from callgate.client.audio import dominant_frequency
from callgate.media.rtp_leg import PCMU, RtpPacket, build_rtp, parse_rtp
from callgate.sip.message import SipRequest, serialize
from callgate.sip.responses import response
from callgate.sip.sdp import AudioOffer, parse_audio
from tests.cli_process import COMMAND, clean_env
from tests.cli_process import run_in_process as callgate
from tests.integration.serve_fixture import PASSWORDS, WebServer, serve
from tests.integration.sip_client import (
    SipClient,
    authorization,
    challenge_for,
    dominant_hz,
    tone_ulaw,
    ulaw_decode,
)
from tests.integration.test_cli import free_port
from tests.integration.test_sip_edge import (
    check_recording,
    client_get,
    dialled_call_id,
    next_request,
    phone_requests,
)
from tests.integration.test_sip_reinvite import their_reinvite

pytestmark = pytest.mark.timeout(240)  # one server, a CLI softphone, a recording export
SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
CARRIER_KEY = bytes(range(40, 70))  # the carrier's SDES master key ‖ salt (30 bytes)
PHONE_KEY = bytes(range(100, 130))  # bob's desk phone's
TALK_DEADLINE_S = 30.0
CARRIERS: dict[Path, SipClient] = {}  # per test: the carrier's SIP socket, 127.0.0.2
DEVICES: dict[Path, dict[str, str]] = {}  # per test: alice's and bob's desk credentials


@pytest.fixture
def srtp_server(tmp_path: Path) -> Iterator[tuple[WebServer, int]]:
    devices: dict[str, str] = {}

    def prepare(data: Path) -> None:
        def run(*args: str) -> str:
            done = callgate(*args, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            return done.stdout

        alice = json.loads(run("sip", "add", "alice", "desk", "--json"))
        bob = json.loads(run("sip", "add", "bob", "desk", "--srtp", "--json"))
        devices.update(alice=alice["password"], bob=bob["password"])
        run("group", "create", "traders")
        run("group", "add-member", "traders", "alice")
        # alice's calls to German numbers are recorded
        run("policy", "add", "record-de", "allow", "--from-user", "alice", "--to-number", "+49",
            "--direction", "outbound", "--recording-required")  # fmt: skip

    port = free_port()
    carrier = CARRIERS[tmp_path] = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    trunks = json.dumps([{"name": "secure", "addresses": ["127.0.0.2"], "srtp": "required",
                          "dids": {"+15551230000": "bob"},
                          "outbound": f"127.0.0.2:{carrier.local[1]}",
                          "dial_out_groups": ["traders"], "caller_id": "+15551230000",
                          "options_interval": 0}])  # fmt: skip
    env = {"CALLGATE_SIP__TRUNKS": trunks,
           "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32, 127.0.0.2/32"}  # fmt: skip
    try:
        for server in serve(tmp_path, "--sip-listen", f"127.0.0.1:{port}", prepare=prepare, **env):
            DEVICES[tmp_path] = devices
            yield server, port
    finally:
        CARRIERS.pop(tmp_path).close()
        DEVICES.pop(tmp_path, None)


def sdp(host: str, port: int, profile: str = "RTP/AVP", tag: int = 1, key: bytes = b"") -> bytes:
    body = (
        f"v=0\r\no=- 7 7 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} {profile} 0\r\n"
    )
    if key:
        body += f"a=crypto:{tag} {SUITE} inline:{base64.b64encode(key).decode()}\r\n"
    return body.encode()


def sessions(ours: bytes, theirs: bytes) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """(protect with our key, unprotect with theirs): one side's libsrtp sessions."""
    out = pylibsrtp.Policy(ours, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, PROFILE)
    into = pylibsrtp.Policy(theirs, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, PROFILE)
    return pylibsrtp.Session(out), pylibsrtp.Session(into)


class Party:
    """One side's RTP socket, where it sends, its tone, and its SRTP sessions (None: plain)."""

    def __init__(
        self, host: str, hz: float, srtp: tuple[pylibsrtp.Session, pylibsrtp.Session] | None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.hz, self.srtp = hz, srtp
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.heard = bytearray()
        self.ssrc = secrets.randbits(32)
        self.sent = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self) -> None:
        """Its next packet (SRTP: never a sequence number twice, libsrtp's replay check)."""
        n = self.sent
        self.sent += 1
        packet = build_rtp(
            RtpPacket(PCMU, n == 0, n, n * 160, self.ssrc, tone_ulaw(self.hz, n * 160))
        )
        self.sock.sendto(self.srtp[0].protect(packet) if self.srtp else packet, self.target)

    def take(self) -> None:
        """Every packet waiting; an SRTP party's fail unless encrypted and authenticated."""
        with contextlib.suppress(BlockingIOError):
            while True:
                wire = self.sock.recv(2048)
                self.heard += parse_rtp(self.srtp[1].unprotect(wire) if self.srtp else wire).payload

    def hears(self, hz: float) -> bool:
        return (
            len(self.heard) > 8000
            and abs(dominant_hz(ulaw_decode(bytes(self.heard[-8000:]))) - hz) < 10
        )


def talk(a: Party, b: Party) -> None:
    """Both send their tone for 2 s and on until each heard more than a second of the other."""
    deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
    while n < 100 or (min(len(a.heard), len(b.heard)) <= 8000 and time.monotonic() < deadline):
        a.send()
        b.send()
        a.take()
        b.take()
        time.sleep(0.02)
        n += 1
    assert a.hears(b.hz), len(a.heard)
    assert b.hears(a.hz), len(b.heard)


def offered_key(invite: SipRequest) -> AudioOffer:
    """The edge's offer to the carrier or phone: RTP/SAVP only, with our own SDES key."""
    offer = parse_audio(invite.body)
    assert " RTP/SAVP " in invite.body.decode() and "RTP/AVP" not in invite.body.decode()
    assert offer.crypto is not None and len(offer.crypto.key_salt) == 30, invite.body
    return offer


def acked_then_byed(client: SipClient, invite: SipRequest, tag: str) -> None:
    """After a 200 the edge cannot use: its ACK, then its BYE in that dialog (answered 200)."""
    client.sock.settimeout(30)
    methods: list[str] = []
    while "BYE" not in methods:
        request = client.receive_request()
        if request.method == "INVITE":
            continue  # a retransmission sent before our 200 got there
        methods.append(request.method)
        assert request.headers.get("call-id") == invite.headers.get("call-id")
        assert f"tag={tag}" in (request.headers.get("to") or ""), request.headers.get("to")
        if request.method == "BYE":
            client.send(serialize(response(request, 200, "OK")))
    assert methods == ["ACK", "BYE"], methods


def phone_dials(
    port: int, password: str, number: str, rtp_port: int, offer: bytes | None = None
) -> SipClient:
    """alice's desk phone INVITEs `number` (with plain RTP unless `offer`), its digest
    answered."""
    phone = SipClient(("127.0.0.1", port))
    aor, uri = "sip:alice@callgate", f"sip:{number}@127.0.0.1:{port}"
    headers = [f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>", "Content-Type: application/sdp"]
    offer = offer or sdp("127.0.0.1", rtp_port)
    first = phone.exchange(phone.request("INVITE", aor, headers, to=uri, body=offer))
    assert first.status == 401, first.status
    phone.send(phone.request("ACK", aor, to=uri, cseq=phone.cseq))
    auth = authorization(challenge_for(first, "SHA-256"), "alice.desk", password, "INVITE", uri)
    phone.send(phone.request("INVITE", aor, [auth, *headers], to=uri, body=offer))
    return phone


def in_dialog(client: SipClient, method: str, aor: str, uri: str, to: str | None) -> bytes:
    cseq = client.cseq if method == "ACK" else None
    request = client.request(method, aor, to=uri, cseq=cseq)
    return request.replace(f"To: <{uri}>".encode(), f"To: {to}".encode())


def signed_bye(dialler: SipClient, password: str, uri: str, to: str | None) -> None:
    """alice's phone hangs up the dialog its INVITE to `uri` made: a device's BYE is
    challenged and signed (RFC 3261 §22)."""
    aor = "sip:alice@callgate"
    challenge = dialler.exchange(in_dialog(dialler, "BYE", aor, uri, to))
    assert challenge.status == 401, challenge.status
    auth = authorization(challenge_for(challenge, "SHA-256"), "alice.desk", password, "BYE", uri)
    bye = in_dialog(dialler, "BYE", aor, uri, to)
    signed = bye.replace(b"Max-Forwards: 70\r\n", f"{auth}\r\nMax-Forwards: 70\r\n".encode())
    assert dialler.exchange(signed).status == 200


def cdr_of(server: WebServer, callee: str) -> list[dict[str, Any]]:
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    return [c for c in cdrs if c["callee_user"] == callee]


def test_a_trunk_that_requires_srtp(srtp_server: tuple[WebServer, int], tmp_path: Path) -> None:
    server, port = srtp_server
    carrier, devices = CARRIERS[tmp_path], DEVICES[tmp_path]
    carrier.sock.settimeout(60)
    (trunk,) = client_get(server, "/api/trunks", "admin")["trunks"]
    assert trunk["srtp"] == "required"

    # bob's desk phone registers (its credential says: call it with SRTP)
    phone = SipClient(("127.0.0.1", port))
    aor, uri = "sip:bob@callgate", f"sip:127.0.0.1:{port}"
    contact = f"Contact: <sip:bob@127.0.0.1:{phone.local[1]}>;expires=600"
    challenge = challenge_for(phone.exchange(phone.request("REGISTER", aor)), "SHA-256")
    auth = authorization(challenge, "bob.desk", devices["bob"], "REGISTER", uri)
    assert phone.exchange(phone.request("REGISTER", aor, [auth, contact])).status == 200
    caller, did = "sip:+442071234511@carrier.example", f"sip:+15551230000@127.0.0.1:{port}"
    headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
    try:
        # the carrier offers plain RTP: 488 with a Warning, recorded
        carrier.call_id = "plain-in"
        plain = carrier.exchange(
            carrier.request("INVITE", caller, headers, to=did, body=sdp("127.0.0.2", 40000))
        )
        while plain.status < 200:
            plain = carrier.receive()
        assert (plain.status, plain.reason) == (
            488,
            f"Not Acceptable Here (trunk secure requires SRTP: RTP/SAVP with an a=crypto {SUITE} key)",
        )
        assert plain.headers.get("warning") == (
            '302 callgate "Incompatible transport protocol: RTP/SAVP required"'
        )
        carrier.send(carrier.request("ACK", caller, to=did, cseq=carrier.cseq))

        # the carrier offers SRTP: bob's phone is called with SRTP and each hears the other
        inbound(carrier, phone, caller, did, headers, answer_plain=False)
        # bob's phone answers our SRTP offer with plain RTP: ACK, BYE, the call is declined
        inbound(carrier, phone, caller, did, headers, answer_plain=True)
    finally:
        phone.close()
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    (refused,) = [c for c in cdrs if c["caller_user"] == "sip:+442071234511@127.0.0.2"]
    assert (refused["reason"], refused["direction"]) == ("sip 488", "inbound"), refused
    assert "requires SRTP" in refused["end_detail"], refused
    talked, declined = sorted(
        (c for c in cdrs if c["caller_user"] == "+442071234511"), key=lambda c: c["invite_at"]
    )
    assert (talked["callee_user"], talked["reason"]) == ("bob", "hangup"), talked
    assert talked["encryption"] == "sdes-srtp", talked  # the carrier's leg: SDES-SRTP
    assert talked["answer_at"] is not None
    assert (declined["reason"], declined["answer_at"]) == ("rejected", None), declined
    assert declined["encryption"] == "sdes-srtp", declined  # the carrier's offer decided it
    assert declined["end_detail"] == (
        "the phone answered plain RTP to our SRTP offer (RTP/SAVP, SDES)"
    ), declined

    # alice's phone dials out: the carrier answers plain RTP, SRTP under another tag, and
    # RTP/SAVP without a key
    refusals = (
        ("+442079460001", "RTP/AVP", 1, CARRIER_KEY),
        ("+442079460002", "RTP/SAVP", 2, CARRIER_KEY),
        ("+442079460003", "RTP/SAVP", 1, b""),
    )
    for number, profile, tag, key in refusals:
        rtp = Party("127.0.0.1", 440.0, None)
        dialler = phone_dials(port, devices["alice"], number, rtp.port)
        try:
            invite = next_request(carrier, "INVITE")
            offer = offered_key(invite)
            assert offer.crypto is not None and offer.crypto.tag == 1
            carrier.answer(invite, sdp("127.0.0.2", 40002, profile, tag, key), "no")
            acked_then_byed(carrier, invite, "no")
            dialler.sock.settimeout(60)
            _, final = dialler.until_final()
            assert (final.status, final.reason) == (502, "Bad Gateway (carrier SDP)")
            dialler.send(
                dialler.request(
                    "ACK",
                    "sip:alice@callgate",
                    to=f"sip:{number}@127.0.0.1:{port}",
                    cseq=dialler.cseq,
                )
            )
        finally:
            dialler.close()
            rtp.sock.close()
    (plain_answer,) = cdr_of(server, "+442079460001")
    (other_tag,) = cdr_of(server, "+442079460002")
    (keyless,) = cdr_of(server, "+442079460003")
    for cdr, why in (
        (keyless, f"RTP/SAVP without an a=crypto {SUITE} key"),
        (plain_answer, "the carrier answered plain RTP to our SRTP offer (RTP/SAVP, SDES)"),
        (other_tag, "the carrier answered SRTP without our key's tag 1 (RFC 4568 §5.1.2)"),
    ):
        assert (cdr["direction"], cdr["disposition"], cdr["reason"]) == (
            "outbound", "failed", "setup-failed"
        ), cdr  # fmt: skip
        assert cdr["end_detail"] == why and cdr["answer_at"] is None, cdr
        assert cdr["encryption"] is None, cdr  # no media flowed

    # an emergency call is never ended for its media's protection: a plain answer connects
    emergency_call(port, devices["alice"], carrier)
    (sos,) = cdr_of(server, "112")
    assert (sos["policy_decision"], sos["direction"]) == ("emergency", "outbound"), sos
    assert sos["answer_at"] is not None and sos["reason"] == "hangup", sos
    assert sos["encryption"] == "rtp", sos  # answered plain: the auditor sees it

    # a recorded dial-out: the carrier talks SRTP, the recording holds the plain audio
    recorded_dial_out(server, port, devices["alice"], carrier, tmp_path)
    # alice's CLI softphone dials a number: SRTP towards the carrier too
    cli_dial_out(server, carrier, tmp_path)


def inbound(
    carrier: SipClient,
    phone: SipClient,
    caller: str,
    did: str,
    headers: list[str],
    answer_plain: bool,
) -> None:
    """The carrier calls bob's DID offering SRTP; bob's SRTP phone answers with SRTP (each hears
    the other, the carrier hangs up) or, `answer_plain`, with plain RTP (ACK then BYE to the
    phone, the carrier hears the call declined, the CDR says why)."""
    at_carrier = Party("127.0.0.2", 880.0, None)
    at_phone = Party("127.0.0.1", 440.0, None)
    carrier.call_id = f"srtp-in-{answer_plain}"
    try:
        offer = sdp("127.0.0.2", at_carrier.port, "RTP/SAVP", 5, CARRIER_KEY)
        carrier.send(carrier.request("INVITE", caller, headers, to=did, body=offer))
        phone.sock.settimeout(60)
        invite = next_request(phone, "INVITE")
        ours = offered_key(invite)
        assert ours.crypto is not None
        if answer_plain:
            phone.answer(invite, sdp("127.0.0.1", at_phone.port), "plainphone")
            acked_then_byed(phone, invite, "plainphone")
            _, final = carrier.until_final()
            assert (final.status, final.reason) == (486, "Busy Here"), final.reason
            carrier.send(carrier.request("ACK", caller, to=did, cseq=carrier.cseq))
            return
        body = sdp("127.0.0.1", at_phone.port, "RTP/SAVP", ours.crypto.tag, PHONE_KEY)
        phone.answer(invite, body, "srtpphone")
        statuses, reply = carrier.until_final()
        assert statuses[-1] == 200, statuses
        theirs = parse_audio(reply.body)
        # our answer: SRTP under the carrier's tag, with our own key (RFC 4568 §5.1.2, §6.1)
        assert theirs.crypto is not None and theirs.crypto.tag == 5, reply.body
        assert theirs.crypto.key_salt not in (CARRIER_KEY, ours.crypto.key_salt)
        to = reply.headers.get("to")
        carrier.send(in_dialog(carrier, "ACK", caller, did, to))
        at_carrier.srtp = sessions(CARRIER_KEY, theirs.crypto.key_salt)
        at_carrier.target = ("127.0.0.1", theirs.port)
        at_phone.srtp = sessions(PHONE_KEY, ours.crypto.key_salt)
        at_phone.target = ("127.0.0.1", ours.port)
        talk(at_carrier, at_phone)
        assert carrier.exchange(in_dialog(carrier, "BYE", caller, did, to)).status == 200
        deadline = time.monotonic() + 30
        phone.sock.setblocking(False)
        while "BYE" not in phone_requests(phone) and time.monotonic() < deadline:
            time.sleep(0.05)
        phone.sock.setblocking(True)
    finally:
        at_carrier.sock.close()
        at_phone.sock.close()


def carrier_answers_srtp(carrier: SipClient, party: Party) -> SipRequest:
    """The carrier's next INVITE, answered with RTP/SAVP under our key's tag and its own key;
    `party` then talks SRTP with those keys."""
    carrier.sock.settimeout(60)
    invite = next_request(carrier, "INVITE")
    offer = offered_key(invite)
    assert offer.crypto is not None
    body = sdp("127.0.0.2", party.port, "RTP/SAVP", offer.crypto.tag, CARRIER_KEY)
    carrier.answer(invite, body, "csrtp")
    next_request(carrier, "ACK")
    party.srtp = sessions(CARRIER_KEY, offer.crypto.key_salt)
    party.target = ("127.0.0.1", offer.port)
    return invite


def carrier_hung_up(carrier: SipClient) -> None:
    """Wait (up to 30 s) for the edge's BYE at the carrier, and answer it."""
    carrier.sock.setblocking(False)
    deadline = time.monotonic() + 30
    while "BYE" not in phone_requests(carrier) and time.monotonic() < deadline:
        time.sleep(0.05)
    carrier.sock.setblocking(True)


def recorded_dial_out(
    server: WebServer, port: int, password: str, carrier: SipClient, tmp_path: Path
) -> None:
    """alice's phone dials a German number, which a rule says must be recorded, offering
    best-effort SRTP (RTP/AVP with RTP/SAVP and its key as an RFC 5939 capability): it is
    answered RTP/SAVP with our key and `a=acfg`, the carrier talks SRTP too, each hears the
    other, and the recording holds both tones."""
    number = "+49301234567"
    at_phone, at_carrier = Party("127.0.0.1", 440.0, None), Party("127.0.0.2", 880.0, None)
    key = base64.b64encode(PHONE_KEY).decode()
    capability = f"a=tcap:1 RTP/SAVP\r\na=acap:1 crypto:2 {SUITE} inline:{key}\r\n"
    best_effort = sdp("127.0.0.1", at_phone.port) + f"{capability}a=pcfg:1 t=1 a=1\r\n".encode()
    dialler = phone_dials(port, password, number, at_phone.port, best_effort)
    try:
        invite = carrier_answers_srtp(carrier, at_carrier)
        dialler.sock.settimeout(60)
        statuses, reply = dialler.until_final()
        assert statuses[-1] == 200, statuses
        ours = parse_audio(reply.body)
        assert ours.crypto is not None and ours.crypto.tag == 2, reply.body
        answered = reply.body.decode()
        assert " RTP/SAVP 0\r\n" in answered and "a=acfg:1 t=1 a=1\r\n" in answered, answered
        at_phone.srtp = sessions(PHONE_KEY, ours.crypto.key_salt)
        at_phone.target = ("127.0.0.1", ours.port)
        aor, uri, to = (
            "sip:alice@callgate",
            f"sip:{number}@127.0.0.1:{port}",
            reply.headers.get("to"),
        )
        dialler.send(in_dialog(dialler, "ACK", aor, uri, to))
        talk(at_phone, at_carrier)
        carrier_reinvites(carrier, invite, at_phone, at_carrier)
        signed_bye(dialler, password, uri, to)
        carrier_hung_up(carrier)
    finally:
        dialler.close()
        at_phone.sock.close()
        at_carrier.sock.close()
    # the recorder got the carrier's audio decrypted: 880 Hz on the callee's channel
    check_recording(server, dialled_call_id(server, number), tmp_path, 440.0, 880.0)
    (cdr,) = cdr_of(server, number)
    assert cdr["encryption"] == "sdes-srtp", cdr


def carrier_reinvites(
    carrier: SipClient, invite: SipRequest, at_phone: Party, at_carrier: Party
) -> None:
    """The SRTP carrier of an answered dial-out re-INVITEs (sip_reoffers.py, with the call's SDES
    keys): a refresh is answered RTP/SAVP with our key; a new key of its own, or plain RTP, gets
    488 and nothing changes; `a=inactive` (hold, RFC 3264 §8.4) is answered `inactive`, still
    with our key, the carrier gets nothing and the phone hears silence; a resume and SRTP flows
    both ways again under the same keys."""
    ours = parse_audio(invite.body).crypto
    assert ours is not None
    answered = sdp("127.0.0.2", at_carrier.port, "RTP/SAVP", ours.tag, CARRIER_KEY)

    def our_key(reply: Any, direction: str) -> None:
        assert reply.status == 200, (reply.status, reply.reason)
        body = parse_audio(reply.body)
        assert body.crypto is not None and body.crypto.key_salt == ours.key_salt, reply.body
        assert " RTP/SAVP 0" in reply.body.decode() and f"a={direction}\r\n" in reply.body.decode()

    our_key(their_reinvite(carrier, invite, "csrtp", answered), "sendrecv")  # a refresh
    for body in (
        sdp("127.0.0.2", at_carrier.port, "RTP/SAVP", ours.tag, bytes(range(1, 31))),
        sdp("127.0.0.2", at_carrier.port),
    ):
        refused = their_reinvite(carrier, invite, "csrtp", body)
        assert (refused.status, refused.reason) == (
            488, "Not Acceptable Here (SRTP keys cannot change during the call)"
        ), refused.reason  # fmt: skip
    our_key(their_reinvite(carrier, invite, "csrtp", answered + b"a=inactive\r\n"), "inactive")
    at_carrier.take()
    at_carrier.heard.clear()
    at_phone.heard.clear()
    deadline = time.monotonic() + TALK_DEADLINE_S
    while bytes(160 * 25 * [0xFF]) not in at_phone.heard and time.monotonic() < deadline:
        at_phone.send()  # only the phone talks; the held carrier sends nothing
        at_phone.take()
        at_carrier.take()
        time.sleep(0.02)
    assert bytes(160 * 25 * [0xFF]) in at_phone.heard, bytes(at_phone.heard[-320:])
    assert at_carrier.heard == bytearray(), len(at_carrier.heard)
    resumed = their_reinvite(carrier, invite, "csrtp", answered + b"a=sendrecv\r\n")
    our_key(resumed, "sendrecv")
    at_phone.heard.clear()
    talk(at_phone, at_carrier)


def cli_dial_out(server: WebServer, carrier: SipClient, tmp_path: Path) -> None:
    """alice's CLI softphone dials a UK number for 3 s: the carrier talks SRTP, each hears the
    other, the CLI hangs up (BYE to the carrier)."""
    heard = tmp_path / "alice-hears.wav"
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="alice", CALLGATE_PASSWORD=PASSWORDS["alice"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-alice"),
    )  # fmt: skip
    alice = subprocess.Popen(
        [*COMMAND, "call", "+442079460000", "--tone", "660", "--duration", "3", "--json",
         "--record", str(heard)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    at_carrier = Party("127.0.0.2", 880.0, None)
    try:
        invite = carrier_answers_srtp(carrier, at_carrier)
        assert invite.uri.startswith("sip:+442079460000@"), invite.uri
        carrier.sock.setblocking(False)
        methods: list[str] = []
        deadline = time.monotonic() + 60  # alice hangs up after 3 s
        while "BYE" not in methods and time.monotonic() < deadline:
            at_carrier.send()
            at_carrier.take()
            methods += phone_requests(carrier)
            time.sleep(0.02)
        carrier.sock.setblocking(True)
        assert "BYE" in methods, methods
        assert at_carrier.hears(660.0), len(at_carrier.heard)
        out, errors = alice.communicate(timeout=60)
        assert alice.returncode == 0, errors
    finally:
        if alice.poll() is None:
            alice.kill()
            alice.communicate()
        at_carrier.sock.close()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert "connected" in [e["event"] for e in events], events
    assert abs(dominant_frequency(heard) - 880.0) < 5.0
    (cdr,) = cdr_of(server, "+442079460000")
    assert (cdr["direction"], cdr["reason"]) == ("outbound", "hangup"), cdr
    assert cdr["answer_at"] is not None and cdr["encryption"] == "sdes-srtp", cdr


def emergency_call(port: int, password: str, carrier: SipClient) -> None:
    """alice's phone dials 112: the carrier is offered SRTP, answers plain RTP, and the call is
    connected all the same (200 to the phone), until the phone hangs up."""
    at_phone = Party("127.0.0.1", 440.0, None)
    dialler = phone_dials(port, password, "112", at_phone.port)
    try:
        invite = next_request(carrier, "INVITE")
        assert invite.uri.startswith("sip:112@"), invite.uri
        offered_key(invite)
        carrier.answer(invite, sdp("127.0.0.2", 40004), "sos")
        next_request(carrier, "ACK")
        dialler.sock.settimeout(60)
        statuses, reply = dialler.until_final()
        assert statuses[-1] == 200, statuses
        uri, to = f"sip:112@127.0.0.1:{port}", reply.headers.get("to")
        dialler.send(in_dialog(dialler, "ACK", "sip:alice@callgate", uri, to))
        signed_bye(dialler, password, uri, to)
        carrier_hung_up(carrier)
    finally:
        dialler.close()
        at_phone.sock.close()
