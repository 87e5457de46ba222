"""Maintenance KPIs (MTTA, MTTR, MTBF, availability, alert precision, ...) and the work orders they count."""

from __future__ import annotations

import dataclasses
import secrets
import typing
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from edgeloop.alerts.kpi import Kpis
from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.routers.feedback import OptMs
from edgeloop.api.routers.incidents import BODY_LIMIT, Who
from edgeloop.api.security import ROLE, Source, Svc, Technician, Viewer
from edgeloop.api.visibility import actor, audit, visible_target
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Role
from edgeloop.store.alerting import WorkOrderRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["kpis"], dependencies=[ROLE[Role.VIEWER]])
Group = Literal["asset", "line", "site", "fleet"]
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]

KpiRow: Any = msgspec.defstruct("KpiRow", [("group", str), *typing.get_type_hints(Kpis).items()])
"""One group's KPIs: ``group`` (an asset, line or site id, or ``fleet``) and the fields of ``Kpis``."""


class DailyKpis(msgspec.Struct):
    day: int  # ms since epoch, midnight UTC
    groups: dict[str, Kpis]


class WorkOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    """A repair on an asset, as a CMMS/ERP reports it back (or a technician opens it): ``downtime_start_ms``
    when the machine stopped. Its id is the CMMS's (default: generated)."""

    asset: _Id
    id: _Id | None = None
    incident: Annotated[int, msgspec.Meta(ge=1)] | None = None
    alert: Annotated[int, msgspec.Meta(ge=1)] | None = None
    downtime_start_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    by: Who | None = None


class WorkOrderCloseBody(msgspec.Struct, forbid_unknown_fields=True):
    """The repair is done; ``downtime_end_ms`` when the machine ran again (default: now)."""

    downtime_end_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    by: Who | None = None


def _row(group: str, k: Kpis) -> Any:
    return KpiRow(group=group, **{f.name: getattr(k, f.name) for f in dataclasses.fields(k)})


@router.get("/kpis", responses=reply(list[KpiRow]))
async def get_kpis(svc: Svc, who: Viewer, group: Group = "fleet",
                   days: Annotated[float, Query(ge=1 / 24, le=366)] = 7.0,
                   end: Annotated[int | None, Query(ge=400 * 86_400_000, le=2**53)] = None) -> Response:
    """MTTA, MTTR (alerts and repairs), MTBF, availability, alert precision from verdicts, false alarms per
    asset-day, raw signals per notification and detection lead time, per group, over the ``days`` before
    ``end`` (default now; at least one hour, at most 366 days). A KPI without data is null, never 0
    (definitions: docs/alerts.md)."""
    from edgeloop.alerts.kpi_source import kpis

    stop = end if end is not None else svc.alerts.now() + 1  # the period includes now
    found = await kpis(svc.store, svc.registry.registry, tenant=who.tenant, start_ms=stop - round(days * 86_400_000),
                       end_ms=stop, group=group)
    return json_response([_row(key, k) for key, k in found.items()])


@router.get("/kpis/daily", responses=reply(list[DailyKpis]))
async def daily(svc: Svc, who: Viewer, group: Group = "fleet",
                days: Annotated[int, Query(ge=1, le=90)] = 30) -> Response:
    """The KPIs per day for the last ``days`` days, oldest first (the dashboard's charts)."""
    from edgeloop.alerts.kpi_source import daily_kpis

    now = svc.alerts.now()
    found = await daily_kpis(svc.store, svc.registry.registry, tenant=who.tenant,
                             end_ms=now - now % 86_400_000 + 86_400_000, days=days, group=group)
    return json_response([DailyKpis(day=day, groups=groups) for day, groups in found])


@router.get("/work-orders", responses=reply(list[WorkOrderRecord]))
async def work_orders(svc: Svc, who: Viewer, since: OptMs = None) -> Response:
    """Work orders: the open ones and those closed since ``since``."""
    return json_response(await svc.store.list_work_orders(tenant=who.tenant, since_ms=since))


@router.post("/work-orders", status_code=201, openapi_extra=body_doc(WorkOrderBody),
             responses=reply(WorkOrderRecord, 201))
async def open_work_order(svc: Svc, src: Source, who: Technician,
                          req: Annotated[WorkOrderBody, Depends(body(WorkOrderBody, BODY_LIMIT))]) -> Response:
    """Record a repair (a CMMS calls this back for the work order EdgeLoop's page asked for)."""
    tenant = visible_target(svc, who, "asset", req.asset)
    rec = WorkOrderRecord(id=req.id or f"wo-{secrets.token_hex(4)}", tenant=tenant, asset=req.asset,
                          opened_ms=svc.clock.now_ms(), opened_by=actor(who, req.by), incident=req.incident,
                          alert=req.alert, downtime_start=req.downtime_start_ms, note=req.note)
    await svc.store.put_work_order(rec)
    await audit(svc, src, rec.opened_by, "work_order.open", rec.id, f"{rec.asset}: {rec.note}")
    return json_response(rec, 201)


@router.post("/work-orders/{order_id}/close", openapi_extra=body_doc(WorkOrderCloseBody, required=False),
             responses=reply(WorkOrderRecord))
async def close_work_order(order_id: str, svc: Svc, src: Source, who: Technician, req: Annotated[
        WorkOrderCloseBody, Depends(body(WorkOrderCloseBody, BODY_LIMIT, optional=True))]) -> Response:
    """The repair is done; the machine ran again at ``downtime_end_ms`` (default: now)."""
    mine = {w.id for w in await svc.store.list_work_orders(tenant=who.tenant)}
    if order_id not in mine:
        raise NotFoundError("open work order", order_id)
    now = svc.clock.now_ms()
    rec = await svc.store.close_work_order(order_id, at_ms=now, by=actor(who, req.by),
                                           downtime_end=req.downtime_end_ms if req.downtime_end_ms is not None
                                           else now)
    await audit(svc, src, rec.closed_by or "", "work_order.close", rec.id, rec.asset)
    return json_response(rec)
