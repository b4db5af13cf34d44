"""hello's ICE servers: only ours, with REST credentials the relay accepts."""

from __future__ import annotations

from pathlib import Path

from callgate.clock import ManualClock
from callgate.keys import load_or_create_secret
from callgate.signaling.iceconfig import IceServerConfig
from callgate.turn.auth import Authenticator, long_term_key


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
