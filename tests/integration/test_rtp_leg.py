"""A WebRTC party meets a plain RTP party at the media anchor, over real sockets: alice (aiortc,
relay-only through our TURN server) is answered in PCMU by the bridge's WebRTC leg; a "phone" (a
plain UDP socket, as a SIP desk phone sends RTP) is the bridge's RTP leg. Each hears the other's
tone, and the payloads pass byte for byte (G.711 both sides: nothing is transcoded)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from pathlib import Path

import pylibsrtp
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from callgate.client.audio import WavSink, audio_source, dominant_frequency
from callgate.client.ice import rtc_configuration
from callgate.media import anchor
from callgate.media.anchor import Bridge
from callgate.media.packets import MediaPacket
from callgate.media.rtp_leg import G722, PCMU, RtpLeg, RtpPacket, build_rtp, parse_rtp
from callgate.sip.media_peers import MediaPeers, aim
from callgate.sip.sdp import parse_audio
from callgate.turn.peers import PeerFilter
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.fake_signaling import hello_for
from tests.integration.sip_client import (
    G722Tone,
    dominant_hz,
    g722_decode,
    tone_ulaw,
    ulaw_decode,
)
from tests.integration.test_media_anchor import connected, wait


async def phone_sends(
    sock: socket.socket, target: tuple[str, int], stop: asyncio.Event, codec: str = "pcmu"
) -> None:
    """880 Hz in 20 ms PCMU (or G.722: 320 samples, still 160 RTP ticks) packets until `stop`."""
    seq, timestamp, g722 = 1000, 5000, G722Tone(880.0)
    while not stop.is_set():
        payload = tone_ulaw(880.0, timestamp) if codec == "pcmu" else g722.next()
        pt = PCMU if codec == "pcmu" else G722
        sock.sendto(build_rtp(RtpPacket(pt, seq == 1000, seq, timestamp, 0x1234, payload)), target)
        seq, timestamp = seq + 1, timestamp + 160
        await asyncio.sleep(0.02)


@pytest.mark.timeout(180)  # aiortc's handshakes are slow on a loaded machine
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
        # as under `callgate serve`: the SIP edge's bridges find the process's TURN server
        anchor.use_local_turn(server.udp_client)
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
            # the lean per-packet path takes G.711 too, in-process with the relay (srtp_path.py)
            assert web.path is not None and web.path.in_process

            media = await rtp.open("127.0.0.1")
            bridge.attach(rtp)
            rtp.set_remote(phone.getsockname())
            sender = asyncio.create_task(phone_sends(phone, media, stop))
            loop = asyncio.get_running_loop()

            async def enough() -> None:
                while len(phone_got) < 100 or rtp.received < 100:
                    data = await loop.sock_recv(phone, 2048)
                    phone_got.append(parse_rtp(data))

            await asyncio.wait_for(enough(), 60)
            await asyncio.sleep(1.0)  # more of the phone's tone for alice's recording
        finally:
            anchor.use_local_turn(None)
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
    assert web.path.received >= 50 and web.path.sent >= 50 and web.path.rejected == 0
    assert web.path.handed_in >= 50 and web.path.handed_out >= 50  # not through the sockets


@pytest.mark.timeout(180)  # aiortc's handshakes are slow on a loaded machine
@pytest.mark.parametrize(("codec", "pt"), [("pcmu", PCMU), ("g722", G722)])
async def test_an_opus_only_party_and_a_g711_only_phone_hear_each_other_transcoded(
    tmp_path: Path, codec: str, pt: int
) -> None:
    """No common codec: alice offers Opus alone, the phone sends PCMU (or G.722) alone. The
    WebRTC leg, which prefers the phone's codec, falls back to Opus, and the bridge transcodes
    each direction: the phone gets 20 ms packets (160-tick steps: G.722's RTP clock is 8 kHz
    too, RFC 3551 §4.5.2) carrying alice's 440 Hz, alice hears the phone's 880 Hz, and the
    observer (a recorder) gets what each party sent: Opus from alice, the phone's codec from
    the phone."""
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
        rtp = RtpLeg("phone", bridge.forward, codec)
        sender: asyncio.Task[None] | None = None
        phone_got: list[RtpPacket] = []
        try:
            transceiver = alice.addTransceiver(audio_source(None, 440.0), direction="sendrecv")
            opus = [
                c
                for c in RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType.lower() == "audio/opus"
            ]
            transceiver.setCodecPreferences(opus)
            alice.on("track", sink.start)
            alice_up = connected(alice)
            await alice.setLocalDescription(await alice.createOffer())
            assert "PCMU" not in alice.localDescription.sdp
            web = bridge.leg("web", codec=codec, also=("opus",))
            answer = await web.answer(alice.localDescription.sdp)
            assert web.codec == "opus" and "opus/48000" in answer.lower()
            (opus_pt,) = (
                int(line.split()[0].removeprefix("a=rtpmap:"))
                for line in answer.splitlines()
                if "opus/48000" in line.lower()
            )
            await alice.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await wait(web.connected, "the WebRTC leg")
            await wait(alice_up, "alice connected to the anchor")

            media = await rtp.open("127.0.0.1")
            bridge.attach(rtp)
            assert bridge.transcoding
            rtp.set_remote(phone.getsockname())
            sender = asyncio.create_task(phone_sends(phone, media, stop, codec))
            loop = asyncio.get_running_loop()

            async def enough() -> None:
                while len(phone_got) < 150 or rtp.received < 100:
                    data = await loop.sock_recv(phone, 2048)
                    phone_got.append(parse_rtp(data))

            await asyncio.wait_for(enough(), 60)
            await asyncio.sleep(1.0)  # more of the phone's tone for alice's recording
        finally:
            stop.set()
            if sender is not None:
                await sender
            await sink.stop()
            await asyncio.gather(alice.close(), bridge.close())
            phone.close()

    # the phone: one stream of ours, its codec, consecutive sequence numbers, 20 ms steps, 440 Hz
    assert {p.payload_type for p in phone_got} == {pt}
    assert {len(p.payload) for p in phone_got} == {160}
    assert len({p.ssrc for p in phone_got}) == 1
    assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(phone_got))
    steps = [(b.timestamp - a.timestamp) % (1 << 32) for a, b in itertools.pairwise(phone_got)]
    assert steps.count(160) >= len(steps) - 2  # alice's own gaps, if any, stay gaps
    last = b"".join(p.payload for p in phone_got[-100:])
    heard, rate = (ulaw_decode(last), 8000) if codec == "pcmu" else (g722_decode(last), 16000)
    assert abs(dominant_hz(heard, rate) - 440.0) < 10.0
    # alice heard the phone's 880 Hz, decoded from the Opus the bridge encoded
    assert abs(dominant_frequency(tmp_path / "alice.wav") - 880.0) < 5.0
    # what the observer got is what each party sent
    assert {p.payload_type for p in seen if p.leg == "phone"} == {pt}
    from_alice = [p for p in seen if p.leg == "web"]
    assert from_alice and {p.payload_type for p in from_alice} == {opus_pt}  # not re-encoded
    assert bridge.transcoders["web"].stats.packets_out > 0


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


async def test_rtcp_reports_both_ways_over_real_sockets() -> None:
    """RFC 3550 §6 on the leg's port + 1: our SR tells the phone what we sent and what of its
    stream we lost; the phone's RR about our stream gives its loss, jitter and, through LSR and
    DLSR, the round trip."""
    from aiortc.rtp import (
        RtcpPacket,
        RtcpReceiverInfo,
        RtcpRrPacket,
        RtcpSdesPacket,
        RtcpSrPacket,
    )

    received: list[MediaPacket] = []
    leg = RtpLeg("phone", received.append, "pcmu")
    phone, phone_rtcp = pair_of_sockets()
    try:
        local = await leg.open("127.0.0.1")
        leg.set_remote(("127.0.0.1", phone.getsockname()[1]))
        assert leg.rtcp is not None and leg.rtcp.packets_lost == 0  # nothing received yet
        for seq in (n for n in range(100, 150) if n not in range(120, 125)):  # 5 lost
            data = build_rtp(RtpPacket(PCMU, False, seq, seq * 160, 0x1234, b"\xff" * 160))
            phone.sendto(data, local)
        await until(lambda: leg.received == 45)
        for n in range(30):  # the other party's packets, out to the phone
            leg.send(MediaPacket("web", b"\x7f" * 160, n * 160, n, 9, 0, 0.0))
        assert leg.rtcp is not None
        leg.rtcp.send_report()
        await asyncio.sleep(0)
        sr, sdes = RtcpPacket.parse(await recv(phone_rtcp))
        assert isinstance(sr, RtcpSrPacket) and isinstance(sdes, RtcpSdesPacket)
        assert (sr.ssrc, sr.sender_info.packet_count, sr.sender_info.octet_count) == (
            leg.track.ssrc, 30, 30 * 160,
        )  # fmt: skip
        (block,) = sr.reports
        assert (block.ssrc, block.packets_lost, block.highest_sequence) == (0x1234, 5, 149)

        # the phone's RR on our stream: 3 lost, a quarter of the last interval, jitter 80
        lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
        about_us = RtcpReceiverInfo(leg.track.ssrc, 64, 3, 30, 80, lsr, 0)  # DLSR: at once
        phone_rtcp.sendto(
            bytes(RtcpRrPacket(ssrc=0x1234, reports=[about_us])), (local[0], local[1] + 1)
        )
        await until(lambda: leg.rtcp is not None and leg.rtcp.party is not None)
        party = leg.rtcp.party
        assert party is not None
        assert (party.packets_lost, party.fraction_lost, party.jitter_ms) == (3, 0.25, 10.0)
        assert party.rtt_ms is not None and 0 <= party.rtt_ms < 5000
        # RTCP from elsewhere is dropped, not read
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))
        stranger.sendto(bytes(RtcpRrPacket(ssrc=1, reports=[])), (local[0], local[1] + 1))
        await until(lambda: leg.rtcp is not None and leg.rtcp.dropped == 1)
        stranger.close()
    finally:
        await leg.close()
        phone.close()
        phone_rtcp.close()


def pair_of_sockets() -> tuple[socket.socket, socket.socket]:
    """The phone's RTP socket and its RTCP socket on the next port."""
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
    raise OSError("no port pair")


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 2048), 30)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):  # generous: a loaded machine is late
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_leg_never_latches_to_a_source_the_filter_forbids() -> None:
    """The phone's SDP names 127.0.0.2 (allowed) and its signaling came from 127.0.0.1, which
    the filter forbids: RTP and RTCP from 127.0.0.1 are dropped ("forbidden") and never
    latched, so nothing is sent there; 127.0.0.2's packets latch and are answered there."""
    from aiortc.rtp import RtcpRrPacket

    from callgate.turn.peers import PeerFilter

    received: list[MediaPacket] = []
    leg = RtpLeg("phone", received.append, "pcmu", permits=PeerFilter(["127.0.0.2/32"]).permits)
    insider, good = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    insider.bind(("127.0.0.1", 0))
    good.bind(("127.0.0.2", 0))
    insider.setblocking(False)
    good.setblocking(False)
    try:
        local = await leg.open("127.0.0.1")
        leg.set_remote(("127.0.0.2", good.getsockname()[1]), also_from=["127.0.0.1"])
        for seq in range(5):
            data = build_rtp(RtpPacket(PCMU, False, seq, seq * 160, 0x77, b"\xff" * 160))
            insider.sendto(data, local)
        insider.sendto(bytes(RtcpRrPacket(ssrc=0x77, reports=[])), (local[0], local[1] + 1))
        await until(lambda: leg.dropped.get("forbidden") == 5)
        assert leg.rtcp is not None
        await until(lambda: leg.rtcp is not None and leg.rtcp.dropped == 1)
        assert received == [] and leg.remote == ("127.0.0.2", good.getsockname()[1])
        leg.send(MediaPacket("web", b"\x7f" * 160, 0, 0, 9, 0, 0.0))
        assert parse_rtp(await recv(good)).payload == b"\x7f" * 160
        with pytest.raises(BlockingIOError):
            insider.recv(2048)  # nothing went to the forbidden source
        good.sendto(build_rtp(RtpPacket(PCMU, False, 9, 9 * 160, 0x78, b"\xff" * 160)), local)
        await until(lambda: len(received) == 1)
    finally:
        await leg.close()
        insider.close()
        good.close()


