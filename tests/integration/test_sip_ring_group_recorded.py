"""A ring group's DID under a recording rule, over real sockets (`callgate serve --sip-listen`):
the carrier's call is anchored and recorded whoever answers (docs/sip.md, "Ring groups"), and
two desk phones talk G.722 to each other through the bridges unchanged (docs/sip.md, "G.722").

The group "desk" rings alice (a registered SIP phone), bob (the CLI softphone) and carol (a
WebSocket device that never answers); only calls to alice must be recorded (a mixed group: the
call is recorded if any member's rule says so). The carrier's call is answered by bob's CLI,
then by alice's phone: each time the members ring only once the anchor wrote the carrier's
first packets, the losers stop ringing (`answered-elsewhere`, CANCEL "completed elsewhere")
without ever reaching the recording, each party hears the other and was told the call is
recorded, the one CDR names the member who answered, and the exported recording holds the
carrier left and that member right, names the member, and verifies offline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from callgate.media.rtp_leg import G722, PCMU, RtpPacket, build_rtp
from callgate.sip.message import SipResponse, serialize
from callgate.sip.responses import response
from callgate.storage.db import open_store, sqlite_url
from tests.cheap_passwords import template_accounts
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
from tests.integration.test_sip_edge import (
    TALK_DEADLINE_S,
    beeped,
    check_recording,
    client_get,
    in_dialog,
    next_request,
    read_events,
    received_rtp,
    signed_bye,
)

CAROL = "carol-password-3"
DID = "+15551230002"  # the group "desk"'s


@pytest.fixture
def group_server(tmp_path: Path) -> Iterator[tuple[WebServer, int, dict[str, str]]]:
    devices: dict[str, str] = {}

    def prepare(data: Path) -> None:
        store = open_store(sqlite_url(data))
        try:
            template_accounts(store).create_user("carol", password=CAROL, role="user")
        finally:
            store.close()
        for handle in ("alice", "bob"):
            added = callgate("sip", "add", handle, "desk", "--data-dir", str(data), "--json",
                             cwd=tmp_path)  # fmt: skip
            assert added.returncode == 0, added.stderr
            credential = json.loads(added.stdout)
            devices[handle] = credential["username"]
            devices[f"{handle}_password"] = credential["password"]
        for args in (("create", "desk"), ("add-member", "desk", "alice"),
                     ("add-member", "desk", "bob"), ("add-member", "desk", "carol")):  # fmt: skip
            done = callgate("group", *args, "--data-dir", str(data), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
        # only calls to alice must be recorded: the group's calls are, whoever answers
        rule = callgate("policy", "add", "record-to-alice", "allow", "--to-user", "alice",
                        "--recording-required", "--data-dir", str(data), cwd=tmp_path)  # fmt: skip
        assert rule.returncode == 0, rule.stderr

    port = free_port()
    trunks = json.dumps([{"name": "carrier", "addresses": ["127.0.0.2"],
                          "did_groups": {DID: "desk"}, "options_interval": 0}])  # fmt: skip
    env = {"CALLGATE_SIP__TRUNKS": trunks,
           "CALLGATE_SIP__ALLOW_MEDIA": "127.0.0.1/32, 127.0.0.2/32",
           # both parties hear the beeps: the notice, whoever answers
           "CALLGATE_RECORDING__PROMPT": "true"}  # fmt: skip
    for server in serve(tmp_path, "--sip-listen", f"127.0.0.1:{port}", prepare=prepare, **env):
        yield server, port, devices


def register(port: int, handle: str, user: str, password: str) -> SipClient:
    """`handle`'s desk phone registers (SHA-256 digest); its INVITEs come to this client."""
    phone = SipClient(("127.0.0.1", port))
    aor, uri = f"sip:{handle}@callgate", f"sip:127.0.0.1:{port}"
    contact = f"Contact: <sip:{handle}@127.0.0.1:{phone.local[1]}>;expires=600"
    challenge = challenge_for(phone.exchange(phone.request("REGISTER", aor)), "SHA-256")
    auth = authorization(challenge, user, password, "REGISTER", uri)
    assert phone.exchange(phone.request("REGISTER", aor, [auth, contact])).status == 200
    return phone


