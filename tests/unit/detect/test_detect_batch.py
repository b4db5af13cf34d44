"""The batch reader (record walk, vectorized decode, per-flow counters) gives exactly what the
packet-by-packet path gives, on every capture shape, including records cut by chunk ends — both
with the compiled walk and decode (callgate.detect.hotloops) and with numpy."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from callgate.detect import native, pcapfeed
from callgate.detect.capture import PcapReader
from callgate.detect.capture import batch as capture_batch
from callgate.detect.capture import chunks as capture_chunks
from callgate.detect.engine import BATCH_FROM, Detector
from callgate.detect.report import Report
from tests.unit.detect.detect_packets import (
    dtls_client_hello,
    ethernet,
    ice_check,
    ipv4_tcp,
    ipv4_udp,
    ipv6_udp,
    pcap_bytes,
    pcapng_bytes,
    rtcp_rr,
    rtp,
)


def _gtp_u(inner: bytes) -> bytes:
    return struct.pack("!BBHI", 0x30, 0xFF, len(inner), 7) + inner


def _ipv4_fragment(packet: bytes, offset: int) -> bytes:
    return packet[:6] + struct.pack("!H", offset) + packet[8:]


def _ipv4_options(packet: bytes) -> bytes:
    total = struct.unpack_from("!H", packet, 2)[0] + 4
    return (
        bytes([0x46])
        + packet[1:2]
        + struct.pack("!H", total)
        + packet[4:20]
        + b"\x01" * 4
        + packet[20:]
    )


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def batch_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test on both batch paths (test_detect_native.py fails under CI when the compiled
    one is not built)."""
    if request.param == "compiled" and not native.built():
        pytest.skip("callgate.detect.hotloops is not built")
    monkeypatch.setenv(native.ENV, "1" if request.param == "compiled" else "0")


def mixed_frames(count: int, seed: int = 5) -> list[tuple[float, bytes]]:
    """Interleaved calls, DNS, TCP and odd shapes: VLAN tags (one and two), IPv6 with and without
    an extension header, IPv4 options and fragments, GTP-U, ARP, Ethernet padding."""
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        n = rng.randrange(40)
        a, b = f"10.0.{n}.1", f"198.51.100.{n}"
        kind = rng.randrange(12)
        fwd = rng.random() < 0.5
        src, dst = ((a, 40000 + n), (b, 50000 + n)) if fwd else ((b, 50000 + n), (a, 40000 + n))
        payload = [rtp(i, 0x100 + n + fwd), ice_check(), rtcp_rr(), dtls_client_hello(True),
                   rng.randbytes(rng.randrange(0, 300))][rng.randrange(5)]  # fmt: skip
        ip = ipv4_udp(src[0], src[1], dst[0], dst[1], payload)
        if kind == 0:
            frame = ethernet(ip, vlan=n)
        elif kind == 1:
            frame = ethernet(ipv6_udp(f"2001:db8::{n}", 4000, "2001:db8::ffff", 5000, payload))
        elif kind == 2:
            frame = ethernet(ipv6_udp(f"2001:db8::{n}", 4000, "2001:db8::fffe", 5000, payload,
                                      ext=True))  # fmt: skip
        elif kind == 3:
            frame = ethernet(_ipv4_options(ip))
        elif kind == 4:
            frame = ethernet(_ipv4_fragment(ip, rng.choice((0, 0x2000, 0x0010))))
        elif kind == 5:
            outer = ipv4_udp("192.0.2.1", 2152, "192.0.2.2", 2152, _gtp_u(ip))
            frame = ethernet(outer)
        elif kind == 6:
            frame = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)  # ARP
        elif kind == 7:
            frame = ethernet(ipv4_tcp(src[0], 443, dst[0], 40000 + n, rng.randbytes(200)))
        elif kind == 8:
            frame = ethernet(ipv4_udp(src[0], src[1], "192.0.2.53", 53, payload))
        elif kind == 9:
            frame = ethernet(ip) + bytes(6)  # trailer padding past the IP total length
        elif kind == 10:
            tag = struct.pack("!HH", 0x88A8, 5)
            frame = ethernet(ip, vlan=n)[:12] + tag + ethernet(ip, vlan=n)[12:]  # two tags
        else:
            frame = ethernet(ip)
        frames.append((1_700_000_000.0 + i * 0.01 + rng.random() * 0.001, frame))
    return frames


def _by_packet(path: Path) -> Report:
    detector = Detector()
    reader = PcapReader(path)
    detector.feed(reader)
    detector.files.append(str(path))
    detector.warnings.extend(reader.warnings)
    return detector.report()


def _by_batch(path: Path) -> Report:
    detector = Detector()
    detector.batch_from = 0  # the batch path however small the file
    detector.read(path)
    return detector.report()


