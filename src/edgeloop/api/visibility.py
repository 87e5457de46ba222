"""What a caller may see: entries of their own tenant only. Another tenant's entry answers 404, exactly as an id
that does not exist does, so ids cannot be probed across tenants."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from edgeloop.api.services import Services
from edgeloop.assets import Asset, Device, Line, Site, Tenant
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Principal
from edgeloop.messages import Alert
from edgeloop.store.actions import CommandRecord, DecisionRecord, HoldRecord
from edgeloop.store.alerting import IncidentRecord
from edgeloop.store.base import AuditRecord, GatewayRecord

__all__ = ["actor", "audit", "tenant_scope", "visible", "visible_alert", "visible_command", "visible_decision",
           "visible_device", "visible_gateway", "visible_hold", "visible_incident", "visible_target"]


def visible(svc: Services, who: Principal, item: Any) -> bool:
    """A registry entry ``who`` sees: one of their tenant's, or a shared one (a device profile)."""
    tenant = svc.registry.registry.tenant_of_entry(item)
    return (tenant is None and not isinstance(item, Tenant | Site | Line | Asset | Device)) or who.sees(tenant)


def tenant_scope(svc: Services, who: Principal, tenant: str | None) -> str | None:
    """The tenant a request means: ``tenant`` if given (404 for one the caller does not see), else the caller's
    own (None: a platform principal's, the platform-wide scope)."""
    if tenant is None:
        return who.tenant
    if tenant not in svc.registry.registry.tenants or not who.sees(tenant):
        raise NotFoundError("tenant", tenant)
    return tenant


async def visible_command(svc: Services, who: Principal, command_id: str) -> CommandRecord:
    found = await svc.store.get_command(command_id)
    if found is None or not who.sees(found.tenant):
        raise NotFoundError("command", command_id)
    return found


async def visible_decision(svc: Services, who: Principal, decision_id: str) -> DecisionRecord:
    found = await svc.store.get_decision(decision_id)
    if found is None or not who.sees(found.tenant):
        raise NotFoundError("decision", decision_id)
    return found


async def visible_hold(svc: Services, who: Principal, hold_id: str) -> HoldRecord:
    found = await svc.store.get_hold(hold_id)
    if found is None or not who.sees(found.tenant):
        raise NotFoundError("hold", hold_id)
    return found


def visible_device(svc: Services, who: Principal, device_id: str) -> Device:
    device = svc.registry.registry.devices.get(device_id)
    if device is None or not who.sees(device.tenant):
        raise NotFoundError("device", device_id)
    return device


async def visible_alert(svc: Services, who: Principal, alert_id: int) -> Alert:
    alert = await svc.store.get_alert(alert_id)
    if not who.sees(alert.tenant):
        raise NotFoundError("alert", alert_id)
    return alert


async def visible_incident(svc: Services, who: Principal, incident_id: int) -> IncidentRecord:
    rec = await svc.store.get_incident(incident_id)
    if not who.sees(rec.tenant):
        raise NotFoundError("incident", incident_id)
    return rec


async def visible_gateway(svc: Services, who: Principal, gateway_id: str) -> GatewayRecord:
    """The stored gateway, or 404 (also for another tenant's, or a device that never sent a heartbeat)."""
    record = await svc.store.get_gateway(gateway_id)
    if record is None or not who.sees(record.tenant):
        raise NotFoundError("gateway", gateway_id)
    return record


def visible_target(svc: Services, who: Principal, scope: str, target: str) -> str:
    """The tenant of an asset, line or site ``who`` sees (a gateway's id is an asset scope too)."""
    reg = svc.registry.registry
    if scope == "asset":
        tenant = reg.tenant_of("asset", target) or reg.tenant_of("device", target)
    else:
        tenant = reg.tenant_of("line" if scope == "line" else "site", target)
    if tenant is None or not who.sees(tenant):
        raise NotFoundError(scope, target)
    return tenant


def shared_models_admin(who: Principal) -> None:
    """Models, their training and their rollouts are shared by every tenant (a detector model serves a device
    profile): changing them takes a platform administrator (an admin of no tenant)."""
    if who.tenant is not None:
        raise HTTPException(403, "models are shared by every tenant: changing, training, rolling out or downloading "
                                 "them is for platform administrators")


def actor(who: Principal, given: str | None) -> str:
    """The authenticated person; without authentication, the body's ``by`` (else "anonymous")."""
    return (given or "anonymous") if who.kind == "anonymous" else who.name


async def audit(svc: Services, source: str, by: str, action: str, target: str, detail: str, *,
                outcome: str = "ok") -> None:
    """An entry of the audit log: ``by`` did ``action`` on ``target`` from ``source``."""
    await svc.store.audit(AuditRecord(ts_ms=svc.clock.now_ms(), actor=by, action=action, target=target,
                                      outcome=outcome, detail=detail, source=source))
