"""LDAP / Active Directory lookups and password checks over TLS (ldap3, pure Python).

Every connection is LDAPS or StartTLS (RFC 4513 §3) with the server's certificate and host name
verified. A user is found with the service account by `login_attribute`, the typed value escaped
per RFC 4515 §3, then their password is checked with a simple bind as their own DN
(RFC 4513 §5.1.3) on a fresh connection. An empty password is refused before any bind: RFC 4513
§5.1.2 makes it an "unauthenticated bind" that many servers accept. Group membership is resolved
here, level by level (`member` = DN), so nested groups work without the memberOf overlay or
AD's LDAP_MATCHING_RULE_IN_CHAIN.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from callgate.identity.errors import DirectoryUnavailable
from callgate.identity.settings import LdapSettings

log = logging.getLogger(__name__)

MAX_GROUPS = 1000  # groups resolved per user, nesting included
OR_CHUNK = 100  # member DNs per group search


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A directory user as callgate sees it (never their password)."""

    dn: str
    external_id: str
    handle_value: str
    display_name: str | None
    email: str | None
    groups: tuple[str, ...]  # names of every group the user is in, nested ones included
    disabled: bool


def id_filter_value(external_id: str) -> str:
    """The filter value for a stored id: "hex:…" ids (binary objectGUID) escape every byte."""
    if external_id.startswith("hex:"):
        return "".join(f"\\{byte:02x}" for byte in bytes.fromhex(external_id[4:]))
    return str(escape_filter_chars(external_id))


def user_search_filter(settings: LdapSettings, attribute: str, escaped_value: str) -> str:
    """(&USER_FILTER(ATTRIBUTE=VALUE)); the value must already be escaped (RFC 4515 §3)."""
    return f"(&{settings.user_filter}({attribute}={escaped_value}))"


def _first(raw: dict[str, list[bytes]], attribute: str) -> bytes | None:
    for name, values in raw.items():
        if name.lower() == attribute.lower() and values:
            return values[0]
    return None


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None


def _stable_id(value: bytes | None) -> str | None:
    """entryUUID is text; AD's objectGUID is 16 raw bytes, kept as "hex:…"."""
    if value is None:
        return None
    text = _text(value)
    return text if text is not None else "hex:" + value.hex()


class LdapDirectory:
    """One configured directory. Thread-safe: every operation opens its own connections."""

    def __init__(self, settings: LdapSettings) -> None:
        self._settings = settings
        parts = urlsplit(settings.url)
        self._use_ssl = parts.scheme.lower() == "ldaps"
        self._host = parts.hostname or ""
        self._port = parts.port or (636 if self._use_ssl else 389)
        self._tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
        )

    @property
    def settings(self) -> LdapSettings:
        return self._settings

    def _server(self) -> ldap3.Server:
        return ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self._use_ssl,
            tls=self._tls,
            get_info=ldap3.NONE,
            connect_timeout=self._settings.timeout_s,
        )

    def _bind(self, dn: str, password: str) -> ldap3.Connection | None:
        """A connection bound as `dn`, or None when the server refuses the password."""
        conn = ldap3.Connection(
            self._server(),
            user=dn,
            password=password,
            raise_exceptions=True,
            receive_timeout=math.ceil(self._settings.timeout_s),  # ldap3 packs it as an int
            read_only=True,
        )
        try:
            conn.open()
            if self._settings.start_tls:
                conn.start_tls()
            conn.bind()
            return conn
        except lx.LDAPInvalidCredentialsResult:
            conn.unbind()
            return None
        except lx.LDAPOperationResult as exc:  # e.g. unwillingToPerform for a locked account
            conn.unbind()
            log.info("directory refused a bind: %s", exc.description)
            return None
        except lx.LDAPException as exc:
            conn.unbind()
            raise DirectoryUnavailable(f"directory {self._settings.url}: {_reason(exc)}") from None

    @contextmanager
    def service(self) -> Iterator[DirectorySession]:
        """The service account's session (DirectoryUnavailable when it cannot bind)."""
        settings = self._settings
        conn = self._bind(settings.bind_dn, settings.bind_password.get_secret_value())
        if conn is None:
            raise DirectoryUnavailable(
                f"directory {settings.url}: the service account {settings.bind_dn!r} was refused"
            )
        try:
            yield DirectorySession(conn, settings)
        finally:
            conn.unbind()

    def authenticate(self, login: str, password: str) -> DirectoryEntry | None:
        """The user when `password` is theirs (a disabled one too: `disabled` says so); None
        for an unknown or ambiguous login or a wrong or empty password. Groups are read only
        after the password proved right."""
        if not password or not login:
            return None
        with self.service() as session:
            located = session.locate(login)
            # An unknown name costs the same round trips as a wrong password (a bind the
            # directory refuses), so timing does not tell who exists.
            dn = (
                located[0]
                if located is not None
                else f"cn=callgate-no-such-user,{self._settings.user_base}"
            )
            conn = self._bind(dn, password)
            if located is None:
                if conn is not None:
                    conn.unbind()
                return None
            if conn is None:
                return None
            conn.unbind()
            return session.complete(*located)


