"""The HTML pages and their static assets (docs/browser.md).

Pages carry no data: each loads its ES module, which signs in with a bearer token kept in
sessionStorage and talks to /api and /ws. Role checks therefore live in the API; the console
pages ask `GET /api/me` and show a refusal to anyone whose role the page is not for (admin and
compliance; Unmanaged calling: admin and security).
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from callgate import __version__

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Everything is served from here: no inline script, no third-party origin (docs/browser.md).
# connect-src: this origin, and its WebSocket (/ws) at the same host — written out, since CSP
# level 2 browsers do not let 'self' match ws:/wss: — never any host (`ws: wss:`).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src {connect}; media-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The CSP of a page served to `host` (the request's Host header); 'self' alone when the
    header is missing or not a plain host[:port]."""
    connect = "'self'"
    if host is not None and _HOST.fullmatch(host):
        connect = f"'self' ws://{host} wss://{host}"
    return CONTENT_SECURITY_POLICY.format(connect=connect)


# Console sections: path segment -> (title, ES module under static/js/console/).
CONSOLE_PAGES: dict[str, tuple[str, str]] = {
    "live": ("Live calls", "live.js"),
    "records": ("Call records", "records.js"),
    "recordings": ("Recordings", "recordings.js"),
    "audit": ("Audit log", "audit.js"),
    "admin": ("Administration", "admin.js"),
    "dashboard": ("Dashboard", "dashboard.js"),
    "unmanaged": ("Unmanaged calling", "unmanaged.js"),
    "trunks": ("Trunks", "trunks.js"),
}


def _page(request: Request, template: str, **context: object) -> Response:
    response = templates.TemplateResponse(
        request, template, {"version": __version__, "pages": CONSOLE_PAGES, **context}
    )
    response.headers["Content-Security-Policy"] = content_security_policy(
        request.headers.get("host")
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


router = APIRouter(include_in_schema=False)


@router.get("/")
def softphone(request: Request) -> Response:
    return _page(request, "softphone.html")


@router.get("/console")
def console_home(request: Request) -> Response:
    return console_page(request, "live")


@router.get("/console/records/{call_id}")
def record_detail(request: Request, call_id: str) -> Response:
    return _page(
        request,
        "console.html",
        section="records",
        title="Call detail",
        module="record.js",
        call_id=call_id,
    )


@router.get("/console/{section}")
def console_page(request: Request, section: str) -> Response:
    if section not in CONSOLE_PAGES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no console page {section[:64]!r}")
    title, module = CONSOLE_PAGES[section]
    return _page(request, "console.html", section=section, title=title, module=module, call_id="")


def install_web(app: FastAPI) -> None:
    """Serve the pages and `/static`."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
