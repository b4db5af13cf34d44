"""The one SIP media check (runtime/sip_media.py) with a real edge and audit log (SQLite), without
sockets: an INVITE's offer naming a forbidden address gets 488 with its Warning, a re-offer and
an answer raise, and each is audited `sip.media.forbidden` with its stage; an allowed offer is
taken with its codec and audits nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from callgate.media.rtp_leg import RtpLeg
from callgate.records.audit import AuditLog, Entry
from callgate.runtime.sip_media import (
    answered_codec,
    bridge_codecs,
    carrier_answer,
    carrier_key,
    carrier_sdp,
    check_call_media,
    check_media,
    downgrade_audit,
    encryption,
    take_offer,
)
from callgate.sip.credentials import Credential, CredentialStore
from callgate.sip.edge import SipEdge
from callgate.sip.invite import InboundCall
from callgate.sip.media_peers import ForbiddenMedia, MediaPeers
from callgate.sip.message import SipRequest, SipResponse, parse_datagram
from callgate.sip.sdp import SUITE, AudioOffer, Crypto, SdpError, parse_audio
from callgate.sip.transport import Peer
from callgate.sip.trunks import Trunk
from callgate.storage.db import open_store, sqlite_url
from callgate.turn.peers import PeerFilter

PHONE = "192.0.2.5"


def sdp(address: str) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def invite(body: bytes) -> SipRequest:
    head = (
        f"INVITE sip:bob@callgate.test SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKx\r\n"
        "From: <sip:alice@callgate.test>;tag=1\r\nTo: <sip:bob@callgate.test>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    message = parse_datagram(head.encode() + body)
    assert isinstance(message, SipRequest)
    return message


async def forbidden_entries(audit: AuditLog, count: int) -> list[Entry]:
    """The `sip.media.forbidden` entries once `count` are written (the edge writes them in
    its own tasks), waiting at most 30 s."""
    for _ in range(300):
        entries = [e for e in audit.iter_entries() if e.action == "sip.media.forbidden"]
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.1)
    return entries


async def test_every_stage_goes_through_one_check_that_audits(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path))
    try:
        # 192.0.2.0/24 opened for SIP media (as sip.allow_media does): the phone's own range
        media = MediaPeers(PeerFilter(["192.0.2.0/24"]))
        edge = SipEdge(CredentialStore(store, "callgate.test"), AuditLog(store), media=media)
        peer = Peer("UDP", (PHONE, 5060), lambda data, target: None)
        credential = Credential("alice.desk", "alice", "desk", "callgate.test", "", "", False)

        async def no_request(request: SipRequest, to: Peer) -> SipResponse | None:
            return None

        def call(body: bytes) -> InboundCall:
            return InboundCall(invite(body), peer, credential, lambda r: None, no_request)

        # an offer naming the phone's own address is taken, with its codec
        ok = call(sdp(PHONE))
        taken = take_offer(edge, ok)
        assert taken is not None and taken[1] == "pcmu" and not ok.final.done()
        # the cloud metadata address: 488 with the Warning that says why (RFC 3261 §20.43)
        metadata = call(sdp("169.254.169.254"))
        assert take_offer(edge, metadata) is None
        refusal = metadata.final.result()
        assert refusal.status == 488
        assert refusal.headers.get("warning") == (
            '399 callgate "media address 169.254.169.254 is not permitted"'
        )
        # a re-offer naming another permitted host than the device's own: refused
        with pytest.raises(ForbiddenMedia, match="not the device's signaling address"):
            check_call_media(edge, ok, parse_audio(sdp("192.0.2.77")), "re-offer")
        # a carrier's answer into loopback: refused (trunks may name any permitted address)
        with pytest.raises(ForbiddenMedia, match=r"127\.0\.0\.1 is not permitted"):
            check_media(edge, parse_audio(sdp("127.0.0.1")), "answer", "trunk:uk", "c2", PHONE)
        check_media(edge, parse_audio(sdp("192.0.2.77")), "answer", "trunk:uk", "c2", PHONE)
        entries = await forbidden_entries(AuditLog(store), 3)
        # each entry is written by its own task, so in no fixed order
        assert sorted((e.actor, e.object, json.loads(e.details)["stage"]) for e in entries) == [
            ("sip:alice.desk", "call:c1", "offer"),
            ("sip:alice.desk", "call:c1", "re-offer"),
            ("trunk:uk", "call:c2", "answer"),
        ]
        await edge.close()
    finally:
        store.close()


def test_a_g722_first_phone_is_bridged_with_its_g711_codecs_too() -> None:
    """A phone offering G.722 then PCMU and PCMA: G.722 is taken, and the bridge's leg offers
    PCMU and PCMA after it, in the phone's order, then Opus, so a G.711-only callee can answer."""
    body = sdp(PHONE).replace(b"RTP/AVP 0\r\n", b"RTP/AVP 9 8 0 101\r\n")
    offer = parse_audio(body)
    assert offer.choose() == "g722"
    assert bridge_codecs(offer, "g722") == ("pcma", "pcmu", "opus")
    assert bridge_codecs(parse_audio(sdp(PHONE)), "pcmu") == ("opus",)


