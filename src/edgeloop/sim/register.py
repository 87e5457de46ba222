"""Registers a simulated fleet (tenant, site, lines, assets, profiles, devices) with the platform."""

from __future__ import annotations

from edgeloop.app import RegistryService
from edgeloop.assets import Asset, Device, Line, Site, Tenant
from edgeloop.sim.fleet import Fleet


async def register_fleet(registry: RegistryService, fleet: Fleet, *, tenant: str) -> None:
    """Idempotent: creates or updates every entity the fleet's devices need."""
    if tenant not in registry.registry.tenants:
        await registry.put_tenant(Tenant(id=tenant, name=f"{tenant} (simulated)"))
    for profile in fleet.profiles():
        await registry.put_profile(profile)
    for dev in fleet.devices:
        if dev.site not in registry.registry.sites:
            await registry.put_site(Site(id=dev.site, tenant=tenant, name=dev.site))
        if dev.line not in registry.registry.lines:
            await registry.put_line(Line(id=dev.line, site=dev.site, name=dev.line))
        if dev.asset_id not in registry.registry.assets:
            await registry.put_asset(Asset(id=dev.asset_id, line=dev.line, kind=dev.kind,
                                           name=f"{dev.kind.title()} {dev.asset_id.rsplit('-', 1)[-1]}"))
        if dev.device_id not in registry.registry.devices:
            await registry.put_device(Device(id=dev.device_id, tenant=tenant, asset=dev.asset_id,
                                             profile=dev.profile, name=dev.device_id))
