"""Server names from TLS ClientHellos (TCP, reassembled across segments) and QUIC Initials
(decrypted, RFC 9001 §5.2 and RFC 9369, checked against their Appendix A vectors), and the calling
applications they name."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from callgate.detect import names, quic
from callgate.detect.engine import Detector
from callgate.detect.report import Report
from tests.unit.detect import quic_vectors as qv
from tests.unit.detect.detect_packets import ethernet, ipv4_tcp, pcap_bytes, rtp, udp_frame

HOST = ("192.168.1.50", 50123)
SERVER = ("198.51.100.9", 443)


def client_hello(name: str, padding: int = 700) -> bytes:
    """A TLS 1.3 ClientHello handshake message with server_name (RFC 6066 §3) and a padding
    extension (RFC 7685) that makes it span TCP segments."""
    host = name.encode()
    entry = b"\x00" + struct.pack("!H", len(host)) + host
    names_list = struct.pack("!H", len(entry)) + entry
    exts = struct.pack("!HH", 0, len(names_list)) + names_list
    exts += struct.pack("!HH", 10, 4) + b"\x00\x02\x00\x1d"
    exts += struct.pack("!HH", 21, padding) + bytes(padding)
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + b"\x00\x04\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)  # fmt: skip
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message: bytes, cut: int | None = None) -> bytes:
    """TLS records carrying `message`, split into two records at `cut` when given."""
    parts = [message] if cut is None else [message[:cut], message[cut:]]
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(p)) + p for p in parts)


def tcp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    return ethernet(ipv4_tcp(src[0], src[1], dst[0], dst[1], payload))


def detect(tmp_path: Path, frames: list[tuple[float, bytes]]) -> Report:
    path = tmp_path / "names.pcap"
    path.write_bytes(pcap_bytes(frames))
    detector = Detector()
    detector.read(path)
    return detector.report()


# ---- QUIC ----
def test_initial_keys_are_rfc_9001_appendix_a1() -> None:
    assert quic.client_keys(quic.V1, qv.DCID) == (
        qv.V1_CLIENT_KEY,
        qv.V1_CLIENT_IV,
        qv.V1_CLIENT_HP,
    )


@pytest.mark.parametrize("packet", [qv.V1_CLIENT_INITIAL, qv.V2_CLIENT_INITIAL], ids=["v1", "v2"])
def test_the_rfc_client_initials_decrypt_to_their_server_name(packet: bytes) -> None:
    dcid = quic.long_header_dcid(packet)
    assert dcid == qv.DCID
    frames = quic.crypto_frames(packet, dcid)
    assert [offset for offset, _ in frames] == [0]
    assert names.server_name(frames[0][1]) == "example.com"


def test_a_tampered_or_cut_initial_yields_nothing() -> None:
    packet = bytearray(qv.V1_CLIENT_INITIAL)
    packet[300] ^= 1
    assert quic.crypto_frames(bytes(packet), qv.DCID) == []
    assert quic.crypto_frames(qv.V1_CLIENT_INITIAL[:600], qv.DCID) == []  # length overruns
    assert quic.crypto_frames(qv.V1_CLIENT_INITIAL, b"\x00" * 8) == []  # wrong keys


def test_quic_initials_in_a_capture_name_their_flows(tmp_path: Path) -> None:
    other = ("192.168.1.51", 50124)
    report = detect(tmp_path, [(1.0, udp_frame(HOST, SERVER, qv.V1_CLIENT_INITIAL)),
                               (1.1, udp_frame(other, SERVER, qv.V2_CLIENT_INITIAL))])  # fmt: skip
    assert {(f.host, f.server_name) for f in report.flows} == {
        (HOST[0], "example.com"), (other[0], "example.com")}  # fmt: skip
    assert not report.rtc_flows


# ---- TLS over TCP ----
def test_a_client_hello_across_segments_and_records_is_read(tmp_path: Path) -> None:
    stream = records(client_hello("teams.microsoft.com"), cut=300)
    segments = [stream[:200], stream[200:650], stream[650:]]
    frames = [(1.0 + i / 10, tcp_frame(HOST, SERVER, s)) for i, s in enumerate(segments)]
    frames.insert(2, (1.15, tcp_frame(HOST, SERVER, segments[1])))  # a retransmission
    frames.insert(1, (1.05, tcp_frame(SERVER, HOST, b"\x00" * 10)))  # the server's side
    [flow] = detect(tmp_path, frames).flows
    assert flow.server_name == "teams.microsoft.com" and not flow.rtc


def test_hostile_client_hellos_never_raise() -> None:
    hello = client_hello("zoom.us", padding=0)
    assert names.server_name(hello) == "zoom.us"
    for cut in range(len(hello)):  # a cut message gives the name only if the name is whole
        assert names.server_name(hello[:cut]) in (None, "zoom.us")
        assert names.hello_from_records(records(hello)[: cut + 5]) is None
    assert names.server_name(hello[: hello.index(b"zoom.us") + 6]) is None
    rng = random.Random(7)
    for _ in range(2000):
        blob = bytearray(hello)
        for _ in range(3):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        name = names.server_name(bytes(blob))
        assert name is None or all(c.isalnum() or c in "-._" for c in name)
    assert names.server_name(b"\x01\x00\x00\x05" + b"\xff" * 5) is None


def test_names_map_to_applications() -> None:
    assert names.app_from_name("Teams.Microsoft.com.") == "Microsoft Teams/Skype"
    assert names.app_from_name("zoom.us") == "Zoom"
    assert names.app_from_name("us05web.zoom.us") == "Zoom"
    assert names.app_from_name("notzoom.us") is None
    assert names.app_from_name("example.com") is None


# ---- naming calls ----
def _call(start: float) -> list[tuple[float, bytes]]:
    far = ("203.0.113.70", 3480)
    return [(start + i * 0.02, udp_frame(HOST if i % 2 == 0 else far, far if i % 2 == 0 else HOST,
                                         rtp(i // 2, ssrc=1 + i % 2)))
            for i in range(40)]  # fmt: skip


def test_an_unnamed_call_takes_the_one_service_its_host_opened(tmp_path: Path) -> None:
    hello = tcp_frame((HOST[0], 50200), SERVER, records(client_hello("zoom.us")))
    report = detect(tmp_path, [(1.0, hello), *_call(5.0)])
    [call] = report.rtc_flows
    assert call.app == "Zoom"
    assert any("zoom.us (TLS/QUIC server name)" in e for e in call.evidence)


def test_two_services_near_a_call_leave_it_unnamed(tmp_path: Path) -> None:
    zoom = tcp_frame((HOST[0], 50200), SERVER, records(client_hello("zoom.us")))
    teams = tcp_frame((HOST[0], 50201), SERVER, records(client_hello("teams.microsoft.com")))
    far_away = tcp_frame(("192.168.1.99", 50202), SERVER, records(client_hello("zoom.us")))
    [call] = detect(tmp_path, [(1.0, zoom), (1.5, teams), (2.0, far_away), *_call(5.0)]).rtc_flows
    assert call.app == "unidentified RTP"


def test_hostile_quic_datagrams_never_raise() -> None:
    """Every length byte of the vector's header changed, and random tails: nothing raises."""
    rng = random.Random(11)
    base = qv.V1_CLIENT_INITIAL
    for _ in range(300):
        blob = bytearray(base[: rng.randrange(7, len(base))])
        for _ in range(rng.randrange(1, 4)):
            blob[rng.randrange(min(len(blob), 30))] = rng.randrange(256)
        dcid = quic.long_header_dcid(bytes(blob))
        if dcid is not None:
            assert quic.crypto_frames(bytes(blob), dcid) == []  # nothing authenticates
    buffer = names.HelloBuffer()
    for _ in range(50):
        assert buffer.add_crypto([(rng.randrange(1 << 20), rng.randbytes(40))]) is None
