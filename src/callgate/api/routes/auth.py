"""Sign-in and sessions: POST /api/login, POST /api/logout, GET /api/me (docs/signaling.md)."""

from __future__ import annotations

import logging
from typing import NoReturn

from fastapi import APIRouter, HTTPException, Request, Response, status

from callgate.accounts.handles import normal_handle
from callgate.accounts.throttle import Refusal
from callgate.api.deps import ServicesDep, TokenDep, UserDep
from callgate.api.schemas import LoginRequest, LoginResponse, UserOut
from callgate.identity.errors import DirectoryUnavailable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["auth"])


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


@router.post("/login")
def login(body: LoginRequest, request: Request, services: ServicesDep) -> LoginResponse:
    """A bearer token for a right handle and password of an enabled account; else 401. Both
    outcomes are audited (auth.login, auth.login_failed) with the client address. Too many
    failures on the handle or from the address: 429 with Retry-After, the password unchecked
    (accounts/throttle.py; the same for unknown handles, so nothing tells which exist). With the
    LDAP directory on, names that are not local accounts are checked there, behind the same
    throttle (503 when it is down; docs/identity.md)."""
    handle = normal_handle(body.handle)
    client = _client(request)
    refusal = services.login_throttle.admit(handle, client)
    if refusal is not None:
        _refuse_throttled(services, handle, client, refusal)
    sign_in = services.accounts.sign_in
    if services.password_sign_in is not None:  # the LDAP directory too (docs/identity.md)
        sign_in = services.password_sign_in.sign_in
    try:
        signed_in = sign_in(handle, body.password, client, body.device)
    except DirectoryUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the directory cannot be reached; local accounts can still sign in",
        ) from None
    if signed_in is None:
        log.info("sign-in refused for %r", handle[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid credentials")
    services.login_throttle.succeeded(handle, client)
    user, token, expires_at = signed_in
    log.info("sign-in: %s", user.handle)
    return LoginResponse(token=token, expires_at=expires_at, user=UserOut.of(user))


def _refuse_throttled(
    services: ServicesDep, handle: str, client: str | None, refusal: Refusal
) -> NoReturn:
    """429; the first refusal of a run is audited once (auth.login_throttled), not every one."""
    if refusal.first:
        services.accounts.audit_throttled(handle, client, refusal.key)
    log.info("sign-in throttled for %r from %s (%s)", handle[:64], client, refusal.key)
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many failed sign-ins: retry in {refusal.retry_after_s} s",
        headers={"Retry-After": str(refusal.retry_after_s)},
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(user: UserDep, token: TokenDep, request: Request, services: ServicesDep) -> Response:
    """Revoke the token this request carries (audited as auth.logout)."""
    services.accounts.sign_out(user, token, _client(request))
    log.info("sign-out: %s", user.handle)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
def me(user: UserDep) -> UserOut:
    return UserOut.of(user)
