"""The ICE servers a client is told to use in `hello`: our STUN/TURN only, with fresh TURN REST
credentials (coturn's use-auth-secret scheme) that expire after a short TTL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callgate.turn.auth import rest_credentials
from callgate.types import Address


def _host(address: Address) -> str:
    host = address[0]
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class IceServerConfig:
    """Where clients reach our relay, and how long their credentials last."""

    udp: tuple[Address, ...]  # STUN/TURN over UDP (and TCP on the same port)
    tls: tuple[tuple[str, int], ...] = ()  # (hostname for the certificate, port)
    secret: str = ""
    ttl: int = 600

    def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]:
        username, credential = rest_credentials(self.secret, user, self.ttl, now)
        stun = [f"stun:{_host(a)}:{a[1]}" for a in self.udp]
        turn = [f"turn:{_host(a)}:{a[1]}?transport=udp" for a in self.udp]
        turn += [f"turn:{_host(a)}:{a[1]}?transport=tcp" for a in self.udp]
        turn += [f"turns:{host}:{port}?transport=tcp" for host, port in self.tls]
        servers: list[dict[str, Any]] = []
        if stun:
            servers.append({"urls": stun})
        if turn:
            servers.append({"urls": turn, "username": username, "credential": credential})
        return servers
