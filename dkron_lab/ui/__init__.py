"""The standalone web UI: static ES modules served at ``/ui/`` by every server.

The page holds no data: it reads ``/v1`` (relative, ``../v1``) with the API token the browser
was given, so its routes are public. ``routes()`` are tornado rules for ``make_app``, which
mounts them unless ``--no-ui``; ``GET /`` redirects to ``ui/``, as Dkron's does. Redirects
and every URL in the page are relative, so the UI works behind a proxy that mounts the server
under a path prefix and rewrites nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC", "UiFiles", "routes"]

STATIC = Path(__file__).parent / "static"
"""``index.html``, ``app.js``, ``client.js``, ``views/`` and ``ui.css``."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
    )
)
"""No inline script or style and no other origin: the page's settings are ``<meta>`` tags."""


class UiFiles(tornado.web.StaticFileHandler):
    """The UI's files, with a strict Content-Security-Policy; ``index.html`` is never cached
    (it names the modules), the modules are revalidated by their ETag."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")


class _Relative(tornado.web.RequestHandler):
    """``GET /`` and ``GET /ui``: to ``ui/`` relative to the path asked, so a prefix stays."""

    def initialize(self, to: str) -> None:
        self.to = to

    def get(self) -> None:
        query = self.request.query
        self.redirect(self.to + (f"?{query}" if query else ""))

    head = get


def routes() -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The UI's tornado rules: ``/`` and ``/ui`` redirect to ``ui/``, ``/ui/...`` the files."""
    return [
        (r"/", _Relative, {"to": "ui/"}),
        (r"/ui", _Relative, {"to": "ui/"}),
        (r"/ui/(.*)", UiFiles, {"path": str(STATIC), "default_filename": "index.html"}),
    ]
