"""The recording notice as sound: a short beep pattern each party hears when an anchored call
starts (docs/recording.md, "Call flow", step 5; `recording.prompt`).

The frames are Opus, encoded once (PyAV's libopus, as aiortc uses), and sent by the anchor's own
per-packet path in place of the other party's audio while they play (`Bridge.announce`): the
anchor never decodes or mixes, so during the prompt a party hears the beep, not the other
party, whose packets are still recorded as sent.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import av
import numpy as np

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz, Opus's RTP clock (RFC 7587 §4.1)
FRAME_SECONDS = FRAME / RATE
BEEP_HZ = 1400.0
# Two beeps of 200 ms with 160 ms between them, then 100 ms of silence before the call's audio.
PATTERN = ((True, 0.2), (False, 0.16), (True, 0.2), (False, 0.1))


@functools.cache
def beep_frames() -> tuple[bytes, ...]:
    """The prompt as consecutive 20 ms Opus frames (stereo, 48 kHz)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 32000
    codec.time_base = Fraction(1, RATE)
    tones: list[bool] = []
    for on, seconds in PATTERN:
        tones += [on] * round(seconds / FRAME_SECONDS)
    out: list[bytes] = []
    # the encoder holds a few frames back (look-ahead): feed silence until each has come out
    for i, on in enumerate([*tones, *[False] * 10]):
        t = (np.arange(FRAME) + i * FRAME) / RATE
        wave = 6000 * np.sin(2 * math.pi * BEEP_HZ * t) if on else np.zeros(FRAME)
        samples = np.repeat(wave.astype(np.int16), 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = i * FRAME
        out += [bytes(p) for p in codec.encode(frame)]
    return tuple(out[: len(tones)])
