"""Which registered relay a client and a callee are handed (signaling/relay_choice.py)."""

from __future__ import annotations

from typing import Any

from callgate.signaling.iceconfig import IceServerConfig
from callgate.signaling.relay_choice import RelayIce, RelayInfo, ranked, relay_in_use

SECRET = "s3cret"


def relay(
    relay_id: str, region: str, port: int, load: int = 0, draining: bool = False
) -> RelayInfo:
    return RelayInfo(
        relay_id=relay_id,
        region=region,
        udp=(("192.0.2.1", port),),
        tls=(),
        relay_ips=frozenset({"192.0.2.1"}),
        ports=(port * 10, port * 10 + 99),
        load=load,
        draining=draining,
    )


def turn_ports(servers: list[dict[str, Any]]) -> list[int]:
    return [
        int(str(s["urls"][0]).split("?")[0].rsplit(":", 1)[1]) for s in servers if "username" in s
    ]


def test_region_first_then_load_then_id_and_draining_left_out() -> None:
    relays = [
        relay("us1", "us", 3001, load=0),
        relay("eu2", "eu", 3002, load=7),
        relay("eu1", "eu", 3003, load=7),
        relay("eu3", "eu", 3004, load=1),
        relay("eu4", "eu", 3005, load=0, draining=True),
    ]
    assert [r.relay_id for r in ranked(relays, "eu")] == ["eu3", "eu1", "eu2", "us1"]
    assert [r.relay_id for r in ranked(relays, "us")] == ["us1", "eu3", "eu1", "eu2"]
    assert [r.relay_id for r in ranked(relays, "asia")] == ["us1", "eu3", "eu1", "eu2"]


def test_malformed_registrations_are_left_out() -> None:
    good = relay("eu1", "eu", 3478).as_json()
    assert RelayInfo.from_json(good) == relay("eu1", "eu", 3478)
    for bad in (
        None,
        [],
        {**good, "udp": []},
        {**good, "relay_ips": ["not-an-ip"]},
        {**good, "ports": [1]},
        {**good, "load": "many"},
        {k: v for k, v in good.items() if k != "region"},
    ):
        assert RelayInfo.from_json(bad) is None, bad


def test_the_callee_is_handed_the_relay_the_offer_uses_first() -> None:
    eu, us = relay("eu", "eu", 3478), relay("us", "us", 3479)
    # 34885: a port of the us relay (34790-34889), not of the eu relay (34780-34879)
    offer = "v=0\r\na=candidate:1 1 udp 100 192.0.2.1 34885 typ relay raddr 0.0.0.0 rport 0\r\n"
    assert relay_in_use([eu, us], offer) == us
    ice = RelayIce(
        "eu", IceServerConfig(udp=(("192.0.2.9", 3478),), secret=SECRET), lambda: [eu, us], None
    )
    assert turn_ports(ice.ice_servers("bob", 1000.0)) == [3478, 3479]
    assert turn_ports(ice.for_call("bob", 1000.0, offer) or []) == [3479, 3478]
    # the credentials are bob's, signed with the shared secret (coturn's REST scheme)
    assert all(s["username"].endswith(":bob") for s in ice.for_call("bob", 1.0, offer) or [] if
               "username" in s)  # fmt: skip
    # an offer on no registered relay (host candidates only): hello's list stands
    assert ice.for_call("bob", 1000.0, "v=0\r\n") is None


def test_without_registered_relays_the_nodes_relays_are_handed_out() -> None:
    class NodesRelays:
        def ice_servers(self, user: str, now: float) -> list[dict[str, Any]]:
            return [{"urls": ["turn:198.51.100.1:3478?transport=udp"], "username": "x"}]

    own = IceServerConfig(udp=(("192.0.2.9", 3478),), secret=SECRET)
    ice = RelayIce("eu", own, lambda: [relay("eu", "eu", 3478, draining=True)], NodesRelays())
    assert turn_ports(ice.ice_servers("bob", 0.0)) == [3478]
    assert ice.ice_servers("bob", 0.0)[0]["username"] == "x"
