"""AccountService: accounts, sign-in and bearer tokens.

Passwords are hashed with argon2id and never stored or logged; each account also keeps its TURN
long-term key MD5(handle:realm:password) (RFC 8489 §9.2.2) so its password works on the relay.
Tokens are 256-bit random strings; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from callgate.accounts.passwords import Passwords
from callgate.accounts.records import UserRecord
from callgate.accounts.repository import NewUser, TokenRepository, UserRepository
from callgate.clock import Clock, SystemClock
from callgate.errors import InvalidAccountValue, UnknownUserError, UserExistsError
from callgate.storage.db import Store
from callgate.turn.auth import long_term_key

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
    ) -> UserRecord:
        """A new account; without a password it cannot sign in (or use TURN) until one is set."""
        handle = check_handle(handle)
        new = NewUser(
            handle=handle,
            display_name=_check_display_name(display_name, handle),
            groups=_check_groups(groups),
            realm=self._realm,
            password_hash=None,
            turn_key_hex=None,
            is_admin=is_admin,
            now=self._now(),
        )
        if password is not None:
            _check_password(password)
            new = replace(
                new,
                password_hash=self._passwords.hash(password),
                turn_key_hex=long_term_key(handle, self._realm, password).hex(),
            )
        user = self._users.add(new)
        log.info("account %s created (admin=%s)", handle, is_admin)
        return user

    def get(self, handle: str) -> UserRecord | None:
        return self._users.get(handle)

    def list_users(self) -> list[UserRecord]:
        return self._users.list_users()

    def set_password(self, handle: str, password: str) -> UserRecord:
        """New password: new argon2 hash and TURN key; existing tokens stay valid."""
        _check_password(password)
        user = self._users.change(
            handle,
            self._now(),
            password_hash=self._passwords.hash(password),
            turn_key_hex=long_term_key(handle, self._realm, password).hex(),
            realm=self._realm,
        )
        log.info("account %s: password changed", handle)
        return user

    def set_disabled(self, handle: str, disabled: bool) -> UserRecord:
        """Disable (no sign-in, tokens refused, TURN key refused) or enable an account."""
        now = self._now()
        user = self._users.change(handle, now, disabled=disabled)
        if disabled:
            # Tokens issued before the account was disabled stay dead when it is enabled again.
            self._tokens.revoke_all(user.id, now)
        log.info("account %s %s", handle, "disabled" if disabled else "enabled")
        return user

    def disable(self, handle: str) -> UserRecord:
        return self.set_disabled(handle, True)

    def enable(self, handle: str) -> UserRecord:
        return self.set_disabled(handle, False)

    def remove(self, handle: str) -> None:
        if not self._users.remove(handle):
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

    def turn_key(self, handle: str) -> bytes | None:
        """The TURN long-term key of an enabled account in our realm (None otherwise)."""
        found = self._users.secrets(handle) if HANDLE_RE.fullmatch(handle) else None
        if found is None or found[0].disabled or found[2] is None:
            return None
        if found[0].realm != self._realm:
            return None
        return bytes.fromhex(found[2])

    def issue_token(
        self, user: UserRecord, ttl_s: float = DEFAULT_TOKEN_TTL_S, device: str | None = None
    ) -> tuple[str, datetime]:
        """A new bearer token for `user` and its expiry. The token is returned once, never kept."""
        if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
            raise InvalidAccountValue(f"token lifetime must be in (0, {MAX_TOKEN_TTL_S:g}] s")
        if device is not None and len(device) > 64:
            raise InvalidAccountValue("device label is longer than 64 characters")
        token = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + timedelta(seconds=ttl_s)
        self._tokens.add(token_hash(token), user.id, device, now, expires)
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

    def revoke_token(self, token: str) -> bool:
        """Revoke `token`; False when it was unknown or already revoked."""
        return self._tokens.revoke(token_hash(token), self._now())
