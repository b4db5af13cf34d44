"""Fixtures for the identity tests: a real OpenLDAP slapd per test module (tests/identity/slapd.py).

Without Debian's slapd and ldap-utils the tests are skipped, except under CI (CI=true), where
they fail: `scripts/test` installs both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from callgate.identity.settings import LdapSettings
from tests.identity.slapd import BASE, SERVICE_DN, SERVICE_PW, Slapd, missing


def _need_slapd() -> None:
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the directory tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    _need_slapd()
    server = Slapd(tmp_path_factory.mktemp("slapd")).start()
    try:
        yield server
    finally:
        server.stop()


GROUP_MAP = {"it-staff": ["it"], "sales": ["sales"], "everyone": ["staff"]}
ROLE_MAP = {"voice-admins": "admin"}


def ldap_settings(server: Slapd, **changes: object) -> LdapSettings:
    """Settings for `server` over LDAPS with the test CA (changes override fields)."""
    values: dict[str, object] = {
        "enabled": True,
        "url": server.ldaps_url,
        "ca_file": server.ca_file,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PW,
        "user_base": f"ou=people,{BASE}",
        "group_base": f"ou=groups,{BASE}",
        "disabled_filter": "(employeeType=disabled)",
        "group_map": GROUP_MAP,
        "role_map": ROLE_MAP,
        "timeout_s": 5,
    }
    values.update(changes)
    return LdapSettings.model_validate(values)


def ldap_env(server: Slapd, **changes: str) -> dict[str, str]:
    """The same settings as CALLGATE_IDENTITY__LDAP__* for `callgate serve`."""
    import json

    env = {
        "ENABLED": "true",
        "URL": server.ldaps_url,
        "CA_FILE": str(server.ca_file),
        "BIND_DN": SERVICE_DN,
        "BIND_PASSWORD": SERVICE_PW,
        "USER_BASE": f"ou=people,{BASE}",
        "GROUP_BASE": f"ou=groups,{BASE}",
        "DISABLED_FILTER": "(employeeType=disabled)",
        "GROUP_MAP": json.dumps(GROUP_MAP),
        "ROLE_MAP": json.dumps(ROLE_MAP),
    }
    env.update(changes)
    return {f"CALLGATE_IDENTITY__LDAP__{k}": v for k, v in env.items()}


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
