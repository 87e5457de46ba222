"""Closed-loop actions under human control: the tenant's action policies, the decisions they made (with their
hash-chained record), approvals, and holds on automation (a technician's manual override of an asset, an
operator's stop of a policy). See ``docs/actions.md``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from edgeloop.actions.engine import ActionEngine, verify_log
from edgeloop.actions.policy import parse_policies
from edgeloop.actions.replay import replay
from edgeloop.api.bodies import body, body_doc, json_response, raw_body, reply
from edgeloop.api.security import ROLE, Admin, Operator, Source, Svc, Technician, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import tenant_scope, visible_decision, visible_hold
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Principal, Role
from edgeloop.store.actions import DecisionRecord, HoldRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["actions"], dependencies=[ROLE[Role.VIEWER]])
MAX_POLICIES_BODY = 1024 * 1024
MAX_REPLAY_MS = 31 * 86_400_000
_BODY_LIMIT = 16 * 1024
Text = Annotated[str, msgspec.Meta(max_length=1000)]


class PoliciesView(msgspec.Struct):
    """A tenant's action policies in force (version 0: none yet)."""

    tenant: str
    version: int
    text: str
    policies: list[dict[str, Any]]


class PoliciesReplaced(msgspec.Struct):
    tenant: str
    version: int
    policies: int


class RunBody(msgspec.Struct, forbid_unknown_fields=True):
    """Run a person-triggered policy on an asset now."""

    asset: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    """Replay a policy on ``[from_ms, to_ms)``: the version in force, or the one of that name in ``text`` (a
    whole policy document, YAML or JSON, not yet in force)."""

    from_ms: Annotated[int, msgspec.Meta(ge=0)]
    to_ms: Annotated[int, msgspec.Meta(ge=0)]
    text: Annotated[str, msgspec.Meta(max_length=MAX_POLICIES_BODY)] | None = None


class CheckView(msgspec.Struct):
    name: str
    ok: bool
    detail: str
    value: float | None


class ReplayRowView(msgspec.Struct):
    ts: int
    asset: str
    cause: str
    outcome: str  # would_send | held | dry_run | awaiting_approval | off
    detail: str
    checks: list[CheckView]
    in_force: str | None  # what the version in force would have done on the same trigger
    actual: str | None  # the state of the decision the platform really made


class ReplayView(msgspec.Struct):
    policy: str
    tenant: str
    from_ms: int
    to_ms: int
    version: str  # "in force v3", or "proposed"
    rows: list[ReplayRowView]
    counts: dict[str, int]  # outcome -> triggers
    differs: int  # triggers where the replayed version and the version in force would act differently


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    note: Text = ""


class HoldBody(msgspec.Struct, forbid_unknown_fields=True):
    """Hold automation on ``target`` (an asset id; or ``policy:NAME`` to stop a policy) for ``duration_s``."""

    target: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class EntryView(msgspec.Struct):
    id: int
    ts: int
    kind: str
    actor: str
    body: dict[str, Any]
    prev: str
    hash: str


class DecisionView(msgspec.Struct):
    """A decision and every record of it, oldest first: why, what was checked with which values, who approved,
    the command, the gateway's answer, the effect."""

    decision: DecisionRecord
    entries: list[EntryView]


class LogCheckView(msgspec.Struct):
    ok: bool
    records: int
    head: str  # keep it elsewhere: a record cut off the end of the log shows only against it
    problems: list[str]


def _engine(svc: Services) -> ActionEngine:
    if svc.actions is None:
        raise HTTPException(503, "the actions engine is not running")
    return svc.actions


def _tenant(svc: Services, who: Principal, tenant: str | None) -> str:
    """The tenant a request means (``tenant_scope``); a platform principal must name one."""
    scope = tenant_scope(svc, who, tenant)
    if scope is None:
        raise HTTPException(422, "say which tenant (?tenant=...)")
    return scope


# -- policies -------------------------------------------------------------------------------------------------
@router.get("/policies", responses=reply(PoliciesView))
async def get_policies(svc: Svc, who: Viewer, tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """The tenant's action policies in force, as written and as read."""
    scope = _tenant(svc, who, tenant)
    version, found = _engine(svc).policies(scope)
    stored = await svc.store.get_policies(scope, version) if version else None
    return json_response(PoliciesView(tenant=scope, version=version, text=stored.text if stored else "",
                                      policies=msgspec.to_builtins(found)["policies"]))


_POLICIES_BODY = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}}


