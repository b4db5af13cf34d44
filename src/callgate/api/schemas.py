"""Request and response bodies of the REST API (/api)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from callgate.accounts.records import UserRecord


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    device: str | None = Field(default=None, max_length=64)


Role = Literal["admin", "compliance", "security", "user"]


class UserOut(BaseModel):
    handle: str
    display_name: str
    groups: list[str]
    is_admin: bool  # role == "admin"
    role: Role
    source: str = "local"  # local | ldap | oidc | scim (docs/identity.md)

    @classmethod
    def of(cls, user: UserRecord) -> UserOut:
        return cls(
            handle=user.handle,
            display_name=user.display_name,
            groups=list(user.groups),
            is_admin=user.is_admin,
            role=cast(Role, user.role),
            source=user.source,
        )


class AccountOut(BaseModel):
    """An account as admins see it (GET/POST /api/users): never its password hash or TURN key."""

    handle: str
    display_name: str
    groups: list[str]
    is_admin: bool  # role == "admin"
    role: Role
    legal_hold: bool
    disabled: bool
    has_password: bool
    realm: str
    created_at: datetime
    updated_at: datetime
    source: str = (
        "local"  # where the account comes from: local | ldap | oidc | scim (docs/identity.md)
    )
    email: str | None = None  # from the directory

    @classmethod
    def of(cls, user: UserRecord) -> AccountOut:
        return cls(
            handle=user.handle,
            display_name=user.display_name,
            groups=list(user.groups),
            is_admin=user.is_admin,
            role=cast(Role, user.role),
            legal_hold=user.legal_hold,
            disabled=user.disabled,
            has_password=user.has_password,
            realm=user.realm,
            created_at=user.created_at,
            updated_at=user.updated_at,
            source=user.source,
            email=user.email,
        )


class AccountsResponse(BaseModel):
    users: list[AccountOut]


class NewAccountRequest(BaseModel):
    """POST /api/users. Handle and groups are checked by the account service too (422)."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=64)
    display_name: str | None = Field(default=None, max_length=255)
    groups: list[str] = Field(default_factory=list, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    is_admin: bool = False  # kept for older clients: the same as role "admin"
    role: Role | None = None


class UserPatch(BaseModel):
    """PATCH /api/users/{handle}: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, min_length=1, max_length=255)
    groups: list[str] | None = Field(default=None, max_length=64)
    role: Role | None = None


class HoldRequest(BaseModel):
    """PUT …/legal-hold."""

    model_config = ConfigDict(extra="forbid")

    hold: bool


class PasswordRequest(BaseModel):
    """PUT /api/users/{handle}/password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    token: str
    expires_at: datetime
    user: UserOut


class CallOut(BaseModel):
    """One call detail record (records/cdr_types.py `CdrRecord`; docs/calling.md)."""

    model_config = ConfigDict(from_attributes=True)

    call_id: str
    caller_user: str
    caller_device: str | None
    caller_address: str | None
    caller_user_agent: str | None
    callee_user: str
    callee_device: str | None
    callee_address: str | None
    callee_user_agent: str | None
    direction: str
    invite_at: datetime
    ring_at: datetime | None
    answer_at: datetime | None
    end_at: datetime | None
    duration_s: float | None
    disposition: str | None
    ended_by: str | None
    reason: str | None
    policy_rule: str | None
    policy_decision: str | None
    media_path: str | None
    relay_used: str | None
    relay_bytes: int | None
    relay_allocation_ids: list[str]
    codec: str | None
    encryption: str | None
    recording_ids: list[str]
    node_id: str | None
    recording_required: bool | None = None  # the allowing policy rule asked for recording
    anchored: bool | None = None  # the media went through the server's anchor (recorded)


class CallsResponse(BaseModel):
    calls: list[CallOut]
