"""The routes anyone may call are rate-limited per client address before they read anything.

A flood of logins, provisioning or renewal requests from one address is refused with 429 (and ``Retry-After``)
before its body is read, decoded or its password hashed. The services keep their own, finer limits (failed logins
per user and address, provisioning audited per address); this one only bounds what an address can make the
platform do for free.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from edgeloop.clock import Clock
from edgeloop.identity.auth import RateLimiter

__all__ = ["PUBLIC_RATE", "PublicRateLimit"]

PUBLIC_RATE = (20.0, 200)  # per address: requests per second sustained, burst


class PublicRateLimit:
    """ASGI middleware: at most ``rate_per_s`` (bursts of ``burst``) requests per client address on ``routes``
    (``(method, path)``, exact paths: the public routes have no parameters)."""

    def __init__(self, app: ASGIApp, *, routes: Collection[tuple[str, str]], clock: Clock,
                 rate_per_s: float = PUBLIC_RATE[0], burst: int = PUBLIC_RATE[1]) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.clock = clock
        self.limiter = RateLimiter(rate_per_s=rate_per_s, burst=burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.routes:
            client = scope.get("client")
            wait = self.limiter.take(client[0] if client else "", int(self.clock.monotonic() * 1000))
            if wait:
                answer = JSONResponse({"detail": f"too many requests from this address; retry in {wait} s"},
                                      status_code=429, headers={"Retry-After": str(wait)})
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
