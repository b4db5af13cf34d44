"""The hot loop for classic pcap files: records are walked in the read buffer, and a packet of a
flow already decided (Ethernet, IPv4 without options, UDP/TCP) only updates that flow's counters,
with no frame copy and no decoding beyond the addresses. Everything else goes through
`Detector.packet`. This is where the packets/s figure in bench/detect_vs_ndpi.py comes from."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from callgate.detect.decode import TCP, UDP
from callgate.detect.pcapfile import CHUNK, MAX_RECORD, PCAP_MAGICS, CaptureError, PcapReader

if TYPE_CHECKING:
    from callgate.detect.engine import Detector

_ETHERNET = 1
_IPV4_NO_OPTIONS = b"\x08\x00\x45"  # EtherType IPv4, version 4, IHL 5
_FIRST_FRAGMENT = {b"\x00\x00", b"\x40\x00"}  # flags/offset: none, or DF; offset 0


def feed_classic_pcap(detector: Detector, reader: PcapReader) -> bool:
    """Feed `reader`'s file when it is a classic pcap; False (nothing read) for other formats."""
    try:
        handle = reader.path.open("rb")
    except OSError as exc:
        raise CaptureError(f"{reader.path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        header = handle.read(24)
        if len(header) < 24 or header[:4] not in PCAP_MAGICS:
            return False
        order, unit = PCAP_MAGICS[header[:4]]
        linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x0FFFFFFF
        if reader.progress is not None:
            reader.progress(24)
        _walk(detector, reader, handle.read, order, unit, linktype)
    return True


def _walk(
    detector: Detector, reader: PcapReader, read: object, order: str, unit: float, linktype: int
) -> None:
    assert callable(read)
    unpack = struct.Struct(order + "IIII").unpack_from
    udp, tcp = detector.tables[UDP], detector.tables[TCP]
    slow = detector.packet
    ethernet = linktype == _ETHERNET
    progress = reader.progress
    count = fast = 0
    buf = b""
    pos = 0
    while True:
        more = read(CHUNK)
        if not more:
            break
        if progress is not None:
            progress(len(more))
        buf = buf[pos:] + more
        pos = 0
        end = len(buf)
        while pos + 16 <= end:
            sec, frac, caplen, _ = unpack(buf, pos)
            start = pos + 16
            stop = start + caplen
            if stop > end:
                if caplen > MAX_RECORD:
                    raise CaptureError(
                        f"{reader.path}: corrupt record (length {caplen}) at packet {count + 1}"
                    )
                break
            pos = stop
            count += 1
            if (
                ethernet
                and caplen >= 38
                and buf[start + 12 : start + 15] == _IPV4_NO_OPTIONS
                and buf[start + 20 : start + 22] in _FIRST_FRAGMENT
            ):
                table = udp if buf[start + 23] == UDP else tcp
                entry = table.get(buf[start + 26 : start + 38])
                if entry is not None:
                    flow = entry[0]
                    if flow.done:
                        side = entry[1]
                        flow.pkts[side] += 1
                        flow.octets[side] += caplen
                        flow.last = sec + frac * unit
                        fast += 1
                        continue
            slow(sec + frac * unit, linktype, buf[start:stop])
    detector.packets += fast
    reader.packets = count
    if pos < len(buf):
        reader.note_truncated("packet record")
