"""The periodic directory check (identity/ldap_sync.py) against a real slapd, on both backends:
leavers are disabled, movers refreshed, and a directory where nobody is found any more disables
nobody."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callgate.identity.directory import LdapDirectory
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.ldap_sync import CheckResult, DirectoryCheck
from callgate.identity.linked import LinkedAccounts
from callgate.storage.db import Store
from tests.identity.conftest import ldap_settings
from tests.identity.slapd import PASSWORDS, Slapd

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def linked_account(linked: LinkedAccounts, handle: str, external_id: str) -> None:
    profile = {
        "handle": handle, "display_name": handle, "email": None, "groups": ("old",),
        "role": "user",
    }  # fmt: skip
    linked.create("ldap", external_id, profile, NOW, {})


def test_leavers_disabled_movers_refreshed(slapd: Slapd, store: Store) -> None:
    directory = LdapDirectory(ldap_settings(slapd))
    alice = directory.authenticate("alice", PASSWORDS["alice"])
    assert alice is not None
    linked = LinkedAccounts(store, "callgate")
    linked_account(linked, "alice", alice.external_id)
    linked_account(linked, "gone", "00000000-0000-0000-0000-00000000dead")
    result = DirectoryCheck(directory, store, "callgate").check_once()
    assert result == CheckResult(checked=2, disabled=1, updated=1, gone=("gone",))
    fresh = linked.find("ldap", alice.external_id)
    assert fresh is not None and not fresh.disabled
    assert (fresh.groups, fresh.role, fresh.display_name) == (
        ("it", "staff"),
        "admin",
        "Alice Martin",
    )
    gone = linked.find("ldap", "00000000-0000-0000-0000-00000000dead")
    assert gone is not None and gone.disabled


def test_nobody_found_disables_nobody(slapd: Slapd, store: Store) -> None:
    linked = LinkedAccounts(store, "callgate")
    for n in range(3):
        linked_account(linked, f"user{n}", f"00000000-0000-0000-0000-00000000000{n}")
    # A wrong base: the searches succeed and find nobody.
    directory = LdapDirectory(ldap_settings(slapd, user_base="ou=groups,dc=example,dc=com"))
    with pytest.raises(DirectoryUnavailable, match="nobody disabled"):
        DirectoryCheck(directory, store, "callgate").check_once()
    assert sorted(u.handle for u, _ in linked.linked("ldap")) == ["user0", "user1", "user2"]


def test_directory_down_changes_nothing(slapd: Slapd, store: Store) -> None:
    linked = LinkedAccounts(store, "callgate")
    linked_account(linked, "user0", "00000000-0000-0000-0000-000000000000")
    directory = LdapDirectory(ldap_settings(slapd, url="ldaps://127.0.0.1:1"))
    with pytest.raises(DirectoryUnavailable):
        DirectoryCheck(directory, store, "callgate").check_once()
    assert [u.handle for u, _ in linked.linked("ldap")] == ["user0"]
