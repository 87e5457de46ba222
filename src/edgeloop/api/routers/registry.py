"""The registry: tenants, sites, lines, assets, device profiles and devices. Lists for everyone (their tenant's),
creation and replacement for operators (tenants and profiles: administrators), every write audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Source, Svc, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import audit, visible, visible_device
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError
from edgeloop.identity.auth import Principal, Role
from edgeloop.messages import AlertStatus
from edgeloop.registry import Registry

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["assets"], dependencies=[ROLE[Role.VIEWER]])


class AssetStatus(msgspec.Struct):
    """An asset with its place, its devices and what they say: ``status`` is ok, alert, offline or no_data."""

    id: str
    name: str
    kind: str
    line: str
    site: str | None
    tenant: str | None
    criticality: int
    devices: list[str]
    status: str
    online: bool
    open_alerts: int
    last_seen_ms: int | None


class DeviceDetail(msgspec.Struct, kw_only=True):
    """A device as registered, with its presence, what is stored of it and its profile's channels."""

    id: str
    tenant: str
    asset: str
    profile: str
    name: str
    rollout_group: str  # the model aliases of scope group:NAME it follows ("": none, the whole profile's)
    online: bool
    stored_messages: int
    stored_samples: int
    last_seen_ms: int | None
    sample_rate_hz: float
    channels: list[ChannelSpec]
    dead_letters: int


def _key(item: Any) -> str:
    return str(item.name if isinstance(item, DeviceProfile) else item.id)


def _hide_foreign_asset(reg: Registry, who: Principal, item: Any) -> None:
    """A device under another tenant's asset is refused as if that asset did not exist (no probing ids)."""
    if isinstance(item, Device) and item.asset in reg.assets and not who.sees(reg.tenant_of("asset", item.asset)):
        raise ConflictError(f"asset {item.asset!r} does not exist; create it first")


async def _audit_write(svc: Services, src: str, who: Principal, action: str, key: str, outcome: str, *,
                       before: Any = None, after: Any = None, why: str = "") -> None:
    """An audited registry write: its entry before and after (JSON), or why it was refused."""
    detail = why or msgspec.json.encode({"before": before, "after": after}).decode()
    await audit(svc, src, who.name, action, key, detail, outcome=outcome)


def _listing(name: str, tp: type[Any], table: Callable[[Registry], dict[str, Any]]) -> None:
    async def list_items(svc: Svc, who: Viewer) -> Response:
        return json_response([item for item in table(svc.registry.registry).values() if visible(svc, who, item)])

    router.get(f"/{name}", name=f"list_{name}", responses=reply(list[tp]))(list_items)  # type: ignore[valid-type]


def _creation(name: str, tp: type[Any], role: Role) -> None:
    # (dependencies as defaults: annotations naming this function's locals could not be resolved)
    async def create(svc: Svc, src: Source, who: Principal = ROLE[role],
                     item: Any = Depends(body(tp))) -> Response:  # noqa: B008
        """Create an entry; 409 if its id exists (replace one with ``PUT .../{id}``)."""
        reg = svc.registry.registry
        if not who.sees(reg.tenant_of_entry(item)) or (isinstance(item, Tenant) and who.tenant is not None):
            raise HTTPException(403, f"{who.name} may not create {name} outside their own tenant")
        _hide_foreign_asset(reg, who, item)
        await svc.registry.create(item)
        await _audit_write(svc, src, who, f"{name}.create", _key(item), "ok", after=item)
        return json_response(item, 201)

    router.post(f"/{name}", name=f"create_{name}", status_code=201, openapi_extra=body_doc(tp),
                responses=reply(tp, 201))(create)


def _replacement(name: str, tp: type[Any], role: Role) -> None:
    param = "profile_name" if tp is DeviceProfile else f"{name.removesuffix('s')}_id"  # as in GET .../{device_id}

    async def replace(svc: Svc, src: Source, who: Principal = ROLE[role], item: Any = Depends(body(tp)),  # noqa: B008
                      item_id: str = FastApiPath(alias=param)) -> Response:
        """Replace an entry of the caller's tenant (404 for another tenant's). Only a platform administrator
        moves an entry to another tenant; the audit log keeps it before and after."""
        if _key(item) != item_id:
            raise HTTPException(422, f"the body's id {_key(item)!r} is not the path's {item_id!r}")
        reg = svc.registry.registry

        def allow(before: Any) -> None:
            if not visible(svc, who, before):
                raise NotFoundError(name.removesuffix("s"), item_id)
            was, now = reg.tenant_of_entry(before), reg.tenant_of_entry(item)
            platform_admin = who.tenant is None and who.role >= Role.ADMIN
            if not who.sees(now) or (was is None and not platform_admin):  # shared (profiles): platform only
                raise HTTPException(403, f"{who.name} may not change {name} outside their own tenant")
            if was != now and not platform_admin:
                raise HTTPException(403, f"only a platform administrator moves {name} to another tenant")
            _hide_foreign_asset(reg, who, item)

        try:
            before = await svc.registry.replace(item, allow=allow)
        except HTTPException as exc:
            await _audit_write(svc, src, who, f"{name}.replace", item_id, "refused", why=str(exc.detail))
            raise
        await _audit_write(svc, src, who, f"{name}.replace", item_id, "ok", before=before, after=item)
        return json_response(item)

    router.put(f"/{name}/{{{param}}}", name=f"replace_{name}", openapi_extra=body_doc(tp),
               responses=reply(tp))(replace)


