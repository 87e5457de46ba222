"""Request bodies refused with 413 before they are read: a limit per route, checked as the bytes arrive.

A declared ``Content-Length`` over the route's limit is refused before the application runs (and so before the
client is told to send the body); a chunked body is counted as it streams in and refused as soon as it passes
the limit. Nothing is buffered here, so memory never grows with what a client sends. A route's limit is the one its
body dependency declares (``bodies.body`` / ``bodies.raw_body``; :func:`route_limits` collects them from the app);
a route that reads no body gets the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from fastapi import HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeloop.api.bodies import BodyReader

__all__ = ["BodyLimit", "RouteLimit", "route_limits"]

RouteLimit = tuple[str, str, int]
"""(method, path template as routes spell it, e.g. ``/api/v1/gateways/{gateway_id}/config``, max bytes)."""


def route_limits(routes: Iterable[BaseRoute]) -> list[RouteLimit]:
    """The limit of every route that reads a body, as its body dependency (``bodies.body``/``raw_body``) declares."""
    out: list[RouteLimit] = []
    for route in routes:
        if isinstance(route, APIRoute):
            limits = [r.max_bytes for r in _readers(route.dependant)]
            out.extend((method, route.path, max(limits)) for method in sorted(route.methods or ()) if limits)
    return out


def _readers(dependant: Dependant) -> list[BodyReader]:
    found = [dependant.call] if isinstance(dependant.call, BodyReader) else []
    for sub in dependant.dependencies:
        found.extend(_readers(sub))
    return found


def _too_large(limit: int) -> str:
    return f"request body over the {limit}-byte limit of this route"


class BodyLimit:
    """ASGI middleware: at most ``default`` body bytes, or the route's own limit from ``routes``."""

    def __init__(self, app: ASGIApp, *, default: int, routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = [(method, compile_path(path)[0], limit) for method, path, limit in routes]

    def limit_for(self, method: str, path: str) -> int:
        for m, pattern, limit in self.routes:
            if m == method and pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await JSONResponse({"detail": _too_large(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # the route's exception handling answers 413; the rest is never read
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)


_DIGITS = re.compile(rb"[0-9]{1,19}")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and _DIGITS.fullmatch(value):
            return int(value)
    return None
