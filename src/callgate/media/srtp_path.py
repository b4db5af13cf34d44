"""The anchor's per-packet path once a leg's DTLS-SRTP is up (docs/recording.md, "Per-packet path").

aiortc's own path costs per packet, in and out: an asyncio queue between the ICE connection and
the DTLS transport, a full `RtpPacket` parse and route, then out through an `av.Packet`, the
sender's queue and loop, a fresh `RtpPacket` serialized with its extensions, and in aioice a
task per datagram sent through a TURN allocation. An SFU needs none of that. `SrtpPath` replaces
it for one leg, with aiortc's DTLS-SRTP keys (checked against aiortc 1.16 / aioice 0.13):

- In: the leg's aioice `Connection.data_received` (called synchronously for each datagram of the
  nominated pair) is wrapped. SRTP packets (RFC 7983 §7: first byte 128-191) that are not RTCP
  (RFC 5761 §4: payload type 192-223 is RTCP) are unprotected with the leg's receive session,
  their header read with one `struct` call (RFC 3550 §5.1; CSRCs, the RFC 8285 extension block and
  padding skipped), and handed to the leg's handler in the same callback. DTLS, RTCP and STUN
  take aiortc's path as before, so RTCP (reports, BYE) keeps working.
- Out: `send()` puts the payload behind a header template (the sending leg's SSRC, payload type
  and negotiated `mid` extension, RFC 8843 §15), our own sequence numbers and the party's
  timestamps rebased on a random origin (RFC 3550 §5.1), protects it with the leg's transmit
  session and writes it to the nominated pair: through a bound TURN channel directly (ChannelData,
  RFC 8656 §12.4), else through aioice's transport, which binds or refreshes the channel.
- RTCP: each received packet feeds aiortc's receiver statistics (so the anchor's receiver reports
  give the party loss, jitter and round trip), and each sent one the sender's counters (so its
  sender reports carry the right packet and octet counts and RTP/NTP time pair).

Every aiortc/aioice internal used here is checked once, before the first leg (internals.py): a
release that changed one makes the anchor refuse every leg, fail-closed. `SrtpPath.attach` still
returns None for a leg it cannot take at run time (a codec the anchor does not forward, DTLS-SRTP
not up, a pair aioice built otherwise); that leg keeps aiortc's path (`packets.py`), slower but
correct. Opus and G.711/G.722 legs (the SIP edge's WebRTC side) alike take this one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import pylibsrtp
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from callgate.media.packets import CODEC_CLOCKS, MediaPacket, PacketHandler
from callgate.media.srtp_io import SrtpIo

log = logging.getLogger(__name__)

RTP_HEAD = struct.Struct("!BBHII")  # V P X CC, M PT, sequence number, timestamp, SSRC
WORD = struct.Struct("!H")  # the header extension's length (RFC 3550 §5.3.1)
OCTET = struct.Struct("!B")  # the padding count, the packet's last octet (RFC 3550 §5.1)
CHANNEL_HEAD = struct.Struct("!HH")  # TURN ChannelData: channel number, length
CHANNEL_OVERHEAD = CHANNEL_HEAD.size
NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01, seconds (RFC 5905 §6)
NTP_FRACTION = 1 << 32
NTP_MASK = (1 << 64) - 1
ICE_COMPONENT = 1  # RTP; with rtcp-mux (RFC 8035) RTCP shares it
MIN_RTP = 12
MAX_SSRCS = 4  # sources a leg keeps statistics for; a new one replaces the least recently seen
DRAIN_MAX = 1024  # datagrams read from a leg's socket when its packets move in-process
DATAGRAM_MAX = 65536


Address = tuple[str, int]


class LocalAllocation(Protocol):
    """A TURN allocation held by a server in this process (turn/allocation.py `Allocation`)."""

    relay_address: Address

    def attach_local(self, client: Callable[[memoryview, Address], bool] | None) -> None:
        """Have the server hand channel data for this client to `client` in-process."""
        ...

    def channel_data(self, number: int, data: bytes | memoryview) -> bool:
        """ChannelData from this client, as if it had come in on the server's listener."""
        ...


# (TURN server address, client address) -> that server's allocation for that client, when the
# server runs in this process (turn/server.py `TurnServer.udp_client`).
LocalTurn = Callable[[Address, Address], LocalAllocation | None]


