"""`--format nftables`: an nftables ruleset (nft(8), loaded with `nft -f FILE`) that drops traffic to
and from the unsanctioned calling peers and relays a report found.

- relays and servers (path relayed, server or unknown): that address, transport and port only, so
  other services on the same address (a vendor's web front ends) are untouched;
- peer-to-peer peers: that address for the flow's transport, any port (a peer picks new ports for
  each call);
- never an allow-listed relay (`--allow-relay`, any port) nor a sanctioned flow's peer, and never
  an address inside the internal networks (listed as a comment: blocking it would cut the LAN).

Everything is in its own table, `inet callgate_detect`, replaced as a whole on each load (created
empty, deleted and rebuilt in one `nft -f` transaction: `destroy` would need nftables ≥ 1.0.8).
Addresses come from the report and are re-parsed with `ipaddress` before being written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from callgate.detect.report import Report

TABLE = "callgate_detect"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


Target = tuple[str, str, int | None]  # peer address, transport, peer port (None: any port)
TRANSPORTS = ("udp", "tcp")


def to_nftables(
    report: Report, allowed: Iterable[Address], internal: Callable[[Address], bool]
) -> str:
    """The ruleset for `report`'s unsanctioned real-time flows."""
    targets: list[Target] = [
        (flow.peer, flow.transport, None if flow.path == "p2p" else flow.peer_port)
        for flow in report.flows
        if flow.rtc and not flow.sanctioned
    ]
    files = ", ".join(report.files) or "the captures"
    return ruleset(f"callgate detect: drop the unsanctioned calling peers and relays found in "
                   f"{files}", targets, allowed, internal)  # fmt: skip


def findings_ruleset(
    findings: Iterable[tuple[str, Iterable[str]]],
    allowed: Iterable[Address],
    internal: Callable[[Address], bool],
) -> str:
    """The ruleset for stored unsanctioned findings: (peer, targets) with targets such as
    "udp/3478" (that port) or "udp/*" (any port), as records/findings.py keeps them. Entries
    that do not parse are skipped."""
    targets: list[Target] = []
    for peer, entries in findings:
        for entry in entries:
            transport, _, port = entry.partition("/")
            if transport in TRANSPORTS and (port == "*" or (port.isdigit() and int(port) < 65536)):
                targets.append((peer, transport, None if port == "*" else int(port)))
    return ruleset("callgate serve: drop the unsanctioned calling peers and relays the monitor "
                   "found", targets, allowed, internal)  # fmt: skip


def ruleset(
    title: str, targets: Iterable[Target], allowed: Iterable[Address],
    internal: Callable[[Address], bool],
) -> str:  # fmt: skip
    """Drop rules for `targets`, never for an `allowed` address nor an `internal` one."""
    keep = set(allowed)
    exact: set[tuple[Address, str, int]] = set()
    anyport: set[tuple[Address, str]] = set()
    spared: set[str] = set()
    for address, transport, port in targets:
        peer = ipaddress.ip_address(address)
        if peer in keep:
            continue
        if internal(peer):
            spared.add(str(peer))
        elif port is None:
            anyport.add((peer, transport))
        else:
            exact.add((peer, transport, port))
    exact = {(a, t, p) for a, t, p in exact if (a, t) not in anyport}
    return _render(title, exact, anyport, spared)


def _render(title: str, exact: set[tuple[Address, str, int]], anyport: set[tuple[Address, str]],
            spared: set[str]) -> str:  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    title = "".join(c if c.isprintable() else "?" for c in title)
    lines = [
        "#!/usr/sbin/nft -f",
        f"# {title} ({stamp}).",
        "# Allow-listed relays, sanctioned flows and internal addresses are never listed.",
    ]
    lines += [f"# internal peer, not blocked: {address}" for address in sorted(spared)]
    lines += [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    rules: list[str] = []
    for family, kind, match in (("v4", "ipv4_addr", "ip"), ("v6", "ipv6_addr", "ip6")):
        version = 4 if family == "v4" else 6
        services = sorted((a, t, p) for a, t, p in exact if a.version == version)
        hosts = sorted((a, t) for a, t in anyport if a.version == version)
        if services:
            name = f"services_{family}"
            elements = ", ".join(f"{a} . {t} . {p}" for a, t, p in services)
            lines += [f"    set {name} {{", f"        type {kind} . inet_proto . inet_service",
                      f"        elements = {{ {elements} }}", "    }"]  # fmt: skip
            rules += [f"{match} daddr . meta l4proto . th dport @{name} counter drop",
                      f"{match} saddr . meta l4proto . th sport @{name} counter drop"]  # fmt: skip
        if hosts:
            name = f"peers_{family}"
            elements = ", ".join(f"{a} . {t}" for a, t in hosts)
            lines += [f"    set {name} {{", f"        type {kind} . inet_proto",
                      f"        elements = {{ {elements} }}", "    }"]  # fmt: skip
            rules += [f"{match} daddr . meta l4proto @{name} counter drop",
                      f"{match} saddr . meta l4proto @{name} counter drop"]  # fmt: skip
    for hook in ("output", "forward", "input"):
        lines.append(f"    chain {hook} {{")
        lines.append(f"        type filter hook {hook} priority filter; policy accept;")
        lines += [f"        {rule}" for rule in rules]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"
