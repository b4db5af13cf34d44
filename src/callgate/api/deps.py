"""FastAPI dependencies: the services the app was built with, and bearer-token authentication."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Protocol, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callgate.accounts.records import ROLES, UserRecord
from callgate.accounts.service import AccountService
from callgate.accounts.throttle import LoginThrottle
from callgate.identity.ldap_signin import PasswordSignIn
from callgate.policy.groups import GroupStore
from callgate.policy.store import PolicyStore
from callgate.records.audit import AuditLog
from callgate.records.cdr import CdrRepository
from callgate.signaling.live import LiveCall


@dataclass(frozen=True, slots=True)
class Services:
    """What the API routes need; stored on `app.state.services` by `create_app`."""

    accounts: AccountService
    cdrs: CdrRepository
    policy: PolicyStore | None = None  # /api/policy (absent: 503)
    groups: GroupStore | None = None  # /api/groups (absent: 503)
    audit: AuditLog | None = None  # /api/audit/…, audited exports and purges (absent: 503)
    audit_key: Path | None = None  # the checkpoint signing key (POST /api/audit/checkpoints)
    live: LiveCalls | None = None  # the signaling hub in this process (absent: no live calls)
    relays: Callable[[], Sequence[RelayStatus]] | None = None  # TURN relays in this process
    # Password sign-in with the LDAP directory next to local accounts (absent: local only).
    password_sign_in: PasswordSignIn | None = None
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)  # POST /api/login


class LiveCalls(Protocol):
    """The calls in progress (SignalingHub in `callgate serve`; a fake in tests)."""

    def live_calls(self) -> list[LiveCall]: ...

    async def end_call(self, call_id: str, admin: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One TURN relay's live counters (GET /api/relays)."""

    name: str
    listen: list[str]
    allocations: int
    allocations_total: int
    bytes_in: int  # client -> peer
    bytes_out: int  # peer -> client
    packets_in: int
    packets_out: int
    auth_failures: int
    quota_rejections: int


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


_bearer = HTTPBearer(auto_error=False)


def unauthorized(detail: str = "not signed in") -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token of the request (401 when there is none)."""
    if credentials is None or not credentials.credentials:
        raise unauthorized()
    return credentials.credentials


def current_user(
    token: Annotated[str, Depends(bearer_token)],
    services: Annotated[Services, Depends(get_services)],
) -> UserRecord:
    """The signed-in account: the token must be known, unexpired, unrevoked, the user enabled."""
    user = services.accounts.verify_token(token)
    if user is None:
        raise unauthorized("invalid or expired token")
    return user


ServicesDep = Annotated[Services, Depends(get_services)]
TokenDep = Annotated[str, Depends(bearer_token)]
UserDep = Annotated[UserRecord, Depends(current_user)]


_ROLE_PLURALS = {
    "admin": "administrators",
    "compliance": "compliance officers",
    "security": "security officers",
    "user": "users",
}


def require_roles(*roles: str) -> Callable[[UserRecord], UserRecord]:
    """A dependency admitting only signed-in users whose role is one of `roles` (401 without a
    valid token, 403 with another role). Roles: admin, compliance, security, user (docs/admin-api.md)."""
    unknown = set(roles) - set(ROLES)
    if not roles or unknown:
        raise ValueError(f"roles must be among {ROLES}, not {sorted(unknown)}")
    allowed = frozenset(roles)
    needed = " and ".join(_ROLE_PLURALS[role] for role in ROLES if role in allowed) + " only"

    def dependency(user: UserDep) -> UserRecord:
        if user.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=needed)
        return user

    return dependency


# admin: everything. compliance: read records and audit, export. user: own calls only.
READERS = frozenset({"admin", "compliance"})  # roles that see every user's records
AdminDep = Annotated[UserRecord, Depends(require_roles("admin"))]
ReaderDep = Annotated[UserRecord, Depends(require_roles("admin", "compliance"))]
