"""The browser side: the softphone at `/` and the admin/compliance console at `/console`.

Server-rendered Jinja2 pages and plain ES modules served from this package (no Node toolchain,
no CDN). `install_web(app)` mounts them; `directory_router(hub)` adds `GET /api/directory`.
"""

from callgate.web.directory import directory_router
from callgate.web.pages import install_web

__all__ = ["directory_router", "install_web"]
