"""`RtpLeg`: a plain RTP leg of a `Bridge` (RFC 3550), for SIP phones and trunks (docs/sip.md).

The other side of the bridge is a WebRTC `AnchorLeg` negotiated to the same G.711 codec
(PCMU or PCMA), so payloads pass unchanged both ways: nothing is transcoded.

- In: a UDP socket on the media address; each datagram that is RTP version 2 with the
  negotiated payload type becomes a `MediaPacket` for the bridge (observer first, then the other
  leg). Anything else is counted and dropped.
- Symmetric RTP (RFC 4961) with latching: a phone behind NAT sends from another address than its
  SDP names, so the first valid packet from an allowed IP (the SDP's, or the one its signaling
  came from) fixes where we send and the only source we accept from then on. A re-INVITE that
  moves the party's media (`set_remote` with a new address) latches afresh, RTP and RTCP
  alike (rtcp_leg.py); `sending` False
  (the party's SDP says it does not receive: hold) sends nothing.
- Destinations are judged by `permits` (the SIP edge gives the relay's peer filter,
  sip/media_peers.py): `set_remote` refuses an address it forbids, and a packet from a source it
  forbids, or from a port below 1024 (system services, RFC 6335 §6), is dropped ("forbidden")
  and never latched, so media never goes to loopback, internal ranges the operator has not
  opened or a system service.
- Out: `track.push(payload, timestamp)` sends the other party's payload in our own RTP stream
  (our SSRC and sequence numbers; timestamps kept relative to that party's first packet), as
  the WebRTC side does (packets.py).

- SRTP (RFC 3711) with keys from SDES (RFC 4568): given the phone's and our master key ‖ salt
  (AES_CM_128_HMAC_SHA1_80), packets are authenticated and decrypted on the way in (a packet that
  fails is dropped as "srtp") and encrypted on the way out, with libsrtp (pylibsrtp).

- DTMF: with `events` (the telephone-event payload type the SDP negotiated, RFC 4733) those
  packets are taken too and handed on with their payload type; the next handler decides what
  becomes of them (dtmf.py turns them into tones for the WebRTC side). Another RTP leg's events
  given to `send` go out as this leg's events, or nowhere if it negotiated none.

- RTCP (RFC 3550 §6) on the next port: our SR/RR, the party's reports read (rtcp_leg.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

from callgate.media.packets import MediaPacket, PacketHandler
from callgate.media.rtcp_leg import MIN_PORT, RtcpChannel

log = logging.getLogger(__name__)

PCMU, PCMA, G722 = 0, 8, 9  # static payload types (RFC 3551 §6)
CODEC_PAYLOAD_TYPES = {"pcmu": PCMU, "pcma": PCMA, "g722": G722}
RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
MAX_DATAGRAM = 2048
PAIR_ATTEMPTS = 20  # tries at an RTP port whose next port is free for RTCP


class RtpError(ValueError):
    """Not an RTP packet we take (the reason is counted, never answered)."""


class ForbiddenDestination(ValueError):
    """A media destination the leg's filter refuses."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet (RFC 3550 §5.1): fixed header, CSRCs, extension and padding removed."""
    if len(data) < HEADER.size or len(data) > MAX_DATAGRAM:
        raise RtpError("size")
    first, second, seq, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError("version")
    offset = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension (§5.3.1): 16-bit profile, 16-bit length in words
        if len(data) < offset + 4:
            raise RtpError("extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding (§5.1): the last octet counts the padding octets
        end -= data[-1]
    if end < offset:
        raise RtpError("length")
    return RtpPacket(second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, data[offset:end])


def build_rtp(packet: RtpPacket) -> bytes:
    second = (0x80 if packet.marker else 0) | packet.payload_type
    head = HEADER.pack(RTP_VERSION << 6, second, packet.seq, packet.timestamp, packet.ssrc)
    return head + packet.payload


class RtpSender:
    """The leg's outgoing stream: the other party's payloads under our SSRC (see module doc)."""

    def __init__(self, leg: RtpLeg) -> None:
        self._leg = leg
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._base_out = secrets.randbits(32)
        self._base_in: int | None = None
        self.forwarded = 0
        self.octets = 0  # payload octets sent (the SR's octet count, RFC 3550 §6.4.1)
        self.last_timestamp = self._base_out
        self._last_event: int | None = None  # the RTP timestamp of the last event sent

    def push(self, payload: bytes, timestamp: int, event: bool = False) -> None:
        """`event`: an RFC 4733 telephone-event payload, sent with the leg's events payload
        type, the marker on an event's first packet (§2.5.1.2: a new event timestamp)."""
        target = self._leg.remote
        if target is None or self._leg.transport is None or not self._leg.sending:
            return
        first = self._base_in is None
        if self._base_in is None:
            self._base_in = timestamp
        out = (self._base_out + timestamp - self._base_in) % (1 << 32)
        self._seq = (self._seq + 1) % (1 << 16)
        payload_type = self._leg.payload_type
        if event:
            assert self._leg.events is not None
            payload_type, first = self._leg.events, out != self._last_event
            self._last_event = out
        self._send(RtpPacket(payload_type, first, self._seq, out, self.ssrc, payload), target)

    def push_own(self, payload: bytes, duration: int) -> None:
        """A payload of the server's own (the recording prompt, media/prompt.py) lasting
        `duration` ticks: right after the last packet sent, and the next forwarded packet
        continues right after it (its party's timestamps rebased there, RFC 3550 §5.1)."""
        target = self._leg.remote
        if target is None or self._leg.transport is None or not self._leg.sending:
            return
        out = (self.last_timestamp + duration) % (1 << 32) if self.forwarded else self._base_out
        self._seq = (self._seq + 1) % (1 << 16)
        packet = RtpPacket(self._leg.payload_type, False, self._seq, out, self.ssrc, payload)
        self._send(packet, target)
        self._base_in, self._base_out = None, (out + duration) % (1 << 32)

    def _send(self, packet: RtpPacket, target: tuple[str, int]) -> None:
        data = build_rtp(packet)
        if self._leg.outbound is not None:
            data = self._leg.outbound.protect(data)
        assert self._leg.transport is not None
        self._leg.transport.sendto(data, target)
        self.forwarded += 1
        self.octets += len(packet.payload)
        self.last_timestamp = packet.timestamp


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, leg: RtpLeg) -> None:
        self._leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._leg.received_datagram(data, (str(addr[0]), int(addr[1])))


