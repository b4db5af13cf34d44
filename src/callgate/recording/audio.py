"""A recording's packets as a stereo WAV: the caller left, the callee right, decoded on demand.

Each leg's packets are decoded with PyAV — libopus for Opus, FFmpeg's G.711 decoders
(`pcm_mulaw`, `pcm_alaw`) for a SIP call's PCMU/PCMA, whose 8 kHz samples are then resampled
to the WAV's 48 kHz — and placed on one timeline: a packet's sample position is its leg's first
arrival (relative to the first packet of the call) plus its RTP timestamp's distance from that
leg's first timestamp, in the codec's clock. Gaps (silence, lost packets) stay zero.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from callgate.recording.chunks import LEGS, Packet
from callgate.recording.codecs import OPUS, PCMA, PCMU

RATE = 48000
MAX_SECONDS = 6 * 3600  # a bound on the WAV built in memory
# each recording codec's decoder and RTP clock rate
DECODERS = {OPUS: ("libopus", RATE), PCMU: ("pcm_mulaw", 8000), PCMA: ("pcm_alaw", 8000)}
Pieces = list[tuple[int, npt.NDArray[np.int16]]]


class AudioError(ValueError):
    """A recording whose codec this version cannot decode."""


def rtp_distance(timestamp: int, reference: int) -> int:
    """Samples from `reference` to `timestamp`, modulo 2^32 and signed (RFC 3550 §5.1: RTP
    timestamps wrap): a packet that arrived after the leg's first one but was sent before it
    (reordered on the way) lies just before it, not 2^32 samples (~25 h) after it."""
    return (timestamp - reference + (1 << 31)) % (1 << 32) - (1 << 31)


def _in_order(packets: list[Packet]) -> list[tuple[int, Packet]]:
    """(RTP timestamp distance from the leg's first packet, packet), in timestamp order."""
    first = packets[0].timestamp
    spaced = [(rtp_distance(p.timestamp, first), p) for p in packets]
    return sorted(spaced, key=lambda item: item[0])


def _decode_opus(packets: list[Packet], origin: float) -> Pieces:
    codec = av.CodecContext.create("libopus", "r")
    codec.format = "s16"
    codec.layout = "stereo"
    codec.sample_rate = RATE
    start = round((packets[0].arrival - origin) * RATE)
    out = []
    for offset, packet in _in_order(packets):
        for frame in codec.decode(av.Packet(packet.payload)):
            samples = frame.to_ndarray().reshape(-1, 2).mean(axis=1).astype(np.int16)
            out.append((start + offset, samples))
    return out


def _decode_g711(packets: list[Packet], origin: float, decoder: str, clock: int) -> Pieces:
    """The leg on its own 8 kHz timeline (from the call's origin), resampled to 48 kHz whole,
    so the resampler's filter runs over continuous audio, not packet by packet."""
    codec = av.CodecContext.create(decoder, "r")
    if not isinstance(codec, AudioCodecContext):
        raise AudioError(f"{decoder} is not an audio decoder")
    codec.sample_rate = clock
    codec.layout = "mono"
    start = round((packets[0].arrival - origin) * clock)
    pieces = []
    for offset, packet in _in_order(packets):
        position = start + offset
        if position < 0:  # sent before the call's first packet and overtaken by it: dropped
            continue
        if position >= MAX_SECONDS * clock:
            break
        for frame in codec.decode(av.Packet(packet.payload)):
            pieces.append((position, frame.to_ndarray().reshape(-1).astype(np.int16)))
    if not pieces:
        return []
    end = max(pos + len(s) for pos, s in pieces)
    track = np.zeros(end, dtype=np.int16)
    for pos, samples in pieces:
        track[pos : pos + len(samples)] = samples
    frame = av.AudioFrame.from_ndarray(track.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = clock
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    parts = [
        f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]
    ]
    return [(0, np.concatenate(parts).astype(np.int16))] if parts else []


def _decode_leg(packets: list[Packet], origin: float, codec: str) -> Pieces:
    """(sample position at 48 kHz, mono samples) for the decoded packets of one leg."""
    if not packets:
        return []
    if codec == OPUS:
        return _decode_opus(packets, origin)
    decoder, clock = DECODERS[codec]
    return _decode_g711(packets, origin, decoder, clock)


def _stereo(packets: Iterable[Packet], codec: str) -> npt.NDArray[np.int16]:
    """The call as (samples, 2) int16 at 48 kHz: caller left, callee right."""
    if codec not in DECODERS:
        raise AudioError(f"cannot decode a recording of codec {codec!r}")
    by_leg: dict[str, list[Packet]] = {leg: [] for leg in LEGS}
    for packet in packets:
        by_leg[packet.leg].append(packet)
    arrivals = [p[0].arrival for p in by_leg.values() if p]
    origin = min(arrivals, default=0.0)
    decoded = {leg: _decode_leg(by_leg[leg], origin, codec) for leg in LEGS}
    end = max((pos + len(s) for parts in decoded.values() for pos, s in parts), default=0)
    end = min(end, MAX_SECONDS * RATE)
    audio = np.zeros((end, 2), dtype=np.int16)
    for channel, leg in enumerate(LEGS):
        for pos, samples in decoded[leg]:
            if 0 <= pos < end:
                part = samples[: end - pos]
                audio[pos : pos + len(part), channel] = part
    return audio


def _write_wav(audio: npt.NDArray[np.int16], out: BinaryIO) -> None:
    with wave.open(out, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(audio.data.cast("B") if len(audio) else b"")  # a view, no copy


def stereo_wav_bytes(packets: Iterable[Packet], codec: str = OPUS) -> tuple[bytes, float]:
    """The WAV file's bytes and its length in seconds; `codec` is the recording's."""
    audio = _stereo(packets, codec)
    out = io.BytesIO()
    _write_wav(audio, out)
    return out.getvalue(), len(audio) / RATE


def stereo_wav(packets: Iterable[Packet], path: Path, codec: str = OPUS) -> float:
    """Write the WAV to `path` (an existing file keeps its mode); its length in seconds. Holds
    the samples once, not the WAV's bytes beside them."""
    audio = _stereo(packets, codec)
    with path.open("wb") as out:
        _write_wav(audio, out)
    return len(audio) / RATE
