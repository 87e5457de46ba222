"""The campaigns' known-answer probes on the platform (the pure part is :mod:`edgeloop.models.probes`):

- **injected faults**: each target's recent stored data with a canonical fault injected, through copies of the
  detectors the scoring stage runs for both versions (made on the event loop, between two scored batches, so they
  are consistent; the live detectors are never fed);
- **confirmed faults that still hold**: a target whose fault a technician confirmed and whose alert is still open
  must be anomalous to the candidate too (``confirmed-fault`` results): the device's last 30 min of data is
  replayed through copies of both versions, and the candidate's 95th-percentile score must reach half the
  champion's (or the threshold). A version that learnt an ongoing fault as normal (trained on a window
  that held it, without the labels) is caught here, where injected probes cannot tell (the champion, alarming,
  gives no evidence on that device).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edgeloop.campaigns.engine import CampaignSpec
from edgeloop.campaigns.gates import ProbeGate, ProbeResult, ProbeResults
from edgeloop.models.probes import DEFAULT_PROBES, Probe, ProbedDetector, probe_results, run_probes
from edgeloop.store.alerting import Verdict
from edgeloop.store.base import Store

__all__ = ["PlatformProbes"]

log = logging.getLogger(__name__)

_MIN = 60_000
FAULT_REPLAY_MS = 30 * _MIN  # the recent data a confirmed, ongoing fault is judged on
FAULT_SCORE_SHARE = 0.5  # a candidate scoring an ongoing confirmed fault at under half the champion's level missed it
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class LiveDetectors(Protocol):
    """What the probes read of the scoring stage (``ScoringStage`` is one)."""

    def detector(self, device: str, ref: str) -> ProbedDetector | None: ...

    def last_scored_ms(self, device: str) -> int | None: ...


class PlatformProbes:
    """``CampaignService(probes=PlatformProbes(...))``."""

    def __init__(self, *, store: Store, scoring: LiveDetectors, probes: Sequence[Probe] = DEFAULT_PROBES,
                 warm_rows: int = 2700, max_targets: int = 500) -> None:
        self.store = store
        self.scoring = scoring
        self.probes = tuple(probes)
        self.warm_rows = warm_rows
        self.max_targets = max_targets
        self.gate = ProbeGate()  # what falls short (asked again before it is reported)
        longest = max((p.length_ms for p in self.probes), default=0)
        self.span_ms = longest + warm_rows * 1000 + 10 * _MIN  # at 1 Hz; slower devices get fewer rows

    async def run(self, spec: CampaignSpec, targets: Sequence[str], now_ms: int) -> ProbeResults:
        results: list[ProbeResult] = []
        confirmed = await self._confirmed_faults(targets)
        for device in list(targets)[: self.max_targets]:
            champion = self.scoring.detector(device, spec.from_ref)
            challenger = self.scoring.detector(device, spec.to_ref)
            seen = self.scoring.last_scored_ms(device)
            if champion is None or challenger is None or seen is None:
                continue
            chunks = await self.store.read_chunks(device, seen - 2 * self.span_ms, seen + 1)  # a second stretch
            chunks = [c for c in chunks if c.channels == tuple(champion.channels)]
            if not chunks:
                continue
            ts = np.concatenate([c.ts for c in chunks])
            values = np.concatenate([c.values for c in chunks])
            order = np.argsort(ts, kind="stable")
            ts, values = ts[order], values[order]
            keep = np.concatenate([[True], np.diff(ts) > 0])
            ts, values, channels = ts[keep], values[keep], chunks[0].channels
            if device in confirmed:
                held = self._still_faulty(champion, challenger, ts, values, seen)
                if held is not None:
                    results.append(ProbeResult(target=device, probe=f"confirmed-fault-{confirmed[device]}",
                                               champion_detected=held[0], challenger_detected=held[1]))
            recent = ts >= seen - self.span_ms
            try:  # between two awaits: the copies see one consistent state of the live detectors
                found = run_probes(champion, challenger, device=device, ts=ts[recent], values=values[recent],
                                   channels=channels, probes=self.probes, warm_rows=self.warm_rows, after_ms=seen)
                results += [self._confirm(r, champion, challenger, ts[~recent], values[~recent], channels, seen)
                            for r in found]
            except ValueError as exc:  # too little recent data: this device is not probed now
                log.info("no probes on %s: %s", device, exc)
            await asyncio.sleep(0)
        return probe_results(results)

    def _still_faulty(self, champion: ProbedDetector, challenger: ProbedDetector, ts: I64, values: F64,
                      seen: int) -> tuple[bool, bool] | None:
        """The device's last ``FAULT_REPLAY_MS`` of data replayed through copies of both versions (after what they
        have seen): the technician's verdict says the champion found a fault; the candidate finds it too when its
        95th-percentile score is at least ``FAULT_SCORE_SHARE`` of the champion's, or over the threshold (a slow
        fault keeps the champion's score around 1 while its alert stays open, so "over the threshold" alone would
        ask nothing). None when a version has no per-row scores."""
        last = ts >= ts[-1] - FAULT_REPLAY_MS
        if last.sum() < 10:
            return None
        shifted = ts[last] - int(ts[last][0]) + seen + 1000
        levels = []
        for det in (champion, challenger):
            twin = copy.deepcopy(det)
            twin.process(shifted, values[last])
            scores = getattr(twin, "last_scores", None)
            if not isinstance(scores, np.ndarray) or scores.shape != shifted.shape:
                return None
            scored = scores[np.isfinite(scores)]
            levels.append(float(np.quantile(scored, 0.95)) if scored.size else 0.0)
        return True, levels[1] >= min(1.0, FAULT_SCORE_SHARE * levels[0])

    async def _confirmed_faults(self, targets: Sequence[str]) -> dict[str, int]:
        """Targets whose alert a technician confirmed as a fault (the newest verdict) and which is still open."""
        wanted = set(targets)
        open_alerts = {a.id: a.device for a in await self.store.list_alerts(unresolved=True, limit=100_000)
                       if a.device in wanted}
        newest: dict[int, Verdict] = {}
        for label in await self.store.list_labels(since_ms=None):  # oldest first: the newest verdict wins
            if label.alert in open_alerts:
                newest[label.alert] = label.verdict
        return {open_alerts[a]: a for a, v in newest.items() if v in (Verdict.CONFIRMED, Verdict.RELABEL)}

    def _confirm(self, result: ProbeResult, champion: ProbedDetector, challenger: ProbedDetector, ts: I64,
                 values: F64, channels: tuple[str, ...], seen: int) -> ProbeResult:
        """A probe the challenger falls short on is asked again on the earlier stretch of data: a version that
        lost the sensitivity misses it again; one that was unlucky with one splice of replayed data (a few in a
        thousand healthy ones) does not. The second answer is the one reported."""
        if not self.gate.falls_short(result):
            return result
        probe = next(p for p in self.probes if p.name == result.probe)
        try:
            [again] = run_probes(champion, challenger, device=result.target, ts=ts, values=values,
                                 channels=channels, probes=[probe], warm_rows=self.warm_rows, after_ms=seen)
        except ValueError:
            return result
        return again
