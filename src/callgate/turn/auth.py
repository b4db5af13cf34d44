"""TURN authentication: long-term credentials (RFC 8489 §9.2), TURN REST ephemeral credentials
(coturn's use-auth-secret scheme), and stateless expiring nonces.

REST credentials: username "<unix-expiry>:<user>" (or just "<unix-expiry>"), password
base64(HMAC-SHA1(secret, username)); valid until the expiry. Both relays accept each other's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from callgate.clock import Clock

KeyLookup = Callable[[str], bytes | None]


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """key = MD5(username ":" realm ":" password) (RFC 8489 §9.2.2, MD5 algorithm)."""
    material = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(material, usedforsecurity=False).digest()


def opaque_string(text: str) -> str:
    """RFC 8265 §4.2 OpaqueString enforcement: non-ASCII spaces become U+0020, then NFC."""
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    return unicodedata.normalize("NFC", mapped)


def long_term_key_sha256(username: str, realm: str, password: str) -> bytes:
    """key = SHA-256(username ":" OpaqueString(realm) ":" OpaqueString(password)), the
    PASSWORD-ALGORITHM SHA-256 key (RFC 8489 §9.2.2, §18.5.1)."""
    material = f"{username}:{opaque_string(realm)}:{opaque_string(password)}".encode()
    return hashlib.sha256(material).digest()


def rest_password(secret: str, username: str) -> str:
    """The password a TURN REST username carries under the shared secret."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_username(user: str, expiry: int) -> str:
    return f"{expiry}:{user}"


def rest_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    username = rest_username(user, int(now) + ttl)
    return username, rest_password(secret, username)


def parse_rest_username(username: str) -> tuple[int, str] | None:
    """(expiry, user) of a REST username, or None if it is not one."""
    head, _, tail = username.partition(":")
    if not head.isdigit() or len(head) > 12:
        return None
    return int(head), tail


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    user: str  # the person the credential belongs to
    key: bytes


class Authenticator:
    """Finds the long-term key for a username and mints/checks nonces."""

    def __init__(
        self,
        realm: str,
        clock: Clock,
        *,
        static_users: Mapping[str, str] | None = None,
        key_lookup: KeyLookup | None = None,
        rest_secret: str | None = None,
        nonce_lifetime: int = 600,
        nonce_key: bytes | None = None,
    ) -> None:
        self.realm = realm
        self.clock = clock
        self._static = {
            name: long_term_key(name, realm, pw) for name, pw in (static_users or {}).items()
        }
        self._lookup = key_lookup
        self._rest_secret = rest_secret
        self.nonce_lifetime = nonce_lifetime
        self._nonce_key = nonce_key or os.urandom(32)
        # Users whose REST credentials are refused before they expire (disabled or removed
        # accounts, set by `serve`: accounts/relay_access.py).
        self.refused_users: frozenset[str] = frozenset()

    def credential(self, username: str) -> Credential | None:
        """The credential for `username`, or None if unknown or an expired REST credential."""
        key = self._static.get(username)
        if key is not None:
            return Credential(username, username, key)
        if self._lookup is not None:
            key = self._lookup(username)
            if key is not None:
                return Credential(username, username, key)
        if self._rest_secret is not None:
            parsed = parse_rest_username(username)
            if parsed is not None:
                expiry, user = parsed
                if expiry < self.clock.wall() or user in self.refused_users:
                    return None
                password = rest_password(self._rest_secret, username)
                key = long_term_key(username, self.realm, password)
                return Credential(username, user or username, key)
        return None

    def ephemeral(self, username: str) -> bool:
        """Whether `username` is a TURN REST username (its key is an HMAC under the secret, not
        derived from a password anyone could guess)."""
        return (
            self._rest_secret is not None
            and username not in self._static
            and parse_rest_username(username) is not None
        )

    # Nonces: "<expiry hex>" + truncated HMAC over expiry and client IP; nothing is stored.
    def new_nonce(self, client_ip: str) -> str:
        expiry = int(self.clock.wall()) + self.nonce_lifetime
        return f"{expiry:x}" + self._nonce_mac(expiry, client_ip)

    def nonce_valid(self, nonce: str, client_ip: str) -> bool:
        if len(nonce) < 25 or len(nonce) > 40:
            return False
        expiry_hex, mac = nonce[:-24], nonce[-24:]
        try:
            expiry = int(expiry_hex, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(mac, self._nonce_mac(expiry, client_ip)):
            return False
        return expiry >= self.clock.wall()

    def _nonce_mac(self, expiry: int, client_ip: str) -> str:
        msg = f"{expiry}|{client_ip}".encode()
        return hmac.new(self._nonce_key, msg, hashlib.sha256).hexdigest()[:24]