class _SeqTs:
    """What aiortc's `StreamStatistics.add` reads of a packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp


class SrtpPath:
    """One leg's SRTP in and out, bypassing aiortc's media machinery (module docstring)."""

    def __init__(self, name: str, transceiver: Any, handler: PacketHandler) -> None:
        sender, receiver = transceiver.sender, transceiver.receiver
        dtls = sender.transport
        self.name = name
        self.received = 0
        self.sent = 0
        self.rejected = 0  # SRTP that failed authentication or RTP that did not parse
        self.ssrc_replaced = 0  # sources forgotten for a new one past MAX_SSRCS (least recent)
        self.handed_in = 0  # packets the leg's allocation handed over in-process
        self.handed_out = 0  # packets handed to the leg's allocation in-process
        self.rtcp_in = 0  # RTCP the allocation handed over in-process (to aiortc)
        self.aioice_out = 0  # aioice's datagrams (RTCP, STUN) handed to the allocation
        self._handler = handler
        if dtls._rx_srtp is None or dtls._tx_srtp is None:
            raise ValueError("DTLS-SRTP is not established")
        self._rx: pylibsrtp.Session = dtls._rx_srtp
        self._tx: pylibsrtp.Session = dtls._tx_srtp
        self._rx_io = SrtpIo(self._rx)  # the same sessions (keys, replay state) as aiortc's
        self._tx_io = SrtpIo(self._tx)
        self._connection = dtls.transport._connection
        self._nominated: dict[int, Any] = self._connection._nominated
        self._original: Callable[[bytes, int], None] = self._connection.data_received
        codec = transceiver._codecs[0]
        clock = CODEC_CLOCKS.get(str(codec.mimeType).lower().removeprefix("audio/"))
        if clock is None or clock != codec.clockRate:
            raise ValueError(f"unexpected codec {codec.mimeType}/{codec.clockRate}")
        self._clock = clock  # the RTP clock its receiver statistics (jitter) count in
        self._payload_type = int(codec.payloadType)
        self._header = _header_template(transceiver, int(sender._ssrc))
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._origin = int.from_bytes(os.urandom(4), "big")
        self._base: int | None = None
        self._last: int | None = None  # the RTP timestamp last sent
        self._sender = sender
        self._streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams
        # the sender's RTCP SR figures (RTCRtpSender._run_rtcp reads them); checked now
        for field in ("packet_count", "octet_count", "rtp_timestamp", "ntp_timestamp"):
            getattr(sender, f"_RTCRtpSender__{field}")
        self._seen = _SeqTs(0, 0)
        self._last_ssrc: int | None = None  # `_streams` is kept least recently seen first
        self._turn: Any = None  # the leg's aioice TURN client protocol, when the pair uses one
        self._turn_pair: Any = None  # the nominated pair it belongs to
        self._turn_peer: Address | None = None  # that pair's remote address (it never changes)
        self._turn_queued: set[Any] = set()  # aioice's datagrams still waiting to be sent
        self._media_queued: set[Any] = set()  # those of them that are this path's packets
        self._turn_original: Callable[[bytes, Any], None] = _unset
        self._local: LocalAllocation | None = None  # the pair's allocation, when in-process
        self._turn_transport: Any = None  # aioice's transport whose sendto `_take_sends` took
        self._turn_sendto_original: Callable[[bytes, Any], None] = _unset  # aioice's own

    @classmethod
    def attach(
        cls, name: str, transceiver: Any, handler: PacketHandler, local: LocalTurn | None = None
    ) -> SrtpPath | None:
        """The path for a leg whose DTLS-SRTP is established, installed; None when aiortc's
        internals differ from what this module knows (the leg keeps aiortc's path). With
        `local`, a nominated pair through a TURN server of this process exchanges its packets
        with its allocation in-process ("In-process handoff" in docs/recording.md)."""
        try:
            path = cls(name, transceiver, handler)
            pair = path._nominated[ICE_COMPONENT]
            turn = _turn_client(pair)
            allocation = None if turn is None or local is None else _local_allocation(turn, local)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            log.warning("leg %s: aiortc's media path kept (%s: %s)", name, type(exc).__name__, exc)
            return None
        path._connection.data_received = path._datagram
        if turn is not None:
            path._turn, path._turn_pair = turn, pair
            path._turn_peer = tuple(pair.remote_addr)
            path._turn_queued = pair.protocol.transport._TurnTransport__send_tasks
            path._turn_sendto_original = pair.protocol.transport.sendto
            path._turn_original = turn.datagram_received
            turn.datagram_received = path._turn_datagram
        if allocation is not None:
            # What the relay sent to the leg's socket before now is read first, so no packet
            # handed over in-process overtakes one still waiting there.
            try:
                emptied = path._drain_socket()
            except (AttributeError, OSError, ValueError) as exc:
                log.warning(
                    "leg %s: packets stay on the sockets (%s: %s)", name, type(exc).__name__, exc
                )
                emptied = False
            if emptied:
                path._local = allocation
                allocation.attach_local(path._local_datagram)
                path._take_sends(pair.protocol.transport)
                log.info("leg %s: packets to and from the relay in-process", name)
        return path

    def _take_sends(self, transport: Any) -> None:
        """What aioice sends on the nominated pair (aiortc's RTCP, consent checks) goes to the
        leg's allocation in-process too while the channel is fresh, instead of a task a
        datagram and a loopback hop through the listener (`_turn_sendto`)."""
        try:
            transport.sendto = self._turn_sendto
        except AttributeError:  # a transport that takes no attribute: aioice's way
            return
        self._turn_transport = transport

    def _drain_socket(self) -> bool:
        """First the SRTP packets aioice has queued for aiortc (read from the socket earlier),
        then the leg's TURN client socket until it is empty, each datagram handled as the event
        loop would have handled it (`_turn_datagram`). The relay runs on this thread, so nothing
        is added to the socket meanwhile; DTLS, RTCP and the rest stay queued for aiortc. True
        once the socket is empty."""
        assert self._turn is not None
        queue = self._connection._queue
        queued = [queue.get_nowait() for _ in range(queue.qsize())]
        for item in queued:
            if item is not None and _is_rtp(item[0]):
                self._srtp_in(item[0])
            else:
                queue.put_nowait(item)
        fd = self._turn.transport.get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.setblocking(False)  # the descriptor is shared: it already is
            for _ in range(DRAIN_MAX):
                try:
                    data, addr = sock.recvfrom(DATAGRAM_MAX)
                except (BlockingIOError, InterruptedError):  # EAGAIN: empty
                    return True
                self._turn_datagram(data, addr)
        return False

    @property
    def in_process(self) -> bool:
        """Does this leg exchange its packets with its TURN allocation in-process?"""
        return self._local is not None

    def detach(self) -> None:
        self._connection.data_received = self._original
        if self._turn_transport is not None:
            with contextlib.suppress(AttributeError):
                del self._turn_transport.sendto  # the class's own again
            self._turn_transport = None
        if self._local is not None:
            self._local.attach_local(None)
            self._local = None
        if self._turn is not None:
            self._turn.datagram_received = self._turn_original
            self._turn = None

    # -- in ----------------------------------------------------------------------------------

    def _turn_datagram(self, data: bytes, addr: Any) -> None:
        """What the leg's TURN client socket receives. SRTP in ChannelData (RFC 8656 §12.4)
        on the nominated pair's channel is taken here; all else (STUN, DTLS, RTCP, other
        channels) goes through aioice as before."""
        pair = self._nominated.get(ICE_COMPONENT)
        if (
            pair is not None
            and len(data) >= CHANNEL_OVERHEAD + MIN_RTP
            and 0x40 <= data[0] < 0x80  # a channel number (RFC 8656 §12)
            and 127 < data[4] < 192  # RTP or RTCP (RFC 7983 §7)
            and not 191 < data[5] < 224  # not RTCP (RFC 5761 §4)
        ):
            channel, length = CHANNEL_HEAD.unpack_from(data)
            turn = self._turn
            if (
                turn is not None
                and length + CHANNEL_OVERHEAD <= len(data)
                and turn.channel_to_peer.get(channel) == pair.remote_addr
            ):
                self._srtp_in(data[CHANNEL_OVERHEAD : CHANNEL_OVERHEAD + length])
                return
        self._turn_original(data, addr)

    def _local_datagram(self, data: memoryview, peer: Address) -> bool:
        """What the leg's allocation hands over in-process instead of sending it to the leg's
        socket as ChannelData: taken (True) when it is SRTP from the nominated pair's peer on a
        channel the leg's TURN client has bound (what `_turn_datagram` would take); anything
        else (DTLS, RTCP, STUN checks, another peer) goes to the socket and aioice as before."""
        turn = self._turn
        if (
            turn is None
            or self._nominated.get(ICE_COMPONENT) is not self._turn_pair
            or len(data) < MIN_RTP
            or not 127 < data[0] < 192  # RTP or RTCP (RFC 7983 §7)
            or peer != self._turn_peer
            or turn.channel_to_peer.get(turn.peer_to_channel.get(peer)) != peer
        ):
            return False
        if 191 < data[1] < 224:  # RTCP (RFC 5761 §4): to aiortc, as aioice would hand it on
            self.rtcp_in += 1
            self._original(bytes(data), ICE_COMPONENT)
            return True
        self.handed_in += 1
        try:
            self._srtp_in(data)  # copied once, into the leg's SRTP buffer
        except Exception:  # never into the relay's read loop
            self.rejected += 1
            log.exception("leg %s: packet handler failed", self.name)
        return True

    def _datagram(self, data: bytes, component: int) -> None:
        """What aioice's connection hands on (a pair without TURN, or what aioice parsed)."""
        if not _is_rtp(data):
            self._original(data, component)  # DTLS, RTCP: aiortc's path
            return
        self._srtp_in(data)

    def _srtp_in(self, data: bytes | memoryview) -> None:
        arrival = time.time()
        rx = self._rx_io
        size = rx.unprotect(data)  # the RTP packet is now in rx.buffer[:size]
        if size < MIN_RTP:  # refused by libsrtp (-1), or too short to be RTP
            self.rejected += 1
            return
        plain = rx.buffer
        first, second, seq, timestamp, ssrc = RTP_HEAD.unpack_from(plain)
        offset = MIN_RTP + 4 * (first & 0x0F)
        if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
            if offset + 4 > size:
                self.rejected += 1
                return
            offset += 4 + 4 * WORD.unpack_from(plain, offset + 2)[0]
        end = size - (OCTET.unpack_from(plain, size - 1)[0] if first & 0x20 else 0)
        payload_type = second & 0x7F
        if offset > end or payload_type != self._payload_type:
            self.rejected += 1
            return
        streams = self._streams
        if ssrc != self._last_ssrc:  # (a source's packets in a row cost one comparison)
            stream = streams.pop(ssrc, None)
            if stream is None:
                if len(streams) >= MAX_SSRCS:  # memory is bounded: forget the least recent
                    del streams[next(iter(streams))]
                    self.ssrc_replaced += 1
                stream = StreamStatistics(self._clock)
            streams[ssrc] = stream  # the most recently seen last
            self._last_ssrc = ssrc
        else:
            stream = streams[ssrc]
        payload = bytes(plain[offset:end])  # the one copy the packet keeps
        self.received += 1
        seen = self._seen
        seen.sequence_number, seen.timestamp = seq, timestamp
        stream.add(cast(RtpPacket, seen))  # it reads only these two fields
        self._handler(MediaPacket(self.name, payload, timestamp, seq, ssrc, payload_type, arrival))

    # -- out ---------------------------------------------------------------------------------

    def send(self, payload: bytes, timestamp: int) -> None:
        """Send one payload to this leg's party; `timestamp` is the sending party's."""
        pair = self._nominated.get(ICE_COMPONENT)
        if pair is None:
            return  # not connected (any more)
        base = self._base
        if base is None:
            self._base = base = timestamp
        self._emit(pair, payload, (timestamp - base + self._origin) & 0xFFFFFFFF)

    def send_own(self, payload: bytes, duration: int) -> None:
        """Send a payload of the anchor's own (the recording prompt, prompt.py) that lasts
        `duration` RTP clock ticks: it continues this leg's timeline right after the last packet
        sent, and the next forwarded packet continues right after it (its party's timestamps are
        rebased there, RFC 3550 §5.1), so the party's jitter buffer sees one unbroken stream."""
        pair = self._nominated.get(ICE_COMPONENT)
        if pair is None:
            return
        last = self._last
        rtp_timestamp = self._origin if last is None else (last + duration) & 0xFFFFFFFF
        self._emit(pair, payload, rtp_timestamp)
        self._base = None  # the next forwarded packet starts the party's timeline again
        self._origin = (rtp_timestamp + duration) & 0xFFFFFFFF

    def _emit(self, pair: Any, payload: bytes, rtp_timestamp: int) -> None:
        """Protect one packet and send it out of the nominated ICE pair: straight into the
        bound TURN channel (in-process to the leg's allocation when it is ours) when the
        channel needs no refresh and none of this path's earlier packets is still queued in
        aioice (it would be overtaken; aiortc's RTCP and aioice's STUN in that queue may be:
        they are other streams), else through aioice (`_via_aioice`). One clock read a packet,
        for the channel's freshness and the sender's RTCP timestamps."""
        now = time.time()
        self._last = rtp_timestamp
        self._seq = seq = (self._seq + 1) & 0xFFFF
        data = self._tx_io.protect(self._header, payload, seq, rtp_timestamp)
        turn = self._turn
        if turn is not None and pair is self._turn_pair and not self._media_queued:
            channel = turn.peer_to_channel.get(self._turn_peer)
            if channel is not None and now < turn.channel_refresh_at.get(channel, 0.0):
                local = self._local
                if local is not None:
                    local.channel_data(channel, data)  # in-process: the server's own checks
                    self.handed_out += 1
                else:
                    turn._send(CHANNEL_HEAD.pack(channel, len(data)) + data)
            else:
                self._via_aioice(pair, data)
        else:
            self._via_aioice(pair, data)
        self.sent += 1
        sender = self._sender
        sender._RTCRtpSender__packet_count += 1
        sender._RTCRtpSender__octet_count += len(payload)
        sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
        # now as a 64-bit NTP timestamp (RFC 3550 §4), what aiortc's `current_ntp_time` gives
        sender._RTCRtpSender__ntp_timestamp = int((now + NTP_EPOCH) * NTP_FRACTION) & NTP_MASK

    def _via_aioice(self, pair: Any, data: bytes) -> None:
        """`data` through aioice's transport, which binds or refreshes the TURN channel (a
        task a datagram); while such a packet of ours waits there, later ones follow it."""
        turn = self._turn
        if turn is None or pair is not self._turn_pair:
            pair.protocol.transport.sendto(data, pair.remote_addr)
            return
        queued = self._turn_queued
        before = set(queued)
        self._turn_sendto_original(data, pair.remote_addr)  # not `_turn_sendto`: in order
        for task in queued - before:  # this packet's, in aioice until its channel is fresh
            self._media_queued.add(task)
            task.add_done_callback(self._media_queued.discard)

    def _turn_sendto(self, data: bytes, addr: Address) -> None:
        """aioice's own sends on the nominated pair (RTCP, STUN consent checks): to the leg's
        allocation in-process over the bound channel while it needs no refresh, as aioice
        would send them as ChannelData (RFC 8656 §12.4); else aioice's way, which binds or
        refreshes. They may overtake media still queued in aioice: other streams."""
        turn, local = self._turn, self._local
        if turn is not None and local is not None and addr == self._turn_peer:
            channel = turn.peer_to_channel.get(addr)
            if channel is not None and time.time() < turn.channel_refresh_at.get(channel, 0.0):
                self.aioice_out += 1
                local.channel_data(channel, data)
                return
        self._turn_sendto_original(data, addr)


def _is_rtp(data: bytes) -> bool:
    """RTP, not RTCP (RFC 7983 §7, RFC 5761 §4)."""
    return len(data) >= MIN_RTP and 127 < data[0] < 192 and not 191 < data[1] < 224


def _header_template(transceiver: Any, ssrc: int) -> bytes:
    """The RTP header (and `mid` extension) every packet this leg sends starts with."""
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpSendParameters(headerExtensions=transceiver._headerExtensions))
    packet = RtpPacket(payload_type=transceiver._codecs[0].payloadType, ssrc=ssrc)
    packet.extensions.mid = transceiver.mid
    return packet.serialize(extensions)


