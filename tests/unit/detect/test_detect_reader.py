"""Capture reading and frame decoding: every file format and link type yields the same flows."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import pytest

from callgate.detect import CaptureError, detect
from callgate.detect.capture import PcapReader
from callgate.detect.decode import decode
from tests.unit.detect.detect_packets import (
    ethernet,
    ipv4_udp,
    ipv6_udp,
    pcap_bytes,
    pcapng_bytes,
    rtp,
    udp_frame,
)

A, B = ("10.0.0.5", 40000), ("198.51.100.7", 50000)


def call_frames(count: int = 20) -> list[tuple[float, bytes]]:
    frames = []
    for i in range(count):
        frames.append((1700000000.0 + i * 0.02, udp_frame(A, B, rtp(i, 0x11))))
        frames.append((1700000000.01 + i * 0.02, udp_frame(B, A, rtp(i, 0x22))))
    return frames


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pcap-le-usec", pcap_bytes(call_frames())),
        ("pcap-be-nsec", pcap_bytes(call_frames(), nano=True, big_endian=True)),
        ("pcapng-nsec", pcapng_bytes(call_frames())),
        ("pcapng-usec", pcapng_bytes(call_frames(), tsresol=6)),
    ],
)
def test_every_file_format_gives_the_same_call(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / f"{name}.cap"
    path.write_bytes(data)
    report = detect([path])
    assert report.packets == 40
    [session] = report.sessions
    assert (session.host, session.peer) == ("10.0.0.5", "198.51.100.7")
    assert (session.packets_out, session.packets_in) == (20, 20)
    assert session.first_seen == pytest.approx(1700000000.0, abs=1e-5)
    assert session.duration == pytest.approx(0.39, abs=1e-5)
    assert "RTP" in session.protocols


def test_truncated_last_record_reports_what_was_read_and_warns(tmp_path: Path) -> None:
    data = pcap_bytes(call_frames())
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-50])
    report = detect([path])
    assert report.packets == 39
    assert report.sessions
    assert any("truncated" in w and "39 packets" in w for w in report.warnings)


def test_truncated_pcapng_block_warns(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcapng"
    path.write_bytes(pcapng_bytes(call_frames())[:-7])
    report = detect([path])
    assert report.packets == 39
    assert any("truncated pcapng block" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty or too short"),
        (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng file (starts with 0x47455420)"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    ],
)
def test_unreadable_files_raise_a_precise_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        list(PcapReader(path))


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open"):
        list(PcapReader(tmp_path / "nope.pcap"))


def test_corrupt_record_length_is_an_error_not_a_huge_allocation(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes(call_frames(2)))
    struct.pack_into("<I", data, 24 + 8, 0x7FFFFFFF)  # caplen of the first record
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="corrupt record"):
        list(PcapReader(path))


IP4 = ipv4_udp("10.0.0.5", 40000, "198.51.100.7", 50000, b"hello")
EXPECTED4 = (17, bytes([10, 0, 0, 5]), 40000, bytes([198, 51, 100, 7]), 50000, b"hello")


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ethernet(IP4)),
        (1, ethernet(IP4, vlan=1508)),
        (1, ethernet(IP4) + b"\x00" * 12),  # Ethernet padding after the IP packet
        (113, struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + IP4),  # Linux cooked
        (276, struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 8) + IP4),  # SLL2
        (101, IP4),
        (228, IP4),
        (0, struct.pack("<I", 2) + IP4),  # BSD loopback, host order
        (108, struct.pack("!I", 2) + IP4),  # OpenBSD loop, network order
    ],
)
def test_link_types_decode_to_the_same_5_tuple(linktype: int, frame: bytes) -> None:
    assert decode(linktype, frame) == EXPECTED4


def test_ipv6_with_extension_header_and_gtp_u_tunnel() -> None:
    six = ipv6_udp("2001:db8::1", 5000, "2001:db8::2", 6000, b"x", ext=True)
    decoded = decode(229, six)
    assert decoded is not None and decoded[2] == 5000 and decoded[5] == b"x"
    gtp = struct.pack("!BBHI", 0x30, 0xFF, len(IP4), 1) + IP4
    outer = ethernet(ipv4_udp("192.0.2.1", 2152, "192.0.2.2", 2152, gtp))
    assert decode(1, outer) == EXPECTED4


def test_non_first_fragments_and_other_protocols_are_skipped() -> None:
    frag = bytearray(IP4)
    struct.pack_into("!H", frag, 6, 185)  # fragment offset 185*8
    assert decode(101, bytes(frag)) is None
    icmp = bytearray(IP4)
    icmp[9] = 1
    assert decode(101, bytes(icmp)) is None
    assert decode(147, IP4) is None  # a link type we do not know


def test_mangled_frames_and_files_never_crash_the_detector(tmp_path: Path) -> None:
    from callgate.detect.engine import Detector
    from tests.unit.detect.detect_packets import dtls_client_hello, ice_check, stun

    rng = random.Random(5)
    payloads = [
        ice_check(),
        stun(3, 2),
        dtls_client_hello(True),
        rtp(1),
        b"INVITE sip:a SIP/2.0\r\n",
    ]
    frames = [udp_frame(A, B, p) for p in payloads]
    for _ in range(3000):
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randrange(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        detector = Detector()
        detector.packet(
            1.0, rng.choice([1, 113, 276, 101, 0]), bytes(frame[: rng.randrange(len(frame) + 1)])
        )
        detector.report()
    for whole in (pcapng_bytes(call_frames(5)), pcap_bytes(call_frames(5))):
        for _ in range(100):
            data = bytearray(whole)
            for _ in range(rng.randrange(1, 10)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            path = tmp_path / "mangled.cap"
            path.write_bytes(bytes(data[: rng.randrange(len(data) + 1)]))
            with contextlib.suppress(CaptureError):  # a precise error is fine; others are bugs
                detect([path])


@pytest.mark.parametrize(("btype", "length"), [(6, 12), (6, 16), (6, 28), (1, 16), (3, 12)])
def test_a_pcapng_block_too_short_for_its_fields_is_a_precise_error(
    tmp_path: Path, btype: int, length: int
) -> None:
    """A block shorter than its fixed fields (pcapng §4.2-4.4) is refused by name, not read
    from the next block's bytes nor left to a struct error."""
    good = pcapng_bytes(call_frames(2))
    short = struct.pack("<II", btype, length) + bytes(length - 12) + struct.pack("<I", length)
    path = tmp_path / "short.pcapng"
    path.write_bytes(good + short)
    with pytest.raises(CaptureError, match=f"corrupt pcapng block \\(type {btype:#x}, length"):
        list(PcapReader(path))
    with pytest.raises(CaptureError, match="corrupt pcapng block"):
        detect([path])
