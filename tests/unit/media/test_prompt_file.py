"""`recording.prompt_file`: a bad announcement stops the configuration from loading, with what is
wrong with it; a good one becomes Opus frames of its length; no file means the beeps."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from callgate.config import load_settings
from callgate.errors import ConfigError
from callgate.media.prompt import FRAME_SECONDS, beep_frames, prompt_frames, prompt_frames_g711

OPTION = "invalid recording.prompt_file (CALLGATE_RECORDING__PROMPT_FILE)"


def wav(path: Path, *, rate: int = 16000, seconds: float = 1.0, channels: int = 1,
        width: int = 2, hz: float = 600.0) -> Path:  # fmt: skip
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * hz * t)
    samples = (tone * 8000).astype("<i2") if width == 2 else (tone * 100 + 128).astype(np.uint8)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(np.repeat(samples, channels).tobytes())
    return path


def load(path: Path, prompt: bool = True) -> Path | None:
    settings = load_settings(None, {"recording": {"prompt": prompt, "prompt_file": str(path)}})
    return settings.recording.prompt_file


def test_bad_files_are_refused_at_load_naming_the_problem(tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.wav": "no such file",
        wav(tmp_path / "8bit.wav", width=1): "8-bit samples; 16-bit PCM is needed",
        wav(tmp_path / "slow.wav", rate=4000): "4000 samples a second; 8000 to 48000",
        wav(tmp_path / "fast.wav", rate=96000, seconds=0.5): "96000 samples a second",
        wav(tmp_path / "long.wav", rate=8000, seconds=16): "16.00 s long; 0.2 to 15.0 s",
        wav(tmp_path / "short.wav", seconds=0.1): "0.10 s long",
        wav(tmp_path / "quad.wav", channels=4, seconds=0.5): "4 channels; mono or stereo",
    }
    (tmp_path / "text.wav").write_text("not audio at all")
    cases[tmp_path / "text.wav"] = "not a PCM WAV file"
    (tmp_path / "huge.wav").write_bytes(bytes(5 << 20))
    cases[tmp_path / "huge.wav"] = "more than 4194304 allowed"
    cases[tmp_path] = "not a file"
    for path, why in cases.items():
        with pytest.raises(ConfigError) as info:
            load(path)
        assert f"{OPTION}: {path}: " in str(info.value) and why in str(info.value), info.value

    good = wav(tmp_path / "good.wav")
    with pytest.raises(ConfigError, match="prompt_file is set but prompt is off"):
        load(good, prompt=False)
    assert load(good) == good


def test_the_announcement_becomes_opus_frames_of_its_length(tmp_path: Path) -> None:
    assert prompt_frames(None) == beep_frames()
    frames = prompt_frames(wav(tmp_path / "a.wav", rate=8000, seconds=1.0, channels=2))
    assert len(frames) == round((1.0 + 0.1) / FRAME_SECONDS)  # and 100 ms of silence
    decoder = av.CodecContext.create("libopus", "r")
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2)[:, 0] for frame in frames
                          for f in decoder.decode(av.Packet(frame))])  # fmt: skip
    middle = pcm[12000:36000].astype(np.float64)  # 0.25-0.75 s at 48 kHz
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert abs(np.fft.rfftfreq(len(middle), 1 / 48000)[np.argmax(spectrum)] - 600.0) < 5


@pytest.mark.parametrize(
    ("codec", "decoder_name", "rate"),
    [("pcmu", "pcm_mulaw", 8000), ("pcma", "pcm_alaw", 8000), ("g722", "g722", 16000)],
)
def test_sip_legs_get_the_announcement_and_the_beeps_in_g711(
    tmp_path: Path, codec: str, decoder_name: str, rate: int
) -> None:
    """A call recorded in G.711 (a SIP phone's, a carrier's) plays the prompt in its codec:
    20 ms frames of 160 bytes at 8 kHz, the file's tone where it was, the beeps at 1400 Hz."""
    frames = prompt_frames_g711(wav(tmp_path / "a.wav", rate=16000, seconds=1.0), codec)
    assert len(frames) == round((1.0 + 0.1) / FRAME_SECONDS) and {len(f) for f in frames} == {160}
    beeps = prompt_frames_g711(None, codec)
    assert len(beeps) == len(beep_frames())  # the same pattern and length as the Opus beeps

    def dominant(g711: bytes) -> float:
        decoder = av.CodecContext.create(decoder_name, "r")
        decoder.sample_rate, decoder.layout = rate, "mono"  # type: ignore[attr-defined]
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in decoder.decode(av.Packet(g711))])
        samples = pcm.astype(np.float64)
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])

    assert abs(dominant(b"".join(frames[12:38])) - 600.0) < 10  # 0.25-0.75 s
    assert abs(dominant(b"".join(beeps[:10])) - 1400.0) < 10  # the first beep


def test_an_announcement_is_encoded_once_per_file_version(tmp_path: Path) -> None:
    """Every recorded call plays it: the frames come from a cache until the file changes."""
    path = wav(tmp_path / "a.wav", rate=8000, seconds=0.5, channels=1)
    first, g711 = prompt_frames(path), prompt_frames_g711(path, "pcmu")
    assert prompt_frames(path) is first and prompt_frames_g711(path, "pcmu") is g711
    stamp = path.stat().st_mtime_ns
    wav(path, rate=8000, seconds=1.0, channels=1)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    assert len(prompt_frames(path)) > len(first)
