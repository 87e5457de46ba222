"""Incidents and their lifecycle: the technician's inbox, one incident with its alerts and timeline, and the
moves people make on it (acknowledge, start, resolve, close, reopen, assign, comment), all through the alert
service, the one owner of that state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Svc, Technician, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import actor, visible_incident
from edgeloop.identity.auth import Role
from edgeloop.messages import Alert
from edgeloop.store.alerting import IncidentRecord

__all__ = ["BODY_LIMIT", "INCIDENT_ACTIONS", "PathId", "SeenIncident", "Text", "Who", "incident_view", "router"]

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"], dependencies=[ROLE[Role.VIEWER]])
# what the stores accept (signed 64-bit): never a database overflow
PathId = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]
Text = Annotated[str, msgspec.Meta(max_length=4000)]
Who = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
BODY_LIMIT = 64 * 1024  # the alerting routes' bodies
INCIDENT_ACTIONS = ("acknowledge", "start", "resolve", "close", "reopen")
OPEN_STATUSES = ("open", "acknowledged", "in_progress")


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A status change, with an optional note (``by`` only counts when the API runs without authentication)."""

    note: Text = ""
    by: Who | None = None


class AssignBody(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None
    by: Who | None = None


class CommentBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    by: Who | None = None


class IncidentView(msgspec.Struct, kw_only=True):
    """An incident as the API shows it; ``page_channels``: the configured channels that carry its route's pages
    (none: "not paged: no channel configured", even when the engine decided to page)."""

    page_channels: list[str]
    id: int
    tenant: str
    kind: str
    scope: str
    rule: str
    title: str
    status: str
    priority: float
    route: str
    opened_at: int
    last_raise: int
    paged_at: int | None
    resolved_at: int | None
    merged_into: int | None
    assets: list[str]
    assignee: str | None
    acknowledged_by: str | None
    acknowledged_at: int | None
    closed_at: int | None
    escalation_level: int
    updated_at: int


class TimelineView(msgspec.Struct):
    ts: int
    recorded_at: int | None
    kind: str
    actor: str
    detail: str
    data: dict[str, Any]


class IncidentDetail(IncidentView, kw_only=True):
    """An incident with its alerts (and their explanations) and its timeline, oldest first."""

    alerts: list[Alert]
    timeline: list[TimelineView]


async def _seen_incident(incident_id: PathId, svc: Svc, who: Viewer) -> IncidentRecord:
    return await visible_incident(svc, who, incident_id)


SeenIncident = Annotated[IncidentRecord, Depends(_seen_incident)]
"""The path's incident, 404 unless the caller sees it (checked before the body is decoded)."""


def incident_view(svc: Services, r: IncidentRecord) -> IncidentView:
    return IncidentView(
        page_channels=svc.alerts.page_channels(r.route), id=r.id, tenant=r.tenant, kind=r.kind, scope=r.scope,
        rule=r.rule, title=r.title, status=r.status, priority=r.priority, route=r.route, opened_at=r.opened_at,
        last_raise=r.last_raise, paged_at=r.paged_at, resolved_at=r.resolved_at, merged_into=r.merged_into,
        assets=list(r.assets), assignee=r.assignee, acknowledged_by=r.acknowledged_by,
        acknowledged_at=r.acknowledged_at, closed_at=r.closed_at, escalation_level=r.escalation_level,
        updated_at=r.updated_at)


@router.get("", responses=reply(list[IncidentView]))
async def list_incidents(
    svc: Svc, who: Viewer, status: Annotated[list[str] | None, Query()] = None, asset: str | None = None,
    inbox: bool = False, limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    """Incidents, newest first; ``inbox=true``: the ones still being worked on (open, acknowledged, in
    progress), highest priority first: the technician's inbox."""
    statuses = list(OPEN_STATUSES) if inbox and not status else status
    found = await svc.store.list_incidents(statuses=statuses, tenant=who.tenant, asset=asset, limit=limit)
    if inbox:
        found.sort(key=lambda r: (-r.priority, r.opened_at, r.id))
    return json_response([incident_view(svc, r) for r in found])


@router.get("/{incident_id}", responses=reply(IncidentDetail))
async def get_incident(incident_id: PathId, svc: Svc, rec: SeenIncident) -> Response:
    """One incident with its alerts (and their explanations) and its timeline, oldest first. Times: ``ts``,
    ``opened_at`` and the alerts' ``first_seen``/``last_seen`` are data (sample) times; ``recorded_at`` and
    ``updated_at`` are the platform's clock when it recorded them."""
    alerts = await svc.store.list_alerts(incident=incident_id, limit=10_000)
    timeline = await svc.store.incident_timeline(incident_id)
    view = msgspec.structs.asdict(incident_view(svc, rec))
    return json_response(IncidentDetail(**view, alerts=alerts, timeline=[
        TimelineView(ts=e.ts, recorded_at=e.recorded_at, kind=e.kind, actor=e.actor, detail=e.detail, data=e.data)
        for e in timeline]))


def _action_route(action: str) -> Callable[..., Awaitable[Response]]:
    async def act(incident_id: PathId, svc: Svc, who: Technician, _seen: SeenIncident,
                  req: Annotated[ActionBody, Depends(body(ActionBody, BODY_LIMIT, optional=True))]) -> Response:
        rec = await svc.alerts.act(incident_id, action, actor(who, req.by), note=req.note)
        return json_response(incident_view(svc, rec))

    act.__doc__ = f"{action.capitalize()} the incident (recorded as the authenticated person)."
    return act


for _action in INCIDENT_ACTIONS:
    router.post(f"/{{incident_id}}/{_action}", name=f"incident_{_action}", responses=reply(IncidentView),
                openapi_extra=body_doc(ActionBody, required=False))(_action_route(_action))


@router.post("/{incident_id}/assign", openapi_extra=body_doc(AssignBody), responses=reply(IncidentView))
async def assign(incident_id: PathId, svc: Svc, who: Technician, _seen: SeenIncident,
                 req: Annotated[AssignBody, Depends(body(AssignBody, BODY_LIMIT))]) -> Response:
    """Assign the incident to a person (``to: null`` unassigns)."""
    rec = await svc.alerts.act(incident_id, "assign", actor(who, req.by), to=req.to)
    return json_response(incident_view(svc, rec))


@router.post("/{incident_id}/comments", status_code=201, openapi_extra=body_doc(CommentBody),
             responses=reply(IncidentView, 201))
async def comment(incident_id: PathId, svc: Svc, who: Technician, _seen: SeenIncident,
                  req: Annotated[CommentBody, Depends(body(CommentBody, BODY_LIMIT))]) -> Response:
    rec = await svc.alerts.act(incident_id, "comment", actor(who, req.by), text=req.text)
    return json_response(incident_view(svc, rec), 201)
