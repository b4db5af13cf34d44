"""The compiled fast path (src/callgate/detect/hotloops.c) against the code it replaces, on hostile
input: mangled and truncated frames decode exactly as decode.py (and numpy's batchdecode) decode
them, packet for packet; mangled capture files give the same packets, errors and warnings as the
packet-by-packet reader; the shared nDPI captures give the same report on every path.

Without the compiled module these tests skip; under CI=true they fail (CI must prove it builds:
scripts/test installs the compiler)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callgate.detect import native
from callgate.detect.batchdecode import FAST, SKIP, SLOW, decode_compiled, decode_numpy
from callgate.detect.batchfeed import endpoint_code
from callgate.detect.capture import CaptureError, PcapReader
from callgate.detect.capture import chunks as capture_chunks
from callgate.detect.capture.batch import HEAD_SLACK, Batch
from callgate.detect.capture.read import read_batches
from callgate.detect.decode import decode
from callgate.detect.engine import Detector
from callgate.detect.report import Report
from tests.integration.detect_support import pcaps_dir
from tests.unit.detect.detect_packets import pcap_bytes, pcapng_bytes


@pytest.fixture(autouse=True)
def _compiled_module() -> None:
    if native.built():
        return
    reason = "callgate.detect.hotloops is not built (no C compiler when callgate was installed)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must test it (scripts/test installs gcc)")
    pytest.skip(reason)


@contextmanager
def _path(compiled: bool) -> Iterator[None]:
    """The compiled or the numpy batch path (CALLGATE_DETECT_COMPILED), inside a hypothesis test
    (where the function-scoped monkeypatch fixture cannot be used)."""
    before = os.environ.get(native.ENV)
    os.environ[native.ENV] = "1" if compiled else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[native.ENV]
        else:
            os.environ[native.ENV] = before


# ---- frames: every shape decode.py knows, then mangled ----

_LINKS = {  # link type → header before the IP packet (ethertype where the link carries one)
    1: lambda et, tags: b"\x02" * 6 + b"\x04" * 6 + tags + et,
    113: lambda et, tags: bytes(14) + et,
    276: lambda et, tags: et + bytes(18),
    101: lambda et, tags: b"",
    12: lambda et, tags: b"",
    14: lambda et, tags: b"",
    228: lambda et, tags: b"",
    229: lambda et, tags: b"",
    0: lambda et, tags: struct.pack("<I", 2),
    108: lambda et, tags: struct.pack(">I", 2),
    147: lambda et, tags: b"",  # a link type the detector does not decode
}


@st.composite
def transport(draw: st.DrawFn, gtp: bool = True) -> tuple[int, bytes]:
    payload = draw(st.binary(max_size=24))
    plain = [(40000, 3478), (53, 1)]
    ports = draw(st.sampled_from([*plain, (2152, 2152), (5000, 2152)] if gtp else plain))
    kind = draw(st.sampled_from([17, 6, 1, 132]))
    if kind == 6:
        offset = draw(st.sampled_from([5, 5, 8, 0, 15]))
        head = struct.pack("!HHIIBBHHH", *ports, 1, 1, offset << 4, 0x18, 0, 0, 0)
        return 6, head + bytes(max(0, offset * 4 - 20)) + payload
    if kind == 17 and ports[0] == 2152 and draw(st.booleans()):  # GTP-U with an inner packet
        inner = _ipv4(17, struct.pack("!HHHH", 1000, 2000, 8, 0) + payload, 5)
        payload = struct.pack("!BBHI", 0x30, 0xFF, len(inner), 7) + inner
    return kind, struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload


def _ipv4(proto: int, body: bytes, ihl: int, frag: int = 0) -> bytes:
    options = bytes(max(0, ihl * 4 - 20))
    total = 20 + len(options) + len(body)
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([198, 51, 100, 7]))  # fmt: skip
    return head + options + body


@st.composite
def ip_packet(draw: st.DrawFn, gtp: bool = True) -> tuple[bytes, bytes]:
    """(ethertype, an IPv4 or IPv6 packet; GTP-U among them if `gtp`)."""
    proto, body = draw(transport(gtp))
    if draw(st.booleans()):
        ihl = draw(st.sampled_from([5, 5, 6, 15, 4, 0]))
        frag = draw(st.sampled_from([0, 0, 0x4000, 0x2000, 0x0010]))
        return b"\x08\x00", _ipv4(proto, body, ihl, frag)
    chain = draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=4))
    nxt, exts = proto, b""
    for ext in reversed(chain):
        if ext == 44:
            offset = draw(st.sampled_from([0, 0, 8]))
            exts = struct.pack("!BBHI", nxt, 0, offset, 1) + exts
        else:
            size = draw(st.integers(0, 2))
            exts = bytes([nxt, size]) + bytes(6 + size * 8) + exts
        nxt = ext
    addrs = draw(st.sampled_from([bytes(range(16)) + bytes(range(16, 32)), bytes(32)]))
    head = struct.pack("!IHBB", 6 << 28, len(exts) + len(body), nxt, 64) + addrs
    return b"\x86\xdd", head + exts + body


@st.composite
def frame(draw: st.DrawFn) -> tuple[int, bytes]:
    """(link type, frame): a well-formed frame, then cut short and bytes overwritten."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(sorted(_LINKS))), draw(st.binary(max_size=120))
    linktype = draw(st.sampled_from(sorted(_LINKS)))
    ethertype, packet = draw(ip_packet())
    tags = b"".join(draw(st.lists(st.sampled_from([b"\x81\x00\x00\x05", b"\x88\xa8\x00\x07"]),
                                  max_size=3)))  # fmt: skip
    data = bytearray(_LINKS[linktype](ethertype, tags) + packet)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)),
                                    max_size=4)):  # fmt: skip
        if pos < len(data):
            data[pos] = value
    cut = draw(st.integers(0, len(data)))
    return linktype, bytes(data[: cut if draw(st.booleans()) else len(data)])


