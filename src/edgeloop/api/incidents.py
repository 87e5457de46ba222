"""Routes of the alerting API: incidents and their lifecycle, "why was I not paged?", alert rules,
maintenance windows and silences. Everything that changes alert state goes through the alert service
(``platform.alerts``), the one owner of it; reads come from the store."""

from __future__ import annotations

import asyncio
import io
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import RedirectResponse, Response

from edgeloop.api.bodies import body_doc, decode_body
from edgeloop.api.bodies import json_response as _json
from edgeloop.errors import ConfigError, NotFoundError
from edgeloop.identity.auth import Principal, Role
from edgeloop.store.alerting import IncidentRecord, MaintenanceRecord, SilenceRecord, WorkOrderRecord
from edgeloop.store.base import AuditRecord

if TYPE_CHECKING:
    from edgeloop.app import Platform

__all__ = ["add_incident_routes"]

T = TypeVar("T")
_Text = Annotated[str, msgspec.Meta(max_length=4000)]
_Who = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
# what the stores accept (signed 64-bit): never a database overflow
PathId = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]
OptMs = Annotated[int | None, Query(ge=0, le=2**63 - 1)]  # a time in ms, optional
MAX_WINDOW_MS = 366 * 86_400_000
INCIDENT_ACTIONS = ("acknowledge", "start", "resolve", "close", "reopen")
OPEN_STATUSES = ("open", "acknowledged", "in_progress")


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A status change, with an optional note (``by`` only counts when the API runs without authentication)."""

    note: _Text = ""
    by: _Who | None = None


class AssignBody(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None
    by: _Who | None = None


class CommentBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    by: _Who | None = None


class MaintenanceBody(msgspec.Struct, forbid_unknown_fields=True):
    """Planned work: raises on the target (asset, line or site) do not page from ``start_ms`` (default now)
    to ``end_ms`` (or for ``duration_s``)."""

    scope: Literal["asset", "line", "site"]
    target: _Id
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    start_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    end_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)] | None = None
    id: _Id | None = None
    by: _Who | None = None


class SilenceBody(msgspec.Struct, forbid_unknown_fields=True):
    """A manual silence: raises of ``rule`` (every rule when empty) on the target do not page for
    ``duration_s`` (or until ``until_ms``)."""

    scope: Literal["asset", "line", "site"]
    target: _Id
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    rule: Annotated[str, msgspec.Meta(max_length=128)] = ""
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)] | None = None
    until_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    id: _Id | None = None
    by: _Who | None = None


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    """A technician's verdict: ``confirmed`` (with the ``fault_type`` found), ``false_alarm`` (with a
    ``reason``) or ``relabel`` (with the ``fault_type`` it really was)."""

    verdict: Literal["confirmed", "false_alarm", "relabel"]
    fault_type: Annotated[str, msgspec.Meta(max_length=64)] = ""
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    by: _Who | None = None


class WorkOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    """A repair on an asset, as a CMMS/ERP reports it back (or a technician opens it): ``downtime_start_ms``
    when the machine stopped. Its id is the CMMS's (default: generated)."""

    asset: _Id
    id: _Id | None = None
    incident: Annotated[int, msgspec.Meta(ge=1)] | None = None
    alert: Annotated[int, msgspec.Meta(ge=1)] | None = None
    downtime_start_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    by: _Who | None = None


class WorkOrderCloseBody(msgspec.Struct, forbid_unknown_fields=True):
    """The repair is done; ``downtime_end_ms`` when the machine ran again (default: now)."""

    downtime_end_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    by: _Who | None = None


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


BODIES: tuple[type[msgspec.Struct], ...] = (ActionBody, AssignBody, CommentBody, MaintenanceBody, SilenceBody,
                                            FeedbackBody, DecisionBody, WorkOrderBody, WorkOrderCloseBody)