def _same(path: Path) -> Report:
    slow, fast = _by_packet(path), _by_batch(path)
    assert (fast.packets, fast.skipped, fast.warnings) == (
        slow.packets,
        slow.skipped,
        slow.warnings,
    )
    assert fast.flows == slow.flows
    return fast


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of ~100 kB walked in 4 kB lanes: many chunk ends and lane starts in a small file."""
    monkeypatch.setattr(capture_chunks, "CHUNK", 100_003)
    monkeypatch.setattr(capture_batch, "LANE_BYTES", 4096)
    monkeypatch.setattr(pcapfeed, "ROWS", 333)  # several passes per chunk (compiled pcap path)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pcap-le-usec", pcap_bytes(mixed_frames(3000))),
        ("pcap-be-nsec", pcap_bytes(mixed_frames(3000), nano=True, big_endian=True)),
        ("pcapng", pcapng_bytes(mixed_frames(3000))),
        ("pcap-sll", pcap_bytes([(t, b"\x00" * 14 + f[12:]) for t, f in mixed_frames(2000)], 113)),
        ("pcap-raw", pcap_bytes([(t, f[14:]) for t, f in mixed_frames(2000)], 101)),
        ("pcap-snaplen", pcap_bytes([(t, f[:60]) for t, f in mixed_frames(2000)])),
        # no GTP-U (decode.py's): the compiled pcap path takes every chunk itself, numpy-free
        (
            "pcap-no-gtp",
            pcap_bytes([(t, f) for t, f in mixed_frames(3000) if b"\x08\x68" not in f[34:38]]),
        ),
    ],
)
def test_batch_path_matches_packet_by_packet_path(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / f"{name}.cap"
    path.write_bytes(data)
    report = _same(path)
    assert report.rtc_flows and report.skipped  # calls found; ARP and fragments skipped


@pytest.mark.usefixtures("small_chunks")
def test_record_cut_at_the_end_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes(mixed_frames(3000))[:-50])
    report = _same(path)
    assert report.packets == 2999
    assert "truncated packet record" in report.warnings[0]


@pytest.mark.usefixtures("small_chunks")
def test_payload_bytes_that_look_like_record_headers_do_not_derail_the_walk(
    tmp_path: Path,
) -> None:
    """Payloads full of fake record headers that chain (plausible time, length 0) in front of
    every lane start: lanes are checked against each other, so the records are still the real
    ones (the chunk is then walked record by record)."""
    fake = struct.pack("<IIII", 1_700_000_000, 5, 0, 0) * 20
    frames = [(1_700_000_000.0 + i * 0.01, ethernet(ipv4_udp("10.0.0.1", 4000, "10.0.0.2",
              5000, fake[: 16 * (i % 19 + 1) + i % 7]))) for i in range(4000)]  # fmt: skip
    path = tmp_path / "fake.pcap"
    path.write_bytes(pcap_bytes(frames))
    report = _same(path)
    assert report.packets == 4000
    assert sum(f.packets_out + f.packets_in for f in report.flows) == 4000


SMALL_READ = """
import gc, sys
from callgate.detect import command
code = command.main([sys.argv[1], "--format", "json", "--output", sys.argv[2]])
print(code, sorted(m for m in ("numpy", "dataclasses", "inspect") if m in sys.modules))
missing = command.main([sys.argv[1] + ".missing"])  # fails: exit status 1
print(missing, gc.isenabled())  # the collector, paused during a run, is back either way
"""


def test_a_small_capture_is_read_without_numpy(tmp_path: Path) -> None:
    """Below BATCH_FROM bytes a capture is read packet by packet: a fresh `callgate detect`
    writing a JSON report imports neither numpy nor dataclasses (with inspect) — most of a
    small capture's CPU time — and the report is the batch path's."""
    path, out = tmp_path / "small.pcap", tmp_path / "report.json"
    path.write_bytes(pcap_bytes(mixed_frames(600)))
    assert path.stat().st_size < BATCH_FROM
    ran = subprocess.run([sys.executable, "-c", SMALL_READ, str(path), str(out)],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert ran.stdout.split() == ["0", "[]", "1", "True"]
    assert json.loads(out.read_text())["summary"]["packets"] == 600
    small = Detector()
    small.read(path)
    assert small.report().flows == _by_batch(path).flows


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _section(frames: list[tuple[float, bytes]]) -> bytes:
    """SHB; IDBs for Ethernet (ns) and raw IP (µs); EPBs on both, a Simple Packet Block and an
    Interface Statistics Block in between."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, resol in ((1, 9), (101, 6)):
        option = struct.pack("<HHB3x", 9, 1, resol) + struct.pack("<HH", 0, 0)
        out.append(_block(1, struct.pack("<HHI", linktype, 0, 65535) + option))
    for i, (ts, frame) in enumerate(frames):
        iface = i % 2
        units = round(ts * (10**9 if iface == 0 else 10**6))
        data = frame if iface == 0 else frame[14:]
        body = struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
        out.append(_block(6, body + data))
        if i % 997 == 5:
            out.append(_block(3, struct.pack("<I", len(frame)) + frame))
        if i % 1499 == 7:
            out.append(_block(5, bytes(20)))
    return b"".join(out)


@pytest.mark.usefixtures("small_chunks")
def test_pcapng_with_interfaces_sections_and_other_blocks(tmp_path: Path) -> None:
    frames = mixed_frames(4000)
    path = tmp_path / "multi.pcapng"
    path.write_bytes(_section(frames[:2500]) + _section(frames[2500:]))
    report = _same(path)
    assert report.packets == 4000 + 5  # and the Simple Packet Blocks