@st.composite
def ethernet(draw: st.DrawFn) -> bytes:
    """An Ethernet frame carrying one of `ip_packet`'s packets (flows for the reports), seldom
    GTP-U (whose chunks the compiled pcap path hands to numpy)."""
    ethertype, packet = draw(ip_packet(gtp=draw(st.integers(0, 20)) == 0))
    return _LINKS[1](ethertype, b"") + packet


def _batch(frames: list[tuple[int, bytes]]) -> Batch:
    """One batch of these frames, packed back to back (the compiled decode reads them in place;
    numpy reads HEAD bytes from each: the buffer has HEAD_SLACK after the data, as read ones)."""
    starts, pos = [], 0
    for _, data in frames:
        starts.append(pos)
        pos += len(data)
    buf = bytearray(b"".join(data for _, data in frames) + bytes(HEAD_SLACK))
    return Batch(memoryview(buf)[:pos], None, 0, np.array(starts, dtype=np.int64),
                 np.array([len(d) for _, d in frames], dtype=np.int64), np.zeros(len(frames)),
                 np.array([lt for lt, _ in frames], dtype=np.int64))  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame(), min_size=1, max_size=16))
def test_compiled_decode_matches_python_and_numpy_frame_for_frame(
    frames: list[tuple[int, bytes]],
) -> None:
    batch = _batch(frames)
    c, n = decode_compiled(batch), decode_numpy(batch)
    data = batch.data
    for i, (linktype, raw) in enumerate(frames):
        expected = decode(linktype, raw)
        kind = int(c.kind[i])
        if kind == SKIP:
            assert expected is None, (i, raw.hex())
            assert n.kind[i] == SKIP or n.kind[i] == SLOW
            continue
        assert expected is not None, (i, raw.hex())
        if kind == SLOW:  # GTP-U: decode.py unwraps it
            assert n.kind[i] == SLOW
            continue
        proto, src, sport, dst, dport, payload = expected
        assert kind == FAST
        got = (int(c.proto[i]), int(c.src[i]), int(c.dst[i]),
               bytes(data[c.payload[i] : c.payload[i] + c.plen[i]]))  # fmt: skip
        assert got == (proto, endpoint_code(src, sport), endpoint_code(dst, dport), payload)
        addr, alen = int(c.addr[i]), int(c.alen[i])
        assert bytes(data[addr : addr + 2 * alen]) == src + dst
        if n.kind[i] == FAST:  # numpy's decode agrees wherever it decodes the frame itself
            assert (int(n.proto[i]), int(n.src[i]), int(n.dst[i]),
                    bytes(data[n.payload[i] : n.payload[i] + n.plen[i]])) == got  # fmt: skip
        else:
            assert n.kind[i] == SLOW


