"""`RtcpChannel`: RTCP for a plain RTP leg (RFC 3550 §6), so phones and carriers see our reports
and the call's quality includes theirs (docs/sip.md, "RTCP").

- A socket on the RTP port + 1 (§11; our SDP also says so with `a=rtcp`, RFC 3605). The party's
  RTCP goes to its RTP port + 1, or where its `a=rtcp` says; like RTP it is taken from the
  party's allowed IPs and latches to the first valid source.
- Every INTERVAL seconds (§6.2: 5 s minimum) a compound packet: a sender report (SR, §6.4.1)
  when we sent RTP since the last one, else a receiver report (RR, §6.4.2), with one report
  block on the party's stream (loss, highest sequence, jitter from aiortc's receive statistics,
  LSR/DLSR so the party can compute the round trip), then an SDES CNAME (§6.5, required in
  every compound packet).
- The party's SR and RR are read: the report block about our stream gives its view of loss and
  jitter, and with its LSR/DLSR the round-trip time (§6.4.1); its SR's time is kept for our
  next report's LSR/DLSR.
- With SDES-SRTP keys RTCP is SRTCP (RFC 3711 §3.4), with the same libsrtp sessions as the RTP.

Packets are built and parsed with aiortc's RTCP classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pylibsrtp
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)

from callgate.media.rtcp_reports import LOG_EVERY, report_block

if TYPE_CHECKING:
    from callgate.media.rtp_leg import RtpLeg

log = logging.getLogger(__name__)

INTERVAL = 5.0
NTP_EPOCH = 2208988800  # seconds from 1900 to 1970 (RFC 5905)
MAX_RTCP = 1500
MIN_PORT = 1024  # no latching to system services (RFC 6335 §6): the SIP edge's media floor


def ntp_now() -> int:
    now = time.time() + NTP_EPOCH
    return (int(now) << 32) | int((now % 1) * (1 << 32))


def _middle(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PartyReport:
    """What the party said about the stream we send it (its last report block on it)."""

    fraction_lost: float  # 0..1 over its last interval
    packets_lost: int  # cumulative
    jitter_ms: float
    rtt_ms: float | None  # from its LSR/DLSR, when it had our SR


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, channel: RtcpChannel) -> None:
        self._channel = channel

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._channel.received_datagram(data, (str(addr[0]), int(addr[1])))


class RtcpChannel:
    def __init__(self, leg: RtpLeg, clock: int = 8000) -> None:
        self._leg = leg
        self.stats = StreamStatistics(clock)  # the party's stream, as we receive it
        self.party: PartyReport | None = None
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0  # reports that could not be built or sent
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self._latched = False
        self._party_ssrc: int | None = None
        self._their_sr: tuple[int, float] | None = None  # (middle 32 bits of its SR, when)
        self._sent_at_last = -1
        self._cname = f"callgate-{secrets.token_hex(6)}".encode()
        self._task: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self.transport = transport

    def start(self, remote: tuple[str, int], relatch: bool = False) -> None:
        """Send reports to `remote` (the party's RTCP address) from now on; `relatch`: the
        party's media moved (a re-INVITE), so RTCP latches afresh with its RTP."""
        if relatch:
            self._latched = False
        if not self._latched:
            self.remote = remote
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"rtcp-{self._leg.name}")

    @property
    def packets_lost(self) -> int:
        """Of the party's current stream, as we receive it (0 before its first packet)."""
        return 0 if self.stats.max_seq is None else int(self.stats.packets_lost)

    def rtp_received(self, seq: int, timestamp: int, ssrc: int) -> None:
        """An RTP packet of the party's (the leg calls this)."""
        if self._party_ssrc != ssrc:  # a new source: statistics afresh (§6.4.1)
            self._party_ssrc = ssrc
            self.stats = StreamStatistics(self.stats._clockrate)
        self.stats.add(RtpPacket(sequence_number=seq, timestamp=timestamp, ssrc=ssrc))

    async def _run(self) -> None:
        logged = -LOG_EVERY
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                self.send_report()
            except Exception:  # one report lost, not the leg's RTCP for the rest of the call
                self.failed += 1
                if time.monotonic() - logged >= LOG_EVERY:
                    logged = time.monotonic()
                    log.exception(
                        "%s: RTCP report not sent (%d so far)", self._leg.name, self.failed
                    )

    def send_report(self) -> None:
        if self.transport is None or self.remote is None:
            return
        sender = self._leg.track
        blocks = [] if self._party_ssrc is None else [self._block(self._party_ssrc)]
        if sender.forwarded != self._sent_at_last and sender.forwarded:
            self._sent_at_last = sender.forwarded
            info = RtcpSenderInfo(
                ntp_timestamp=ntp_now(),
                rtp_timestamp=sender.last_timestamp,
                packet_count=sender.forwarded % (1 << 32),
                octet_count=sender.octets % (1 << 32),
            )
            report: Any = RtcpSrPacket(ssrc=sender.ssrc, sender_info=info, reports=blocks)
        else:
            report = RtcpRrPacket(ssrc=sender.ssrc, reports=blocks)
        cname = RtcpSourceInfo(ssrc=sender.ssrc, items=[(1, self._cname)])
        data = bytes(report) + bytes(RtcpSdesPacket(chunks=[cname]))
        if self._leg.outbound is not None:
            data = self._leg.outbound.protect_rtcp(data)
        self.transport.sendto(data, self.remote)
        self.sent += 1

    def _block(self, ssrc: int) -> RtcpReceiverInfo:
        lsr, dlsr = 0, 0
        if self._their_sr is not None:
            lsr = self._their_sr[0]
            dlsr = int((time.monotonic() - self._their_sr[1]) * 65536)
        return report_block(ssrc, self.stats, lsr, dlsr)  # each figure clamped to its field

    def received_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if len(data) > MAX_RTCP or (self._latched and source != self.remote):
            self.dropped += 1
            return
        if not self._latched and (
            source[0] not in self._leg.allowed
            or not self._leg.permits(source[0])
            or source[1] < MIN_PORT
        ):
            self.dropped += 1  # not the party's, or a range (or port) media may not go to
            return
        if self._leg.inbound is not None:
            try:
                data = self._leg.inbound.unprotect_rtcp(data)
            except pylibsrtp.Error:
                self.dropped += 1
                return
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            self.dropped += 1
            return
        if not self._latched:
            self._latched, self.remote = True, source
        self.received += 1
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                self._their_sr = (_middle(packet.sender_info.ntp_timestamp), time.monotonic())
            if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
                for block in packet.reports:
                    if block.ssrc == self._leg.track.ssrc:
                        self.party = self._party_report(block)

    def _party_report(self, block: RtcpReceiverInfo) -> PartyReport:
        rtt = None
        if block.lsr:  # §6.4.1: A - LSR - DLSR, in 1/65536 s
            delay = (_middle(ntp_now()) - block.lsr - block.dlsr) & 0xFFFFFFFF
            if delay < 65536 * 60:  # a sane round trip, not a clock wrap
                rtt = delay * 1000 / 65536
        return PartyReport(
            fraction_lost=block.fraction_lost / 256,
            packets_lost=block.packets_lost,
            jitter_ms=block.jitter * 1000 / self.stats._clockrate,
            rtt_ms=rtt,
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()
