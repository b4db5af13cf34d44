"""Single sign-on with a SAML 2.0 identity provider (docs/identity.md): the Web Browser SSO
profile (SAML 2.0 Profiles §4.1) with pysaml2, whose signature checks run Debian's xmlsec1.

`start` makes an AuthnRequest (HTTP-Redirect binding) and keeps its id in memory for
PENDING_TTL_S under a random RelayState, bound to the browser by a cookie. `finish` takes the
IdP's Response (HTTP-POST binding) and accepts it only when: the RelayState is one we issued
and the cookie matches (each used once); the assertion is signed by a certificate in the IdP's
metadata; it answers that very request (InResponseTo; unsolicited responses are refused); its
audience is our entity id; Destination and the subject's Recipient are our ACS URL; it is
within NotBefore / NotOnOrAfter (± clock_skew_s); and its ID was not seen before (a replay
cache kept until the assertion expires). The account is then found or created like the OIDC
one: source "saml", linked by "IDP-ENTITY-ID NAMEID", attributes mapped to name, e-mail,
groups and role; an account provisioned over SCIM with the same handle is signed in as it is.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from callgate.accounts import audit
from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.identity.errors import SsoFailed
from callgate.identity.linked import LinkedAccounts
from callgate.identity.mapping import GroupRules, decide, handle_from
from callgate.identity.oidc_signin import safe_next
from callgate.identity.settings import SamlSettings
from callgate.identity.sso_accounts import Refused, sign_on_refused, signed_in_account
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

with warnings.catch_warnings():  # pysaml2 names a cipher mode cryptography has moved (CFB)
    warnings.simplefilter("ignore")
    from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.metadata import create_metadata_string
    from saml2.saml import NAMEID_FORMAT_PERSISTENT
    from saml2.xmldsig import SIG_RSA_SHA256

log = logging.getLogger(__name__)

SOURCE = "saml"
PENDING_TTL_S = 600.0
MAX_PENDING = 10_000
MAX_PENDING_PER_CLIENT = 20
MAX_RESPONSE_BYTES = 256 * 1024  # base64 of the Response
MAX_SEEN = 100_000  # assertion ids in the replay cache


@dataclass(frozen=True, slots=True)
class Pending:
    request_id: str
    next_path: str
    created: float
    client: str | None


def sp_config(settings: SamlSettings) -> SPConfig:
    keys: dict[str, Any] = {}
    if settings.sp_key_file is not None and settings.sp_cert_file is not None:
        _private(settings.sp_key_file)
        pair = {"key_file": str(settings.sp_key_file), "cert_file": str(settings.sp_cert_file)}
        keys = {**pair, "encryption_keypairs": [pair]}
    config = SPConfig()
    config.load(
        {
            **keys,
            "entityid": settings.sp_entity_id,
            "xmlsec_binary": str(settings.xmlsec_binary),
            "metadata": {"local": [str(settings.idp_metadata_file)]},
            "accepted_time_diff": settings.clock_skew_s,
            "allow_unknown_attributes": True,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(settings.acs_url, BINDING_HTTP_POST)]
                    },
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": settings.sign_requests,
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                }
            },
        }
    )
    return config


def _private(key_file: Path) -> None:
    """Our SP key must be readable by us alone (it would let others sign in our name and read
    the assertions meant for us)."""
    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"sp_key_file {key_file}: mode {mode:o}, must be 0600 or stricter")


class SamlSignIn:
    def __init__(self, settings: SamlSettings, accounts: AccountService, store: Store) -> None:
        self._settings = settings
        self._accounts = accounts
        self._store = store
        self._linked = LinkedAccounts(store, accounts.realm)
        self._config = sp_config(settings)
        self._client = Saml2Client(config=self._config)
        self._lock = threading.Lock()  # pysaml2's client is not meant for several threads
        self._pending: dict[str, Pending] = {}
        self._seen: dict[str, float] = {}  # assertion id -> when it stops mattering (wall clock)
        idps = list(self._client.metadata.identity_providers())
        if len(idps) != 1:
            raise ValueError(
                f"idp_metadata_file must describe one identity provider, not {len(idps)}"
            )
        self._idp = idps[0]

    @property
    def label(self) -> str:
        return self._settings.label

    def metadata(self) -> bytes:
        """Our SP metadata (SAML 2.0 Metadata §2.4.4): entity id, ACS URL and binding."""
        document = create_metadata_string(None, self._config)
        return document if isinstance(document, bytes) else str(document).encode()

    def start(self, next_path: str | None, client: str | None) -> tuple[str, str]:
        """(the IdP's SSO URL with the AuthnRequest, the RelayState to bind to the browser)."""
        self._expire()
        mine = [s for s, p in self._pending.items() if p.client == client]
        for state in mine[: max(0, len(mine) - MAX_PENDING_PER_CLIENT + 1)]:
            del self._pending[state]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        state = secrets.token_urlsafe(32)
        with self._lock:
            request_id, info = self._client.prepare_for_authenticate(
                entityid=self._idp,
                relay_state=state,
                binding=BINDING_HTTP_REDIRECT,
                # Bindings §3.4.4.1: the query (SAMLRequest, RelayState, SigAlg) signed
                sign=self._settings.sign_requests,
                sigalg=SIG_RSA_SHA256 if self._settings.sign_requests else None,
            )
        location = dict(info["headers"])["Location"]
        self._pending[state] = Pending(request_id, safe_next(next_path), time.monotonic(), client)
        return location, state

    def next_path(self, state: str) -> str:
        pending = self._pending.get(state)
        return pending.next_path if pending is not None else "/"

    def finish(
        self, response: str | None, state: str | None, cookie: str | None, client: str | None
    ) -> tuple[UserRecord, str, datetime, str]:
        """(account, token, expiry, next path) for a good Response; SsoFailed (audited) else."""
        self._expire()
        pending = self._pending.pop(state, None) if state else None
        if pending is None:
            raise self._failed(client, "unknown, expired or already used sign-in (RelayState)", 400)
        if cookie is None or not secrets.compare_digest(cookie, state or ""):
            raise self._failed(client, "sign-in started in another browser (state cookie)", 400)
        if not response or len(response) > MAX_RESPONSE_BYTES:
            raise self._failed(client, "no SAMLResponse, or one too large", 400)
        if self._settings.require_encrypted_assertions and _clear_assertion(response):
            raise self._failed(client, "assertion rejected: not encrypted", 401)
        parsed = self._verify(response, pending, client)
        claims = self._claims(parsed, client)
        user = self._provision(claims, client)
        why = self._why(claims)
        token, expires = self._accounts.issue_token(
            user, device="sso", audit_hook=_login_hook(user, client, why)
        )
        log.info("SAML sign-on: %s", user.handle)
        return user, token, expires, pending.next_path

    # -- checks -------------------------------------------------------------------------------

    def _verify(self, response: str, pending: Pending, client: str | None) -> Any:
        outstanding = {pending.request_id: pending.next_path}
        try:
            with self._lock:
                parsed = self._client.parse_authn_request_response(
                    response, BINDING_HTTP_POST, outstanding=outstanding
                )
        except Exception as exc:  # pysaml2 raises many kinds, some plain Exception
            raise self._failed(client, f"assertion rejected: {_why_rejected(exc)}", 401) from None
        if parsed is None or parsed.assertion is None:  # pysaml2 logs which check it was
            reason = "assertion rejected: not for us (Destination or InResponseTo)"
            raise self._failed(client, reason, 401)
        acs = self._settings.acs_url
        destination = parsed.response.destination
        if destination is not None and destination != acs:  # SAML 2.0 Bindings §3.5.5.2
            raise self._failed(client, "assertion rejected: wrong Destination", 401)
        recipients = [
            c.subject_confirmation_data.recipient
            for c in parsed.assertion.subject.subject_confirmation or []
            if c.subject_confirmation_data is not None
        ]
        if not recipients or any(r != acs for r in recipients):  # Profiles §4.1.4.3
            raise self._failed(client, "assertion rejected: wrong Recipient", 401)
        assertion_id = str(parsed.assertion.id)
        now = time.time()
        if self._seen.get(assertion_id, 0) > now:
            raise self._failed(client, "assertion rejected: replayed (seen before)", 401)
        if len(self._seen) >= MAX_SEEN:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        until = parsed.not_on_or_after or now + PENDING_TTL_S
        self._seen[assertion_id] = float(until) + self._settings.clock_skew_s
        return parsed

    def _claims(self, parsed: Any, client: str | None) -> dict[str, Any]:
        identity: dict[str, list[Any]] = parsed.get_identity() or {}
        settings = self._settings

        def first(name: str) -> str | None:
            values = identity.get(name) or []
            return str(values[0])[:255] if values else None

        name_id = parsed.name_id.text if parsed.name_id is not None else None
        if not name_id:
            raise self._failed(client, "assertion rejected: no NameID", 401)
        groups = identity.get(settings.groups_attribute) or []
        return {
            "issuer": str(parsed.issuer())[:255],
            "name_id": str(name_id)[:255],
            "handle": first(settings.handle_attribute) if settings.handle_attribute else name_id,
            "name": first(settings.name_attribute),
            "email": first(settings.email_attribute),
            "groups": [str(g)[:255] for g in groups[:1000]],
        }

    # -- the account ----------------------------------------------------------------------------

    def _rules(self) -> GroupRules:
        settings = self._settings
        return GroupRules(
            group_map=settings.group_map,
            role_map=settings.role_map,
            default_role=settings.default_role,
            allowed_groups=settings.allowed_groups,
        )

    def _why(self, claims: dict[str, Any]) -> dict[str, Any]:
        return {
            "issuer": claims["issuer"],
            "subject": claims["name_id"],
            "provider_groups": claims["groups"],
            "mapping": decide(self._rules(), claims["groups"]).as_json(),
        }

    def _provision(self, claims: dict[str, Any], client: str | None) -> UserRecord:
        decision = decide(self._rules(), claims["groups"])
        why = self._why(claims)
        if not decision.allowed:
            raise self._failed(client, "not in an allowed group", 403, why)
        external_id = f"{claims['issuer']} {claims['name_id']}"[:512]
        profile = {
            "display_name": claims["name"] or "",
            "email": claims["email"],
            "groups": decision.groups,
            "role": decision.role,
        }
        raw = claims["handle"]
        attribute = self._settings.handle_attribute or "NameID"
        try:
            return signed_in_account(
                self._linked, self._accounts, SOURCE, external_id, profile,
                handle_from(raw) if raw else None,
                bad_handle=(f"{attribute} is not a usable handle", str(raw)),
                create_accounts=self._settings.create_accounts, why=why,
            )  # fmt: skip
        except Refused as refused:
            detail = {**why, **refused.extra}
            raise self._failed(client, refused.reason, refused.status, detail) from None

    def _failed(
        self, client: str | None, reason: str, status: int, extra: dict[str, Any] | None = None
    ) -> SsoFailed:
        return sign_on_refused(self._store, SOURCE, client, reason, status, extra)

    def _expire(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL_S
        for state in [s for s, p in self._pending.items() if p.created < cutoff]:
            del self._pending[state]


def _clear_assertion(response: str) -> bool:
    """Does the Response carry an Assertion in the clear (not inside an EncryptedAssertion)?
    One that cannot be read answers True: pysaml2 would refuse it anyway."""
    try:
        parsed = samlp.response_from_string(base64.b64decode(response))
    except Exception:  # pysaml2 (defusedxml) raises several kinds for bad XML
        return True
    return parsed is None or bool(parsed.assertion)


def _why_rejected(exc: Exception) -> str:
    """pysaml2's error as a short reason (never the XML)."""
    text = str(exc)
    for known, reason in (
        ("AudienceRestrictions", "wrong audience"),
        ("Signature missing", "not signed"),
        ("Failed to verify signature", "bad signature"),
        ("Condition not OK", "expired or not yet valid (NotBefore/NotOnOrAfter)"),
        ("Unsolicited response", "not an answer to our request (InResponseTo)"),
    ):
        if known in text:
            return reason
    return f"{type(exc).__name__}"[:64]


def _login_hook(user: UserRecord, client: str | None, why: dict[str, Any]) -> audit.AuditHook:
    def write(conn: Connection, _before: UserRecord | None, _after: UserRecord | None) -> None:
        details = {"client": client, "device": "sso", "method": SOURCE, **why}
        AuditLog.append_in(conn, user.handle, "auth.login", f"user:{user.handle}", details)

    return write