@router.put("/policies", responses=reply(PoliciesReplaced), openapi_extra=_POLICIES_BODY)
async def put_policies(svc: Svc, src: Source, who: Admin, raw: Annotated[bytes, Depends(raw_body(MAX_POLICIES_BODY))],
                       tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """Replace the tenant's action policies (administrators): YAML or JSON ``{policies: [...]}``. It is checked
    first: an error names the line, the policy and the problem (422), and nothing changes."""
    scope = _tenant(svc, who, tenant)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "the policy document is not UTF-8 text") from exc
    doc = await _engine(svc).put_policies(scope, text, by=who.name, source=src)
    return json_response(PoliciesReplaced(tenant=scope, version=doc.version,
                                          policies=len(_engine(svc).policies(scope)[1].policies)))


@router.post("/policies/{name}/run", status_code=201, responses=reply(DecisionRecord, 201),
             openapi_extra=body_doc(RunBody))
async def run_policy(name: str, svc: Svc, who: Operator, req: Annotated[RunBody, Depends(body(RunBody, _BODY_LIMIT))],
                     tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """Run a person-triggered policy on an asset now (operators): its checks, approvals and mode apply."""
    scope = _tenant(svc, who, tenant)
    return json_response(await _engine(svc).run_person(scope, name, req.asset, by=who.name), 201)


@router.post("/policies/{name}/replay", responses=reply(ReplayView), openapi_extra=body_doc(ReplayBody))
async def replay_policy(name: str, svc: Svc, who: Operator,
                        req: Annotated[ReplayBody, Depends(body(ReplayBody, MAX_POLICIES_BODY + 1024))],
                        tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """What a policy (the version in force, or the one in ``text``) would have done on stored history: each
    trigger, the outcome with the checks that held it, what the version in force would have done, what the
    platform really decided. Nothing is sent or recorded."""
    scope = _tenant(svc, who, tenant)
    if req.to_ms <= req.from_ms:
        raise HTTPException(422, "to_ms must come after from_ms")
    if req.to_ms - req.from_ms > MAX_REPLAY_MS:
        raise HTTPException(422, f"replay at most {MAX_REPLAY_MS // 86_400_000} days at a time")
    version, current = _engine(svc).policies(scope)
    in_force = current.by_name().get(name)
    if req.text is not None:
        proposed = (await asyncio.to_thread(parse_policies, req.text, origin="policies")).by_name().get(name)
        if proposed is None:
            raise NotFoundError("policy", name)
        chosen, label = proposed, "proposed"
    elif in_force is not None:
        chosen, label = in_force, f"in force v{version}"
    else:
        raise NotFoundError("policy", name)
    rows = await replay(svc.store, svc.registry.registry, chosen, tenant=scope, start=req.from_ms, end=req.to_ms,
                        in_force=in_force if req.text is not None else None)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return json_response(ReplayView(
        policy=name, tenant=scope, from_ms=req.from_ms, to_ms=req.to_ms, version=label, counts=counts,
        differs=sum(1 for r in rows if r.in_force is not None and r.in_force != r.outcome),
        rows=[ReplayRowView(ts=r.ts, asset=r.asset, cause=r.cause, outcome=r.outcome, detail=r.detail,
                            checks=[CheckView(c.name, c.ok, c.detail, c.value) for c in r.checks],
                            in_force=r.in_force, actual=r.actual) for r in rows]))


# -- decisions ------------------------------------------------------------------------------------------------
@router.get("/decisions", responses=reply(list[DecisionRecord]))
async def list_decisions(svc: Svc, who: Viewer, asset: str | None = None, state: str | None = None,
                         command: str | None = None, since: Annotated[int | None, Query(ge=0)] = None,
                         until: Annotated[int | None, Query(ge=0)] = None,
                         limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
    """Decisions of the caller's tenant, newest first: by asset, state, command, or time (``since <= created <
    until``, ms). "Why did pump 7 slow down at 10:42?": ``?asset=pump-7&since=...``, then the decision."""
    return json_response(await svc.store.list_decisions(tenant=who.tenant, asset=asset, state=state, command=command,
                                                        since=since, until=until, limit=limit))


@router.get("/decisions/{decision_id}", responses=reply(DecisionView))
async def get_decision(decision_id: str, svc: Svc, who: Viewer) -> Response:
    """One decision with its whole record."""
    decision = await visible_decision(svc, who, decision_id)
    entries = [EntryView(id=e.id, ts=e.ts, kind=e.kind, actor=e.actor, body=json.loads(e.body), prev=e.prev,
                         hash=e.hash) for e in await svc.store.decision_entries(decision_id)]
    return json_response(DecisionView(decision=decision, entries=entries))


async def _approve(svc: Services, who: Principal, decision_id: str, approve: bool, note: str) -> Response:
    decision = await visible_decision(svc, who, decision_id)
    return json_response(await _engine(svc).approve(decision.id, by=who.name, approve=approve, note=note,
                                                    tenant=decision.tenant))


@router.post("/decisions/{decision_id}/approve", responses=reply(DecisionRecord), openapi_extra=body_doc(NoteBody))
async def approve_decision(decision_id: str, svc: Svc, who: Operator,
                           req: Annotated[NoteBody, Depends(body(NoteBody, _BODY_LIMIT))]) -> Response:
    """Approve a decision awaiting approval (operators); with enough different approvers its checks run again
    and it acts. A second approval by the same person is refused (409)."""
    return await _approve(svc, who, decision_id, True, req.note)


@router.post("/decisions/{decision_id}/reject", responses=reply(DecisionRecord), openapi_extra=body_doc(NoteBody))
async def reject_decision(decision_id: str, svc: Svc, who: Operator,
                          req: Annotated[NoteBody, Depends(body(NoteBody, _BODY_LIMIT))]) -> Response:
    """Reject a decision awaiting approval (operators): it ends, nothing is sent."""
    return await _approve(svc, who, decision_id, False, req.note)


@router.get("/decision-log/verify", responses=reply(LogCheckView))
async def verify_decision_log(svc: Svc, who: Admin) -> Response:
    """Walk the whole hash-chained decision log (administrators): an altered or removed record is named."""
    found = await verify_log(svc.store)
    return json_response(LogCheckView(ok=found.ok, records=found.records, head=found.head, problems=found.problems))


# -- holds ----------------------------------------------------------------------------------------------------
@router.get("/holds", responses=reply(list[HoldRecord]))
async def list_holds(svc: Svc, who: Viewer, active: bool = True) -> Response:
    """Holds on automation of the caller's tenant (``active=false``: also those over), newest first."""
    return json_response(await svc.store.list_holds(tenant=who.tenant,
                                                    active_at=svc.clock.now_ms() if active else None))


def _hold_tenant(svc: Services, who: Principal, target: str, tenant: str | None) -> str:
    if target.startswith("policy:"):
        if who.role < Role.OPERATOR:
            raise HTTPException(403, "stopping a policy is for operators")
        return _tenant(svc, who, tenant)
    owner = svc.registry.registry.tenant_of("asset", target)
    if owner is None or not who.sees(owner):
        raise NotFoundError("asset", target)
    return owner


@router.post("/holds", status_code=201, responses=reply(HoldRecord, 201), openapi_extra=body_doc(HoldBody))
async def add_hold(svc: Svc, src: Source, who: Technician,
                   req: Annotated[HoldBody, Depends(body(HoldBody, _BODY_LIMIT))],
                   tenant: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    """Hold automation for a time: on an asset (technicians: a manual override; no policy acts on it) or on
    ``policy:NAME`` (operators: the policy decides nothing). Shown on the asset and audited."""
    scope = _hold_tenant(svc, who, req.target, tenant)
    return json_response(await _engine(svc).hold(scope, req.target, by=who.name, duration_s=req.duration_s,
                                                 reason=req.reason, source=src), 201)


@router.post("/holds/{hold_id}/release", responses=reply(HoldRecord))
async def release_hold(hold_id: str, svc: Svc, src: Source, who: Technician) -> Response:
    """End a hold before its time."""
    found = await visible_hold(svc, who, hold_id)
    if found.target.startswith("policy:") and who.role < Role.OPERATOR:
        raise HTTPException(403, "restarting a policy is for operators")
    return json_response(await _engine(svc).release(hold_id, by=who.name, tenant=found.tenant, source=src))
