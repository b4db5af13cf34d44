"""Directory group mapping, handles from directory names, filter escaping and the [identity.ldap]
settings' checks (pure: no directory needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callgate.config import load_settings
from callgate.errors import ConfigError
from callgate.identity.directory import id_filter_value, user_search_filter
from callgate.identity.mapping import GroupRules, decide, handle_from
from callgate.identity.settings import LdapSettings

RULES = GroupRules(
    group_map={"IT-Staff": ["it"], "everyone": ["staff"], "Sales": ["sales", "staff"]},
    role_map={"voice-admins": "admin", "auditors": "compliance"},
)


def test_groups_and_highest_role() -> None:
    decision = decide(RULES, ["it-staff", "Voice-Admins", "auditors", "printers"])
    assert decision.groups == ("it",)
    assert decision.role == "admin"  # admin beats compliance
    assert decision.mapped == {"it-staff": ["it"]}
    assert decision.roles == {"auditors": "compliance", "Voice-Admins": "admin"}
    assert decision.unmapped == ["printers"]
    assert decision.allowed


def test_no_mapped_group_gives_default_role_and_no_groups() -> None:
    decision = decide(RULES, ["printers"])
    assert (decision.groups, decision.role, decision.unmapped) == ((), "user", ["printers"])


def test_groups_merge_without_duplicates() -> None:
    assert decide(RULES, ["sales", "everyone"]).groups == ("sales", "staff")


def test_allowed_groups() -> None:
    rules = GroupRules(allowed_groups=["Voice-Users"])
    assert not decide(rules, ["sales"]).allowed
    assert decide(rules, ["voice-users"]).allowed


@pytest.mark.parametrize(
    ("value", "handle"),
    [
        ("alice", "alice"),
        ("Alice.Martin", "alice.martin"),
        ("alice@corp.example.com", "alice"),  # UPN / mail: the part before @
        ("Weird Name", None),
        ("", None),
        ("a" * 65, None),
        ("élodie", None),
    ],
)
def test_handle_from_directory_name(value: str, handle: str | None) -> None:
    assert handle_from(value) == handle


def test_user_filter_escapes_rfc4515() -> None:
    from ldap3.utils.conv import escape_filter_chars

    settings = LdapSettings(user_filter="(objectClass=person)")
    query = user_search_filter(settings, "uid", escape_filter_chars("*)(uid=*))(|(uid=*\\\x00"))
    assert query == (
        "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a\\5c\\00))"
    )


def test_binary_ids_are_escaped_byte_by_byte() -> None:
    assert id_filter_value("hex:00ff2a") == "\\00\\ff\\2a"
    assert id_filter_value("a*b") == "a\\2ab"


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "callgate.toml"
    path.write_text(text)
    load_settings(path)


BASE_LDAP = """
[identity.ldap]
enabled = true
bind_dn = "cn=svc,dc=example,dc=com"
bind_password = "x"
user_base = "ou=people,dc=example,dc=com"
"""


def test_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "callgate.toml"
    path.write_text(
        BASE_LDAP + 'group_map = { "it-staff" = ["it"] }\nrole_map = { "admins" = "admin" }\n'
    )
    ldap = load_settings(path).identity.ldap
    assert ldap.enabled and ldap.group_map == {"it-staff": ["it"]}
    assert ldap.role_map == {"admins": "admin"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('url = "ldap://10.0.0.1:389"', "in clear"),
        ('url = "ldaps://h:636"\nstart_tls = true', "start_tls is for ldap://"),
        ('url = "http://h"', "url must be"),
        ('role_map = { "g" = "root" }', "role_map"),
        ('group_map = { "g" = ["bad name"] }', "group_map"),
        ('user_filter = "objectClass=person"', "parenthesised"),
        ('user_filter = "(&(a=b)"', "parenthesised"),
        ('login_attribute = "uid)(x"', "attribute"),
        ("check_interval_s = 50", "check_interval_s"),
    ],
)
def test_bad_settings_name_the_option(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"identity\.ldap") as caught:
        _load(tmp_path, BASE_LDAP + extra + "\n")
    assert message in str(caught.value)


def test_service_account_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bind_dn and bind_password"):
        _load(tmp_path, '[identity.ldap]\nenabled = true\nuser_base = "dc=x"\n')


def test_bind_password_never_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, BASE_LDAP.replace('"x"', '"s3cret-pw"') + 'url = "ldap://h:389"\n')
    assert "s3cret-pw" not in str(caught.value)
