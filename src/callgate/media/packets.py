"""Encoded RTP payloads in and out of aiortc, without decoding them.

aiortc offers no public API for either direction, so this module holds the two narrow places
where the anchor reaches into it (checked against aiortc 1.16, pinned in pyproject.toml, and
checked at start with the rest: internals.py):

- In: `RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)` is what `RTCDtlsTransport`
  calls with each SRTP-decrypted, routed `RtpPacket`. `tap_receiver` replaces it on one receiver
  instance, so the packet goes to our callback and never reaches the jitter buffer or the Opus
  decoder thread (nothing is decoded on the server).
- Out: `RTCRtpSender` asks its track for the next item; an `av.Packet` (not a Frame) is passed to
  the codec's `pack()`, which for Opus and G.711 sends the bytes unchanged with the packet's pts
  as the RTP timestamp offset. `ForwardTrack` is such a track: its packets are the other party's payloads,
  their timestamps kept relative to that party's first packet.

The sender rewrites SSRC and sequence numbers and encrypts with its own leg's SRTP keys, as an
SFU does; the payload bytes are the ones the other party sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any, NamedTuple

import av
from aiortc import MediaStreamTrack

OPUS_CLOCK = 48000
# RTP clock rates of the codecs the anchor forwards (RFC 7587 §4.1, RFC 3551 §4.5.14). G.722
# samples at 16 kHz but its RTP clock is 8 kHz, "an error in RFC 1890" kept for compatibility
# (RFC 3551 §4.5.2): a 20 ms frame (320 samples) advances the timestamp by 160.
CODEC_CLOCKS = {"opus": OPUS_CLOCK, "pcmu": 8000, "pcma": 8000, "g722": 8000}
# their audio sample rates, where these differ from the clock (G.722)
SAMPLE_RATES = {**CODEC_CLOCKS, "g722": 16000}
FORWARD_QUEUE = 50  # packets (1 s of 20 ms frames) waiting for a slow leg before the oldest go


class MediaPacket(NamedTuple):
    """One RTP packet a party sent, as the anchor received it. Immutable (observers such as
    the recorder keep it as it is); a tuple because one is made for every packet the anchor
    forwards, and a frozen dataclass costs several times as much to build. A changed copy:
    `packet._replace(timestamp=…)`."""

    leg: str  # the name the anchor's user gave the leg ("caller", "callee", a SIP trunk…)
    payload: bytes
    timestamp: int  # RTP timestamp, as sent by the party
    seq: int
    ssrc: int
    payload_type: int
    arrival: float  # Unix seconds when the anchor received it


PacketHandler = Callable[[MediaPacket], None]


def tap_receiver(receiver: Any, leg: str, handler: PacketHandler) -> None:
    """Send every RTP packet `receiver` gets to `handler` instead of aiortc's decoder."""

    async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
        handler(
            MediaPacket(
                leg=leg,
                payload=bytes(packet.payload),
                timestamp=int(packet.timestamp),
                seq=int(packet.sequence_number),
                ssrc=int(packet.ssrc),
                payload_type=int(packet.payload_type),
                arrival=time.time(),
            )
        )

    hook: Callable[[Any, int], Awaitable[None]] = handle_rtp_packet
    receiver._handle_rtp_packet = hook


class ForwardTrack(MediaStreamTrack):
    """An audio track whose items are already-encoded packets (see module docstring), Opus or
    G.711 (`clock` is the codec's RTP clock rate)."""

    kind = "audio"

    def __init__(self, clock: int = OPUS_CLOCK) -> None:
        super().__init__()
        self.clock = clock  # set once the leg's codec is negotiated, before anything is sent
        self._queue: asyncio.Queue[Any] = asyncio.Queue(FORWARD_QUEUE)
        self._base: int | None = None
        self._offset = 0  # where the party's timeline starts on ours (after a prompt)
        self._last: int | None = None  # the pts of the last packet queued
        self.forwarded = 0
        self.dropped = 0

    def push(self, payload: bytes, timestamp: int) -> None:
        """Queue one payload to send; `timestamp` is the sending party's RTP timestamp."""
        if self._base is None:
            self._base = timestamp
        self._queue_packet(payload, (self._offset + timestamp - self._base) % (1 << 32))

    def push_own(self, payload: bytes, duration: int) -> None:
        """Queue a payload of the server's own (the recording prompt) lasting `duration`
        ticks, right after the last packet; the party's next packet follows it (its timestamps
        rebased, RFC 3550 §5.1), as `SrtpPath.send_own` does on the lean path."""
        pts = 0 if self._last is None else (self._last + duration) % (1 << 32)
        self._queue_packet(payload, pts)
        self._base, self._offset = None, (pts + duration) % (1 << 32)

    def _queue_packet(self, payload: bytes, pts: int) -> None:
        self._last = pts
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = Fraction(1, self.clock)
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(packet)
        self.forwarded += 1

    async def recv(self) -> Any:  # an av.Packet
        return await self._queue.get()