def _reason(exc: lx.LDAPException) -> str:
    """Why a connection failed, without anything that could hold a credential."""
    if isinstance(exc, lx.LDAPOperationResult):
        return f"{type(exc).__name__} ({exc.description})"
    if isinstance(
        exc, lx.LDAPCommunicationError | lx.LDAPStartTLSError | lx.LDAPSSLConfigurationError
    ):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


class DirectorySession:
    """Searches as the service account on one open connection."""

    def __init__(self, conn: ldap3.Connection, settings: LdapSettings) -> None:
        self._conn = conn
        self._settings = settings

    def _search(
        self,
        base: str,
        query: str,
        attributes: list[str],
        scope: Literal["BASE", "LEVEL", "SUBTREE"] = "SUBTREE",
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        try:
            self._conn.search(
                base, query, search_scope=scope, attributes=attributes, size_limit=limit
            )
        except lx.LDAPNoSuchObjectResult:
            return []
        except lx.LDAPSizeLimitExceededResult:
            return [{}, {}]  # more than asked: the caller treats it as ambiguous
        except lx.LDAPException as exc:
            raise DirectoryUnavailable(f"directory search failed: {_reason(exc)}") from None
        return [r for r in self._conn.response or [] if r.get("type") == "searchResEntry"]

    def locate(self, login: str) -> tuple[str, dict[str, list[bytes]]] | None:
        """The DN and attributes of the one user whose login attribute equals `login` (the
        value escaped: RFC 4515 §3); None for no match or several."""
        settings = self._settings
        query = user_search_filter(settings, settings.login_attribute, escape_filter_chars(login))
        return self._locate(query, f"login {login[:64]!r}")

    def find(self, login: str) -> DirectoryEntry | None:
        located = self.locate(login)
        return self.complete(*located) if located is not None else None

    def by_id(self, external_id: str) -> DirectoryEntry | None:
        """The user with this stable id, or None when the directory no longer has them."""
        settings = self._settings
        query = user_search_filter(settings, settings.id_attribute, id_filter_value(external_id))
        located = self._locate(query, f"id {external_id!r}")
        return self.complete(*located) if located is not None else None

    def _locate(self, query: str, what: str) -> tuple[str, dict[str, list[bytes]]] | None:
        settings = self._settings
        attributes = [
            settings.handle_attribute,
            settings.name_attribute,
            settings.mail_attribute,
            settings.id_attribute,
        ]
        found = self._search(settings.user_base, query, attributes, limit=2)
        if len(found) != 1:
            if found:
                log.warning("directory: %s matches more than one entry; refused", what)
            return None
        return str(found[0]["dn"]), found[0].get("raw_attributes", {})

    def complete(self, dn: str, raw: dict[str, list[bytes]]) -> DirectoryEntry | None:
        """The entry with its groups (nesting followed) and disabled flag."""
        settings = self._settings
        external_id = _stable_id(_first(raw, settings.id_attribute))
        handle_value = _text(_first(raw, settings.handle_attribute))
        if external_id is None or handle_value is None:
            log.warning(
                "directory: %s has no %s or %s",
                dn,
                settings.id_attribute,
                settings.handle_attribute,
            )
            return None
        return DirectoryEntry(
            dn=dn,
            external_id=external_id,
            handle_value=handle_value,
            display_name=_text(_first(raw, settings.name_attribute)),
            email=_text(_first(raw, settings.mail_attribute)),
            groups=self.groups_of(dn),
            disabled=self.is_disabled(dn),
        )

    def is_disabled(self, dn: str) -> bool:
        """Whether the entry matches `disabled_filter` (evaluated by the server: AD's bitwise
        matching rule works)."""
        if not self._settings.disabled_filter:
            return False
        found = self._search(dn, self._settings.disabled_filter, ["1.1"], scope="BASE")
        return bool(found)

    def groups_of(self, dn: str) -> tuple[str, ...]:
        """Names of the groups `dn` is a member of, following nesting breadth-first up to
        `max_group_depth` levels; a loop ends because each group is visited once."""
        settings = self._settings
        base = settings.group_base or settings.user_base
        depth = settings.max_group_depth if settings.nested_groups else 1
        member = settings.group_member_attribute
        seen: set[str] = set()
        names: set[str] = set()
        frontier = [dn]
        for _level in range(depth):
            upward: list[str] = []
            for start in range(0, len(frontier), OR_CHUNK):
                chunk = frontier[start : start + OR_CHUNK]
                members = "".join(f"({member}={escape_filter_chars(d)})" for d in chunk)
                query = f"(&{settings.group_filter}(|{members}))"
                for group in self._search(base, query, [settings.group_name_attribute]):
                    group_dn = str(group["dn"]).lower()
                    if group_dn in seen or len(seen) >= MAX_GROUPS:
                        continue
                    seen.add(group_dn)
                    name = _text(
                        _first(group.get("raw_attributes", {}), settings.group_name_attribute)
                    )
                    if name is not None:
                        names.add(name)
                    upward.append(str(group["dn"]))
            if not upward:
                break
            frontier = upward
        return tuple(sorted(names, key=str.lower))
