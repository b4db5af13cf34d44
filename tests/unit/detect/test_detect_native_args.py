"""The compiled loops check every array they are given before reading or writing it: item size,
format, byte order, alignment, dimensions, contiguity and writability, with a TypeError naming
the function and the argument — never a read of int32 items as int64, nor a write into bytes."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callgate.detect import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled module is not built")

# Ethernet, IPv4 (10.0.0.1 → 10.0.0.2), UDP 40000 → 3478, 4 bytes of payload
FRAME = (bytes(12) + b"\x08\x00" + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 32, 0, 0, 64, 17, 0,
         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + struct.pack("!HHHH", 40000, 3478, 12, 0)
         + b"abcd")  # fmt: skip


def q(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _unaligned() -> memoryview:
    """8 int64 items that start one byte into their buffer."""
    return memoryview(bytearray(65))[1:].cast("q")


def _decode(**bad: object) -> Callable[[], object]:
    """`hotloops.decode` of one frame with well-formed arrays, but `bad` replacing some."""
    from callgate.detect import hotloops

    names = ("starts", "caplens", "linktypes", "kind", "proto", "src", "dst", "addr", "alen",
             "payload", "plen")  # fmt: skip
    good: dict[str, object] = {name: q(0) for name in names}
    good.update(caplens=q(len(FRAME)), linktypes=q(1), kind=bytearray(1))
    good.update(bad)
    return lambda: hotloops.decode(FRAME, *(good[name] for name in names))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"starts": np.zeros(1, dtype=np.int32)}, r"decode: starts must be an array of 8-byte "
         r"integers .* got format 'i', item size 4"),
        ({"starts": np.zeros(1, dtype=np.float64)}, r"starts .* got format 'd', item size 8"),
        ({"caplens": np.array([34], dtype=">i8")}, r"caplens .*native byte order.* got format '>q'"),
        ({"linktypes": np.zeros((1, 1), dtype=np.int64)}, r"linktypes .* 2 dimension"),
        ({"starts": np.zeros(4, dtype=np.int64)[::2]}, r"starts must be .*C-contiguous"),
        ({"starts": _unaligned()}, r"starts .* unaligned"),
        ({"starts": [0]}, r"starts must be .*; got list"),
        ({"proto": bytes(8)}, r"proto must be .* writable; got bytes"),
        ({"proto": q(0).data.toreadonly()}, r"proto must be .* writable"),
        ({"kind": q(0)}, r"kind must be an array of 1-byte integers .* item size 8"),
        ({"src": array("d", [0.0])}, r"src must be an array of 8-byte integers .* format 'd'"),
    ],
)  # fmt: skip
def test_decode_refuses_arrays_of_the_wrong_shape(bad: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        _decode(**bad)()


def test_decode_takes_the_arrays_numpy_array_and_memoryview_give() -> None:
    kind, proto, plen = np.zeros(1, dtype=np.uint8), array("q", [0]), bytearray(8)
    src = np.zeros(1, dtype=np.uint64)
    _decode(kind=kind, proto=proto, src=src, plen=memoryview(plen).cast("q"))()
    assert (kind[0], proto[0], int(src[0]) & 0xFFFF) == (1, 17, 40000)  # FAST, UDP, port
    assert int.from_bytes(plen, "little") == 4


def test_every_function_names_what_it_refuses() -> None:
    from callgate.detect import hotloops

    stamps, ints = np.zeros(4), np.zeros(4, dtype=np.int64)
    with pytest.raises(TypeError, match=r"pcap_walk: stamps must be an array of float64"):
        hotloops.pcap_walk(bytes(32), False, 1e-6, ints, ints, ints)
    with pytest.raises(TypeError, match=r"pcap_walk: chunk must be a bytes-like object"):
        hotloops.pcap_walk("not bytes", False, 1e-6, ints, ints, stamps)
    with pytest.raises(TypeError, match=r"pcapng_walk: units must be an array of float64"):
        hotloops.pcapng_walk(bytes(32), False, q(1), q(1), ints, ints, stamps, ints)
    with pytest.raises(TypeError, match=r"group: first must be .* writable"):
        hotloops.group(bytes(8), b"\0", q(0), q(0), q(0), q(0), q(0), bytes(8), q(0))
    with pytest.raises(TypeError, match=r"select: room must be an array of 8-byte integers"):
        hotloops.select(q(0), q(1), q(0), q(0), np.ones(1), q(0), q(0), q(0), q(0))
    with pytest.raises(TypeError, match=r"tally: last must be an array of float64"):
        hotloops.tally(q(0), q(60), np.ones(1), q(0), q(0), q(0))
    with pytest.raises(TypeError, match=r"tally"):  # a missing argument: Python's own message
        hotloops.tally(q(0), q(60))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_distinct_counts_byte_values_as_a_set_does(data: bytes) -> None:
    from callgate.detect import hotloops

    assert hotloops.distinct(data) == len(set(data))
    assert hotloops.distinct(memoryview(bytearray(data))) == len(set(data))


def test_distinct_refuses_what_is_not_bytes() -> None:
    from callgate.detect import hotloops

    with pytest.raises(TypeError, match=r"distinct: data must be a bytes-like object.*got str"):
        hotloops.distinct("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"distinct: data must be .*C-contiguous"):
        hotloops.distinct(np.zeros(8, dtype=np.uint8)[::2])
