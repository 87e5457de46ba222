"""The caller's own session: who am I, log out."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Source, Svc, Viewer
from edgeloop.identity.auth import Role

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[ROLE[Role.VIEWER]])


class Me(msgspec.Struct):
    username: str
    role: str
    tenant: str | None
    kind: str  # user | api_key | anonymous


@router.get("/me", responses=reply(Me))
async def me(who: Viewer) -> Response:
    return json_response(Me(username=who.name, role=who.role.label, tenant=who.tenant, kind=who.kind))


@router.post("/logout", status_code=204)
async def logout(request: Request, svc: Svc, who: Viewer, src: Source) -> Response:
    """End this session: the bearer token stops working (an API key is revoked with ``DELETE /api-keys/{id}``)."""
    _, _, credential = request.headers.get("authorization", "").partition(" ")
    if who.kind == "user":
        await svc.access.logout(credential.strip(), who, source=src)
    return Response(status_code=204)
