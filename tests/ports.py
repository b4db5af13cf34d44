"""Loopback ports for the tests, safe when tests run in parallel (pytest-xdist) and beside clients.

The old way, bind port 0 and close, races: the port comes from the kernel's ephemeral range, so
between the check and the server's own bind, any client socket (aioice, coturn's test clients,
an HTTP client) may be handed the same port. Here every port comes from below the ephemeral range
(the kernel never gives those out on its own), and each xdist worker draws from its own disjoint
slice, so two workers never pick the same port:

- listener ports (`free_port`, `free_udp_pair`): 28000-32767, interleaved by worker in pairs;
- relay port blocks (`relay_port_range`): 10000-27999, one contiguous band per worker.

Within a process a counter walks the slice from a random start, and each port is bound once to
prove it free (a port left in use by something else is skipped).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
LISTEN_SPAN = (28000, 32767)
RELAY_SPAN = (10000, 27999)


def _worker() -> tuple[int, int]:
    """(index, count) of this xdist worker; (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return index % max(count, 1), max(count, 1)


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _listen_slice() -> list[int]:
    index, count = _worker()
    low, high = _ephemeral()
    ports = range(LISTEN_SPAN[0], LISTEN_SPAN[1] + 1)
    # Interleaved two by two, so an even port and the next one belong to the same worker.
    return [p for p in ports if not low <= p <= high and (p // 2) % count == index]


def _cycle(ports: list[int]) -> Iterator[int]:
    if not ports:  # a machine whose ephemeral range covers the whole span: the kernel picks
        while True:
            yield 0
    start = random.randrange(len(ports))
    yield from itertools.cycle(ports[start:] + ports[:start])


_next_port = _cycle(_listen_slice())


def _bindable(port: int, kinds: tuple[int, ...]) -> int | None:
    """`port` (or, for 0, the kernel's pick) if it can be bound for every socket kind in `kinds`."""
    socks: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((LOOPBACK, port))
            port = sock.getsockname()[1]
        return port
    except OSError:
        return None
    finally:
        for sock in socks:
            sock.close()


def free_port(kind: int = socket.SOCK_DGRAM, *, both: bool = True) -> int:
    """A port free on 127.0.0.1 for `kind` (and, with `both`, for the other of UDP/TCP too)."""
    other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
    kinds = (kind, other) if both else (kind,)
    for _ in range(500):
        port = _bindable(next(_next_port), kinds)
        if port is not None:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def free_udp_pair() -> int:
    """An even UDP port P with P and P+1 free (turnutils_peer listens on both)."""
    for _ in range(500):
        port = next(_next_port) & ~1
        if (
            port
            and _bindable(port, (socket.SOCK_DGRAM,))
            and _bindable(port + 1, (socket.SOCK_DGRAM,))
        ):
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


def relay_port_range(size: int = 1000) -> tuple[int, int]:
    """A relay port block of `size` ports in this worker's own band (never another worker's).

    Random within the band, so the servers of one worker rarely meet; the server skips ports that
    are taken, so a meeting costs a retry, not a failure.
    """
    index, count = _worker()
    width = (RELAY_SPAN[1] - RELAY_SPAN[0] + 1) // count
    low = RELAY_SPAN[0] + index * width
    size = min(size, width)
    start = random.randrange(low, low + width - size + 1)
    return start, start + size - 1
