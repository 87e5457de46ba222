"""Drift events: where a device's live data left the reference of the model version that scores it (which
channels, how far, since when). They are shown, never paged (see ``docs/models.md``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Svc, Viewer
from edgeloop.api.visibility import visible_device
from edgeloop.identity.auth import Role
from edgeloop.store.base import DriftRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/drift", tags=["models"], dependencies=[ROLE[Role.VIEWER]])


@router.get("", responses=reply(list[DriftRecord]))
async def list_drift_events(svc: Svc, who: Viewer, device: str | None = None, asset: str | None = None,
                            since: Annotated[int | None, Query(ge=0)] = None,
                            limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Drift events of the caller's tenant, newest first, optionally of one device or asset and since a time
    (ms): kind (``input``, ``score``, ``alert_rate``, ``precision``), the channels that drifted with their
    distance (PSI), the limit they passed, since when, when it was found, the model version drifted from."""
    if device is not None:
        visible_device(svc, who, device)
    return json_response(await svc.store.list_drift_events(tenant=who.tenant, device=device, asset=asset,
                                                           since=since, limit=limit))
