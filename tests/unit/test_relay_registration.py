"""What a registered `callgate turn` needs before it starts (runtime/relay_cluster.py), and the
relay key it signs its registration with (runtime/cluster_keys.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from callgate.config import Settings, turn_config
from callgate.errors import ConfigError
from callgate.runtime.cluster_keys import ClusterKeys
from callgate.runtime.relay_cluster import registered_config

REDIS = "redis://127.0.0.1:6379/0"
DB = "postgresql+psycopg://u:p@127.0.0.1/callgate"


NODE_KEY = b"k" * 40


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """Relay eu1's own key file, issued from the node key."""
    path = tmp_path / "relay.key"
    path.write_text(ClusterKeys.for_node(NODE_KEY).relay_key_line("eu1"))
    path.chmod(0o600)
    return path


def settings(key: Path | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "relay_key_file": key,
        "node_id": "eu1",
        "redis_url": REDIS,
        "database_url": DB,
        "region": "eu",
        "turn": {"auth_secret": "shared"},
    }
    values.update(overrides)
    return Settings(**values)


def test_a_registered_relay_is_call_bound_unless_told_not_to(key: Path) -> None:
    good = settings(key)
    assert registered_config(good, turn_config(good)).call_bound
    opted_out = settings(key, turn={"auth_secret": "shared", "call_bound": False})
    assert not registered_config(opted_out, turn_config(opted_out)).call_bound


@pytest.mark.parametrize(
    ("overrides", "needs"),
    [
        ({"node_id": None}, "--node-id"),
        ({"database_url": None}, "--database-url"),
        ({"turn": {}}, "turn.auth_secret"),
        ({"turn": {"auth_secret": "shared", "workers": 2}}, "one process"),
        ({"relay_key_file": None}, "needs relay_key_file"),
        ({"node_id": "us1"}, "the relay key is for relay 'eu1', not for 'us1'"),
        ({"relay_key": "k" * 40}, "relay_key_file and CALLGATE_RELAY_KEY are both set"),
    ],
)
def test_what_is_missing_is_named(key: Path, overrides: dict[str, Any], needs: str) -> None:
    bad = settings(**{"key": key, **overrides})
    with pytest.raises(ConfigError, match=needs):
        registered_config(bad, turn_config(bad))


@pytest.mark.parametrize("region", ["", "eu west", "x" * 65, "eu/1"])
def test_a_bad_region_is_refused(region: str) -> None:
    with pytest.raises(ValidationError, match="region"):
        settings(region=region)
