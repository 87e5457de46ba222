"""Device identity, as operators and administrators manage it: enrollments (the claims devices provision
themselves with) and revocation. The devices' own routes (provision, renew) are public: ``routers.public``."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.routers.public import provisioning
from edgeloop.api.security import ROLE, Admin, Operator, Source, Svc
from edgeloop.api.visibility import visible_device
from edgeloop.identity.auth import Role
from edgeloop.identity.provisioning import EnrollmentRequest

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["identity"], dependencies=[ROLE[Role.OPERATOR]])


class EnrollmentBody(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of devices that may provision themselves with the claim this returns (shown once)."""

    group: Annotated[str, msgspec.Meta(min_length=1, max_length=23)]
    tenant: str
    line: str
    profile: str
    expires_in_s: Annotated[int, msgspec.Meta(ge=60, le=365 * 86_400)] = 86_400
    asset: str | None = None
    serials: Annotated[list[str], msgspec.Meta(max_length=100_000)] | None = None
    max_devices: Annotated[int, msgspec.Meta(ge=1)] | None = None
    by: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "operator"


class Enrollment(msgspec.Struct):
    """A new enrollment; ``claim`` is not stored and never shown again; ``mqtt``: where its devices connect."""

    group: str
    claim: str
    tenant: str
    line: str
    profile: str
    asset: str | None
    expires_ms: int
    serials: int | None  # how many serial numbers it admits (None: any)
    max_devices: int | None
    mqtt: str


class Revoked(msgspec.Struct):
    device_id: str
    revoked_serials: list[str]  # hexadecimal
    sessions_closed: int


@router.post("/enrollments", status_code=201, openapi_extra=body_doc(EnrollmentBody),
             responses=reply(Enrollment, 201))
async def create_enrollment(svc: Svc, src: Source, who: Operator,
                            req: Annotated[EnrollmentBody, Depends(body(EnrollmentBody))]) -> Response:
    """Create an enrollment; the response holds the claim, which is not stored and never shown again."""
    if not who.sees(req.tenant):
        raise HTTPException(403, f"{who.name} may not enrol devices into tenant {req.tenant!r}")
    enrollment, claim = await provisioning(svc).create_enrollment(EnrollmentRequest(
        group=req.group, tenant=req.tenant, line=req.line, profile=req.profile,
        expires_in_ms=req.expires_in_s * 1000, asset=req.asset,
        serials=tuple(req.serials) if req.serials is not None else None, max_devices=req.max_devices,
    ), by=who.name if who.kind != "anonymous" else req.by, source=src)
    return json_response(Enrollment(
        group=enrollment.id, claim=claim, tenant=enrollment.tenant, line=enrollment.line,
        profile=enrollment.profile, asset=enrollment.asset, expires_ms=enrollment.expires_ms,
        serials=len(enrollment.serials) if enrollment.serials is not None else None,
        max_devices=enrollment.max_devices, mqtt=svc.mqtt_address), 201)


@router.post("/devices/{device_id}/revoke", responses=reply(Revoked))
async def revoke_device(device_id: str, svc: Svc, src: Source, who: Admin) -> Response:
    """Revoke every certificate of a device: the CRL is rewritten, the embedded broker closes its session at
    once (Mosquitto refuses it after a reload); the device must be provisioned anew to return."""
    visible_device(svc, who, device_id)
    provisioning(svc)  # 503 without a PKI
    revoked = await svc.gateways.revoke_device(device_id, by=who.name, source=src)
    return json_response(Revoked(device_id=device_id, revoked_serials=[f"{n:x}" for n in revoked.serials],
                                 sessions_closed=revoked.sessions_closed))