def test_a_phones_answer_to_our_srtp_offer_must_be_srtp_with_its_own_key() -> None:
    """What `_ring_phone` refuses (it hangs up with BYE and declines the device): plain RTP to
    our RTP/SAVP offer, another crypto tag, our own key echoed back (RFC 4568 §6.1), SRTP to a
    plain offer, none of our codecs."""
    ours, theirs = Crypto(1, bytes(range(30))), bytes(range(30, 60))

    def answer(profile: str = "RTP/SAVP", tag: int = 1, key: bytes = theirs) -> AudioOffer:
        crypto = f"a=crypto:{tag} {SUITE} inline:{base64.b64encode(key).decode()}\r\n"
        body = sdp(PHONE).replace(b"RTP/AVP 0\r\n", f"{profile} 0\r\n".encode())
        return parse_audio(body + (crypto.encode() if profile == "RTP/SAVP" else b""))

    assert answered_codec(answer(), ("g722", "pcmu"), ours) == "pcmu"
    assert answered_codec(answer("RTP/AVP"), ("pcmu",), None) == "pcmu"
    refused = [
        ("answered plain RTP to our SRTP offer", answer("RTP/AVP"), ours),
        ("answered SRTP without our key's tag 1", answer(tag=2), ours),
        ("answered with our own SRTP key", answer(key=ours.key_salt), ours),
        ("answered RTP/SAVP to a plain RTP offer", answer(), None),
    ]
    for why, answered, key in refused:
        with pytest.raises(SdpError, match=why):
            answered_codec(answered, ("pcmu",), key)
    with pytest.raises(SdpError, match="none of the codecs"):
        answered_codec(answer(), ("g722",), ours)


async def test_a_trunk_that_requires_srtp_gets_our_key_and_its_plain_offers_get_488(
    tmp_path: Path,
) -> None:
    """A trunk with `srtp = "required"`: each INVITE we send through it carries a fresh SDES key
    of ours (tag 1), a trunk without it none; the carrier's plain answer is refused in the
    carrier's name; its plain RTP INVITE gets 488 with a Warning 302 (RFC 3261 §20.43), while
    its RTP/SAVP offer with a key is taken."""
    secure = Trunk("uk", frozenset({PHONE}), srtp_required=True)
    first, second = carrier_key(secure), carrier_key(secure)
    assert first is not None and second is not None and first.tag == 1
    assert len(first.key_salt) == 30 and first.key_salt != second.key_salt
    assert carrier_key(Trunk("plain", frozenset({PHONE}))) is None
    with pytest.raises(SdpError, match="the carrier answered plain RTP to our SRTP offer"):
        answered_codec(parse_audio(sdp(PHONE)), ("pcmu",), first, "the carrier")

    store = open_store(sqlite_url(tmp_path))
    try:
        edge = SipEdge(
            CredentialStore(store, "callgate.test"),
            AuditLog(store),
            media=MediaPeers(PeerFilter(["192.0.2.0/24"])),
        )
        peer = Peer("UDP", (PHONE, 5060), lambda data, target: None)

        async def no_request(request: SipRequest, to: Peer) -> SipResponse | None:
            return None

        plain = InboundCall(invite(sdp(PHONE)), peer, None, lambda r: None, no_request, secure)
        assert take_offer(edge, plain) is None
        refusal = plain.final.result()
        assert (refusal.status, refusal.reason) == (
            488,
            f"Not Acceptable Here (trunk uk requires SRTP: RTP/SAVP with an a=crypto {SUITE} key)",
        )
        assert refusal.headers.get("warning") == (
            '302 callgate "Incompatible transport protocol: RTP/SAVP required"'
        )
        key = base64.b64encode(bytes(range(30))).decode()
        body = sdp(PHONE).replace(b"RTP/AVP", b"RTP/SAVP") + (
            f"a=crypto:3 {SUITE} inline:{key}\r\n".encode()
        )
        keyed = InboundCall(invite(body), peer, None, lambda r: None, no_request, secure)
        taken = take_offer(edge, keyed)
        assert taken is not None and taken[0].crypto is not None and not keyed.final.done()
        assert taken[0].crypto.tag == 3
        # best-effort SRTP (RFC 5939: RTP/SAVP and the key as a capability) satisfies it too
        capability = f"a=tcap:1 RTP/SAVP\r\na=acap:1 crypto:5 {SUITE} inline:{key}\r\n"
        best = sdp(PHONE) + f"{capability}a=pcfg:1 t=1 a=1\r\n".encode()
        hopeful = InboundCall(invite(best), peer, None, lambda r: None, no_request, secure)
        taken = take_offer(edge, hopeful)
        assert taken is not None and taken[0].crypto is not None, hopeful.final
        assert (taken[0].crypto.tag, taken[0].crypto.acfg) == (5, "1 t=1 a=1")
        # the same plain offer from a trunk without the setting is taken
        other = Trunk("plain", frozenset({PHONE}))
        free = InboundCall(invite(sdp(PHONE)), peer, None, lambda r: None, no_request, other)
        assert take_offer(edge, free) is not None
        await edge.close()
    finally:
        store.close()


