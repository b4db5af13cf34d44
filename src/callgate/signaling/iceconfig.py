"""The ICE servers a client is told to use in `hello`: our STUN/TURN only, with fresh TURN REST
credentials (coturn's use-auth-secret scheme) that expire after a short TTL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """Several nodes (docs/scaling.md): every live node's relay, all with credentials signed with
    the one shared secret, in the same order on every node (by node id). Call-bound relaying
    relays only between allocations of one relay, so both parties of a call on two nodes need
    candidates on a common relay: clients that use every TURN server (browsers) have one on each,
    and clients that use only the first (aiortc, the Python SDK) all take the same first one."""

    node_id: str
    own: IceServerConfig
    others: Callable[[], Mapping[str, Mapping[str, Any]]]  # node id -> its relay_endpoints()

    def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]:
        relays = {node: self._config(endpoints) for node, endpoints in self.others().items()}
        relays[self.node_id] = self.own
        servers: list[dict[str, Any]] = []
        for node in sorted(relays):
            config = relays[node]
            if config is not None:
                servers += [s for s in config.ice_servers(user, now) if "username" in s]
        stun = [s for s in self.own.ice_servers(user, now) if "username" not in s]
        return stun + servers

    def _config(self, endpoints: Mapping[str, Any]) -> IceServerConfig | None:
        return relay_config(endpoints, self.own)


def relay_config(endpoints: Mapping[str, Any], own: IceServerConfig) -> IceServerConfig | None:
    """Another node's relay (its `relay_endpoints()`), with credentials signed with our shared
    secret; None when malformed (that relay is left out)."""
    try:
        udp = tuple((str(h), int(p)) for h, p in endpoints.get("udp", []))
        tls = tuple((str(h), int(p)) for h, p in endpoints.get("tls", []))
    except (TypeError, ValueError, AttributeError):
        return None
    return IceServerConfig(udp=udp, tls=tls, secret=own.secret, ttl=own.ttl)
