"""The HTTP API (FastAPI) and the dashboard it serves.

Bodies are the canonical msgspec structs, decoded strictly; their JSON Schemas
are merged into the OpenAPI document (``/openapi.json``, browsable at ``/docs``).
Errors are JSON ``{"detail": ...}``: 400 bad JSON, 404 unknown id, 409 a
conflict with stored state, 422 a schema violation.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from edgeloop import __version__
from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError
from edgeloop.identity.provisioning import EnrollmentRequest, ProvisioningError, ProvisioningService
from edgeloop.messages import Alert, AlertStatus

if TYPE_CHECKING:
    from edgeloop.app import Platform

__all__ = ["create_app"]

T = TypeVar("T")
BODY_TYPES: tuple[type[msgspec.Struct], ...] = (Tenant, Site, Line, Asset, DeviceProfile, Device)  # + below
_encoder = msgspec.json.Encoder()


class ActorBody(msgspec.Struct, forbid_unknown_fields=True):
    by: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


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


class ProvisionBody(msgspec.Struct, forbid_unknown_fields=True):
    """A device's first contact: its claim, its serial number and a CSR for its own key."""

    claim: Annotated[str, msgspec.Meta(max_length=200)]
    serial: Annotated[str, msgspec.Meta(max_length=200)]
    csr: Annotated[str, msgspec.Meta(max_length=16_384)]


MAX_PROVISION_BODY = 32 * 1024


def _json(obj: Any, status_code: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status_code, media_type="application/json")


