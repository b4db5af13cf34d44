"""`decode.py` for a whole batch at once: link layer → IPv4/IPv6 → UDP/TCP header fields of
every frame, by the compiled `hotloops.decode` (`decode_compiled`: every shape decode.py knows but
GTP-U) or with numpy (`decode_numpy`). numpy decodes the common shapes — Ethernet (one
802.1Q/802.1ad tag at most), Linux cooked SLL/SLL2, raw IP, BSD NULL/LOOP; IPv4 with any header
length, IPv6 without extension headers; UDP and TCP. Frames of any other shape (more VLAN tags,
IPv6 extension headers, GTP-U) are marked `SLOW` and decoded one by one by `decode.decode`, so
every path gives the same answer for every frame (tests/unit/detect/test_detect_native.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callgate.detect.capture.batch import Batch
from callgate.detect.decode import GTP_U_PORT, TCP, UDP
from callgate.detect.native import enabled as compiled

SKIP, FAST, SLOW = 0, 1, 2  # not UDP/TCP over IP; decoded here; for decode.decode
V6 = np.uint64(1 << 63)  # endpoint codes of IPv6 addresses have the top bit set

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]
Col = int | I64  # a column of the frame heads: the same for every frame, or one per frame


@dataclass(slots=True)
class Fields:
    """Per frame of a batch (meaningful where kind == FAST; SLOW frames are filled in later)."""

    kind: npt.NDArray[np.int8]
    proto: I64
    src: U64  # endpoint code: IPv4 (address << 16 | port), exact; IPv6: a hash, top bit set
    dst: U64
    addr: I64  # offset in the chunk of the source address (destination follows it)
    alen: I64  # 4 or 16
    payload: I64  # offset in the chunk of the transport payload
    plen: I64


class _Heads:
    """Bytes and big-endian 16-bit fields at a column of every frame's first HEAD bytes."""

    def __init__(self, batch: Batch) -> None:
        rows, skip = batch.head_rows()
        self.rows, self.skip = rows, skip
        self.flat = rows.reshape(-1)
        self.base = np.arange(len(rows), dtype=np.int64) * rows.shape[1] + skip

    def byte(self, col: Col) -> I64:
        if isinstance(col, int):
            return self.rows[:, self.skip + col].astype(np.int64)
        picked: npt.NDArray[np.uint8] = self.flat[self.base + col]
        return picked.astype(np.int64)

    def u16(self, col: Col) -> I64:
        if isinstance(col, int):
            return self._block(col, 2, ">u2")
        return (self.byte(col) << 8) | self.byte(col + 1)

    def u32(self, col: Col) -> I64:
        if isinstance(col, int):
            return self._block(col, 4, ">u4")
        return (self.u16(col) << 16) | self.u16(col + 2)

    def _block(self, col: int, size: int, dtype: str) -> I64:
        """A strided view of the field in every row (no copy of the column), widened."""
        rows = self.rows
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        field = np.ndarray((len(rows),), dtype=dtype, buffer=rows, offset=self.skip + col,
                           strides=(rows.strides[0],))  # fmt: skip
        values: I64 = field.astype(np.int64)
        return values


def _same(values: I64) -> Col:
    """One column for all frames when they agree (a strided view instead of a gather)."""
    if len(values) and bool((values == values[0]).all()):
        return int(values[0])
    return values


def decode_batch(batch: Batch) -> Fields:
    """Every frame of the batch: compiled (`decode_compiled`) unless switched off or not built."""
    return decode_compiled(batch) if compiled() else decode_numpy(batch)


