# The compiled fast path (src/callgate/detect/hotloops.c). Arrays are one-dimensional, C-contiguous,
# native-order buffers of the item type each takes (int64, float64, int8), checked: a TypeError
# names the function and argument that is not.
from array import array
from typing import Any

import numpy.typing as npt

# C-contiguous buffers: the chunk (a memoryview of the read buffer) and numpy arrays
Buffer = bytes | bytearray | memoryview[Any] | array[Any] | npt.NDArray[Any]

def pcap_walk(
    chunk: Buffer, big_endian: bool, unit: float, starts: Buffer, caplens: Buffer, stamps: Buffer
) -> tuple[int, int, float, float]: ...
def pcapng_walk(
    chunk: Buffer,
    big_endian: bool,
    links: Buffer,
    units: Buffer,
    starts: Buffer,
    caplens: Buffer,
    stamps: Buffer,
    linktypes: Buffer,
) -> tuple[int, int, bool, float, float]: ...
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
    kind: Buffer,
    src: Buffer,
    dst: Buffer,
    proto: Buffer,
    addr: Buffer,
    alen: Buffer,
    first: Buffer,
    inv: Buffer,
) -> int: ...
def select(
    inv: Buffer,
    plen: Buffer,
    side: Buffer,
    owner: Buffer,
    room: Buffer,
    out_owner: Buffer,
    out_packet: Buffer,
    out_seen0: Buffer,
    out_seen1: Buffer,
) -> int: ...
def tally(
    inv: Buffer, caplen: Buffer, stamps: Buffer, counts: Buffer, octets: Buffer, last: Buffer
) -> None: ...
def distinct(data: Buffer) -> int: ...
