"""`[monitor]`: bad values get a precise error that never echoes the webhook secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.config import load_settings
from callgate.errors import ConfigError

SECRET = "a-secret-of-the-right-length"


def load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "callgate.toml"
    path.write_text("[monitor]\n" + body)
    return load_settings(path, {}).monitor


def test_monitor_settings_parse(tmp_path: Path) -> None:
    monitor = load(tmp_path, f'interface = "eth0.100"\nsyslog = "127.0.0.1:514"\n'
                   f'webhook_url = "https://siem.example/hook"\nwebhook_secret = "{SECRET}"\n')  # fmt: skip
    assert monitor.interface == "eth0.100"  # type: ignore[attr-defined]
    assert monitor.syslog == ("127.0.0.1", 514)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('interface = "eth0; rm -rf /"', "expected an interface name"),
        ('interface = "a-name-far-too-long"', "expected an interface name"),
        ('webhook_url = "https://siem.example/hook"', "webhook_url needs webhook_secret"),
        (
            f'webhook_url = "ftp://siem.example/"\nwebhook_secret = "{SECRET}"',
            "http:// or https://",
        ),
        (
            f'webhook_url = "https://u:p@siem.example/"\nwebhook_secret = "{SECRET}"',
            "no credentials in the URL",
        ),
        (
            'webhook_url = "https://siem.example/"\nwebhook_secret = "short-secret"',
            "at least 16 characters",
        ),
        ("interval_s = 0", "monitor.interval_s"),
        ("retention_days = 0", "monitor.retention_days"),
        ("colour = 1", "monitor.colour"),
    ],
)
def test_bad_monitor_settings_are_refused_precisely(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body + "\n")
    assert message in str(caught.value)
    assert "short-secret" not in str(caught.value) and SECRET not in str(caught.value)
