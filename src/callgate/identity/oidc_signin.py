"""Single sign-on with an OpenID provider: the authorization code flow with PKCE (RFC 7636),
`state` and `nonce` (OpenID Connect Core 1.0 §3.1), then the same account handling as the
directory: a linked account (source "oidc", id "ISSUER SUB"), just in time if configured, with
name, e-mail, groups and role from the ID token's claims, and a callgate bearer token. An account
the provider provisioned over SCIM (source "scim") whose handle the handle claim gives is signed
in as it is: SCIM keeps its profile, groups and role.

Each attempt is kept here (in memory) for PENDING_TTL_S under its random `state`, bound to the
browser by a cookie holding it, and used once: a replayed callback or ID token finds nothing.
Every outcome is audited (auth.login with method "oidc", auth.login_failed with the reason).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import Connection

from callgate.accounts import audit
from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.identity.errors import ProviderError, SsoFailed, TokenRejected
from callgate.identity.linked import LinkedAccounts
from callgate.identity.mapping import GroupRules, decide, handle_from
from callgate.identity.sso_accounts import Refused, sign_on_refused, signed_in_account
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

if TYPE_CHECKING:
    from callgate.identity.oidc_provider import OidcProvider  # httpx: loaded when OIDC is on

log = logging.getLogger(__name__)

SOURCE = "oidc"
PENDING_TTL_S = 600.0
MAX_PENDING = 10_000  # attempts in progress, in all
MAX_PENDING_PER_CLIENT = 20  # per client address: one address cannot crowd out the others


@dataclass(frozen=True, slots=True)
class Pending:
    nonce: str
    verifier: str
    next_path: str
    created: float
    client: str | None = None


def safe_next(path: str | None) -> str:
    """Only our own pages: a path starting with one "/" (no scheme, no //host, no backslash,
    no control characters or spaces that browsers might drop to make one)."""
    if not path or not path.startswith("/") or path.startswith("//") or len(path) > 512:
        return "/"
    if "\\" in path or any(not c.isprintable() or c.isspace() for c in path):
        return "/"
    return path


class OidcSignIn:
    def __init__(self, provider: OidcProvider, accounts: AccountService, store: Store) -> None:
        self._provider = provider
        self._accounts = accounts
        self._store = store
        self._linked = LinkedAccounts(store, accounts.realm)
        self._pending: dict[str, Pending] = {}

    @property
    def label(self) -> str:
        return self._provider.settings.label

    async def start(self, next_path: str | None, client: str | None = None) -> tuple[str, str]:
        """(the provider's authorization URL, the state to bind to the browser)."""
        settings = self._provider.settings
        metadata = await self._provider.metadata()
        self._expire()
        self._make_room(client)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)  # 64 characters (RFC 7636 §4.1: 43-128)
        pending = Pending(nonce, verifier, safe_next(next_path), time.monotonic(), client)
        self._pending[state] = pending
        query = urlencode(
            {
                "response_type": "code",
                "client_id": settings.client_id,
                "redirect_uri": settings.redirect_url,
                "scope": " ".join(settings.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": create_s256_code_challenge(verifier),  # type: ignore[no-untyped-call]
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return f"{metadata.authorization_endpoint}{separator}{query}", state

    def _make_room(self, client: str | None) -> None:
        """Drop the oldest attempts of `client` beyond its share, and the oldest of all beyond
        MAX_PENDING (dicts keep insertion order: oldest first)."""
        mine = [s for s, p in self._pending.items() if p.client == client]
        for state in mine[: max(0, len(mine) - MAX_PENDING_PER_CLIENT + 1)]:
            del self._pending[state]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL_S
        for state in [s for s, p in self._pending.items() if p.created < cutoff]:
            del self._pending[state]

    def next_path(self, state: str) -> str:
        pending = self._pending.get(state)
        return pending.next_path if pending is not None else "/"

    def refuse(self, state: str | None, client: str | None, reason: str) -> None:
        """The provider sent an error instead of a code: forget the attempt, audit, raise."""
        if state:
            self._pending.pop(state, None)
        raise self._failed(client, reason, 401)

    async def finish(
        self, code: str | None, state: str | None, cookie: str | None, client: str | None
    ) -> tuple[UserRecord, str, datetime, str]:
        """(account, token, expiry, next path) for a good callback; SsoFailed (audited) else."""
        self._expire()
        pending = self._pending.pop(state, None) if state else None
        if pending is None:
            raise self._failed(client, "unknown, expired or already used sign-in (state)", 400)
        if cookie is None or not secrets.compare_digest(cookie, state or ""):
            raise self._failed(client, "sign-in started in another browser (state cookie)", 400)
        if not code:
            raise self._failed(client, "the provider sent no code", 400)
        try:
            tokens = await self._provider.exchange(code, pending.verifier)
            claims = await self._provider.verify_id_token(
                str(tokens.get("id_token") or ""), pending.nonce
            )
        except ProviderError as exc:
            raise self._failed(client, f"provider error: {exc}", 502) from None
        except TokenRejected as exc:
            raise self._failed(client, f"ID token rejected: {exc}", 401) from None
        user, token, expires = self.sign_in(claims, client)
        return user, token, expires, pending.next_path

    def sign_in(
        self,
        claims: dict[str, Any],
        client: str | None,
        device: str = "sso",
        grant: str = "authorization_code",
    ) -> tuple[UserRecord, str, datetime]:
        """The account for checked ID token claims (linked, SCIM's, or created just in time)
        and a new callgate token for it, audited as auth.login; SsoFailed (audited) else."""
        user = self._provision(claims, client)
        why = {**self._why(claims), "grant": grant}
        token, expires = self._accounts.issue_token(
            user, device=device, audit_hook=_login_hook(user, client, device, why)
        )
        log.info("single sign-on (%s): %s", grant, user.handle)
        return user, token, expires

    def failure(
        self, client: str | None, reason: str, status: int, extra: dict[str, Any] | None = None
    ) -> SsoFailed:
        """An audited auth.login_failed (method oidc) for `reason`, as the error to raise."""
        return self._failed(client, reason, status, extra)

    def _rules(self) -> GroupRules:
        settings = self._provider.settings
        return GroupRules(
            group_map=settings.group_map,
            role_map=settings.role_map,
            default_role=settings.default_role,
            allowed_groups=settings.allowed_groups,
        )

    def _groups(self, claims: dict[str, Any]) -> list[str]:
        value = claims.get(self._provider.settings.groups_claim, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return []
        return [str(g)[:255] for g in value[:1000] if isinstance(g, str)]

    def _why(self, claims: dict[str, Any]) -> dict[str, Any]:
        groups = self._groups(claims)
        return {
            "issuer": claims.get("iss"),
            "subject": str(claims.get("sub"))[:255],
            "provider_groups": groups,
            "mapping": decide(self._rules(), groups).as_json(),
        }

    def _provision(self, claims: dict[str, Any], client: str | None) -> UserRecord:
        settings = self._provider.settings
        decision = decide(self._rules(), self._groups(claims))
        why = self._why(claims)
        if not decision.allowed:
            raise self._failed(client, "not in an allowed group", 403, why)
        external_id = f"{claims['iss']} {claims['sub']}"[:512]
        name = claims.get(settings.name_claim)
        email = claims.get(settings.email_claim)
        profile = {
            "display_name": (str(name) if name else "")[:255],
            "email": str(email)[:320] if isinstance(email, str) else None,
            "groups": decision.groups,
            "role": decision.role,
        }
        raw_handle = claims.get(settings.handle_claim)
        try:
            return signed_in_account(
                self._linked, self._accounts, SOURCE, external_id, profile,
                handle_from(raw_handle) if isinstance(raw_handle, str) else None,
                bad_handle=(f"claim {settings.handle_claim} is not a usable handle", str(raw_handle)),
                create_accounts=settings.create_accounts, why=why,
            )  # fmt: skip
        except Refused as refused:
            detail = {**why, **refused.extra}
            raise self._failed(client, refused.reason, refused.status, detail) from None

    def _failed(
        self, client: str | None, reason: str, status: int, extra: dict[str, Any] | None = None
    ) -> SsoFailed:
        return sign_on_refused(self._store, SOURCE, client, reason, status, extra)


def _login_hook(
    user: UserRecord, client: str | None, device: str, why: dict[str, Any]
) -> audit.AuditHook:
    def write(conn: Connection, _before: UserRecord | None, _after: UserRecord | None) -> None:
        details = {"client": client, "device": device, "method": SOURCE, **why}
        AuditLog.append_in(conn, user.handle, "auth.login", f"user:{user.handle}", details)

    return write