async def _decode(request: Request, tp: type[T], *, optional: bool = False) -> T:
    return decode_body(await request.body(), tp, max_bytes=64 * 1024, optional=optional)


def _actor(who: Principal, given: str | None) -> str:
    """The authenticated person; without authentication, the body's ``by`` (else "anonymous")."""
    return (given or "anonymous") if who.kind == "anonymous" else who.name


def incident_view(r: IncidentRecord, page_channels: list[str]) -> dict[str, Any]:
    """An incident as the API shows it; ``page_channels``: the configured channels that carry its route's pages
    (none: "not paged: no channel configured", even when the engine decided to page)."""
    return {"page_channels": page_channels,
            "id": r.id, "tenant": r.tenant, "kind": r.kind, "scope": r.scope, "rule": r.rule, "title": r.title,
            "status": r.status, "priority": r.priority, "route": r.route, "opened_at": r.opened_at,
            "last_raise": r.last_raise, "paged_at": r.paged_at, "resolved_at": r.resolved_at,
            "merged_into": r.merged_into, "assets": list(r.assets), "assignee": r.assignee,
            "acknowledged_by": r.acknowledged_by, "acknowledged_at": r.acknowledged_at, "closed_at": r.closed_at,
            "escalation_level": r.escalation_level, "updated_at": r.updated_at}


