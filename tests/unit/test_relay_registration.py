"""What a registered `callgate turn` needs before it starts (runtime/relay_cluster.py), and the
relay key it signs its registration with (runtime/cluster_keys.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from callgate.config import Settings, turn_config
from callgate.errors import ConfigError, StorageError
from callgate.runtime.cluster_keys import ClusterKeys
from callgate.runtime.relay_cluster import registered_config, run_registered
from callgate.storage.db import HEAD_REVISION, open_store

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


def test_a_registered_relay_never_migrates_the_database(key: Path, tmp_path: Path) -> None:
    """Its login need not own the schema: on a database not at this version's schema the relay
    refuses to start, naming both revisions, and creates nothing; on a current one it opens."""
    path = tmp_path / "callgate.db"
    url = f"sqlite:///{path}"
    relay = settings(key, database_url=url)
    config = registered_config(relay, turn_config(relay))

    def start() -> None:
        asyncio.run(run_registered(relay, config, asyncio.Event(), lambda *_: None))

    with pytest.raises(StorageError, match=r"revision none \(no callgate tables\); this "
                       rf"callgate needs {HEAD_REVISION}\. A relay never migrates"):  # fmt: skip
        start()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    open_store(url).close()  # a node of this version migrated it
    open_store(url, migrate_schema=False).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(StorageError, match=f"revision 0001; this callgate needs {HEAD_REVISION}"):
        start()
