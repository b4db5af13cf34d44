"""The relay peer filter: which addresses a TURN allocation may send to (RFC 8656 §21.1.3).

Safe by default: special-purpose ranges (this network, loopback, RFC 1918, CGNAT, link-local
including the cloud metadata address 169.254.169.254, ULA, multicast, and their IPv4-mapped
IPv6 forms) are refused unless an allow-list opens them. Deny-list entries win over everything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from callgate.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENIED: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network" (RFC 791)
    "10.0.0.0/8",  # private (RFC 1918)
    "100.64.0.0/10",  # shared address space, CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link-local (RFC 3927), includes 169.254.169.254 metadata
    "172.16.0.0/12",  # private (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
    "192.168.0.0/16",  # private (RFC 1918)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "224.0.0.0/4",  # multicast (RFC 5771)
    "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255 (RFC 1112)
    "::/128",  # unspecified
    "::1/128",  # loopback (RFC 4291)
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
    "fc00::/7",  # unique local (RFC 4193)
    "fe80::/10",  # link-local (RFC 4291)
    "ff00::/8",  # multicast (RFC 4291)
)


def parse_networks(cidrs: Iterable[str], option: str = "peer filter") -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{option}: {cidr!r} is not an IP network ({exc})") from exc
    return tuple(networks)


# IPv6 forms that carry an IPv4 address in their last 32 bits and may reach it: IPv4-compatible
# (::a.b.c.d, RFC 4291 §2.5.5.1; "::" and "::1" excluded) and the NAT64 well-known prefix
# (64:ff9b::a.b.c.d, RFC 6052), which a NAT64 gateway translates to the IPv4 address.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def _normalize(ip: IPAddress) -> IPAddress:
    """IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible and NAT64 forms are judged as the IPv4
    address; a 6to4 address embedding a private IPv4 address too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if (ip in _IPV4_COMPATIBLE and int(ip) > 1) or ip in _NAT64_WELL_KNOWN:
            return ipaddress.IPv4Address(ip.packed[12:])
        if ip.sixtofour is not None and ip.sixtofour.is_private:
            return ip.sixtofour
    return ip


class PeerFilter:
    """Decides whether a peer IP may receive relayed traffic."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = parse_networks(allow, "allow-peer")
        self.deny = parse_networks(deny, "deny-peer")
        self._default = parse_networks(DEFAULT_DENIED)
        self._cache: dict[str, bool] = {}

    def permits(self, host: str) -> bool:
        cached = self._cache.get(host)
        if cached is not None:
            return cached
        verdict = self._judge(host)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[host] = verdict
        return verdict

    def permits_listed(self, host: str) -> bool:
        """Only what the allow-list opens (and the deny-list does not close): a user's extra peer
        ranges, on top of the server's filter."""
        try:
            ip = _normalize(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            return False
        if any(ip in net for net in self.deny):
            return False
        return any(ip in net for net in self.allow)

    def _judge(self, host: str) -> bool:
        try:
            ip = _normalize(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            return False
        if any(ip in net for net in self.deny):
            return False
        if any(ip in net for net in self.allow):
            return True
        return not any(ip in net for net in self._default)
