"""What the accounts package hands out: frozen records, never ORM objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    handle: str
    display_name: str
    groups: tuple[str, ...]
    realm: str
    is_admin: bool
    disabled: bool
    has_password: bool
    created_at: datetime
    updated_at: datetime
    # admin | compliance | security | user (ROLES); is_admin == (role == "admin")
    role: str = "user"
    legal_hold: bool = False  # the purge job keeps every record of a held user
    source: str = "local"  # local | ldap | oidc: where the account comes from (docs/identity.md)
    email: str | None = None  # from the directory for ldap/oidc accounts


ROLES = ("admin", "compliance", "security", "user")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token (its hash only) and whom it belongs to."""

    id: int
    user: UserRecord
    device: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
