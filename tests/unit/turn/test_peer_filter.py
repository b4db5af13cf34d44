"""The peer filter: special-purpose ranges refused by default, in IPv4 and IPv4-mapped IPv6
form; an allow-list opens them; a deny-list beats everything (RFC 8656 §21.1.3)."""

from __future__ import annotations

import pytest

from callgate.errors import ConfigError
from callgate.turn.peers import PeerFilter

# (range, addresses in it: first, last and a notable one)
DENIED_V4 = {
    "0.0.0.0/8": ["0.0.0.0", "0.1.2.3", "0.255.255.255"],
    "10.0.0.0/8": ["10.0.0.0", "10.1.2.3", "10.255.255.255"],
    "100.64.0.0/10": ["100.64.0.0", "100.100.100.100", "100.127.255.255"],
    "127.0.0.0/8": ["127.0.0.1", "127.0.0.0", "127.255.255.255"],
    "169.254.0.0/16": ["169.254.0.1", "169.254.169.254", "169.254.255.255"],
    "172.16.0.0/12": ["172.16.0.0", "172.20.1.1", "172.31.255.255"],
    "192.168.0.0/16": ["192.168.0.0", "192.168.1.1", "192.168.255.255"],
    "224.0.0.0/4": ["224.0.0.1", "239.255.255.250", "239.255.255.255"],
    "240.0.0.0/4": ["240.0.0.0", "250.1.2.3", "255.255.255.255"],
}
DENIED_V6 = {
    "::/128": ["::"],
    "::1/128": ["::1"],
    "fc00::/7": ["fc00::", "fd12:3456:789a::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
    "fe80::/10": ["fe80::", "fe80::1", "fe80::1%eth0", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
    "ff00::/8": ["ff00::", "ff02::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
}
V4_CASES = [(net, ip) for net, ips in DENIED_V4.items() for ip in ips]
V6_CASES = [(net, ip) for net, ips in DENIED_V6.items() for ip in ips]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111", "203.0.113.5"]


@pytest.fixture
def default() -> PeerFilter:
    return PeerFilter()


@pytest.mark.parametrize(("net", "ip"), V4_CASES, ids=[f"{n}-{i}" for n, i in V4_CASES])
def test_default_refuses_ipv4_range(default: PeerFilter, net: str, ip: str) -> None:
    assert not default.permits(ip)


@pytest.mark.parametrize(("net", "ip"), V4_CASES, ids=[f"{n}-{i}" for n, i in V4_CASES])
def test_default_refuses_ipv4_mapped_form(default: PeerFilter, net: str, ip: str) -> None:
    assert not default.permits(f"::ffff:{ip}")
    # The same address written in hex groups.
    a, b, c, d = (int(x) for x in ip.split("."))
    assert not default.permits(f"::ffff:{a << 8 | b:x}:{c << 8 | d:x}")


@pytest.mark.parametrize(("net", "ip"), V4_CASES, ids=[f"{n}-{i}" for n, i in V4_CASES])
def test_default_refuses_ipv4_compatible_and_nat64_forms(
    default: PeerFilter, net: str, ip: str
) -> None:
    """::a.b.c.d and 64:ff9b::a.b.c.d (a NAT64 gateway delivers the latter to a.b.c.d)."""
    assert not default.permits(f"::{ip}")
    assert not default.permits(f"64:ff9b::{ip}")


def test_nat64_form_of_a_public_address_is_permitted(default: PeerFilter) -> None:
    assert default.permits("64:ff9b::8.8.8.8")
    assert default.permits("::8.8.8.8")


def test_allow_list_applies_to_nat64_form() -> None:
    assert PeerFilter(allow=["127.0.0.0/8"]).permits("64:ff9b::127.0.0.1")


@pytest.mark.parametrize(("net", "ip"), V6_CASES, ids=[f"{n}-{i}" for n, i in V6_CASES])
def test_default_refuses_ipv6_range(default: PeerFilter, net: str, ip: str) -> None:
    assert not default.permits(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_default_permits_public_addresses(default: PeerFilter, ip: str) -> None:
    assert default.permits(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1"])
def test_default_permits_mapped_public_addresses(default: PeerFilter, ip: str) -> None:
    assert default.permits(f"::ffff:{ip}")


def test_boundaries_of_ranges_are_exact(default: PeerFilter) -> None:
    for outside in ("11.0.0.0", "9.255.255.255", "100.63.255.255", "100.128.0.0", "172.15.255.255"):
        assert default.permits(outside), outside
    for outside in ("172.32.0.0", "169.253.255.255", "223.255.255.255", "192.169.0.0"):
        assert default.permits(outside), outside
    for outside in ("2001:4860::1", "fbff::1", "fec0::1", "feff::1"):
        assert default.permits(outside), outside


def test_6to4_form_of_a_private_address_is_refused(default: PeerFilter) -> None:
    assert not default.permits("2002:a00:1::1")  # 6to4 of 10.0.0.1
    assert not default.permits("2002:7f00:1::1")  # 6to4 of 127.0.0.1
    assert default.permits("2002:808:808::1")  # 6to4 of 8.8.8.8


def test_allow_list_opens_loopback_and_its_mapped_form() -> None:
    loopback = PeerFilter(allow=["127.0.0.0/8"])
    assert loopback.permits("127.0.0.1")
    assert loopback.permits("127.1.2.3")
    assert loopback.permits("::ffff:127.0.0.1")
    # Only what was allowed.
    assert not loopback.permits("10.0.0.1")
    assert not loopback.permits("::1")
    assert not loopback.permits("169.254.169.254")


def test_allow_list_opens_ipv6_loopback() -> None:
    assert PeerFilter(allow=["::1/128"]).permits("::1")


def test_deny_list_beats_allow_list() -> None:
    peers = PeerFilter(allow=["127.0.0.0/8"], deny=["127.0.0.2/32"])
    assert peers.permits("127.0.0.1")
    assert not peers.permits("127.0.0.2")
    assert not peers.permits("::ffff:127.0.0.2")


def test_deny_list_refuses_public_addresses() -> None:
    peers = PeerFilter(deny=["203.0.113.0/24", "2001:db8::/32"])
    assert not peers.permits("203.0.113.5")
    assert not peers.permits("::ffff:203.0.113.5")
    assert not peers.permits("2001:db8::1")
    assert peers.permits("8.8.8.8")


@pytest.mark.parametrize(
    "host", ["", "localhost", "example.com", "999.1.1.1", "1.2.3", "::ffff::1", "8.8.8.8 ", "[::1]"]
)
def test_garbage_host_is_refused(default: PeerFilter, host: str) -> None:
    assert not default.permits(host)


def test_verdicts_are_stable_across_calls(default: PeerFilter) -> None:
    """The verdict cache must not turn a refusal into a permission, or the other way round."""
    for _ in range(3):
        assert not default.permits("10.0.0.1")
        assert default.permits("8.8.8.8")


@pytest.mark.parametrize(
    ("kwargs", "option", "value"),
    [
        ({"allow": ["10.0.0.0/33"]}, "allow-peer", "10.0.0.0/33"),
        ({"allow": ["not-a-network"]}, "allow-peer", "not-a-network"),
        ({"deny": ["fe80::/129"]}, "deny-peer", "fe80::/129"),
        ({"deny": ["1.2.3.4/8", "bogus"]}, "deny-peer", "bogus"),
    ],
)
def test_bad_cidr_is_config_error_naming_the_option(
    kwargs: dict[str, list[str]], option: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PeerFilter(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{option}: ")
    assert repr(value) in message


def test_host_bits_in_cidr_are_accepted() -> None:
    assert PeerFilter(allow=["127.0.0.1/8"]).permits("127.9.9.9")
