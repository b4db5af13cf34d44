"""Sign-in and sessions: POST /api/login, POST /api/logout, GET /api/me (docs/signaling.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response, status

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
    outcomes are audited (auth.login, auth.login_failed) with the client address. With the LDAP
    directory on, names that are not local accounts are checked there (503 when it is down)."""
    handle = body.handle.strip().lower()
    sign_in = services.accounts.sign_in
    if services.password_sign_in is not None:  # the LDAP directory too (docs/identity.md)
        sign_in = services.password_sign_in.sign_in
    try:
        signed_in = sign_in(handle, body.password, _client(request), body.device)
    except DirectoryUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the directory cannot be reached; local accounts can still sign in",
        ) from None
    if signed_in is None:
        log.info("sign-in refused for %r", handle[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid credentials")
    user, token, expires_at = signed_in
    log.info("sign-in: %s", user.handle)
    return LoginResponse(token=token, expires_at=expires_at, user=UserOut.of(user))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(user: UserDep, token: TokenDep, request: Request, services: ServicesDep) -> Response:
    """Revoke the token this request carries (audited as auth.logout)."""
    services.accounts.sign_out(user, token, _client(request))
    log.info("sign-out: %s", user.handle)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
def me(user: UserDep) -> UserOut:
    return UserOut.of(user)
