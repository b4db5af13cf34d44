"""deploy/: the example config and environment load with callgate's own settings, and the node
unit starts the command with options it has (a setting the product ignores would be a lie)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callgate.cli.app import app
from callgate.config import load_settings, turn_config
from callgate.runtime.cluster_seal import relay_seal
from callgate.runtime.relay_cluster import registered_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CALLGATE_"):
            monkeypatch.delenv(name)


def test_the_node_examples_load_as_a_cluster_node(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (DEPLOY / "callgate.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    unit = (DEPLOY / "systemd" / "callgate-signaling@.service").read_text()
    start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.MULTILINE)
    assert start is not None
    args = start[2].split()
    assert args[:3] == ["serve", "--config", "/etc/callgate/callgate.toml"]
    assert args[3:] == ["--node-id", "%i"]

    settings = load_settings(DEPLOY / "callgate-node.toml", {"node_id": "a"})
    assert settings.node_id == "a" and settings.node_lease == 10
    assert str(settings.cluster_key_file) == "/etc/callgate/cluster.key"
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value().startswith("redis://")
    assert settings.database().startswith("postgresql+psycopg://")
    assert settings.turn.relay_ip == "203.0.113.11"


def test_a_relay_runs_on_the_key_a_node_issued_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callgate turn --issue-relay-key` on a node writes the relay's own key (mode 0600, no
    overwrite); the relay example environment pointing at it loads as a registered relay."""
    node_key = tmp_path / "cluster.key"
    node_key.write_text("n" * 48)
    node_key.chmod(0o600)
    relay_key = tmp_path / "relay.key"
    issue = ["turn", "--node-id", "relay-eu1", "--issue-relay-key", str(relay_key)]
    env = {"CALLGATE_CLUSTER_KEY_FILE": str(node_key)}
    done = CliRunner().invoke(app, issue, env=env)
    assert done.exit_code == 0, done.output
    assert relay_key.stat().st_mode & 0o777 == 0o600 and "n" * 48 not in relay_key.read_text()
    again = CliRunner().invoke(app, issue, env=env)
    assert again.exit_code == 1 and "exists: not overwritten" in again.output

    for line in (DEPLOY / "relay.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("CALLGATE_RELAY_KEY_FILE", str(relay_key))
    settings = load_settings(None, {})
    config = registered_config(settings, turn_config(settings))
    assert config.call_bound and settings.cluster_key_file is None
    assert relay_seal(settings).keys.node is None  # it holds no node key


def test_serve_has_the_options_the_unit_gives() -> None:
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--config", "--node-id", "--redis-url"):
        assert option in help_text
