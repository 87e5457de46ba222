"""The platform's statistics: devices online, rates, open alerts, the pipeline's queues and counters."""

from __future__ import annotations

from typing import Any, TypedDict

from fastapi import APIRouter
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Svc, Viewer
from edgeloop.identity.auth import Role

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["platform"], dependencies=[ROLE[Role.VIEWER]])


class Stats(TypedDict, total=False):
    """A tenant's principals get ``tenant`` and only their tenant's devices, presence, dead letters and alerts;
    the platform's get ``readings_per_s``, ``messages_per_s`` and the ``scoring`` and ``alerting`` counters too.
    ``totals`` are what the store holds; the other counters count since the process started (``uptime_s``)."""

    now_ms: int
    tenant: str
    devices_total: int
    devices_online: int
    readings_per_s: float
    messages_per_s: float
    alerts_open: int
    alerts_acknowledged: int
    uptime_s: float
    totals: dict[str, int]
    ingest: dict[str, Any]
    scoring: dict[str, Any]
    alerting: dict[str, Any]


@router.get("/stats", responses=reply(Stats))
async def stats(svc: Svc, who: Viewer) -> Response:
    """Devices online, rates, open alerts and the pipeline's queues, counters and dead letters; a tenant's
    principals see only their tenant's devices, presence, dead letters and open alerts."""
    return json_response(await svc.ingest.stats(who.tenant))
