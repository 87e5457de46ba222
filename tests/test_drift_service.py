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
            for chunk in await _stored(store, fleet, t, shifted, shift_at, seq):
                service.observe_run(chunk)
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


async def test_a_trained_versions_score_shift_is_found_from_the_live_scores_the_platform_feeds(tmp_path: Path) -> None:
    """A version whose reference has score bins (a trained version's held-out scores): inputs unchanged, but its
    live scores move far up (a fault, or a model gone wrong) for an hour. ``observe_run`` with the scores finds
    a score-shift event; the same data without scores finds nothing."""
    from edgeloop.models.drift import reference_from

    rng = np.random.default_rng(2)
    ts = np.arange(0, 6 * HOUR, 1000, dtype=np.int64)
    values = rng.normal(50.0, 2.0, (ts.size, 1))
    reference = reference_from(values, ["temp"], ts=ts, scores=rng.uniform(0.0, 0.5, ts.size))
    assert reference.score_quantiles and reference.score_limit is not None

    async def reference_of(device: str, ref: str, channels: tuple[str, ...]) -> object:
        return reference

    found: dict[bool, list[DriftRecord]] = {}
    for with_scores in (True, False):
        async with open_store(f"sqlite:///{tmp_path / f's{with_scores}.db'}") as store:
            service = DriftService(store=store, models=Builtin(Registry()), profile_of=lambda d: None,
                                   reference_of=reference_of)  # type: ignore[arg-type]
            runner = asyncio.create_task(service.run())
            for k, lo in enumerate(range(0, 3 * HOUR, 10 * MIN)):
                t = np.arange(lo, lo + 10 * MIN, 1000, dtype=np.int64)
                chunk = TelemetryChunk(device="d1", seq=k + 1, channels=("temp",), ts=t,
                                       values=rng.normal(50.0, 2.0, (t.size, 1)), tenant="plant", asset="d1")
                scores = rng.uniform(0.0, 0.5, t.size) if lo < HOUR else rng.uniform(0.8, 2.0, t.size)
                service.observe_run(chunk, scores if with_scores else None)
                await service.settle()
            runner.cancel()
            await service.close()
            found[with_scores] = await store.list_drift_events()
    [event] = found[True]
    assert event.kind == "score" and "score" in event.channels and HOUR <= event.detected_ms <= 2 * HOUR
    assert found[False] == [], "without the scores only the inputs are judged, and they did not move"
