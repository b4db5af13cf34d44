"""re-INVITEs in calls the edge placed (docs/sip.md, "Hold and session refresh"), over real
sockets against `callgate serve --sip-listen`: the phone network (a carrier on 127.0.0.2) calls
alice's DID and her registered desk phone answers, then re-INVITEs that call; alice's desk phone
dials a number and the carrier, then the phone, re-INVITE the dialled-out call.

Each side's re-INVITE: a session refresh gets the same answer (one codec, version above our
offer's); hold (`a=inactive`) is answered `inactive`, nothing is sent to the held party and the
other party hears G.711 silence in its place; a new address resumes the call there; a codec
change or a forbidden address gets `488` (with its Warning) and changes nothing; an offerless
re-INVITE gets our SDP as the offer, and a re-INVITE before its ACK `491`; a re-INVITE from
another host with the dialog's identifiers `403`, audited. The carrier's re-INVITE in the early
dialog, while our INVITE still rings, is `491` (RFC 3261 §14.2). An INVITE or re-INVITE that
`Require`s an extension we lack (`100rel`) gets `420` with `Unsupported`; session timers (RFC
4028) asked for in the INVITE or a refresh are in our 2xx (the party refreshes), one below our
Min-SE gets `422`. And, at an edge in the test's process: a phone's re-INVITE while its own
INVITE rings gets `500` with Retry-After, an INVITE with that call's Call-ID and no To tag
`482`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callgate.accounts.service import AccountService
from callgate.media.rtp_leg import PCMU, RtpPacket, build_rtp, parse_rtp
from callgate.records.audit import AuditLog
from callgate.sip.credentials import CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.message import SipRequest, SipResponse, parse_datagram, serialize
from callgate.sip.responses import response
from callgate.sip.sdp import parse_audio
from callgate.storage.db import open_store, sqlite_url
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
    client_get,
    phone_sdp,
    register_phone,
    reinvite,
    signed_bye,
)

pytestmark = pytest.mark.timeout(180)
DID, NUMBER = "+15551230001", "+442079460001"
REALM = "callgate.test"
SILENT = {0xFF, 0x7F}  # G.711 µ-law zero (media/caller_fill.py)


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WebServer, int, dict[str, str], SipClient]]:
    """One server for the module: a trunk whose carrier is a SipClient on 127.0.0.2 (its DID
    rings alice; alice, a trader, may dial out through it) and alice's desk credential."""
    root = tmp_path_factory.mktemp("reinvite")
    device: dict[str, str] = {}

    def prepare(data: Path) -> None:
        added = callgate("sip", "add", "alice", "desk", "--data-dir", str(data), "--json",
                         cwd=root)  # fmt: skip
        assert added.returncode == 0, added.stderr
        device.update(json.loads(added.stdout))
        for args in (("create", "traders"), ("add-member", "traders", "alice")):
            done = callgate("group", *args, "--data-dir", str(data), cwd=root)
            assert done.returncode == 0, done.stderr

    port = free_port()
    carrier = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    trunks = json.dumps([{"name": "carrier", "addresses": ["127.0.0.2"], "dids": {DID: "alice"},
                          "outbound": f"127.0.0.2:{carrier.local[1]}",
                          "dial_out_groups": ["traders"], "caller_id": "+15551230000",
                          "options_interval": 0}])  # fmt: skip
    env = {
        "CALLGATE_SIP__TRUNKS": trunks,
        "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32, 127.0.0.2/32",
    }
    try:
        for server in serve(root, "--sip-listen", f"127.0.0.1:{port}", prepare=prepare, **env):
            yield server, port, device, carrier
    finally:
        carrier.close()


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def sdp(sock: socket.socket, pts: str = "0", version: int = 2, direction: str = "",
        address: str | None = None) -> bytes:  # fmt: skip
    """A party's SDP for its RTP socket `sock` (or `address`); `version` of its o= line."""
    host, port = sock.getsockname()[:2]
    host = address or host
    body = (
        f"v=0\r\no=- 2 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pts}\r\n"
    )
    if "101" in pts.split():
        body += "a=rtpmap:101 telephone-event/8000\r\n"
    return (body + (f"a={direction}\r\n" if direction else "")).encode()


