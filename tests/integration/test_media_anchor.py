"""The media anchor over real sockets: two aiortc parties, each relay-only through our TURN server,
each with its peer connection ending at a `Bridge`. The caller plays 440 Hz, the callee 880 Hz;
each must hear the other, and the payloads the callee receives must be byte for byte the ones the
anchor received from the caller (forwarded, not transcoded)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from callgate.client.audio import WavSink, audio_source, dominant_frequency
from callgate.client.ice import rtc_configuration
from callgate.media.anchor import AnchorLeg, Bridge
from callgate.media.packets import MediaPacket
from callgate.media.prompt import beep_frames
from callgate.media.srtp_path import SrtpPath
from callgate.turn.allocation import framed
from callgate.types import Transport
from tests.conftest import run_turn_server, server_address
from tests.integration.fake_signaling import hello_for


async def wait(event: asyncio.Event, what: str, timeout: float = 60.0) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def connected(pc: Any) -> asyncio.Event:
    event = asyncio.Event()

    def changed() -> None:
        if pc.connectionState == "connected":
            event.set()

    pc.on("connectionstatechange", changed)
    return event


def spy_on(receiver: Any, payloads: list[bytes], timestamps: list[int] | None = None) -> None:
    """Note each payload (and RTP timestamp) `receiver` gets, then let aiortc decode it as usual."""
    original = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        payloads.append(bytes(packet.payload))
        if timestamps is not None:
            timestamps.append(packet.timestamp)
        await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle


async def inbound_outbound(leg: AnchorLeg) -> tuple[int, int]:
    """What the leg's RTCP reports will say: packets it received from and sent to its party."""
    stats = list((await leg.pc.getStats()).values())
    received = sum(s.packetsReceived for s in stats if s.type == "inbound-rtp")
    sent = sum(s.packetsSent for s in stats if s.type == "outbound-rtp")
    return received, sent


async def has_report(pc: RTCPeerConnection) -> bool:
    """Has `pc` had an RTCP receiver report from the other end (its round trip known)?"""
    stats = (await pc.getStats()).values()
    return any(s.type == "remote-inbound-rtp" and s.roundTripTime is not None for s in stats)


async def wait_for_report(pc: RTCPeerConnection, name: str) -> None:
    """Until `pc` has had a report block about its stream (RTCP every ~5 s: waited for)."""

    async def reported() -> None:
        while not await has_report(pc):
            await asyncio.sleep(0.2)

    await asyncio.wait_for(reported(), 30)


async def crafted_packets_are_parsed_or_refused(
    alice: Any, leg: AnchorLeg, seen: list[MediaPacket]
) -> None:
    """RTP that aiortc never sends, encrypted with alice's keys and handed to the leg as the relay
    delivers it (ChannelData, RFC 8656 §12.4): CSRCs, a header extension and padding around the
    payload (RFC 3550 §5.1, RFC 8285) are skipped; a forged packet and a payload type that was
    not negotiated are refused."""
    assert leg.path is not None and leg.path._turn is not None
    tx = alice.getTransceivers()[0].sender.transport._tx_srtp
    last = [p for p in seen if p.leg == "caller"][-1]
    ssrc = (last.ssrc + 1) & 0xFFFFFFFF  # a stream of its own: alice's replay window untouched
    pair = leg.path._turn_pair
    channel = leg.path._turn.peer_to_channel[pair.remote_addr]

    def rtp(seq: int, payload_type: int) -> bytes:
        head = struct.pack(
            "!BBHII", 0x80 | 0x20 | 0x10 | 2, payload_type, seq, last.timestamp, ssrc
        )
        csrcs = struct.pack("!II", 7, 8)
        extension = struct.pack("!HH", 0xBEDE, 1) + bytes([0x10, 0xAB, 0, 0])
        return tx.protect(head + csrcs + extension + last.payload + bytes([0, 0, 3]))

    def deliver(data: bytes) -> None:
        leg.path._turn.datagram_received(struct.pack("!HH", channel, len(data)) + data, ("x", 0))

    good, forged, other_type = rtp(1, last.payload_type), rtp(2, last.payload_type), rtp(3, 0)
    forged = forged[:20] + bytes([forged[20] ^ 1]) + forged[21:]
    before, rejected = len(seen), leg.path.rejected
    for data in (good, forged, other_type):
        deliver(data)
    (got,) = seen[before:]
    assert (got.ssrc, got.seq, got.payload) == (ssrc, 1, last.payload)
    assert leg.path.rejected == rejected + 2


