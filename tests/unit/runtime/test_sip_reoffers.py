"""A party's re-INVITEs in a call it made or we made (runtime/sip_reoffers.py `Reoffers`),
without sockets."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace
from typing import Any, cast

import pytest

from callgate.media.caller_fill import SilenceUntilMedia
from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import RtpLeg
from callgate.runtime.sip_reoffers import Reoffers
from callgate.sip.media_peers import aim
from callgate.sip.sdp import Crypto, SdpError, audio_sdp, parse_audio
from callgate.turn.peers import PeerFilter


class Fill:
    def __init__(self) -> None:
        self.holds: list[bool] = []  # whether the party may still send, each hold
        self.resumed = 0

    def hold(self, sends: bool) -> None:
        self.holds.append(sends)

    def resume(self) -> None:
        self.resumed += 1


def test_rfc2543_hold_with_sendrecv_fills_silence_for_the_recorder() -> None:
    """`c=0.0.0.0` with a=sendrecv (or sendonly) is hold too (RFC 3264 §8.4): nothing goes to the
    phone, and the quiet phone's leg is filled with silence, so the recorder's silence limit does
    not end the held call `recording-failed`."""
    first = audio_sdp("192.0.2.5", 4000, "pcmu")
    rtp = SimpleNamespace(sending=True, allowed=["192.0.2.5"], set_remote=lambda *a, **k: None)
    fill = Fill()
    reoffers = Reoffers(
        parse_audio(first), first, "pcmu", None, ("127.0.0.1", 5000), (1, 1),
        cast(Any, rtp), cast(Any, fill),
    )  # fmt: skip
    for n, direction in enumerate(("sendrecv", "sendonly"), 1):
        held = audio_sdp("0.0.0.0", 4000 + n, "pcmu", direction=direction)
        assert parse_audio(held).held
        reoffers.answer(held)
        assert rtp.sending is False
        assert fill.holds == [True] * n  # music on hold may come: silence in its gaps
    for n, direction in enumerate(("recvonly", "inactive"), 3):
        reoffers.answer(audio_sdp("0.0.0.0", 4000 + n, "pcmu", direction=direction))
    reoffers.answer(audio_sdp("192.0.2.5", 4010, "pcmu", direction="sendonly"))
    assert fill.holds == [True, True, False, False, True] and fill.resumed == 0
    reoffers.answer(audio_sdp("192.0.2.5", 4011, "pcmu"))  # sendrecv at an address: resumed
    assert fill.resumed == 1 and rtp.sending


def party_sdp(port: int, pts: str = "0 101", version: int = 1, direction: str = "",
              address: str = "127.0.0.1", key: bytes | None = None) -> bytes:  # fmt: skip
    """A phone's or carrier's SDP: PCMU (and what `pts` lists) with telephone-event 101."""
    profile = "RTP/SAVP" if key is not None else "RTP/AVP"
    sdp = (
        f"v=0\r\no=- 7 {version} IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} {profile} {pts}\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    if key is not None:
        sdp += f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}\r\n"
    return (sdp + (f"a={direction}\r\n" if direction else "")).encode()


LOCAL = ("127.0.0.1", 30000)


def session(
    first_body: bytes, origin: tuple[int, int] = (9, 2), ours: Crypto | None = None
) -> tuple[Reoffers, RtpLeg, SilenceUntilMedia, list[MediaPacket]]:
    """The session of a call a party answered with `first_body` (our offer was (9, 1))."""
    to_bridge: list[MediaPacket] = []
    rtp = RtpLeg("phone", lambda packet: None, permits=PeerFilter(["127.0.0.1/32"]).permits)
    first = parse_audio(first_body)
    aim(rtp, first, ["127.0.0.1"])
    fill = SilenceUntilMedia("phone", "pcmu", to_bridge.append)
    return Reoffers(first, first_body, "pcmu", ours, LOCAL, origin, rtp, fill), rtp, fill, to_bridge


async def test_a_party_we_called_refreshes_holds_moves_and_resumes() -> None:
    """The session of a call we placed (to a phone, or a carrier's), as its re-INVITEs change
    it: the same SDP is a refresh (the same answer, one codec, version above our offer's); hold
    by `inactive` or `recvonly` stops what we send and fills silence towards the bridge; a new
    port with sendrecv resumes there, each changed answer one version higher (RFC 3264 §8)."""
    answered = party_sdp(40000)
    reoffers, rtp, fill, to_bridge = session(answered)
    refreshed = reoffers.answer(answered)
    assert refreshed == audio_sdp(*LOCAL, "pcmu", None, 101, "sendrecv", (9, 2))
    assert reoffers.answer(answered) == refreshed  # a second refresh: the same again
    assert reoffers.answer(b"") == refreshed  # offerless: our current SDP, as the offer
    try:
        for version, (direction, ours) in enumerate(
            (("inactive", "inactive"), ("recvonly", "sendonly"), ("sendonly", "recvonly")), 2
        ):
            held = reoffers.answer(party_sdp(40000, version=version, direction=direction))
            assert held == audio_sdp(*LOCAL, "pcmu", None, 101, ours, (9, 1 + version))
            assert rtp.sending is (ours == "sendonly")
        assert fill.filling  # the party holds the call: silence flows
        while not to_bridge:
            await asyncio.sleep(0.01)
        assert to_bridge[0].payload == b"\xff" * 160 and to_bridge[0].leg == "phone"
        fill.packet(MediaPacket("phone", b"A" * 160, 0, 0, 1, 0, 0.0))  # music on hold passes
        assert to_bridge[-1].payload == b"A" * 160
        # resumed at a new port; its codecs in another order still list ours: PCMU answered
        moved = reoffers.answer(party_sdp(40010, "9 0 8 101", version=5))
        assert moved == audio_sdp(*LOCAL, "pcmu", None, 101, "sendrecv", (9, 6))
        assert rtp.remote == ("127.0.0.1", 40010) and rtp.sending
        fill.packet(MediaPacket("phone", b"B" * 160, 160, 1, 1, 0, 0.0))  # resumed: its media
        assert not fill.filling and fill.held_since is None
    finally:
        await fill.stop()


async def test_a_codec_or_key_change_is_refused_and_changes_nothing() -> None:
    """RFC 3261 §14.2: a re-INVITE we cannot take leaves the session as it was: an offer
    without the call's codec, SRTP keys added, dropped or changed, or an unreadable SDP."""
    key = bytes(range(30))
    ours = Crypto(1, bytes(range(30, 60)))
    plain, _, _, _ = session(party_sdp(40000))
    secure, rtp, _, _ = session(party_sdp(40000, key=key), ours=ours)
    before = secure.answer(b"")
    refused = [
        (plain, party_sdp(40002, "8 101", version=2)),  # PCMA only
        (plain, party_sdp(40002, version=2, key=key)),  # SRTP added
        (secure, party_sdp(40002, version=2)),  # SRTP dropped
        (secure, party_sdp(40002, version=2, key=bytes(range(1, 31)))),  # a new key
        (secure, b"v=0\r\nm=video 1 RTP/AVP 0\r\n"),
    ]
    for reoffers, body in refused:
        with pytest.raises(SdpError):
            reoffers.answer(body)
    assert secure.answer(b"") == before and rtp.remote == ("127.0.0.1", 40000) and rtp.sending


async def test_an_srtp_carriers_reoffers_keep_its_key_and_get_ours() -> None:
    """The carrier of a dial-out through a trunk with `srtp = "required"` (runtime/sip_dialout.py
    gives its leg our key): a refresh and a hold that keep its key are answered RTP/SAVP with
    our key under its tag, the hold stops what we send; a new key, or plain RTP, gets 488 and
    the session stays as it was, still SRTP."""
    theirs, ours = bytes(range(30)), Crypto(1, bytes(range(30, 60)))
    answered = party_sdp(40000, key=theirs)
    reoffers, rtp, fill, _ = session(answered, ours=ours)
    try:
        refreshed = reoffers.answer(answered)
        assert refreshed == audio_sdp(*LOCAL, "pcmu", ours, 101, "sendrecv", (9, 2))
        assert b"m=audio 30000 RTP/SAVP 0 101\r\n" in refreshed
        held = reoffers.answer(party_sdp(40000, version=2, direction="sendonly", key=theirs))
        assert held == audio_sdp(*LOCAL, "pcmu", ours, 101, "recvonly", (9, 3))
        assert not rtp.sending and fill.filling
        for body in (
            party_sdp(40000, version=3, key=bytes(range(1, 31))),  # the carrier's key changed
            party_sdp(40000, version=3),  # plain RTP
        ):
            with pytest.raises(SdpError, match="SRTP keys cannot change"):
                reoffers.answer(body)
        assert reoffers.answer(b"") == held  # unchanged: still held, still our key
        resumed = reoffers.answer(party_sdp(40000, version=3, key=theirs))
        assert resumed == audio_sdp(*LOCAL, "pcmu", ours, 101, "sendrecv", (9, 4))
        assert rtp.sending
    finally:
        await fill.stop()


async def test_a_best_effort_srtp_reoffer_is_answered_with_our_key_and_its_acfg() -> None:
    """A phone whose call was set up from a best-effort SRTP offer (RFC 5939) re-offers the
    same way (a refresh, then under another configuration number) or as plain RTP/SAVP (§3.12):
    each keeps its key, so each is taken; our answer carries our key under the re-offer's tag,
    with `a=acfg` naming the configuration when it offered one (§3.6.2), none when it did not."""
    key = base64.b64encode(bytes(range(30))).decode()

    def best_effort(version: int, pcfg: int = 1, tag: int = 1) -> bytes:
        return (
            f"v=0\r\no=- 7 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a=tcap:1 RTP/SAVP\r\na=acap:1 crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
            f"a=pcfg:{pcfg} t=1 a=1\r\n"
        ).encode()

    first_body = best_effort(1)
    first = parse_audio(first_body)
    assert first.crypto is not None and first.crypto.acfg == "1 t=1 a=1"
    ours = Crypto(1, bytes(range(30, 60)), first.crypto.acfg)  # as answer_key makes it
    reoffers, rtp, fill, _ = session(first_body, (9, 1), ours)
    try:
        assert reoffers.answer(first_body) == audio_sdp(*LOCAL, "pcmu", ours, 101, origin=(9, 1))
        again = reoffers.answer(best_effort(2, pcfg=3, tag=2)).decode()
        assert "m=audio 30000 RTP/SAVP 0 101\r\n" in again and "a=acfg:3 t=1 a=1\r\n" in again
        assert f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{key}" not in again  # ours, not its
        assert "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" in again
        savp = party_sdp(40000, version=3, key=bytes(range(30)))  # its configuration, as m=
        answered = reoffers.answer(savp).decode()
        assert "RTP/SAVP" in answered and "a=acfg" not in answered
        assert base64.b64encode(ours.key_salt).decode() in answered and rtp.sending
    finally:
        await fill.stop()
