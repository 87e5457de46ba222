"""Drift monitoring on the running platform: each device's scored data against the reference of the model version
that scores it live (the thin async shell around :mod:`edgeloop.models.drift`).

- **The reference.** A trained version carries one per device in its manifest (``card["drift_reference"]``,
  written by the training job). The built-in detector (version 0) learns from the device's own first data, so its
  reference is the device's first ``reference_ms`` (6 h) of stored telemetry, read back from the store: the same
  after a restart, whatever the device did since.
- **Observing** is synchronous and cheap (per device: bin counts of one window); it is fed every scored run, with
  the live version's scores when the platform's ``drift_scores`` is on (score shift, against the score bins of the
  version's reference: a trained version's held-out scores; the built-in detector's reference has none, so only
  its inputs are judged). Off by default: see docs/models.md.
  A device whose live version changed (a promotion, a canary) gets a new monitor against the new version's
  reference. While a reference is being built (or the device has less history than ``reference_ms``), its data
  is not judged.
- **Events** are stored (``drift_events``), audited (``drift.detected``) and logged by :meth:`DriftService.run`;
  they never page. :attr:`DriftService.listeners` get each stored event (the retraining policy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import msgspec
import numpy as np

from edgeloop.assets import DeviceProfile
from edgeloop.errors import EdgeLoopError, StoreError
from edgeloop.models.drift import DriftConfig, DriftEvent, DriftMonitor, ReferenceStats, reference_from
from edgeloop.models.manifest import ModelManifest
from edgeloop.scoring import ModelSource
from edgeloop.store.base import AuditRecord, DriftRecord, Store, TelemetryChunk

__all__ = ["REFERENCE_MS", "DriftService"]

log = logging.getLogger(__name__)

REFERENCE_MS = 6 * 3_600_000  # the built-in detector's reference: a device's first 6 h of data
_MAX_REFERENCE_ROWS = 20_000  # rows a reference is computed from (evenly thinned beyond that)
ReferenceOf = Callable[[str, str, tuple[str, ...]], Awaitable[ReferenceStats | None]]  # (device, ref, channels)


class DriftService:
    """One :class:`DriftMonitor` per device, against the reference of the version that scores it live."""

    def __init__(self, *, store: Store, models: ModelSource, profile_of: Callable[[str], DeviceProfile | None],
                 reference_of: ReferenceOf | None = None, config: DriftConfig | None = None,
                 reference_ms: int = REFERENCE_MS, capacity: int = 10_000,
                 manifest_of: Callable[[str], Awaitable[ModelManifest]] | None = None) -> None:
        self.store = store
        self.models = models
        self.profile_of = profile_of
        self.reference_of = reference_of or self.builtin_reference
        self.config = config or DriftConfig()
        self.reference_ms = reference_ms
        self.manifest_of = manifest_of  # a trained version's manifest (the registry's ``get``)
        self._monitors: dict[str, DriftMonitor] = {}
        self._building: dict[str, str] = {}  # device -> the version whose reference is being built
        self._not_before: dict[str, int] = {}  # device -> sample time until which a missing reference is not retried
        self._events: asyncio.Queue[tuple[DriftEvent, str]] = asyncio.Queue(maxsize=capacity)
        self._tasks: set[asyncio.Task[None]] = set()
        self.listeners: list[Callable[[DriftRecord], Awaitable[None]]] = []
        self.dropped = 0  # events not recorded because the queue was full (the store down for long)

    # -- fed by the scoring stage (synchronous) ------------------------------------------------------------
    def observe_run(self, chunk: TelemetryChunk, scores: np.ndarray | None = None) -> None:
        """A scored run of one device and, when given, the live version's score of each row (1.0 = threshold):
        the platform feeds it from the scoring stage's ``on_scores``, so score shift is judged too."""
        profile = self.profile_of(chunk.device)
        live = self.models.assignment(chunk.device, profile).live
        monitor = self._monitors.get(chunk.device)
        if monitor is None or monitor.model != live or tuple(monitor.reference.channels) != chunk.channels:
            self._need(chunk, live, profile)
            return
        for event in monitor.observe(chunk.ts, chunk.values, scores):
            self._emit(event, chunk.tenant)

    def _need(self, chunk: TelemetryChunk, live: str, profile: DeviceProfile | None) -> None:
        self._monitors.pop(chunk.device, None)
        if self._building.get(chunk.device) == live or chunk.t1 < self._not_before.get(chunk.device, 0):
            return
        self._building[chunk.device] = live
        task = asyncio.get_running_loop().create_task(self._build(chunk, live, profile))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _build(self, chunk: TelemetryChunk, live: str, profile: DeviceProfile | None) -> None:
        try:
            reference = await self.reference_of(chunk.device, live, chunk.channels)
        except StoreError as exc:
            log.warning("drift reference of %s not read (%s); tried again later", chunk.device, exc)
            reference = None
        finally:
            self._building.pop(chunk.device, None)
        if reference is None:
            self._not_before[chunk.device] = chunk.t1 + self.config.hop_ms
            return
        self._monitors[chunk.device] = DriftMonitor(
            device=chunk.device, reference=reference, model=live, asset=chunk.asset or None,
            profile=profile.name if profile is not None else "", config=self.config)

    def _emit(self, event: DriftEvent, tenant: str) -> None:
        try:
            self._events.put_nowait((event, tenant))
        except asyncio.QueueFull:
            self.dropped += 1

    # -- references ----------------------------------------------------------------------------------------
    async def builtin_reference(self, device: str, ref: str, channels: tuple[str, ...]) -> ReferenceStats | None:
        """A version-0 reference: the device's first ``reference_ms`` of stored data (None until it has that
        much); a trained version's: the one its manifest keeps for the device (``card["drift_reference"]``)."""
        if not ref.endswith("@0"):
            return await self._trained_reference(device, ref, channels)
        first = (await self.store.first_sample_ms()).get(device)
        if first is None:
            return None
        found = await self.store.read_samples(device, first, first + self.reference_ms, channels)
        if found is None or found[0][-1] - first < self.reference_ms * 0.9:
            return None
        ts, values, _ = found
        if ts.shape[0] > _MAX_REFERENCE_ROWS:
            pick = np.linspace(0, ts.shape[0] - 1, _MAX_REFERENCE_ROWS).astype(np.intp)
            ts, values = ts[pick], values[pick]
        return await asyncio.to_thread(reference_from, values, list(channels), ts=ts, config=self.config)

    async def _trained_reference(self, device: str, ref: str, channels: tuple[str, ...]) -> ReferenceStats | None:
        if self.manifest_of is None:
            return None
        try:
            manifest = await self.manifest_of(ref)
            raw = manifest.card.get("drift_reference", {}).get(device)
            reference = None if raw is None else msgspec.convert(raw, ReferenceStats)
        except (EdgeLoopError, msgspec.ValidationError) as exc:
            log.warning("no drift reference for %s in %s: %s", device, ref, exc)
            return None
        if reference is None or tuple(reference.channels) != channels:
            return None
        return reference

    # -- recording -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Store, audit and announce each event (a store outage keeps it for the next try)."""
        while True:
            event, tenant = await self._events.get()
            record = DriftRecord(tenant=tenant, device=event.device, asset=event.asset, profile=event.profile,
                                 model=event.model, kind=event.kind, since_ms=event.since_ms,
                                 detected_ms=event.detected_ms, figure=event.figure, threshold=event.threshold,
                                 channels=dict(event.channels), message=event.message)
            while True:
                try:
                    record = dataclasses.replace(record, id=await self.store.add_drift_event(record))
                    await self.store.audit(AuditRecord(
                        ts_ms=event.detected_ms, actor="platform", action="drift.detected", target=event.device,
                        outcome="ok", detail=event.message, source="drift"))
                    break
                except StoreError as exc:
                    log.warning("drift event of %s waits for the store (%s)", event.device, exc)
                    await asyncio.sleep(5.0)
            log.info("drift: %s", event.message)
            for listener in self.listeners:
                await listener(record)
            self._events.task_done()

    async def settle(self) -> None:
        """Wait until the references being built are ready and every event so far is recorded (tests, tools)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._events.join()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

