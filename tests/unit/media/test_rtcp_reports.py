"""`rtcp_reports`: a WebRTC anchor leg's one report loop says what aiortc's two said (SR or RR
with a report block, SDES CNAME, BYE at the end), as RFC 3550 compound packets, on aiortc's own
sender and receiver objects (no sockets)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    RtpPacket,
)

from callgate.media import rtcp_reports

PARTY_SSRC = 0x0A0B0C0D


def _transceiver() -> tuple[RTCPeerConnection, Any]:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio")
    transceiver.sender._RTCRtpSender__cname = "anchor-leg"  # what aiortc sets as the leg starts
    return pc, transceiver


def _received(receiver: Any, sequence_numbers: list[int]) -> None:
    stream = StreamStatistics(48000)
    for seq in sequence_numbers:
        stream.add(RtpPacket(sequence_number=seq, timestamp=960 * seq))
    receiver._RTCRtpReceiver__remote_streams[PARTY_SSRC] = stream


async def test_receiver_report_until_the_leg_sends_then_sender_report() -> None:
    pc, transceiver = _transceiver()
    sender, receiver = transceiver.sender, transceiver.receiver
    reports = rtcp_reports.install(transceiver)
    assert sender._run_rtcp == reports.run and receiver._run_rtcp == reports.idle
    _received(receiver, [1, 2, 3, 5, 6])  # one lost (4)

    rr, sdes = RtcpPacket.parse(b"".join(bytes(p) for p in reports.packets(1000.0)))
    assert isinstance(rr, RtcpRrPacket) and rr.ssrc == sender._ssrc
    (block,) = rr.reports
    assert (block.ssrc, block.highest_sequence, block.packets_lost) == (PARTY_SSRC, 6, 1)
    assert (block.lsr, block.dlsr) == (0, 0)  # no SR from the party yet
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].ssrc == sender._ssrc and sdes.chunks[0].items == [(1, b"anchor-leg")]

    # the leg sent RTP (the lean path keeps these counters) and the party sent an SR 0.5 s ago
    sender._RTCRtpSender__packet_count = 250
    sender._RTCRtpSender__octet_count = 25_000
    sender._RTCRtpSender__rtp_timestamp = 123_456
    sender._RTCRtpSender__ntp_timestamp = 0x1122334455667788
    receiver._RTCRtpReceiver__lsr[PARTY_SSRC] = 0xCAFEBABE
    receiver._RTCRtpReceiver__lsr_time[PARTY_SSRC] = 999.5
    sr, _sdes = RtcpPacket.parse(b"".join(bytes(p) for p in reports.packets(1000.0)))
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == sender._ssrc
    info = sr.sender_info
    assert (info.packet_count, info.octet_count, info.rtp_timestamp) == (250, 25_000, 123_456)
    assert info.ntp_timestamp == 0x1122334455667788
    (block,) = sr.reports
    assert block.lsr == 0xCAFEBABE and block.dlsr == 32768  # 0.5 s in 1/65536 s
    # the party's report on this SR gives aiortc's sender the round trip: what it will echo
    assert sender._RTCRtpSender__lsr == 0x33445566
    assert sender._RTCRtpSender__lsr_time == 1000.0
    await pc.close()


async def test_one_loop_sends_reports_then_bye(monkeypatch: pytest.MonkeyPatch) -> None:
    pc, transceiver = _transceiver()
    sender, receiver = transceiver.sender, transceiver.receiver
    reports = rtcp_reports.install(transceiver)
    monkeypatch.setattr(rtcp_reports, "INTERVAL", 0.01)
    sent: list[list[Any]] = []
    two = asyncio.Event()

    async def send_rtcp(packets: list[Any]) -> None:
        sent.append(packets)
        if len(sent) >= 2:
            two.set()

    sender._send_rtcp = send_rtcp
    loops = [asyncio.ensure_future(sender._run_rtcp()), asyncio.ensure_future(receiver._run_rtcp())]
    await asyncio.wait_for(two.wait(), 30)
    for loop in loops:
        loop.cancel()
    await asyncio.wait_for(asyncio.gather(*loops), 30)
    assert sender._RTCRtpSender__rtcp_exited.is_set()  # what aiortc's stop() waits for
    assert receiver._RTCRtpReceiver__rtcp_exited.is_set()
    assert all(isinstance(packets[0], RtcpRrPacket) for packets in sent[:-1])  # nothing sent yet
    (bye,) = sent[-1]
    assert isinstance(bye, RtcpByePacket) and bye.sources == [sender._ssrc]
    assert reports.sent == len(sent) - 1
    await pc.close()


def _hostile_stream(monkeypatch: pytest.MonkeyPatch) -> StreamStatistics:
    """A party alternating RTP timestamps 0 / 2^32-1, a packet every 20 ms: aiortc's jitter
    climbs to 2^32-1 and then past it on every other packet."""
    from aiortc import rtcrtpreceiver

    now = [1000.0]

    def clock() -> float:
        now[0] += 0.02
        return now[0]

    monkeypatch.setattr(rtcrtpreceiver, "time", SimpleNamespace(time=clock))
    stream = StreamStatistics(8000)
    for seq in range(600):
        stream.add(RtpPacket(sequence_number=seq, timestamp=0 if seq % 2 else 0xFFFFFFFF))
        if stream.jitter > 0xFFFFFFFF:
            return stream
    raise AssertionError("the jitter never left 32 bits: the test no longer shows the case")


async def test_a_jitter_past_32_bits_is_clamped_and_the_report_still_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pc, transceiver = _transceiver()
    receiver = transceiver.receiver
    reports = rtcp_reports.install(transceiver)
    receiver._RTCRtpReceiver__remote_streams[PARTY_SSRC] = _hostile_stream(monkeypatch)
    rr, _sdes = RtcpPacket.parse(b"".join(bytes(p) for p in reports.packets(1000.0)))
    assert isinstance(rr, RtcpRrPacket) and rr.reports[0].jitter == 0xFFFFFFFF
    await pc.close()


def test_the_highest_sequence_is_extended_by_the_cycles() -> None:
    """RFC 3550 §6.4.1: the 16-bit sequence wrapped twice: 2 * 65536 + the highest seq."""
    stream = StreamStatistics(8000)
    for seq in [*range(65530, 65536), *range(0, 65536, 1000), *range(65000, 65536, 100), 0, 7]:
        stream.add(RtpPacket(sequence_number=seq, timestamp=seq))
    block = rtcp_reports.report_block(PARTY_SSRC, stream, 0, 0)
    assert block.highest_sequence == 2 * 65536 + 7


async def test_a_sender_report_only_after_rtp_was_sent_since_the_last() -> None:
    pc, transceiver = _transceiver()
    sender = transceiver.sender
    reports = rtcp_reports.install(transceiver)
    sender._RTCRtpSender__packet_count = 50
    assert isinstance(reports.packets(1000.0)[0], RtcpSrPacket)
    assert isinstance(reports.packets(1005.0)[0], RtcpRrPacket)  # nothing sent since (§6.4)
    sender._RTCRtpSender__packet_count = 51
    assert isinstance(reports.packets(1010.0)[0], RtcpSrPacket)
    await pc.close()


async def test_reports_that_fail_to_send_do_not_stop_the_loop_nor_its_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send that raises is counted and logged; the loop goes on; even a failing BYE leaves
    `rtcp_exited` set, so aiortc's sender.stop() (the leg's close) does not hang."""
    pc, transceiver = _transceiver()
    sender = transceiver.sender
    reports = rtcp_reports.install(transceiver)
    monkeypatch.setattr(rtcp_reports, "INTERVAL", 0.01)
    three = asyncio.Event()
    tries: list[list[Any]] = []

    async def send_rtcp(packets: list[Any]) -> None:
        tries.append(packets)
        if len(tries) >= 3:
            three.set()
        raise ValueError("cannot send")

    sender._send_rtcp = send_rtcp
    loop = asyncio.ensure_future(sender._run_rtcp())
    await asyncio.wait_for(three.wait(), 30)
    loop.cancel()
    await asyncio.wait_for(loop, 30)
    assert sender._RTCRtpSender__rtcp_exited.is_set()
    assert isinstance(tries[-1][0], RtcpByePacket)
    assert reports.failed == len(tries) and reports.sent == 0
    await pc.close()


async def test_a_plain_rtp_legs_reports_clamp_too_and_survive_a_failed_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SIP edge's RTCP (rtcp_leg.py): the same hostile jitter builds a report; a report
    that fails is counted, and the next ones are still tried."""
    from callgate.media import rtcp_leg

    channel = rtcp_leg.RtcpChannel(SimpleNamespace(name="carrier"))  # type: ignore[arg-type]
    channel.stats = _hostile_stream(monkeypatch)
    assert RtcpReceiverInfo.parse(bytes(channel._block(PARTY_SSRC))).jitter == (0xFFFFFFFF)
    monkeypatch.setattr(rtcp_leg, "INTERVAL", 0.01)
    tried = asyncio.Event()

    def send_report() -> None:
        if channel.failed >= 2:
            tried.set()
        raise OSError("network is unreachable")

    monkeypatch.setattr(channel, "send_report", send_report)
    channel._task = asyncio.ensure_future(channel._run())
    await asyncio.wait_for(tried.wait(), 30)
    await channel.close()
    assert channel.failed >= 2