def test_compiled_decode_refuses_frames_outside_its_buffer() -> None:
    batch = _batch([(1, bytes(60))])
    batch.caplen[0] = 61  # one byte past the data (and HEAD_SLACK must not make it readable)
    batch.data = batch.data[:60]
    with pytest.raises(ValueError, match="outside"):
        decode_compiled(batch)


# ---- capture files: record walks on truncated and mangled files ----


def _packets(path: Path) -> tuple[list[tuple[float, int, bytes]], str, list[str]]:
    """What the packet-by-packet reader gives: packets, the error (if any), warnings."""
    reader = PcapReader(path)
    got: list[tuple[float, int, bytes]] = []
    try:
        got.extend(reader)
    except CaptureError as exc:
        return got, str(exc), reader.warnings
    return got, "", reader.warnings


def _batched(path: Path) -> tuple[list[tuple[float, int, bytes]], str, list[str]]:
    """What the numpy path's reader (`read_batches`) gives."""
    reader = PcapReader(path)
    got: list[tuple[float, int, bytes]] = []
    try:
        for b in read_batches(reader):
            for i in range(len(b.start)):
                start = int(b.start[i])
                frame = bytes(b.data[start : start + int(b.caplen[i])])
                got.append((float(b.ts[i]), int(b.linktype[i]), frame))
    except CaptureError as exc:
        return got, str(exc), reader.warnings
    return got, "", reader.warnings


def _outcome(path: Path, compiled: bool | None) -> tuple[str, object]:
    """("error", message) or ("report", flows, packets, skipped, warnings): compiled (True),
    numpy (False) or packet by packet (None)."""
    detector = Detector()
    detector.batch_from = 1 << 62 if compiled is None else 0
    with _path(bool(compiled)):
        try:
            detector.read(path)
        except CaptureError as exc:
            return "error", str(exc)
    report = detector.report()
    return "report", (report.flows, report.packets, report.skipped, report.warnings)


@st.composite
def capture_file(draw: st.DrawFn) -> bytes:
    """A pcap or pcapng file of small frames (random bytes, or UDP/TCP over IP), then cut and
    with bytes overwritten (record lengths among them: caplen past the file, past MAX_RECORD,
    zero)."""
    frames = [(1_700_000_000 + i * 0.25, draw(st.one_of(st.binary(max_size=90), ethernet())))
              for i in range(draw(st.integers(1, 60)))]  # fmt: skip
    if draw(st.booleans()):
        data = bytearray(pcap_bytes(frames, nano=draw(st.booleans()),
                                    big_endian=draw(st.booleans())))  # fmt: skip
        # a snaplen below the records' caplen (they are read as the packet reader reads them)
        data[16:20] = draw(st.sampled_from([b"\x00" * 4, b"\x3c\x00\x00\x00", bytes(data[16:20])]))
    else:
        data = bytearray(pcapng_bytes(frames))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(24, max(24, len(data) - 1)))
        if pos < len(data):
            data[pos] = draw(st.sampled_from([0, 0xFF, 0x10, 0x7F, draw(st.integers(0, 255))]))
    return bytes(data[: draw(st.integers(24, len(data)))])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capture_file(), st.sampled_from([1024, 4099]))
