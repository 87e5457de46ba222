"""The scoring stage: stored chunks -> per-asset detector -> findings -> the alert service.

This is the thin async shell around the pure detectors in ``edgeloop.detect``.
It takes chunks from a bounded queue (a full queue pushes back on ingest,
which pushes back on the broker: nothing is dropped), feeds each device's
detector in sample-time order, and hands each run of messages, each finding
(with the holding / ended reports of the states a detector follows, in time order)
and each RUL alert to the alert service (``edgeloop.alerts.service``), whose
rules and incident engine decide what becomes an alert, an incident and a
page. One batch of scoring is one write of alert state.

Data that arrives late (older than what a detector has already seen, e.g. a
backfill after an outage) is stored but not scored: detectors only move forward.

**Warm start.** A detector made after a (re)start first learns from the device's stored history (up to
``warm_ms``, 6 h by default) before its first new message. A state that held before the restart (a stuck
sensor, an anomaly episode) is so recognised again: the detector re-asserts it on the new data, which holds the
restored alert, instead of learning the faulty data as normal during a cold warm-up (the restored alert then
auto-resolved above a flat line). The history itself raises nothing again: the alert service saw it before.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from edgeloop.alerts.service import AlertService
from edgeloop.assets import DeviceProfile
from edgeloop.detect import AssetDetector
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.finding import FindingPhase
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.errors import StoreError
from edgeloop.rul.monitor import RulMonitor
from edgeloop.store.base import TelemetryChunk

log = logging.getLogger(__name__)

ScoredHook = Callable[[list[TelemetryChunk]], None]
History = Callable[[str, int, int], Awaitable[list[TelemetryChunk]]]  # (device, start, end) -> stored chunks
WARM_MS = 6 * 3_600_000  # how much stored history a detector made after a restart learns from
_PHASE_ORDER = {FindingPhase.ENDED: 0, FindingPhase.ONSET: 1, FindingPhase.HOLDING: 2}  # at one sample time


@dataclass(slots=True)
class ScoringStats:
    scored_messages: int = 0
    scored_samples: int = 0
    late_messages: int = 0
    findings: int = 0
    capacity: int = 0


class ScoringStage:
    def __init__(
        self, *, alerts: AlertService, capacity: int = 256, period_ms: int = 1000, on_scored: ScoredHook | None = None,
        rul: RulMonitor | None = None, profile_of: Callable[[str], DeviceProfile | None] | None = None,
        history: History | None = None, warm_ms: int = WARM_MS,
    ) -> None:
        self.alerts = alerts
        self.rul = rul  # remaining-useful-life models for devices that report the channels they read
        self.period_ms = period_ms
        self.on_scored = on_scored
        self.queue: asyncio.Queue[list[TelemetryChunk]] = asyncio.Queue(maxsize=capacity)
        self.stats = ScoringStats(capacity=capacity)
        self.profile_of = profile_of  # device -> its profile, which may choose the detector
        self._detectors: dict[str, AssetDetector | UnivariateStreamDetector | TrainedBaselineDetector] = {}
        self._last_ts: dict[str, int] = {}
        self.busy = False
        self.latest_ms = 0  # newest sample time scored: "now" in simulated time
        self.history = history  # the store's chunks, for a warm start (None: detectors start cold)
        self.warm_ms = warm_ms


    async def submit(self, chunks: list[TelemetryChunk]) -> None:
        """Queue chunks for scoring; waits while the queue is full."""
        await self.queue.put(chunks)

    async def run(self) -> None:
        while True:
            chunks = await self.queue.get()
            while not self.queue.empty():  # behind? score everything queued in one pass: fewer, larger calls
                chunks = chunks + self.queue.get_nowait()
            self.busy = True
            try:
                await self.score(chunks)
            finally:
                self.busy = False

    async def score(self, chunks: list[TelemetryChunk]) -> None:
        """Score a batch: one detector call per device (and channel set), not one per message."""
        runs: dict[str, list[list[TelemetryChunk]]] = {}
        for chunk in chunks:
            if chunk.t0 <= self._last_ts.get(chunk.device, -1):
                self.stats.late_messages += 1
                continue
            self._last_ts[chunk.device] = chunk.t1
            self.latest_ms = max(self.latest_ms, chunk.t1)
            device_runs = runs.setdefault(chunk.device, [])
            if device_runs and device_runs[-1][0].channels == chunk.channels:
                device_runs[-1].append(chunk)
            else:
                device_runs.append([chunk])
        for device_runs in runs.values():
            first = device_runs[0][0]
            if first.device not in self._detectors:
                await self._warm(first)
            for run in device_runs:
                self._score_run(run)
        await self.alerts.flush()
        if self.on_scored is not None:
            self.on_scored(chunks)

    def _score_run(self, run: list[TelemetryChunk]) -> None:
        """Consecutive chunks of one device with the same channels, in time order."""
        detector = self._detector_for(run[0])
        if len(run) == 1:
            whole = run[0]
        else:
            first = run[0]
            whole = TelemetryChunk(device=first.device, seq=run[-1].seq, channels=first.channels,
                                   ts=np.concatenate([c.ts for c in run]),
                                   values=np.concatenate([c.values for c in run]), tenant=first.tenant,
                                   asset=first.asset)
        ts = whole.ts
        findings = detector.process(ts, whole.values)
        self.stats.findings += len(findings)
        if isinstance(detector, AssetDetector) and detector.last_updates:  # states that hold or ended
            findings = sorted([*findings, *detector.last_updates], key=lambda f: (f.ts, _PHASE_ORDER[f.phase]))
        self.alerts.observe_run(whole)
        self.stats.scored_messages += len(run)
        self.stats.scored_samples += len(ts)
        starts = [c.t0 for c in run]
        for finding in findings:
            chunk = run[max(0, bisect.bisect_right(starts, finding.ts) - 1)]  # the message the finding is in
            self.alerts.observe_finding(chunk, finding, detector.name)
        if self.rul is not None:
            alert = self.rul.observe(run)
            if alert is not None:
                self.alerts.observe_alert(alert)

    async def _warm(self, chunk: TelemetryChunk) -> None:
        """The device's new detector learns from its stored history before ``chunk`` (see the module doc)."""
        if self.history is None or self.warm_ms <= 0:
            return
        try:
            past = await self.history(chunk.device, chunk.t0 - self.warm_ms, chunk.t0)
        except StoreError as exc:
            log.warning("detector of %s starts cold: its history could not be read (%s)", chunk.device, exc)
            return
        past = [c for c in past if c.channels == chunk.channels and c.t1 < chunk.t0]
        detector = self._detector_for(chunk)
        if not past or not isinstance(detector, AssetDetector):
            return
        ts = np.concatenate([c.ts for c in past])
        keep = np.concatenate([[True], np.diff(ts) > 0])  # stored chunks may overlap (resent, deduplicated by seq)
        # what the history shows was seen by the alert service before the restart: nothing of it is raised
        # again; the detector now follows the states that hold, and re-asserts them on the new data
        detector.process(ts[keep], np.concatenate([c.values for c in past])[keep])
        detector.last_updates = []

    def _detector_for(
        self, chunk: TelemetryChunk,
    ) -> AssetDetector | UnivariateStreamDetector | TrainedBaselineDetector:
        det = self._detectors.get(chunk.device)
        if det is None or det.channels != chunk.channels:  # new device, or its profile changed
            profile = self.profile_of(chunk.device) if self.profile_of is not None else None
            if profile is not None and profile.detector == "univariate":
                det = UnivariateStreamDetector(channels=chunk.channels)
            elif profile is not None and profile.detector == "baseline":
                # the device's first 400 samples train it (its commissioning run); all its channels are scored
                det = TrainedBaselineDetector(channels=chunk.channels)
            else:
                det = AssetDetector(channels=chunk.channels, period_ms=self.period_ms)
            self._detectors[chunk.device] = det
        return det
