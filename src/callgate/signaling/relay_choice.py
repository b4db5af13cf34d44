"""Which separate relay a client is given (docs/scaling.md, "Separate relays").

`callgate turn` processes register themselves in Redis (runtime/relay_registry.py): region,
where clients reach them, the port range of their relayed addresses, their load (allocations)
and whether they drain. A relay whose registration expired (no heartbeat) is not listed at all.

The rule, per client and per call:

- `hello` lists every live relay that is not draining, best first for the client: those of the
  node's region first (clients reach a node of their own region), then by load (fewest
  allocations), then by id. Browsers allocate on every relay listed; aiortc (the Python SDK,
  `callgate call`) on the first only.
- `call.incoming` repeats the list for the callee with the relay the caller's offer already uses
  moved first. Call-bound relaying relays only between allocations of one relay, so both
  parties of a call then hold an allocation on that relay, whichever region each is in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from callgate.signaling.iceconfig import IceServerConfig
from callgate.signaling.sdp import relay_candidates
from callgate.types import Address

MAX_RELAYS = 256  # registrations read; more are ignored


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """One registered relay, as its heartbeat says."""

    relay_id: str
    region: str
    udp: tuple[Address, ...]
    tls: tuple[tuple[str, int], ...]
    relay_ips: frozenset[str]
    ports: tuple[int, int]
    load: int
    draining: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.relay_id,
            "region": self.region,
            "udp": [list(a) for a in self.udp],
            "tls": [list(t) for t in self.tls],
            "relay_ips": sorted(self.relay_ips),
            "ports": list(self.ports),
            "load": self.load,
            "draining": self.draining,
        }

    @classmethod
    def from_json(cls, raw: Any) -> RelayInfo | None:
        """A registration read back from Redis; None (left out) when malformed."""
        if not isinstance(raw, Mapping):
            return None
        try:
            udp = tuple((str(h), int(p)) for h, p in raw["udp"])
            tls = tuple((str(h), int(p)) for h, p in raw.get("tls", []))
            ips = frozenset(str(ipaddress.ip_address(ip)) for ip in raw["relay_ips"])
            low, high = (int(p) for p in raw["ports"])
            info = cls(
                relay_id=str(raw["id"]),
                region=str(raw["region"]),
                udp=udp,
                tls=tls,
                relay_ips=ips,
                ports=(low, high),
                load=int(raw["load"]),
                draining=bool(raw["draining"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return info if info.udp and info.relay_ips else None

    def owns(self, address: str) -> bool:
        """Is "ip:port" a relayed address of this relay (its IP, a port of its range)?"""
        ip, _, port = address.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            return False
        return ip.strip("[]") in self.relay_ips and self.ports[0] <= number <= self.ports[1]


def ranked(relays: Iterable[RelayInfo], region: str) -> list[RelayInfo]:
    """Relays that take new allocations, best first for a client of `region`: same region, then
    fewest allocations, then id (the same order on every node)."""
    usable = [r for r in relays if not r.draining]
    return sorted(usable, key=lambda r: (r.region != region, r.load, r.relay_id))


def relay_in_use(relays: Iterable[RelayInfo], sdp: str) -> RelayInfo | None:
    """The relay a party's SDP has a relay candidate on (its first such candidate's)."""
    known = list(relays)
    for address in relay_candidates(sdp):
        for relay in known:
            if relay.owns(address):
                return relay
    return None


@dataclass(frozen=True, slots=True)
class RelayIce:
    """ICE servers from the registered relays, with TURN REST credentials signed with the shared
    secret; while none is registered, `fallback` (the nodes' own relays) as before."""

    region: str
    own: IceServerConfig  # this node's STUN (and the secret and TTL of every credential)
    relays: Callable[[], list[RelayInfo]]
    fallback: Any  # IceServers: the nodes' own relays

    def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]:
        choice = ranked(self.relays(), self.region)
        if not choice:
            servers: list[dict[str, Any]] = self.fallback.ice_servers(user, now)
            return servers
        return self._servers(choice, user, now)

    def for_call(self, user: str, now: float, offer: str) -> list[dict[str, Any]] | None:
        """The ICE servers for the callee of a call whose offer is `offer`: the caller's relay
        first. None when the offer uses no registered relay (then `hello`'s list stands)."""
        relays = self.relays()
        used = relay_in_use(relays, offer)
        if used is None or used.draining:
            return None
        rest = [r for r in ranked(relays, self.region) if r.relay_id != used.relay_id]
        return self._servers([used, *rest], user, now)

    def _servers(self, relays: list[RelayInfo], user: str, now: float) -> list[dict[str, Any]]:
        stun = [s for s in self.own.ice_servers(user, now) if "username" not in s]
        servers = list(stun)
        for relay in relays:
            config = IceServerConfig(
                udp=relay.udp, tls=relay.tls, secret=self.own.secret, ttl=self.own.ttl
            )
            servers += [s for s in config.ice_servers(user, now) if "username" in s]
        return servers

    def addresses(self) -> set[str]:
        """The relay IPs of every registered relay (relay candidates may point at these)."""
        return {ip for relay in self.relays() for ip in relay.relay_ips}
