"""Synthetic captures for the classic-Skype tests, built from the published descriptions (see
callgate.detect.skype), and look-alikes that must not be taken for Skype: DNS, a peer-to-peer
game, WireGuard, OpenVPN, BitTorrent (uTP and DHT), fully random UDP."""

from __future__ import annotations

import random
import struct

from tests.unit.detect.detect_packets import Frame, udp_frame

HOST = ("192.168.1.34", 13021)


def peer(i: int) -> tuple[str, int]:
    """A distinct public peer address (TEST-NET and documentation ranges)."""
    return (f"198.51.{100 + i // 250}.{1 + i % 250}", 40000 + i % 35)


def skype_message(rng: random.Random, function: int, size: int, *, high: int = 0) -> bytes:
    """Start of Message (2-byte random ID, function in the low nibble of byte 3), then
    ciphertext (random bytes)."""
    return rng.randbytes(2) + bytes([(high << 4) | function]) + rng.randbytes(size - 3)


def skype_probes(
    rng: random.Random, count: int, start: float = 0.0, *, counting: bool = False
) -> list[Frame]:
    """The host's Skype port sends one small message to each of `count` super nodes (the
    one-packet flows nDPI labels Skype_TeamsCall in its skype.pcap). `counting`: message IDs
    that count up from 0x7000 instead of random ones."""
    frames: list[Frame] = []
    for i in range(count):
        message = skype_message(rng, 0x2, rng.randint(18, 35))
        if counting:
            message = struct.pack("!H", 0x7000 + i) + message[2:]
        frames.append((start + i * 0.05, udp_frame(HOST, peer(i), message)))
    return frames


def skype_call(
    rng: random.Random, far: tuple[str, int], seconds: float = 8.0, start: float = 10.0
) -> list[Frame]:
    """A peer-to-peer voice call on the host's Skype port: a first 0x02 message, then audio
    messages (mostly 0xd, some 0x2; random high nibble) both ways at ~33 packets/s, a few
    3-byte NAKs."""
    frames: list[Frame] = [(start, udp_frame(HOST, far, skype_message(rng, 0x2, 40)))]
    steps = int(seconds / 0.03)
    for i in range(1, steps):
        ts = start + i * 0.03
        for src, dst in ((HOST, far), (far, HOST)):
            if i % 50 == 0:
                payload = rng.randbytes(2) + bytes([0x0D])
            else:
                function = 0x2 if i % 7 == 0 else 0xD
                payload = skype_message(rng, function, rng.randint(60, 140), high=rng.randrange(8))
            frames.append((ts + (0.011 if src is far else 0.0), udp_frame(src, dst, payload)))
    return frames


# ---- look-alikes ----
def dns(rng: random.Random, count: int) -> list[Frame]:
    frames: list[Frame] = []
    for i in range(count):
        query = (
            rng.randbytes(2)
            + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        )
        port = 50000 + i
        frames.append((i * 0.1, udp_frame(("192.168.1.34", port), ("192.0.2.53", 53), query)))
        answer = (
            query[:2]
            + b"\x81\x80"
            + query[4:]
            + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01"
        )
        frames.append(
            (i * 0.1 + 0.02, udp_frame(("192.0.2.53", 53), ("192.168.1.34", port), answer))
        )
    return frames


def game(rng: random.Random, peers: int, seconds: float = 5.0) -> list[Frame]:
    """A peer-to-peer game from one port: a magic byte, a sequence number, a constant message
    type 0x02 in byte 3 (the nDPI anchor's byte), positions as floats, 30 packets/s each way."""
    frames: list[Frame] = []
    me = ("192.168.1.40", 27015)
    for p in range(peers):
        far = peer(300 + p)
        for i in range(int(seconds * 30)):
            for src, dst in ((me, far), (far, me)):
                body = struct.pack("!fff", rng.uniform(-100, 100), rng.uniform(-100, 100), 0.0)
                payload = bytes([0x7F, i & 0xFF, 0x02, 0x00]) + body + bytes(8)
                frames.append((i / 30 + p * 0.001 + (0.005 if src is far else 0), udp_frame(src, dst, payload)))  # fmt: skip
    return frames


def wireguard(rng: random.Random, seconds: float = 6.0) -> list[Frame]:
    me, far = ("192.168.1.41", 43210), ("203.0.113.7", 51000)  # not the default port
    frames: list[Frame] = [(0.0, udp_frame(me, far, b"\x01\x00\x00\x00" + rng.randbytes(144))),
                           (0.01, udp_frame(far, me, b"\x02\x00\x00\x00" + rng.randbytes(88)))]  # fmt: skip
    for i in range(int(seconds * 50)):
        for src, dst in ((me, far), (far, me)):
            payload = (
                b"\x04\x00\x00\x00" + rng.randbytes(12) + rng.randbytes(16 * rng.randint(4, 8))
            )
            frames.append((0.02 + i / 50, udp_frame(src, dst, payload)))
    return frames


def openvpn(rng: random.Random, seconds: float = 6.0, *, handshake: bool = True) -> list[Frame]:
    """OpenVPN over UDP on port 443: the client's hard reset (opcode 7), then P_DATA_V2 (opcode
    9) with a constant peer ID, voice-like rates (a call inside the tunnel)."""
    me, far = ("192.168.1.42", 51111), ("203.0.113.8", 443)
    frames: list[Frame] = []
    if handshake:
        reset = bytes([7 << 3]) + rng.randbytes(8) + bytes(5)  # no ACKs, message packet-ID 0
        frames.append((0.0, udp_frame(me, far, reset)))
    peer_id = b"\x00\x00\x05"
    for i in range(int(seconds * 50)):
        for src, dst in ((me, far), (far, me)):
            payload = bytes([9 << 3]) + peer_id + rng.randbytes(rng.randint(80, 160))
            frames.append((0.05 + i / 50, udp_frame(src, dst, payload)))
    return frames


def bittorrent(rng: random.Random, peers: int) -> list[Frame]:
    """One client port talking to many peers: DHT pings (bencoded) and uTP SYN/DATA."""
    me = ("192.168.1.43", 6881)
    frames: list[Frame] = []
    for p in range(peers):
        far = peer(600 + p)
        ts = p * 0.02
        if p % 2:
            ping = b"d1:ad2:id20:" + rng.randbytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe"
            frames += [(ts, udp_frame(me, far, ping)), (ts + 0.05, udp_frame(far, me, ping))]
            continue
        conn = rng.randrange(65536)
        for k in range(4):
            kind = 0x41 if k == 0 else 0x01  # ST_SYN, then ST_DATA; version 1
            header = struct.pack("!BBHIIIHH", kind, 0, conn, rng.getrandbits(32), 0, 1 << 20, k, 0)
            frames.append((ts + k * 0.01, udp_frame(me, far, header + rng.randbytes(rng.randint(0, 900)))))  # fmt: skip
    return frames


def random_p2p(rng: random.Random, peers: int) -> list[Frame]:
    """Fully encrypted peer-to-peer UDP from one port (random bytes from the first byte on)."""
    me = ("192.168.1.44", 41000)
    frames: list[Frame] = []
    for p in range(peers):
        far = peer(900 + p)
        for k in range(3):
            frames.append((p * 0.02 + k * 0.005, udp_frame(me, far, rng.randbytes(rng.randint(16, 120)))))  # fmt: skip
    return frames
