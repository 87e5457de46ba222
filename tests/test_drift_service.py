"""Drift on the running platform: a device's scored data against the reference of the version that scores it.
The built-in detector's reference is the device's first hours of stored data; a benign regime change on one
device is found within the hour, explained, stored and audited; its healthy peer raises nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from edgeloop.assets import Device, DeviceProfile
from edgeloop.models.drift_service import DriftService
from edgeloop.registry import Registry, RegistryService
from edgeloop.scoring import Assignment, builtin_ref
from edgeloop.sim.fleet import CHANNELS, Fleet
from edgeloop.sim.register import register_fleet
from edgeloop.store import Store, open_store
from edgeloop.store.base import DriftRecord, TelemetryChunk

MIN = 60_000
HOUR = 60 * MIN
SPEED, TEMP = CHANNELS.index("speed"), CHANNELS.index("bearing_temp")


class Builtin:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def assignment(self, device: str, profile: DeviceProfile | None) -> Assignment:
        return Assignment(builtin_ref(profile))

    def detector(self, ref: str, device: str, channels: tuple[str, ...]) -> None:
        return None


class NoValidation:
    def refresh(self, registry: Registry) -> None:
        pass

    def put_device(self, device: Device, registry: Registry) -> None:
        pass


async def _stored(store: Store, fleet: Fleet, until: int, shifted: str, shift_at: int,
                  seq: dict[str, int]) -> list[TelemetryChunk]:
    out = []
    for c in fleet.advance(until):
        values = c.values.copy()
        if c.device_id == shifted:  # a new product run: other speed levels, a warmer bearing
            after = c.ts >= shift_at
            values[after, SPEED] *= 0.8
            values[after, TEMP] += 5.0
        seq[c.device_id] = seq.get(c.device_id, 0) + 1
        out.append(TelemetryChunk(device=c.device_id, seq=seq[c.device_id], channels=tuple(CHANNELS), ts=c.ts,
                                  values=values, tenant="plant", asset=c.device_id))
    await store.write_chunks(out)
    return out


async def test_a_regime_change_is_a_stored_explained_audited_drift_event(tmp_path: Path) -> None:
    fleet = Fleet(devices=2, faulty=0, seed=4, start_ms=0, duration_ms=12 * HOUR)
    shifted, healthy = fleet.devices[0].device_id, fleet.devices[1].device_id
    shift_at = 8 * HOUR + 7 * MIN
    async with open_store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        registry = Registry()
        reg = RegistryService(store=store, registry=registry, validator=NoValidation())
        await register_fleet(reg, fleet, tenant="plant")
        service = DriftService(store=store, models=Builtin(registry),
                               profile_of=lambda d: registry.profiles[registry.devices[d].profile])
        heard: list[DriftRecord] = []

        async def listen(record: DriftRecord) -> None:
            heard.append(record)

        service.listeners.append(listen)
        runner = asyncio.create_task(service.run())
        seq: dict[str, int] = {}
        t = 0
        while t < fleet.end_ms:
            t += 10 * MIN
            service.observe(await _stored(store, fleet, t, shifted, shift_at, seq))
            await service.settle()
        runner.cancel()
        await service.close()
        events = await store.list_drift_events()
        audit = await store.list_audit(action="drift.detected")
    assert [e.device for e in events] == [shifted], "one event, on the changed device only"
    [event] = events
    assert shift_at <= event.detected_ms <= shift_at + 60 * MIN
    assert event.model == f"detector.{fleet.devices[0].profile}@0"  # the built-in version's own first hours
    assert {"speed", "bearing_temp"} & set(event.channels) and event.since_ms >= shift_at - 30 * MIN
    assert [a.target for a in audit] == [shifted] and heard and heard[0].id == event.id
    assert healthy not in {e.device for e in events} and np.isfinite(event.figure)
