"""The asset registry: tenants, sites, lines, assets, device profiles and devices.

``Registry`` is the in-memory view (small enough to hold whole) and the one place that says which tenant an
entry belongs to (``tenant_of``); ``RegistryService`` is the one way to change it: store first, then the view.
Nothing here imports the store or the platform: the service is given a writer and a listener (ingest's
validator) by the composition root.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError

ScopeKind = Literal["tenant", "site", "line", "asset", "device"]


@dataclass(slots=True)
class Registry:
    """Every tenant, site, line, asset, profile and device; small enough to hold in memory."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    lines: dict[str, Line] = field(default_factory=dict)
    assets: dict[str, Asset] = field(default_factory=dict)
    profiles: dict[str, DeviceProfile] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)

    def tenant_of(self, kind: ScopeKind, key: str) -> str | None:
        """The tenant that owns the ``kind`` entry ``key`` (a gateway is a device); None if there is none."""
        if kind == "tenant":
            return key if key in self.tenants else None
        if kind == "device":
            dev = self.devices.get(key)
            return dev.tenant if dev else None
        if kind == "asset":
            asset = self.assets.get(key)
            return self.tenant_of("line", asset.line) if asset else None
        if kind == "line":
            line = self.lines.get(key)
            return self.tenant_of("site", line.site) if line else None
        site = self.sites.get(key)
        return site.tenant if site else None

    def tenant_of_entry(self, item: RegistryEntry) -> str | None:
        """The tenant an entry belongs to, by its parent, so that one being created resolves too (None for shared
        ones: device profiles)."""
        if isinstance(item, Tenant):
            return item.id
        if isinstance(item, Site | Device):
            return item.tenant
        if isinstance(item, Line):
            return self.tenant_of("site", item.site)
        if isinstance(item, Asset):
            return self.tenant_of("line", item.line)
        return None


class RegistryWriter(Protocol):
    """What the service needs of the store."""

    async def put_tenant(self, tenant: Tenant) -> None: ...
    async def put_site(self, site: Site) -> None: ...
    async def put_line(self, line: Line) -> None: ...
    async def put_asset(self, asset: Asset) -> None: ...
    async def put_profile(self, profile: DeviceProfile) -> None: ...
    async def put_device(self, device: Device) -> None: ...


class RegistryListener(Protocol):
    """Told of every change (ingest's validator keeps its per-device limits from it)."""

    def refresh(self, registry: Registry) -> None: ...
    def put_device(self, device: Device, registry: Registry) -> None: ...


RegistryEntry = Tenant | Site | Line | Asset | DeviceProfile | Device


class RegistryService:
    """The one way to change the asset registry: store first, then the in-memory view ingest uses.

    ``create`` and ``replace`` are the API's writes: a create never overwrites an existing entry (``ConflictError``),
    a replace only overwrites one that exists (``NotFoundError``) after ``allow(before)`` accepted it; both hold a
    lock from the check to the write, so two requests cannot both create one id. The ``put_*`` methods upsert (the
    platform's own registrations: simulator, provisioning)."""

    def __init__(self, *, store: RegistryWriter, registry: Registry, validator: RegistryListener) -> None:
        self.store = store
        self.registry = registry
        self.validator = validator
        self._writing = asyncio.Lock()

    def current(self, item: RegistryEntry) -> RegistryEntry | None:
        """The stored entry with ``item``'s id (profiles: name), if any."""
        r = self.registry
        if isinstance(item, DeviceProfile):
            return r.profiles.get(item.name)
        table: dict[str, Any] = (r.tenants if isinstance(item, Tenant) else r.sites if isinstance(item, Site)
                                 else r.lines if isinstance(item, Line) else r.assets if isinstance(item, Asset)
                                 else r.devices)
        found: RegistryEntry | None = table.get(item.id)
        return found

    async def create(self, item: RegistryEntry) -> None:
        """Store a new entry; ``ConflictError`` if its id exists (in any tenant)."""
        async with self._writing:
            if self.current(item) is not None:
                raise ConflictError(f"{_kind_of(item)} {_key_of(item)!r} already exists; replace it with PUT")
            await self._put(item)

    async def replace(self, item: RegistryEntry, *, allow: Callable[[RegistryEntry], None]) -> RegistryEntry:
        """Overwrite an existing entry, after ``allow(before)`` (which raises to refuse); returns the entry before.
        ``NotFoundError`` if there is none."""
        async with self._writing:
            before = self.current(item)
            if before is None:
                raise NotFoundError(_kind_of(item), _key_of(item))
            allow(before)
            await self._put(item)
            return before

    async def _put(self, item: RegistryEntry) -> None:
        if isinstance(item, Tenant):
            await self.put_tenant(item)
        elif isinstance(item, Site):
            await self.put_site(item)
        elif isinstance(item, Line):
            await self.put_line(item)
        elif isinstance(item, Asset):
            await self.put_asset(item)
        elif isinstance(item, DeviceProfile):
            await self.put_profile(item)
        else:
            await self.put_device(item)

    async def put_tenant(self, tenant: Tenant) -> None:
        await self.store.put_tenant(tenant)
        self.registry.tenants[tenant.id] = tenant

    async def put_site(self, site: Site) -> None:
        self._require(self.registry.tenants, site.tenant, "tenant")
        await self.store.put_site(site)
        self.registry.sites[site.id] = site

    async def put_line(self, line: Line) -> None:
        self._require(self.registry.sites, line.site, "site")
        await self.store.put_line(line)
        self.registry.lines[line.id] = line

    async def put_asset(self, asset: Asset) -> None:
        self._require(self.registry.lines, asset.line, "line")
        await self.store.put_asset(asset)
        self.registry.assets[asset.id] = asset

    async def put_profile(self, profile: DeviceProfile) -> None:
        await self.store.put_profile(profile)
        self.registry.profiles[profile.name] = profile
        self.validator.refresh(self.registry)

    async def put_device(self, device: Device) -> None:
        self._require(self.registry.tenants, device.tenant, "tenant")
        self._require(self.registry.assets, device.asset, "asset")
        self._require(self.registry.profiles, device.profile, "profile")
        if self.registry.tenant_of("asset", device.asset) != device.tenant:
            raise ConflictError(f"asset {device.asset!r} does not belong to tenant {device.tenant!r}")
        await self.store.put_device(device)
        self.registry.devices[device.id] = device
        self.validator.put_device(device, self.registry)

    @staticmethod
    def _require(table: dict[str, Any], key: str, kind: str) -> None:
        if key not in table:
            raise ConflictError(f"{kind} {key!r} does not exist; create it first")


def _kind_of(item: RegistryEntry) -> str:
    return "profile" if isinstance(item, DeviceProfile) else type(item).__name__.lower()


def _key_of(item: RegistryEntry) -> str:
    return item.name if isinstance(item, DeviceProfile) else item.id
