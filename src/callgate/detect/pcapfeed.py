"""Large pcap and pcapng files into a `FlowTable` through the compiled loops (`hotloops`),
without numpy — importing it costs ≈ 0.1 CPU-s, a fifth of a 1 M packet file's time. Per 1 MiB
chunk:

1. `pcap_walk` finds the complete records (offset, length, time; the earliest and latest time);
   for pcapng, `pcapng_walk` the runs of Enhanced Packet Blocks, and `PcapReader.ng_block` every
   other block (section and interface headers, Simple Packet Blocks; errors), in file order;
2. `decode` reads every frame's link, IP and UDP/TCP headers where it lies in the chunk;
3. `group` numbers the distinct directional 5-tuples in order of their first packet, and each is
   looked up once in the flow table (`FlowTable.batch_lookup`, as `batchfeed` does);
4. `select` picks the payloads `flow.inspect` sees — per undecided flow, its first payloads up to
   its room, with the packet counts it would have at each — and Python inspects them in order;
5. `tally` sums packets, bytes and the last time per 5-tuple, added to each flow.

This is `batchfeed.feed_batch` step for step, so the report is the same
(tests/unit/detect/test_detect_batch.py, test_detect_native.py). A chunk it does not take as is —
one spanning more than the idle timeout — is fed one packet at a time (as `feed_batch` does),
and one holding GTP-U frames (decoded by decode.py) goes to `feed_batch` (importing numpy
then)."""

from __future__ import annotations

import struct
from array import array
from io import BufferedIOBase

from callgate.detect import hotloops
from callgate.detect.capture.chunks import ChunkBuffer
from callgate.detect.capture.packets import (
    MAX_RECORD,
    PCAP_MAGICS,
    PCAPNG_SHB,
    SECTION_HEADER,
    CaptureError,
    PcapReader,
)
from callgate.detect.decode import TCP
from callgate.detect.flow import INSPECT_LIMIT, Flow, inspect
from callgate.detect.flowtable import FlowTable, add_counts

_SKIP, _SLOW = 0, 2  # batchdecode's kinds
_MASK = 0xFFFF


# Chunks of 1 MiB, not the numpy path's 8: the record walk is a chain of dependent loads, and a
# chunk just read stays in the CPU's L2 cache (the 1 M packet benchmark: 0.32-0.33 CPU-s with
# 1 MiB chunks against 0.49-0.54 with 8 MiB, same process otherwise).
FEED_CHUNK = 1024 * 1024
# Records per batch at most (a chunk of more records takes several passes): 64 KiB columns stay
# under glibc's mmap threshold, so the 13 columns cost ≈ 0.5 ms to allocate (64 K rows: ≈ 5 ms of
# fresh pages, 1-2 % of the 1 M packet benchmark); a 1 MiB chunk of that benchmark holds ≈ 4 300.
ROWS = 8 * 1024


class _Columns:
    """Reused per-record arrays the compiled functions fill, ROWS records each, typed as they
    require (int64; float64 times; the 1-byte kinds)."""

    def __init__(self, linktype: int) -> None:
        self.size = ROWS
        names = ("start", "caplen", "proto", "src", "dst", "addr", "alen", "payload", "plen",
                 "first", "inv")  # fmt: skip
        self.bufs = {name: memoryview(bytearray(8 * ROWS)).cast("q") for name in names}
        self.stamps: memoryview[float] = memoryview(bytearray(8 * ROWS)).cast("d")
        self.bufs["link"] = memoryview(bytearray(struct.pack("=q", linktype) * ROWS)).cast("q")
        self.kind = bytearray(ROWS)

    def __getitem__(self, name: str) -> memoryview[int]:
        return self.bufs[name]