def _unset(data: bytes, addr: Any) -> None:
    raise AssertionError("not attached")


def _turn_client(pair: Any) -> Any:
    """The aioice TURN client protocol under the pair's transport, None for a pair without
    TURN; raises AttributeError when aioice's TURN transport is not what this module knows."""
    transport = pair.protocol.transport
    if type(transport).__name__ != "TurnTransport":
        return None
    turn = transport._TurnTransport__inner_protocol
    for name in ("channel_to_peer", "peer_to_channel", "channel_refresh_at", "_send"):
        getattr(turn, name)
    if not isinstance(transport._TurnTransport__send_tasks, set):
        raise TypeError("aioice's TURN transport keeps no set of queued datagrams")
    return turn


def _local_allocation(turn: Any, local: LocalTurn) -> LocalAllocation | None:
    """The allocation behind aioice's TURN client when its server runs in this process: found
    by the client socket's own address (which only this process can hold) and checked against
    the relayed address aioice was given. None for TURN over TCP or another server's."""
    if type(turn).__name__ != "TurnClientUdpProtocol" or turn.relayed_address is None:
        return None
    host, port = turn.transport.get_extra_info("sockname")[:2]
    allocation = local((str(turn.server[0]), int(turn.server[1])), (host, port))
    relayed = turn.relayed_address
    if allocation is None or tuple(allocation.relay_address) != (relayed[0], relayed[1]):
        return None
    return allocation