class RtpLeg:
    """One plain RTP party of a bridge (see module doc). `on_packet` is the bridge's
    `forward`; `codec` "pcmu", "pcma" or "g722". The party's audio packets go to `on_audio`,
    its telephone-events to `on_event`: both `on_packet` until someone (media/dtmf.py `attach`)
    routes them apart."""

    def __init__(
        self,
        name: str,
        on_packet: PacketHandler,
        codec: str = "pcmu",
        srtp: tuple[bytes, bytes] | None = None,
        events: int | None = None,
        permits: Callable[[str], bool] | None = None,
    ) -> None:
        """`srtp`: (the party's, our) SDES master key ‖ salt, or None for plain RTP; `events`:
        the telephone-event payload type, or None; `permits`: whether media may go to, and be
        latched from, an IP (None: any)."""
        if codec not in CODEC_PAYLOAD_TYPES:
            raise RtpError(f"unsupported codec {codec!r}")
        self.inbound: pylibsrtp.Session | None = None
        self.outbound: pylibsrtp.Session | None = None
        if srtp is not None:
            self.secure(*srtp)
        self.name = name
        self.codec = codec
        self.payload_type = CODEC_PAYLOAD_TYPES[codec]
        self.events = events
        self.received_events = 0
        self.connected = asyncio.Event()  # we know where to send
        self.sending = True  # False while the party's SDP says it does not receive (hold)
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp: RtcpChannel | None = None  # once open
        self.local: tuple[str, int] = ("", 0)
        self.remote: tuple[str, int] | None = None
        self.track = RtpSender(self)
        self.received = 0
        self.dropped: dict[str, int] = {}
        self.on_audio = self.on_event = on_packet
        self._allowed: set[str] = set()
        self._latched = False
        self._permits = permits or (lambda _host: True)

    def secure(self, theirs: bytes, ours: bytes) -> None:
        """SRTP from now on (before media flows): the party's and our SDES master key ‖ salt."""
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        inbound = pylibsrtp.Policy(theirs, pylibsrtp.Policy.SSRC_ANY_INBOUND, 0, profile)
        outbound = pylibsrtp.Policy(ours, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile)
        self.inbound, self.outbound = pylibsrtp.Session(inbound), pylibsrtp.Session(outbound)

    def use(self, codec: str) -> None:
        """The codec the party's answer chose of those we offered, before media flows."""
        if codec not in CODEC_PAYLOAD_TYPES:
            raise RtpError(f"unsupported codec {codec!r}")
        self.codec, self.payload_type = codec, CODEC_PAYLOAD_TYPES[codec]

    def permits(self, host: str) -> bool:
        """Whether media may be sent to, or latched from, `host` (module doc)."""
        return self._permits(host)

    def send(self, packet: MediaPacket) -> None:
        """The other party's packet to this phone, payload unchanged (the bridge's `Leg`). A
        packet that is not G.711 is the other RTP leg's telephone-event (the only other payload
        type a leg hands on): sent as this leg's events, or dropped if it has none."""
        if packet.payload_type in CODEC_PAYLOAD_TYPES.values():
            self.track.push(packet.payload, packet.timestamp)
        elif self.events is not None:
            self.track.push(packet.payload, packet.timestamp, event=True)

    def send_own(self, payload: bytes, duration: int) -> bool:
        """A payload of the server's own to this party (the recording prompt), in its codec."""
        self.track.push_own(payload, duration)
        return True

    async def open(self, host: str, port: int = 0) -> tuple[str, int]:
        """Bind the media socket and the RTCP one on the next port (RFC 3550 §11); returns the
        RTP address (for our SDP)."""
        loop = asyncio.get_running_loop()
        for _ in range(PAIR_ATTEMPTS):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(host, port)
            )
            sockname = transport.get_extra_info("sockname")
            rtcp = RtcpChannel(self)
            try:
                await rtcp.open(host, int(sockname[1]) + 1)
            except OSError:
                transport.close()
                if port:
                    raise
                continue  # the next port is taken: another pair
            self.transport, self.rtcp = transport, rtcp
            self.local = (str(sockname[0]), int(sockname[1]))
            return self.local
        raise OSError(f"no free RTP/RTCP port pair on {host}")

    def set_remote(
        self,
        address: tuple[str, int],
        also_from: Iterable[str] = (),
        rtcp: tuple[str, int] | None = None,
    ) -> None:
        """Where the party's SDP says to send; packets are taken from that IP and `also_from`
        (the address its signaling came from), and the first one latches (module doc). RTCP
        goes to `rtcp` (its SDP's `a=rtcp`), else the RTP port + 1. ForbiddenDestination when
        `permits` refuses the address (the caller checked it first and answered precisely)."""
        rtcp_ip = rtcp[0] if rtcp is not None else address[0]
        if not self.permits(address[0]) or not self.permits(rtcp_ip):
            raise ForbiddenDestination(f"media address {address[0]} is not permitted")
        if not 0 < address[1] < 65535:
            raise ForbiddenDestination(f"media port {address[1]} is not usable")
        moved = self.remote is not None and self._latched and address != self.remote
        if moved:
            self._latched = False  # a re-INVITE moved the party's media: latch afresh
        if not self._latched:
            self.remote = address
        self._allowed = {address[0], *also_from}
        self.connected.set()
        if self.rtcp is not None:
            self.rtcp.start(rtcp or (address[0], address[1] + 1), relatch=moved)

    def hold(self, also_from: Iterable[str] = ()) -> None:
        """The party's SDP names no address (c=0.0.0.0, RFC 3264 §8.4): send it nothing; its
        packets are taken from `also_from` (its signaling IP) until `set_remote`."""
        self.sending = False
        self._allowed.update(also_from)

    @property
    def allowed(self) -> tuple[str, ...]:
        """The IPs packets are taken from before latching."""
        return tuple(sorted(self._allowed))

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def received_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if self._latched:
            if source != self.remote:
                self._drop("source")
                return
        elif source[0] not in self._allowed:
            self._drop("source")
            return
        elif not self.permits(source[0]) or source[1] < MIN_PORT:
            self._drop("forbidden")  # never latch to a range (or port) media may not go to
            return
        if self.inbound is not None:
            try:
                data = self.inbound.unprotect(data)
            except pylibsrtp.Error:
                self._drop("srtp")
                return
        try:
            packet = parse_rtp(data)
        except RtpError as exc:
            self._drop(str(exc))
            return
        audio = packet.payload_type == self.payload_type
        if not audio:
            if self.events is None or packet.payload_type != self.events:
                self._drop("payload type")
                return
            self.received_events += 1
        if not self._latched:
            self._latched = True
            if source != self.remote:
                log.info("rtp leg %s: latched to %s:%d", self.name, *source)
            self.remote = source
        self.received += 1
        if self.rtcp is not None and audio:
            self.rtcp.rtp_received(packet.seq, packet.timestamp, packet.ssrc)
        (self.on_audio if audio else self.on_event)(
            MediaPacket(
                leg=self.name,
                payload=packet.payload,
                timestamp=packet.timestamp,
                seq=packet.seq,
                ssrc=packet.ssrc,
                payload_type=packet.payload_type,
                arrival=time.time(),
            )
        )

    async def close(self) -> None:
        if self.rtcp is not None:
            await self.rtcp.close()
        if self.transport is not None:
            self.transport.close()
