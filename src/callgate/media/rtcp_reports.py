"""A WebRTC anchor leg's RTCP reports: one compound packet every ~5 s (docs/recording.md, "RTCP").

aiortc runs two report loops per peer connection, the sender's (SR and SDES) and the receiver's
(RR), each every 0.5-1.5 s: about two RTCP packets a second per leg, each built, SRTCP-protected
and sent by a task of its own. For the anchor, whose legs live as long as calls, that was about
a tenth of its event loop (bench/README.md, "RTCP at RFC 3550's interval"). `install` replaces
both loops on a leg's transceiver, before aiortc starts them, with one that sends, per RFC 3550:

- every INTERVAL seconds (§6.2: the recommended fixed minimum, 5 s; the first after half of it),
  varied over [0.5, 1.5] times that (§6.3.1), one compound packet (§6.1):
- a sender report (§6.4.1) when the leg has sent RTP, else a receiver report (§6.4.2), with a
  report block on each stream the leg receives (loss, highest sequence, jitter from aiortc's
  receive statistics, LSR/DLSR from the party's last SR, so the party computes the round trip);
- then SDES CNAME (§6.5); a BYE (§6.6) when the sender stops, as aiortc's loop does.

The figures are those aiortc's loops read (the sender's counters, which the lean path keeps,
srtp_path.py; the receiver's statistics); the party's reports are still handled by aiortc.
Every attribute used is checked by internals.py before the first leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from aiortc.rtp import (
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

INTERVAL = 5.0  # RFC 3550 §6.2
MAX_BLOCKS = 31  # report blocks in one SR or RR (RFC 3550 §6.4.1: a 5-bit count)
SDES_CNAME = 1  # RFC 3550 §6.5.1
U32 = 0xFFFFFFFF
SENDER = "_RTCRtpSender__"
RECEIVER = "_RTCRtpReceiver__"


class LegReports:
    """The report loop of one leg: its transceiver's sender and receiver (module docstring)."""

    def __init__(self, sender: Any, receiver: Any) -> None:
        self._sender = sender
        self._receiver = receiver
        self.sent = 0  # compound packets sent

    def packets(self, now: float) -> list[AnyRtcpPacket]:
        """The compound packet due now: SR or RR with report blocks, then SDES CNAME."""
        sender, receiver = self._sender, self._receiver
        streams = getattr(receiver, f"{RECEIVER}remote_streams")
        lsr = getattr(receiver, f"{RECEIVER}lsr")
        lsr_time = getattr(receiver, f"{RECEIVER}lsr_time")
        blocks = []
        for ssrc, stream in list(streams.items())[:MAX_BLOCKS]:
            last, dlsr = 0, 0
            if ssrc in lsr:  # the party's last SR (§6.4.1: LSR, DLSR in 1/65536 s)
                last = lsr[ssrc]
                delay = now - lsr_time[ssrc]
                if 0 < delay < 65536:
                    dlsr = int(delay * 65536)
            blocks.append(
                RtcpReceiverInfo(
                    ssrc=ssrc,
                    fraction_lost=stream.fraction_lost,
                    packets_lost=stream.packets_lost,
                    highest_sequence=stream.max_seq,
                    jitter=stream.jitter,
                    lsr=last,
                    dlsr=dlsr,
                )
            )
        ssrc = int(sender._ssrc)
        count = getattr(sender, f"{SENDER}packet_count")
        first: AnyRtcpPacket
        if count:  # we sent RTP: a sender report (§6.4.1)
            ntp = getattr(sender, f"{SENDER}ntp_timestamp")
            info = RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=getattr(sender, f"{SENDER}rtp_timestamp"),
                packet_count=count & U32,
                octet_count=getattr(sender, f"{SENDER}octet_count") & U32,
            )
            first = RtcpSrPacket(ssrc=ssrc, sender_info=info, reports=blocks)
            # what the party's report about this SR will echo (its round trip, aiortc's sender)
            setattr(sender, f"{SENDER}lsr", (ntp >> 16) & U32)
            setattr(sender, f"{SENDER}lsr_time", now)
        else:
            first = RtcpRrPacket(ssrc=ssrc, reports=blocks)
        packets: list[AnyRtcpPacket] = [first]
        cname = getattr(sender, f"{SENDER}cname")
        if cname is not None:
            item = (SDES_CNAME, str(cname).encode("utf8"))
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[item])]))
        return packets

    async def run(self) -> None:
        """In place of the sender's `_run_rtcp`: the leg's reports, then BYE when cancelled."""
        sender = self._sender
        getattr(sender, f"{SENDER}rtcp_started").set()
        try:
            interval = INTERVAL / 2  # §6.2: the first report after half the minimum
            while True:
                await asyncio.sleep(interval * (0.5 + random.random()))  # §6.3.1
                interval = INTERVAL
                await sender._send_rtcp(self.packets(time.time()))
                self.sent += 1
        except asyncio.CancelledError:
            pass
        await sender._send_rtcp([RtcpByePacket(sources=[int(sender._ssrc)])])
        getattr(sender, f"{SENDER}rtcp_exited").set()

    async def idle(self) -> None:
        """In place of the receiver's `_run_rtcp`: its reports go in the sender's packet."""
        receiver = self._receiver
        getattr(receiver, f"{RECEIVER}rtcp_started").set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()  # until aiortc cancels it
        getattr(receiver, f"{RECEIVER}rtcp_exited").set()


def install(transceiver: Any) -> LegReports:
    """Replace aiortc's two report loops on `transceiver` with one (call before aiortc starts
    the sender and receiver: they look `_run_rtcp` up on the instance when they start)."""
    reports = LegReports(transceiver.sender, transceiver.receiver)
    transceiver.sender._run_rtcp = reports.run
    transceiver.receiver._run_rtcp = reports.idle
    return reports
