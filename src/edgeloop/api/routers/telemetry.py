"""What devices sent: telemetry series, device events and refused payloads (dead letters)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from edgeloop.api.bodies import json_response, reply
from edgeloop.api.security import ROLE, Svc, Viewer
from edgeloop.api.visibility import visible_device
from edgeloop.identity.auth import Role
from edgeloop.store.base import Series

__all__ = ["MAX_TIME_MS", "router"]

router = APIRouter(prefix="/api/v1", tags=["telemetry"], dependencies=[ROLE[Role.VIEWER]])
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: no bucket width or bucket time overflows 64 bits
Millis = Annotated[int, Query(ge=0, le=MAX_TIME_MS)]


class TelemetrySeries(msgspec.Struct):
    """min / avg / max per channel and time bucket; ``source``: raw samples or 1-minute rollups."""

    device: str
    start: int
    end: int
    bucket_ms: int
    source: str
    series: dict[str, Series]


class EventView(msgspec.Struct):
    id: int
    device: str
    ts: int
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    received_ms: int


class DeadLetterView(msgspec.Struct):
    id: int
    received_ms: int
    topic: str
    device: str | None
    tenant: str | None
    code: str
    detail: str
    size: int
    raw_text: str  # the first 4 KiB of the payload, as UTF-8 (invalid bytes replaced)
    raw_base64: str


@router.get("/devices/{device_id}/telemetry", responses=reply(TelemetrySeries))
async def telemetry(
    device_id: str,
    start: Annotated[Millis, Query(description="inclusive, ms since epoch")],
    end: Annotated[Millis, Query(description="exclusive, ms since epoch")],
    svc: Svc, who: Viewer,
    channels: Annotated[str | None, Query(description="comma-separated; default all")] = None,
    points: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> Response:
    """min / avg / max per channel in at most ``points`` time buckets (raw data or 1-minute rollups)."""
    device = visible_device(svc, who, device_id)
    if end <= start:
        raise HTTPException(422, "end must be after start")
    known = svc.registry.registry.profiles[device.profile].channel_names()
    wanted = tuple(channels.split(",")) if channels else known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise HTTPException(422, f"unknown channel(s) {', '.join(unknown)}; this device has {', '.join(known)}")
    q = await svc.store.query_telemetry(device_id, wanted, start, end, points)
    return json_response(TelemetrySeries(device=device_id, start=start, end=end, bucket_ms=q.bucket_ms, source=q.source,
                                series=q.series))


@router.get("/devices/{device_id}/events", responses=reply(list[EventView]))
async def device_events(
    device_id: str, svc: Svc, who: Viewer,
    kind: Annotated[str | None, Query(max_length=64, description="e.g. gap")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    """The device's events, newest first. ``gap``: samples an edge agent had to drop (``data`` has
    ``first_ts``, ``last_ts``, ``samples`` and ``reason``)."""
    visible_device(svc, who, device_id)
    events = await svc.store.list_events(device=device_id, kind=kind, limit=limit)
    return json_response([EventView(id=e.id, device=e.device, ts=e.ts_ms, kind=e.kind, severity=e.severity,
                                    message=e.message, data=e.data, received_ms=e.received_ms) for e in events])


@router.get("/dead-letters", responses=reply(list[DeadLetterView]))
async def dead_letters(svc: Svc, who: Viewer, device: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """Refused payloads, newest first, with the reason and the first 4 KiB of the raw bytes."""
    letters = await svc.store.list_dead_letters(device=device, limit=limit, tenant=who.tenant)
    return json_response([DeadLetterView(
        id=d.id, received_ms=d.received_ms, topic=d.topic, device=d.device, tenant=d.tenant, code=d.code,
        detail=d.detail, size=d.size, raw_text=d.raw.decode("utf-8", "replace"),
        raw_base64=base64.b64encode(d.raw).decode()) for d in letters])
