"""A recording's stereo audio as Ogg/Opus (RFC 7845), for exports: the same timeline as the WAV
(caller left, callee right), encoded with libopus through PyAV at 48 kHz, 20 ms frames, as the
decoded samples come (`OggOpusWriter.write`), so no more than a frame is held.

It is a re-encoding of the decoded audio (smaller than the WAV, not bit-exact): the packets each
party sent, untouched, stay in recording.cgrec beside it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import av
import numpy as np
import numpy.typing as npt

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
BIT_RATE = 64000  # stereo speech: transparent enough for review, ~0.5 MB a minute


class OggOpusWriter:
    """Blocks of (n, 2) int16 samples at 48 kHz in, an Ogg/Opus file at `path` out."""

    def __init__(self, path: Path) -> None:
        self._container = av.open(str(path), "w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=RATE, layout="stereo")
        self._stream.bit_rate = BIT_RATE
        self._carry = np.zeros((0, 2), dtype=np.int16)  # under one frame, waiting for more
        self._pts = 0

    def write(self, block: npt.NDArray[np.int16]) -> None:
        samples = np.concatenate((self._carry, block)) if len(self._carry) else block
        whole = len(samples) - len(samples) % FRAME
        for start in range(0, whole, FRAME):
            self._encode(samples[start : start + FRAME])
        self._carry = np.array(samples[whole:])  # a copy: `block` is reused by its writer

    def _encode(self, samples: npt.NDArray[np.int16] | None) -> None:
        frame = None
        if samples is not None:
            block = np.ascontiguousarray(samples).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = self._pts
            self._pts += len(samples)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """The last, shorter frame; the encoder flushed; the file closed."""
        try:
            if len(self._carry):
                self._encode(self._carry)
            self._encode(None)
        finally:
            self._container.close()

    def __enter__(self) -> OggOpusWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._container.close()
