"""Batches of capture records, shared by both file formats: a `Batch` (one chunk of the file and
numpy arrays describing each complete record in it; the chunk comes from `chunks.ChunkBuffer`), and the lane walk
that finds a chunk's records in parallel (`walk_lanes`: exact, never a guess — see `pcap.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from callgate.detect.capture.chunks import HEAD_SLACK, ChunkBuffer

__all__ = ["HEAD", "HEAD_SLACK", "Batch", "ChunkBuffer", "record_rows", "walk_lanes"]

LANE_BYTES = 16 * 1024  # one lane per this many bytes of a chunk
_WINDOW = 512  # bytes searched for a lane's first record
HEAD = 96  # bytes of each frame decoded with numpy: one VLAN tag, IPv4 with options, TCP header

I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Batch:
    """Complete records of one chunk: `data` holds them, the arrays describe each frame."""

    data: memoryview  # the chunk (of a bytearray with HEAD_SLACK readable bytes after it)
    # per record, the bytes from its header on (`skip` + HEAD of them); None when the compiled
    # path found the records (it reads frames where they are; `head_rows` gathers them if needed)
    rows: npt.NDArray[np.uint8] | None
    skip: int  # bytes of record header before the frame in `rows`
    start: I64  # offset of the frame in `data`
    caplen: I64
    ts: npt.NDArray[np.float64]
    linktype: I64

    def head_rows(self) -> tuple[npt.NDArray[np.uint8], int]:
        """(`rows`, `skip`), gathered from the frames when the batch has none."""
        if self.rows is None:
            return record_rows(self.data, self.start, 0), 0
        return self.rows, self.skip

    def raw(self) -> npt.NDArray[np.uint8]:
        """The whole read buffer (the chunk, then HEAD_SLACK readable bytes), as numpy bytes."""
        return raw_bytes(self.data)


def _raw(buf: memoryview) -> npt.NDArray[np.uint8]:
    return np.frombuffer(cast(bytearray, buf.obj), dtype=np.uint8)


def raw_bytes(buf: memoryview) -> npt.NDArray[np.uint8]:
    """The whole buffer behind `buf` (a bytearray), as numpy bytes."""
    return np.frombuffer(cast(bytearray, buf.obj), dtype=np.uint8)


def record_rows(buf: memoryview, offsets: I64, skip: int) -> npt.NDArray[np.uint8]:
    """`skip` + HEAD bytes from each offset, gathered in one pass (HEAD_SLACK keeps the last
    ones inside the buffer)."""
    raw = raw_bytes(buf)
    width = skip + HEAD
    window = np.lib.stride_tricks.as_strided(raw, shape=(len(raw) - width + 1, width),
                                             strides=(1, 1), writeable=False)  # fmt: skip
    return window[offsets]


def lane_window() -> int:
    """Bytes searched for a lane's first record: well inside the lane (views stay in the buffer)."""
    return min(_WINDOW, LANE_BYTES // 4)


def walk_lanes(
    step: Callable[[I64], I64], starts: I64, ends: I64, size: int, header: int
) -> tuple[I64, int] | None:
    """Follow the chain of records from every lane start at once (`step`: each record's offset →
    the next one's) until each lane reaches the next lane's start; None when one does not land on
    it exactly (that lane start was not a record). The last lane stops where a `header`-byte
    record header no longer fits; (offsets of the complete records, where the rest begins)."""
    lanes = len(starts)
    stop = ends.copy()
    stop[-1] = size - header + 1
    pos = starts.copy()
    alive = np.ones(lanes, dtype=bool)
    steps: list[I64] = []
    while True:
        steps.append(pos)
        nxt = step(pos)
        alive &= (nxt < stop) & (nxt > pos)
        if not alive.any():
            break
        pos = np.where(alive, nxt, pos)
    table = np.stack(steps)
    # a lane that stopped keeps repeating its last offset; a live one always moves forward
    count = 1 + np.count_nonzero(table[1:] != table[:-1], axis=0)
    last = table[count - 1, np.arange(lanes)]
    after = step(last)
    if np.any(after[:-1] != stop[:-1]):
        return None
    offsets = table.T[np.arange(len(steps))[None, :] < count[:, None]]
    if after[-1] > size:  # the last record is cut by the chunk's end
        return offsets[:-1], int(last[-1])
    return offsets, int(after[-1])
