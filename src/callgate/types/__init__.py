"""Small value types shared across the package."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# (host, port) as the socket layer gives it; host is a textual IP address.
Address = tuple[str, int]


class Transport(enum.Enum):
    """Transport between a client and the TURN server (RFC 8656 §3.1)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """Client address, server address and transport: the key of an allocation (RFC 8656 §2)."""

    client: Address
    server: Address
    transport: Transport
