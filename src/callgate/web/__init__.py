"""The browser side: the softphone at `/` and the admin/compliance console at `/console`.

Server-rendered Jinja2 pages and plain ES modules served from this package (no Node toolchain,
no CDN). `install_web(app)` mounts them; the softphone's contact list reads `GET /api/directory`
(api/routes/directory.py).
"""

from callgate.web.pages import install_web

__all__ = ["install_web"]
