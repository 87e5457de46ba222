"""Rollout campaigns: a detector version moving to its profile's devices through shadow and canary waves, or an
edge model's version moving to the gateways that run it in canary waves, gated on its quality against the champion
(see ``docs/models.md``). Reading takes a viewer; starting, approving and
aborting a campaign a platform administrator (models are shared by every tenant)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Admin, Svc, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import shared_models_admin
from edgeloop.campaigns.service import CampaignService, CampaignView
from edgeloop.identity.auth import Role
from edgeloop.messages import ID_PATTERN
from edgeloop.models.rollout import RolloutPlan, start_rollout

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"], dependencies=[ROLE[Role.VIEWER]])
_BODY = 256 * 1024
CampaignId = Annotated[str, FastApiPath(pattern=ID_PATTERN)]


class StartBody(msgspec.Struct, forbid_unknown_fields=True):
    """Roll ``model`` (``name@version``) out, replacing the champion: a detector version to its profile's devices, an
    edge version to the gateways running the model. ``plan``: waves, shadow and soak hours (no shadow for an edge
    model), approvals per wave, targets (default: every device of the profile, or every gateway running the edge
    model)."""

    model: Annotated[str, msgspec.Meta(max_length=100)]
    plan: RolloutPlan = msgspec.field(default_factory=RolloutPlan)


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


def _campaigns(svc: Services) -> CampaignService:
    if svc.campaigns is None:
        raise HTTPException(503, "rollout campaigns need the model registry (the platform's PKI)")
    return svc.campaigns



@router.get("", responses=reply(list[CampaignView]))
async def list_campaigns(svc: Svc, who: Viewer, running: bool = False) -> Response:
    """Every campaign (``running``: only those still going), newest first: spec, state, progress and log."""
    views = await _campaigns(svc).list(running_only=running)
    return json_response(sorted(views, key=lambda v: -v.spec.created_ms))


@router.get("/{campaign_id}", responses=reply(CampaignView))
async def get_campaign(campaign_id: CampaignId, svc: Svc, who: Viewer) -> Response:
    """One campaign: its phase, which targets run the candidate, each gate's decision with its figures, its log."""
    return json_response(await _campaigns(svc).get(campaign_id))


@router.post("", status_code=201, openapi_extra=body_doc(StartBody), responses=reply(CampaignView, 201))
async def start_campaign(svc: Svc, who: Admin, req: Annotated[StartBody, Depends(body(StartBody, _BODY))]) -> Response:
    """Start rolling a detector or edge version out (409 while another campaign of the model runs); audited."""
    shared_models_admin(who)
    if svc.models is None:
        raise HTTPException(503, "rollout campaigns need the model registry (the platform's PKI)")
    view = await start_rollout(campaigns=_campaigns(svc), models=svc.models, registry=svc.registry.registry,
                               ref=req.model, plan=req.plan, by=who.name, now_ms=svc.alerts.now(),
                               probes=svc.probes)
    return json_response(view, 201)


@router.post("/{campaign_id}/approve", responses=reply(CampaignView))
async def approve_campaign(campaign_id: CampaignId, svc: Svc, who: Admin) -> Response:
    """Let a campaign waiting for approval enter its next wave; audited with who approved."""
    shared_models_admin(who)
    return json_response(await _campaigns(svc).approve(campaign_id, by=who.name))


@router.post("/{campaign_id}/abort", openapi_extra=body_doc(ReasonBody), responses=reply(CampaignView))
async def abort_campaign(campaign_id: CampaignId, svc: Svc, who: Admin,
                         req: Annotated[ReasonBody, Depends(body(ReasonBody, _BODY))]) -> Response:
    """Stop a campaign: every device that ran the candidate goes back to the champion; audited with the reason."""
    shared_models_admin(who)
    return json_response(await _campaigns(svc).abort(campaign_id, by=who.name, reason=req.reason))