def test_compiled_walk_reads_mangled_files_as_the_packet_reader_does(
    data: bytes, chunk: int
) -> None:
    old = capture_chunks.CHUNK
    capture_chunks.CHUNK = chunk  # many chunk ends: records cut between chunks
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mangled.cap"
            path.write_bytes(data)
            packets, error, warnings = _packets(path)
            got, got_error, got_warnings = _batched(path)  # the numpy walk
            assert (got_error, got_warnings) == (error, warnings)
            if error:  # the command fails; a batch path stops at the chunk that holds it
                assert got == packets[: len(got)]
            else:
                assert got == packets
            # the compiled walk (pcapfeed.py: pcap_walk, pcapng_walk, then the whole pipeline):
            # the same report, error or warnings as packet by packet
            assert _outcome(path, compiled=True) == _outcome(path, compiled=None)
    finally:
        capture_chunks.CHUNK = old


# ---- the shared captures: the same report on every path ----


def _report(path: Path, batch: bool, idle: float | None = None) -> Report:
    detector = Detector()
    detector.batch_from = 0 if batch else 1 << 62
    if idle is not None:
        detector.flows.idle = idle
    detector.read(path)
    return detector.report()


def test_shared_captures_give_the_same_report_compiled_numpy_and_packet_by_packet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    captures = sorted(p for p in pcaps_dir().rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert len(captures) >= 15
    # idle 0 (flows never closed) too: a batch spanning more than the idle timeout is fed one
    # packet at a time, and most of these captures span more than its 180 s
    for path, idle in [(p, i) for p in captures for i in (None, 0.0)]:
        monkeypatch.setenv(native.ENV, "1")
        compiled = _report(path, batch=True, idle=idle)
        monkeypatch.setenv(native.ENV, "0")
        numpy_path = _report(path, batch=True, idle=idle)
        by_packet = _report(path, batch=False, idle=idle)
        assert compiled.flows == numpy_path.flows == by_packet.flows, path.name
        assert (compiled.packets, compiled.skipped) == (by_packet.packets, by_packet.skipped)
        assert compiled.flows, path.name  # each capture has flows: the comparison means something


def test_detect_takes_the_compiled_path_unless_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from callgate.detect import hotloops

    calls: list[str] = []
    for name in ("pcap_walk", "decode", "group", "select", "tally"):
        real = getattr(hotloops, name)
        monkeypatch.setattr(hotloops, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))  # fmt: skip
    path = pcaps_dir() / "ndpi" / "skype-conference-call.pcap"  # classic pcap, 1.5 s long
    monkeypatch.delenv(native.ENV, raising=False)
    compiled = _report(path, batch=True)
    assert sorted(set(calls)) == ["decode", "group", "pcap_walk", "select", "tally"]
    calls.clear()
    monkeypatch.setenv(native.ENV, "0")
    assert _report(path, batch=True).flows == compiled.flows
    assert calls == []


COMPILED_READ = """
import json, sys
from pathlib import Path
from callgate.detect.engine import Detector
detector = Detector()
detector.batch_from = 0
detector.read(Path(sys.argv[1]))
print(json.dumps(["numpy" in sys.modules, detector.report().packets]))
"""


@pytest.mark.parametrize(("name", "packets"), [("skype-conference-call.pcap", 200),
                                               ("stun_signal.pcapng", 460)])  # fmt: skip
def test_the_compiled_path_reads_large_captures_without_numpy(name: str, packets: int) -> None:
    """Importing numpy is a fifth of a 1 M packet file's CPU time: the compiled path does without
    it, for pcap and pcapng (and the numpy path, CALLGATE_DETECT_COMPILED=0, with it)."""
    capture = pcaps_dir() / "ndpi" / name
    for setting, numpy_loaded in (("1", False), ("0", True)):
        ran = subprocess.run([sys.executable, "-c", COMPILED_READ, str(capture)],
                             capture_output=True, text=True, timeout=60, check=True,
                             env={**os.environ, native.ENV: setting})  # fmt: skip
        assert json.loads(ran.stdout) == [numpy_loaded, packets]


