"""Single sign-on over HTTP (docs/identity.md):

    GET /api/sso                 {"enabled", "label", "login"}: whether to show "Sign in with
                                 <label>", leading to `login` (OIDC's, else SAML's)
    GET /api/sso/login?next=/    302 to the provider (state cookie set)
    GET /api/sso/callback        the provider's redirect back: 303 to NEXT#sso_token=TOKEN, or
                                 to NEXT#sso_error=REASON (audited either way)
    POST /api/sso/device         `callgate login --sso` (RFC 8628, oidc_device.py): the user code
                                 and verification URI to show, and an attempt id
    POST /api/sso/device/token   {"attempt"}: 200 {token, expires_at, user} once approved; 400
                                 {"error": "authorization_pending" | "slow_down", "interval"}
                                 before; 4xx/502 {"error", "detail"} when it cannot finish

The token travels in the URL fragment, which browsers never send to a server; the pages store it
in sessionStorage and remove it from the address bar at once.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from callgate.accounts.records import UserRecord
from callgate.identity.errors import DeviceGrantUnavailable, ProviderError, SsoFailed
from callgate.identity.oidc_device import DeviceSignIn, Pending
from callgate.identity.oidc_signin import PENDING_TTL_S, OidcSignIn

STATE_COOKIE = "callgate_sso_state"


class Labelled(Protocol):
    """Another sign-in the pages may offer (SAML: saml_signin.SamlSignIn)."""

    @property
    def label(self) -> str: ...


class DevicePoll(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: str = Field(min_length=1, max_length=128)


def sso_router(
    sign_in: OidcSignIn | None, device: DeviceSignIn | None = None, saml: Labelled | None = None
) -> APIRouter:
    router = APIRouter(prefix="/api/sso", tags=["auth"])

    @router.get("")
    def sso_info() -> dict[str, Any]:
        """Whether single sign-on is on, the name on its button and where it leads (OIDC when
        both OIDC and SAML are on)."""
        if sign_in is not None:
            return {"enabled": True, "label": sign_in.label, "login": "/api/sso/login"}
        if saml is not None:
            return {"enabled": True, "label": saml.label, "login": "/api/saml/login"}
        return {"enabled": False, "label": None, "login": None}

    @router.get("/login")
    async def sso_login(request: Request, next: str = "/") -> Response:
        """Start a sign-in: redirect to the provider with PKCE, state and nonce."""
        if sign_in is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="single sign-on is off")
        try:
            client = request.client.host if request.client is not None else None
            url, state = await sign_in.start(next, client)
        except ProviderError as exc:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, detail=f"identity provider unavailable: {exc}"
            ) from None
        response = RedirectResponse(url, status_code=status.HTTP_302_FOUND)
        response.set_cookie(
            STATE_COOKIE,
            state,
            max_age=int(PENDING_TTL_S),
            path="/api/sso",
            httponly=True,
            samesite="lax",  # sent on the provider's top-level redirect back to us
            secure=request.url.scheme == "https",
        )
        return response

    @router.get("/callback")
    async def sso_callback(
        request: Request,
        code: str | None = None,
        state: str | None = None,
        error: str | None = None,
    ) -> Response:
        """The provider's redirect back (OpenID Connect Core 1.0 §3.1.2.5-6)."""
        if sign_in is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="single sign-on is off")
        next_path = sign_in.next_path(state or "")
        client = request.client.host if request.client is not None else None
        try:
            if error:
                sign_in.refuse(state, client, f"the provider answered {error[:64]!r}")
            _user, token, _expires, next_path = await sign_in.finish(
                code, state, request.cookies.get(STATE_COOKIE), client
            )
            fragment = f"sso_token={quote(token)}"
        except SsoFailed as exc:
            fragment = f"sso_error={quote(exc.reason)}"
        response = RedirectResponse(
            f"{next_path}#{fragment}", status_code=status.HTTP_303_SEE_OTHER
        )
        response.delete_cookie(STATE_COOKIE, path="/api/sso")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @router.post("/device")
    async def sso_device_start(request: Request) -> dict[str, Any]:
        """Start a command-line sign-in (RFC 8628 §3.1-3.3): what to show the person."""
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="single sign-on is off")
        client = request.client.host if request.client is not None else None
        try:
            return await device.start(client)
        except DeviceGrantUnavailable as exc:
            raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, detail=str(exc)) from None
        except ProviderError as exc:
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, detail=f"identity provider unavailable: {exc}"
            ) from None

    @router.post("/device/token")
    async def sso_device_token(body: DevicePoll, request: Request) -> Response:
        """Poll a command-line sign-in (RFC 8628 §3.4-3.5)."""
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="single sign-on is off")
        client = request.client.host if request.client is not None else None
        try:
            outcome = await device.poll(body.attempt, client)
        except SsoFailed as exc:
            answer: dict[str, Any] = {"error": "access_denied", "detail": exc.reason}
            return JSONResponse(answer, status_code=exc.status, headers=NO_STORE)
        if isinstance(outcome, Pending):
            answer = {"error": outcome.error, "interval": outcome.interval}
            return JSONResponse(answer, status_code=400, headers=NO_STORE)
        user, token, expires = outcome
        answer = {"token": token, "expires_at": expires.isoformat(), "user": _user(user)}
        return JSONResponse(answer, headers=NO_STORE)

    return router


NO_STORE = {"Cache-Control": "no-store"}  # RFC 6749 §5.1: token answers are not cached


def _user(user: UserRecord) -> dict[str, Any]:
    """As /api/login's `user` (api/schemas.py UserOut)."""
    return {
        "handle": user.handle,
        "display_name": user.display_name,
        "groups": list(user.groups),
        "is_admin": user.is_admin,
        "role": user.role,
        "source": user.source,
    }
