"""SAML 2.0 single sign-on over HTTP (saml_signin.py; docs/identity.md):

    GET  /api/saml/metadata      our SP metadata, to register callgate at the IdP
    GET  /api/saml/login?next=/  302 to the IdP with an AuthnRequest (state cookie set)
    POST /api/saml/acs           the IdP's Response (form: SAMLResponse, RelayState): 303 to
                                 NEXT#sso_token=TOKEN or NEXT#sso_error=REASON (audited)

As with OIDC the token travels in the URL fragment, which browsers never send to a server.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse

from callgate.identity.errors import SsoFailed
from callgate.identity.saml_signin import PENDING_TTL_S, SamlSignIn

STATE_COOKIE = "callgate_saml_state"


def saml_router(sign_in: SamlSignIn) -> APIRouter:
    router = APIRouter(prefix="/api/saml", tags=["auth"], include_in_schema=False)

    @router.get("/metadata")
    def saml_metadata() -> Response:
        return Response(sign_in.metadata(), media_type="application/samlmetadata+xml")

    @router.get("/login")
    def saml_login(request: Request, next: str = "/") -> Response:
        client = request.client.host if request.client is not None else None
        url, state = sign_in.start(next, client)
        response = RedirectResponse(url, status_code=status.HTTP_302_FOUND)
        secure = request.url.scheme == "https"
        response.set_cookie(
            STATE_COOKIE,
            state,
            max_age=int(PENDING_TTL_S),
            path="/api/saml",
            httponly=True,
            # The IdP posts back cross-site: only SameSite=None cookies come along (which
            # browsers take only with Secure). On plain-http loopback the IdP is same-site.
            samesite="none" if secure else "lax",
            secure=secure,
        )
        return response

    @router.post("/acs")
    async def saml_acs(request: Request) -> Response:
        """The IdP's Response by the HTTP-POST binding (SAML 2.0 Bindings §3.5)."""
        raw = await request.body()
        try:
            form = parse_qs(raw.decode("ascii"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="not a form") from None
        saml_response = next(iter(form.get("SAMLResponse", [])), None)
        state = next(iter(form.get("RelayState", [])), None)
        client = request.client.host if request.client is not None else None
        next_path = sign_in.next_path(state or "")
        try:
            _user, token, _expires, next_path = await asyncio.to_thread(
                sign_in.finish, saml_response, state, request.cookies.get(STATE_COOKIE), client
            )
            fragment = f"sso_token={quote(token)}"
        except SsoFailed as exc:
            fragment = f"sso_error={quote(exc.reason)}"
        response = RedirectResponse(
            f"{next_path}#{fragment}", status_code=status.HTTP_303_SEE_OTHER
        )
        response.delete_cookie(STATE_COOKIE, path="/api/saml")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return router
