"""An operator's recording announcement (`recording.prompt_file`): a WAV file, checked when the
configuration loads so a bad file stops the server at start with a precise error, not a call.

Accepted: RIFF/WAVE, integer PCM, 16-bit, mono or stereo, 8 000 to 48 000 samples a second,
`MIN_SECONDS` to `MAX_SECONDS` long (the parties do not hear each other while it plays), at most
`MAX_BYTES`. Only the standard library here: the configuration loads without PyAV.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

MIN_RATE, MAX_RATE = 8000, 48000
MIN_SECONDS, MAX_SECONDS = 0.2, 15.0
MAX_BYTES = 4 << 20  # 15 s of 48 kHz 16-bit stereo is 2.9 MB


class PromptFileError(ValueError):
    """The prompt file cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class PromptWav:
    rate: int
    channels: int
    pcm: bytes  # 16-bit little-endian samples, channels interleaved

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.rate)


def read_prompt_wav(path: Path) -> PromptWav:
    """The file's samples, or PromptFileError naming what is wrong with it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PromptFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot read it ({exc.strerror})") from None
    if not path.is_file():
        raise PromptFileError(f"{path}: not a file")
    if size > MAX_BYTES:
        raise PromptFileError(f"{path}: {size} bytes, more than {MAX_BYTES} allowed")
    try:
        with wave.open(str(path), "rb") as reader:
            channels, width = reader.getnchannels(), reader.getsampwidth()
            rate, frames = reader.getframerate(), reader.getnframes()
            pcm = reader.readframes(frames)
    except wave.Error as exc:
        raise PromptFileError(f"{path}: not a PCM WAV file ({exc})") from None
    except (EOFError, OSError) as exc:
        raise PromptFileError(f"{path}: not a PCM WAV file ({exc or 'cut short'})") from None
    if width != 2:
        raise PromptFileError(f"{path}: {8 * width}-bit samples; 16-bit PCM is needed")
    if channels not in (1, 2):
        raise PromptFileError(f"{path}: {channels} channels; mono or stereo is needed")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise PromptFileError(
            f"{path}: {rate} samples a second; {MIN_RATE} to {MAX_RATE} are accepted"
        )
    prompt = PromptWav(rate, channels, pcm[: len(pcm) - len(pcm) % (2 * channels)])
    if not MIN_SECONDS <= prompt.seconds <= MAX_SECONDS:
        raise PromptFileError(
            f"{path}: {prompt.seconds:.2f} s long; {MIN_SECONDS} to {MAX_SECONDS} s are accepted"
        )
    return prompt
