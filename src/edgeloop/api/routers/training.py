"""Training jobs: a profile's stored telemetry and technician labels become a signed candidate version with its
model card (see ``docs/models.md``). Starting one takes a platform administrator (models are shared by every
tenant); reading them a viewer."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Admin, Svc, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import shared_models_admin
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Role
from edgeloop.messages import Id
from edgeloop.models.manifest import Trigger
from edgeloop.models.training_jobs import JobView, TrainingJobs

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/training-jobs", tags=["models"], dependencies=[ROLE[Role.VIEWER]])
_BODY = 64 * 1024
_HOUR_MS = 3_600_000


class TrainBody(msgspec.Struct, forbid_unknown_fields=True):
    """Train a candidate for ``profile`` from its devices' data (``devices``: a subset) over ``[start_ms,
    end_ms]`` (default: the ``hours`` before their newest sample)."""

    profile: Id
    devices: list[Id] | None = None
    start_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    end_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 90)] | None = None


def _jobs(svc: Services) -> TrainingJobs:
    if svc.training is None:
        raise HTTPException(503, "training needs the model registry (the platform's PKI)")
    return svc.training


@router.post("", status_code=202, openapi_extra=body_doc(TrainBody), responses=reply(JobView, 202))
async def start_training(svc: Svc, who: Admin, req: Annotated[TrainBody, Depends(body(TrainBody, _BODY))]) -> Response:
    """Start a training job (a worker process); follow it with ``GET /api/v1/training-jobs/{id}``. The candidate
    is registered as the model's next version and never promoted by training itself."""
    shared_models_admin(who)
    jobs = _jobs(svc)
    start = req.start_ms
    if start is None and req.hours is not None and req.end_ms is not None:
        start = req.end_ms - int(req.hours * _HOUR_MS)
    job = await jobs.plan(profile=req.profile, devices=req.devices, start_ms=start, end_ms=req.end_ms,
                          trigger=Trigger(kind="person", by=who.name), hours=req.hours)
    return json_response(await jobs.start(job), 202)


@router.get("", responses=reply(list[JobView]))
async def list_training_jobs(svc: Svc, who: Viewer) -> Response:
    """The platform's recent training jobs (newest first): state, stage and progress, the candidate and its
    verdict against the champion."""
    return json_response(list(reversed(_jobs(svc).jobs.values())))


@router.get("/{job_id}", responses=reply(JobView))
async def get_training_job(job_id: str, svc: Svc, who: Viewer) -> Response:
    job = _jobs(svc).jobs.get(job_id)
    if job is None:
        raise NotFoundError("training job", job_id)
    return json_response(job)