def _body(tp: type[T], max_bytes: int = 1024 * 1024) -> Callable[[Request], Awaitable[T]]:
    async def decode(request: Request) -> T:
        raw = await request.body()
        if len(raw) > max_bytes:
            raise HTTPException(413, f"request body of {len(raw)} bytes is over the {max_bytes}-byte limit")
        try:
            return msgspec.json.decode(raw, type=tp)
        except msgspec.ValidationError as exc:
            raise HTTPException(422, f"invalid {tp.__name__}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from exc

    return decode


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


def _body_doc(tp: type[Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{tp.__name__}"}}}}}


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="EdgeLoop", version=__version__,
                  description="Telemetry, assets and alerts of an EdgeLoop platform.")
    static = resources.files("edgeloop.web") / "static"

    @app.exception_handler(NotFoundError)
    async def not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ProvisioningError)
    async def refused(_r: Request, exc: ProvisioningError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status)

    @app.exception_handler(ConflictError)
    async def conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    reg = platform.registry

    # -- health and statistics ------------------------------------------------------------------
    @app.get("/api/v1/health", tags=["platform"])
    async def health() -> Response:
        return _json({"status": "ok", "version": __version__, "store": platform.store.backend,
                      "mqtt_connected": platform.source.stats.connected})

    @app.get("/api/v1/stats", tags=["platform"])
    async def stats() -> Response:
        """Devices online, rates, open alerts and the pipeline's queues, counters and dead letters."""
        return _json(await platform.snapshot())

    # -- registry -------------------------------------------------------------------------------
    def listing(name: str, table: Callable[[], dict[str, Any]]) -> None:
        async def list_items() -> Response:
            return _json(list(table().values()))

        app.get(f"/api/v1/{name}", tags=["assets"], name=f"list_{name}")(list_items)

    def creation(name: str, tp: type[Any], put: Callable[[Any], Awaitable[None]]) -> None:
        async def create(item: Any = Depends(_body(tp))) -> Response:  # noqa: B008
            await put(item)
            return _json(item, 201)

        app.post(f"/api/v1/{name}", tags=["assets"], name=f"create_{name}", status_code=201,
                 openapi_extra=_body_doc(tp))(create)

    r = reg.registry
    for name, tp, table, put in (
        ("tenants", Tenant, lambda: r.tenants, reg.put_tenant),
        ("sites", Site, lambda: r.sites, reg.put_site),
        ("lines", Line, lambda: r.lines, reg.put_line),
        ("profiles", DeviceProfile, lambda: r.profiles, reg.put_profile),
        ("devices", Device, lambda: r.devices, reg.put_device),
    ):
        listing(name, table)
        creation(name, tp, put)
    creation("assets", Asset, reg.put_asset)

    @app.get("/api/v1/assets", tags=["assets"])
    async def list_assets() -> Response:
        """Assets with their devices, status (ok / alert / offline), open alerts and last sample time."""
        open_alerts = await platform.store.list_alerts(status=AlertStatus.OPEN, limit=100_000)
        acked = await platform.store.list_alerts(status=AlertStatus.ACKNOWLEDGED, limit=100_000)
        unresolved: dict[str, int] = {}
        for a in (*open_alerts, *acked):
            unresolved[a.asset] = unresolved.get(a.asset, 0) + 1
        devices_of: dict[str, list[str]] = {}
        for d in r.devices.values():
            devices_of.setdefault(d.asset, []).append(d.id)
        last_seen = platform.pipeline.last_seen
        out: list[dict[str, Any]] = []
        for asset in sorted(r.assets.values(), key=lambda a: a.id):
            devs = sorted(devices_of.get(asset.id, []))
            online = any(platform.presence.online.get(d, False) for d in devs)
            seen = [last_seen[d] for d in devs if d in last_seen]
            line = r.lines.get(asset.line)
            site = r.sites.get(line.site) if line else None
            status = "alert" if unresolved.get(asset.id) else ("ok" if online else "offline")
            out.append({"id": asset.id, "name": asset.name, "kind": asset.kind, "line": asset.line,
                        "site": site.id if site else None, "tenant": site.tenant if site else None,
                        "criticality": asset.criticality, "devices": devs, "status": status, "online": online,
                        "open_alerts": unresolved.get(asset.id, 0), "last_seen_ms": max(seen) if seen else None})
        return _json(out)

    @app.get("/api/v1/devices/{device_id}", tags=["assets"])
    async def get_device(device_id: str) -> Response:
        device = r.devices.get(device_id)
        if device is None:
            raise NotFoundError("device", device_id)
        profile = r.profiles[device.profile]
        messages, samples = await platform.store.telemetry_counts(device_id)
        return _json({**msgspec.structs.asdict(device), "online": platform.presence.online.get(device_id, False),
                      "stored_messages": messages, "stored_samples": samples,
                      "last_seen_ms": platform.pipeline.last_seen.get(device_id),
                      "sample_rate_hz": profile.sample_rate_hz, "channels": profile.channels,
                      "dead_letters": platform.pipeline.stats.dead_by_device.get(device_id, 0)})

    # -- telemetry ------------------------------------------------------------------------------
    @app.get("/api/v1/devices/{device_id}/telemetry", tags=["telemetry"])
    async def telemetry(
        device_id: str,
        start: Annotated[int, Query(description="inclusive, ms since epoch")],
        end: Annotated[int, Query(description="exclusive, ms since epoch")],
        channels: Annotated[str | None, Query(description="comma-separated; default all")] = None,
        points: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> Response:
        """min / avg / max per channel in at most ``points`` time buckets (raw data or 1-minute rollups)."""
        device = r.devices.get(device_id)
        if device is None:
            raise NotFoundError("device", device_id)
        if end <= start:
            raise HTTPException(422, "end must be after start")
        known = r.profiles[device.profile].channel_names()
        wanted = tuple(channels.split(",")) if channels else known
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise HTTPException(422, f"unknown channel(s) {', '.join(unknown)}; this device has {', '.join(known)}")
        q = await platform.store.query_telemetry(device_id, wanted, start, end, points)
        return _json({"device": device_id, "start": start, "end": end, "bucket_ms": q.bucket_ms,
                      "source": q.source, "series": q.series})

    # -- alerts ---------------------------------------------------------------------------------
    @app.get("/api/v1/alerts", tags=["alerts"])
    async def list_alerts(
        status: AlertStatus | None = None, asset: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> Response:
        """Alerts, most recently seen first."""
        return _json(await platform.store.list_alerts(status=status, asset=asset, limit=limit))

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(alert_id: int) -> Response:
        return _json(await platform.store.get_alert(alert_id))

    async def transition(alert_id: int, status: AlertStatus, body: ActorBody) -> Alert:
        return await platform.store.set_alert_status(alert_id, status, by=body.by, at_ms=platform.clock.now_ms())

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", tags=["alerts"], openapi_extra=_body_doc(ActorBody))
    async def acknowledge(alert_id: int, body: ActorBody = Depends(_body(ActorBody))) -> Response:  # noqa: B008
        return _json(await transition(alert_id, AlertStatus.ACKNOWLEDGED, body))

    @app.post("/api/v1/alerts/{alert_id}/resolve", tags=["alerts"], openapi_extra=_body_doc(ActorBody))
    async def resolve(alert_id: int, body: ActorBody = Depends(_body(ActorBody))) -> Response:  # noqa: B008
        return _json(await transition(alert_id, AlertStatus.RESOLVED, body))

    # -- dead letters ---------------------------------------------------------------------------
    @app.get("/api/v1/dead-letters", tags=["telemetry"])
    async def dead_letters(device: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        """Refused payloads, newest first, with the reason and the first 4 KiB of the raw bytes."""
        letters = await platform.store.list_dead_letters(device=device, limit=limit)
        return _json([{"id": d.id, "received_ms": d.received_ms, "topic": d.topic, "device": d.device,
                       "tenant": d.tenant, "code": d.code, "detail": d.detail, "size": d.size,
                       "raw_text": d.raw.decode("utf-8", "replace"), "raw_base64": base64.b64encode(d.raw).decode()}
                      for d in letters])

    # -- provisioning and audit -------------------------------------------------------------------
    def provisioning() -> ProvisioningService:
        if platform.provisioning is None:
            raise HTTPException(503, "provisioning is not enabled: start the platform with a PKI (--pki DIR)")
        return platform.provisioning

    @app.post("/api/v1/enrollments", tags=["identity"], status_code=201, openapi_extra=_body_doc(EnrollmentBody))
    async def create_enrollment(
        request: Request, body: EnrollmentBody = Depends(_body(EnrollmentBody))  # noqa: B008
    ) -> Response:
        """Create an enrollment; the response holds the claim, which is not stored and never shown again."""
        enrollment, claim = await provisioning().create_enrollment(EnrollmentRequest(
            group=body.group, tenant=body.tenant, line=body.line, profile=body.profile,
            expires_in_ms=body.expires_in_s * 1000, asset=body.asset,
            serials=tuple(body.serials) if body.serials is not None else None, max_devices=body.max_devices,
        ), by=body.by, source=_source(request))
        return _json({"group": enrollment.id, "claim": claim, "tenant": enrollment.tenant, "line": enrollment.line,
                      "profile": enrollment.profile, "asset": enrollment.asset, "expires_ms": enrollment.expires_ms,
                      "serials": len(enrollment.serials) if enrollment.serials is not None else None,
                      "max_devices": enrollment.max_devices}, 201)

    @app.post("/api/v1/provision", tags=["identity"], status_code=201, openapi_extra=_body_doc(ProvisionBody))
    async def provision(
        request: Request,
        body: ProvisionBody = Depends(_body(ProvisionBody, MAX_PROVISION_BODY)),  # noqa: B008
    ) -> Response:
        """A device exchanges claim + serial + CSR for its certificate; its private key never leaves it."""
        done = await provisioning().provision(claim=body.claim, serial=body.serial, csr_pem=body.csr.encode(),
                                              source=_source(request))
        return _json({"device_id": done.device_id, "certificate": done.certificate_pem,
                      "ca_chain": done.ca_chain_pem}, 201)

    @app.get("/api/v1/audit", tags=["identity"])
    async def audit_log(action: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
        """Security-relevant actions, newest first: who, what, when, from where, and the outcome."""
        return _json(await platform.store.list_audit(limit=limit, action=action))

    # -- dashboard ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, components = msgspec.json.schema_components((*BODY_TYPES, ActorBody, EnrollmentBody, ProvisionBody),
                                                           ref_template="#/components/schemas/{name}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
