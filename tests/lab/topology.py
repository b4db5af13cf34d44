"""The NAT lab: a small internet of network namespaces with `callgate serve` on it.

```
                     ┌───────────────── srv ─────────────────┐
                     │ 203.0.113.10 :443  HTTP+WS (ice all)  │
                     │ 203.0.113.20 :3478 udp/tcp, :443 tcp+udp  TURN/STUN (ice all)
                     │ 203.0.113.11 :443  HTTP+WS (relay-only)│
                     │ 203.0.113.21 :3478, :443  TURN/STUN (relay-only)
                     │ 203.0.113.12 :443  HTTPS+WSS (relay-only, --self-signed)
                     │ 203.0.113.22 :3478 udp/tcp, :443 TLS only  TURN/STUN (same server)
                     └──────────────┬────────────────────────┘
                                    │ 203.0.113.1
                     ┌──────────── inet (router, no default route) ─────────────┐
                     │ bridge "wan" 198.51.100.1/24                              │
                     └──┬──────────┬──────────┬──────────┬───────── … ──────────┘
                 198.51.100.11  .12        .13        .14      (one NAT router per site)
                   r-eim-a    r-prc-a    r-sym-a    r-fw-a     r-eim-b … r-lan, r-symx
                   10.11.0.1  10.12.0.1  …                     (LAN bridge "lan")
                      │          │
                   h-eim-a    h-prc-a    …                       10.N.0.10 (, .11 on "lan")
```

Site kinds (the router's iptables rules, see `nat_rules`):
- `eim`  endpoint-independent mapping and filtering ("full cone"): SNAT to the WAN address,
         which keeps the host's source port, plus DNAT of all inbound UDP on the WAN address back
         to the one host on the LAN; a mapping is the same for every destination, and anyone may
         send to it (RFC 4787 §4.1, §5).
- `prc`  port-restricted cone: `MASQUERADE` (Linux keeps the source port: endpoint-independent
         mapping in practice) with conntrack as the filter: only replies from the exact
         address:port a packet went to get in (address-and-port-dependent filtering).
- `sym`  symmetric: `MASQUERADE --random-fully`, a new random port for every destination
         (address-and-port-dependent mapping), filtered like `prc`.
- `fw`   corporate firewall: NAT as `prc`, and the only traffic allowed out is TCP to port 443;
         all UDP is dropped.
- `lan`  two hosts behind one `prc` router (same LAN).
- `symx` symmetric, and the relay's addresses are dropped (signaling on :443 still works).
- `tls`  a hotel or strict corporate network: NAT as `prc`, and the only traffic allowed out is
         TCP to port 443 of the TLS server's two addresses, where only TLS listens (HTTPS and
         TURN over TLS): everything that leaves is TLS.
- `phone` a SIP desk phone's network: NAT as `prc`, but the router forgets a UDP mapping after
         `PHONE_NAT_UDP_TIMEOUT` s without a packet (a home router's short timer, instead of
         Linux's 120 s), and counts the UDP the phone sends to the SIP port (the keep-alives).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tests.lab.netns import Netns, remove_stale_labs

SERVER_HTTP = "203.0.113.10"
SERVER_RELAY = "203.0.113.20"
RELAY_ONLY_HTTP = "203.0.113.11"
RELAY_ONLY_RELAY = "203.0.113.21"
TLS_HTTP = "203.0.113.12"
TLS_RELAY = "203.0.113.22"
SERVER_ADDRESSES = (
    SERVER_HTTP, SERVER_RELAY, RELAY_ONLY_HTTP, RELAY_ONLY_RELAY, TLS_HTTP, TLS_RELAY,
)  # fmt: skip
INET_SERVER_SIDE = "203.0.113.1"
INET_WAN = "198.51.100.1"

KINDS = ("eim", "prc", "sym", "fw")
SIP_PORT = 5060  # the relay-only server's SIP edge (UDP and TCP) on RELAY_ONLY_HTTP
PHONE_NAT_UDP_TIMEOUT = 4  # s: the phone site's router forgets idle UDP mappings this fast


@dataclass(frozen=True, slots=True)
class Site:
    """A private network behind one NAT router."""

    name: str  # e.g. "eim-a"
    kind: str  # eim, prc, sym, fw, lan, symx
    number: int  # 11.. : WAN 198.51.100.N, LAN 10.N.0.0/24
    hosts: int = 1

    @property
    def wan_ip(self) -> str:
        return f"198.51.100.{self.number}"

    @property
    def gateway(self) -> str:
        return f"10.{self.number}.0.1"

    def host_ip(self, index: int = 0) -> str:
        return f"10.{self.number}.0.{10 + index}"

    def host_name(self, index: int = 0) -> str:
        """The host's namespace short name; also the handle of its user."""
        return f"{self.name}" if self.hosts == 1 else f"{self.name}-{index + 1}"


def default_sites() -> list[Site]:
    sites = [Site(f"{kind}-{side}", kind, 11 + i + 10 * j)
             for j, side in enumerate("ab") for i, kind in enumerate(KINDS)]  # fmt: skip
    sites.append(Site("lan", "lan", 31, hosts=2))
    sites.append(Site("symx", "symx", 32))
    sites.append(Site("tls", "tls", 33))
    sites.append(Site("phone", "phone", 34))
    return sites


