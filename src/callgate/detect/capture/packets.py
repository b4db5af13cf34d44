"""Streaming pcap / pcapng reader: yields (timestamp, link type, frame bytes), nothing decoded.

Formats: classic libpcap (both byte orders, micro- and nanosecond magic) and pcapng (Section Header,
Interface Description with `if_tsresol`, Enhanced, Simple and obsolete Packet Blocks; other blocks
skipped). The file is read in large chunks, never whole; a truncated trailing record ends the
stream with a warning instead of an error (`PcapReader.warnings`), so what was read is reported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 4 * 1024 * 1024
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
SECTION_HEADER = 0x0A0D0D0A  # its block type, the same read in either byte order
_BYTE_ORDERS = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}  # pcapng §4.1
MAX_RECORD = 256 * 1024 * 1024
# The shortest well-formed pcapng blocks (type, 8-byte header + fixed fields + 4-byte trailer):
# Interface Description 20, Enhanced Packet 32, obsolete Packet 32, Simple Packet 16.
NG_MIN_LENGTH = {1: 20, 6: 32, 2: 32, 3: 16}

Packet = tuple[float, int, bytes]
Progress = Callable[[int], None]


class CaptureError(ValueError):
    """The file is not a capture this reader understands, or is corrupt before its end."""


class PcapReader:
    """Iterate over the packets of one capture file; `warnings` lists non-fatal problems."""

    def __init__(self, path: Path, progress: Progress | None = None) -> None:
        self.path = path
        self.progress = progress
        self.warnings: list[str] = []
        self.packets = 0

    def __iter__(self) -> Iterator[Packet]:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        with handle:
            head = handle.read(4)
            if len(head) < 4:
                raise CaptureError(f"{self.path}: empty or too short to be a capture")
            if head in PCAP_MAGICS:
                yield from self._pcap(handle, head)
            elif head == PCAPNG_SHB:
                yield from self._pcapng(handle, head)
            else:
                raise CaptureError(
                    f"{self.path}: not a pcap or pcapng file (starts with 0x{head.hex()})"
                )

    # ---- chunked buffer shared by both formats ----
    def _chunks(self, handle: BinaryIO) -> Iterator[bytes]:
        """The file's remaining bytes, one large chunk at a time, reporting progress."""
        while True:
            more = handle.read(CHUNK)
            if not more:
                return
            if self.progress is not None:
                self.progress(len(more))
            yield more

    def note_truncated(self, what: str) -> None:
        self.warnings.append(
            f"{self.path}: truncated {what} at the end of the file; "
            f"reported the {self.packets} packets before it"
        )

    def _pcap(self, handle: BinaryIO, magic: bytes) -> Iterator[Packet]:
        order, unit = PCAP_MAGICS[magic]
        header = magic + handle.read(20)
        if len(header) < 24:
            raise CaptureError(f"{self.path}: truncated pcap file header")
        linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
        rec = struct.Struct(order + "IIII")
        buf = b""
        pos = 0
        for more in self._chunks(handle):
            buf = buf[pos:] + more
            pos = 0
            end = len(buf)
            unpack = rec.unpack_from
            while pos + 16 <= end:
                sec, frac, caplen, _ = unpack(buf, pos)
                if caplen > MAX_RECORD:
                    raise CaptureError(
                        f"{self.path}: corrupt record (length {caplen}) at packet "
                        f"{self.packets + 1}"
                    )
                stop = pos + 16 + caplen
                if stop > end:
                    break
                self.packets += 1
                yield sec + frac * unit, linktype, buf[pos + 16 : stop]
                pos = stop
        if pos < len(buf):
            self.note_truncated("packet record")

    def _pcapng(self, handle: BinaryIO, first: bytes) -> Iterator[Packet]:
        order = "<"
        ifaces: list[tuple[int, float]] = []
        buf = first
        pos = 0
        if self.progress is not None:
            self.progress(len(first))
        for more in self._chunks(handle):
            buf = buf[pos:] + more
            pos = 0
            end = len(buf)
            while pos + 12 <= end:
                order, btype, blen = self.ng_header(buf, pos, order)
                if btype == SECTION_HEADER:
                    ifaces = []
                if pos + blen > end:
                    break
                packet = self.ng_block(buf, pos, btype, blen, order, ifaces)
                pos += blen
                if packet is not None:
                    self.packets += 1
                    yield packet
        if pos < len(buf):
            self.note_truncated("pcapng block")

    def ng_header(self, buf: bytes | memoryview, pos: int, order: str) -> tuple[str, int, int]:
        """(byte order, block type, block length) of the pcapng block whose first 12 bytes are
        at `pos`: a Section Header sets the byte order from its magic. A bad magic or a length
        that is not a whole block (under 12, not a multiple of 4, over MAX_RECORD) is a
        CaptureError. (Every pcapng reader of detect/ reads block headers here.)"""
        if buf[pos : pos + 4] == PCAPNG_SHB:
            found = _BYTE_ORDERS.get(bytes(buf[pos + 8 : pos + 12]))
            if found is None:
                raise CaptureError(f"{self.path}: bad pcapng byte-order magic")
            order = found
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_RECORD:
            raise CaptureError(
                f"{self.path}: corrupt pcapng block (type {btype:#x}, length {blen})"
            )
        return order, btype, blen

    def ng_block(
        self, buf: bytes, pos: int, btype: int, blen: int, order: str,
        ifaces: list[tuple[int, float]],
    ) -> Packet | None:  # fmt: skip
        """One complete pcapng block at `pos` (not a Section Header: the caller reads those):
        an Interface Description is added to `ifaces`; a packet block gives its packet."""
        body = pos + 8
        if blen < NG_MIN_LENGTH.get(btype, 12):
            raise CaptureError(
                f"{self.path}: corrupt pcapng block (type {btype:#x}, length {blen})"
            )
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack_from(order + "H", buf, body)[0]
            ifaces.append((linktype, if_tsresol(buf, body + 8, pos + blen - 4, order)))
            return None
        if btype in (6, 2):  # Enhanced / obsolete Packet Block
            if btype == 6:
                iface, hi, lo, caplen = struct.unpack_from(order + "IIII", buf, body)
            else:
                iface, _, hi, lo, caplen = struct.unpack_from(order + "HHIII", buf, body)
            start = body + 20
            linktype, unit = self._iface(ifaces, iface)
            caplen = min(caplen, blen - 32)
            return ((hi << 32) | lo) * unit, linktype, buf[start : start + caplen]
        if btype == 3:  # Simple Packet Block: no timestamp, interface 0
            linktype, _ = self._iface(ifaces, 0)
            return 0.0, linktype, buf[body + 4 : pos + blen - 4]
        return None

    def _iface(self, ifaces: list[tuple[int, float]], index: int) -> tuple[int, float]:
        if index >= len(ifaces):
            raise CaptureError(f"{self.path}: packet names interface {index}, not described")
        return ifaces[index]


def if_tsresol(buf: bytes, pos: int, end: int, order: str) -> float:
    """The if_tsresol option (pcapng §4.2, code 9): 10^-n or 2^-n seconds; default 1 µs."""
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = buf[pos + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0**-value
        pos += 4 + length + (-length % 4)
    return 1e-6