def carol_device(server: WebServer) -> ClientConnection:
    """carol's device: a WebSocket that hears its calls and never answers."""
    with server.client() as client:
        login = client.post("/api/login", json={"handle": "carol", "password": CAROL})
    assert login.status_code == 200, login.text
    url = server.url.replace("http://", "ws://")
    ws = connect(f"{url}/ws?token={login.json()['token']}&device=desk", open_timeout=30)
    assert json.loads(ws.recv(timeout=30))["type"] == "hello"
    return ws


def carol_heard(ws: ClientConnection) -> list[tuple[str, str | None]]:
    """What carol's device heard of one call, up to its end: (type, reason)."""
    heard: list[tuple[str, str | None]] = []
    while not heard or heard[-1][0] != "call.ended":
        message = json.loads(ws.recv(timeout=60))
        if message["type"].startswith("call."):
            heard.append((message["type"], message.get("reason")))
    return heard


def carrier_invites(carrier: SipClient, port: int, rtp: socket.socket) -> None:
    carrier.call_id += "-n"
    sdp = (
        "v=0\r\no=- 3 3 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\n"
    ).encode()
    headers = ["Contact: <sip:gw@127.0.0.2>", "Content-Type: application/sdp"]
    did = f"sip:{DID}@127.0.0.1:{port}"
    carrier.send(carrier.request("INVITE", CALLER, headers, to=did, body=sdp))


CALLER = "sip:+442071234567@carrier.example"


def carrier_connected(carrier: SipClient, port: int) -> tuple[SipResponse, tuple[str, int]]:
    """The carrier's 200 OK (after 100 and 180), acknowledged; where its RTP goes."""
    carrier.sock.settimeout(60)
    statuses, reply = carrier.until_final()
    assert statuses[-1] == 200 and 180 in statuses, statuses
    media = re.search(r"m=audio (\d+) RTP/AVP 0\b", reply.body.decode())
    assert media is not None, reply.body
    did = f"sip:{DID}@127.0.0.1:{port}"
    ack = carrier.request("ACK", CALLER, to=did, cseq=carrier.cseq)
    carrier.send(ack.replace(f"To: <{did}>".encode(), f"To: {reply.headers.get('to')}".encode()))
    return reply, ("127.0.0.1", int(media.group(1)))


def carrier_bye(carrier: SipClient, port: int, reply: SipResponse) -> None:
    did = f"sip:{DID}@127.0.0.1:{port}"
    bye = carrier.request("BYE", CALLER, to=did)
    bye = bye.replace(f"To: <{did}>".encode(), f"To: {reply.headers.get('to')}".encode())
    assert carrier.exchange(bye).status == 200


def pcmu_talk(
    rtp: socket.socket,
    target: tuple[str, int],
    hz: float,
    meanwhile: Callable[[], bytes] | None = None,
) -> bytes:
    """2 s of a PCMU tone, on until more than a second of the other side was heard after the
    recording prompt (`past_prompt`, up to TALK_DEADLINE_S: an outcome, not luck, however late
    the member's media connects); `meanwhile()`, called each round, is the other party talking,
    and returns what it heard (also waited on). The payloads heard."""
    heard = bytearray()
    deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
    other = b""
    while n < 100 or (
        not (past_prompt(heard) and (meanwhile is None or past_prompt(other)))
        and time.monotonic() < deadline
    ):
        packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x4440, tone_ulaw(hz, n * 160))
        rtp.sendto(build_rtp(packet), target)
        heard += b"".join(p for _, p in received_rtp(rtp))
        if meanwhile is not None:
            other = meanwhile()
        time.sleep(0.02)
        n += 1
    assert past_prompt(heard), len(heard)
    return bytes(heard)