def low_port_socket() -> socket.socket:
    """A UDP socket on a port below 1024 (the tests run as root, as CI does)."""
    for port in range(1023, 900, -1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", port))
        except PermissionError:
            sock.close()
            pytest.skip("binding a port below 1024 needs root")
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        return sock
    raise OSError("no free port below 1024")


async def test_a_leg_never_latches_to_a_system_port() -> None:
    """RTP and RTCP from a permitted IP but a port below 1024 (system services, RFC 6335 §6)
    are dropped ("forbidden") and never latched: nothing is sent to that port."""
    from aiortc.rtp import RtcpRrPacket

    received: list[MediaPacket] = []
    leg = RtpLeg("phone", received.append, "pcmu")
    low, high = low_port_socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    high.bind(("127.0.0.1", 0))
    high.setblocking(False)
    try:
        local = await leg.open("127.0.0.1")
        leg.set_remote(("127.0.0.1", high.getsockname()[1]))
        for seq in range(3):
            low.sendto(
                build_rtp(RtpPacket(PCMU, False, seq, seq * 160, 0x77, b"\xff" * 160)), local
            )
        low.sendto(bytes(RtcpRrPacket(ssrc=0x77, reports=[])), (local[0], local[1] + 1))
        await until(lambda: leg.dropped.get("forbidden") == 3)
        await until(lambda: leg.rtcp is not None and leg.rtcp.dropped == 1)
        assert received == [] and leg.remote == ("127.0.0.1", high.getsockname()[1])
        leg.send(MediaPacket("web", b"\x7f" * 160, 0, 0, 9, 0, 0.0))
        assert parse_rtp(await recv(high)).payload == b"\x7f" * 160
        with pytest.raises(BlockingIOError):
            low.recv(2048)  # nothing went to the system port
    finally:
        await leg.close()
        low.close()
        high.close()


async def test_rtcp_moves_with_rtp_when_a_reinvite_moves_the_media() -> None:
    """RTP and RTCP latch to the phone's first address; a re-INVITE naming another port moves
    both: the new RTCP source is taken and reports go there, the old one is dropped."""
    from aiortc.rtp import RtcpRrPacket

    from tests.integration.test_sip_edge import rtp_pair

    leg = RtpLeg("phone", lambda packet: None, "pcmu")
    (old_rtp, old_rtcp), (new_rtp, new_rtcp) = rtp_pair(), rtp_pair()
    report = bytes(RtcpRrPacket(ssrc=0x77, reports=[]))
    try:
        local = await leg.open("127.0.0.1")
        rtcp_port = (local[0], local[1] + 1)
        leg.set_remote(old_rtp.getsockname())
        old_rtp.sendto(build_rtp(RtpPacket(PCMU, False, 1, 160, 0x77, b"\xff" * 160)), local)
        old_rtcp.sendto(report, rtcp_port)
        assert leg.rtcp is not None
        rtcp = leg.rtcp
        await until(lambda: leg.received == 1 and rtcp.received == 1)
        leg.set_remote(new_rtp.getsockname())  # the re-INVITE
        new_rtp.sendto(build_rtp(RtpPacket(PCMU, False, 2, 320, 0x77, b"\xff" * 160)), local)
        new_rtcp.sendto(report, rtcp_port)
        await until(lambda: leg.received == 2 and rtcp.received == 2)
        assert leg.remote == new_rtp.getsockname() and rtcp.remote == new_rtcp.getsockname()
        old_rtcp.sendto(report, rtcp_port)  # the old address is not the party's any more
        await until(lambda: rtcp.dropped == 1)
    finally:
        await leg.close()
        for sock in (old_rtp, old_rtcp, new_rtp, new_rtcp):
            sock.close()


async def test_a_held_stream_is_sent_nothing_and_a_rtcp_gets_the_reports() -> None:
    """As the SIP edge aims a phone's leg (sip/media_peers.py `aim`): an SDP at c=0.0.0.0 (RFC
    3264 §8.4) is sent neither RTP nor RTCP, while the phone's own RTP from its signaling IP
    is still taken; resumed with an a=rtcp port that is not RTP + 1 (RFC 3605), RTP goes to the
    SDP's port and our reports to the a=rtcp one, none to the port after RTP."""
    from aiortc.rtp import RtcpPacket, RtcpSrPacket

    received: list[MediaPacket] = []
    media = MediaPeers(PeerFilter(["127.0.0.1/32"]))
    leg = RtpLeg("phone", received.append, "pcmu", permits=media.permits)
    phone, next_port = pair_of_sockets()
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    control.bind(("127.0.0.1", 0))
    control.setblocking(False)

    def sdp(address: str, extra: str = "") -> bytes:
        return (
            f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
            f"m=audio {phone.getsockname()[1]} RTP/AVP 0\r\n{extra}"
        ).encode()

    try:
        local = await leg.open("127.0.0.1")
        held = parse_audio(sdp("0.0.0.0"))
        media.check(held, device="127.0.0.1")  # taken, not 488
        aim(leg, held, ["127.0.0.1"])
        phone.sendto(build_rtp(RtpPacket(PCMU, True, 1, 160, 0x42, b"\xff" * 160)), local)
        await until(lambda: leg.received == 1)
        for n in range(5):  # the other party's audio while held: not sent
            leg.send(MediaPacket("web", b"\x01" * 160, n * 160, n, 9, 0, 0.0))
        assert leg.rtcp is not None
        leg.rtcp.send_report()
        resumed = parse_audio(sdp("127.0.0.1", f"a=rtcp:{control.getsockname()[1]}\r\n"))
        media.check(resumed, device="127.0.0.1")
        aim(leg, resumed, ["127.0.0.1"])
        leg.sending = True  # the re-INVITE's direction (runtime/sip_reoffers.py Reoffers)
        for n in range(5, 8):
            leg.send(MediaPacket("web", b"\x02" * 160, n * 160, n, 9, 0, 0.0))
        leg.rtcp.send_report()
        payloads = [parse_rtp(await recv(phone)).payload for _ in range(3)]
        assert payloads == [b"\x02" * 160] * 3  # nothing from the hold came through
        report = RtcpPacket.parse(await recv(control))[0]
        assert isinstance(report, RtcpSrPacket) and report.sender_info.packet_count == 3
        with pytest.raises(BlockingIOError):
            next_port.recv(2048)  # RTCP went to a=rtcp only, never to RTP + 1
        with pytest.raises(BlockingIOError):
            phone.recv(2048)
    finally:
        await leg.close()
        for sock in (phone, next_port, control):
            sock.close()