_KINDS: tuple[tuple[str, type[Any], Callable[[Registry], dict[str, Any]] | None, Role], ...] = (
    ("tenants", Tenant, lambda r: r.tenants, Role.ADMIN),
    ("sites", Site, lambda r: r.sites, Role.OPERATOR),
    ("lines", Line, lambda r: r.lines, Role.OPERATOR),
    ("profiles", DeviceProfile, lambda r: r.profiles, Role.ADMIN),
    ("devices", Device, lambda r: r.devices, Role.OPERATOR),
    ("assets", Asset, None, Role.OPERATOR),  # listed with their status, below
)
for _name, _tp, _table, _role in _KINDS:
    if _table is not None:
        _listing(_name, _tp, _table)
    _creation(_name, _tp, _role)
    _replacement(_name, _tp, _role)


@router.get("/assets", responses=reply(list[AssetStatus]))
async def list_assets(svc: Svc, who: Viewer) -> Response:
    """Assets with their devices, status (ok / alert / offline, or no_data while none of its devices has sent
    a sample and no alert other than a missing-data one such as ``device-silent`` is open: silent since it was
    registered says the same thing), open alerts and last sample time."""
    r = svc.registry.registry
    open_alerts = await svc.store.list_alerts(status=AlertStatus.OPEN, limit=100_000, tenant=who.tenant)
    acked = await svc.store.list_alerts(status=AlertStatus.ACKNOWLEDGED, limit=100_000, tenant=who.tenant)
    unresolved: dict[str, int] = {}
    silence = svc.alerts.engine.config.silence_rules  # "no data from a device" rules
    about_data = {a.asset for a in (*open_alerts, *acked) if a.kind not in silence}
    for a in (*open_alerts, *acked):
        unresolved[a.asset] = unresolved.get(a.asset, 0) + 1
    devices_of: dict[str, list[str]] = {}
    for d in r.devices.values():
        devices_of.setdefault(d.asset, []).append(d.id)
    out: list[AssetStatus] = []
    for asset in sorted(r.assets.values(), key=lambda a: a.id):
        if not visible(svc, who, asset):
            continue
        devs = sorted(devices_of.get(asset.id, []))
        online = any(svc.ingest.online(d) for d in devs)
        seen = [t for t in (svc.ingest.last_seen_ms(d) for d in devs) if t is not None]
        line = r.lines.get(asset.line)
        site = r.sites.get(line.site) if line else None  # the asset's place, not only its tenant
        status = ("no_data" if not seen and asset.id not in about_data else "alert" if unresolved.get(asset.id)
                  else "ok" if online else "offline")
        out.append(AssetStatus(id=asset.id, name=asset.name, kind=asset.kind, line=asset.line,
                               site=site.id if site else None, tenant=site.tenant if site else None,
                               criticality=asset.criticality, devices=devs, status=status, online=online,
                               open_alerts=unresolved.get(asset.id, 0), last_seen_ms=max(seen) if seen else None))
    return json_response(out)


@router.get("/devices/{device_id}", responses=reply(DeviceDetail))
async def get_device(device_id: str, svc: Svc, who: Viewer) -> Response:
    device = visible_device(svc, who, device_id)
    profile = svc.registry.registry.profiles[device.profile]
    messages, samples = await svc.store.telemetry_counts(device_id)
    return json_response(DeviceDetail(
        **msgspec.structs.asdict(device), online=svc.ingest.online(device_id), stored_messages=messages,
        stored_samples=samples, last_seen_ms=svc.ingest.last_seen_ms(device_id),
        sample_rate_hz=profile.sample_rate_hz, channels=profile.channels,
        dead_letters=svc.ingest.dead_letters(device_id)))