def feed_pcap(table: FlowTable, reader: PcapReader) -> bool:
    """Feed `reader`'s file when it is pcap or pcapng (False, having read nothing, otherwise: the
    caller's reader reports why). Errors and the truncated-tail warning are `PcapReader`'s."""
    try:
        handle = reader.path.open("rb")
    except OSError:
        return False
    with handle:
        magic = handle.read(4)
        if magic == PCAPNG_SHB:
            _pcapng(table, reader, handle, magic)
            return True
        if magic not in PCAP_MAGICS:
            return False
        order, unit = PCAP_MAGICS[magic]
        header = magic + handle.read(20)
        if len(header) < 24:
            raise CaptureError(f"{reader.path}: truncated pcap file header")
        linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
        cols = _Columns(linktype)
        reads = ChunkBuffer(handle, FEED_CHUNK)
        tail = b""
        while (buf := reads.read(reader, handle, tail)) is not None:
            left = 0
            while True:  # ROWS records at a time
                count, used, first, last = hotloops.pcap_walk(
                    buf[left:], order == ">", unit, cols["start"], cols["caplen"], cols.stamps
                )
                if count:
                    reader.packets += count
                    _chunk(table, buf, left, count, cols, last - first)
                left += used
                if count < ROWS:
                    break
            if left + 16 <= len(buf):
                caplen = struct.unpack_from(order + "I", buf, left + 8)[0]
                if caplen > MAX_RECORD:
                    raise CaptureError(
                        f"{reader.path}: corrupt record (length {caplen}) at packet "
                        f"{reader.packets + 1}"
                    )
            tail = bytes(buf[left:])
    if tail:
        reader.note_truncated("packet record")
    return True


def _pcapng(table: FlowTable, reader: PcapReader, handle: BufferedIOBase, first: bytes) -> None:
    """pcapng (section 4): runs of Enhanced Packet Blocks through `hotloops.pcapng_walk` and
    `_chunk`; any other block (section and interface headers, Simple Packet Blocks, …) and every
    error through `PcapReader.ng_block`, in file order."""
    if reader.progress is not None:
        reader.progress(len(first))
    order = "<"
    ifaces: list[tuple[int, float]] = []
    cols = _Columns(0)
    reads = ChunkBuffer(handle, FEED_CHUNK)
    tail = first
    while (buf := reads.read(reader, handle, tail)) is not None:
        pos = 0
        while True:
            if ifaces:
                count, used, _, earliest, latest = hotloops.pcapng_walk(
                    buf[pos:], order == ">", array("q", [link for link, _ in ifaces]),
                    array("d", [unit for _, unit in ifaces]), cols["start"], cols["caplen"],
                    cols.stamps, cols["link"],
                )  # fmt: skip
                if count:
                    reader.packets += count
                    _chunk(table, buf, pos, count, cols, latest - earliest)
                pos += used
                if count == ROWS:
                    continue  # the outputs were full: walk on
            if len(buf) - pos < 12:
                break
            order, btype, blen = reader.ng_header(buf, pos, order)
            if btype == SECTION_HEADER:
                ifaces = []
            if pos + blen > len(buf):
                break
            # the block, and what PcapReader's buffer has after a block too short for its fields
            block = bytes(buf[pos : pos + max(blen, 32)])
            packet = reader.ng_block(block, 0, btype, blen, order, ifaces)
            pos += blen
            if packet is not None:
                reader.packets += 1
                table.packet(*packet)
        tail = bytes(buf[pos:])
    if tail:
        reader.note_truncated("pcapng block")


def _chunk(
    table: FlowTable, chunk: memoryview, at: int, count: int, cols: _Columns, span: float
) -> None:
    """The `count` records walked from offset `at` of the chunk."""
    buf = chunk[at:]  # the offsets in `cols` are from here
    kind = memoryview(cols.kind)[:count]
    sparse = bool(table.idle) and span > table.idle  # a flow may fall idle inside this chunk
    if not sparse:
        hotloops.decode(buf, _q(cols, "start", count), _q(cols, "caplen", count),
                        _q(cols, "link", count), kind, cols["proto"], cols["src"], cols["dst"],
                        cols["addr"], cols["alen"], cols["payload"], cols["plen"])  # fmt: skip
    if sparse:  # one packet at a time, as feed_batch does then
        starts, caplens = _q(cols, "start", count).tolist(), _q(cols, "caplen", count).tolist()
        stamps, links = _d(cols, count).tolist(), _q(cols, "link", count).tolist()
        for ts, link, start, size in zip(stamps, links, starts, caplens, strict=True):
            table.packet(ts, link, bytes(buf[start : start + size]))
        return
    if cols.kind.find(_SLOW, 0, count) >= 0:
        _numpy_batch(table, chunk, at, count, cols)
        return
    table.packets += count
    table.skipped += cols.kind.count(_SKIP, 0, count)
    groups = hotloops.group(buf, kind, _q(cols, "src", count), _q(cols, "dst", count),
                            _q(cols, "proto", count), _q(cols, "addr", count),
                            _q(cols, "alen", count), cols["first"], cols["inv"])  # fmt: skip
    if not groups:
        return
    flows, sides = _lookup(table, buf, cols, groups)
    inv = _q(cols, "inv", count)
    _inspect(buf, cols, count, inv, flows, sides)
    _count(cols, count, inv, flows, sides, groups)


