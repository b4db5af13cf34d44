"""A recording's stereo audio as Ogg/Opus (RFC 7845), for exports: the same timeline as the WAV
(caller left, callee right), encoded with libopus through PyAV at 48 kHz, 20 ms frames.

It is a re-encoding of the decoded audio (smaller than the WAV, not bit-exact): the packets each
party sent, untouched, stay in recording.cgrec beside it.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
BIT_RATE = 64000  # stereo speech: transparent enough for review, ~0.5 MB a minute


def stereo_ogg(wav: bytes, path: Path) -> None:
    """Encode a 48 kHz 16-bit stereo WAV's samples to an Ogg/Opus file at `path`."""
    with wave.open(io.BytesIO(wav), "rb") as reader:
        if (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) != (2, 2, RATE):
            raise ValueError("expected 48 kHz 16-bit stereo audio")
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    samples = samples.reshape(-1, 2)
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=RATE, layout="stereo")
        stream.bit_rate = BIT_RATE
        for start in range(0, len(samples), FRAME):
            block = np.ascontiguousarray(samples[start : start + FRAME]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
