"""Password hashing: argon2id (RFC 9106) via argon2-cffi; verification is the library's own
constant-time comparison. Nothing here logs or keeps a password."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from callgate.errors import InvalidAccountValue

# NIST SP 800-63B §5.1.1.2: at least 8 characters for a password a person chooses.
MIN_PASSWORD_CHARS = 8

# A well-formed argon2id hash of a random password: verified against when the user is unknown,
# so "no such user" costs the same time as "wrong password".
_DUMMY_PASSWORD = "callgate-timing-equaliser"  # noqa: S105 - not a credential


def check_new_password(handle: str, password: str) -> str:
    """A password a person chose for `handle` (`user add`, `user passwd`, POST /api/users, PUT
    /api/users/{handle}/password): at least MIN_PASSWORD_CHARS characters and not containing the
    handle (case-insensitive). Raises InvalidAccountValue saying which rule failed."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidAccountValue(f"the password is shorter than {MIN_PASSWORD_CHARS} characters")
    if handle and handle.casefold() in password.casefold():
        raise InvalidAccountValue("the password contains the handle")
    return password


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """argon2id cost. The defaults are argon2-cffi's (RFC 9106 "second recommended" profile:
    t=3, m=64 MiB, p=4); tests pass a cheap policy."""

    time_cost: int = 3
    memory_cost_kib: int = 65_536
    parallelism: int = 4


class Passwords:
    """Hash and verify passwords with one argon2id parameter set."""

    def __init__(self, policy: PasswordPolicy | None = None) -> None:
        policy = policy or PasswordPolicy()
        self._hasher = PasswordHasher(
            time_cost=policy.time_cost,
            memory_cost=policy.memory_cost_kib,
            parallelism=policy.parallelism,
        )

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when `password` matches; a missing or malformed hash is a mismatch (and still
        costs one verification)."""
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
