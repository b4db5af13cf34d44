"""AccountService: accounts, sign-in and bearer tokens.

Passwords are hashed with argon2id and never stored or logged, and nothing else derived from them
is kept: a password opens a sign-in, never the relay (accounts reach TURN only with the short-lived
REST credentials signaling hands out after sign-in). Tokens are 256-bit random strings; only
their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from callgate.accounts import audit
from callgate.accounts.passwords import Passwords
from callgate.accounts.records import ROLES, UserRecord
from callgate.accounts.repository import NewUser, TokenRepository, UserRepository
from callgate.clock import Clock, SystemClock
from callgate.errors import InvalidAccountValue, UnknownUserError, UserExistsError
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

log = logging.getLogger(__name__)

HANDLE_RE = re.compile(r"[a-z0-9._-]{1,64}")
GROUP_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_TOKEN_TTL_S = 12 * 3600.0
MAX_TOKEN_TTL_S = 30 * 86400.0
MAX_PASSWORD_CHARS = 1024
FIRST_ADMIN = "admin"


def check_handle(handle: str) -> str:
    if not HANDLE_RE.fullmatch(handle):
        raise InvalidAccountValue("handle must be 1-64 of a-z 0-9 . _ -")
    return handle


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidAccountValue(f"role must be one of {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if not password:
        raise InvalidAccountValue("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidAccountValue(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return password


def _check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(sorted(set(groups)))
    for group in cleaned:
        if not GROUP_RE.fullmatch(group):
            raise InvalidAccountValue(f"group {group!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    return cleaned


def _check_display_name(name: str | None, handle: str) -> str:
    name = (name or handle).strip()
    if not name or len(name) > 255 or not name.isprintable():
        raise InvalidAccountValue("display name must be 1-255 printable characters")
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountService:
    """Accounts and sessions on one store. Thread-safe; every call is a short transaction."""

    def __init__(
        self,
        store: Store,
        realm: str,
        clock: Clock | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self._store = store
        self._users = UserRepository(store.sessions)
        self._tokens = TokenRepository(store.sessions)
        self._realm = realm
        self._clock = clock or SystemClock()
        self._passwords = passwords or Passwords()

    @property
    def realm(self) -> str:
        return self._realm

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    # ---- accounts ----

    def create_user(
        self,
        handle: str,
        display_name: str | None = None,
        groups: Iterable[str] = (),
        password: str | None = None,
        *,
        is_admin: bool = False,
        role: str | None = None,
        actor: str = audit.SYSTEM,
    ) -> UserRecord:
        """A new account; without a password it cannot sign in until one is set.
        `role` is admin, compliance, security or user; `is_admin=True` is the same as role "admin".
        Every change below is audited (user.*) with `actor`, in the change's transaction."""
        handle = check_handle(handle)
        role = check_role(role if role is not None else ("admin" if is_admin else "user"))
        new = NewUser(
            handle=handle,
            display_name=_check_display_name(display_name, handle),
            groups=_check_groups(groups),
            realm=self._realm,
            password_hash=None,
            role=role,
            now=self._now(),
        )
        if password is not None:
            _check_password(password)
            new = replace(new, password_hash=self._passwords.hash(password))
        user = self._users.add(new, audit.user_change(actor, "user.create", handle))
        log.info("account %s created (role %s)", handle, role)
        return user

    def get(self, handle: str) -> UserRecord | None:
        return self._users.get(handle)

    def list_users(self) -> list[UserRecord]:
        return self._users.list_users()

    def set_password(self, handle: str, password: str, actor: str = audit.SYSTEM) -> UserRecord:
        """New password: new argon2 hash; existing tokens stay valid. Refused for accounts from a
        directory (source ldap/oidc): their password lives there."""
        _check_password(password)
        found = self._users.get(handle)
        if found is not None and found.source != "local":
            raise InvalidAccountValue(
                f"{handle} signs in through the directory ({found.source}): "
                "its password is set there, not in callgate"
            )
        user = self._users.change(
            handle,
            self._now(),
            audit.user_change(actor, "user.password", handle),
            password_hash=self._passwords.hash(password),
            realm=self._realm,
        )
        log.info("account %s: password changed", handle)
        return user

    def set_role(self, handle: str, role: str, actor: str = audit.SYSTEM) -> UserRecord:
        """Make the account an admin, a compliance officer or a plain user (is_admin follows)."""
        hook = audit.user_change(actor, "user.role", handle)
        user = self._users.change(handle, self._now(), hook, role=check_role(role))
        log.info("account %s: role %s", handle, role)
        return user

    def update_profile(
        self,
        handle: str,
        display_name: str | None = None,
        groups: Iterable[str] | None = None,
        actor: str = audit.SYSTEM,
    ) -> UserRecord:
        """Change the display name and/or the groups (None leaves a field as it is)."""
        values: dict[str, object] = {}
        if display_name is not None:
            values["display_name"] = _check_display_name(display_name, handle)
        if groups is not None:
            values["groups"] = json.dumps(list(_check_groups(groups)))
        hook = audit.user_change(actor, "user.update", handle) if values else None
        return self._users.change(handle, self._now(), hook, **values)

    def set_disabled(self, handle: str, disabled: bool, actor: str = audit.SYSTEM) -> UserRecord:
        """Disable (no sign-in, tokens and TURN REST credentials refused) or enable an account."""
        now = self._now()
        action = "user.disable" if disabled else "user.enable"
        user = self._users.change(
            handle, now, audit.user_change(actor, action, handle), disabled=disabled
        )
        if disabled:
            # Tokens issued before the account was disabled stay dead when it is enabled again.
            self._tokens.revoke_all(user.id, now)
        log.info("account %s %s", handle, "disabled" if disabled else "enabled")
        return user

    def disable(self, handle: str, actor: str = audit.SYSTEM) -> UserRecord:
        return self.set_disabled(handle, True, actor)

    def enable(self, handle: str, actor: str = audit.SYSTEM) -> UserRecord:
        return self.set_disabled(handle, False, actor)

    def remove(self, handle: str, actor: str = audit.SYSTEM) -> None:
        if not self._users.remove(handle, audit.user_change(actor, "user.delete", handle)):
            raise UnknownUserError(f"no user {handle!r}")
        log.info("account %s removed", handle)

    def ensure_first_admin(self) -> str | None:
        """On an empty users table, create `admin` with a random password and return it (to be
        shown once); otherwise None."""
        if self._users.count() > 0:
            return None
        password = secrets.token_urlsafe(18)
        try:
            self.create_user(FIRST_ADMIN, "Administrator", (), password, is_admin=True)
        except UserExistsError:  # another process won the race
            return None
        return password

    # ---- sign-in and tokens ----

    def authenticate(self, handle: str, password: str) -> UserRecord | None:
        """The account when `password` is right and the account enabled; else None. Unknown
        handles cost one argon2 verification too."""
        found = self._users.secrets(handle) if HANDLE_RE.fullmatch(handle) else None
        password_hash = found[1] if found is not None else None
        ok = self._passwords.verify(password_hash, password[:MAX_PASSWORD_CHARS])
        if found is None or not ok or found[0].disabled:
            return None
        return found[0]

    def sign_in(
        self, handle: str, password: str, client: str | None, device: str | None = None
    ) -> tuple[UserRecord, str, datetime] | None:
        """`authenticate` then `issue_token`, audited: auth.login in the token's transaction, or
        auth.login_failed with the handle tried (never the password) and the client address."""
        user = self.authenticate(handle, password)
        if user is None:
            details = {"handle": handle[:64], "client": client}
            AuditLog(self._store).append(
                audit.SYSTEM, "auth.login_failed", f"user:{handle[:64]}", details
            )
            return None
        token, expires = self.issue_token(
            user, device=device, audit_hook=audit.sign_in(user, client, device)
        )
        return user, token, expires

    def audit_throttled(self, handle: str, client: str | None, limit: str) -> None:
        """auth.login_throttled: sign-in attempts on `handle` or from `client` are now refused
        for a while (`limit`: "account" or "address"); audited once per run, not per attempt."""
        details = {"handle": handle[:64], "client": client, "limit": limit}
        AuditLog(self._store).append(
            audit.SYSTEM, "auth.login_throttled", f"user:{handle[:64]}", details
        )

    def sign_out(self, user: UserRecord, token: str, client: str | None) -> bool:
        """Revoke `token`, audited as auth.logout in the same transaction."""
        hook = audit.sign_out(user, client)
        return self._tokens.revoke(token_hash(token), self._now(), hook)

    def issue_token(
        self,
        user: UserRecord,
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        device: str | None = None,
        audit_hook: audit.AuditHook | None = None,
    ) -> tuple[str, datetime]:
        """A new bearer token for `user` and its expiry. The token is returned once, never kept."""
        if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
            raise InvalidAccountValue(f"token lifetime must be in (0, {MAX_TOKEN_TTL_S:g}] s")
        if device is not None and len(device) > 64:
            raise InvalidAccountValue("device label is longer than 64 characters")
        token = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + timedelta(seconds=ttl_s)
        self._tokens.add(token_hash(token), user.id, device, now, expires, audit_hook)
        return token, expires

    def verify_token(self, token: str) -> UserRecord | None:
        """The token's account, or None when unknown, expired, revoked or the account disabled."""
        if not token or len(token) > 256:
            return None
        found = self._tokens.find(token_hash(token))
        if found is None or found.revoked_at is not None or found.user.disabled:
            return None
        if found.expires_at <= self._now():
            return None
        return found.user

    def valid_tokens(self, tokens: Collection[str]) -> set[str]:
        """The tokens among `tokens` that `verify_token` accepts (the open signaling sockets'
        periodic check: a few queries for thousands of sockets)."""
        by_hash = {token_hash(t): t for t in tokens if t and len(t) <= 256}
        valid = self._tokens.valid_hashes(list(by_hash), self._now())
        return {by_hash[h] for h in valid}

    def revoke_token(self, token: str) -> bool:
        """Revoke `token`; False when it was unknown or already revoked."""
        return self._tokens.revoke(token_hash(token), self._now())