def test_compiled_functions_refuse_indexes_outside_their_arrays() -> None:
    """Hostile (or buggy) inputs to the bookkeeping functions: a ValueError, never a read or a
    write past an array."""
    from array import array

    from callgate.detect import hotloops

    def q(*values: int) -> array[int]:
        return array("q", values)

    out = [q(0, 0) for _ in range(4)]
    with pytest.raises(ValueError, match="group that does not exist"):  # packet of group 5 of 1
        hotloops.select(q(5), q(10), q(0), q(0), q(4), *out)
    with pytest.raises(ValueError, match="bad flow or side"):  # group of flow 3 of 1
        hotloops.select(q(0), q(10), q(0), q(3), q(4), *out)
    with pytest.raises(ValueError, match="bad flow or side"):  # side 2
        hotloops.select(q(0), q(10), q(2), q(0), q(4), *out)
    with pytest.raises(ValueError, match="room for"):  # 3 payloads picked, room for 2
        hotloops.select(q(0, 0, 0), q(1, 1, 1), q(0), q(0), q(4), *out)
    with pytest.raises(ValueError, match="group that does not exist"):
        hotloops.tally(q(1), q(60), array("d", [1.0]), q(0), q(0), array("d", [0.0]))
    codes = array("Q", [1 << 63])
    with pytest.raises(ValueError, match="outside the buffer"):  # IPv6 address past the data
        hotloops.group(bytes(40), bytes([1]), codes, codes, q(17), q(20), q(16), q(0), q(0))
    assert hotloops.select(q(0, 0, -1), q(1, 0, 1), q(1), q(0), q(4), *out) == 1
    assert [list(o[:1]) for o in out] == [[0], [0], [0], [1]]  # flow 0, packet 0, seen 0 / 1


# ---- grouping: crafted IPv6 addresses ----


def _group_v6(sources: list[bytes]) -> int:
    """The number of groups `hotloops.group` makes of UDP packets from `sources` to ::."""
    from callgate.detect import hotloops

    frames = [
        b"\x00" * 12 + b"\x86\xdd" + struct.pack(">IHBB", 0x60000000, 8, 17, 64) + src
        + bytes(16) + struct.pack(">HHHH", 40000, 3478, 8, 0)
        for src in sources
    ]  # fmt: skip
    n, size = len(frames), len(frames[0])
    data = b"".join(frames)
    outs = [np.zeros(n, dtype=np.int8)] + [np.zeros(n, dtype=np.int64) for _ in range(7)]
    q = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    hotloops.decode(data, q(range(0, n * size, size)), q([size] * n), q([1] * n), *outs)
    kind, proto, src, dst, addr, alen, _, _ = outs
    first, inv = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    return int(hotloops.group(data, kind, src, dst, proto, addr, alen, first, inv))


@pytest.mark.skipif(not native.built(), reason="the compiled module is not built")
def test_addresses_crafted_to_share_a_folded_code_stay_distinct_flows() -> None:
    """fold_v6 is invertible: these 3000 sources all fold to one code. They are still 3000
    flows (the grouping table's slots are keyed by the addresses with a per-process secret, so
    they also do not pile into one slot)."""
    k1, k2, mask = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 2**64 - 1
    k2_inverse = pow(k2, -1, 2**64)
    sources = [
        struct.pack(">QQ", hi, ((0x1234567 ^ (hi * k1 & mask)) * k2_inverse) & mask)
        for hi in range(1, 3001)
    ]
    assert _group_v6(sources) == 3000
    assert _group_v6(sources[:10] * 3) == 10


@pytest.mark.skipif(not native.built(), reason="the compiled module is not built")
def test_an_ipv4_and_an_ipv6_packet_with_equal_codes_are_two_groups() -> None:
    from callgate.detect import hotloops

    q = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    # packet 0: IPv4 (address length 4; its address offset is not read), packet 1: IPv6
    groups = hotloops.group(bytes(32), b"\1\1", q([0, 0]), q([0, 0]), q([6, 6]),
                            q([100000, 0]), q([4, 16]), q([0, 0]), q([0, 0]))  # fmt: skip
    assert groups == 2
