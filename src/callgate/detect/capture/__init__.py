"""Reading capture files (pcap and pcapng), the detector's only input from disk.

Public: iterating a `PcapReader` yields (timestamp, link type, frame) one packet at a time;
`read.read_batches(PcapReader(path))` yields `batch.Batch`es — one 8 MiB chunk of the file with
numpy arrays describing each complete record — for the detector's fast path on large files. Both
raise `CaptureError` and put the truncated-tail warning in `PcapReader.warnings`. Importing this
package does not import numpy (the batch modules do): a small capture is read without it.

Modules, lowest first: `packets` (formats, errors, the per-packet reader) → `batch` (the Batch,
the reused read buffer, the parallel lane walk) → `pcap`, `pcapng` (each format's batches) →
`read` (format dispatch).
"""

from callgate.detect.capture.packets import CaptureError, Packet, PcapReader, Progress

__all__ = ["CaptureError", "Packet", "PcapReader", "Progress"]
