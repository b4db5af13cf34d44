# The compiled fast path (src/callgate/detect/hotloops.c); arrays are numpy arrays passed as buffers.
from typing import Any

import numpy.typing as npt

# C-contiguous buffers: the chunk (a memoryview of the read buffer) and numpy arrays
Buffer = bytes | bytearray | memoryview | npt.NDArray[Any]

def pcap_walk(
    chunk: Buffer, big_endian: bool, unit: float, starts: Buffer, caplens: Buffer, stamps: Buffer
) -> tuple[int, int]: ...
def pcapng_walk(
    chunk: Buffer,
    big_endian: bool,
    links: Buffer,
    units: Buffer,
    starts: Buffer,
    caplens: Buffer,
    stamps: Buffer,
    linktypes: Buffer,
) -> tuple[int, int]: ...
def decode(
    data: Buffer,
    starts: Buffer,
    caplens: Buffer,
    linktypes: Buffer,
    kind: Buffer,
    proto: Buffer,
    src: Buffer,
    dst: Buffer,
    addr: Buffer,
    alen: Buffer,
    payload: Buffer,
    plen: Buffer,
) -> None: ...
def group(
    data: Buffer,
    src: Buffer,
    dst: Buffer,
    proto: Buffer,
    addr: Buffer,
    alen: Buffer,
    first: Buffer,
    inv: Buffer,
) -> int: ...