def next_message(client: SipClient, want: Callable[[SipRequest | SipResponse], bool]) -> Any:
    """The next message `want` takes (retransmissions and ACKs before it are skipped)."""
    client.sock.settimeout(30)
    while True:
        data, _ = client.sock.recvfrom(65536)
        message = parse_datagram(data)
        if want(message):
            return message


def request_of(method: str) -> Callable[[SipRequest | SipResponse], bool]:
    return lambda m: isinstance(m, SipRequest) and m.method == method


def final(m: SipRequest | SipResponse) -> bool:
    return isinstance(m, SipResponse) and m.status >= 200


def final_to(client: SipClient) -> Callable[[SipRequest | SipResponse], bool]:
    """The final response to the client's latest request (a retransmitted earlier 2xx is not)."""
    cseq = client.cseq
    return lambda m: final(m) and (m.headers.get("cseq") or "").split()[0] == str(cseq)


def in_dialog(client: SipClient, invite: SipRequest, tag: str, method: str, body: bytes = b"",
              extra: tuple[str, ...] = (), cseq: int | None = None) -> bytes:  # fmt: skip
    """A request from the party our `invite` reached, which answered it with To-tag `tag`
    (RFC 3261 §12.2.1.1: From and To swapped, to our Contact)."""
    contact = re.search(r"<([^>]+)>", invite.headers.get("contact") or "")
    assert contact is not None, invite.headers.get("contact")
    host, port = client.local
    if cseq is None:
        client.cseq += 1
    lines = [
        f"{method} {contact.group(1)} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        f"From: {invite.headers.get('to')};tag={tag}",
        f"To: {invite.headers.get('from')}",
        f"Call-ID: {invite.headers.get('call-id')}",
        f"CSeq: {cseq or client.cseq} {method}",
        "Max-Forwards: 70",
        f"Contact: <sip:party@{host}:{port}>",
        *extra,
        *(["Content-Type: application/sdp"] if body else []),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def their_reinvite(
    client: SipClient, invite: SipRequest, tag: str, body: bytes,
    credential: tuple[str, str] | None = None, ack: bool = True,
) -> SipResponse:  # fmt: skip
    """The re-INVITE of the party `invite` reached, signed with its device `credential` when
    challenged (RFC 3261 §22); its final response, acknowledged unless `ack` is False."""
    client.send(in_dialog(client, invite, tag, "INVITE", body))
    reply: SipResponse = next_message(client, final_to(client))
    if reply.status == 401 and credential is not None:
        client.send(in_dialog(client, invite, tag, "ACK", cseq=client.cseq))
        uri = re.search(r"<([^>]+)>", invite.headers.get("contact") or "")
        assert uri is not None
        auth = authorization(challenge_for(reply, "SHA-256"), *credential, "INVITE", uri.group(1))
        client.send(in_dialog(client, invite, tag, "INVITE", body, (auth,)))
        reply = next_message(client, final_to(client))
    if ack:
        client.send(in_dialog(client, invite, tag, "ACK", cseq=client.cseq))
    return reply


class Media:
    """Two parties' RTP sockets, each sending a PCMU tone to the server every 20 ms while
    `sending`, each keeping what it hears."""

    def __init__(self, ends: dict[str, tuple[socket.socket, tuple[str, int], float]]) -> None:
        self.ends = ends
        self.sending = set(ends)
        self.heard: dict[str, list[bytes]] = {name: [] for name in ends}
        self._n = 0

    def until(self, done: Callable[[], bool], what: str) -> None:
        """Send and listen until `done()` (up to 30 s: an outcome, not luck)."""
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, f"{what}: {[len(h) for h in self.heard.values()]}"
            for name in self.sending:
                sock, target, hz = self.ends[name]
                packet = RtpPacket(PCMU, False, self._n % 65536, self._n * 160, 0x5A5A,
                                   tone_ulaw(hz, self._n * 160))  # fmt: skip
                sock.sendto(build_rtp(packet), target)
            self._n += 1
            time.sleep(0.02)
            self.collect()

    def collect(self) -> None:
        for name, (sock, _, _) in self.ends.items():
            with contextlib.suppress(BlockingIOError):
                while True:
                    self.heard[name].append(parse_rtp(sock.recv(2048)).payload)

    def drain(self, name: str) -> None:
        self.collect()
        self.heard[name].clear()

    def tones(self, name: str) -> list[bytes]:
        return [p for p in self.heard[name] if not set(p) <= SILENT]

    def silence(self, name: str) -> list[bytes]:
        return [p for p in self.heard[name] if set(p) <= SILENT]

    def hears(self, name: str, hz: float) -> bool:
        tones = self.tones(name)
        return len(tones) >= 60 and abs(dominant_hz(ulaw_decode(b"".join(tones[-50:]))) - hz) < 10

    def move(self, name: str, sock: socket.socket) -> None:
        _, target, hz = self.ends[name]
        self.ends[name] = (sock, target, hz)
        self.heard[name] = []


def origin(body: bytes) -> tuple[str, str]:
    found = re.search(rb"o=callgate (\d+) (\d+) ", body)
    assert found is not None, body
    return found.group(1).decode(), found.group(2).decode()


def audit_actions(server: WebServer, call_id: str) -> list[str]:
    trail = client_get(server, f"/api/audit/entries?object=call:{call_id}", "admin")
    return [e["action"] for e in trail["items"]]


def test_a_phone_we_called_refreshes_holds_and_moves(
    edge: tuple[WebServer, int, dict[str, str], SipClient],
) -> None:
    server, port, device, carrier = edge
    credential = (device["username"], device["password"])
    phone = register_phone(port, *credential)
    rtp, moved_rtp, carrier_rtp = udp("127.0.0.1"), udp("127.0.0.1"), udp("127.0.0.2")
    intruder = SipClient(("127.0.0.1", port), bind="127.0.0.3")
    try:
        # an INVITE that requires an extension we lack (420, RFC 3261 §8.2.2.3), one asking
        # for a session interval below our Min-SE (422, RFC 4028 §9)
        did = f"sip:{DID}@127.0.0.1:{port}"
        headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
        body = sdp(carrier_rtp)
        refused = []
        for extra in (["Require: 100rel, timer"], ["Supported: timer", "Session-Expires: 60"]):
            carrier.call_id = secrets.token_hex(8)
            carrier.send(carrier.request("INVITE", "sip:+442071230000@pstn", [*extra, *headers],
                                         to=did, body=body))  # fmt: skip
            refused.append(carrier.until_final()[1])
            ack = carrier.request("ACK", "sip:+442071230000@pstn", to=did, cseq=carrier.cseq)
            carrier.send(ack)
        bad, short = refused
        assert (bad.status, bad.headers.get("unsupported")) == (420, "100rel"), bad.reason
        assert (short.status, short.headers.get("min-se")) == (422, "90"), short.reason
        # the phone network calls alice's DID with a session timer; her desk phone answers
        carrier.call_id = secrets.token_hex(8)
        timer = ["Supported: timer", "Session-Expires: 1800", "Min-SE: 90", *headers]
        carrier.send(carrier.request("INVITE", "sip:+442071230000@pstn", timer, to=did,
                                     body=body))  # fmt: skip
        phone.sock.settimeout(60)
        invite: SipRequest = next_message(phone, request_of("INVITE"))
        ours = parse_audio(invite.body)
        session, first_version = origin(invite.body)
        answered = sdp(rtp, "0 101")
        phone.answer(invite, answered, "ph1", "alice")
        carrier.sock.settimeout(60)
        _, ok = carrier.until_final()
        assert ok.status == 200, (ok.status, ok.reason)
        # the carrier refreshes, we watch (RFC 4028 §9)
        assert ok.headers.get("session-expires") == "1800;refresher=uac"
        assert ok.headers.get("require") == "timer"
        to = f"To: {ok.headers.get('to')}".encode()
        carrier.send(carrier.request("ACK", "sip:+442071230000@pstn", to=did, cseq=carrier.cseq)
                     .replace(f"To: <{did}>".encode(), to))  # fmt: skip
        media = Media({
            "phone": (rtp, ("127.0.0.1", ours.port), 880.0),
            "carrier": (carrier_rtp, ("127.0.0.1", parse_audio(ok.body).port), 440.0),
        })  # fmt: skip
        media.until(lambda: media.hears("phone", 440) and media.hears("carrier", 880), "talk")

        # a session refresh (its answer again): our answer, one codec, one version above our
        # offer's, the same each time (RFC 4028, RFC 3264 §8)
        refresh = their_reinvite(phone, invite, "ph1", answered, credential)
        assert refresh.status == 200, (refresh.status, refresh.reason)
        assert origin(refresh.body) == (session, str(int(first_version) + 1))
        assert f"m=audio {ours.port} RTP/AVP 0 101\r\n".encode() in refresh.body, refresh.body
        again = their_reinvite(phone, invite, "ph1", answered, credential)
        assert (again.status, again.body) == (200, refresh.body)

        # hold (RFC 3264 §8.4): answered inactive; nothing goes to the phone, and the carrier
        # hears silence where the phone was
        held = their_reinvite(phone, invite, "ph1", sdp(rtp, "0 101", 3, "inactive"), credential)
        assert held.status == 200 and b"a=inactive\r\n" in held.body, held.body
        media.sending.discard("phone")
        media.drain("phone")
        media.drain("carrier")
        media.until(lambda: len(media.silence("carrier")) >= 25, "silence for the held phone")
        assert media.heard["phone"] == []

        # refused, the session unchanged (RFC 3261 §14.2): another codec, a forbidden address
        pcma = their_reinvite(phone, invite, "ph1", sdp(rtp, "8", 4), credential)
        assert (pcma.status, pcma.reason) == (
            488, "Not Acceptable Here (the codec cannot change during the call)"
        )  # fmt: skip
        cloud = sdp(rtp, "0 101", 4, address="169.254.169.254")
        forbidden = their_reinvite(phone, invite, "ph1", cloud, credential)
        assert forbidden.status == 488 and "169.254.169.254" in (
            forbidden.headers.get("warning") or ""
        ), forbidden.reason
        # resumed at another port, its codecs in another order: PCMU goes on there
        resume = sdp(moved_rtp, "8 0 101", 5)
        resumed = their_reinvite(phone, invite, "ph1", resume, credential)
        assert resumed.status == 200 and b"a=sendrecv\r\n" in resumed.body, resumed.body
        assert origin(resumed.body) == (session, str(int(first_version) + 3))
        media.move("phone", moved_rtp)
        media.sending.add("phone")
        media.heard["carrier"].clear()
        media.until(lambda: media.hears("phone", 440) and media.hears("carrier", 880), "resume")
        media.drain("phone")  # nothing more at the old port, then
        assert received(rtp) == 0

        # offerless: our SDP is the offer; until its ACK, a crossing re-INVITE is 491
        offered = their_reinvite(phone, invite, "ph1", b"", credential, ack=False)
        assert offered.status == 200 and offered.body == resumed.body, offered.body
        offered_cseq = phone.cseq
        crossing = their_reinvite(phone, invite, "ph1", sdp(moved_rtp, "0 101", 6), credential)
        assert (crossing.status, crossing.reason) == (491, "Request Pending")
        phone.send(in_dialog(phone, invite, "ph1", "ACK", sdp(moved_rtp, "0 101", 5),
                             cseq=offered_cseq))  # fmt: skip
        later = their_reinvite(phone, invite, "ph1", resume, credential)  # a refresh again
        assert (later.status, later.body) == (200, resumed.body)

        # someone else with the dialog's identifiers: 403, the call goes on
        intruder.cseq = phone.cseq + 10
        forged = their_reinvite(intruder, invite, "ph1", sdp(moved_rtp, "0 101", 9))
        assert (forged.status, forged.reason) == (403, "Forbidden (not a party to this dialog)")

        # the carrier hangs up: the phone gets our BYE
        bye = carrier.request("BYE", "sip:+442071230000@pstn", to=did).replace(
            f"To: <{did}>".encode(), to
        )
        carrier.send(bye)
        assert next_message(carrier, final).status == 200
        phone_bye: SipRequest = next_message(phone, request_of("BYE"))
        phone.send(serialize(response(phone_bye, 200, "OK")))
        # the dialog is gone: a re-INVITE in it is 481 (RFC 3261 §12.2.2), not a new call
        gone = their_reinvite(phone, invite, "ph1", resume, credential)
        assert (gone.status, gone.reason) == (481, "Call/Transaction Does Not Exist")
        actions = audit_actions(server, invite.headers.get("call-id") or "")
        assert actions.count("sip.media.forbidden") == 1 and "sip.dialog.forged" in actions
    finally:
        for sock in (rtp, moved_rtp, carrier_rtp):
            sock.close()
        phone.close()
        intruder.close()


def received(sock: socket.socket) -> int:
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(2048)
            count += 1
    return count


def test_a_dialled_out_call_takes_reinvites_from_both_sides(
    edge: tuple[WebServer, int, dict[str, str], SipClient],
) -> None:
    server, port, device, carrier = edge
    user, password = device["username"], device["password"]
    rtp, carrier_rtp, moved_rtp = udp("127.0.0.1"), udp("127.0.0.2"), udp("127.0.0.2")
    phone = SipClient(("127.0.0.1", port))
    intruder = SipClient(("127.0.0.1", port), bind="127.0.0.3")
    try:
        # alice's desk phone dials a number (digest), the carrier gets our INVITE
        aor, number = "sip:alice@callgate", f"sip:{NUMBER}@127.0.0.1:{port}"
        headers = [f"Contact: <sip:alice@127.0.0.1:{phone.local[1]}>",
                   "Content-Type: application/sdp"]  # fmt: skip
        offer = phone_sdp(rtp.getsockname()[1])
        first = phone.exchange(phone.request("INVITE", aor, headers, to=number, body=offer))
        phone.send(phone.request("ACK", aor, to=number, cseq=phone.cseq))
        auth = authorization(challenge_for(first, "SHA-256"), user, password, "INVITE", number)
        phone.send(phone.request("INVITE", aor, [auth, *headers], to=number, body=offer))
        carrier.sock.settimeout(60)
        invite: SipRequest = next_message(carrier, request_of("INVITE"))
        session, first_version = origin(invite.body)
        ours = parse_audio(invite.body)
        # the carrier rings, and re-INVITEs in that early dialog: our INVITE is in progress
        carrier.send(serialize(response(invite, 180, "Ringing", to_tag="cd")))
        early = their_reinvite(carrier, invite, "cd", sdp(carrier_rtp, "0 101"))
        assert (early.status, early.reason) == (491, "Request Pending")
        answered = sdp(carrier_rtp, "0 101")
        extra = [("Contact", "<sip:gw@127.0.0.2>"), ("Content-Type", "application/sdp")]
        carrier.send(serialize(response(invite, 200, "OK", extra, body=answered, to_tag="cd")))
        _, ok = phone.until_final()
        assert ok.status == 200, (ok.status, ok.reason)
        phone.send(phone.request("ACK", aor, to=number, cseq=phone.cseq).replace(
            f"To: <{number}>".encode(), f"To: {ok.headers.get('to')}".encode()
        ))  # fmt: skip
        media = Media({
            "phone": (rtp, ("127.0.0.1", parse_audio(ok.body).port), 880.0),
            "carrier": (carrier_rtp, ("127.0.0.1", ours.port), 440.0),
        })  # fmt: skip
        media.until(lambda: media.hears("phone", 440) and media.hears("carrier", 880), "talk")

        # the carrier refreshes the session: the same answer each time, one version up
        refresh = their_reinvite(carrier, invite, "cd", answered, ack=False)
        assert refresh.status == 200, (refresh.status, refresh.reason)
        # not ACKed yet: our 200 comes again (UDP, RFC 3261 §13.3.1.4) until the ACK
        again: SipResponse = next_message(carrier, final_to(carrier))
        assert (again.status, again.body) == (200, refresh.body)
        carrier.send(in_dialog(carrier, invite, "cd", "ACK", cseq=carrier.cseq))
        assert origin(refresh.body) == (session, str(int(first_version) + 1))
        assert f"m=audio {ours.port} RTP/AVP 0 101\r\n".encode() in refresh.body, refresh.body
        assert their_reinvite(carrier, invite, "cd", answered).body == refresh.body
        # a session timer asked for in a refresh (RFC 4028 §9): in our 2xx, the carrier refreshes
        timed = in_dialog(carrier, invite, "cd", "INVITE", answered,
                          ("Supported: timer", "Session-Expires: 600;refresher=uac"))  # fmt: skip
        carrier.send(timed)
        timed_ok: SipResponse = next_message(carrier, final_to(carrier))
        carrier.send(in_dialog(carrier, invite, "cd", "ACK", cseq=carrier.cseq))
        assert (timed_ok.status, timed_ok.body) == (200, refresh.body)
        assert timed_ok.headers.get("session-expires") == "600;refresher=uac"
        # the carrier holds `sendonly` with no music on hold (RFC 3264 §8.4): nothing goes to
        # it, the phone hears silence in its place
        held = their_reinvite(carrier, invite, "cd", sdp(carrier_rtp, "0 101", 3, "sendonly"))
        assert held.status == 200 and b"a=recvonly\r\n" in held.body, held.body
        media.sending.discard("carrier")
        media.drain("carrier")
        media.drain("phone")
        media.until(lambda: len(media.silence("phone")) >= 25, "silence for the held carrier")
        assert media.heard["carrier"] == []
        # an extension we do not have: 420 (RFC 3261 §8.2.2.3); another codec: 488, nothing
        # changes; someone else: 403
        reliable = in_dialog(carrier, invite, "cd", "INVITE", answered, ("Require: 100rel",))
        carrier.send(reliable)
        bad: SipResponse = next_message(carrier, final_to(carrier))
        carrier.send(in_dialog(carrier, invite, "cd", "ACK", cseq=carrier.cseq))
        assert (bad.status, bad.headers.get("unsupported")) == (420, "100rel"), bad.reason
        pcma = their_reinvite(carrier, invite, "cd", sdp(carrier_rtp, "8", 4))
        assert pcma.status == 488, (pcma.status, pcma.reason)
        intruder.cseq = carrier.cseq + 10
        forged = their_reinvite(intruder, invite, "cd", sdp(carrier_rtp, "0 101", 9))
        assert (forged.status, forged.reason) == (403, "Forbidden (not a party to this dialog)")
        # resumed at another port
        resumed = their_reinvite(carrier, invite, "cd", sdp(moved_rtp, "0 101", 4))
        assert resumed.status == 200 and b"a=sendrecv\r\n" in resumed.body, resumed.body
        media.move("carrier", moved_rtp)
        media.sending.add("carrier")
        media.heard["phone"].clear()
        media.until(lambda: media.hears("phone", 440) and media.hears("carrier", 880), "resume")

        # now the phone holds the dialled-out call (its own re-INVITE, digest-signed)
        phone_held = reinvite(phone, ok, port, user, password, phone_sdp(rtp.getsockname()[1],
                                                                        direction="inactive"))  # fmt: skip
        assert phone_held.status == 200 and b"a=inactive\r\n" in phone_held.body
        # its packets still in flight (here: it keeps sending) are dropped, the silence goes on
        media.drain("phone")
        media.drain("carrier")
        media.until(lambda: len(media.silence("carrier")) >= 25, "silence for the held phone")
        assert media.tones("carrier") == []
        media.sending.discard("phone")
        media.until(lambda: len(media.silence("carrier")) >= 75, "silence after it stopped")
        assert media.heard["phone"] == [] and media.tones("carrier") == []

        # the phone hangs up: the carrier gets our BYE
        assert signed_bye(phone, ok, port, user, password).status == 200
        carrier_bye: SipRequest = next_message(carrier, request_of("BYE"))
        carrier.send(serialize(response(carrier_bye, 200, "OK")))
        actions = audit_actions(server, invite.headers.get("call-id") or "")
        assert "sip.dialog.forged" in actions, actions
    finally:
        for sock in (rtp, carrier_rtp, moved_rtp):
            sock.close()
        phone.close()
        intruder.close()


def test_a_softphones_number_call_takes_the_carriers_reinvites(
    edge: tuple[WebServer, int, dict[str, str], SipClient], tmp_path: Path
) -> None:
    """alice's CLI softphone dials the number (runtime/sip_numbers.py): the carrier refreshes
    the session and holds it by re-INVITE as in any call (no `488`, which would make a
    refreshing carrier drop the call), then hangs up: the softphone hears `hangup`."""
    server, _, _, carrier = edge
    carrier_rtp = udp("127.0.0.2")
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="alice", CALLGATE_PASSWORD=PASSWORDS["alice"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg"),
    )  # fmt: skip
    cli = subprocess.Popen(
        [*COMMAND, "call", NUMBER, "--json", "--tone", "660", "--duration", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        carrier.sock.settimeout(60)
        invite: SipRequest = next_message(carrier, request_of("INVITE"))
        session, first_version = origin(invite.body)
        answered = sdp(carrier_rtp, "0 101")
        extra = [("Contact", "<sip:gw@127.0.0.2>"), ("Content-Type", "application/sdp")]
        carrier.send(serialize(response(invite, 200, "OK", extra, body=answered, to_tag="nc")))
        assert cli.stdout is not None
        said = [json.loads(cli.stdout.readline())]
        while said[-1]["event"] not in ("connected", "ended"):  # the softphone has the answer
            said.append(json.loads(cli.stdout.readline()))
        assert said[-1]["event"] == "connected", said
        refresh = their_reinvite(carrier, invite, "nc", answered)
        assert refresh.status == 200, (refresh.status, refresh.reason)
        assert origin(refresh.body) == (session, str(int(first_version) + 1))
        assert parse_audio(refresh.body).port == parse_audio(invite.body).port
        held = their_reinvite(carrier, invite, "nc", sdp(carrier_rtp, "0 101", 3, "inactive"))
        assert held.status == 200 and b"a=inactive\r\n" in held.body, held.body
        carrier.send(in_dialog(carrier, invite, "nc", "BYE"))
        assert next_message(carrier, final_to(carrier)).status == 200
        out, errors = cli.communicate(timeout=90)
        said = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert said and said[-1]["event"] == "ended", (said, errors)
        assert said[-1]["reason"] == "hangup", said
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        carrier_rtp.close()


class Ringing:
    """A call handler that rings and never answers, until the phone gives up."""

    async def invite(self, call: InboundCall) -> None:
        call.ringing()
        await call.ended.wait()


async def test_a_reinvite_before_the_answer_and_a_merged_invite(tmp_path: Path) -> None:
    """A phone's re-INVITE in the early dialog of its own INVITE, which has no final response
    yet, gets `500` with Retry-After (RFC 3261 §14.2), and an INVITE with the ringing call's
    Call-ID but no To tag `482` (a merged request, §8.2.2.2); the call still rings and is
    cancelled (487)."""
    store = open_store(sqlite_url(tmp_path))
    sip_edge: SipEdge | None = None
    try:
        AccountService(store, REALM).create_user("alice", None, (), None)
        credentials = CredentialStore(store, REALM)
        device, password = credentials.add("alice", "desk", "test")
        sip_edge = SipEdge(credentials, AuditLog(store))
        sip_edge.take_calls(Ringing())
        await sip_edge.start(udp=[("127.0.0.1", 0)])
        port = sip_edge.bound[0][1][1]

        def phone_side() -> list[SipResponse]:
            phone = SipClient(("127.0.0.1", port))
            aor, bob = "sip:alice@callgate", f"sip:bob@127.0.0.1:{port}"

            def signed(to: str | None = None) -> SipResponse:
                """An INVITE (in the dialog `to` names, if given), its digest answered."""

                def invite(headers: list[str]) -> bytes:
                    data = phone.request("INVITE", aor, headers, to=bob)
                    return (
                        data if to is None else data.replace(f"To: <{bob}>".encode(), to.encode())
                    )

                phone.send(invite([]))
                challenge = next_message(phone, final)
                assert challenge.status == 401, challenge.status
                phone.send(phone.request("ACK", aor, to=bob, cseq=phone.cseq))
                auth = authorization(challenge_for(challenge, "SHA-256"), device.username,
                                     password, "INVITE", bob)  # fmt: skip
                phone.send(invite([auth]))
                return next_message(phone, lambda m: isinstance(m, SipResponse) and m.status > 100)

            try:
                ringing = signed()
                assert ringing.status == 180, ringing.status
                first_cseq = phone.cseq
                early = signed(to=f"To: {ringing.headers.get('to')}")
                merged = signed()
                phone.send(phone.request("CANCEL", aor, to=bob, cseq=first_cseq))
                return [early, merged, next_message(phone, final)]
            finally:
                phone.close()

        early, merged, _ = await asyncio.to_thread(phone_side)
        assert (early.status, early.reason) == (500, "Server Internal Error (INVITE pending)")
        assert 0 <= int(early.headers.get("retry-after") or "-1") <= 10
        assert (merged.status, merged.reason) == (482, "Loop Detected")
    finally:
        if sip_edge is not None:
            await sip_edge.close()
        store.close()
