"""The stereo export places each packet by its RTP timestamp: a packet reordered on the way (it
reached the anchor after the leg's first packet but was sent before it) lies just before that
first packet, not 2^32 samples after it (which made a 6-hour WAV of a 2-second call)."""

from __future__ import annotations

import io
import wave

import av
import numpy as np

from callgate.recording.audio import RATE, rtp_distance, stereo_wav_bytes
from callgate.recording.chunks import Packet

FRAME = 960


def opus_tone(hz: float, frames: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = RATE, "mono", "s16", 32000
    payloads: list[bytes] = []
    for i in range(frames + 2):  # the encoder lags a little
        t = (np.arange(FRAME) + i * FRAME) / RATE
        samples = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, i * FRAME
        payloads += [bytes(p) for p in codec.encode(frame)]
    return payloads[:frames]


def test_rtp_distance_is_signed_and_wraps() -> None:
    assert rtp_distance(1960, 1000) == 960
    assert rtp_distance(1000, 1960) == -960
    assert rtp_distance(100, 0xFFFFFF00) == 356  # across the wrap
    assert rtp_distance(0xFFFFFF00, 100) == -356


def test_a_packet_reordered_before_the_first_one_stays_in_place() -> None:
    payloads = opus_tone(440.0, 100)
    base = 0xFFFFFFFF - 10 * FRAME  # the leg's timestamps also wrap during the call
    sent = [
        Packet("caller", seq, (base + seq * FRAME) & 0xFFFFFFFF, 100.0 + seq * 0.02, payload)
        for seq, payload in enumerate(payloads)
    ]
    arrived = [sent[1], sent[0], *sent[2:]]  # packet 0 overtaken by packet 1
    data, seconds = stereo_wav_bytes(arrived)
    assert 1.9 < seconds < 2.1, seconds
    with wave.open(io.BytesIO(data)) as wav:
        left = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)[0::2]
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    peak = np.fft.rfftfreq(len(left), 1 / RATE)[int(np.argmax(spectrum[1:])) + 1]
    assert abs(peak - 440.0) < 5.0
