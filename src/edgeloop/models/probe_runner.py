"""The campaigns' known-answer probes on the platform (the pure part is :mod:`edgeloop.models.probes`):

- **injected faults**: each target's recent stored data with a canonical fault injected, through copies of the
  detectors the scoring stage runs for both versions (made on the event loop, between two scored batches, so they
  are consistent; the live detectors are never fed);
- **confirmed faults that still hold**: a target whose fault a technician confirmed and whose alert is still open
  must be anomalous to the candidate too (``confirmed-fault`` results): the device's last 30 min of data is
  replayed through copies of both versions, and the candidate's 95th-percentile score must reach half the
  champion's (or the threshold). A version that learnt an ongoing fault as normal (trained on a window
  that held it, without the labels) is caught here, where injected probes cannot tell (the champion, alarming,
  gives no evidence on that device);
- **the onset of a confirmed, ongoing fault** (``confirmed-onset`` results): 45 min of the device's data from
  well before its alert, then the data up to 30 min after it, replayed through copies of both versions: where the
  champion finds the fault again, the candidate must too (a slow wear grows past what a bad candidate learnt, so
  its level alone may not tell; its onset does).
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
ONSET_WARM_MS = 45 * _MIN  # a confirmed fault's onset replay: normal data this long ...
ONSET_BEFORE_MS = 135 * _MIN  # ... ending this long before its alert (a slow fault starts well before it is found)
ONSET_AFTER_MS = 30 * _MIN  # ... then the data up to this long after its alert
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
            channels = tuple(champion.channels)
            series = await self.store.read_samples(device, seen - 2 * self.span_ms, seen, channels)  # 2 stretches
            if series is None:
                continue
            ts, values, _ = series
            onset = None
            if device in confirmed:
                first_seen = confirmed[device][1]
                replay = await self.store.read_samples(device, first_seen - ONSET_BEFORE_MS - ONSET_WARM_MS,
                                                       first_seen + ONSET_AFTER_MS, channels)
                onset = None if replay is None else (replay[0], replay[1])
            # from here to the next await: the copies see one consistent state of the live detectors
            if device in confirmed:
                name = confirmed[device][0]
                held = self._still_faulty(champion, challenger, ts, values, seen)
                if held is not None:
                    results.append(ProbeResult(target=device, probe=f"confirmed-fault-{name}",
                                               champion_detected=held[0], challenger_detected=held[1]))
                found_onset = None if onset is None else self._onset(champion, challenger, *onset,
                                                                      confirmed[device][1], seen)
                if found_onset is not None:
                    results.append(ProbeResult(target=device, probe=f"confirmed-onset-{name}",
                                               champion_detected=found_onset[0], challenger_detected=found_onset[1]))
            recent = ts >= seen - self.span_ms
            try:
                found = run_probes(champion, challenger, device=device, ts=ts[recent], values=values[recent],
                                   channels=channels, probes=self.probes, warm_rows=self.warm_rows, after_ms=seen)
                results += [self._confirm(r, champion, challenger, ts[~recent], values[~recent], channels, seen)
                            for r in found]
            except ValueError as exc:  # too little recent data: this device is not probed now
                log.info("no probes on %s: %s", device, exc)
            await asyncio.sleep(0)
        return probe_results(results)

    def _onset(self, champion: ProbedDetector, challenger: ProbedDetector, ts: I64, values: F64, first_seen: int,
               seen: int) -> tuple[bool, bool] | None:
        """The confirmed fault's onset replayed (after what the detectors have seen): ``ONSET_WARM_MS`` of data from
        well before its alert, then up to ``ONSET_AFTER_MS`` after it; each version detected it when it reported an
        anomaly onset after the warm rows. A version that learnt the fault as normal stays quiet where the champion
        found it; the fault's current level may not tell (a slow wear grows past what it learnt). None: too
        little data."""
        warm_end = first_seen - ONSET_BEFORE_MS
        if (ts < warm_end).sum() < 600 or (ts >= warm_end).sum() < 600:
            return None
        shifted = ts - int(ts[0]) + seen + 1000
        start = int(shifted[int(np.searchsorted(ts, warm_end))])
        found = []
        for det in (champion, challenger):
            twin = copy.deepcopy(det)
            findings = twin.process(shifted, values)
            found.append(any(f.kind == "anomaly" and f.ts >= start for f in findings))  # process() gives onsets
        return found[0], found[1]

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

    async def _confirmed_faults(self, targets: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Targets whose alert a technician confirmed as a fault (the newest verdict) and which is still open:
        device -> (alert id, when it was first seen)."""
        wanted = set(targets)
        alerts = {a.id: a for a in await self.store.list_alerts(unresolved=True, limit=100_000) if a.device in wanted}
        open_alerts = {a.id: a.device for a in alerts.values()}
        newest: dict[int, Verdict] = {}
        for label in await self.store.list_labels(since_ms=None):  # oldest first: the newest verdict wins
            if label.alert in open_alerts:
                newest[label.alert] = label.verdict
        return {open_alerts[a]: (a, alerts[a].first_seen) for a, v in newest.items()
                if v in (Verdict.CONFIRMED, Verdict.RELABEL)}

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
