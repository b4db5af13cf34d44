"""Vendor address ranges: the media relays of calling services (shipped: `data/vendor_ranges.txt`,
which names its source and date; replaceable with `callgate detect --lists FILE`).

One range per line: `CIDR PORTS APPLICATION`, PORTS being `udp:LOW-HIGH`, `tcp:LOW-HIGH`,
`udp:PORT` or `any`; `#` starts a comment, and `# source:` / `# date:` lines are kept (joined
with "; " when there are several). A malformed line is an error naming the file and line, never skipped silently.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import NamedTuple

from callgate.detect.capture import CaptureError

MAX_BYTES = 4 * 1024 * 1024
SHIPPED = Path(__file__).parent / "data" / "vendor_ranges.txt"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeError(CaptureError):
    """A ranges file that cannot be read or parsed (exit status 1, like an unreadable capture)."""


class VendorRange(NamedTuple):
    network: Network
    transport: str | None  # "udp", "tcp", or None for any
    low: int
    high: int
    app: str


class RangeList:
    """The ranges of one list, with its origin, source and date (a plain class: see
    `stunscan.StunInfo`)."""

    __slots__ = ("_masks", "date", "origin", "ranges", "source")

    def __init__(self, origin: str, source: str = "", date: str = "") -> None:
        self.origin = origin
        self.source = source
        self.date = date
        self.ranges: list[VendorRange] = []
        # per range: (IP version, netmask, network address) as integers, made at the first lookup
        self._masks: list[tuple[int, int, int]] | None = None

    def app_for(self, ip: bytes, transport: str, port: int) -> VendorRange | None:
        """The first range holding the address (packed) and port, or None. (Compared as integers:
        `ipaddress.ip_address` and `in` for every real-time flow cost more than the rest of the
        naming.)"""
        if self._masks is None or len(self._masks) != len(self.ranges):
            self._masks = [(entry.network.version, int(entry.network.netmask),
                            int(entry.network.network_address)) for entry in self.ranges]  # fmt: skip
        value, version = int.from_bytes(ip, "big"), 4 if len(ip) == 4 else 6
        for entry, (family, mask, network) in zip(self.ranges, self._masks, strict=True):
            if (entry.transport in (None, transport) and entry.low <= port <= entry.high
                    and family == version and value & mask == network):  # fmt: skip
                return entry
        return None


def default_ranges() -> RangeList:
    return parse_ranges(SHIPPED.read_text("utf-8"), "vendor_ranges.txt (shipped)")


def load_ranges(path: Path) -> RangeList:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RangeError(f"--lists: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise RangeError(f"--lists: {path} is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RangeError(f"--lists: {path} is not UTF-8 text") from None
    return parse_ranges(text, str(path))


def parse_ranges(text: str, origin: str) -> RangeList:
    result = RangeList(origin)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            key, _, value = line.lstrip("#").strip().partition(":")
            if key in ("source", "date"):
                known = getattr(result, key)
                setattr(result, key, f"{known}; {value.strip()}" if known else value.strip())
            continue
        if line:
            result.ranges.append(_entry(line, f"{origin}:{number}"))
    return result


def _entry(line: str, where: str) -> VendorRange:
    parts = line.split(None, 2)
    if len(parts) < 3:
        raise RangeError(f"{where}: expected 'CIDR PORTS APPLICATION', got {line!r}")
    cidr, ports, app = parts
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise RangeError(f"{where}: not a network: {cidr!r}") from None
    if ports == "any":
        return VendorRange(network, None, 0, 65535, app.strip())
    transport, _, span = ports.partition(":")
    low, _, high = span.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise RangeError(f"{where}: bad ports {ports!r} (udp:LOW-HIGH, tcp:PORT or any)") from None
    if transport not in ("udp", "tcp") or not 0 <= first <= last <= 65535:
        raise RangeError(f"{where}: bad ports {ports!r} (udp:LOW-HIGH, tcp:PORT or any)")
    return VendorRange(network, transport, first, last, app.strip())