def relay_keeps_its_rules_in_process(server: Any, leg: AnchorLeg, seen: list[MediaPacket]) -> None:
    """With the legs' packets handed over in-process, the relay still applies its own rules to
    them: a packet from a peer the anchor's allocation has no permission for never reaches the
    anchor (RFC 8656 §9), and a leg whose channel the server no longer has (expired, or withdrawn
    in call-bound mode) cannot send through it (§12)."""
    assert leg.path is not None and leg.path._turn is not None
    turn = leg.path._turn
    sockname = turn.transport.get_extra_info("sockname")
    allocation = server.udp_client(turn.server, (sockname[0], sockname[1]))
    assert allocation is not None and allocation.local_client is not None
    last = [p for p in seen if p.leg == leg.name][-1]
    pair = leg.path._turn_pair
    stranger = ("127.0.0.2", pair.remote_addr[1])  # an IP the allocation has no permission for
    assert stranger[0] not in allocation.permissions
    data = bytes([0x80, last.payload_type]) + bytes(40)
    before, dropped = len(seen), allocation.dropped
    assert not allocation.from_peer(framed(data), len(data), stranger)
    assert allocation.dropped == dropped + 1 and len(seen) == before
    channel = turn.peer_to_channel[pair.remote_addr]
    sent = allocation.packets_to_peer
    assert not allocation.channel_data(channel ^ 0x0100, data)  # a channel not bound
    assert allocation.packets_to_peer == sent


def prompt_heard(
    bob_got: list[bytes], timestamps: list[int], alice_got: list[bytes], seen: list[MediaPacket]
) -> list[list[bytes]]:
    """Both parties heard the whole prompt, in order and unbroken by the other's audio; bob's
    RTP timestamps run on without a jump through it and after it (the anchor re-times its own
    frames and the forwarded ones that follow); the recording holds only what the parties sent.
    Returns bob's packets before and after the prompt."""
    beep = list(beep_frames())
    for got in (bob_got, alice_got):
        at = got.index(beep[0])
        assert got[at : at + len(beep)] == beep
    at = bob_got.index(beep[0])
    steps = [
        (b - a) & 0xFFFFFFFF for a, b in zip(timestamps[at - 1 :], timestamps[at:], strict=False)
    ]
    assert steps[: len(beep) + 5] == [960] * (len(beep) + 5), steps[: len(beep) + 5]
    assert not set(beep) & {p.payload for p in seen}
    return [run for run in (bob_got[:at], bob_got[at + len(beep) :]) if run]