def _q(cols: _Columns, name: str, count: int) -> memoryview[int]:
    """The first `count` items of an int64 column."""
    return cols[name][:count]


def _d(cols: _Columns, count: int) -> memoryview[float]:
    """The first `count` record times."""
    return cols.stamps[:count]


def _lookup(
    table: FlowTable, buf: memoryview, cols: _Columns, groups: int
) -> tuple[list[Flow], list[int]]:
    """Per group, in order of its first packet: its flow (created when new) and side."""
    firsts = _q(cols, "first", groups).tolist()
    proto, addr, alen = (_q(cols, name, cols.size) for name in ("proto", "addr", "alen"))
    srcs, dsts = cols["src"].cast("B").cast("Q"), cols["dst"].cast("B").cast("Q")
    stamps = _d(cols, cols.size)
    flows: list[Flow] = []
    sides: list[int] = []
    seen: set[int] = set()  # flows met earlier in this batch
    for i in firsts:
        a, size = addr[i], alen[i]
        sip, dip = bytes(buf[a : a + size]), bytes(buf[a + size : a + 2 * size])
        sport, dport = srcs[i] & _MASK, dsts[i] & _MASK
        entry = table.batch_lookup(seen, stamps[i], proto[i], (sip, sport), (dip, dport))
        flows.append(entry[0])
        sides.append(entry[1])
    return flows, sides


def _inspect(
    buf: memoryview, cols: _Columns, count: int, inv: memoryview, flows: list[Flow],
    sides: list[int],
) -> None:  # fmt: skip
    """The payloads of flows still being inspected through `inspect`, in order per flow, with
    the packet counts it would see at each (`hotloops.select` picks them)."""
    owner_of: dict[int, int] = {}
    owners: list[Flow] = []
    for flow in flows:
        if owner_of.setdefault(id(flow), len(owners)) == len(owners):
            owners.append(flow)
    room = [0 if flow.done else INSPECT_LIMIT - flow.inspected for flow in owners]
    total = min(sum(r for r in room if r > 0), count)  # each packet is picked once at most
    if not total:
        return
    out = [array("q", bytes(8 * total)) for _ in range(4)]
    picked = hotloops.select(inv, _q(cols, "plen", count), _ints(sides),
                             _ints([owner_of[id(flow)] for flow in flows]), _ints(room),
                             *out)  # fmt: skip
    who, packets, seen0, seen1 = (o[:picked].tolist() for o in out)
    payload, plen = _q(cols, "payload", count), _q(cols, "plen", count)
    stamps = _d(cols, count)
    k = 0
    while k < picked:
        o = who[k]
        flow = owners[o]
        pkts = flow.pkts
        base0, base1 = pkts
        stream = flow.proto == TCP
        while k < picked and who[k] == o:
            if not flow.done:
                i = packets[k]
                pkts[0], pkts[1] = base0 + seen0[k], base1 + seen1[k]
                start = payload[i]
                inspect(flow, sides[inv[i]], bytes(buf[start : start + plen[i]]), stream, stamps[i])
            k += 1
        pkts[0], pkts[1] = base0, base1


def _count(
    cols: _Columns, count: int, inv: memoryview, flows: list[Flow], sides: list[int], groups: int
) -> None:
    """Packets, bytes and last-seen time per group, added to its flow and side."""
    counts, octets, last = (
        array("q", bytes(8 * groups)),
        array("q", bytes(8 * groups)),
        array("d", bytes(8 * groups)),
    )
    hotloops.tally(inv, _q(cols, "caplen", count), _d(cols, count), counts, octets, last)
    add_counts(flows, sides, counts.tolist(), octets.tolist(), last.tolist())


def _ints(values: list[int]) -> array[int]:
    return array("q", values)


def _numpy_batch(table: FlowTable, chunk: memoryview, at: int, count: int, cols: _Columns) -> None:
    """`batchfeed.feed_batch` on these records (numpy imported the first time; a Batch's offsets
    are from the start of the chunk)."""
    import numpy as np

    from callgate.detect.batchfeed import feed_batch
    from callgate.detect.capture.batch import Batch

    start, caplen, link = (np.frombuffer(cols[name], dtype=np.int64, count=count)
                           for name in ("start", "caplen", "link"))  # fmt: skip
    stamps = np.frombuffer(cols.stamps.cast("B"), dtype=np.float64, count=count)
    feed_batch(table, Batch(chunk, None, 0, start + at, caplen, stamps, link))
