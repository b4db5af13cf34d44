"""A WebRTC party meets a plain RTP party at the media anchor, over real sockets: alice (aiortc,
relay-only through our TURN server) is answered in PCMU by the bridge's WebRTC leg; a "phone" (a
plain UDP socket, as a SIP desk phone sends RTP) is the bridge's RTP leg. Each hears the other's
tone, and the payloads pass byte for byte (G.711 both sides: nothing is transcoded)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from pathlib import Path

import pylibsrtp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from callgate.client.audio import WavSink, audio_source, dominant_frequency
from callgate.client.ice import rtc_configuration
from callgate.media.anchor import Bridge
from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import PCMU, RtpLeg, RtpPacket, build_rtp, parse_rtp
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.fake_signaling import hello_for
from tests.integration.sip_client import tone_ulaw
from tests.integration.test_media_anchor import connected, wait


async def phone_sends(sock: socket.socket, target: tuple[str, int], stop: asyncio.Event) -> None:
    """880 Hz in 20 ms PCMU packets until `stop`."""
    seq, timestamp = 1000, 5000
    while not stop.is_set():
        payload = tone_ulaw(880.0, timestamp)
        sock.sendto(
            build_rtp(RtpPacket(PCMU, seq == 1000, seq, timestamp, 0x1234, payload)), target
        )
        seq, timestamp = seq + 1, timestamp + 160
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_webrtc_party_and_rtp_phone_hear_each_other_without_transcoding(
    tmp_path: Path,
) -> None:
    seen: list[MediaPacket] = []
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    stop = asyncio.Event()
    async with run_turn_server() as server:
        turn = server_address(server, Transport.UDP)
        bridge = Bridge(lambda: hello_for("anchor", turn)["ice_servers"], seen.append)
        alice = RTCPeerConnection(rtc_configuration(hello_for("alice", turn)))
        sink = WavSink(tmp_path / "alice.wav")
        rtp = RtpLeg("trunk", bridge.forward, "pcmu")
        sender: asyncio.Task[None] | None = None
        phone_got: list[RtpPacket] = []
        try:
            alice.addTrack(audio_source(None, 440.0))
            alice.on("track", sink.start)
            alice_up = connected(alice)
            await alice.setLocalDescription(await alice.createOffer())
            web = bridge.leg("caller", codec="pcmu")
            answer = await web.answer(alice.localDescription.sdp)
            assert "PCMU/8000" in answer and "opus" not in answer.lower()
            await alice.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await wait(web.connected, "the WebRTC leg")
            await wait(alice_up, "alice connected to the anchor")

            media = await rtp.open("127.0.0.1")
            bridge.attach(rtp)
            rtp.set_remote(phone.getsockname())
            sender = asyncio.create_task(phone_sends(phone, media, stop))
            loop = asyncio.get_running_loop()

            async def enough() -> None:
                while len(phone_got) < 100 or rtp.received < 100:
                    data = await loop.sock_recv(phone, 2048)
                    phone_got.append(parse_rtp(data))

            await asyncio.wait_for(enough(), 20)
            await asyncio.sleep(1.0)  # more of the phone's tone for alice's recording
        finally:
            stop.set()
            if sender is not None:
                await sender
            await sink.stop()
            await asyncio.gather(alice.close(), bridge.close())
            phone.close()

    # what the phone received is a run of exactly what alice sent the anchor, in PCMU, in one
    # stream of ours with consecutive sequence numbers and 160-sample steps
    from_alice = [p.payload for p in seen if p.leg == "caller"]
    got = [p.payload for p in phone_got]
    start = from_alice.index(got[0])
    assert from_alice[start : start + len(got)] == got
    assert {p.payload_type for p in phone_got} == {PCMU}
    assert len({p.ssrc for p in phone_got}) == 1 and phone_got[0].ssrc != 0x1234
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(phone_got))
    # the phone's tone reached alice (decoded there from the PCMU we forwarded)
    assert [p.payload for p in seen if p.leg == "trunk"][:5] != []
    assert abs(dominant_frequency(tmp_path / "alice.wav") - 880.0) < 5.0
    assert rtp.dropped == {}


async def test_srtp_leg_decrypts_what_the_phone_sends_and_encrypts_what_it_forwards() -> None:
    """SDES-keyed SRTP (RFC 3711/4568) on one RTP leg, plain RTP on the other, real sockets: the
    payloads pass unchanged, encrypted only on the SRTP side; a forged packet is dropped."""
    theirs, ours = bytes(range(30)), bytes(range(30, 60))
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    phone_out = pylibsrtp.Session(
        pylibsrtp.Policy(theirs, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile)
    )
    phone_in = pylibsrtp.Session(
        pylibsrtp.Policy(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, profile)
    )
    bridge = Bridge(lambda: [])
    secure = RtpLeg("trunk", bridge.forward, "pcmu", (theirs, ours))
    plain = RtpLeg("desk", bridge.forward, "pcmu")
    loop = asyncio.get_running_loop()
    phone, desk = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for sock, leg in ((phone, secure), (desk, plain)):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            await leg.open("127.0.0.1")
            leg.set_remote(sock.getsockname())
            bridge.attach(leg)
        for n in range(5):
            packet = build_rtp(RtpPacket(PCMU, False, n, n * 160, 9, bytes([n]) * 160))
            phone.sendto(phone_out.protect(packet), secure.local)
            got = parse_rtp(await asyncio.wait_for(loop.sock_recv(desk, 2048), 10))
            assert got.payload == bytes([n]) * 160  # decrypted, unchanged
            desk.sendto(build_rtp(RtpPacket(PCMU, False, n, n * 160, 7, b"d" * 160)), plain.local)
            wire = await asyncio.wait_for(loop.sock_recv(phone, 2048), 10)
            assert b"d" * 160 not in wire  # encrypted on the wire
            assert parse_rtp(phone_in.unprotect(wire)).payload == b"d" * 160
        phone.sendto(
            build_rtp(RtpPacket(PCMU, False, 99, 0, 9, b"x" * 160)), secure.local
        )  # no auth tag
        await asyncio.sleep(0.2)
        assert secure.dropped == {"srtp": 1} and secure.received == 5
    finally:
        await bridge.close()
        phone.close()
        desk.close()