def add_incident_routes(app: FastAPI, platform: Platform, *, viewer: Any, technician: Any, operator: Any) -> None:
    """``viewer``, ``technician``, ``operator``: the app's ``Depends`` guards of those roles."""
    store = platform.store
    reg = platform.registry.registry

    def view(r: IncidentRecord) -> dict[str, Any]:
        return incident_view(r, platform.alerts.page_channels(r.route))

    async def visible_incident(who: Principal, incident_id: int) -> IncidentRecord:
        rec = await store.get_incident(incident_id)
        if not who.sees(rec.tenant):
            raise NotFoundError("incident", incident_id)
        return rec

    def target_tenant(scope: str, target: str) -> str | None:
        if scope == "asset":  # a gateway's id is an asset scope too
            return reg.tenant_of("asset", target) or reg.tenant_of("device", target)
        return reg.tenant_of("line" if scope == "line" else "site", target)

    def visible_target(who: Principal, scope: str, target: str) -> str:
        tenant = target_tenant(scope, target)
        if tenant is None or not who.sees(tenant):
            raise NotFoundError(scope, target)
        return tenant

    async def audit(request: Request, who: str, action: str, target: str, detail: str) -> None:
        host = request.client.host if request.client else ""
        await store.audit(AuditRecord(ts_ms=platform.clock.now_ms(), actor=who, action=action, target=target,
                                      outcome="ok", detail=detail, source=host))

    # -- incidents --------------------------------------------------------------------------------------------
    @app.get("/api/v1/incidents", tags=["incidents"])
    async def list_incidents(
        status: Annotated[list[str] | None, Query()] = None, asset: str | None = None,
        inbox: bool = False, limit: Annotated[int, Query(ge=1, le=10_000)] = 200, who: Principal = viewer,
    ) -> Response:
        """Incidents, newest first; ``inbox=true``: the ones still being worked on (open, acknowledged, in
        progress), highest priority first: the technician's inbox."""
        statuses = list(OPEN_STATUSES) if inbox and not status else status
        found = await store.list_incidents(statuses=statuses, tenant=who.tenant, asset=asset, limit=limit)
        if inbox:
            found.sort(key=lambda r: (-r.priority, r.opened_at, r.id))
        return _json([view(r) for r in found])

    @app.get("/api/v1/incidents/{incident_id}", tags=["incidents"])
    async def get_incident(incident_id: PathId,
                           who: Principal = viewer) -> Response:
        """One incident with its alerts (and their explanations) and its timeline, oldest first. Times: ``ts``,
        ``opened_at`` and the alerts' ``first_seen``/``last_seen`` are data (sample) times; ``recorded_at`` and
        ``updated_at`` are the platform's clock when it recorded them."""
        rec = await visible_incident(who, incident_id)
        alerts = await store.list_alerts(incident=incident_id, limit=10_000)
        timeline = await store.incident_timeline(incident_id)
        return _json({**view(rec), "alerts": alerts,
                      "timeline": [{"ts": e.ts, "recorded_at": e.recorded_at, "kind": e.kind, "actor": e.actor,
                                    "detail": e.detail, "data": e.data} for e in timeline]})

    def action_route(action: str) -> Callable[..., Awaitable[Response]]:
        async def act(request: Request, incident_id: PathId,
                      who: Principal = technician) -> Response:
            await visible_incident(who, incident_id)
            body = await _decode(request, ActionBody, optional=True)
            rec = await platform.alerts.act(incident_id, action, _actor(who, body.by), note=body.note)
            return _json(view(rec))

        act.__doc__ = f"{action.capitalize()} the incident (recorded as the authenticated person)."
        return act

    for action in INCIDENT_ACTIONS:
        app.post(f"/api/v1/incidents/{{incident_id}}/{action}", tags=["incidents"], name=f"incident_{action}",
                 openapi_extra=body_doc(ActionBody, required=False))(action_route(action))

    @app.post("/api/v1/incidents/{incident_id}/assign", tags=["incidents"], openapi_extra=body_doc(AssignBody))
    async def assign(request: Request, incident_id: PathId,
                     who: Principal = technician) -> Response:
        """Assign the incident to a person (``to: null`` unassigns)."""
        await visible_incident(who, incident_id)
        body = await _decode(request, AssignBody)
        rec = await platform.alerts.act(incident_id, "assign", _actor(who, body.by), to=body.to)
        return _json(view(rec))

    @app.post("/api/v1/incidents/{incident_id}/comments", tags=["incidents"], status_code=201,
              openapi_extra=body_doc(CommentBody))
    async def comment(request: Request, incident_id: PathId,
                      who: Principal = technician) -> Response:
        await visible_incident(who, incident_id)
        body = await _decode(request, CommentBody)
        rec = await platform.alerts.act(incident_id, "comment", _actor(who, body.by), text=body.text)
        return _json(view(rec), 201)

    @app.get("/incidents/{incident_id}", include_in_schema=False)
    async def incident_link(incident_id: PathId) -> RedirectResponse:
        """The link in notifications: the incident on the dashboard (which asks to sign in if need be)."""
        return RedirectResponse(f"/#/incidents/{incident_id}", status_code=303)

    # -- technician feedback ----------------------------------------------------------------------------------
    async def give_feedback(alert_ids: list[int], body: FeedbackBody, by: str) -> Response:
        out = []
        for alert_id in alert_ids:
            try:
                label, decision = await platform.alerts.feedback(alert_id, body.verdict, by=by,
                                                                 fault_type=body.fault_type, reason=body.reason)
            except ConfigError as exc:  # InvalidFeedback names the field
                raise HTTPException(422, str(exc)) from exc
            out.append({"label": msgspec.to_builtins(label),
                        "tuning": None if decision is None else {
                            "action": decision.audit.action.value, "old": decision.audit.old,
                            "new": decision.audit.new, "why": decision.audit.why,
                            "proposal": decision.proposal.id if decision.proposal else None}})
        return _json(out, 201)

    @app.post("/api/v1/alerts/{alert_id}/feedback", tags=["incidents"], status_code=201,
              openapi_extra=body_doc(FeedbackBody))
    async def alert_feedback(request: Request, alert_id: PathId,
                             who: Principal = technician) -> Response:
        """Confirm an alert (with the fault type), call it a false alarm (with a reason) or relabel it. Stored
        as a training label with its data window, detector / rule version and the person; repeated false alarms
        of a tunable rule on one asset tune its level within the rule's bounds (audited)."""
        alert = await store.get_alert(alert_id)
        if not who.sees(alert.tenant):
            raise NotFoundError("alert", alert_id)
        body = await _decode(request, FeedbackBody)
        return await give_feedback([alert_id], body, _actor(who, body.by))

    @app.post("/api/v1/incidents/{incident_id}/feedback", tags=["incidents"], status_code=201,
              openapi_extra=body_doc(FeedbackBody))
    async def incident_feedback(request: Request, incident_id: PathId,
                                who: Principal = technician) -> Response:
        """The same verdict on every alert of the incident (one tap in the inbox)."""
        await visible_incident(who, incident_id)
        body = await _decode(request, FeedbackBody)
        alerts = await store.list_alerts(incident=incident_id, limit=10_000)
        if not alerts:
            raise HTTPException(409, f"incident {incident_id} has no alerts to give feedback on")
        return await give_feedback(sorted(a.id for a in alerts), body, _actor(who, body.by))

    @app.get("/api/v1/labels", tags=["incidents"])
    async def labels(asset: str | None = None, since: OptMs = None,
                     format: Literal["json", "csv", "parquet"] = "json", who: Principal = viewer) -> Response:
        """Technician feedback as training labels, oldest first: JSON, CSV or Parquet (the same columns)."""
        found = await store.list_labels(tenant=who.tenant, asset=asset, since_ms=since)
        if format == "json":
            return _json([msgspec.to_builtins(x) for x in found])
        from edgeloop.alerts.feedback import labels_to_csv, labels_to_parquet

        if format == "csv":
            text = io.StringIO()
            labels_to_csv(found, text)
            return Response(text.getvalue(), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="labels.csv"'})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "labels.parquet"
            await asyncio.to_thread(labels_to_parquet, found, path)
            data = path.read_bytes()
        return Response(data, media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": 'attachment; filename="labels.parquet"'})

    @app.get("/api/v1/tuning/proposals", tags=["incidents"])
    async def proposals(who: Principal = viewer) -> Response:
        """Threshold changes feedback proposed, waiting for an operator."""
        visible = [p for p in platform.alerts.proposals()
                   if who.sees(reg.tenant_of("asset", p.change.asset) or "")]
        return _json([{"id": p.id, "ts": p.ts_ms, "asset": p.change.asset, "rule": p.change.rule,
                       "old": p.change.old, "new": p.change.new, "old_clear": p.change.old_clear,
                       "new_clear": p.change.new_clear, "lower": p.lower, "upper": p.upper,
                       "triggered_by": list(p.triggered_by), "alerts": list(p.alerts), "why": p.why}
                      for p in visible])

    def decide_route(approve: bool) -> Callable[..., Awaitable[Response]]:
        async def decide(request: Request, proposal_id: PathId,
                         who: Principal = operator) -> Response:
            pending = {p.id: p for p in platform.alerts.proposals()}
            p = pending.get(proposal_id)
            if p is None or not who.sees(reg.tenant_of("asset", p.change.asset) or ""):
                raise NotFoundError("proposal", proposal_id)
            body = await _decode(request, DecisionBody, optional=True)
            d = await platform.alerts.decide_proposal(proposal_id, approve=approve, by=who.name, reason=body.reason)
            return _json({"action": d.audit.action.value, "asset": d.audit.asset, "rule": d.audit.rule,
                          "old": d.audit.old, "new": d.audit.new, "why": d.audit.why})

        decide.__doc__ = ("Approve the proposal: the level moves on that asset at once (audited)." if approve
                          else "Reject the proposal (audited); nothing changes.")
        return decide

    for verb, yes in (("approve", True), ("reject", False)):
        app.post(f"/api/v1/tuning/proposals/{{proposal_id}}/{verb}", tags=["incidents"], name=f"proposal_{verb}",
                 openapi_extra=body_doc(DecisionBody, required=False))(decide_route(yes))

    # -- KPIs and work orders ---------------------------------------------------------------------------------
    @app.get("/api/v1/kpis", tags=["kpis"])
    async def get_kpis(group: Literal["asset", "line", "site", "fleet"] = "fleet",
                       days: Annotated[float, Query(ge=1 / 24, le=366)] = 7.0,
                       end: Annotated[int | None, Query(ge=400 * 86_400_000, le=2**53)] = None,
                       who: Principal = viewer) -> Response:
        """MTTA, MTTR (alerts and repairs), MTBF, availability, alert precision from verdicts, false alarms per
        asset-day, raw signals per notification and detection lead time, per group, over the ``days`` before
        ``end`` (default now; at least one hour, at most 366 days). A KPI without data is null, never 0
        (definitions: docs/alerts.md)."""
        from edgeloop.alerts.kpi_source import kpis

        stop = end if end is not None else platform.alerts.now() + 1  # the period includes now
        found = await kpis(store, reg, tenant=who.tenant, start_ms=stop - round(days * 86_400_000), end_ms=stop,
                           group=group)
        return _json([{"group": key, **_fields(k)} for key, k in found.items()])

    @app.get("/api/v1/kpis/daily", tags=["kpis"])
    async def daily(group: Literal["asset", "line", "site", "fleet"] = "fleet",
                    days: Annotated[int, Query(ge=1, le=90)] = 30, who: Principal = viewer) -> Response:
        """The KPIs per day for the last ``days`` days, oldest first (the dashboard's charts)."""
        from edgeloop.alerts.kpi_source import daily_kpis

        now = platform.alerts.now()
        found = await daily_kpis(store, reg, tenant=who.tenant, end_ms=now - now % 86_400_000 + 86_400_000,
                                 days=days, group=group)
        return _json([{"day": day, "groups": {k: _fields(v) for k, v in groups.items()}} for day, groups in found])

    @app.get("/api/v1/work-orders", tags=["kpis"])
    async def work_orders(since: OptMs = None, who: Principal = viewer) -> Response:
        """Work orders: the open ones and those closed since ``since``."""
        return _json([_fields(w) for w in await store.list_work_orders(tenant=who.tenant, since_ms=since)])

    @app.post("/api/v1/work-orders", tags=["kpis"], status_code=201, openapi_extra=body_doc(WorkOrderBody))
    async def open_work_order(request: Request, who: Principal = technician) -> Response:
        """Record a repair (a CMMS calls this back for the work order EdgeLoop's page asked for)."""
        body = await _decode(request, WorkOrderBody)
        tenant = visible_target(who, "asset", body.asset)
        now = platform.clock.now_ms()
        rec = WorkOrderRecord(id=body.id or f"wo-{secrets.token_hex(4)}", tenant=tenant, asset=body.asset,
                              opened_ms=now, opened_by=_actor(who, body.by), incident=body.incident,
                              alert=body.alert, downtime_start=body.downtime_start_ms, note=body.note)
        await store.put_work_order(rec)
        await audit(request, rec.opened_by, "work_order.open", rec.id, f"{rec.asset}: {rec.note}")
        return _json(_fields(rec), 201)

    @app.post("/api/v1/work-orders/{order_id}/close", tags=["kpis"], openapi_extra=body_doc(WorkOrderCloseBody,
                                                                                         required=False))
    async def close_work_order(request: Request, order_id: str, who: Principal = technician) -> Response:
        """The repair is done; the machine ran again at ``downtime_end_ms`` (default: now)."""
        body = await _decode(request, WorkOrderCloseBody, optional=True)
        mine = {w.id for w in await store.list_work_orders(tenant=who.tenant)}
        if order_id not in mine:
            raise NotFoundError("open work order", order_id)
        now = platform.clock.now_ms()
        rec = await store.close_work_order(order_id, at_ms=now, by=_actor(who, body.by),
                                           downtime_end=body.downtime_end_ms if body.downtime_end_ms is not None
                                           else now)
        await audit(request, rec.closed_by or "", "work_order.close", rec.id, rec.asset)
        return _json(_fields(rec))

    # -- why was I not paged? ---------------------------------------------------------------------------------
    @app.get("/api/v1/suppressions", tags=["incidents"])
    async def suppressions(asset: str | None = None, rule: str | None = None, reason: str | None = None,
                           since: OptMs = None,
                           until: OptMs = None,
                           limit: Annotated[int, Query(ge=1, le=10_000)] = 200, who: Principal = viewer) -> Response:
        """Why was I not paged? Every signal that did not page on its own, newest first, with its reason
        (duplicate, flapping, startup_grace, maintenance, silenced, correlated), the human detail (who, why,
        until when) and the incident it was linked to."""
        found = await store.list_suppressions(asset=asset, rule=rule, since_ms=since, until_ms=until,
                                              tenant=who.tenant, reason=reason, limit=limit)
        return _json([{"ts": x.ts, "asset": x.asset, "rule": x.rule, "reason": x.reason, "detail": x.detail,
                       "incident": x.incident} for x in found])

    # -- rules ------------------------------------------------------------------------------------------------
    def rules_tenant(who: Principal, tenant: str | None) -> str | None:
        """Whose rule document a request means: ``tenant`` if given (404 for one the caller does not see), else
        the caller's own tenant's (None: the platform's default, for a platform principal)."""
        if tenant is None:
            return who.tenant
        if tenant not in reg.tenants or not who.sees(tenant):
            raise NotFoundError("tenant", tenant)
        return tenant

    @app.get("/api/v1/alert-rules", tags=["incidents"])
    async def get_rules(tenant: Annotated[str | None, Query(max_length=128)] = None,
                        who: Principal = viewer) -> Response:
        """The rule document in force for the caller's tenant (or ``tenant``): its own, or else the platform's
        default (``own: false``; version 0: the built-in defaults), and its rules."""
        scope = rules_tenant(who, tenant)
        doc = platform.alerts.rules_of(scope)
        stored = await store.latest_rules() if doc.tenant is None else None
        from edgeloop.alerts.service import DEFAULT_RULES

        text = (stored.text if stored else DEFAULT_RULES) if doc.tenant is None else await own_text(doc.tenant)
        return _json({"tenant": scope, "own": doc.tenant is not None, "version": doc.version, "text": text,
                      "rules": msgspec.to_builtins(doc.ruleset)["rules"]})

    async def own_text(tenant: str) -> str:
        return next((x.text for x in await store.tenant_rules() if x.tenant == tenant), "")

    @app.put("/api/v1/alert-rules", tags=["incidents"], openapi_extra={"requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}})
    async def put_rules(request: Request, tenant: Annotated[str | None, Query(max_length=128)] = None,
                        who: Principal = operator) -> Response:
        """Replace the caller's tenant's rule document (or ``tenant``'s), YAML or JSON ``{version: 1, rules:
        [...]}``; other tenants' rules do not change. A platform administrator without ``tenant`` replaces the
        platform's default, which every tenant without a document of its own uses. It is checked first: an error
        names the line, the rule and the problem (422), and nothing changes."""
        scope = rules_tenant(who, tenant)
        if scope is None and who.role < Role.ADMIN:
            raise HTTPException(403, "the platform's default rules are for platform administrators")
        raw = await request.body()
        if len(raw) > 1024 * 1024:
            raise HTTPException(413, "rule document over 1 MiB")
        try:
            version = await platform.alerts.replace_rules(raw.decode("utf-8"), by=who.name, tenant=scope)
        except UnicodeDecodeError as exc:
            raise HTTPException(400, "the rule document is not UTF-8 text") from exc
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        count = len(platform.alerts.rules_of(scope).ruleset.rules)
        await audit(request, who.name, "alert.rules", f"{scope or 'default'} v{version}",
                    f"{count} rules, {len(raw)} bytes")
        return _json({"tenant": scope, "version": version, "rules": count})

    # -- maintenance windows and silences ---------------------------------------------------------------------
    @app.get("/api/v1/maintenance-windows", tags=["incidents"])
    async def list_maintenance(active: bool = False, who: Principal = viewer) -> Response:
        """Maintenance windows (``active=true``: those not over yet)."""
        found = await store.list_maintenance(tenant=who.tenant, ending_after=platform.alerts.now() if active else None)
        return _json([_fields(m) for m in found])

    @app.post("/api/v1/maintenance-windows", tags=["incidents"], status_code=201,
              openapi_extra=body_doc(MaintenanceBody))
    async def add_maintenance(request: Request, who: Principal = operator) -> Response:
        body = await _decode(request, MaintenanceBody)
        tenant = visible_target(who, body.scope, body.target)
        now = platform.alerts.now()
        start = body.start_ms if body.start_ms is not None else now
        end = body.end_ms if body.end_ms is not None else (
            start + round(body.duration_s * 1000) if body.duration_s is not None else None)
        if end is None or end <= start or end - start > MAX_WINDOW_MS:
            raise HTTPException(422, "a maintenance window needs end_ms after start_ms (or duration_s), at most "
                                     "366 days")
        rec = MaintenanceRecord(id=body.id or f"mw-{secrets.token_hex(4)}", tenant=tenant, scope=body.scope,
                                target=body.target, start_ms=start, end_ms=end, by=_actor(who, body.by),
                                reason=body.reason, created_ms=now)
        await platform.alerts.add_maintenance(rec)
        await audit(request, rec.by, "alert.maintenance", rec.id, f"{rec.scope} {rec.target}: {rec.reason}")
        return _json(_fields(rec), 201)

    @app.get("/api/v1/silences", tags=["incidents"])
    async def list_silences(active: bool = False, who: Principal = viewer) -> Response:
        found = await store.list_silences(tenant=who.tenant, active_at=platform.alerts.now() if active else None)
        return _json([_fields(x) for x in found])

    @app.post("/api/v1/silences", tags=["incidents"], status_code=201, openapi_extra=body_doc(SilenceBody))
    async def add_silence(request: Request, who: Principal = technician) -> Response:
        """Silence raises on an asset, line or site for a while: who, why and until when are recorded and shown
        in every suppression it causes."""
        body = await _decode(request, SilenceBody)
        tenant = visible_target(who, body.scope, body.target)
        now = platform.alerts.now()
        until = body.until_ms if body.until_ms is not None else (
            now + round(body.duration_s * 1000) if body.duration_s is not None else None)
        if until is None or until <= now or until - now > MAX_WINDOW_MS:
            raise HTTPException(422, "a silence needs until_ms in the future (or duration_s), at most 366 days")
        rec = SilenceRecord(id=body.id or f"si-{secrets.token_hex(4)}", tenant=tenant, scope=body.scope,
                            target=body.target, rule=body.rule, start_ms=now, until_ms=until,
                            by=_actor(who, body.by), reason=body.reason, created_ms=now)
        await platform.alerts.add_silence(rec)
        await audit(request, rec.by, "alert.silence", rec.id, f"{rec.scope} {rec.target} {rec.rule or 'all rules'}: "
                                                              f"{rec.reason}")
        return _json(_fields(rec), 201)

    @app.delete("/api/v1/silences/{silence_id}", tags=["incidents"])
    async def end_silence(request: Request, silence_id: str, who: Principal = technician) -> Response:
        """End a silence now."""
        running = {x.id: x for x in await store.list_silences(tenant=who.tenant, active_at=platform.alerts.now())}
        if silence_id not in running:
            raise NotFoundError("running silence", silence_id)
        rec = await platform.alerts.end_silence(silence_id)
        await audit(request, who.name, "alert.silence.end", silence_id, "")
        return _json(_fields(rec))


def _fields(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}