def nat_rules(site: Site) -> list[str]:
    """iptables commands for the site's router (WAN interface `wan`, LAN bridge `lan`)."""
    lan = f"10.{site.number}.0.0/24"
    # Like any router's firewall, drop unsolicited packets to the router itself: accepting them
    # would leave a conntrack entry that later clashes with the host's own mapping toward that
    # peer, and MASQUERADE would then pick another port (breaking hole punching for minutes).
    rules = ["iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             "iptables -A INPUT -i wan -j DROP",
             "iptables -P FORWARD DROP",
             "iptables -A FORWARD -i lan -o lan -j ACCEPT",  # bridged, if br_netfilter is loaded
             "iptables -A FORWARD -i wan -o lan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]  # fmt: skip
    if site.kind == "fw":
        rules.append("iptables -A FORWARD -i lan -o wan -p tcp --dport 443 -j ACCEPT")
    elif site.kind == "tls":
        for address in (TLS_HTTP, TLS_RELAY):
            rules.append(
                f"iptables -A FORWARD -i lan -o wan -p tcp -d {address} --dport 443 -j ACCEPT"
            )
    elif site.kind == "symx":
        for address in (SERVER_RELAY, RELAY_ONLY_RELAY):
            rules.append(f"iptables -A FORWARD -i lan -o wan -d {address} -j DROP")
        rules.append("iptables -A FORWARD -i lan -o wan -j ACCEPT")
    else:
        rules.append("iptables -A FORWARD -i lan -o wan -j ACCEPT")
    if site.kind == "eim":
        rules += [
            f"iptables -t nat -A POSTROUTING -o wan -s {lan} -j SNAT --to-source {site.wan_ip}",
            f"iptables -t nat -A PREROUTING -i wan -d {site.wan_ip} -p udp"
            f" -j DNAT --to-destination {site.host_ip()}",
            f"iptables -A FORWARD -i wan -o lan -p udp -d {site.host_ip()}"
            " -m conntrack --ctstate DNAT -j ACCEPT",
        ]
    elif site.kind in ("sym", "symx"):
        rules.append(f"iptables -t nat -A POSTROUTING -o wan -s {lan} -j MASQUERADE --random-fully")
    else:  # prc, fw, lan, tls, phone
        rules.append(f"iptables -t nat -A POSTROUTING -o wan -s {lan} -j MASQUERADE")
    if site.kind == "phone":
        timeout = PHONE_NAT_UDP_TIMEOUT
        rules += [
            f"sysctl -qw net.netfilter.nf_conntrack_udp_timeout={timeout}",
            f"sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream={timeout}",
            # no target: only counts (`iptables -L FORWARD -vx`), before the ACCEPT
            f"iptables -I FORWARD 1 -i lan -o wan -p udp -d {RELAY_ONLY_HTTP} --dport {SIP_PORT}",
        ]
    return rules


@dataclass
class Lab:
    """A built lab: its namespaces and sites. `host_ns(handle)` names a client's namespace."""

    net: Netns
    sites: list[Site]
    server_ns: str = ""
    hosts: dict[str, tuple[str, Site]] = field(default_factory=dict)  # handle -> (ns, site)

    def site(self, name: str) -> Site:
        return next(site for site in self.sites if site.name == name)

    def host_ns(self, handle: str) -> str:
        return self.hosts[handle][0]

    def close(self) -> None:
        self.net.close()


def build(prefix: str | None = None, sites: list[Site] | None = None) -> Lab:
    """Build the whole lab; on any failure, everything made so far is removed again."""
    remove_stale_labs()
    net = Netns(prefix or f"cg{os.getpid()}")
    lab = Lab(net, sites if sites is not None else default_sites())
    try:
        _build_core(lab)
        for site in lab.sites:
            _build_site(lab, site)
    except BaseException:
        net.close()
        raise
    return lab


def _build_core(lab: Lab) -> None:
    net = lab.net
    inet = net.add("inet", forward=True)
    lab.server_ns = srv = net.add("srv")
    if os.environ.get("CALLGATE_TEST_FAST_PATH") == "required":
        # the servers' relays then forward channel data in the kernel (docs/relay-fast-path.md)
        net.sh(srv, "sysctl -qw net.ipv4.conf.lo.forwarding=1")
    net.veth(inet, "srv", srv, "eth0")
    net.ip(inet, "addr", "add", f"{INET_SERVER_SIDE}/24", "dev", "srv")
    for address in SERVER_ADDRESSES:
        net.ip(srv, "addr", "add", f"{address}/24", "dev", "eth0")
    net.ip(srv, "route", "add", "default", "via", INET_SERVER_SIDE)
    net.bridge(inet, "wan")
    net.ip(inet, "addr", "add", f"{INET_WAN}/24", "dev", "wan")


def _build_site(lab: Lab, site: Site) -> None:
    net = lab.net
    inet = net.full("inet")
    router = net.add(f"r-{site.name}", forward=True)
    port = f"p{site.number}"
    net.veth(inet, port, router, "wan")
    net.ip(inet, "link", "set", port, "master", "wan")
    net.ip(router, "addr", "add", f"{site.wan_ip}/24", "dev", "wan")
    net.ip(router, "route", "add", "default", "via", INET_WAN)
    net.bridge(router, "lan")
    net.ip(router, "addr", "add", f"{site.gateway}/24", "dev", "lan")
    for index in range(site.hosts):
        name = site.host_name(index)
        host = net.add(f"h-{name}")
        net.veth(router, f"h{index}", host, "eth0")
        net.ip(router, "link", "set", f"h{index}", "master", "lan")
        net.ip(host, "addr", "add", f"{site.host_ip(index)}/24", "dev", "eth0")
        net.ip(host, "route", "add", "default", "via", site.gateway)
        lab.hosts[name] = (host, site)
    net.sh(router, " && ".join(nat_rules(site)))