def decode_numpy(batch: Batch) -> Fields:
    count = len(batch.start)
    head = _Heads(batch)
    caplen = batch.caplen
    kind = np.zeros(count, dtype=np.int8)
    ethertype, net = _link(head, caplen, batch.linktype, kind)
    f = Fields(kind, np.zeros(count, np.int64), np.zeros(count, np.uint64),
               np.zeros(count, np.uint64), np.zeros(count, np.int64), np.zeros(count, np.int64),
               np.zeros(count, np.int64), np.zeros(count, np.int64))  # fmt: skip
    end = np.zeros(count, dtype=np.int64)
    tpos = np.zeros(count, dtype=np.int64)
    netcol = _same(net)
    _ipv4(head, caplen, ethertype == 0x0800, net, netcol, f, end, tpos)
    _ipv6(head, caplen, ethertype == 0x86DD, net, netcol, f, end, tpos)
    _transport(head, f, end, tpos)
    f.addr += batch.start
    f.payload += batch.start
    return f


def decode_compiled(batch: Batch) -> Fields:
    """`hotloops.decode`: every frame where it lies in the chunk. It also walks what this module
    leaves to decode.py (VLAN tag stacks, IPv6 extension headers): only GTP-U is SLOW."""
    from callgate.detect import hotloops

    count = len(batch.start)
    f = Fields(np.empty(count, np.int8), np.empty(count, np.int64), np.empty(count, np.uint64),
               np.empty(count, np.uint64), np.empty(count, np.int64), np.empty(count, np.int64),
               np.empty(count, np.int64), np.empty(count, np.int64))  # fmt: skip
    hotloops.decode(batch.data, _c64(batch.start), _c64(batch.caplen), _c64(batch.linktype),
                   f.kind, f.proto, f.src, f.dst, f.addr, f.alen, f.payload, f.plen)  # fmt: skip
    return f


def _c64(values: I64) -> I64:
    """A C-contiguous int64 array (what the compiled functions take)."""
    return np.ascontiguousarray(values, dtype=np.int64)


def _link(head: _Heads, caplen: I64, linktype: I64, kind: npt.NDArray[np.int8]) -> tuple[I64, I64]:
    """(ethertype, offset of the network header) per frame; ethertype 0 = not IP (SKIP), and
    frames with more than one VLAN tag are SLOW (decode.py's `_link`)."""
    count = len(caplen)
    ethertype = np.zeros(count, dtype=np.int64)
    net = np.zeros(count, dtype=np.int64)
    one = len(linktype) and bool((linktype == linktype[0]).all())
    for value in [int(linktype[0])] if one else np.unique(linktype).tolist():
        sel = linktype == value
        if value == 1:
            et = np.where(caplen >= 14, head.u16(12), 0)
            tagged = (et == 0x8100) | (et == 0x88A8)
            if tagged.any():
                inner = head.u16(16)
                deeper = (inner == 0x8100) | (inner == 0x88A8)
                one_tag = tagged & (caplen >= 18) & ~deeper
                kind[sel & tagged & ~one_tag] = SLOW
                et = np.where(one_tag, inner, np.where(tagged, 0, et))
                _put(net, sel, np.where(one_tag, 18, 14))
            else:
                _put(net, sel, 14)
            _put(ethertype, sel, et)
        elif value in (12, 14, 101):
            ethertype[sel] = np.where(caplen >= 1, _ip_version(head, 0), 0)[sel]
        elif value in (228, 229):
            ethertype[sel] = 0x0800 if value == 228 else 0x86DD
        elif value == 113:
            ethertype[sel] = np.where(caplen >= 16, head.u16(14), 0)[sel]
            net[sel] = 16
        elif value == 276:
            ethertype[sel] = np.where(caplen >= 20, head.u16(0), 0)[sel]
            net[sel] = 20
        elif value in (0, 108):
            ethertype[sel] = np.where(caplen >= 5, _ip_version(head, 4), 0)[sel]
            net[sel] = 4
    slow = kind == SLOW
    if slow.any():
        ethertype[slow] = 0
    return ethertype, net


def _ip_version(head: _Heads, col: int) -> I64:
    version = head.byte(col) >> 4
    return np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0))


