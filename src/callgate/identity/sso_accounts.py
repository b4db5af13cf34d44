"""The account a single sign-on signs into, shared by OIDC and SAML (docs/identity.md).

The identity (issuer and subject) already linked: that account, refreshed from the claims. Else
an account SCIM provisioned under the handle: signed in as it is (SCIM owns its name, groups,
role and whether it is active). Else a new linked account, when `create_accounts` allows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from callgate.accounts import audit
from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.errors import UserExistsError
from callgate.identity.errors import SsoFailed
from callgate.identity.linked import LinkedAccounts
from callgate.records.audit import AuditLog
from callgate.storage.db import Store

log = logging.getLogger(__name__)

SCIM_SOURCE = "scim"  # accounts the identity provider provisions (scim_store.SOURCE)


class Refused(Exception):
    """No account for this sign-on: why (audited by the caller), the HTTP status, details."""

    def __init__(self, reason: str, status: int, extra: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.extra = reason, status, extra or {}


def signed_in_account(
    linked: LinkedAccounts,
    accounts: AccountService,
    source: str,
    external_id: str,
    profile: dict[str, Any],
    handle: str | None,
    *,
    bad_handle: tuple[str, str],
    create_accounts: bool,
    why: dict[str, Any],
) -> UserRecord:
    """`handle`: the usable handle from the claims, or None; `bad_handle`: (reason, the raw
    value) said when one is needed and there is none."""
    now = datetime.now(UTC)
    existing = linked.find(source, external_id)
    if existing is not None:
        if existing.disabled:
            raise Refused("account disabled in callgate", 403)
        profile["handle"] = existing.handle
        profile["display_name"] = profile["display_name"] or existing.handle
        return linked.refresh(existing, profile, now, why)
    if handle is None:
        raise Refused(bad_handle[0], 403, {"value": bad_handle[1][:255]})
    provisioned = accounts.get(handle)
    if provisioned is not None and provisioned.source == SCIM_SOURCE:
        if provisioned.disabled:
            raise Refused("account disabled in callgate", 403)
        return provisioned
    if not create_accounts:
        raise Refused("no account and create_accounts is off", 403)
    profile["handle"] = handle
    profile["display_name"] = profile["display_name"] or handle
    try:
        return linked.create(source, external_id, profile, now, why)
    except UserExistsError:
        raise Refused(f"handle {handle!r} belongs to another account", 409) from None


def sign_on_refused(
    store: Store,
    method: str,
    client: str | None,
    reason: str,
    status: int,
    extra: dict[str, Any] | None = None,
) -> SsoFailed:
    """An audited `auth.login_failed` (method `method`: oidc or saml) for `reason`, as the
    error to raise."""
    details = {"client": client, "method": method, "reason": reason, **(extra or {})}
    AuditLog(store).append(audit.SYSTEM, "auth.login_failed", "sso", details)
    log.info("%s sign-on refused: %s", method.upper(), reason)
    return SsoFailed(reason, status)
