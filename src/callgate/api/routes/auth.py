"""Sign-in and sessions: POST /api/login, POST /api/logout, GET /api/me (docs/signaling.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status

from callgate.api.deps import ServicesDep, TokenDep, UserDep
from callgate.api.schemas import LoginRequest, LoginResponse, UserOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["auth"])


@router.post("/login")
def login(body: LoginRequest, services: ServicesDep) -> LoginResponse:
    """A bearer token for a right handle and password of an enabled account; else 401."""
    handle = body.handle.strip().lower()
    user = services.accounts.authenticate(handle, body.password)
    if user is None:
        log.info("sign-in refused for %r", handle[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid credentials")
    token, expires_at = services.accounts.issue_token(user, device=body.device)
    log.info("sign-in: %s", user.handle)
    return LoginResponse(token=token, expires_at=expires_at, user=UserOut.of(user))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(user: UserDep, token: TokenDep, services: ServicesDep) -> Response:
    """Revoke the token this request carries."""
    services.accounts.revoke_token(token)
    log.info("sign-out: %s", user.handle)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me")
def me(user: UserDep) -> UserOut:
    return UserOut.of(user)
