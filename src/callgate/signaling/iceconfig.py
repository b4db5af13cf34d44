"""The ICE servers a client is told to use in `hello`: our STUN/TURN only, with fresh TURN REST
credentials (coturn's use-auth-secret scheme) that expire after a short TTL."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

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


class IceServers(Protocol):
    def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]: ...


def relay_endpoints(config: IceServerConfig) -> dict[str, Any]:
    """Where this node's relay is reached, as JSON for the other nodes (no secret)."""
    return {"udp": [list(a) for a in config.udp], "tls": [list(t) for t in config.tls]}


@dataclass(frozen=True, slots=True)
class ClusterIce:
    """Several nodes (docs/scaling.md): this node's relay, then every other live node's, all
    with credentials signed with the one shared secret. Both parties of a call on two nodes then
    have candidates on the same relays, which call-bound relaying needs (a relay relays only
    between its own allocations)."""

    own: IceServerConfig
    others: Callable[[], Iterable[Mapping[str, Any]]]  # the other nodes' relay_endpoints()

    def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]:
        servers = self.own.ice_servers(user, now)
        for endpoints in self.others():
            try:
                udp = tuple((str(h), int(p)) for h, p in endpoints.get("udp", []))
                tls = tuple((str(h), int(p)) for h, p in endpoints.get("tls", []))
            except (TypeError, ValueError):
                continue  # a malformed snapshot: that relay is left out
            other = IceServerConfig(udp=udp, tls=tls, secret=self.own.secret, ttl=self.own.ttl)
            servers += [s for s in other.ice_servers(user, now) if "username" in s]
        return servers
