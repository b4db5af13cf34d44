"""Classic pcap files as batches: each chunk of the file becomes one `Batch`.

Classic pcap records are variable-length, so finding them is a chain (each header gives the next
offset). The chain is walked in parallel lanes: the chunk is cut into segments, a lane starts at
the first offset in each segment that looks like a record header followed by more record headers,
and all lanes step together with numpy. The walk is exact, not a guess: every lane must land
exactly on the next lane's start (lane 0 starts at a known record, so by induction every lane is
on the real chain), otherwise the chunk is walked one record at a time. Errors and the
truncated-tail warning are those of `packets.PcapReader`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BufferedIOBase

import numpy as np
import numpy.typing as npt

from callgate.detect.capture import batch as lanes
from callgate.detect.capture.batch import I64, Batch, ChunkBuffer, record_rows, walk_lanes
from callgate.detect.capture.packets import MAX_RECORD, PCAP_MAGICS, CaptureError, PcapReader

_CHAIN = 3  # record headers in a row that make a lane start
_MAX_SECONDS = 1 << 26  # ~2 years around the chunk's first timestamp: a plausible header


def pcap_batches(reader: PcapReader, handle: BufferedIOBase, magic: bytes) -> Iterator[Batch]:
    order, unit = PCAP_MAGICS[magic]
    header = magic + handle.read(20)
    if len(header) < 24:
        raise CaptureError(f"{reader.path}: truncated pcap file header")
    linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
    frac_limit = 1_000_000 if unit == 1e-6 else 1_000_000_000
    tail = b""
    reads = ChunkBuffer(handle)
    while (buf := reads.read(reader, handle, tail)) is not None:
        offsets, left = _walk_pcap(buf, order, frac_limit)
        count = len(offsets)
        batch = _pcap_batch(buf, offsets, order, unit, linktype) if count else None
        if left + 16 <= len(buf):
            caplen = struct.unpack_from(order + "I", buf, left + 8)[0]
            if caplen > MAX_RECORD:
                raise CaptureError(
                    f"{reader.path}: corrupt record (length {caplen}) at packet "
                    f"{reader.packets + count + 1}"
                )
        if batch is not None:
            reader.packets += count
            yield batch
        tail = bytes(buf[left:])
    if tail:
        reader.note_truncated("packet record")


def _pcap_batch(buf: memoryview, offsets: I64, order: str, unit: float, linktype: int) -> Batch:
    rows = record_rows(buf, offsets, 16)
    fields = rows[:, :16].copy().view(order + "u4")
    ts = fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * unit
    count = len(offsets)
    return Batch(buf, rows, 16, offsets + 16, fields[:, 2].astype(np.int64), ts,
                 np.full(count, linktype, dtype=np.int64))  # fmt: skip


def _u32(buf: bytes | memoryview, order: str) -> npt.NDArray[np.uint32]:
    """Every 4-byte unsigned integer of `buf`, at every byte offset (a view, nothing copied)."""
    return np.ndarray((max(len(buf) - 3, 0),), dtype=order + "u4", buffer=buf, strides=(1,))


def _walk_pcap(buf: memoryview, order: str, frac_limit: int) -> tuple[I64, int]:
    """Offsets of the complete records in `buf` (which starts with one), and the offset where the
    first incomplete one begins."""
    if len(buf) < 16 * lanes.LANE_BYTES:
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
    count = size // lanes.LANE_BYTES
    sec0 = int(u32[0])
    limit = size - 16
    # the seconds field first, on a (lane, window) view of the buffer: nothing gathered
    window = lanes.lane_window()
    view = np.lib.stride_tricks.as_strided(
        u32[lanes.LANE_BYTES :],
        shape=(count - 1, window),
        strides=(lanes.LANE_BYTES, 1),
        writeable=False,
    )
    near = (view - np.uint32((sec0 - _MAX_SECONDS) % (1 << 32))) < np.uint32(2 * _MAX_SECONDS)
    cand = np.flatnonzero(near)
    cand = (cand // window + 1) * lanes.LANE_BYTES + cand % window
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
    _, first = np.unique(cand // lanes.LANE_BYTES, return_index=True)
    return np.concatenate(([0], cand[first])).astype(np.int64)
