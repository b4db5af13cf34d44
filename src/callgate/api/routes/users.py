"""Account administration: /api/users (administrators only).

    GET    /api/users                      every account
    POST   /api/users                      {handle, display_name?, groups?, password, role?} → 201
    PATCH  /api/users/{handle}             {display_name?, groups?, role?}
    PUT    /api/users/{handle}/legal-hold  {hold}: the purge job keeps the user's records
    POST   /api/users/{handle}/disable     no sign-in; its tokens and TURN key are refused
    POST   /api/users/{handle}/enable
    PUT    /api/users/{handle}/password    {password}
    DELETE /api/users/{handle}             the account and its tokens → 204

No token → 401, a non-admin's token → 403, unknown handle → 404, a taken handle or an admin
disabling/removing/demoting their own account → 409, a bad handle, group, name or password → 422.
Answers never hold password hashes or TURN keys (AccountOut).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status

from callgate.accounts.handles import normal_handle
from callgate.accounts.passwords import check_new_password
from callgate.accounts.records import UserRecord
from callgate.accounts.service import check_handle
from callgate.api.deps import AdminDep, ServicesDep
from callgate.api.schemas import (
    AccountOut,
    AccountsResponse,
    HoldRequest,
    NewAccountRequest,
    PasswordRequest,
    UserPatch,
)
from callgate.errors import InvalidAccountValue, UnknownUserError, UserExistsError
from callgate.records.retention import Retention

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/users", tags=["users"])


def _no_user(handle: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user {handle[:64]!r}")


def _existing(services: ServicesDep, handle: str) -> UserRecord:
    user = services.accounts.get(normal_handle(handle))
    if user is None:
        raise _no_user(handle)
    return user


def _not_self(admin: UserRecord, target: UserRecord, action: str) -> None:
    if admin.id == target.id:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"you cannot {action} yourself")


@router.get("")
def list_users(admin: AdminDep, services: ServicesDep) -> AccountsResponse:
    """Every account, by handle."""
    return AccountsResponse(users=[AccountOut.of(u) for u in services.accounts.list_users()])


@router.post("", status_code=status.HTTP_201_CREATED)
def add_user(body: NewAccountRequest, admin: AdminDep, services: ServicesDep) -> AccountOut:
    try:
        handle = check_handle(normal_handle(body.handle))
        check_new_password(handle, body.password)
        user = services.accounts.create_user(
            handle,
            body.display_name,
            body.groups,
            body.password,
            is_admin=body.is_admin,
            role=body.role,
            actor=admin.handle,
        )
    except InvalidAccountValue as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except UserExistsError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"user {body.handle!r} exists"
        ) from None
    log.info("%s added account %s (role %s)", admin.handle, user.handle, user.role)
    return AccountOut.of(user)


def _set_disabled(
    handle: str, disabled: bool, admin: UserRecord, services: ServicesDep
) -> AccountOut:
    target = _existing(services, handle)
    if disabled:
        _not_self(admin, target, "disable")
    try:
        user = services.accounts.set_disabled(target.handle, disabled, admin.handle)
    except UnknownUserError:  # removed meanwhile
        raise _no_user(handle) from None
    log.info("%s %s account %s", admin.handle, "disabled" if disabled else "enabled", handle)
    return AccountOut.of(user)


@router.post("/{handle}/disable")
def disable_user(handle: str, admin: AdminDep, services: ServicesDep) -> AccountOut:
    """No sign-in from now on; the account's tokens and TURN key are refused."""
    return _set_disabled(handle, True, admin, services)


@router.post("/{handle}/enable")
def enable_user(handle: str, admin: AdminDep, services: ServicesDep) -> AccountOut:
    return _set_disabled(handle, False, admin, services)


@router.put("/{handle}/password")
def set_password(
    handle: str, body: PasswordRequest, admin: AdminDep, services: ServicesDep
) -> AccountOut:
    """A new password (and TURN key); the account's existing tokens stay valid."""
    target = _existing(services, handle)
    try:
        check_new_password(target.handle, body.password)
        user = services.accounts.set_password(target.handle, body.password, admin.handle)
    except InvalidAccountValue as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except UnknownUserError:
        raise _no_user(handle) from None
    log.info("%s changed the password of %s", admin.handle, handle)
    return AccountOut.of(user)


@router.patch("/{handle}")
def update_user(handle: str, body: UserPatch, admin: AdminDep, services: ServicesDep) -> AccountOut:
    """Display name, groups and role; fields left out stay as they are."""
    target = _existing(services, handle)
    if body.role is not None and body.role != target.role:
        _not_self(admin, target, "change the role of")
    try:
        user = services.accounts.update_profile(
            target.handle, body.display_name, body.groups, admin.handle
        )
        if body.role is not None and body.role != target.role:
            user = services.accounts.set_role(target.handle, body.role, admin.handle)
    except InvalidAccountValue as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except UnknownUserError:
        raise _no_user(handle) from None
    log.info("%s updated account %s (role %s)", admin.handle, handle, user.role)
    return AccountOut.of(user)


@router.put("/{handle}/legal-hold")
def hold_user(handle: str, body: HoldRequest, admin: AdminDep, services: ServicesDep) -> AccountOut:
    """Put the user's records on legal hold (or release them): the purge job keeps every call
    they are a party of and its quality rows. Audited (legal_hold.set)."""
    target = _existing(services, handle)
    retention = Retention(services.cdrs.engine)
    user = (
        services.accounts.get(handle)
        if retention.hold_user(target.handle, body.hold, admin.handle)
        else None
    )
    if user is None:  # removed meanwhile
        raise _no_user(handle)
    log.info("%s set legal hold %s on %s", admin.handle, body.hold, handle)
    return AccountOut.of(user)


@router.delete("/{handle}", status_code=status.HTTP_204_NO_CONTENT)
def remove_user(handle: str, admin: AdminDep, services: ServicesDep) -> Response:
    """The account and all its tokens."""
    target = _existing(services, handle)
    _not_self(admin, target, "remove")
    try:
        services.accounts.remove(target.handle, admin.handle)
    except UnknownUserError:
        raise _no_user(handle) from None
    log.info("%s removed account %s", admin.handle, handle)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
