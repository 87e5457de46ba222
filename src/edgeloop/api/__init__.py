"""The HTTP API (FastAPI) and the dashboard it serves.

Bodies are the canonical msgspec structs, decoded strictly; their JSON Schemas
are merged into the OpenAPI document (``/openapi.json``, browsable at ``/docs``).
Errors are JSON ``{"detail": ...}``: 400 bad JSON, 404 unknown id, 409 a
conflict with stored state, 413 a body over the route's limit (refused before it is read, ``limits``),
422 a schema violation.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from edgeloop import __version__
from edgeloop.api.bodies import body_doc as _body_doc
from edgeloop.api.bodies import decode_body
from edgeloop.api.bodies import json_response as _json
from edgeloop.api.headers import SecurityHeaders, add_doc_routes
from edgeloop.api.incidents import BODIES as INCIDENT_BODIES
from edgeloop.api.incidents import add_incident_routes
from edgeloop.api.limits import BodyLimit
from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import BrokerError, ConfigError, ConflictError, NotFoundError
from edgeloop.identity.access import AuthError
from edgeloop.identity.auth import ANONYMOUS_ADMIN, TOKEN_TTL_MS, Principal, Role
from edgeloop.identity.provisioning import EnrollmentRequest, ProvisioningError, ProvisioningService
from edgeloop.ingest.gateways import config_view, gateway_view
from edgeloop.messages import ID_PATTERN, Alert, AlertStatus
from edgeloop.store.base import AuditRecord, GatewayRecord, User

if TYPE_CHECKING:
    from edgeloop.app import Platform

__all__ = ["create_app"]

T = TypeVar("T")
BODY_TYPES: tuple[type[msgspec.Struct], ...] = (Tenant, Site, Line, Asset, DeviceProfile, Device)  # + below


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


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
    password: Annotated[str, msgspec.Meta(min_length=12, max_length=200)]
    role: Literal["viewer", "technician", "operator", "admin"]
    tenant: str | None = None


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    """A new password for a user; without one, the platform generates it and answers it once."""

    password: Annotated[str, msgspec.Meta(min_length=12, max_length=200)] | None = None


class ApiKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    role: Literal["viewer", "technician", "operator", "admin"]
    tenant: str | None = None


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


class GatewayConfigBody(msgspec.Struct, forbid_unknown_fields=True):
    """A new configuration for a gateway's agent: the text of its ``agent.yaml`` (its ``version`` is ignored;
    the platform numbers versions per gateway)."""

    config: Annotated[str, msgspec.Meta(min_length=1, max_length=1_000_000)]


MAX_BODY = 1024 * 1024  # any route without a limit of its own
MAX_TOKEN_BODY = 4096
MAX_PROVISION_BODY = 32 * 1024
MAX_CONFIG_BODY = 2 * 1024 * 1024  # a 1 MB configuration, JSON-escaped
ConfigVersion = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]


def _body(tp: type[T], max_bytes: int = 1024 * 1024) -> Callable[[Request], Awaitable[T]]:
    async def decode(request: Request) -> T:
        return decode_body(await request.body(), tp, max_bytes=max_bytes)

    return decode


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


def _key(item: Any) -> str:
    return str(item.name if isinstance(item, DeviceProfile) else item.id)


# Integers the stores accept (signed 64-bit); anything else is a 422, never a database overflow.
AlertId = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: no bucket width or bucket time overflows 64 bits
Millis = Annotated[int, Query(ge=0, le=MAX_TIME_MS)]
# Routes anyone may call: liveness, logging in, a device's claim-authenticated first contact, and a
# device's renewal (authenticated by its current certificate and key).

PUBLIC_ROUTES = frozenset({("GET", "/api/v1/health"), ("POST", "/api/v1/auth/token"), ("POST", "/api/v1/provision"),
                           ("POST", "/api/v1/renew")})


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="EdgeLoop", version=__version__,
                  description="Telemetry, assets and alerts of an EdgeLoop platform. Authenticate with "
                              "`POST /api/v1/auth/token` (people) or an API key (integrations), then send "
                              "`Authorization: Bearer ...`.", docs_url=None, redoc_url=None)
    # Outermost first: bodies refused before they are read, security headers on every answer (413s too).
    app.add_middleware(BodyLimit, default=MAX_BODY, routes=(
        ("POST", "/api/v1/auth/token", MAX_TOKEN_BODY), ("POST", "/api/v1/provision", MAX_PROVISION_BODY),
        ("POST", "/api/v1/renew", MAX_PROVISION_BODY),
        ("PUT", "/api/v1/gateways/{gateway_id}/config", MAX_CONFIG_BODY)))
    app.add_middleware(SecurityHeaders, csp_for=add_doc_routes(app))
    static = resources.files("edgeloop.web") / "static"
    access = platform.access

    @app.exception_handler(NotFoundError)
    async def not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ProvisioningError)
    async def refused(_r: Request, exc: ProvisioningError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        return JSONResponse({"detail": exc.detail, "code": exc.code}, status_code=exc.status, headers=headers)

    @app.exception_handler(ConflictError)
    async def conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(AuthError)
    async def auth_refused(_r: Request, exc: AuthError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else {"WWW-Authenticate": "Bearer"}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    def guard(role: Role) -> Callable[[Request], Awaitable[Principal]]:
        """Dependency: the authenticated caller, with at least ``role``; 401 / 403 otherwise."""

        async def principal(request: Request) -> Principal:
            if not platform.config.auth:
                return ANONYMOUS_ADMIN
            scheme, _, credential = request.headers.get("authorization", "").partition(" ")
            who = await access.authenticate(credential.strip()) if scheme.lower() == "bearer" and credential else None
            if who is None:
                raise AuthError(401, "authentication required: send a valid bearer token or API key")
            if who.role < role:
                raise HTTPException(403, f"{who.role.label} may not do this; it needs {role.label}")
            return who

        return principal

    viewer, technician, operator, admin = (Depends(guard(role)) for role in Role)
    reg = platform.registry
    r = reg.registry

    def visible(who: Principal, item: Any) -> bool:
        tenant = r.tenant_of_entry(item)
        return (tenant is None and not isinstance(item, Tenant | Site | Line | Asset | Device)) or who.sees(tenant)

    # -- authentication -------------------------------------------------------------------------
    @app.post("/api/v1/auth/token", tags=["auth"])
    async def token(request: Request) -> Response:
        """OAuth2 password grant (form or JSON ``username``, ``password``) -> a bearer token for 12 hours."""
        raw = await request.body()  # at most MAX_TOKEN_BODY bytes (BodyLimit)
        if request.headers.get("content-type", "").startswith("application/json"):
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
        bearer, who = await access.login(username, password, source=_source(request))
        return _json({"access_token": bearer, "token_type": "bearer", "expires_in": TOKEN_TTL_MS // 1000,
                      "username": who.name, "role": who.role.label, "tenant": who.tenant})

    @app.get("/api/v1/auth/me", tags=["auth"])
    async def me(who: Principal = viewer) -> Response:
        return _json({"username": who.name, "role": who.role.label, "tenant": who.tenant, "kind": who.kind})

    @app.post("/api/v1/auth/logout", tags=["auth"], status_code=204)
    async def logout(request: Request, who: Principal = viewer) -> Response:
        _, _, credential = request.headers.get("authorization", "").partition(" ")
        if who.kind == "user":
            await access.logout(credential.strip(), who, source=_source(request))
        return Response(status_code=204)

    def user_view(u: User) -> dict[str, Any]:
        return {"username": u.username, "role": u.role, "tenant": u.tenant, "disabled": u.disabled,
                "created_ms": u.created_ms}

    @app.get("/api/v1/users", tags=["auth"])
    async def list_users(who: Principal = admin) -> Response:
        """Users an administrator manages: every one for a platform administrator, else their tenant's."""
        return _json([user_view(u) for u in await access.list_users(by=who)])

    @app.post("/api/v1/users", tags=["auth"], status_code=201, openapi_extra=_body_doc(UserBody))
    async def create_user(request: Request, who: Principal = admin,
                          body: UserBody = Depends(_body(UserBody))) -> Response:  # noqa: B008
        if not who.sees(body.tenant):
            raise HTTPException(403, f"{who.name} may not create users outside their own tenant")
        user = await access.create_user(username=body.username, password=body.password, role=Role.parse(body.role),
                                        tenant=body.tenant, by=who, source=_source(request))
        return _json({"username": user.username, "role": user.role, "tenant": user.tenant}, 201)

    @app.post("/api/v1/users/{username}/disable", tags=["auth"])
    async def disable_user(request: Request, username: str, who: Principal = admin) -> Response:
        """The user can no longer log in, and every token it holds stops working at once."""
        return _json(user_view(await access.set_disabled(username, True, by=who, source=_source(request))))

    @app.post("/api/v1/users/{username}/enable", tags=["auth"])
    async def enable_user(request: Request, username: str, who: Principal = admin) -> Response:
        return _json(user_view(await access.set_disabled(username, False, by=who, source=_source(request))))

    @app.delete("/api/v1/users/{username}", tags=["auth"], status_code=204)
    async def delete_user(request: Request, username: str, who: Principal = admin) -> Response:
        """Delete a user and revoke its tokens (nobody deletes themselves)."""
        await access.delete_user(username, by=who, source=_source(request))
        return Response(status_code=204)

    @app.post("/api/v1/users/{username}/password", tags=["auth"],
              openapi_extra=_body_doc(PasswordBody, required=False))
    async def reset_password(request: Request, username: str, who: Principal = admin) -> Response:
        """Set a user's password (or generate one: the answer holds it, shown once); its tokens are revoked."""
        body = decode_body(await request.body(), PasswordBody, max_bytes=4096, optional=True)
        generated = await access.reset_password(username, body.password, by=who, source=_source(request))
        return _json({"username": username, "password": generated})

    @app.post("/api/v1/users/{username}/revoke-tokens", tags=["auth"])
    async def revoke_user_tokens(request: Request, username: str, who: Principal = admin) -> Response:
        """End every session of a user: all its bearer tokens are revoked."""
        return _json({"username": username, "revoked": await access.revoke_tokens(username, by=who,
                                                                                  source=_source(request))})

    @app.post("/api/v1/api-keys", tags=["auth"], status_code=201, openapi_extra=_body_doc(ApiKeyBody))
    async def create_api_key(request: Request, who: Principal = admin,
                             body: ApiKeyBody = Depends(_body(ApiKeyBody))) -> Response:  # noqa: B008
        """An API key for an integration; the response holds the key, which is not stored and never shown again."""
        if not who.sees(body.tenant):
            raise HTTPException(403, f"{who.name} may not create API keys outside their own tenant")
        key_id, key = await access.create_api_key(name=body.name, role=Role.parse(body.role), tenant=body.tenant,
                                                  by=who, source=_source(request))
        return _json({"id": key_id, "key": key, "name": body.name, "role": body.role, "tenant": body.tenant}, 201)

    @app.delete("/api/v1/api-keys/{key_id}", tags=["auth"], status_code=204)
    async def revoke_api_key(request: Request, key_id: str, who: Principal = admin) -> Response:
        if not await access.revoke_api_key(key_id, by=who, source=_source(request)):
            raise NotFoundError("api key", key_id)
        return Response(status_code=204)

    # -- health and statistics ------------------------------------------------------------------
    @app.get("/api/v1/health", tags=["platform"])
    async def health() -> Response:
        return _json({"status": "ok", "version": __version__, "store": platform.store.backend,
                      "mqtt_connected": platform.source.stats.connected, "auth": platform.config.auth})

    @app.get("/api/v1/stats", tags=["platform"])
    async def stats(who: Principal = viewer) -> Response:
        """Devices online, rates, open alerts and the pipeline's queues, counters and dead letters; a tenant's
        principals see only their tenant's devices, presence, dead letters and open alerts."""
        return _json(await platform.snapshot(who.tenant))

    # -- registry -------------------------------------------------------------------------------
    def listing(name: str, table: Callable[[], dict[str, Any]]) -> None:
        async def list_items(who: Principal = viewer) -> Response:
            return _json([item for item in table().values() if visible(who, item)])

        app.get(f"/api/v1/{name}", tags=["assets"], name=f"list_{name}")(list_items)

    async def audit_write(request: Request, who: Principal, action: str, key: str, outcome: str, *,
                          before: Any = None, after: Any = None, why: str = "") -> None:
        """An audited registry write: its entry before and after (JSON), or why it was refused."""
        detail = why or msgspec.json.encode({"before": before, "after": after}).decode()
        await platform.store.audit(AuditRecord(ts_ms=platform.clock.now_ms(), actor=who.name, action=action,
                                               target=key, outcome=outcome, detail=detail, source=_source(request)))

    def hide_foreign_asset(who: Principal, item: Any) -> None:
        """A device under another tenant's asset is refused as if that asset did not exist (no probing ids)."""
        if isinstance(item, Device) and item.asset in r.assets and not who.sees(r.tenant_of("asset", item.asset)):
            raise ConflictError(f"asset {item.asset!r} does not exist; create it first")

    def creation(name: str, tp: type[Any], role: Any) -> None:
        async def create(request: Request, who: Principal = role,
                         item: Any = Depends(_body(tp))) -> Response:  # noqa: B008
            """Create an entry; 409 if its id exists (replace one with ``PUT .../{id}``)."""
            owner = r.tenant_of_entry(item)
            if not who.sees(owner) or (isinstance(item, Tenant) and who.tenant is not None):
                raise HTTPException(403, f"{who.name} may not create {name} outside their own tenant")
            hide_foreign_asset(who, item)
            await reg.create(item)
            await audit_write(request, who, f"{name}.create", _key(item), "ok", after=item)
            return _json(item, 201)

        app.post(f"/api/v1/{name}", tags=["assets"], name=f"create_{name}", status_code=201,
                 openapi_extra=_body_doc(tp))(create)

    def replacement(name: str, tp: type[Any], role: Any) -> None:
        param = "profile_name" if tp is DeviceProfile else f"{name.removesuffix('s')}_id"  # as in GET .../{device_id}

        async def replace(request: Request, item_id: str = FastApiPath(alias=param), who: Principal = role,
                          item: Any = Depends(_body(tp))) -> Response:  # noqa: B008
            """Replace an entry of the caller's tenant (404 for another tenant's). Only a platform administrator
            moves an entry to another tenant; the audit log keeps it before and after."""
            if _key(item) != item_id:
                raise HTTPException(422, f"the body's id {_key(item)!r} is not the path's {item_id!r}")

            def allow(before: Any) -> None:
                if not visible(who, before):
                    raise NotFoundError(name.removesuffix("s"), item_id)
                was, now = r.tenant_of_entry(before), r.tenant_of_entry(item)
                platform_admin = who.tenant is None and who.role >= Role.ADMIN
                if not who.sees(now) or (was is None and not platform_admin):  # shared (profiles): platform only
                    raise HTTPException(403, f"{who.name} may not change {name} outside their own tenant")
                if was != now and not platform_admin:
                    raise HTTPException(403, f"only a platform administrator moves {name} to another tenant")
                hide_foreign_asset(who, item)

            try:
                before = await reg.replace(item, allow=allow)
            except HTTPException as exc:
                await audit_write(request, who, f"{name}.replace", item_id, "refused", why=str(exc.detail))
                raise
            await audit_write(request, who, f"{name}.replace", item_id, "ok", before=before, after=item)
            return _json(item)

        app.put(f"/api/v1/{name}/{{{param}}}", tags=["assets"], name=f"replace_{name}",
                openapi_extra=_body_doc(tp))(replace)

    for name, tp, table, role in (
        ("tenants", Tenant, lambda: r.tenants, admin),
        ("sites", Site, lambda: r.sites, operator),
        ("lines", Line, lambda: r.lines, operator),
        ("profiles", DeviceProfile, lambda: r.profiles, admin),
        ("devices", Device, lambda: r.devices, operator),
    ):
        listing(name, table)
        creation(name, tp, role)
        replacement(name, tp, role)
    creation("assets", Asset, operator)
    replacement("assets", Asset, operator)

    @app.get("/api/v1/assets", tags=["assets"])
    async def list_assets(who: Principal = viewer) -> Response:
        """Assets with their devices, status (ok / alert / offline, or no_data while none of its devices has sent
        a sample and no alert other than a missing-data one such as ``device-silent`` is open: silent since it was
        registered says the same thing), open alerts and last sample time."""
        open_alerts = await platform.store.list_alerts(status=AlertStatus.OPEN, limit=100_000, tenant=who.tenant)
        acked = await platform.store.list_alerts(status=AlertStatus.ACKNOWLEDGED, limit=100_000, tenant=who.tenant)
        unresolved: dict[str, int] = {}
        silence = platform.alerts.engine.config.silence_rules  # "no data from a device" rules
        about_data = {a.asset for a in (*open_alerts, *acked) if a.kind not in silence}
        for a in (*open_alerts, *acked):
            unresolved[a.asset] = unresolved.get(a.asset, 0) + 1
        devices_of: dict[str, list[str]] = {}
        for d in r.devices.values():
            devices_of.setdefault(d.asset, []).append(d.id)
        last_seen = platform.pipeline.last_seen
        out: list[dict[str, Any]] = []
        for asset in sorted(r.assets.values(), key=lambda a: a.id):
            if not visible(who, asset):
                continue
            devs = sorted(devices_of.get(asset.id, []))
            online = any(platform.presence.online.get(d, False) for d in devs)
            seen = [last_seen[d] for d in devs if d in last_seen]
            line = r.lines.get(asset.line)
            site = r.sites.get(line.site) if line else None  # the asset's place, not only its tenant
            status = ("no_data" if not seen and asset.id not in about_data else "alert" if unresolved.get(asset.id)
                      else "ok" if online else "offline")
            out.append({"id": asset.id, "name": asset.name, "kind": asset.kind, "line": asset.line,
                        "site": site.id if site else None, "tenant": site.tenant if site else None,
                        "criticality": asset.criticality, "devices": devs, "status": status, "online": online,
                        "open_alerts": unresolved.get(asset.id, 0), "last_seen_ms": max(seen) if seen else None})
        return _json(out)

    def visible_device(who: Principal, device_id: str) -> Device:
        """The device, or 404 also when it belongs to another tenant (no probing ids across tenants)."""
        device = r.devices.get(device_id)
        if device is None or not who.sees(device.tenant):
            raise NotFoundError("device", device_id)
        return device

    @app.get("/api/v1/devices/{device_id}", tags=["assets"])
    async def get_device(device_id: str, who: Principal = viewer) -> Response:
        device = visible_device(who, device_id)
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
        start: Annotated[Millis, Query(description="inclusive, ms since epoch")],
        end: Annotated[Millis, Query(description="exclusive, ms since epoch")],
        channels: Annotated[str | None, Query(description="comma-separated; default all")] = None,
        points: Annotated[int, Query(ge=1, le=10_000)] = 500,
        who: Principal = viewer,
    ) -> Response:
        """min / avg / max per channel in at most ``points`` time buckets (raw data or 1-minute rollups)."""
        device = visible_device(who, device_id)
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

    @app.get("/api/v1/devices/{device_id}/events", tags=["telemetry"])
    async def device_events(
        device_id: str,
        kind: Annotated[str | None, Query(max_length=64, description="e.g. gap")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
        who: Principal = viewer,
    ) -> Response:
        """The device's events, newest first. ``gap``: samples an edge agent had to drop (``data`` has
        ``first_ts``, ``last_ts``, ``samples`` and ``reason``)."""
        visible_device(who, device_id)
        events = await platform.store.list_events(device=device_id, kind=kind, limit=limit)
        return _json([{"id": e.id, "device": e.device, "ts": e.ts_ms, "kind": e.kind, "severity": e.severity,
                       "message": e.message, "data": e.data, "received_ms": e.received_ms} for e in events])

    # -- alerts ---------------------------------------------------------------------------------
    @app.get("/api/v1/alerts", tags=["alerts"])
    async def list_alerts(
        status: AlertStatus | None = None, asset: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200, who: Principal = viewer,
    ) -> Response:
        """Alerts, most recently seen first."""
        return _json(await platform.store.list_alerts(status=status, asset=asset, limit=limit, tenant=who.tenant))

    async def visible_alert(who: Principal, alert_id: AlertId) -> Alert:
        alert = await platform.store.get_alert(alert_id)
        if not who.sees(alert.tenant):
            raise NotFoundError("alert", alert_id)
        return alert

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(alert_id: AlertId, who: Principal = viewer) -> Response:
        return _json(await visible_alert(who, alert_id))

    async def transition(request: Request, alert_id: AlertId, status: AlertStatus, who: Principal) -> Response:
        await visible_alert(who, alert_id)
        raw = await request.body()
        by = who.name
        if who.kind == "anonymous":  # auth disabled: the body may say who
            try:
                by = msgspec.json.decode(raw, type=ActorBody).by if raw.strip() else "anonymous"
            except msgspec.ValidationError as exc:
                raise HTTPException(422, f"invalid ActorBody: {exc}") from exc
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise HTTPException(400, f"body is not valid JSON: {exc}") from exc
        alert = await platform.store.set_alert_status(alert_id, status, by=by, at_ms=platform.clock.now_ms())
        return _json(alert)

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", tags=["alerts"],
              openapi_extra=_body_doc(ActorBody, required=False))
    async def acknowledge(request: Request, alert_id: AlertId, who: Principal = technician) -> Response:
        """Acknowledge; recorded as the authenticated user."""
        return await transition(request, alert_id, AlertStatus.ACKNOWLEDGED, who)

    @app.post("/api/v1/alerts/{alert_id}/resolve", tags=["alerts"], openapi_extra=_body_doc(ActorBody, required=False))
    async def resolve(request: Request, alert_id: AlertId, who: Principal = technician) -> Response:
        """Resolve; recorded as the authenticated user."""
        return await transition(request, alert_id, AlertStatus.RESOLVED, who)

    add_incident_routes(app, platform, viewer=viewer, technician=technician, operator=operator)

    # -- dead letters ---------------------------------------------------------------------------
    @app.get("/api/v1/dead-letters", tags=["telemetry"])
    async def dead_letters(device: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                           who: Principal = viewer) -> Response:
        """Refused payloads, newest first, with the reason and the first 4 KiB of the raw bytes."""
        letters = await platform.store.list_dead_letters(device=device, limit=limit, tenant=who.tenant)
        return _json([{"id": d.id, "received_ms": d.received_ms, "topic": d.topic, "device": d.device,
                       "tenant": d.tenant, "code": d.code, "detail": d.detail, "size": d.size,
                       "raw_text": d.raw.decode("utf-8", "replace"), "raw_base64": base64.b64encode(d.raw).decode()}
                      for d in letters])

    # -- gateways -------------------------------------------------------------------------------
    async def visible_gateway(who: Principal, gateway_id: str) -> GatewayRecord:
        """The stored gateway, or 404 (also for another tenant's, or a device that never sent a heartbeat)."""
        record = await platform.store.get_gateway(gateway_id)
        if record is None or not who.sees(record.tenant):
            raise NotFoundError("gateway", gateway_id)
        return record

    @app.get("/api/v1/gateways", tags=["gateways"])
    async def list_gateways(who: Principal = viewer) -> Response:
        """Edge gateways (devices that send heartbeats): state (online / degraded / offline) with the reasons,
        backlog, lag, drops, CPU, RSS, per-source status, the devices behind each and the configuration it runs."""
        now = platform.clock.now_ms()
        latest = await platform.store.latest_gateway_configs(tenant=who.tenant)
        return _json([gateway_view(g, now, latest_config=latest.get(g.id))
                      for g in await platform.store.list_gateways(tenant=who.tenant) if who.sees(g.tenant)])

    @app.get("/api/v1/gateways/{gateway_id}", tags=["gateways"])
    async def get_gateway(gateway_id: str, who: Principal = viewer) -> Response:
        """One gateway, with its last heartbeat as received and its newest pushed configuration."""
        record = await visible_gateway(who, gateway_id)
        configs = await platform.store.list_gateway_configs(gateway_id)
        return _json(gateway_view(record, platform.clock.now_ms(), latest_config=configs[0] if configs else None,
                                  include_heartbeat=True))

    @app.put("/api/v1/gateways/{gateway_id}/config", tags=["gateways"], status_code=201,
             openapi_extra=_body_doc(GatewayConfigBody))
    async def push_gateway_config(
        request: Request, gateway_id: str, who: Principal = operator,
        body: GatewayConfigBody = Depends(_body(GatewayConfigBody, MAX_CONFIG_BODY)),  # noqa: B008
    ) -> Response:
        """Validate an agent configuration (422 names the line), store it as the gateway's next version and
        publish it retained on the gateway's ``config`` topic. Its status (pending, then applied, rolled_back or
        rejected as the agent reports) is in ``GET .../config``."""
        visible_device(who, gateway_id)
        try:
            cfg = await platform.push_gateway_config(gateway_id, body.config, by=who.name, source=_source(request))
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        except BrokerError as exc:
            raise HTTPException(503, f"stored but not delivered: {exc}") from exc
        return _json({"gateway": gateway_id, **config_view(cfg)}, 201)

    @app.get("/api/v1/gateways/{gateway_id}/config", tags=["gateways"])
    async def list_gateway_configs(gateway_id: str, who: Principal = viewer) -> Response:
        """Every configuration pushed to the gateway, newest first, with its status."""
        visible_device(who, gateway_id)
        return _json([config_view(c) for c in await platform.store.list_gateway_configs(gateway_id)])

    @app.get("/api/v1/gateways/{gateway_id}/config/{version}", tags=["gateways"])
    async def get_gateway_config(gateway_id: str, version: ConfigVersion, who: Principal = viewer) -> Response:
        """One pushed configuration with its text."""
        visible_device(who, gateway_id)
        cfg = await platform.store.get_gateway_config(gateway_id, version)
        if cfg is None:
            raise NotFoundError("configuration version", version)
        return _json(config_view(cfg, with_text=True))

    # -- provisioning and audit -------------------------------------------------------------------
    def provisioning() -> ProvisioningService:
        if platform.provisioning is None:
            raise HTTPException(503, "provisioning is not enabled: start the platform with a PKI (--pki DIR)")
        return platform.provisioning

    @app.post("/api/v1/enrollments", tags=["identity"], status_code=201, openapi_extra=_body_doc(EnrollmentBody))
    async def create_enrollment(
        request: Request, who: Principal = operator,
        body: EnrollmentBody = Depends(_body(EnrollmentBody)),  # noqa: B008
    ) -> Response:
        """Create an enrollment; the response holds the claim, which is not stored and never shown again."""
        if not who.sees(body.tenant):
            raise HTTPException(403, f"{who.name} may not enrol devices into tenant {body.tenant!r}")
        enrollment, claim = await provisioning().create_enrollment(EnrollmentRequest(
            group=body.group, tenant=body.tenant, line=body.line, profile=body.profile,
            expires_in_ms=body.expires_in_s * 1000, asset=body.asset,
            serials=tuple(body.serials) if body.serials is not None else None, max_devices=body.max_devices,
        ), by=who.name if who.kind != "anonymous" else body.by, source=_source(request))
        return _json({"group": enrollment.id, "claim": claim, "tenant": enrollment.tenant, "line": enrollment.line,
                      "profile": enrollment.profile, "asset": enrollment.asset, "expires_ms": enrollment.expires_ms,
                      "serials": len(enrollment.serials) if enrollment.serials is not None else None,
                      "max_devices": enrollment.max_devices,
                      # where the devices connect (the platform's own broker address; ``gateways add`` uses it)
                      "mqtt": f"{platform.config.mqtt_host}:{platform.config.mqtt_port}"}, 201)

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

    @app.post("/api/v1/renew", tags=["identity"], status_code=201, openapi_extra=_body_doc(RenewBody))
    async def renew(
        request: Request,
        body: RenewBody = Depends(_body(RenewBody, MAX_PROVISION_BODY)),  # noqa: B008
    ) -> Response:
        """A device renews its certificate before expiry, proving possession of its current key."""
        done = await provisioning().renew(certificate_pem=body.certificate.encode(), csr_pem=body.csr.encode(),
                                          signature=body.signature, source=_source(request))
        return _json({"device_id": done.device_id, "certificate": done.certificate_pem,
                      "ca_chain": done.ca_chain_pem}, 201)

    @app.post("/api/v1/devices/{device_id}/revoke", tags=["identity"])
    async def revoke_device(request: Request, device_id: str, who: Principal = admin) -> Response:
        """Revoke every certificate of a device: the CRL is rewritten, the embedded broker closes its session at
        once (Mosquitto refuses it after a reload); the device must be provisioned anew to return."""
        visible_device(who, device_id)
        provisioning()
        revoked = await platform.revoke_device(device_id, by=who.name, source=_source(request))
        return _json({"device_id": device_id, "revoked_serials": [f"{n:x}" for n in revoked.serials],
                      "sessions_closed": revoked.sessions_closed})

    @app.get("/api/v1/audit", tags=["identity"])
    async def audit_log(action: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
                        who: Principal = admin) -> Response:
        """Security-relevant actions, newest first: who, what, when, from where, and the outcome."""
        if who.tenant is not None:
            raise HTTPException(403, "the audit log is for platform administrators")
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
            bodies = (*BODY_TYPES, ActorBody, EnrollmentBody, ProvisionBody, RenewBody, UserBody, PasswordBody,
                      ApiKeyBody, GatewayConfigBody, *INCIDENT_BODIES)
            _, components = msgspec.json.schema_components(bodies,
                                                           ref_template="#/components/schemas/{name}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
