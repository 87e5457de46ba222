"""The routes anyone may call, and the only ones: liveness, logging in, a device's claim-authenticated first
contact, and a device's renewal (authenticated by its current certificate and key). Every other router carries a
role dependency. Each is rate-limited per address before it reads anything (``edgeloop.api.flood``)."""

from __future__ import annotations

import urllib.parse
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from edgeloop import __version__
from edgeloop.api.bodies import body, body_doc, json_response, raw_body, reply
from edgeloop.api.security import Source, Svc
from edgeloop.api.services import Services
from edgeloop.identity.auth import TOKEN_TTL_MS
from edgeloop.identity.provisioning import ProvisioningService

__all__ = ["MAX_PROVISION_BODY", "MAX_TOKEN_BODY", "PUBLIC_ROUTES", "router"]

MAX_TOKEN_BODY = 4096
MAX_PROVISION_BODY = 32 * 1024
router = APIRouter(prefix="/api/v1")


class Health(msgspec.Struct):
    status: str
    version: str
    store: str
    mqtt_connected: bool
    auth: bool


class TokenAnswer(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    username: str
    role: str
    tenant: str | None


class ProvisionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A device's first contact: its claim, its serial number and a CSR for its own key."""

    claim: Annotated[str, msgspec.Meta(max_length=200)]
    serial: Annotated[str, msgspec.Meta(max_length=200)]
    csr: Annotated[str, msgspec.Meta(max_length=16_384)]


class RenewBody(msgspec.Struct, forbid_unknown_fields=True):
    """A device's renewal: its current certificate, a CSR for its new key, and the CSR signed with its current key."""

    certificate: Annotated[str, msgspec.Meta(max_length=8192)]
    csr: Annotated[str, msgspec.Meta(max_length=16_384)]
    signature: Annotated[str, msgspec.Meta(max_length=512)]


class Issued(msgspec.Struct):
    """A device's certificate (PEM) and the chain up to the platform's root."""

    device_id: str
    certificate: str
    ca_chain: str


def provisioning(svc: Svc) -> ProvisioningService:
    """The provisioning service, or 503 when the platform runs without a PKI."""
    if svc.provisioning is None:
        raise HTTPException(503, "provisioning is not enabled: start the platform with a PKI (--pki DIR)")
    return svc.provisioning


Provisioning = Annotated[ProvisioningService, Depends(provisioning)]


@router.get("/health", tags=["platform"], responses=reply(Health))
async def health(svc: Svc) -> Response:
    return json_response(Health(status="ok", version=__version__, store=svc.store.backend,
                                mqtt_connected=svc.ingest.mqtt_connected, auth=svc.auth))


@router.post("/auth/token", tags=["auth"], responses=reply(TokenAnswer), openapi_extra={"requestBody": {
    "required": True, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "username": {"type": "string"}, "password": {"type": "string"}}}}}}})
async def token(request: Request, svc: Svc, src: Source,
                raw: Annotated[bytes, Depends(raw_body(MAX_TOKEN_BODY))]) -> Response:
    """OAuth2 password grant (form or JSON ``username``, ``password``) -> a bearer token for 12 hours."""
    as_json = request.headers.get("content-type", "").startswith("application/json")
    return json_response(await _login(svc, raw, src, as_json=as_json))


async def _login(svc: Services, raw: bytes, src: str, *, as_json: bool) -> TokenAnswer:
    if as_json:
        try:
            doc = msgspec.json.decode(raw, type=dict[str, str])
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"body is not a JSON object of strings: {exc}") from exc
        username, password = doc.get("username", ""), doc.get("password", "")
    else:
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        username, password = form.get("username", [""])[0], form.get("password", [""])[0]
    if not username or not password:
        raise HTTPException(422, "username and password are required")
    bearer, who = await svc.access.login(username, password, source=src)
    return TokenAnswer(access_token=bearer, token_type="bearer", expires_in=TOKEN_TTL_MS // 1000, username=who.name,
                       role=who.role.label, tenant=who.tenant)


@router.post("/provision", tags=["identity"], status_code=201, openapi_extra=body_doc(ProvisionBody),
             responses=reply(Issued, 201))
async def provision(req: Annotated[ProvisionBody, Depends(body(ProvisionBody, MAX_PROVISION_BODY))],
                    svc: Provisioning, src: Source) -> Response:
    """A device exchanges claim + serial + CSR for its certificate; its private key never leaves it."""
    done = await svc.provision(claim=req.claim, serial=req.serial, csr_pem=req.csr.encode(), source=src)
    return json_response(Issued(device_id=done.device_id, certificate=done.certificate_pem,
                                ca_chain=done.ca_chain_pem), 201)


@router.post("/renew", tags=["identity"], status_code=201, openapi_extra=body_doc(RenewBody),
             responses=reply(Issued, 201))
async def renew(req: Annotated[RenewBody, Depends(body(RenewBody, MAX_PROVISION_BODY))],
                svc: Provisioning, src: Source) -> Response:
    """A device renews its certificate before expiry, proving possession of its current key."""
    done = await svc.renew(certificate_pem=req.certificate.encode(), csr_pem=req.csr.encode(),
                           signature=req.signature, source=src)
    return json_response(Issued(device_id=done.device_id, certificate=done.certificate_pem,
                                ca_chain=done.ca_chain_pem), 201)


PUBLIC_ROUTES = frozenset((method, route.path) for route in router.routes if isinstance(route, APIRoute)
                          for method in route.methods or ())
"""(method, path) of every route anyone may call: the routes of this router, and only these."""