def test_the_cdrs_encryption_is_the_sip_legs() -> None:
    """A call to or from a number says in its CDR how its SIP leg's media went (docs/calling.md):
    `sdes-srtp` once the leg is keyed (at the start, or by a carrier's SRTP answer), else `rtp`."""
    plain = RtpLeg("callee", lambda packet: None)
    assert encryption(plain) == "rtp"
    plain.secure(bytes(range(30)), bytes(range(30, 60)))  # the carrier answered SDES-SRTP
    assert encryption(plain) == "sdes-srtp"
    keyed = RtpLeg("caller", lambda packet: None, srtp=(bytes(range(30)), bytes(range(30, 60))))
    assert encryption(keyed) == "sdes-srtp"


def test_any_error_taking_a_carriers_answer_is_an_sdp_error() -> None:
    """A bug or a hostile answer that raises something else while the carrier's 2xx is taken
    becomes SdpError, so the dial-out paths BYE the carrier leg and finish the CDR with it."""
    hostile = r"carrier answer not taken \(ValueError\)"
    with pytest.raises(SdpError, match=hostile), carrier_sdp("c1"):
        int("²")
    with pytest.raises(SdpError, match=r"^Bad audio port$"), carrier_sdp("c1"):
        raise SdpError("Bad audio port")
    with carrier_sdp("c1"):
        pass  # nothing raised: nothing changed


async def test_an_emergency_call_answered_plain_rtp_is_audited_downgraded(tmp_path: Path) -> None:
    """Our SRTP offer answered with plain RTP ends a call, except an emergency call: connected
    plain, and the downgrade written to the audit log (`sip.srtp.downgraded`), not only logged."""
    store = open_store(sqlite_url(tmp_path))
    try:
        edge = SipEdge(CredentialStore(store, "callgate.test"), AuditLog(store))
        ours = carrier_key(Trunk("uk", frozenset({PHONE}), srtp_required=True))
        assert ours is not None
        leg = RtpLeg("callee", lambda packet: None)
        plain = parse_audio(sdp("192.0.2.9"))
        with pytest.raises(SdpError):  # not an emergency call: ended (BYE)
            carrier_answer(
                plain, ("pcmu",), ours, leg, False, downgrade_audit(edge, "uk", "x", "r")
            )
        audited = downgrade_audit(edge, "uk", "sip-c3", "rec-3")
        assert carrier_answer(plain, ("pcmu",), ours, leg, True, audited) == "pcmu"
        entries: list[Entry] = []
        for _ in range(300):
            entries = [
                e for e in AuditLog(store).iter_entries() if e.action == "sip.srtp.downgraded"
            ]
            if entries:
                break
            await asyncio.sleep(0.1)
        (entry,) = entries
        assert (entry.actor, entry.object) == ("trunk:uk", "call:sip-c3")
        details = json.loads(entry.details)
        assert details["trunk"] == "uk" and details["record"] == "rec-3" and details["emergency"]
        await edge.close()
    finally:
        store.close()


async def test_the_edges_close_awaits_calls_byes(tmp_path: Path) -> None:
    """A BYE the server sends for a call it ended (reinvites.py `_ending`) is in the edge's
    `endings`: close gives it time to finish, then cancels and awaits what is left."""
    store = open_store(sqlite_url(tmp_path))
    try:
        edge = SipEdge(CredentialStore(store, "callgate.test"), AuditLog(store))
        done: list[str] = []

        async def bye(wait: float) -> None:
            await asyncio.sleep(wait)
            done.append("bye")

        quick = asyncio.create_task(bye(0.01))
        stuck = asyncio.create_task(bye(3600))
        edge.endings.update({quick, stuck})
        await asyncio.wait_for(edge.close(), 30)
        assert quick.done() and done == ["bye"] and stuck.cancelled()
    finally:
        store.close()
