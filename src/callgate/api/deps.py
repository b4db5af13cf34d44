"""FastAPI dependencies: the services the app was built with, and bearer-token authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callgate.accounts.records import UserRecord
from callgate.accounts.service import AccountService
from callgate.records.cdr import CdrRepository


@dataclass(frozen=True, slots=True)
class Services:
    """What the API routes need; stored on `app.state.services` by `create_app`."""

    accounts: AccountService
    cdrs: CdrRepository


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
