"""pcapng files as batches (pcapng §4): chunks of blocks. A chunk holding only Enhanced Packet
Blocks of interfaces already described (the bulk of any large capture) is walked in parallel lanes
like classic pcap (`batch.walk_lanes`) and decoded with numpy; any other chunk — section and
interface headers, other block types, errors — block by block, with the errors of
`packets.PcapReader`."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedIOBase

import numpy as np
import numpy.typing as npt

from callgate.detect.capture import batch as lanes
from callgate.detect.capture.batch import (
    I64,
    Batch,
    ChunkBuffer,
    raw_bytes,
    record_rows,
    walk_lanes,
)
from callgate.detect.capture.packets import (
    MAX_RECORD,
    SECTION_HEADER,
    CaptureError,
    PcapReader,
    if_tsresol,
)

_EPB = 6


def pcapng_batches(reader: PcapReader, handle: BufferedIOBase, first: bytes) -> Iterator[Batch]:
    if reader.progress is not None:
        reader.progress(len(first))
    state = _NgState()
    tail = first
    reads = ChunkBuffer(handle)
    while (buf := reads.read(reader, handle, tail)) is not None:
        fast = _walk_lanes(reader, buf, state)
        batch, used = fast if fast is not None else _walk_blocks(reader, buf, state)
        if batch is not None:
            yield batch
        tail = bytes(buf[used:])
    if tail:
        reader.note_truncated("pcapng block")


@dataclass(slots=True)
class _NgState:
    order: str = "<"
    ifaces: list[tuple[int, float]] | None = None


def _walk_blocks(reader: PcapReader, buf: memoryview, st: _NgState) -> tuple[Batch | None, int]:
    """The packets of the complete blocks in `buf`, and where the first incomplete block begins
    (pcapng §4: Section Header, Interface Description, Enhanced/Simple/obsolete Packet)."""
    starts: list[int] = []
    caplens: list[int] = []
    stamps: list[float] = []
    links: list[int] = []
    ifaces = st.ifaces if st.ifaces is not None else []
    st.ifaces = ifaces
    order = st.order
    pos, end = 0, len(buf)
    while pos + 12 <= end:
        order, btype, blen = reader.ng_header(buf, pos, order)
        if btype == SECTION_HEADER:
            st.order = order
            ifaces.clear()
        if pos + blen > end:
            break
        body = pos + 8
        if btype == 6 or btype == 2:
            if btype == 6:
                iface, hi, lo, caplen = struct.unpack_from(order + "IIII", buf, body)
            else:
                iface, _, hi, lo, caplen = struct.unpack_from(order + "HHIII", buf, body)
            if iface >= len(ifaces):
                raise CaptureError(f"{reader.path}: packet names interface {iface}, not described")
            linktype, unit = ifaces[iface]
            starts.append(body + 20)
            caplens.append(max(0, min(caplen, blen - 32)))
            stamps.append(((hi << 32) | lo) * unit)
            links.append(linktype)
        elif btype == 3:
            if not ifaces:
                raise CaptureError(f"{reader.path}: packet names interface 0, not described")
            starts.append(body + 4)
            caplens.append(max(0, blen - 16))
            stamps.append(0.0)
            links.append(ifaces[0][0])
        elif btype == 1:
            linktype = struct.unpack_from(order + "H", buf, body)[0]
            block = bytes(buf[pos : pos + blen])
            ifaces.append((linktype, if_tsresol(block, 16, blen - 4, order)))
        pos += blen
    if not starts:
        return None, pos
    reader.packets += len(starts)
    offsets = np.array(starts, dtype=np.int64)
    batch = Batch(buf, None, 0, offsets, np.array(caplens, dtype=np.int64),
                  np.array(stamps, dtype=np.float64), np.array(links, dtype=np.int64))  # fmt: skip
    return batch, pos


def _walk_lanes(reader: PcapReader, buf: memoryview, st: _NgState) -> tuple[Batch, int] | None:
    """The chunk's Enhanced Packet Blocks found and decoded with numpy; None when the chunk is
    not that simple case."""
    size = len(buf)
    ifaces = st.ifaces
    if size < 16 * lanes.LANE_BYTES or not ifaces:
        return None
    words = np.frombuffer(raw_bytes(buf), dtype=st.order + "u4", count=len(buf.obj) // 4)  # type: ignore[arg-type]
    starts = _lane_starts(words, size)
    if len(starts) < 2:
        return None
    found = walk_lanes(lambda pos: pos + _length(words, pos), starts,
                       np.append(starts[1:], size), size, 12)  # fmt: skip
    if found is None or not len(found[0]):
        return None
    offsets, used = found
    at = offsets >> 2
    blen = words[at + 1].astype(np.int64)
    iface = words[at + 2].astype(np.int64)
    if not ((words[at] == _EPB).all() and (_length(words, offsets) > 0).all()):
        return None
    if int(iface.max()) >= len(ifaces):
        return None  # the block-by-block walk reports the undescribed interface
    links = np.array([link for link, _ in ifaces], dtype=np.int64)[iface]
    units = np.array([unit for _, unit in ifaces], dtype=np.float64)[iface]
    ticks = (words[at + 3].astype(np.uint64) << np.uint64(32)) | words[at + 4].astype(np.uint64)
    caplen = np.maximum(0, np.minimum(words[at + 5].astype(np.int64), blen - 32))
    frames = offsets + 28
    reader.packets += len(offsets)
    batch = Batch(buf, record_rows(buf, frames, 0), 0, frames, caplen, ticks.astype(np.float64) * units,
                  links)  # fmt: skip
    return batch, used


def _length(words: npt.NDArray[np.uint32], pos: I64) -> I64:
    """Block Total Length of the blocks at `pos`, 0 where it is not a valid one."""
    blen = words[(pos >> 2) + 1].astype(np.int64)
    return np.where((blen >= 12) & (blen % 4 == 0) & (blen <= MAX_RECORD), blen, 0)


def _lane_starts(words: npt.NDArray[np.uint32], size: int) -> I64:
    """0, then for each later lane the first Enhanced Packet Block in its window whose length
    is repeated at its end, followed by another such block."""
    lane = lanes.LANE_BYTES
    count = size // lane
    width = lanes.lane_window() // 4
    view = np.lib.stride_tricks.as_strided(words[lane // 4 :], shape=(count - 1, width),
                                           strides=(lane, 4), writeable=False)  # fmt: skip
    cand = np.flatnonzero(view == _EPB)
    cand = (cand // width + 1) * lane + (cand % width) * 4
    keep = np.ones(len(cand), dtype=bool)
    pos = cand
    for _ in range(2):
        blen = _length(words, pos)
        nxt = pos + blen
        keep &= (blen > 0) & (nxt + 12 <= size)
        nxt = np.where(keep, nxt, pos + 12)
        keep &= words[(nxt >> 2) - 1] == blen
        pos = np.where(keep, nxt, 0)
    cand = cand[keep]
    _, first = np.unique(cand // lane, return_index=True)
    return np.concatenate(([0], cand[first])).astype(np.int64)
