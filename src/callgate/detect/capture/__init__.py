"""Reading capture files (pcap and pcapng), the detector's only input from disk.

Public: `read_batches(PcapReader(path))` yields `Batch`es — one 8 MiB chunk of the file with numpy
arrays describing each complete record — for the detector's fast path; iterating a `PcapReader`
yields (timestamp, link type, frame) one packet at a time. Both raise `CaptureError` and put the
truncated-tail warning in `PcapReader.warnings`.

Modules, lowest first: `packets` (formats, errors, the per-packet reader) → `batch` (the Batch,
the reused read buffer, the parallel lane walk) → `pcap`, `pcapng` (each format's batches) →
`read` (format dispatch).
"""

from callgate.detect.capture.batch import HEAD, Batch
from callgate.detect.capture.packets import CaptureError, Packet, PcapReader, Progress
from callgate.detect.capture.read import read_batches

__all__ = ["HEAD", "Batch", "CaptureError", "Packet", "PcapReader", "Progress", "read_batches"]