def past_prompt(heard: bytes) -> bool:
    """Whether the last second of `heard` (PCMU) came after the recording prompt: its beeps
    were heard, and none in that second — so that second is the other party alone."""
    return len(heard) > 8000 and beeped(heard) and not beeped(heard[-8000:])


def group_cdr(server: WebServer, callee: str) -> dict[str, Any]:
    cdrs = client_get(server, "/api/cdrs", "admin")["items"]
    rows = [c for c in cdrs if c["caller_user"] == "+442071234567" and c["callee_user"] == callee]
    (row,) = rows
    return dict(row)


def recorded_before_ringing(
    server: WebServer, tmp_path: Path, cdr: dict[str, Any]
) -> dict[str, Any]:
    """The exported recording's metadata (check_recording exported it): the carrier's first
    packet was written before anyone rang, the member's after, and after the member was named
    (`recording.participant`, docs/recording.md); the metadata it holds."""
    metadata = json.loads((tmp_path / f"bundle-{cdr['call_id']}" / "metadata.json").read_text())
    arrivals = {s["label"]: s["first_arrival"] for s in metadata["streams"]}
    ring_at = datetime.fromisoformat(cdr["ring_at"].replace("Z", "+00:00")).timestamp()
    assert arrivals["caller"] < ring_at < arrivals["callee"], (arrivals, cdr["ring_at"])
    entries = client_get(server, "/api/audit/entries?action=recording.participant", "admin")
    (named,) = [e for e in entries["items"] if e["details"]["call_id"] == cdr["call_id"]]
    named_at = datetime.fromisoformat(named["at"].replace("Z", "+00:00")).timestamp()
    assert named_at <= arrivals["callee"], (named["at"], arrivals)
    return dict(metadata)


