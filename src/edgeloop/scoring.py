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

**Model versions.** Which model version scores a device comes from a :class:`ModelSource` (the registry's
champion, or a campaign's challenger): an :class:`Assignment` of a *live* version, whose findings go to the alert
service with the version as their provenance, and optionally a *shadow* version that scores the same data and
whose findings are only recorded (never paged, unless the shadow is a canary's *safety net*: the champion
behind a candidate, whose findings page too). Both keep running while the assignment holds, so a campaign that
swaps their roles swaps which one pages, without a new warm-up. Without a source every device runs the built-in
online detector of its profile (version 0: ``detector.<profile>@0``). Every onset finding of either role is
handed to ``on_findings`` (the campaign gates compare the two on exactly the same data).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from edgeloop.alerts.service import AlertService
from edgeloop.assets import DeviceProfile
from edgeloop.detect import AssetDetector
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.finding import Finding, FindingPhase
from edgeloop.detect.scores import threshold_scores
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.errors import StoreError
from edgeloop.rul.monitor import RulMonitor
from edgeloop.store.base import TelemetryChunk

log = logging.getLogger(__name__)

ScoredHook = Callable[[list[TelemetryChunk]], None]
Detector = AssetDetector | UnivariateStreamDetector | TrainedBaselineDetector
History = Callable[[str, int, int], Awaitable[list[TelemetryChunk]]]  # (device, start, end) -> stored chunks
WARM_MS = 6 * 3_600_000  # how much stored history a detector made after a restart learns from
_PHASE_ORDER = {FindingPhase.ENDED: 0, FindingPhase.ONSET: 1, FindingPhase.HOLDING: 2}  # at one sample time


def builtin_ref(profile: DeviceProfile | None) -> str:
    """The reference of a profile's built-in online detector (version 0: no artifact, learns from the device)."""
    return f"detector.{profile.name if profile is not None else 'default'}@0"


class Assignment(NamedTuple):
    """Which model versions score a device: ``live`` pages, ``shadow`` (if any) is only recorded, unless it is a
    ``safety_net`` (the champion behind a canary: what it finds pages too, merged with the live version's alert of
    the same kind, so a fault the candidate misses is still seen and its verdict judges the candidate)."""

    live: str
    shadow: str | None = None
    safety_net: bool = False


class ModelSource(Protocol):
    """Where the scoring stage learns which version runs where, and gets a version's fitted detector."""

    def assignment(self, device: str, profile: DeviceProfile | None) -> Assignment:
        """The versions that score ``device`` now (called once per scored run: keep it a lookup)."""
        ...

    def detector(self, ref: str, device: str, channels: tuple[str, ...]) -> Detector | None:
        """``ref``'s fitted detector for ``device`` (a fresh copy), or None: the profile's built-in online one."""
        ...


@dataclass(frozen=True, slots=True)
class ScoredFinding:
    """An onset finding and the version (and role) that produced it."""

    ref: str
    live: bool
    device: str
    asset: str
    tenant: str
    finding: Finding


FindingsHook = Callable[[list[ScoredFinding]], Awaitable[None]]
ScoresHook = Callable[[TelemetryChunk, str, np.ndarray, bool], None]
"""A scored run (one device, its consecutive chunks as one), the version, its score per row (1.0 = the version's
threshold, NaN where not scored yet) and whether the version is live; synchronous, called for every run of every
version that scores it (drift's score shift, the score-distribution gate of a campaign)."""


@dataclass(slots=True)
class ScoringStats:
    scored_messages: int = 0
    scored_samples: int = 0
    late_messages: int = 0
    findings: int = 0
    shadow_findings: int = 0
    capacity: int = 0


class ScoringStage:
    def __init__(
        self, *, alerts: AlertService, capacity: int = 256, period_ms: int = 1000, on_scored: ScoredHook | None = None,
        rul: RulMonitor | None = None, profile_of: Callable[[str], DeviceProfile | None] | None = None,
        history: History | None = None, warm_ms: int = WARM_MS, models: ModelSource | None = None,
        on_findings: FindingsHook | None = None, on_scores: ScoresHook | None = None,
    ) -> None:
        self.alerts = alerts
        self.rul = rul  # remaining-useful-life models for devices that report the channels they read
        self.period_ms = period_ms
        self.on_scored = on_scored
        self.queue: asyncio.Queue[list[TelemetryChunk]] = asyncio.Queue(maxsize=capacity)
        self.stats = ScoringStats(capacity=capacity)
        self.profile_of = profile_of  # device -> its profile, which may choose the detector
        self.models = models  # which version runs where (None: every device its profile's built-in detector)
        self.on_findings = on_findings  # every onset finding, live and shadow, with its version
        self.on_scores = on_scores  # every scored run's scores, live and shadow, with its version
        self._detectors: dict[str, dict[str, Detector]] = {}  # device -> version -> its detector
        self._last_ts: dict[str, int] = {}
        self.busy = False
        self.latest_ms = 0  # newest sample time scored: "now" in simulated time
        self.history = history  # the store's chunks, for a warm start (None: detectors start cold)
        self.warm_ms = warm_ms


    def detector(self, device: str, ref: str) -> Detector | None:
        """The detector of version ``ref`` scoring ``device`` now (live or shadow), if any: read it, never feed it
        (the known-answer probes copy it)."""
        return self._detectors.get(device, {}).get(ref)

    def last_scored_ms(self, device: str) -> int | None:
        """The newest sample time of ``device`` its detectors have seen."""
        return self._last_ts.get(device)

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
        scored: list[ScoredFinding] = []
        for device_runs in runs.values():
            first = device_runs[0][0]
            assignment = await self._attach(first)
            for run in device_runs:
                self._score_run(run, assignment, scored)
        await self.alerts.flush()
        if scored and self.on_findings is not None:
            await self.on_findings(scored)
        if self.on_scored is not None:
            self.on_scored(chunks)

    async def _attach(self, chunk: TelemetryChunk) -> Assignment:
        """The device's assignment now, with a detector (warmed on its history) for each version in it; a version
        no longer assigned is dropped."""
        profile = self.profile_of(chunk.device) if self.profile_of is not None else None
        assignment = (self.models.assignment(chunk.device, profile) if self.models is not None
                      else Assignment(builtin_ref(profile)))
        have = self._detectors.setdefault(chunk.device, {})
        wanted = [assignment.live] if assignment.shadow is None else [assignment.live, assignment.shadow]
        for ref in wanted:
            if ref not in have or have[ref].channels != chunk.channels:
                fitted = self.models.detector(ref, chunk.device, chunk.channels) if self.models is not None else None
                running = next((d for d in have.values() if d.channels == chunk.channels), None)
                if fitted is None and ref != builtin_ref(profile) and running is not None:
                    # a trained version left this device out (it had an open fault): it continues a copy of the
                    # detector already scoring the device, current up to now
                    have[ref] = copy.deepcopy(running)
                    continue
                have[ref] = fitted if fitted is not None else self._builtin(chunk, profile)
                await self._warm(chunk, have[ref])  # a trained version catches up from its training window's end
        for gone in [r for r in have if r not in wanted]:
            del have[gone]
        return assignment

    def _score_run(self, run: list[TelemetryChunk], assignment: Assignment, out: list[ScoredFinding]) -> None:
        """Consecutive chunks of one device with the same channels, in time order."""
        first = run[0]
        detectors = self._detectors[first.device]
        if any(d.channels != first.channels for d in detectors.values()):  # the profile changed mid-batch
            profile = self.profile_of(first.device) if self.profile_of is not None else None
            for ref in detectors:
                detectors[ref] = self._builtin(first, profile)
        if len(run) == 1:
            whole = run[0]
        else:
            first = run[0]
            whole = TelemetryChunk(device=first.device, seq=run[-1].seq, channels=first.channels,
                                   ts=np.concatenate([c.ts for c in run]),
                                   values=np.concatenate([c.values for c in run]), tenant=first.tenant,
                                   asset=first.asset)
        ts = whole.ts
        asset = first.asset or first.device
        starts = [c.t0 for c in run]
        if assignment.shadow is not None:  # recorded beside the live version's; paged only as a safety net
            shadow_detector = detectors[assignment.shadow]
            shadow = shadow_detector.process(ts, whole.values)
            self._scores(whole, assignment.shadow, shadow_detector, live=False)
            self.stats.shadow_findings += len(shadow)
            out += [ScoredFinding(assignment.shadow, False, first.device, asset, first.tenant, f) for f in shadow]
            if assignment.safety_net:
                self._page(run, starts, shadow_detector, shadow, assignment.shadow)
        detector = detectors[assignment.live]
        findings = detector.process(ts, whole.values)
        self._scores(whole, assignment.live, detector, live=True)
        self.stats.findings += len(findings)
        out += [ScoredFinding(assignment.live, True, first.device, asset, first.tenant, f) for f in findings]
        self.alerts.observe_run(whole)
        self.stats.scored_messages += len(run)
        self.stats.scored_samples += len(ts)
        self._page(run, starts, detector, findings, assignment.live)
        if self.rul is not None:
            alert = self.rul.observe(run)
            if alert is not None:
                self.alerts.observe_alert(alert)

    def _scores(self, whole: TelemetryChunk, ref: str, detector: Detector, *, live: bool) -> None:
        """Hand a run's scores (1.0 = the version's threshold) to ``on_scores``."""
        if self.on_scores is not None:
            self.on_scores(whole, ref, threshold_scores(detector, whole.ts.shape[0]), live)

    def _page(self, run: list[TelemetryChunk], starts: list[int], detector: Detector, findings: list[Finding],
              ref: str) -> None:
        """A version's findings, with the holding / ended reports of the states it follows, to the alert rules."""
        if isinstance(detector, AssetDetector) and detector.last_updates:  # states that hold or ended
            findings = sorted([*findings, *detector.last_updates], key=lambda f: (f.ts, _PHASE_ORDER[f.phase]))
        for finding in findings:
            chunk = run[max(0, bisect.bisect_right(starts, finding.ts) - 1)]  # the message the finding is in
            self.alerts.observe_finding(chunk, finding, detector.name, ref)

    async def _warm(self, chunk: TelemetryChunk, detector: Detector) -> None:
        """A device's new detector learns from its stored history before ``chunk`` (see the module doc)."""
        if self.history is None or self.warm_ms <= 0 or not isinstance(detector, AssetDetector):
            return
        try:
            past = await self.history(chunk.device, chunk.t0 - self.warm_ms, chunk.t0)
        except StoreError as exc:
            log.warning("detector of %s starts cold: its history could not be read (%s)", chunk.device, exc)
            return
        past = [c for c in past if c.channels == chunk.channels and c.t1 < chunk.t0]
        if not past:
            return
        ts = np.concatenate([c.ts for c in past])
        keep = np.concatenate([[True], np.diff(ts) > 0])  # stored chunks may overlap (resent, deduplicated by seq)
        # what the history shows was seen by the alert service before the restart: nothing of it is raised
        # again; the detector now follows the states that hold, and re-asserts them on the new data
        detector.process(ts[keep], np.concatenate([c.values for c in past])[keep])
        detector.last_updates = []

    def _builtin(self, chunk: TelemetryChunk, profile: DeviceProfile | None) -> Detector:
        """The profile's built-in online detector, new."""
        if profile is not None and profile.detector == "univariate":
            return UnivariateStreamDetector(channels=chunk.channels)
        if profile is not None and profile.detector == "baseline":
            # the device's first 400 samples train it (its commissioning run); all its channels are scored
            return TrainedBaselineDetector(channels=chunk.channels)
        return AssetDetector(channels=chunk.channels, period_ms=self.period_ms)
