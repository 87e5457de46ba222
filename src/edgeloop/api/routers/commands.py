"""Commands sent to machines and what their gateways answered (read-only here: commands are issued by the
actions engine, under its policies, approvals and interlocks; see ``docs/actions.md``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Svc, Viewer
from edgeloop.api.visibility import visible_command, visible_device
from edgeloop.identity.auth import Role
from edgeloop.store.actions import CommandRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/commands", tags=["actions"], dependencies=[ROLE[Role.VIEWER]])
Status = Literal["pending", "sent", "applied", "refused", "failed", "expired"]


@router.get("", responses=reply(list[CommandRecord]))
async def list_commands(svc: Svc, who: Viewer, device: str | None = None, status: Status | None = None,
                        since: Annotated[int | None, Query(ge=0)] = None,
                        until: Annotated[int | None, Query(ge=0)] = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Commands of the caller's tenant, newest first, optionally of one device, in one status, issued in
    ``since <= ts < until`` (ms): the action and value, the idempotency key, the sequence number, the expiry, the
    trace id, who issued it and under which decision, and the gateway's answer (status, code, reason, the value
    before and the value read back after the write)."""
    if device is not None:
        visible_device(svc, who, device)
    return json_response(await svc.store.list_commands(tenant=who.tenant, device=device, status=status,
                                                       since=since, until=until, limit=limit))


@router.get("/{command_id}", responses=reply(CommandRecord))
async def get_command(command_id: str, svc: Svc, who: Viewer) -> Response:
    """One command and its answer."""
    return json_response(await visible_command(svc, who, command_id))
