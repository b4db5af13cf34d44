"""Password sign-in with local accounts and the LDAP directory (POST /api/login).

Which check applies is decided by the account, never by a fallback: a local account (source
"local", the break-glass admin among them) is checked here only, so it signs in while the
directory is down; any other name is checked against the directory. A directory user gets an
account just in time (if `create_accounts`), marked source "ldap" and linked by the directory's
stable id; each sign-in brings name, e-mail, groups and role in step with the directory.

Every outcome is audited: auth.login (with the mapping decision) or auth.login_failed with the
reason (unknown or wrong password, disabled, not in an allowed group, handle not usable, handle
taken by a local account, directory unavailable). The HTTP answer stays "invalid credentials"
for all of them, so it does not tell whether an account exists. The password is never stored,
logged or audited.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from callgate.accounts import audit
from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.clock import Clock, SystemClock
from callgate.errors import UserExistsError
from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.linked import LinkedAccounts
from callgate.identity.mapping import Decision, GroupRules, decide, handle_from
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

if TYPE_CHECKING:  # ldap3 is loaded only when [identity.ldap] is on (service.py)
    from callgate.identity.directory import DirectoryEntry, LdapDirectory

log = logging.getLogger(__name__)

SOURCE = "ldap"
SignedIn = tuple[UserRecord, str, datetime]


def ldap_rules(directory: LdapDirectory) -> GroupRules:
    settings = directory.settings
    return GroupRules(
        group_map=settings.group_map,
        role_map=settings.role_map,
        default_role=settings.default_role,
        allowed_groups=settings.allowed_groups,
    )


def profile_of(entry: DirectoryEntry, handle: str, decision: Decision) -> dict[str, Any]:
    name = (entry.display_name or handle)[:255]
    return {
        "handle": handle,
        "display_name": name,
        "email": entry.email[:320] if entry.email else None,
        "groups": decision.groups,
        "role": decision.role,
    }


class PasswordSignIn:
    """Local accounts first by their source, then the directory; same result as
    AccountService.sign_in: (account, token, expiry) or None."""

    def __init__(
        self,
        accounts: AccountService,
        store: Store,
        directory: LdapDirectory,
        clock: Clock | None = None,
    ) -> None:
        self._accounts = accounts
        self._store = store
        self._directory = directory
        self._linked = LinkedAccounts(store, accounts.realm)
        self._clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def sign_in(
        self, handle: str, password: str, client: str | None, device: str | None = None
    ) -> SignedIn | None:
        """`handle` is what the person typed (a handle, or a mail/UPN when the directory's
        login attribute is one). Raises DirectoryUnavailable (audited) when a directory user
        cannot be checked."""
        login = handle
        local = self._accounts.get(login)
        if local is not None and local.source == "local":
            return self._accounts.sign_in(login, password, client, device)
        try:
            entry = self._directory.authenticate(login, password)
        except DirectoryUnavailable as exc:
            self._failed(login, client, "directory unavailable", {"error": str(exc)})
            raise
        if entry is None:
            self._failed(login, client, "unknown user or wrong password")
            return None
        if entry.disabled:
            self._failed(login, client, "disabled in the directory", {"dn": entry.dn})
            return None
        decision = decide(ldap_rules(self._directory), entry.groups)
        why = {
            "dn": entry.dn,
            "directory_groups": list(entry.groups),
            "mapping": decision.as_json(),
        }
        if not decision.allowed:
            self._failed(login, client, "not in an allowed directory group", why)
            return None
        user = self._provision(login, client, entry, decision, why)
        if user is None:
            return None
        token, expires = self._accounts.issue_token(
            user, device=device, audit_hook=_login_hook(user, client, device, why)
        )
        log.info("directory sign-in: %s", user.handle)
        return user, token, expires

    def _provision(
        self,
        login: str,
        client: str | None,
        entry: DirectoryEntry,
        decision: Decision,
        why: dict[str, Any],
    ) -> UserRecord | None:
        existing = self._linked.find(SOURCE, entry.external_id)
        if existing is not None:
            if existing.disabled:
                self._failed(login, client, "account disabled in callgate", why)
                return None
            profile = profile_of(entry, existing.handle, decision)
            return self._linked.refresh(existing, profile, self._now(), why)
        handle = handle_from(entry.handle_value)
        if handle is None:
            detail = {**why, "value": entry.handle_value[:255]}
            self._failed(login, client, "directory name is not a usable handle", detail)
            return None
        if not self._directory.settings.create_accounts:
            self._failed(login, client, "no account and create_accounts is off", why)
            return None
        try:
            user = self._linked.create(
                SOURCE, entry.external_id, profile_of(entry, handle, decision), self._now(), why
            )
        except UserExistsError:
            self._failed(login, client, f"handle {handle!r} belongs to another account", why)
            return None
        log.info("account %s created from the directory (role %s)", handle, user.role)
        return user

    def _failed(
        self, login: str, client: str | None, reason: str, extra: dict[str, Any] | None = None
    ) -> None:
        details = {"handle": login[:64], "client": client, "method": SOURCE, "reason": reason}
        AuditLog(self._store).append(
            audit.SYSTEM, "auth.login_failed", f"user:{login[:64]}", {**details, **(extra or {})}
        )
        log.info("directory sign-in refused for %r: %s", login[:64], reason)
        return None


def _login_hook(
    user: UserRecord, client: str | None, device: str | None, why: dict[str, Any]
) -> audit.AuditHook:
    def write(conn: Connection, _before: UserRecord | None, _after: UserRecord | None) -> None:
        details = {"client": client, "device": device, "method": SOURCE, **why}
        AuditLog.append_in(conn, user.handle, "auth.login", f"user:{user.handle}", details)

    return write
