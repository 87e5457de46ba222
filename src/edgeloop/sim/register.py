"""Registers a simulated fleet (tenant, site, lines, assets, profiles, devices) with the platform."""

from __future__ import annotations

from edgeloop.assets import Asset, Device, Line, Site, Tenant
from edgeloop.errors import ConflictError
from edgeloop.registry import RegistryService, ScopeKind
from edgeloop.sim.fleet import Fleet


async def register_fleet(registry: RegistryService, fleet: Fleet, *, tenant: str) -> None:
    """Idempotent: creates every entity the fleet's devices need that does not exist yet (profiles are updated).
    ``ConflictError`` if one of its sites, lines, assets or devices exists in another tenant: the simulator never
    writes into, or moves, another tenant's entries."""
    r = registry.registry
    if tenant not in r.tenants:
        await registry.create(Tenant(id=tenant, name=f"{tenant} (simulated)"))
    for profile in fleet.profiles():
        await registry.put_profile(profile)
    for dev in fleet.devices:
        places: tuple[tuple[ScopeKind, str], ...] = (("site", dev.site), ("line", dev.line),
                                                     ("asset", dev.asset_id), ("device", dev.device_id))
        owners = {(kind, key): r.tenant_of(kind, key) or tenant for kind, key in places}
        for (kind, key), owner in owners.items():
            if owner != tenant:
                raise ConflictError(f"the simulated fleet's {kind} {key!r} exists in tenant {owner!r}, not "
                                    f"{tenant!r}; choose another tenant or seed")
        if dev.site not in r.sites:
            await registry.create(Site(id=dev.site, tenant=tenant, name=dev.site))
        if dev.line not in r.lines:
            await registry.create(Line(id=dev.line, site=dev.site, name=dev.line))
        if dev.asset_id not in r.assets:
            await registry.create(Asset(id=dev.asset_id, line=dev.line, kind=dev.kind,
                                        name=f"{dev.kind.title()} {dev.asset_id.rsplit('-', 1)[-1]}"))
        if dev.device_id not in r.devices:
            await registry.create(Device(id=dev.device_id, tenant=tenant, asset=dev.asset_id,
                                         profile=dev.profile, name=dev.device_id))
