"""The console's block list (`findings_ruleset`): stored findings' targets become drop rules — a
relay's port only, a peer-to-peer peer any port — never for our own relays or internal
addresses, and entries that do not parse are skipped."""

from __future__ import annotations

import ipaddress

from callgate.detect.nftables import findings_ruleset

OURS = ipaddress.ip_address("192.0.2.10")


def internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address in ipaddress.ip_network("10.0.0.0/8")


def test_findings_become_drop_rules_sparing_our_relays_and_internal_hosts() -> None:
    text = findings_ruleset(
        [
            ("203.0.113.5", ["udp/3478", "tcp/443"]),  # a vendor relay: those ports only
            ("198.51.100.7", ["udp/*", "udp/50000"]),  # a p2p peer: any UDP port wins
            ("2001:db8::9", ["udp/*"]),
            ("192.0.2.10", ["udp/*"]),  # our relay
            ("10.1.2.3", ["udp/*"]),  # internal
            ("198.51.100.8", ["icmp/1", "udp/70000", "udp/x", "sctp/*"]),  # none parse
        ],
        [OURS],
        internal,
    )
    assert "203.0.113.5 . tcp . 443, 203.0.113.5 . udp . 3478" in text
    assert "elements = { 198.51.100.7 . udp }" in text
    assert "elements = { 2001:db8::9 . udp }" in text
    assert "198.51.100.7 . udp . 50000" not in text
    assert "192.0.2.10" not in text and "198.51.100.8" not in text
    assert "# internal peer, not blocked: 10.1.2.3" in text
    assert (
        text.count("counter drop") == 3 * 6
    )  # services v4, peers v4, peers v6, 2 rules each, 3 hooks
