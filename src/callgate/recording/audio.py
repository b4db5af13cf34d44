"""A recording's packets as a stereo WAV: the caller left, the callee right, decoded on demand.

Each leg's Opus packets are decoded (PyAV's libopus) and placed on one timeline: a packet's
sample position is its leg's first arrival (relative to the first packet of the call) plus its
RTP timestamp's distance from that leg's first timestamp. Gaps (silence, lost packets) stay zero.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from callgate.recording.chunks import LEGS, Packet

RATE = 48000
MAX_SECONDS = 6 * 3600  # a bound on the WAV built in memory


def rtp_distance(timestamp: int, reference: int) -> int:
    """Samples from `reference` to `timestamp`, modulo 2^32 and signed (RFC 3550 §5.1: RTP
    timestamps wrap): a packet that arrived after the leg's first one but was sent before it
    (reordered on the way) lies just before it, not 2^32 samples (~25 h) after it."""
    return (timestamp - reference + (1 << 31)) % (1 << 32) - (1 << 31)


def _decode_leg(packets: list[Packet], origin: float) -> list[tuple[int, npt.NDArray[np.int16]]]:
    """(sample position, mono samples) for each decoded packet of one leg."""
    if not packets:
        return []
    codec = av.CodecContext.create("libopus", "r")
    codec.format = "s16"
    codec.layout = "stereo"
    codec.sample_rate = RATE
    first = packets[0]
    start = round((first.arrival - origin) * RATE)
    out = []
    for packet in sorted(packets, key=lambda p: rtp_distance(p.timestamp, first.timestamp)):
        offset = rtp_distance(packet.timestamp, first.timestamp)
        for frame in codec.decode(av.Packet(packet.payload)):
            samples = frame.to_ndarray().reshape(-1, 2).mean(axis=1).astype(np.int16)
            out.append((start + offset, samples))
    return out


def stereo_wav(packets: Iterable[Packet], path: Path) -> float:
    """Write the WAV; returns its length in seconds."""
    data, seconds = stereo_wav_bytes(packets)
    path.write_bytes(data)
    return seconds


def stereo_wav_bytes(packets: Iterable[Packet]) -> tuple[bytes, float]:
    """The WAV file's bytes and its length in seconds."""
    by_leg: dict[str, list[Packet]] = {leg: [] for leg in LEGS}
    for packet in packets:
        by_leg[packet.leg].append(packet)
    arrivals = [p[0].arrival for p in by_leg.values() if p]
    origin = min(arrivals, default=0.0)
    decoded = {leg: _decode_leg(by_leg[leg], origin) for leg in LEGS}
    end = max((pos + len(s) for parts in decoded.values() for pos, s in parts), default=0)
    end = min(end, MAX_SECONDS * RATE)
    audio = np.zeros((end, 2), dtype=np.int16)
    for channel, leg in enumerate(LEGS):
        for pos, samples in decoded[leg]:
            if 0 <= pos < end:
                part = samples[: end - pos]
                audio[pos : pos + len(part), channel] = part
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(audio.tobytes())
    return out.getvalue(), end / RATE
