"""Alerts: listed and read by everyone (their tenant's); acknowledged and resolved through the alert service, the
one writer of alert state, so the engine, the incident and the store agree."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body_doc, decode_body, json_response, raw_body, reply
from edgeloop.api.security import ROLE, Svc, Technician, Viewer
from edgeloop.api.visibility import visible_alert
from edgeloop.identity.auth import Principal, Role
from edgeloop.messages import Alert, AlertStatus

__all__ = ["AlertId", "router"]

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], dependencies=[ROLE[Role.VIEWER]])
# Integers the stores accept (signed 64-bit); anything else is a 422, never a database overflow.
AlertId = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]
_ACTOR_BODY = 64 * 1024


class ActorBody(msgspec.Struct, forbid_unknown_fields=True):
    """Who did it, when the API runs without authentication (otherwise the authenticated caller, and the body is
    not read)."""

    by: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


@router.get("", responses=reply(list[Alert]))
async def list_alerts(svc: Svc, who: Viewer, status: AlertStatus | None = None, asset: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Alerts, most recently seen first."""
    return json_response(await svc.store.list_alerts(status=status, asset=asset, limit=limit, tenant=who.tenant))


@router.get("/{alert_id}", responses=reply(Alert))
async def get_alert(alert_id: AlertId, svc: Svc, who: Viewer) -> Response:
    return json_response(await visible_alert(svc, who, alert_id))


def _by(who: Principal, raw: bytes) -> str:
    if who.kind != "anonymous":
        return who.name
    return decode_body(raw, ActorBody).by if raw.strip() else "anonymous"  # auth disabled: the body may say who


@router.post("/{alert_id}/acknowledge", openapi_extra=body_doc(ActorBody, required=False), responses=reply(Alert))
async def acknowledge(alert_id: AlertId, svc: Svc, who: Technician,
                      raw: Annotated[bytes, Depends(raw_body(_ACTOR_BODY))]) -> Response:
    """Acknowledge (recorded as the authenticated user); its incident, if still open, is acknowledged too."""
    await visible_alert(svc, who, alert_id)
    return json_response(await svc.alerts.acknowledge(alert_id, by=_by(who, raw)))


@router.post("/{alert_id}/resolve", openapi_extra=body_doc(ActorBody, required=False), responses=reply(Alert))
async def resolve(alert_id: AlertId, svc: Svc, who: Technician,
                  raw: Annotated[bytes, Depends(raw_body(_ACTOR_BODY))]) -> Response:
    """Resolve (recorded as the authenticated user): the alert is closed for good; if its condition returns, that
    is a new alert. Its incident resolves once all its alerts are."""
    await visible_alert(svc, who, alert_id)
    return json_response(await svc.alerts.resolve(alert_id, by=_by(who, raw)))


