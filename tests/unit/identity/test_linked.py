"""Accounts linked to a directory (identity/linked.py) on both backends: created with their
source, refreshed only when something changed, disabled with their tokens, every change audited
with the directory's reasons; no local password can be set on them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from callgate.accounts import AccountService
from callgate.errors import InvalidAccountValue, UserExistsError
from callgate.identity.linked import LinkedAccounts
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
WHY = {"dn": "uid=alice,ou=people,dc=example,dc=com", "mapping": {"role": "admin"}}


def profile(**changes: object) -> dict[str, object]:
    return {
        "handle": "alice", "display_name": "Alice Martin", "email": "alice@example.com",
        "groups": ("it",), "role": "admin", **changes,
    }  # fmt: skip


def entries(store: Store, action: str) -> list[dict[str, object]]:
    found = [e for e in AuditLog(store).iter_entries() if e.action == action]
    return [{"actor": e.actor, **json.loads(e.details)} for e in found]


def test_create_refresh_disable(store: Store) -> None:
    accounts = AccountService(store, "callgate")
    linked = LinkedAccounts(store, "callgate")
    user = linked.create("ldap", "uuid-1", profile(), NOW, WHY)
    assert (user.source, user.email, user.role, user.groups) == (
        "ldap",
        "alice@example.com",
        "admin",
        ("it",),
    )
    assert not user.has_password
    assert linked.find("ldap", "uuid-1") == user
    assert linked.find("oidc", "uuid-1") is None
    created = entries(store, "user.create")[-1]
    assert created["actor"] == "identity:ldap" and created["source"] == "ldap"
    assert created["dn"] == WHY["dn"]

    assert linked.refresh(user, profile(), NOW, WHY) == user  # nothing changed, nothing audited
    assert entries(store, "user.update") == []
    moved = linked.refresh(user, profile(groups=("sales",), role="user"), NOW, WHY)
    assert (moved.groups, moved.role, moved.is_admin) == (("sales",), "user", False)
    update = entries(store, "user.update")[-1]
    assert update["before"] == {"groups": ["it"], "role": "admin"}
    assert update["after"] == {"groups": ["sales"], "role": "user"}

    token, _ = accounts.issue_token(moved)
    assert accounts.verify_token(token) is not None
    gone = linked.disable(moved, NOW, "removed from the directory")
    assert gone.disabled and accounts.verify_token(token) is None
    assert entries(store, "user.disable")[-1]["reason"] == "removed from the directory"
    assert [u.handle for u, _ in linked.linked("ldap")] == []


def test_a_taken_handle_creates_nothing(store: Store) -> None:
    AccountService(store, "callgate").create_user("alice", password="local-pw")
    linked = LinkedAccounts(store, "callgate")
    with pytest.raises(UserExistsError):
        linked.create("ldap", "uuid-1", profile(), NOW, WHY)
    assert linked.find("ldap", "uuid-1") is None
    assert entries(store, "user.create")[-1]["actor"] != "identity:ldap"


def test_no_local_password_for_directory_accounts(store: Store) -> None:
    accounts = AccountService(store, "callgate")
    LinkedAccounts(store, "callgate").create("oidc", "iss sub", profile(), NOW, WHY)
    with pytest.raises(InvalidAccountValue, match="through the directory"):
        accounts.set_password("alice", "a-new-local-password")
    assert accounts.authenticate("alice", "a-new-local-password") is None
