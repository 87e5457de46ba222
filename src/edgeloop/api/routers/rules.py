"""What decides whether a signal pages: the alert rule documents (the platform's default and each tenant's own),
maintenance windows and silences, and the answer to "why was I not paged?" (suppressions)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, raw_body, reply
from edgeloop.api.routers.feedback import OptMs
from edgeloop.api.routers.incidents import BODY_LIMIT, Who
from edgeloop.api.security import ROLE, Operator, Source, Svc, Technician, Viewer
from edgeloop.api.visibility import actor, audit, tenant_scope, visible_target
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Role
from edgeloop.store.alerting import MaintenanceRecord, SilenceRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["incidents"], dependencies=[ROLE[Role.VIEWER]])
MAX_WINDOW_MS = 366 * 86_400_000
MAX_RULES_BODY = 1024 * 1024
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


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
    by: Who | None = None


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
    by: Who | None = None


class RuleDocumentView(msgspec.Struct):
    """The rule document in force: ``own`` false means the platform's default (version 0: the built-in one)."""

    tenant: str | None
    own: bool
    version: int
    text: str
    rules: list[dict[str, Any]]


class RulesReplaced(msgspec.Struct):
    tenant: str | None
    version: int
    rules: int


class SuppressionView(msgspec.Struct):
    ts: int
    asset: str
    rule: str
    reason: str  # duplicate, flapping, startup_grace, maintenance, silenced, correlated
    detail: str
    incident: int | None


# -- rules ------------------------------------------------------------------------------------------------------
@router.get("/alert-rules", responses=reply(RuleDocumentView))
async def get_rules(svc: Svc, who: Viewer, tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """The rule document in force for the caller's tenant (or ``tenant``): its own, or else the platform's
    default (``own: false``; version 0: the built-in defaults), and its rules."""
    scope = tenant_scope(svc, who, tenant)
    doc = svc.alerts.rules_of(scope)
    if doc.tenant is None:
        from edgeloop.alerts.service import DEFAULT_RULES

        stored = await svc.store.latest_rules()
        text = stored.text if stored else DEFAULT_RULES
    else:
        text = next((x.text for x in await svc.store.tenant_rules() if x.tenant == doc.tenant), "")
    return json_response(RuleDocumentView(tenant=scope, own=doc.tenant is not None, version=doc.version, text=text,
                                          rules=msgspec.to_builtins(doc.ruleset)["rules"]))


_RULES_BODY = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}}


@router.put("/alert-rules", responses=reply(RulesReplaced), openapi_extra=_RULES_BODY)
async def put_rules(svc: Svc, src: Source, who: Operator,
                    raw: Annotated[bytes, Depends(raw_body(MAX_RULES_BODY))],
                    tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """Replace the caller's tenant's rule document (or ``tenant``'s), YAML or JSON ``{version: 1, rules:
    [...]}``; other tenants' rules do not change. A platform administrator without ``tenant`` replaces the
    platform's default, which every tenant without a document of its own uses. It is checked first: an error
    names the line, the rule and the problem (422), and nothing changes."""
    scope = tenant_scope(svc, who, tenant)
    if scope is None and who.role < Role.ADMIN:
        raise HTTPException(403, "the platform's default rules are for platform administrators")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "the rule document is not UTF-8 text") from exc
    version = await svc.alerts.replace_rules(text, by=who.name, tenant=scope)  # ConfigError (422) names the line
    count = len(svc.alerts.rules_of(scope).ruleset.rules)
    await audit(svc, src, who.name, "alert.rules", f"{scope or 'default'} v{version}",
                f"{count} rules, {len(raw)} bytes")
    return json_response(RulesReplaced(tenant=scope, version=version, rules=count))


# -- maintenance windows and silences ---------------------------------------------------------------------------
@router.get("/maintenance-windows", responses=reply(list[MaintenanceRecord]))
async def list_maintenance(svc: Svc, who: Viewer, active: bool = False) -> Response:
    """Maintenance windows (``active=true``: those not over yet)."""
    return json_response(await svc.store.list_maintenance(tenant=who.tenant,
                                                          ending_after=svc.alerts.now() if active else None))


@router.post("/maintenance-windows", status_code=201, openapi_extra=body_doc(MaintenanceBody),
             responses=reply(MaintenanceRecord, 201))
