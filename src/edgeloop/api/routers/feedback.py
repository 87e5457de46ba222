"""Technician feedback: verdicts on alerts (stored as training labels), the labels themselves (JSON, CSV or
Parquet), and the threshold changes feedback proposed, which an operator approves or rejects."""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from edgeloop.alerts.feedback import Proposal
from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.routers.alerts import AlertId
from edgeloop.api.routers.incidents import BODY_LIMIT, PathId, SeenIncident, Who
from edgeloop.api.security import ROLE, Operator, Svc, Technician, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import actor, visible_alert
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Principal, Role
from edgeloop.messages import Alert
from edgeloop.store.alerting import Label

__all__ = ["OptMs", "router"]

router = APIRouter(prefix="/api/v1", tags=["incidents"], dependencies=[ROLE[Role.VIEWER]])
OptMs = Annotated[int | None, Query(ge=0, le=2**63 - 1)]  # a time in ms, optional


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    """A technician's verdict: ``confirmed`` (with the ``fault_type`` found), ``false_alarm`` (with a
    ``reason``) or ``relabel`` (with the ``fault_type`` it really was)."""

    verdict: Literal["confirmed", "false_alarm", "relabel"]
    fault_type: Annotated[str, msgspec.Meta(max_length=64)] = ""
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    by: Who | None = None


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class Tuning(msgspec.Struct):
    """What the tuner decided after a verdict (applied, proposed, refused, ...), with the level before and after."""

    action: str
    old: float
    new: float
    why: str
    proposal: int | None


class FeedbackResult(msgspec.Struct):
    label: Label
    tuning: Tuning | None


class ProposalView(msgspec.Struct):
    id: int
    ts: int
    asset: str
    rule: str
    old: float
    new: float
    old_clear: float | None
    new_clear: float | None
    lower: float | None
    upper: float | None
    triggered_by: list[str]
    alerts: list[int]
    why: str


class DecisionView(msgspec.Struct):
    action: str
    asset: str
    rule: str
    old: float
    new: float
    why: str


async def _give(svc: Services, alert_ids: list[int], req: FeedbackBody, by: str) -> Response:
    out = []
    for alert_id in alert_ids:
        label, decision = await svc.alerts.feedback(alert_id, req.verdict, by=by, fault_type=req.fault_type,
                                                    reason=req.reason)  # InvalidFeedback (422) names the field
        out.append(FeedbackResult(label=label, tuning=None if decision is None else Tuning(
            action=decision.audit.action.value, old=decision.audit.old, new=decision.audit.new,
            why=decision.audit.why, proposal=decision.proposal.id if decision.proposal else None)))
    return json_response(out, 201)


async def _seen_alert(alert_id: AlertId, svc: Svc, who: Viewer) -> Alert:
    return await visible_alert(svc, who, alert_id)


@router.post("/alerts/{alert_id}/feedback", status_code=201, openapi_extra=body_doc(FeedbackBody),
             responses=reply(list[FeedbackResult], 201))
async def alert_feedback(alert_id: AlertId, svc: Svc, who: Technician,
                         _seen: Annotated[Alert, Depends(_seen_alert)],
                         req: Annotated[FeedbackBody, Depends(body(FeedbackBody, BODY_LIMIT))]) -> Response:
    """Confirm an alert (with the fault type), call it a false alarm (with a reason) or relabel it. Stored
    as a training label with its data window, detector / rule version and the person; repeated false alarms
    of a tunable rule on one asset tune its level within the rule's bounds (audited)."""
    return await _give(svc, [alert_id], req, actor(who, req.by))


@router.post("/incidents/{incident_id}/feedback", status_code=201, openapi_extra=body_doc(FeedbackBody),
             responses=reply(list[FeedbackResult], 201))
async def incident_feedback(incident_id: PathId, svc: Svc, who: Technician, _seen: SeenIncident,
                            req: Annotated[FeedbackBody, Depends(body(FeedbackBody, BODY_LIMIT))]) -> Response:
    """The same verdict on every alert of the incident (one tap in the inbox)."""
    alerts = await svc.store.list_alerts(incident=incident_id, limit=10_000)
    if not alerts:
        raise HTTPException(409, f"incident {incident_id} has no alerts to give feedback on")
    return await _give(svc, sorted(a.id for a in alerts), req, actor(who, req.by))


_TABLE = {"text/csv": {"schema": {"type": "string"}},
          "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}


@router.get("/labels", responses=reply(list[Label], media=_TABLE))
async def labels(svc: Svc, who: Viewer, asset: str | None = None, since: OptMs = None,
                 format: Literal["json", "csv", "parquet"] = "json") -> Response:
    """Technician feedback as training labels, oldest first: JSON, CSV or Parquet (the same columns)."""
    found = await svc.store.list_labels(tenant=who.tenant, asset=asset, since_ms=since)
    if format == "json":
        return json_response(found)
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


def _sees_asset(svc: Services, who: Principal, asset: str) -> bool:
    return who.sees(svc.registry.registry.tenant_of("asset", asset) or "")


@router.get("/tuning/proposals", responses=reply(list[ProposalView]))
async def proposals(svc: Svc, who: Viewer) -> Response:
    """Threshold changes feedback proposed, waiting for an operator."""
    return json_response([ProposalView(
        id=p.id, ts=p.ts_ms, asset=p.change.asset, rule=p.change.rule, old=p.change.old, new=p.change.new,
        old_clear=p.change.old_clear, new_clear=p.change.new_clear, lower=p.lower, upper=p.upper,
        triggered_by=list(p.triggered_by), alerts=list(p.alerts), why=p.why)
        for p in svc.alerts.proposals() if _sees_asset(svc, who, p.change.asset)])


async def _pending(proposal_id: PathId, svc: Svc, who: Viewer) -> Proposal:
    p = next((p for p in svc.alerts.proposals() if p.id == proposal_id), None)
    if p is None or not _sees_asset(svc, who, p.change.asset):
        raise NotFoundError("proposal", proposal_id)
    return p


def _decide_route(approve: bool) -> Callable[..., Awaitable[Response]]:
    async def decide(proposal_id: PathId, svc: Svc, who: Operator, _p: Annotated[Proposal, Depends(_pending)],
                     req: Annotated[DecisionBody, Depends(body(DecisionBody, BODY_LIMIT, optional=True))]) -> Response:
        d = await svc.alerts.decide_proposal(proposal_id, approve=approve, by=who.name, reason=req.reason)
        return json_response(DecisionView(action=d.audit.action.value, asset=d.audit.asset, rule=d.audit.rule,
                                          old=d.audit.old, new=d.audit.new, why=d.audit.why))

    decide.__doc__ = ("Approve the proposal: the level moves on that asset at once (audited)." if approve
                      else "Reject the proposal (audited); nothing changes.")
    return decide


for _verb, _yes in (("approve", True), ("reject", False)):
    router.post(f"/tuning/proposals/{{proposal_id}}/{_verb}", name=f"proposal_{_verb}", responses=reply(DecisionView),
                openapi_extra=body_doc(DecisionBody, required=False))(_decide_route(_yes))
