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


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token (its hash only) and whom it belongs to."""

    id: int
    user: UserRecord
    device: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
