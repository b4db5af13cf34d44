"""`Transcoder`: one direction of a bridge whose legs share no codec (docs/sip.md, "Transcoding").

The anchor forwards payloads unchanged whenever both legs negotiated the same codec; only when
they did not — a WebRTC party that offers Opus alone meets a phone or carrier that takes G.711
alone — does each direction get a transcoder: the packets one party sent are decoded (PyAV:
libopus, FFmpeg's G.711 decoders, as aiortc and the recording exports use), resampled to the
other codec's rate, cut into 20 ms frames and encoded again (libopus, `pcm_mulaw`,
`pcm_alaw`).

Timestamps (RFC 3550 §5.1): a frame's RTP timestamp is its place on the sending party's timeline
converted to the target codec's clock, relative to that party's first packet, so silence the
party did not send (VAD, DTMF pauses, lost packets) stays a gap of the same length on the other
leg. The leg that sends the result puts its own SSRC and sequence numbers on it and rebases the
timestamps to its own stream, as it does for forwarded packets (`rtp_leg.py`, `packets.py`).
A packet up to LATE_SECONDS older than the last one decoded (reordered on the way) is dropped
and counted: the decoders keep state, and a late 20 ms frame is worth less than a clean stream.
A new SSRC, or a timestamp further back than that or more than MAX_GAP_SECONDS ahead (a carrier
that switched streams after a transfer, a phone resuming, a forged packet), restarts the
direction: a fresh decoder, the new stream's audio placed right after what was already sent.

Every input is hostile, and this runs on the event loop: the work a party can cause is bounded.
A packet yields at most as many samples as its timestamp advanced past the previous one's (at
most MAX_PACKET_SECONDS; that long for a stream's first packet); samples that overlap audio
already produced are dropped; packets of another payload type than the negotiated one are not
decoded; and each direction decodes at most BUDGET times real time (plus BURST_SECONDS of
catching up), by the wall clock: the rest is dropped. Each of these is counted
(`TranscodeStats`).

The recorder (the bridge's observer) sees what each party sent, before any of this.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from callgate.media.packets import CODEC_CLOCKS, MediaPacket

FRAME_SECONDS = 0.02  # 20 ms frames out, in every codec (a phone's usual ptime)
OPUS_BITRATE = 32000  # bit/s of the Opus we encode: wideband speech
# the anchor's codec name → (FFmpeg decoder, encoder, sample rate); RTP clocks in packets.py
CODECS = {
    "opus": ("libopus", "libopus", 48000),
    "pcmu": ("pcm_mulaw", "pcm_mulaw", 8000),
    "pcma": ("pcm_alaw", "pcm_alaw", 8000),
    "g722": ("g722", "g722", 16000),  # RTP clock 8 kHz (RFC 3551 §4.5.2, packets.py)
}
# the payload type a transcoded packet carries: the static ones of RFC 3551 §6 for G.711 (an
# RTP leg sends only those); the WebRTC leg puts its own negotiated one on Opus
PAYLOAD_TYPES = {"pcmu": 0, "pcma": 8, "g722": 9, "opus": 111}
Samples = npt.NDArray[np.int16]
LATE_SECONDS = 1.0  # a packet this far behind the last one decoded is late, further a restart
MAX_GAP_SECONDS = 600.0  # a jump ahead further than this is a restart, not silence
MAX_PACKET_SECONDS = 0.12  # the longest packet (Opus: RFC 6716 §3.2.5, 120 ms)
MIN_CHARGE_SECONDS = 0.01  # a decoded packet costs the budget at least this (10 ms ptime)
BUDGET = 1.5  # times real time a direction may decode
BURST_SECONDS = 1.0  # what it may decode beyond that (a jitter burst after a network hiccup)


class TranscodeError(ValueError):
    """A pair of codecs this module cannot convert between."""


def can_transcode(source: str, target: str) -> bool:
    return source in CODECS and target in CODECS


def _audio_context(name: str, mode: Literal["r", "w"], rate: int, layout: str) -> AudioCodecContext:
    codec = av.CodecContext.create(name, mode)
    if not isinstance(codec, AudioCodecContext):
        raise TranscodeError(f"{name} is not an audio codec")
    codec.sample_rate = rate
    codec.layout = layout
    if mode == "w":
        codec.format = "s16"
        codec.time_base = Fraction(1, rate)
    return codec


@dataclass(slots=True)
class TranscodeStats:
    packets_in: int = 0
    packets_out: int = 0
    late: int = 0  # reordered packets dropped
    undecodable: int = 0  # payloads the decoder refused
    restarts: int = 0  # new streams (SSRC, timestamp jump): decoder reset
    wrong_type: int = 0  # packets of another payload type than the negotiated one, not decoded
    over_budget: int = 0  # packets dropped undecoded: the direction decoded too much already
    trimmed: int = 0  # decoded samples dropped: beyond the timestamp advance, or overlapping


class Transcoder:
    """Packets in `source`'s codec → packets in `target`'s, 20 ms each (module doc)."""

    def __init__(
        self, source: str, target: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not can_transcode(source, target) or source == target:
            raise TranscodeError(f"cannot transcode {source} to {target}")
        decoder, _, in_rate = CODECS[source]
        _, encoder, out_rate = CODECS[target]
        # libopus encodes from 8 kHz too (RFC 6716 §2.1.3: narrowband): G.711's samples are
        # not resampled on the way to Opus. (FFmpeg's libopus decoder gives 48 kHz whatever is
        # asked: those are resampled.) Opus's RTP clock is 48 kHz at any rate (RFC 7587 §4.1).
        if target == "opus":
            out_rate = min(in_rate, out_rate)
        self.source, self.target = source, target
        self._in_clock, self._out_clock = CODEC_CLOCKS[source], CODEC_CLOCKS[target]
        self._decoder = _audio_context(decoder, "r", in_rate, "mono")
        self._encoder = _audio_context(encoder, "w", out_rate, "mono")
        if target == "opus":
            self._encoder.bit_rate = OPUS_BITRATE
        # to the encoder's rate, mono s16, for decoded frames that are not (made when needed)
        self._resampler: av.AudioResampler | None = None
        self._out_rate = out_rate
        self._frame = round(out_rate * FRAME_SECONDS)  # samples of a frame
        self._frame_ticks = round(self._out_clock * FRAME_SECONDS)  # its RTP clock ticks
        self._pending: Samples = np.zeros(0, dtype=np.int16)  # target-rate samples not yet framed
        self._pending_at = 0  # target-clock position (ticks) of the first pending sample
        self._queued: collections.deque[int] = collections.deque()  # frames in the encoder
        self._base: int | None = None  # the source stream's first RTP timestamp
        self._origin = 0  # where that stream starts on our timeline (target-clock ticks)
        self._ssrc: int | None = None  # the source stream's SSRC
        self._last: int | None = None  # the last RTP timestamp decoded
        self._seq = 0
        self._pts = 0
        self._late_ticks = round(self._in_clock * LATE_SECONDS)
        self._max_gap = round(self._in_clock * MAX_GAP_SECONDS)
        self._max_samples = round(self._frame * MAX_PACKET_SECONDS / FRAME_SECONDS)
        self._min_charge = round(self._frame * MIN_CHARGE_SECONDS / FRAME_SECONDS)
        self._clock = clock
        self._started: float | None = None  # when the first packet came (budget)
        self._decoded = 0  # target-rate samples charged to the budget
        self.stats = TranscodeStats()

    def convert(
        self, packet: MediaPacket, payload_type: int | None = None
    ) -> Iterator[MediaPacket]:
        """The packets in the target codec that `packet` completes (none while the encoder
        looks ahead, or the frame is not full yet). `payload_type`: the negotiated one of the
        source codec; other packets are dropped undecoded."""
        stats = self.stats
        stats.packets_in += 1
        if payload_type is not None and packet.payload_type != payload_type:
            stats.wrong_type += 1
            return
        if self._base is None or self._last is None or packet.ssrc != self._ssrc:
            advance = None
        else:
            advance = _distance(packet.timestamp, self._last)
            if -self._late_ticks < advance <= 0:
                stats.late += 1
                return
            if advance <= -self._late_ticks or advance > self._max_gap:
                advance = None
        if advance is None:
            self._restart(packet)
        if not packet.payload:
            return
        # at most the samples of the time since the previous packet (module doc)
        limit = self._max_samples
        if advance is not None:
            limit = min(limit, advance * self._out_clock * self._frame // (
                self._in_clock * self._frame_ticks
            ))  # fmt: skip
        if not self._within_budget(max(limit, self._min_charge)):
            stats.over_budget += 1
            return
        self._last = packet.timestamp
        assert self._base is not None
        try:
            samples = self._decode(packet.payload)
        except av.error.FFmpegError:
            stats.undecodable += 1
            return
        if len(samples) > limit:
            stats.trimmed += len(samples) - limit
            samples = samples[:limit]
        position = (
            self._origin
            + _distance(packet.timestamp, self._base) * (self._out_clock) // self._in_clock
        )
        end = self._end()
        if position < end:  # overlaps what was produced: only what comes after it
            overlap = min(len(samples), (end - position) * self._frame // self._frame_ticks)
            stats.trimmed += overlap
            samples, position = samples[overlap:], end
        if not len(samples):
            return
        if position > end + self._frame_ticks:
            # a gap the party left (silence, lost packets): the next frame starts where it does
            self._pending, self._pending_at = np.zeros(0, dtype=np.int16), position
        self._pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        while len(self._pending) >= self._frame:
            frame, self._pending = self._pending[: self._frame], self._pending[self._frame :]
            at, self._pending_at = self._pending_at, self._pending_at + self._frame_ticks
            yield from self._encode(frame, at, packet)

    def _end(self) -> int:
        """Where the audio produced so far ends on our timeline (target-clock ticks)."""
        return self._pending_at + len(self._pending) * self._frame_ticks // self._frame

    def _restart(self, packet: MediaPacket) -> None:
        """A new source stream (module doc): a fresh decoder; its audio follows what was sent."""
        if self._base is not None:
            self.stats.restarts += 1
            self._decoder = _audio_context(
                CODECS[self.source][0], "r", CODECS[self.source][2], "mono"
            )
            self._resampler = None
            self._origin = self._end() + self._frame_ticks
            self._pending, self._pending_at = np.zeros(0, dtype=np.int16), self._origin
        self._base, self._ssrc, self._last = packet.timestamp, packet.ssrc, packet.timestamp

    def _within_budget(self, samples: int) -> bool:
        """Charge `samples` to the direction's budget (BUDGET times real time, module doc)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        allowed = (BUDGET * (now - self._started) + BURST_SECONDS) * self._out_rate
        if self._decoded + samples > allowed:
            return False
        self._decoded += samples
        return True

    def _decode(self, payload: bytes) -> Samples:
        pieces: list[Samples] = []
        for frame in self._decoder.decode(av.Packet(payload)):
            if (frame.sample_rate, frame.format.name, frame.layout.nb_channels) == (
                self._out_rate, "s16", 1,
            ):  # fmt: skip
                pieces.append(frame.to_ndarray().reshape(-1).astype(np.int16))
                continue
            if self._resampler is None:
                self._resampler = av.AudioResampler(
                    format="s16", layout="mono", rate=self._out_rate
                )
            pieces += [
                f.to_ndarray().reshape(-1).astype(np.int16) for f in self._resampler.resample(frame)
            ]
        if not pieces:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def _encode(self, samples: Samples, at: int, packet: MediaPacket) -> Iterator[MediaPacket]:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._out_rate
        frame.pts = self._pts
        self._pts += len(samples)
        self._queued.append(at)
        for encoded in self._encoder.encode(frame):
            # one packet per frame, in order; the encoder's look-ahead only delays them
            timestamp = self._queued.popleft() if self._queued else at
            self._seq = (self._seq + 1) % (1 << 16)
            self.stats.packets_out += 1
            yield packet._replace(
                payload=bytes(encoded),
                timestamp=timestamp % (1 << 32),
                seq=self._seq,
                payload_type=PAYLOAD_TYPES[self.target],
            )


def _distance(timestamp: int, reference: int) -> int:
    """Signed ticks from `reference` to `timestamp`, modulo 2^32 (RFC 3550 §5.1)."""
    return (timestamp - reference + (1 << 31)) % (1 << 32) - (1 << 31)
