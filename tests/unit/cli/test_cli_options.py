"""CLI option shaping that does not need a running server."""

from __future__ import annotations

import pytest
import typer

from callgate.cli.app import _relay_ips
from callgate.config import load_settings, turn_config


def test_relay_ip_repeated_with_ipv4_and_ipv6_sets_both_relay_addresses() -> None:
    assert _relay_ips(["203.0.113.10", "2001:db8::10"]) == {
        "relay_ip": "203.0.113.10",
        "relay_ip6": "2001:db8::10",
    }
    assert _relay_ips(None) == {"relay_ip": None, "relay_ip6": None}


def test_two_ipv4_relay_addresses_are_refused() -> None:
    with pytest.raises(typer.Exit):
        _relay_ips(["203.0.113.10", "203.0.113.11"])


def test_ipv6_relay_ip_reaches_the_turn_config() -> None:
    settings = load_settings(None, {"turn": _relay_ips(["127.0.0.1", "::1"])})
    config = turn_config(settings)
    assert (config.relay_ip, config.relay_ip6) == ("127.0.0.1", "::1")
