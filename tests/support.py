"""Helpers for tests: free ports, a Mosquitto process, a one-device registry."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec

from edgeloop.app import Platform
from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_mosquitto
from edgeloop.messages import Alert
from edgeloop.store import Store
from edgeloop.store.alerting import AlertChanges

__all__ = ["HOT_RULES", "free_port", "open_alert", "register_device", "start_mosquitto"]

#: The alert rule document the alerting tests upload: ``hot`` when ``temp`` is over 80, clear below 75.
HOT_RULES = """\
version: 1
rules:
  - name: hot
    kind: threshold
    channel: temp
    above: 80
    clear_below: 75
    severity: critical
"""


@contextlib.contextmanager
def start_mosquitto(*, port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    with run_mosquitto(workdir, port=port) as proc:
        yield proc


async def register_device(platform: Platform, *, tenant: str, asset: str, device: str, profile: DeviceProfile,
                          kind: str = "") -> None:
    """One tenant, site, line, asset, profile and device in the platform's registry: the smallest fleet."""
    reg = platform.registry
    await reg.put_tenant(Tenant(id=tenant))
    await reg.put_site(Site(id=f"{tenant}-site", tenant=tenant))
    await reg.put_line(Line(id=f"{tenant}-line", site=f"{tenant}-site"))
    await reg.put_asset(Asset(id=asset, line=f"{tenant}-line", kind=kind))
    await reg.put_profile(profile)
    await reg.put_device(Device(id=device, tenant=tenant, asset=asset, profile=profile.name))


async def open_alert(store: Store, alert: Alert) -> Alert:
    """Store ``alert`` as open the way the alert service (alerts' one writer) does: an id from ``reserve_ids``,
    written by ``write_alert_changes`` (merged into the open alert of its asset and kind, if there is one)."""
    [new_id] = await store.reserve_ids("alerts", 1)
    remap = await store.write_alert_changes(AlertChanges(opened=[msgspec.structs.replace(alert, id=new_id)]))
    return await store.get_alert(remap.get(new_id, new_id))
