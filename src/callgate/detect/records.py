"""Capture files as batches of records: the file is read in 8 MiB chunks (never whole; one reused
buffer), and each chunk becomes one `Batch` — the chunk's bytes plus numpy arrays of every
complete record's frame offset, captured length, timestamp, link type and first HEAD bytes.

Classic pcap records are variable-length, so finding them is a chain (each header gives the next
offset). The chain is walked in parallel lanes: the chunk is cut into segments, a lane starts at
the first offset in each segment that looks like a record header followed by more record headers,
and all lanes step together with numpy. The walk is exact, not a guess: every lane must land
exactly on the next lane's start (lane 0 starts at a known record, so by induction every lane is
on the real chain), otherwise the chunk is walked one record at a time. pcapng: `records_ng.py`.
Errors and the truncated-tail warning are those of `pcapfile.PcapReader`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BufferedIOBase
from typing import cast

import numpy as np
import numpy.typing as npt

from callgate.detect.pcapfile import (
    _PCAPNG_SHB,
    MAX_RECORD,
    PCAP_MAGICS,
    CaptureError,
    PcapReader,
)

CHUNK = 8 * 1024 * 1024
LANE_BYTES = 16 * 1024  # one lane per this many bytes of a chunk
_WINDOW = 512  # bytes searched for a lane's first record
_CHAIN = 3  # record headers in a row that make a lane start
HEAD = 96  # bytes of each frame decoded with numpy: one VLAN tag, IPv4 with options, TCP header
HEAD_SLACK = 128  # readable bytes after the data (fixed-size header windows)
_MAX_SECONDS = 1 << 26  # ~2 years around the chunk's first timestamp: a plausible header

I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Batch:
    """Complete records of one chunk: `data` holds them, the arrays describe each frame."""

    data: memoryview  # the chunk (of a bytearray with HEAD_SLACK readable bytes after it)
    rows: npt.NDArray[np.uint8]  # per record, the bytes from its header on (`skip` + HEAD of them)
    skip: int  # bytes of record header before the frame in `rows`
    start: I64  # offset of the frame in `data`
    caplen: I64
    ts: npt.NDArray[np.float64]
    linktype: I64

    def raw(self) -> npt.NDArray[np.uint8]:
        """The whole read buffer (the chunk, then HEAD_SLACK readable bytes), as numpy bytes."""
        return _raw(self.data)


def _raw(buf: memoryview) -> npt.NDArray[np.uint8]:
    return np.frombuffer(cast(bytearray, buf.obj), dtype=np.uint8)


def batches(reader: PcapReader) -> Iterator[Batch]:
    """The batches of `reader`'s file; `reader.packets` counts the records, `reader.warnings`
    gets the truncated-tail warning."""
    try:
        handle = reader.path.open("rb")
    except OSError as exc:
        raise CaptureError(f"{reader.path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        head = handle.read(4)
        if len(head) < 4:
            raise CaptureError(f"{reader.path}: empty or too short to be a capture")
        if head in PCAP_MAGICS:
            yield from _pcap(reader, handle, head)
        elif head == _PCAPNG_SHB:
            from callgate.detect.records_ng import pcapng_batches

            yield from pcapng_batches(reader, handle, head)
        else:
            raise CaptureError(
                f"{reader.path}: not a pcap or pcapng file (starts with 0x{head.hex()})"
            )


class _Buffer:
    """One reusable read buffer (a fresh 32 MiB allocation per chunk costs more in page faults
    than the chunk's processing), with HEAD_SLACK zero bytes after the data."""

    def __init__(self, handle: BufferedIOBase) -> None:
        try:
            size = os.fstat(handle.fileno()).st_size
        except (OSError, ValueError):
            size = CHUNK
        self.raw = bytearray(min(size, CHUNK) + HEAD_SLACK)

    def read(self, reader: PcapReader, handle: BufferedIOBase, tail: bytes) -> memoryview | None:
        """`tail` (what the previous chunk left over) then the next chunk; None at the end."""
        need = len(tail) + CHUNK + HEAD_SLACK
        if len(self.raw) < need:
            self.raw = bytearray(need)
        view = memoryview(self.raw)
        view[: len(tail)] = tail
        got = handle.readinto(view[len(tail) : len(tail) + CHUNK])
        if not got:
            return None
        if reader.progress is not None:
            reader.progress(got)
        size = len(tail) + got
        view[size : size + HEAD_SLACK] = bytes(HEAD_SLACK)
        return view[:size]


# ---- classic pcap ----
def _pcap(reader: PcapReader, handle: BufferedIOBase, magic: bytes) -> Iterator[Batch]:
    order, unit = PCAP_MAGICS[magic]
    header = magic + handle.read(20)
    if len(header) < 24:
        raise CaptureError(f"{reader.path}: truncated pcap file header")
    linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
    frac_limit = 1_000_000 if unit == 1e-6 else 1_000_000_000
    tail = b""
    reads = _Buffer(handle)
    while (buf := reads.read(reader, handle, tail)) is not None:
        offsets, left = _walk_pcap(buf, order, frac_limit)
        if left + 16 <= len(buf):
            caplen = struct.unpack_from(order + "I", buf, left + 8)[0]
            if caplen > MAX_RECORD:
                raise CaptureError(
                    f"{reader.path}: corrupt record (length {caplen}) at packet "
                    f"{reader.packets + len(offsets) + 1}"
                )
        if len(offsets):
            reader.packets += len(offsets)
            yield _pcap_batch(buf, offsets, order, unit, linktype)
        tail = bytes(buf[left:])
    if tail:
        reader.note_truncated("packet record")


def _pcap_batch(buf: memoryview, offsets: I64, order: str, unit: float, linktype: int) -> Batch:
    rows = _rows(buf, offsets, 16)
    fields = rows[:, :16].copy().view(order + "u4")
    ts = fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * unit
    count = len(offsets)
    return Batch(buf, rows, 16, offsets + 16, fields[:, 2].astype(np.int64), ts,
                 np.full(count, linktype, dtype=np.int64))  # fmt: skip


def _rows(buf: memoryview, offsets: I64, skip: int) -> npt.NDArray[np.uint8]:
    """`skip` + HEAD bytes from each offset, gathered in one pass (HEAD_SLACK keeps the last
    ones inside the buffer)."""
    raw = _raw(buf)
    width = skip + HEAD
    window = np.lib.stride_tricks.as_strided(raw, shape=(len(raw) - width + 1, width),
                                             strides=(1, 1), writeable=False)  # fmt: skip
    return window[offsets]


def _u32(buf: bytes | memoryview, order: str) -> npt.NDArray[np.uint32]:
    """Every 4-byte unsigned integer of `buf`, at every byte offset (a view, nothing copied)."""
    return np.ndarray((max(len(buf) - 3, 0),), dtype=order + "u4", buffer=buf, strides=(1,))


def _walk_pcap(buf: memoryview, order: str, frac_limit: int) -> tuple[I64, int]:
    """Offsets of the complete records in `buf` (which starts with one), and the offset where the
    first incomplete one begins."""
    if len(buf) < 16 * LANE_BYTES:
        return _walk_serial(buf, order)
    u32 = _u32(buf, order)
    starts = _lane_starts(buf, u32, frac_limit)
    if len(starts) < 2:
        return _walk_serial(buf, order)
    ends = np.append(starts[1:], len(buf))
    found = walk_lanes(lambda pos: pos + u32[pos + 8] + 16, starts, ends, len(buf), 16)
    if found is None:
        return _walk_serial(buf, order)
    return found


def _walk_serial(buf: memoryview, order: str) -> tuple[I64, int]:
    unpack = struct.Struct(order + "I").unpack_from
    pos, end = 0, len(buf)
    found: list[int] = []
    append = found.append
    while pos + 16 <= end:
        stop = pos + 16 + unpack(buf, pos + 8)[0]
        if stop > end:
            break
        append(pos)
        pos = stop
    return np.array(found, dtype=np.int64), pos


def _plausible(
    u32: npt.NDArray[np.uint32], pos: I64, sec0: int, frac_limit: int
) -> npt.NDArray[np.bool_]:
    """Whether a record header could start at each of `pos` (all < len(u32) - 12)."""
    caplen = u32[pos + 8]
    return (
        (u32[pos + 4] < frac_limit)
        & (caplen <= u32[pos + 12])
        & (caplen <= MAX_RECORD)
        & (np.abs(u32[pos].astype(np.int64) - sec0) < _MAX_SECONDS)
    )


def _lane_starts(buf: memoryview, u32: npt.NDArray[np.uint32], frac_limit: int) -> I64:
    """0, then for each later segment the first offset that starts _CHAIN plausible headers."""
    size = len(buf)
    lanes = size // LANE_BYTES
    sec0 = int(u32[0])
    limit = size - 16
    # the seconds field first, on a (lane, window) view of the buffer: nothing gathered
    window = lane_window()
    view = np.lib.stride_tricks.as_strided(
        u32[LANE_BYTES:], shape=(lanes - 1, window), strides=(LANE_BYTES, 1), writeable=False
    )
    near = (view - np.uint32((sec0 - _MAX_SECONDS) % (1 << 32))) < np.uint32(2 * _MAX_SECONDS)
    cand = np.flatnonzero(near)
    cand = (cand // window + 1) * LANE_BYTES + cand % window
    cand = cand[cand <= limit]
    cand = cand[_plausible(u32, cand, sec0, frac_limit)]
    pos = cand
    keep = np.ones(len(cand), dtype=bool)
    for _ in range(_CHAIN - 1):
        pos = pos + 16 + u32[pos + 8]
        inside = pos <= limit
        keep &= inside
        pos = np.where(inside, pos, 0)
        keep &= _plausible(u32, pos, sec0, frac_limit)
    cand = cand[keep]
    _, first = np.unique(cand // LANE_BYTES, return_index=True)
    return np.concatenate(([0], cand[first])).astype(np.int64)


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