async def add_maintenance(svc: Svc, src: Source, who: Operator,
                          req: Annotated[MaintenanceBody, Depends(body(MaintenanceBody, BODY_LIMIT))]) -> Response:
    tenant = visible_target(svc, who, req.scope, req.target)
    now = svc.alerts.now()
    start = req.start_ms if req.start_ms is not None else now
    end = req.end_ms if req.end_ms is not None else (
        start + round(req.duration_s * 1000) if req.duration_s is not None else None)
    if end is None or end <= start or end - start > MAX_WINDOW_MS:
        raise HTTPException(422, "a maintenance window needs end_ms after start_ms (or duration_s), at most "
                                 "366 days")
    rec = MaintenanceRecord(id=req.id or f"mw-{secrets.token_hex(4)}", tenant=tenant, scope=req.scope,
                            target=req.target, start_ms=start, end_ms=end, by=actor(who, req.by),
                            reason=req.reason, created_ms=now)
    await svc.alerts.add_maintenance(rec)
    await audit(svc, src, rec.by, "alert.maintenance", rec.id, f"{rec.scope} {rec.target}: {rec.reason}")
    return json_response(rec, 201)


@router.get("/silences", responses=reply(list[SilenceRecord]))
async def list_silences(svc: Svc, who: Viewer, active: bool = False) -> Response:
    return json_response(await svc.store.list_silences(tenant=who.tenant,
                                                       active_at=svc.alerts.now() if active else None))


@router.post("/silences", status_code=201, openapi_extra=body_doc(SilenceBody), responses=reply(SilenceRecord, 201))
async def add_silence(svc: Svc, src: Source, who: Technician,
                      req: Annotated[SilenceBody, Depends(body(SilenceBody, BODY_LIMIT))]) -> Response:
    """Silence raises on an asset, line or site for a while: who, why and until when are recorded and shown
    in every suppression it causes."""
    tenant = visible_target(svc, who, req.scope, req.target)
    now = svc.alerts.now()
    until = req.until_ms if req.until_ms is not None else (
        now + round(req.duration_s * 1000) if req.duration_s is not None else None)
    if until is None or until <= now or until - now > MAX_WINDOW_MS:
        raise HTTPException(422, "a silence needs until_ms in the future (or duration_s), at most 366 days")
    rec = SilenceRecord(id=req.id or f"si-{secrets.token_hex(4)}", tenant=tenant, scope=req.scope,
                        target=req.target, rule=req.rule, start_ms=now, until_ms=until,
                        by=actor(who, req.by), reason=req.reason, created_ms=now)
    await svc.alerts.add_silence(rec)
    await audit(svc, src, rec.by, "alert.silence", rec.id, f"{rec.scope} {rec.target} {rec.rule or 'all rules'}: "
                                                         f"{rec.reason}")
    return json_response(rec, 201)


@router.delete("/silences/{silence_id}", responses=reply(SilenceRecord))
async def end_silence(silence_id: str, svc: Svc, src: Source, who: Technician) -> Response:
    """End a silence now."""
    running = {x.id for x in await svc.store.list_silences(tenant=who.tenant, active_at=svc.alerts.now())}
    if silence_id not in running:
        raise NotFoundError("running silence", silence_id)
    rec = await svc.alerts.end_silence(silence_id)
    await audit(svc, src, who.name, "alert.silence.end", silence_id, "")
    return json_response(rec)


# -- why was I not paged? ---------------------------------------------------------------------------------------
@router.get("/suppressions", responses=reply(list[SuppressionView]))
async def suppressions(svc: Svc, who: Viewer, asset: str | None = None, rule: str | None = None,
                       reason: str | None = None, since: OptMs = None, until: OptMs = None,
                       limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Why was I not paged? Every signal that did not page on its own, newest first, with its reason
    (duplicate, flapping, startup_grace, maintenance, silenced, correlated), the human detail (who, why,
    until when) and the incident it was linked to."""
    found = await svc.store.list_suppressions(asset=asset, rule=rule, since_ms=since, until_ms=until,
                                              tenant=who.tenant, reason=reason, limit=limit)
    return json_response([SuppressionView(ts=x.ts, asset=x.asset, rule=x.rule, reason=x.reason, detail=x.detail,
                                          incident=x.incident) for x in found])
