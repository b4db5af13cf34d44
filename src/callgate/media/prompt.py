"""The recording notice as sound, each party hears it when an anchored call starts
(docs/recording.md, "Call flow", step 5; `recording.prompt`): a short beep pattern by default,
or the operator's announcement (`recording.prompt_file`, a WAV checked by prompt_wav.py).

The frames are Opus, encoded once (PyAV's libopus, as aiortc uses), or G.711 (PyAV's
pcm_mulaw / pcm_alaw, at 8 kHz) for the legs of a call recorded in G.711 — a SIP phone's or a
carrier's — and sent by each leg's own path in place of the other party's audio while they play
(`Bridge.announce`): the anchor never decodes or mixes, so during the prompt a party hears it,
not the other party, whose packets are still recorded as sent.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from callgate.media.prompt_wav import read_prompt_wav

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz, Opus's RTP clock (RFC 7587 §4.1)
FRAME_SECONDS = FRAME / RATE
BEEP_HZ = 1400.0
# Two beeps of 200 ms with 160 ms between them, then 100 ms of silence before the call's audio.
PATTERN = ((True, 0.2), (False, 0.16), (True, 0.2), (False, 0.1))


G711_RATE = 8000
G711_FRAME = 160  # 20 ms at 8 kHz, G.711's RTP clock (RFC 3551 §4.5.14)
# the SIP codecs' encoders ("G711" for short: G.722 is here too, 20 ms = 320 samples at 16 kHz,
# which encode to 160 bytes, the size of a G.711 frame)
G711_ENCODERS = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722"}
G711_RATES = {"pcmu": G711_RATE, "pcma": G711_RATE, "g722": 16000}
FRAME_BYTES = 160


def _beeps(rate: int) -> np.ndarray:
    frame = round(rate * FRAME_SECONDS)
    tones: list[bool] = []
    for on, seconds in PATTERN:
        tones += [on] * round(seconds / FRAME_SECONDS)
    t = np.arange(len(tones) * frame) / rate
    wave = 6000 * np.sin(2 * math.pi * BEEP_HZ * t) * np.repeat(tones, frame)
    samples: np.ndarray = wave.astype(np.int16)
    return samples


@functools.cache
def beep_frames() -> tuple[bytes, ...]:
    """The beeps as consecutive 20 ms Opus frames (stereo, 48 kHz)."""
    return _opus_frames(_beeps(RATE))


def prompt_frames(path: Path | None) -> tuple[bytes, ...]:
    """The announcement in `path` as Opus frames, or the beeps when there is none."""
    if path is None:
        return beep_frames()
    return _encoded(path, path.stat().st_mtime_ns, "opus")


def prompt_frames_g711(path: Path | None, codec: str) -> tuple[bytes, ...]:
    """The same as 20 ms G.711 frames (`codec` "pcmu" or "pcma", 8 kHz), for the legs of a
    call recorded in G.711 (a SIP phone's or carrier's)."""
    if path is None:
        return _g711_beeps(codec)
    return _encoded(path, path.stat().st_mtime_ns, codec)


@functools.cache
def _g711_beeps(codec: str) -> tuple[bytes, ...]:
    return _g711_frames(_beeps(G711_RATES[codec]), codec)


@functools.lru_cache(maxsize=6)
def _encoded(path: Path, _mtime_ns: int, codec: str) -> tuple[bytes, ...]:
    """The file's frames in `codec` ("opus", "pcmu" or "pcma"), encoded once per file version
    (every recorded call plays them)."""
    if codec == "opus":
        return _opus_frames(_announcement(path, RATE))
    return _g711_frames(_announcement(path, G711_RATES[codec]), codec)


def _announcement(path: Path, rate: int) -> np.ndarray:
    """The file (read and checked again) resampled to `rate` mono, then 100 ms of silence."""
    wav = read_prompt_wav(path)
    samples = np.frombuffer(wav.pcm, dtype="<i2").reshape(-1, wav.channels)
    mono = samples.mean(axis=1) if wav.channels == 2 else samples[:, 0].astype(np.float64)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(mono.astype(np.int16).reshape(1, -1), format="s16",
                                       layout="mono")  # fmt: skip
    frame.sample_rate = wav.rate
    out = [
        f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))
    ]
    resampled = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
    return np.concatenate([resampled, np.zeros(rate // 10, dtype=np.int16)])


def _g711_frames(mono: np.ndarray, codec: str) -> tuple[bytes, ...]:
    """Mono samples at the codec's rate as 20 ms G.711 (or G.722) frames, the last one padded
    with silence."""
    rate = G711_RATES[codec]
    frame_samples = rate // 50
    count = -(-len(mono) // frame_samples)
    padded = np.zeros(count * frame_samples, dtype=np.int16)
    padded[: len(mono)] = mono
    encoder = av.CodecContext.create(G711_ENCODERS[codec], "w")
    assert isinstance(encoder, AudioCodecContext)
    encoder.sample_rate = rate
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.time_base = Fraction(1, rate)
    frame = av.AudioFrame.from_ndarray(padded.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    data = b"".join(bytes(p) for p in (*encoder.encode(frame), *encoder.encode(None)))
    return tuple(data[i : i + FRAME_BYTES] for i in range(0, count * FRAME_BYTES, FRAME_BYTES))


def _opus_frames(mono: np.ndarray) -> tuple[bytes, ...]:
    """48 kHz mono samples as 20 ms stereo Opus frames, the last one padded with silence."""
    count = -(-len(mono) // FRAME)
    padded = np.zeros(count * FRAME, dtype=np.int16)
    padded[: len(mono)] = mono
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    codec.time_base = Fraction(1, RATE)
    out: list[bytes] = []
    # the encoder holds a few frames back (look-ahead): feed silence until each has come out
    for i in range(count + 10):
        chunk = padded[i * FRAME : (i + 1) * FRAME] if i < count else np.zeros(FRAME, np.int16)
        samples = np.repeat(chunk, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        out += [bytes(p) for p in codec.encode(frame)]
    return tuple(out[:count])
