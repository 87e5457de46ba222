"""Security headers on every HTTP response, and the API documentation pages served from vendored files.

Every response says: no framing (``X-Frame-Options: DENY``, ``frame-ancestors 'none'``), no MIME sniffing, no
referrer, and a Content-Security-Policy that lets a page load only this origin's own files. The dashboard needs
nothing more (no inline script or style, no CDN). ``/docs`` (Swagger UI) and ``/redoc`` load their vendored
bundles from ``/static/vendor``; Swagger UI's one inline start-up script is allowed by its hash, ReDoc by the
inline styles and the blob worker it creates.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DASHBOARD_CSP", "SecurityHeaders", "add_doc_routes"]

_BASE = ("default-src 'self'", "img-src 'self' data:", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
         "frame-ancestors 'none'")
DASHBOARD_CSP = "; ".join((*_BASE, "script-src 'self'", "style-src 'self'"))
_VENDOR = "/static/vendor"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


class SecurityHeaders:
    """ASGI middleware: the security headers on every response; ``csp_for`` names pages with their own policy."""

    def __init__(self, app: ASGIApp, *, csp: str = DASHBOARD_CSP, csp_for: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.csp = csp
        self.csp_for = dict(csp_for or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.csp_for.get(scope["path"], self.csp)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = csp
                headers["X-Frame-Options"] = "DENY"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, with_headers)


def add_doc_routes(app: FastAPI, *, openapi_url: str = "/openapi.json") -> dict[str, str]:
    """``/docs`` and ``/redoc`` from the vendored bundles (create the app with ``docs_url=None, redoc_url=None``);
    returns the Content-Security-Policy of each page, for :class:`SecurityHeaders`."""
    title = f"{app.title} API"
    swagger = get_swagger_ui_html(openapi_url=openapi_url, title=title,
                                  swagger_js_url=f"{_VENDOR}/swagger-ui-bundle.js",
                                  swagger_css_url=f"{_VENDOR}/swagger-ui.css",
                                  swagger_favicon_url=f"{_VENDOR}/swagger-ui-favicon-32x32.png")
    redoc = get_redoc_html(openapi_url=openapi_url, title=title, redoc_js_url=f"{_VENDOR}/redoc.standalone.js",
                           redoc_favicon_url=f"{_VENDOR}/swagger-ui-favicon-32x32.png", with_google_fonts=False)
    swagger_body, redoc_body = bytes(swagger.body), bytes(redoc.body)

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_body)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc_body)

    return {
        "/docs": "; ".join((*_BASE, f"script-src 'self' {_hashes(swagger_body)}", "style-src 'self' 'unsafe-inline'")),
        "/redoc": "; ".join((*_BASE, "script-src 'self'", "style-src 'self' 'unsafe-inline'",
                             "worker-src 'self' blob:")),
    }


def _hashes(page: bytes) -> str:
    """CSP source expressions allowing exactly the page's inline scripts."""
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                    for s in _INLINE_SCRIPT.findall(page.decode()))
