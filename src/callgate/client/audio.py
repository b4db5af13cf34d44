"""Audio for the CLI softphone and its tests: a tone track, a WAV sink, a frequency check.

All audio here is 48 kHz mono signed 16-bit, 20 ms (960-sample) frames — what Opus carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame, AudioResampler

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
AMPLITUDE = 8000


def tone_samples(frequency: float, start: int, count: int) -> npt.NDArray[np.int16]:
    """`count` samples of a sine at `frequency`, starting at sample index `start`."""
    t = (np.arange(count) + start) / SAMPLE_RATE
    return (np.sin(2 * math.pi * frequency * t) * AMPLITUDE).astype(np.int16)


class ToneTrack(AudioStreamTrack):
    """A sine at `frequency` Hz in 48 kHz frames, paced in real time.

    Paced here, not by AudioStreamTrack.recv (whose silence is 8 kHz: its pts would be wrong).
    """

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._sample = 0
        self._t0: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        else:
            await asyncio.sleep(self._t0 + self._sample / SAMPLE_RATE - loop.time())
        samples = tone_samples(self.frequency, self._sample, FRAME_SAMPLES)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sample += FRAME_SAMPLES
        return frame


def audio_source(play: Path | None, tone: float | None) -> Any:
    """The track to send: a WAV file's audio, a tone, or silence (so RTP flows both ways)."""
    if play is not None:
        return MediaPlayer(str(play)).audio
    if tone is not None:
        return ToneTrack(tone)
    return AudioStreamTrack()


class WavSink:
    """Consumes a received track; writes it to `path` as 48 kHz mono s16 WAV (or discards it).

    Consuming matters even without a file: aiortc queues decoded frames until someone reads them.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    def start(self, track: Any) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(track), name="wav-sink")

    async def _run(self, track: Any) -> None:
        resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        writer: wave.Wave_write | None = None
        if self.path is not None:
            writer = wave.open(str(self.path), "wb")  # noqa: SIM115  closed in finally
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(SAMPLE_RATE)
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.frames += 1
                if writer is not None:
                    for out in resampler.resample(frame):
                        writer.writeframes(out.to_ndarray().astype("<i2").tobytes())
        finally:
            if writer is not None:
                writer.close()

    async def stop(self) -> None:
        """Stop reading and close the file (so it is complete when this returns)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def write_tone_wav(path: Path, frequency: float, seconds: float) -> Path:
    """A 48 kHz mono s16 WAV file holding a sine at `frequency`."""
    samples = tone_samples(frequency, 0, int(seconds * SAMPLE_RATE))
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples.astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[npt.NDArray[np.float64], int]:
    """(mono samples as float, sample rate) of a 16-bit PCM WAV file (channels averaged)."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM is supported")
        channels = reader.getnchannels()
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    data = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data, rate


def dominant_frequency(path: Path) -> float:
    """The frequency (Hz) with the most energy in a WAV file, by FFT over the whole file."""
    samples, rate = read_wav(path)
    if samples.size < 2 or not np.any(samples):
        raise ValueError(f"{path}: no audio")
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * window))
    spectrum[0] = 0.0
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    return float(freqs[int(np.argmax(spectrum))])
