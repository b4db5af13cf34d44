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
A packet older than the last one decoded (reordered on the way) is dropped and counted: the
decoders keep state, and a late 20 ms frame is worth less than a clean stream.

The recorder (the bridge's observer) sees what each party sent, before any of this.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
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


class Transcoder:
    """Packets in `source`'s codec → packets in `target`'s, 20 ms each (module doc)."""

    def __init__(self, source: str, target: str) -> None:
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
        self._base: int | None = None  # the source party's first RTP timestamp
        self._last: int | None = None  # the last RTP timestamp decoded
        self._seq = 0
        self._pts = 0
        self.stats = TranscodeStats()

    def convert(self, packet: MediaPacket) -> Iterator[MediaPacket]:
        """The packets in the target codec that `packet` completes (none while the encoder
        looks ahead, or the frame is not full yet)."""
        self.stats.packets_in += 1
        if self._base is None:
            self._base = packet.timestamp
        elif _distance(packet.timestamp, self._last or self._base) <= 0:
            self.stats.late += 1
            return
        self._last = packet.timestamp
        if not packet.payload:
            return
        try:
            samples = self._decode(packet.payload)
        except av.error.FFmpegError:
            self.stats.undecodable += 1
            return
        position = _distance(packet.timestamp, self._base) * self._out_clock // self._in_clock
        end = self._pending_at + len(self._pending) * self._frame_ticks // self._frame
        if position > end + self._frame_ticks:
            # a gap the party left (silence, lost packets): the next frame starts where it does
            self._pending, self._pending_at = np.zeros(0, dtype=np.int16), position
        self._pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        while len(self._pending) >= self._frame:
            frame, self._pending = self._pending[: self._frame], self._pending[self._frame :]
            at, self._pending_at = self._pending_at, self._pending_at + self._frame_ticks
            yield from self._encode(frame, at, packet)

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
