"""Record loopback traffic to a pcap file with an AF_PACKET socket (Linux, root), keeping only
packets to or from one 127/8 address so other tests' traffic on 127.0.0.1 stays out."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # Linux, asm-generic/socket.h (Python's socket module does not name it)
PACKET_OUTGOING = 4


def private_loopback_address() -> str:
    """A random 127/8 address other than 127.0.0.1 (all of 127/8 reaches `lo` on Linux)."""
    return f"127.{random.randrange(2, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


@contextmanager
def record_loopback(path: Path, address: str) -> Iterator[None]:
    """Capture `lo` into `path` (pcap, Ethernet link type) while the block runs."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(
            f"cannot open an AF_PACKET socket to record loopback (needs Linux and root): {exc}"
        )
    sock.bind(("lo", 0))
    # A starved thread drops nothing: every other test's loopback traffic queues here too, and
    # SO_RCVBUF is capped by net.core.rmem_max (208 KiB on a fresh Debian), so as root (AF_PACKET
    # needs it anyway) the size is forced past the cap.
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 * 1024 * 1024)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.settimeout(0.05)
    wanted = ipaddress.IPv4Address(address).packed
    stop = threading.Event()
    frames: list[tuple[float, bytes]] = []

    def capture() -> None:
        # Runs until asked to stop *and* the socket has been empty for a timeout: every frame
        # queued before the block ended is kept, however late this thread gets the CPU.
        while True:
            try:
                frame, meta = sock.recvfrom(65535)
            except TimeoutError:
                if stop.is_set():
                    return
                continue
            # Each loopback packet is seen leaving and arriving; keep one copy, like libpcap.
            if meta[2] == PACKET_OUTGOING or len(frame) < 34 or frame[12:14] != b"\x08\x00":
                continue
            if wanted in (frame[26:30], frame[30:34]):
                frames.append((time.time(), frame))

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        sock.close()
        with path.open("wb") as out:
            out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for ts, frame in frames:
                sec = int(ts)
                out.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
                out.write(frame)
