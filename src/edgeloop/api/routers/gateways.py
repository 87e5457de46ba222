"""Edge gateways: their state and health from heartbeats, and the configurations pushed to their agents."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import msgspec
from fastapi import APIRouter, Depends
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Operator, Source, Svc, Viewer
from edgeloop.api.visibility import visible_device, visible_gateway
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Role
from edgeloop.ingest.gateways import config_view, gateway_view

__all__ = ["MAX_CONFIG_BODY", "router"]

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"], dependencies=[ROLE[Role.VIEWER]])
MAX_CONFIG_BODY = 2 * 1024 * 1024  # a 1 MB configuration, JSON-escaped
ConfigVersion = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]


class GatewayConfigBody(msgspec.Struct, forbid_unknown_fields=True):
    """A new configuration for a gateway's agent: the text of its ``agent.yaml`` (its ``version`` is ignored;
    the platform numbers versions per gateway)."""

    config: Annotated[str, msgspec.Meta(min_length=1, max_length=1_000_000)]


class ConfigView(TypedDict, total=False):
    """A pushed configuration: its status (pending, applied, rolled_back, rejected or failed); ``config``: its
    text (one version only); ``gateway``: in the answer to a push."""

    gateway: str
    version: int
    status: str
    error: str
    created_ms: int
    created_by: str
    status_ms: int | None
    config: str


class GatewayView(TypedDict, total=False):
    """A gateway's state (online, degraded or offline, with the reasons) and, once it sent a heartbeat, its
    backlog, lag, drops, CPU, RSS, sources and the configuration it runs (``heartbeat``: as received, one
    gateway only)."""

    id: str
    tenant: str
    state: str
    connected: bool
    reasons: list[str]
    received_ms: int
    heartbeat_age_s: float
    status: str
    status_ms: int | None
    devices: list[str]
    last_heartbeat_ms: int
    interval_s: float
    agent_version: str
    backlog: dict[str, Any]
    sync_lag_s: float
    dropped_samples: int
    accepted_samples: int
    bytes_sent: int
    bytes_raw: int
    uplink: dict[str, Any]
    cpu_percent: float
    rss_bytes: int
    sources: list[dict[str, Any]]
    config: dict[str, Any]
    heartbeat: dict[str, Any]


@router.get("", responses=reply(list[GatewayView]))
async def list_gateways(svc: Svc, who: Viewer) -> Response:
    """Edge gateways (devices that send heartbeats): state (online / degraded / offline) with the reasons,
    backlog, lag, drops, CPU, RSS, per-source status, the devices behind each and the configuration it runs."""
    now = svc.clock.now_ms()
    latest = await svc.store.latest_gateway_configs(tenant=who.tenant)
    return json_response([gateway_view(g, now, latest_config=latest.get(g.id))
                          for g in await svc.store.list_gateways(tenant=who.tenant) if who.sees(g.tenant)])


@router.get("/{gateway_id}", responses=reply(GatewayView))
async def get_gateway(gateway_id: str, svc: Svc, who: Viewer) -> Response:
    """One gateway, with its last heartbeat as received and its newest pushed configuration."""
    record = await visible_gateway(svc, who, gateway_id)
    configs = await svc.store.list_gateway_configs(gateway_id)
    return json_response(gateway_view(record, svc.clock.now_ms(), latest_config=configs[0] if configs else None,
                                      include_heartbeat=True))


@router.put("/{gateway_id}/config", status_code=201, openapi_extra=body_doc(GatewayConfigBody),
            responses=reply(ConfigView, 201))
async def push_gateway_config(gateway_id: str, svc: Svc, src: Source, who: Operator, req: Annotated[
        GatewayConfigBody, Depends(body(GatewayConfigBody, MAX_CONFIG_BODY))]) -> Response:
    """Validate an agent configuration (422 names the line), store it as the gateway's next version and
    publish it retained on the gateway's ``config`` topic. Its status (pending, then applied, rolled_back or
    rejected as the agent reports) is in ``GET .../config``; 503 if it was stored but not delivered."""
    visible_device(svc, who, gateway_id)
    cfg = await svc.gateways.push_gateway_config(gateway_id, req.config, by=who.name, source=src)
    return json_response({"gateway": gateway_id, **config_view(cfg)}, 201)


@router.get("/{gateway_id}/config", responses=reply(list[ConfigView]))
async def list_gateway_configs(gateway_id: str, svc: Svc, who: Viewer) -> Response:
    """Every configuration pushed to the gateway, newest first, with its status."""
    visible_device(svc, who, gateway_id)
    return json_response([config_view(c) for c in await svc.store.list_gateway_configs(gateway_id)])


@router.get("/{gateway_id}/config/{version}", responses=reply(ConfigView))
async def get_gateway_config(gateway_id: str, version: ConfigVersion, svc: Svc, who: Viewer) -> Response:
    """One pushed configuration with its text."""
    visible_device(svc, who, gateway_id)
    cfg = await svc.store.get_gateway_config(gateway_id, version)
    if cfg is None:
        raise NotFoundError("configuration version", version)
    return json_response(config_view(cfg, with_text=True))
