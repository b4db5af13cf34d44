"""hello's ICE servers: only ours, with REST credentials the relay accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from callgate.clock import ManualClock
from callgate.keys import load_or_create_secret
from callgate.runtime.calling import tls_urls
from callgate.signaling.iceconfig import IceServerConfig
from callgate.turn.auth import Authenticator, long_term_key
from callgate.turn.config import TurnConfig
from callgate.turn.server import TurnServer
from callgate.types import Transport


def test_ice_servers_carry_rest_credentials_our_relay_accepts() -> None:
    clock = ManualClock()
    config = IceServerConfig(udp=(("127.0.0.1", 3478), ("::1", 3478)), secret="s3cr3t", ttl=300)
    stun, turn = config.ice_servers("alice", clock.wall())
    assert stun == {"urls": ["stun:127.0.0.1:3478", "stun:[::1]:3478"]}
    assert "turn:127.0.0.1:3478?transport=udp" in turn["urls"]
    assert "turn:[::1]:3478?transport=tcp" in turn["urls"]
    assert turn["username"] == f"{int(clock.wall()) + 300}:alice"

    auth = Authenticator("callgate", clock, rest_secret="s3cr3t")
    credential = auth.credential(turn["username"])
    assert credential is not None and credential.user == "alice"
    assert credential.key == long_term_key(turn["username"], "callgate", turn["credential"])
    clock.advance(301)
    assert auth.credential(turn["username"]) is None  # the TTL is short and enforced


def test_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path, "turn-secret")
    assert len(first) >= 40
    path = tmp_path / "keys" / "turn-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path, "turn-secret") == first


def test_a_tls_listener_is_offered_as_turns_after_the_plain_urls() -> None:
    config = TurnConfig(listen=(("203.0.113.22", 3478),), relay_ip="203.0.113.22")
    server = TurnServer(config)
    server.bound = [
        (Transport.UDP, ("203.0.113.22", 3478)),
        (Transport.TCP, ("203.0.113.22", 3478)),
        (Transport.TLS, ("0.0.0.0", 443)),  # a wildcard listener: clients get the relay address
    ]
    assert tls_urls(server) == (("203.0.113.22", 443),)
    ice = IceServerConfig(udp=(("203.0.113.22", 3478),), tls=tls_urls(server), secret="s")
    _stun, turn = ice.ice_servers("alice", 1e9)
    assert turn["urls"][-1] == "turns:203.0.113.22:443?transport=tcp"
    # with a name for the certificate (production: turns:turn.example.com:443)
    named = TurnServer(dataclasses.replace(config, tls_name="turn.example.com"))
    named.bound = [(Transport.TLS, ("203.0.113.22", 443)), (Transport.TLS, ("::", 5349))]
    assert tls_urls(named) == (("turn.example.com", 443), ("turn.example.com", 5349))
    assert tls_urls(TurnServer(config)) == ()  # no TLS listener, no turns: URL


def test_every_node_hands_out_every_relay_in_one_order() -> None:
    """Several nodes: both parties of a cross-node call get the same relays in the same order
    (aiortc uses only the first TURN server; call-bound relaying needs a common relay)."""
    from callgate.signaling.iceconfig import ClusterIce, relay_endpoints

    configs = {
        node: IceServerConfig(udp=(("127.0.0.1", port),), secret="shared", ttl=600)
        for node, port in (("a", 3478), ("b", 3479), ("c", 3480))
    }
    endpoints = {node: relay_endpoints(config) for node, config in configs.items()}

    def handed_out(node: str) -> list[str]:
        others = {n: e for n, e in endpoints.items() if n != node}
        ice = ClusterIce(node, configs[node], lambda: others)
        servers = ice.ice_servers("alice", 1_800_000_000.0)
        turn = [s for s in servers if "username" in s]
        assert len({(s["username"], s["credential"]) for s in turn}) == 1  # one shared secret
        return [s["urls"][0] for s in turn]

    assert handed_out("b") == handed_out("c") == handed_out("a")
    assert handed_out("c")[0].startswith("turn:127.0.0.1:3478")  # node a's relay first