@pytest.mark.timeout(300)  # one server for every scenario below, on a busy machine
def test_a_ring_groups_recorded_call_is_recorded_whoever_answers(
    group_server: tuple[WebServer, int, dict[str, str]], tmp_path: Path
) -> None:
    server, port, devices = group_server
    phone = register(port, "alice", devices["alice"], devices["alice_password"])
    carrier = SipClient(("127.0.0.1", port), bind="127.0.0.2")
    carrier_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier_rtp.bind(("127.0.0.2", 0))
    carrier_rtp.setblocking(False)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    carol = carol_device(server)
    env = clean_env(
        CALLGATE_SERVER=server.url, CALLGATE_USER="bob", CALLGATE_PASSWORD=PASSWORDS["bob"],
        CALLGATE_CONFIG_DIR=str(tmp_path / "cfg-bob"),
    )  # fmt: skip
    bob = subprocess.Popen(
        [*COMMAND, "answer", "--tone", "880", "--json", "--count", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert read_events(bob, "ready")
        # 1. bob's CLI answers: alice's phone is cancelled, carol's device hears it went
        # elsewhere; recorded although bob's own calls need not be, and bob is told so
        carrier_invites(carrier, port, carrier_rtp)
        reply, at_server = carrier_connected(carrier, port)
        phone_cancelled(phone)
        heard = pcmu_talk(carrier_rtp, at_server, 440.0)
        assert abs(dominant_hz(ulaw_decode(heard[-8000:])) - 880.0) < 10.0
        assert beeped(heard)  # the carrier was told the call is recorded
        carrier_bye(carrier, port, reply)
        events = read_events(bob, "ended")
        kinds = [e["event"] for e in events]
        assert "recording" in kinds and events[-1]["reason"] == "hangup", events
        assert carol_heard(carol) == [
            ("call.incoming", None), ("call.recording", None),
            ("call.ended", "answered-elsewhere"),
        ]  # fmt: skip
        cdr = group_cdr(server, "bob")
        assert (cdr["recording_required"], cdr["anchored"], cdr["reason"]) == (True, True, "hangup")
        assert cdr["policy_rule"].endswith(":record-to-alice"), cdr  # why bob's was recorded
        check_recording(server, cdr["call_id"], tmp_path, 440.0, 880.0)
        metadata = recorded_before_ringing(server, tmp_path, cdr)
        callee = metadata["participants"][1]
        assert (callee["id"], callee["handle"], callee["ring_group"]) == ("callee", "bob", "desk")
        assert bob.wait(30) == 0

        # 2. bob is offline now: alice's phone answers, carol's device loses again
        carrier_invites(carrier, port, carrier_rtp)
        phone.sock.settimeout(60)
        invite = next_request(phone, "INVITE")
        media = re.search(r"m=audio (\d+) RTP/AVP 0 101\r\n", invite.body.decode())
        assert media is not None, invite.body  # the anchor's G.711: every phone has it
        answer = (
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 0\r\n"
        ).encode()
        phone.send(serialize(response(invite, 180, "Ringing", to_tag="grp2")))
        phone.answer(invite, answer, "grp2", "alice")
        reply, at_server = carrier_connected(carrier, port)
        at_phone = ("127.0.0.1", int(media.group(1)))
        phone.sock.setblocking(False)
        by_phone, sent = bytearray(), itertools.count()

        def phone_talks() -> int:
            n = next(sent)
            packet = RtpPacket(PCMU, n == 0, n, n * 160, 0x6666, tone_ulaw(660.0, n * 160))
            rtp.sendto(build_rtp(packet), at_phone)
            by_phone.extend(b"".join(p for _, p in received_rtp(rtp)))
            return bytes(by_phone)

        heard = pcmu_talk(carrier_rtp, at_server, 440.0, phone_talks)
        assert past_prompt(bytes(by_phone)), len(by_phone)
        assert abs(dominant_hz(ulaw_decode(heard[-8000:])) - 660.0) < 10.0
        assert abs(dominant_hz(ulaw_decode(bytes(by_phone[-8000:]))) - 440.0) < 10.0
        assert beeped(bytes(by_phone)) and beeped(heard)  # both told: recorded
        carrier_bye(carrier, port, reply)
        phone.sock.settimeout(30)
        bye = next_request(phone, "BYE")
        phone.send(serialize(response(bye, 200, "OK")))
        assert carol_heard(carol) == [
            ("call.incoming", None), ("call.recording", None),
            ("call.ended", "answered-elsewhere"),
        ]  # fmt: skip
        cdr = group_cdr(server, "alice")
        assert (cdr["recording_required"], cdr["anchored"], cdr["reason"]) == (True, True, "hangup")
        assert cdr["policy_rule"] is not None
        check_recording(server, cdr["call_id"], tmp_path, 440.0, 660.0)
        metadata = recorded_before_ringing(server, tmp_path, cdr)
        assert metadata["participants"][1]["handle"] == "alice"

        # 3. phone to phone in G.722 through both bridges, unchanged both ways (not recorded:
        # alice calls bob)
        phone_to_phone_g722(port, devices, rtp)
    finally:
        if bob.poll() is None:
            bob.kill()
        bob.communicate()
        carol.close()
        phone.close()
        carrier.close()
        carrier_rtp.close()
        rtp.close()


def phone_cancelled(phone: SipClient) -> None:
    """alice's phone was rung with the anchor's offer and, once another member answered,
    cancelled "completed elsewhere" (RFC 3326): it never had media."""
    phone.sock.settimeout(30)
    invite = next_request(phone, "INVITE")
    assert re.search(r"m=audio \d+ RTP/AVP 0 101\r\n", invite.body.decode()), invite.body
    phone.send(serialize(response(invite, 180, "Ringing", to_tag="grp1")))
    cancel = next_request(phone, "CANCEL")
    assert cancel.headers.get("reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    phone.send(serialize(response(cancel, 200, "OK")))
    phone.send(serialize(response(invite, 487, "Request Terminated", to_tag="grp1")))


def phone_to_phone_g722(port: int, devices: dict[str, str], rtp: socket.socket) -> None:
    """bob's desk phone registers; alice's phone calls it offering G.722 first and bob's phone
    answers G.722: each hears the other's tone, and every payload that arrives is one the other
    phone sent (forwarded, never transcoded)."""
    desk = register(port, "bob", devices["bob"], devices["bob_password"])
    desk_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    desk_rtp.bind(("127.0.0.1", 0))
    desk_rtp.setblocking(False)
    caller = SipClient(("127.0.0.1", port))
    try:
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp.getsockname()[1]} RTP/AVP 9 0 101\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        aor, bob_uri = "sip:alice@callgate", f"sip:bob@127.0.0.1:{port}"
        headers = [f"Contact: <sip:alice@127.0.0.1:{caller.local[1]}>",
                   "Content-Type: application/sdp"]  # fmt: skip
        first = caller.exchange(caller.request("INVITE", aor, headers, to=bob_uri, body=sdp))
        assert first.status == 401
        caller.send(caller.request("ACK", aor, to=bob_uri, cseq=caller.cseq))
        auth = authorization(
            challenge_for(first, "SHA-256"),
            devices["alice"],
            devices["alice_password"],
            "INVITE",
            bob_uri,
        )
        caller.send(caller.request("INVITE", aor, [auth, *headers], to=bob_uri, body=sdp))
        desk.sock.settimeout(60)
        invite = next_request(desk, "INVITE")
        offered = re.search(r"m=audio (\d+) RTP/AVP 9 0\b", invite.body.decode())
        assert offered is not None, invite.body  # G.722 first, as the calling phone offered
        answer = (
            "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {desk_rtp.getsockname()[1]} RTP/AVP 9\r\n"
        ).encode()
        desk.answer(invite, answer, "g722", "bob")
        caller.sock.settimeout(60)
        statuses, ok = caller.until_final()
        assert statuses[-1] == 200, statuses
        taken = re.search(r"m=audio (\d+) RTP/AVP 9 101\r\n", ok.body.decode())
        assert taken is not None, ok.body  # G.722 answered to the calling phone
        caller.send(in_dialog(caller, "ACK", ok, port))
        at_caller, at_desk = ("127.0.0.1", int(taken.group(1))), ("127.0.0.1", int(offered[1]))
        sent: dict[str, set[bytes]] = {"alice": set(), "bob": set()}
        got: dict[str, list[tuple[int, bytes]]] = {"alice": [], "bob": []}
        tones = {"alice": G722Tone(440.0), "bob": G722Tone(880.0)}
        deadline, n = time.monotonic() + TALK_DEADLINE_S, 0
        while n < 60 or (
            min(len(got["alice"]), len(got["bob"])) <= 50 and time.monotonic() < deadline
        ):
            for who, sock, target in (("alice", rtp, at_caller), ("bob", desk_rtp, at_desk)):
                payload = tones[who].next()
                sent[who].add(payload)
                sock.sendto(build_rtp(RtpPacket(G722, n == 0, n, n * 160, 0x7220 + len(who),
                                                payload)), target)  # fmt: skip
                got[who] += received_rtp(sock)
            time.sleep(0.02)
            n += 1
        for who, other, hz in (("alice", "bob", 880.0), ("bob", "alice", 440.0)):
            last = got[who][-50:]
            assert len(last) == 50 and {pt for pt, _ in last} == {G722}, got[who][-3:]
            assert all(payload in sent[other] for _, payload in last)  # unchanged
            samples = g722_decode(b"".join(payload for _, payload in last))
            assert abs(dominant_hz(samples, 16000) - hz) < 10.0
        bye_ok = signed_bye(caller, ok, port, devices["alice"], devices["alice_password"])
        assert bye_ok.status == 200
        desk.sock.settimeout(30)
        bye = next_request(desk, "BYE")
        desk.send(serialize(response(bye, 200, "OK")))
    finally:
        with contextlib.suppress(OSError):
            caller.close()
        desk.close()
        desk_rtp.close()
