"""The audit log: security-relevant actions, for platform administrators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Admin, Svc
from edgeloop.identity.auth import Role
from edgeloop.store.base import AuditRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["identity"], dependencies=[ROLE[Role.ADMIN]])


@router.get("/audit", responses=reply(list[AuditRecord]))
async def audit_log(svc: Svc, who: Admin, action: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Security-relevant actions, newest first: who, what, when, from where, and the outcome."""
    if who.tenant is not None:
        raise HTTPException(403, "the audit log is for platform administrators")
    return json_response(await svc.store.list_audit(limit=limit, action=action))
