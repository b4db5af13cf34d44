"""The one way to read a capture file in batches: `read_batches` picks the format from the file's
first four bytes (classic pcap in either byte order and time unit, or pcapng) and yields `Batch`es."""

from __future__ import annotations

from collections.abc import Iterator

from callgate.detect.capture.batch import Batch
from callgate.detect.capture.packets import PCAP_MAGICS, PCAPNG_SHB, CaptureError, PcapReader
from callgate.detect.capture.pcap import pcap_batches
from callgate.detect.capture.pcapng import pcapng_batches


def read_batches(reader: PcapReader) -> Iterator[Batch]:
    """The batches of `reader`'s file; `reader.packets` counts the records, `reader.warnings`
    gets the truncated-tail warning; CaptureError when the file cannot be read."""
    try:
        handle = reader.path.open("rb")
    except OSError as exc:
        raise CaptureError(f"{reader.path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        head = handle.read(4)
        if len(head) < 4:
            raise CaptureError(f"{reader.path}: empty or too short to be a capture")
        if head in PCAP_MAGICS:
            yield from pcap_batches(reader, handle, head)
        elif head == PCAPNG_SHB:
            yield from pcapng_batches(reader, handle, head)
        else:
            raise CaptureError(
                f"{reader.path}: not a pcap or pcapng file (starts with 0x{head.hex()})"
            )