def _ipv4(
    head: _Heads, caplen: I64, sel: Bools, net: I64, col: Col, f: Fields, end: I64, tpos: I64
) -> None:
    """RFC 791: header length from IHL, payload bounded by Total Length; first fragments only."""
    sel = sel & (caplen >= net + 20)
    if not sel.any():
        return
    ihl = (head.byte(col) & 0x0F) * 4
    total = head.u16(col + 2)
    frag = head.u16(col + 6) & 0x1FFF
    sel &= (ihl >= 20) & (total >= ihl) & (frag == 0)
    _put(f.kind, sel, FAST)
    _put(f.proto, sel, head.byte(col + 9))
    _put(end, sel, np.minimum(caplen, net + total))
    _put(tpos, sel, net + ihl)
    _put(f.addr, sel, net + 12)
    _put(f.alen, sel, 4)
    _put(f.src, sel, (head.u32(col + 12) << 16).astype(np.uint64))
    _put(f.dst, sel, (head.u32(col + 16) << 16).astype(np.uint64))


def _put(
    target: npt.NDArray[np.generic], sel: Bools, values: npt.NDArray[np.generic] | int
) -> None:
    """target[sel] = values[sel] (or the one value), without the masking when every frame is
    selected (the usual case: one link type, all IPv4)."""
    if sel.all():
        target[:] = values
    elif isinstance(values, int):
        target[sel] = values
    else:
        target[sel] = values[sel]


_IPV6_EXT = np.array([0, 43, 60, 44])


def _ipv6(
    head: _Heads, caplen: I64, sel: Bools, net: I64, col: Col, f: Fields, end: I64, tpos: I64
) -> None:
    """RFC 8200 without extension headers (those are SLOW: decode.py walks them)."""
    sel = sel & (caplen >= net + 40)
    if not sel.any():
        return
    nxt = head.byte(col + 6)
    ext = sel & np.isin(nxt, _IPV6_EXT)
    f.kind[ext] = SLOW
    sel &= ~ext
    f.kind[sel] = FAST
    f.proto[sel] = nxt[sel]
    plen = head.u16(col + 4)
    end[sel] = np.where(plen > 0, np.minimum(caplen, net + 40 + plen), caplen)[sel]
    tpos[sel] = (net + 40)[sel]
    f.addr[sel] = net[sel] + 8
    f.alen[sel] = 16
    idx = np.flatnonzero(sel)
    cols = head.skip + net[idx, None] + np.arange(8, 40)
    words = np.take_along_axis(head.rows[idx], cols, axis=1).copy().view(">u8").astype(np.uint64)
    f.src[idx] = _fold(words[:, 0], words[:, 1])
    f.dst[idx] = _fold(words[:, 2], words[:, 3])


def _fold(hi: U64, lo: U64) -> U64:
    """A 63-bit hash of a 128-bit address (bits 16-62 used; the port fills bits 0-15)."""
    h = hi * np.uint64(0x9E3779B97F4A7C15) ^ lo * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    return (h << np.uint64(16)) | V6


def _transport(head: _Heads, f: Fields, end: I64, tpos: I64) -> None:
    """UDP (8-byte header) or TCP (data offset), else SKIP; GTP-U (UDP 2152) is SLOW."""
    fast = f.kind == FAST
    udp = fast & (f.proto == UDP) & (tpos + 8 <= end)
    tcp = fast & (f.proto == TCP) & (tpos + 20 <= end)
    f.kind[fast & ~udp & ~tcp] = SKIP
    ok = udp | tcp
    pos = _same(np.where(ok, tpos, tpos[ok][0] if ok.any() else 0))
    sport = head.u16(pos)
    dport = head.u16(pos + 2)
    gtp = udp & ((sport == GTP_U_PORT) | (dport == GTP_U_PORT))
    f.kind[gtp] = SLOW
    ok &= ~gtp
    start = pos + 8
    if tcp.any():
        data_off = (head.byte(pos + 12) >> 4) * 4
        start = np.where(tcp, pos + data_off, start)
    f.payload[:] = np.where(ok, start, 0)
    f.plen[:] = np.where(ok, np.maximum(end - start, 0), 0)
    f.src |= np.where(ok, sport, 0).astype(np.uint64)
    f.dst |= np.where(ok, dport, 0).astype(np.uint64)