@pytest.mark.timeout(180)  # aiortc's handshakes are slow on a loaded machine
@pytest.mark.parametrize("mode", ["in-process", "srtp-path", "aiortc-path"])
async def test_bridge_forwards_each_partys_opus_unchanged(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every per-packet path: the lean one (`srtp_path.py`) with the TURN server in the same
    process (packets handed between the legs and their allocations in-process) and over the
    loopback sockets, and aiortc's, which a leg keeps when aiortc's internals are not what the
    lean one expects."""
    lean = mode != "aiortc-path"
    if not lean:
        monkeypatch.setattr(SrtpPath, "attach", classmethod(lambda cls, *args: None))
    seen: list[MediaPacket] = []
    async with run_turn_server() as server:
        turn = server_address(server, Transport.UDP)
        local = server.udp_client if mode == "in-process" else None
        bridge = Bridge(lambda: hello_for("anchor", turn)["ice_servers"], seen.append, local)
        alice = RTCPeerConnection(rtc_configuration(hello_for("alice", turn)))
        bob = RTCPeerConnection(rtc_configuration(hello_for("bob", turn)))
        sinks = {"alice": WavSink(tmp_path / "alice.wav"), "bob": WavSink(tmp_path / "bob.wav")}
        bob_got: list[bytes] = []
        bob_timestamps: list[int] = []
        alice_got: list[bytes] = []
        try:
            alice.addTrack(audio_source(None, 440.0))
            alice.on("track", sinks["alice"].start)
            bob.on("track", sinks["bob"].start)
            alice_up = connected(alice)
            await alice.setLocalDescription(await alice.createOffer())

            caller_leg = bridge.leg("caller")
            answer = await caller_leg.answer(alice.localDescription.sdp)
            assert "a=candidate" in answer and " typ relay" in answer
            assert " typ host" not in answer  # relay-only: the anchor offers only relayed ones
            await alice.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await wait(caller_leg.connected, "the caller's leg")
            await wait(alice_up, "alice connected to the anchor")

            callee_leg = bridge.leg("callee")
            offer = await callee_leg.offer()
            await bob.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            bob.addTrack(audio_source(None, 880.0))
            (transceiver,) = bob.getTransceivers()
            spy_on(transceiver.receiver, bob_got, bob_timestamps)
            spy_on(alice.getTransceivers()[0].receiver, alice_got)
            await bob.setLocalDescription(await bob.createAnswer())
            await callee_leg.accept_answer(bob.localDescription.sdp)
            await wait(callee_leg.connected, "the callee's leg")

            async def enough() -> None:
                while len(bob_got) < 100 or not any(p.leg == "callee" for p in seen[-50:]):
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(enough(), 60)
            if lean:  # the recording prompt, to both parties, in place of the other's audio
                await asyncio.wait_for(bridge.announce(beep_frames()), 30)
            await asyncio.sleep(1.5)  # more audio both ways for the recordings
            for leg in (caller_leg, callee_leg):
                assert (leg.path is not None) is lean
                if leg.path is not None:  # relay-only: SRTP taken straight from TURN ChannelData
                    assert leg.path._turn is not None and leg.path.rejected == 0
                    assert leg.path.in_process is (mode == "in-process")
                    if mode == "in-process":  # both ways, not through the loopback sockets
                        assert leg.path.handed_in >= 50 and leg.path.handed_out >= 50
                        # RTCP and consent checks too, both ways
                        assert leg.path.rtcp_in >= 1 and leg.path.aioice_out >= 1
                # each side's receiver reports reached the other (RTT known on both)
                await wait_for_report(leg.pc, leg.name)
                # the leg's own reports: one loop (rtcp_reports.py), not aiortc's two
                assert leg.reports is not None and leg.reports.sent >= 1
                received, sent = await inbound_outbound(leg)
                assert sent >= 50, (leg.name, sent)
                # aiortc's path never hands the receiver its packets (packets.py): no reports
                assert received >= 50 if lean else received == 0, (leg.name, received)
            if lean:  # the legs' reports (SR with a report block, ~5 s) reached the parties
                await wait_for_report(alice, "alice")
                await wait_for_report(bob, "bob")
                await crafted_packets_are_parsed_or_refused(alice, caller_leg, seen)
            if mode == "in-process":
                relay_keeps_its_rules_in_process(server, caller_leg, seen)
        finally:
            for sink in sinks.values():
                await sink.stop()
            await asyncio.gather(alice.close(), bob.close(), bridge.close())

    from_caller = [p.payload for p in seen if p.leg == "caller"]
    from_callee = [p for p in seen if p.leg == "callee"]
    assert len(from_callee) > 50, len(from_callee)
    runs = [bob_got]
    if lean:
        runs = prompt_heard(bob_got, bob_timestamps, alice_got, seen)
    # around the prompt, what bob received is a run of exactly what alice sent the anchor, in order
    # (a steady tone repeats some Opus packets: the run is looked for at every start)
    for run in runs:
        assert any(
            from_caller[start : start + len(run)] == run
            for start in range(len(from_caller) - len(run) + 1)
        ), len(run)
    assert abs(dominant_frequency(tmp_path / "bob.wav") - 440.0) < 5.0
    assert abs(dominant_frequency(tmp_path / "alice.wav") - 880.0) < 5.0
