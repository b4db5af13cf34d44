"""Settings: parsing helpers, sources and their precedence, error messages naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.config import (
    load_settings,
    parse_cidr,
    parse_hostport,
    parse_port_range,
    parse_user,
    turn_config,
)
from callgate.errors import ConfigError
from callgate.turn.config import TurnConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CALLGATE_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:3478", ("127.0.0.1", 3478)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:3478", ("::1", 3478)),
        ("[2001:DB8::1]:5349", ("2001:db8::1", 5349)),
        (" 10.1.2.3:65535 ", ("10.1.2.3", 65535)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected HOST:PORT"),
        ("::1:3478", "expected HOST:PORT"),
        ("[::1]3478", "expected HOST:PORT"),
        ("127.0.0.1:port", "expected HOST:PORT"),
        ("127.0.0.1:70000", "port out of range"),
        ("example.com:3478", "expected an IP address"),
        (":3478", "expected HOST:PORT"),
    ],
)
def test_parse_hostport_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hostport(text)


def test_parse_port_range() -> None:
    assert parse_port_range("49152-65535") == (49152, 65535)
    assert parse_port_range("50000-50000") == (50000, 50000)
    for bad in ("50000", "5-3", "0-10", "1-70000", "a-b", "-5"):
        with pytest.raises(ValueError, match="MIN"):
            parse_port_range(bad)


def test_parse_user_keeps_colons_in_password_and_never_echoes_it() -> None:
    assert parse_user("alice:pa:ss") == ("alice", "pa:ss")
    for bad in ("alice", "alice:", ":hunter2"):
        with pytest.raises(ValueError) as info:
            parse_user(bad)
        assert "hunter2" not in str(info.value)
        assert "NAME:PASSWORD" in str(info.value)


def test_parse_cidr() -> None:
    assert parse_cidr("127.0.0.0/8") == "127.0.0.0/8"
    assert parse_cidr("::1") == "::1/128"
    assert parse_cidr("192.168.1.7") == "192.168.1.7/32"
    with pytest.raises(ValueError, match="host bits set"):
        parse_cidr("10.0.0.1/8")
    with pytest.raises(ValueError, match="CIDR"):
        parse_cidr("not-a-net")


def test_defaults_match_turn_config_defaults() -> None:
    settings = load_settings()
    assert turn_config(settings) == TurnConfig()
    assert settings.http == ("127.0.0.1", 8080)
    assert settings.metrics is None
    assert settings.log_level == "INFO"
    assert settings.database() == f"sqlite:///{Path('data').resolve() / 'callgate.sqlite3'}"


def test_precedence_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "callgate.toml"
    config.write_text(
        'data_dir = "/srv/callgate"\n'
        "[turn]\n"
        'listen = ["0.0.0.0:3478", "[::]:3478"]\n'
        'realm = "file.example"\n'
        'relay_ports = "40000-40100"\n'
        'users = ["alice:from-file"]\n'
        "max_allocations_per_user = 3\n"
    )
    monkeypatch.setenv("CALLGATE_TURN__REALM", "env.example")
    monkeypatch.setenv("CALLGATE_TURN__ALLOW_PEERS", "127.0.0.0/8, ::1")
    monkeypatch.setenv("CALLGATE_TURN__AUTH_SECRET", "s3cret")
    monkeypatch.setenv("CALLGATE_HTTP", "[::1]:9000")
    settings = load_settings(config, {"turn": {"realm": "cli.example", "listen": None}})
    turn = turn_config(settings)
    assert turn.realm == "cli.example"  # CLI beats env beats file
    assert turn.listen == (("0.0.0.0", 3478), ("::", 3478))  # CLI None = not given
    assert (turn.relay_port_min, turn.relay_port_max) == (40000, 40100)
    assert turn.users == {"alice": "from-file"}
    assert turn.allow_peers == ("127.0.0.0/8", "::1/128")
    assert turn.auth_secret == "s3cret"
    assert turn.max_allocations_per_user == 3
    assert settings.http == ("::1", 9000)
    assert settings.data_dir == Path("/srv/callgate")
    assert "s3cret" not in repr(settings) and "from-file" not in repr(settings)


def test_config_file_from_env_and_users_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[turn.users]\nbob = "pw1"\n')
    monkeypatch.setenv("CALLGATE_CONFIG", str(config))
    monkeypatch.setenv("CALLGATE_TURN__LISTEN", '["127.0.0.1:1", "127.0.0.1:2"]')
    turn = turn_config(load_settings())
    assert turn.users == {"bob": "pw1"}
    assert turn.listen == (("127.0.0.1", 1), ("127.0.0.1", 2))


def test_cli_overrides_map_onto_turn_config() -> None:
    overrides = {
        "turn": {
            "listen": ["127.0.0.1:0"],
            "relay_ip": "127.0.0.1",
            "users": ["a:1", "b:2"],
            "max_allocations": 50,
            "bandwidth": 64000,
            "tls_listen": ["127.0.0.1:5349"],
            "cert": "/etc/cert.pem",
            "key": "/etc/key.pem",
        },
        "metrics": "127.0.0.1:9100",
        "log_level": "debug",
    }
    settings = load_settings(None, overrides)
    turn = turn_config(settings)
    assert turn.listen == (("127.0.0.1", 0),)
    assert turn.users == {"a": "1", "b": "2"}
    assert turn.max_allocations_total == 50
    assert turn.max_bandwidth_per_allocation == 64000
    assert turn.tls_listen == (("127.0.0.1", 5349),)
    assert (turn.cert_file, turn.key_file) == ("/etc/cert.pem", "/etc/key.pem")
    assert settings.metrics == ("127.0.0.1", 9100)
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"turn": {"relay_ports": "5-3"}},
            "turn.relay_ports (--relay-ports, CALLGATE_TURN__RELAY_PORTS)",
        ),
        ({"turn": {"listen": ["1.2.3.4"]}}, "turn.listen (--listen, CALLGATE_TURN__LISTEN)"),
        ({"turn": {"users": ["nopassword"]}}, "turn.users (--user, CALLGATE_TURN__USERS)"),
        ({"turn": {"allow_peers": ["10.0.0.1/8"]}}, "turn.allow_peers (--allow-peer,"),
        ({"turn": {"relay_ip": "::1"}}, "relay_ip must be IPv4"),
        ({"turn": {"relay_ip": "nope"}}, "turn.relay_ip (--relay-ip"),
        ({"turn": {"relay_ip6": "10.0.0.1"}}, "relay_ip6 must be an IPv6 address"),
        ({"turn": {"tls_listen": ["0.0.0.0:5349"]}}, "--tls-listen needs --cert and --key"),
        ({"turn": {"cert": "/c.pem"}}, "--cert and --key go together"),
        ({"turn": {"max_allocations": -1}}, "turn.max_allocations (--max-allocations"),
        ({"turn": {"default_lifetime": 7200}}, "default_lifetime is larger than max_lifetime"),
        ({"log_level": "loud"}, "log_level (--log-level, CALLGATE_LOG_LEVEL)"),
        ({"http": "localhost"}, "http (--http, CALLGATE_HTTP)"),
        ({"metrics": "1.2.3.4:99999"}, "metrics (--metrics, CALLGATE_METRICS)"),
        (
            {"recording": {"archive": {"endpoint_url": "http://s3.example.com"}}},
            "plain http only to a loopback host",
        ),
        ({"recording": {"archive": {"endpoint_url": "ftp://x"}}}, "must be an http(s)://HOST"),
        ({"recording": {"archive": {"bucket": "No_Such"}}}, "recording.archive.bucket"),
        ({"recording": {"retention_days": 0}}, "recording.retention_days"),
        ({"calls": {"max_hold_s": 5}}, "calls.max_hold_s"),
    ],
)
def test_errors_name_the_option(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, overrides)
    assert message in str(info.value)


def test_error_for_user_never_contains_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"turn": {"users": [":hunter2"]}})
    assert "hunter2" not in str(info.value)


def test_config_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="--config: file not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[turn\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[turn]\nrelam = 'x'\n")
    with pytest.raises(ConfigError, match=r"turn\.relam .*Extra inputs are not permitted"):
        load_settings(typo)
    monkeypatch.setenv("CALLGATE_TURN__LISTEN", "garbage")
    with pytest.raises(ConfigError, match=r"turn\.listen"):
        load_settings()
