"""Who is calling, and whether their role allows the route.

Every router but the public one carries a role dependency (``dependencies=[ROLE[Role.VIEWER]]``), so a route
added to it is authenticated by default; a route that needs more asks for it (``who: Operator``). The caller is
authenticated once per request (FastAPI caches ``principal``), whatever the number of role checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from edgeloop.api.services import Services
from edgeloop.identity.access import AuthError
from edgeloop.identity.auth import ANONYMOUS_ADMIN, Principal, Role

__all__ = ["ROLE", "Admin", "Operator", "Source", "Svc", "Technician", "Viewer", "principal", "services", "source"]


def services(request: Request) -> Services:
    """The services ``create_app`` was given."""
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def source(request: Request) -> str:
    """The client's address (the proxy's client when uvicorn trusts the proxy): for limits and the audit log."""
    return request.client.host if request.client else ""


async def principal(request: Request, svc: Svc) -> Principal:
    """The authenticated caller; 401 without valid credentials (the anonymous administrator without auth)."""
    if not svc.auth:
        return ANONYMOUS_ADMIN
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    who = await svc.access.authenticate(credential.strip()) if scheme.lower() == "bearer" and credential else None
    if who is None:
        raise AuthError(401, "authentication required: send a valid bearer token or API key")
    return who


def _at_least(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role < role:
            raise HTTPException(403, f"{who.role.label} may not do this; it needs {role.label}")
        return who

    check.__name__ = f"at_least_{role.label}"
    return check


_CHECKS = {role: _at_least(role) for role in Role}
ROLE: dict[Role, Any] = {role: Depends(check) for role, check in _CHECKS.items()}
"""A router's ``dependencies=[ROLE[...]]``: every route on it needs at least that role (``Any``: it is also a
parameter's default, ``who: Principal = ROLE[role]``, where the role is only known at run time)."""

Viewer = Annotated[Principal, Depends(_CHECKS[Role.VIEWER])]
Technician = Annotated[Principal, Depends(_CHECKS[Role.TECHNICIAN])]
Operator = Annotated[Principal, Depends(_CHECKS[Role.OPERATOR])]
Admin = Annotated[Principal, Depends(_CHECKS[Role.ADMIN])]
Source = Annotated[str, Depends(source)]
