"""A WebRTC anchor leg's RTCP reports: one compound packet every ~5 s (docs/recording.md, "RTCP").

aiortc runs two report loops per peer connection, the sender's (SR and SDES) and the receiver's
(RR), each every 0.5-1.5 s: about two RTCP packets a second per leg, each built, SRTCP-protected
and sent by a task of its own. For the anchor, whose legs live as long as calls, that was about
a tenth of its event loop (bench/README.md, "RTCP at RFC 3550's interval"). `install` replaces
both loops on a leg's transceiver, before aiortc starts them, with one that sends, per RFC 3550:

- every INTERVAL seconds (§6.2: the recommended fixed minimum, 5 s; the first after half of it),
  varied over [0.5, 1.5] times that (§6.3.1), one compound packet (§6.1):
- a sender report (§6.4.1) when the leg has sent RTP since its previous report (§6.4), else a
  receiver report (§6.4.2), with a report block on each stream the leg receives (loss,
  extended highest sequence, jitter from aiortc's receive statistics, each clamped to its
  field, `report_block`; LSR/DLSR from the party's last SR, so it computes the round trip);
- then SDES CNAME (§6.5); a BYE (§6.6) when the sender stops, as aiortc's loop does.

The figures are those aiortc's loops read (the sender's counters, which the lean path keeps,
srtp_path.py; the receiver's statistics); the party's reports are still handled by aiortc.
Every attribute used is checked by internals.py before the first leg. A report that cannot be
built or sent is logged (at most once a minute per leg) and the loop goes on; the BYE is sent
and `rtcp_exited` set whatever happens, so aiortc's `sender.stop()` (and the leg's close)
never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
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

log = logging.getLogger(__name__)

INTERVAL = 5.0  # RFC 3550 §6.2
MAX_BLOCKS = 31  # report blocks in one SR or RR (RFC 3550 §6.4.1: a 5-bit count)
SDES_CNAME = 1  # RFC 3550 §6.5.1
U32 = 0xFFFFFFFF
SENDER = "_RTCRtpSender__"
RECEIVER = "_RTCRtpReceiver__"
LOST_MIN, LOST_MAX = -(1 << 23), (1 << 23) - 1  # cumulative lost: 24 bits, signed (§6.4.1)
LOG_EVERY = 60.0  # seconds between two logs of a leg's failing reports


def report_block(ssrc: int, stats: Any, lsr: int, dlsr: int) -> RtcpReceiverInfo:
    """RFC 3550 §6.4.1 report block on the stream `stats` (aiortc's `StreamStatistics`), each
    figure clamped to its field: a party's RTP (timestamps jumping 0 / 2^32-1) can push aiortc's
    jitter past 32 bits, which would make the packet unbuildable."""
    return RtcpReceiverInfo(
        ssrc=ssrc & U32,
        fraction_lost=max(0, min(int(stats.fraction_lost), 255)),
        packets_lost=max(LOST_MIN, min(int(stats.packets_lost), LOST_MAX)),
        highest_sequence=(int(stats.cycles) + int(stats.max_seq or 0)) & U32,
        jitter=max(0, min(int(stats.jitter), U32)),
        lsr=lsr & U32,
        dlsr=dlsr & U32,
    )


class LegReports:
    """The report loop of one leg: its transceiver's sender and receiver (module docstring)."""

    def __init__(self, sender: Any, receiver: Any) -> None:
        self._sender = sender
        self._receiver = receiver
        self.sent = 0  # compound packets sent
        self.failed = 0  # reports that could not be built or sent
        self._logged = -LOG_EVERY
        self._count_at_last = 0  # the sender's RTP count at the previous report

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
            blocks.append(report_block(ssrc, stream, last, dlsr))
        ssrc = int(sender._ssrc)
        count = getattr(sender, f"{SENDER}packet_count")
        first: AnyRtcpPacket
        if count != self._count_at_last:  # RTP sent since the last report: SR (§6.4, §6.4.1)
            self._count_at_last = count
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
            with contextlib.suppress(asyncio.CancelledError):
                interval = INTERVAL / 2  # §6.2: the first report after half the minimum
                while True:
                    await asyncio.sleep(interval * (0.5 + random.random()))  # §6.3.1
                    interval = INTERVAL
                    if await self._send(lambda: self.packets(time.time())):
                        self.sent += 1
            await self._send(lambda: [RtcpByePacket(sources=[int(sender._ssrc)])])
        finally:
            getattr(sender, f"{SENDER}rtcp_exited").set()

    async def _send(self, build: Callable[[], list[AnyRtcpPacket]]) -> bool:
        """Build and send one compound packet; a failure is counted and logged (rate-limited),
        never ends the loop."""
        try:
            await self._sender._send_rtcp(build())
        except Exception:
            self.failed += 1
            now = time.monotonic()
            if now - self._logged >= LOG_EVERY:
                self._logged = now
                log.exception("RTCP report not sent (%d so far on this leg)", self.failed)
            return False
        return True

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
