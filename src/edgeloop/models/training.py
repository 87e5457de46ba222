"""Training a detector model from stored telemetry and technician labels, and its model card (pure: no I/O).

Input: per device, its samples over a time window (:class:`DeviceSeries`, one device at a time, so memory is
bounded by one device), and the labels technicians gave on alerts of those devices
(:class:`edgeloop.store.alerting.Label`). Output: a :class:`TrainingResult`: the fitted per-device detectors
(dumped by :mod:`edgeloop.models.detector_artifact`), a :class:`ModelCard`, a :class:`DataSummary` and the
:class:`ReferenceStats` the drift monitor compares live data against.

How
---
1. **Labels.** The newest label per alert wins (a relabel or a corrected verdict replaces the first one).
   ``confirmed`` and ``relabel`` labels are real faults: their windows ``[start_ms, end_ms]``, padded by
   ``pad_before_ms`` / ``pad_after_ms``, are cut out of the normal reference. ``false_alarm`` windows stay in:
   they are normal data the old model alarmed on, which is exactly what the new one must learn as normal.
   A device whose regime changed (``regime_since``: a drift event's ``since``) learns only from then on: a model
   fitted across the change learns the old regime in its warm-up and keeps alarming on the new one (measured:
   the 10 °C bearing shift of the tests, window 0-10 h, shift at 2 h: the candidate alarmed as often as the
   champion; with the device's regime start given, it did not alarm).
2. **Split by time.** ``split_ms = window_start + (1 - holdout_fraction) * (window_end - window_start)``: the
   earlier part trains, the later part (default the last 30 %) evaluates. Held-out rows are never learnt by the
   candidate before they are scored.
3. **Fit.** A fresh detector per device (the profile's kind: ``robust-ensemble-v2`` by default) is fed the
   reference rows in time order; a cut-out window is a timestamp gap to it. The online detector warms up on
   its first 20 min and its ensemble learns and calibrates over 3 h + 3 h -- made for a device that starts cold.
   A trained model has the whole reference, so it uses all of it: the regression warm-up is ``warmup_fraction``
   (25 %) of the reference, between 20 min and 4 h (a longer warm-up sees more operating points), and the
   ensemble's warm-up and its calibration are each ``ensemble_fraction`` (37.5 %) of it, between 30 min and 8 h,
   so that they end together with the reference. The ensemble must see as much of the normal variety as it can:
   a longer regression warm-up fits better, so its t-values vary less, and an ensemble that learnt their spread
   over a few hours is surprised by the next hours' slow changes (a daily ambient swing). Measured on 20 healthy
   simulated devices over 24 h, with the 4 h regression warm-up: ensemble 20 % (3 h + 3 h) gave one device a
   held-out p50 score of 0.80 and a false alarm; 37.5 % (6.3 h + 6.3 h) gave no false alarm and a p99 of 0.22
   (the online detector: 0.20). So 6 h of data (4.2 h of training span) suffice: about 1 h of regression, then
   95 min of ensemble warm-up and 95 min of calibration; at least 80 min of reference is needed
   (``min_reference_rows``).
4. **Evaluate** the candidate and the champion on exactly the same held-out rows. The champion is the detector
   a callable gives for a device (a loaded artifact's, already fitted), or for version 0 the built-in online
   detector warmed on the whole training span (all rows, as it would have run live). A fitted champion is first
   fed the training span after its own last sample (it would have seen those rows live). An alarm is an onset of
   an ``anomaly`` or ``sensor_stuck`` finding (data gaps are facts about the data, the same for every model);
   an episode already open at the split counts as an onset at the split, so neither model hides an alarm in
   its past. Per model: false alarms (onsets outside the padded confirmed windows) per asset-day of held-out
   data, onsets inside labelled false-alarm windows, recall and median delay on the confirmed faults in the
   held-out span (detected: an onset from ``pad_before_ms`` before the window's start to ``grace_ms`` after its
   end; the delay from the later of the window's start and the split), score quantiles (1.0 = threshold) and
   the share of scored rows above 1.0.
5. **Verdict**: ``better`` when the candidate detects at least the confirmed faults the champion detects, raises
   no more false alarms, and improves on one of them (fewer false alarms, more faults found, fewer onsets in
   false-alarm windows); otherwise ``not_better``, with the reasons.

``data_sha256`` is the sha256 over the devices' digests in device order, each the sha256 over the device id, its
timestamps' and its values' bytes (int64 / float64, little-endian) of the rows used (the window, capped).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from edgeloop.detect import AssetDetector, DetectorConfig, Finding, FindingKind, FindingPhase
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.scores import threshold_scores
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.errors import EdgeLoopError
from edgeloop.models import drift
from edgeloop.models.detector_artifact import PlatformDetector
from edgeloop.store.alerting import Label, Verdict

__all__ = ["DataSummary", "DetectorKind", "DeviceReference", "DeviceRows", "DeviceSeries", "ModelCard",
           "ModelMetrics", "ReferenceStats", "ScoreSummary", "TrainingConfig", "TrainingError", "TrainingResult",
           "Window", "evaluate", "make_detector", "merge_summaries", "newest_labels", "score_quantiles", "summarise",
           "train"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
DetectorKind = Literal["default", "univariate", "baseline"]
ProgressFn = Callable[[str, int, int], None]
DetectorFactory = Callable[[str, Sequence[str], int, int], PlatformDetector]

DAY_MS: Final = 86_400_000
QUANTILES: Final = (0.5, 0.9, 0.99, 0.999)
_GRID: Final = np.linspace(0.0, 1.0, 1001)
_BATCH: Final = 3600  # rows per process() call: bounded temporaries, the findings are the same for any split
_ALARM_KINDS: Final = frozenset({FindingKind.ANOMALY.value, FindingKind.SENSOR_STUCK.value})


class TrainingError(EdgeLoopError):
    """Training could not produce a model (no device with enough reference data, a bad window)."""


class TrainingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a profile's detector is trained and judged (module docstring); the defaults suit 1 Hz machines."""

    detector: DetectorKind = "default"  # the profile's detector
    period_ms: int = 1000
    holdout_fraction: float = 0.3  # the latest part of the window that evaluates, never trains
    pad_before_ms: int = 30 * 60_000  # cut out this much before a confirmed fault window ...
    pad_after_ms: int = 30 * 60_000  # ... and after it
    grace_ms: int = 30 * 60_000  # a fault counts as found by an onset up to this long after its window
    warmup_fraction: float = 0.25  # of the reference rows: the regression's warm-up ...
    min_warmup: int = 1200  # ... at least 20 min
    max_warmup: int = 14_400  # ... at most 4 h
    ensemble_fraction: float = 0.375  # of the reference rows: the ensemble's warm-up, and as many to calibrate
    min_ensemble: int = 1800  # ... at least 30 min
    max_ensemble: int = 28_800  # ... at most 8 h
    min_reference_rows: int = 4800  # 20 min + 2 x 30 min; a device with less is not trained (keeps the champion)
    max_rows_per_device: int = 7 * 86_400  # the newest rows of a device kept (7 days at 1 Hz): bounded memory
    bins: int = 10  # quantile bins per channel in the drift reference

    def __post_init__(self) -> None:
        if not 0 < self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in (0, 1)")
        if min(self.pad_before_ms, self.pad_after_ms, self.grace_ms) < 0 or self.period_ms <= 0:
            raise ValueError("pads and grace must be >= 0, period_ms > 0")
        if not (0 < self.warmup_fraction < 1 and 0 < self.ensemble_fraction < 0.5):
            raise ValueError("warmup_fraction must be in (0, 1), ensemble_fraction in (0, 0.5)")
        if self.warmup_fraction + 2 * self.ensemble_fraction > 1:
            raise ValueError("warmup_fraction + 2 * ensemble_fraction must be <= 1 (they share the reference)")
        if not (1 <= self.min_warmup <= self.max_warmup and 2 <= self.min_ensemble <= self.max_ensemble):
            raise ValueError("need 1 <= min_warmup <= max_warmup and 2 <= min_ensemble <= max_ensemble")
        if self.max_rows_per_device < 1 or self.min_reference_rows < 1 or self.bins < 1:
            raise ValueError("max_rows_per_device, min_reference_rows and bins must be >= 1")


@dataclass(frozen=True, slots=True)
class DeviceSeries:
    """One device's samples: ``ts`` (n,) int64 ms ascending, ``values`` (n, len(channels)) float64, NaN missing.
    ``asset`` lets a label without a device (an asset-level alert) apply to the asset's devices."""

    device: str
    ts: I64
    values: F64
    channels: tuple[str, ...]
    asset: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """A labelled interval of one device (inclusive ms)."""

    start_ms: int
    end_ms: int
    label_id: int


class ModelMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One model's figures on the held-out span (summed over devices, or of one device)."""

    rows_scored: int
    asset_days: float
    alarms: int  # anomaly / sensor_stuck onsets (an episode open at the split counts once)
    false_alarms: int  # onsets outside the padded confirmed windows
    false_alarms_per_asset_day: float
    false_alarm_window_onsets: int  # onsets inside windows labelled false alarm
    faults: int  # confirmed faults in the held-out span
    detected: int
    recall: float | None  # None: no confirmed fault to find
    median_delay_s: float | None
    score_quantiles: dict[str, float]  # "p50", "p90", "p99", "p99.9" of the held-out scores (1.0 = threshold)
    share_above_1: float


class DeviceRows(msgspec.Struct, frozen=True, kw_only=True):
    device: str
    rows: int  # in the window (after the cap)
    train_rows: int
    reference_rows: int  # train rows minus the cut-out fault windows
    cut_rows: int
    heldout_rows: int
    trained: bool
    regime_since_ms: int | None = None  # the device's regime began here: earlier rows were not learnt
    before_regime_rows: int = 0  # training rows before it (not in the reference)
    note: str = ""  # why a device was not trained


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """What a trained detector model is and how it compares with the champion on the same held-out data."""

    detector: str  # robust-ensemble-v2 | trained-baseline-v1 | ensemble-univariate-v1
    champion: str  # the champion's reference, or "built-in" (version 0)
    window_start_ms: int
    window_end_ms: int
    split_ms: int
    holdout_fraction: float
    pad_before_ms: int
    pad_after_ms: int
    grace_ms: int
    warmup_samples: dict[str, int]  # device -> regression warm-up rows used
    ensemble_warmup: dict[str, int]  # device -> ensemble warm-up (and calibration) rows used
    devices: list[DeviceRows]
    labels: dict[str, int]  # verdict -> newest labels used
    candidate_metrics: ModelMetrics
    champion_metrics: ModelMetrics
    per_device: dict[str, dict[str, ModelMetrics]]  # device -> {"candidate": ..., "champion": ...}
    verdict: Literal["better", "not_better"]
    reasons: list[str]


class DataSummary(msgspec.Struct, frozen=True, kw_only=True):
    window_start_ms: int
    window_end_ms: int
    devices: list[str]
    rows: int
    data_sha256: str


class DeviceReference(msgspec.Struct, frozen=True, kw_only=True):
    """What the drift monitor compares a device's live data against."""

    channels: list[str]
    bin_edges: list[list[float]]  # per channel: bins + 1 quantile edges of the reference ([] when no values)
    rows: int
    score_quantiles: dict[str, float]  # the trained model's held-out scores (its live scores should look so)
    share_above_1: float


class ReferenceStats(msgspec.Struct, frozen=True, kw_only=True):
    devices: dict[str, DeviceReference]


@dataclass(slots=True)
class TrainingResult:
    detectors: dict[str, PlatformDetector]
    card: ModelCard
    data: DataSummary
    reference: ReferenceStats
    label_ids: list[int] = field(default_factory=list)
    #: per device, what the drift monitor compares its live data against once this candidate scores it
    drift_references: dict[str, drift.ReferenceStats] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- labels

def newest_labels(labels: Sequence[Label], label_ids: Sequence[int] | None = None) -> list[tuple[int, Label]]:
    """The newest label per alert (by ``ts``, then by position), with its id (``label_ids[i]``, or the alert id
    when no ids are given), in alert order."""
    if label_ids is not None and len(label_ids) != len(labels):
        raise ValueError("label_ids must give one id per label")
    best: dict[int, tuple[int, int, Label]] = {}
    for i, label in enumerate(labels):
        lid = label_ids[i] if label_ids is not None else label.alert
        cur = best.get(label.alert)
        if cur is None or (label.ts, i) >= (cur[2].ts, cur[0]):
            best[label.alert] = (i, lid, label)
    return [(lid, label) for _, lid, label in (best[a] for a in sorted(best))]


def _applies(label: Label, series: DeviceSeries) -> bool:
    return label.device == series.device or (not label.device and bool(series.asset) and label.asset == series.asset)


# ---------------------------------------------------------------------------------------------------- metrics

@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """A device's held-out scores in bounded form: their quantiles at every 0.1 % (1 001 values), how many there
    were and how many were above 1.0. Held-out scores of a week of 1 Hz data are 180 000 values per device and
    model; a fleet's would not fit, its summaries do. Quantiles merged over devices (:func:`merge_summaries`)
    are exact for one device and within 0.1 % of rank for many."""

    grid: F64
    count: int
    above: int


def summarise(scores: F64) -> ScoreSummary:
    s = scores[np.isfinite(scores)]
    grid = np.quantile(s, _GRID) if s.size else np.zeros(0)
    return ScoreSummary(grid=grid, count=int(s.size), above=int((s > 1.0).sum()))


def merge_summaries(parts: Sequence[ScoreSummary]) -> tuple[dict[str, float], float, int]:
    """The quantiles p50, p90, p99, p99.9 over all the summarised scores, the share above 1.0 and the count
    (zeros when there are none): each device's grid points weigh its count."""
    used = [p for p in parts if p.count]
    total = sum(p.count for p in used)
    if not total:
        return {_qname(q): 0.0 for q in QUANTILES}, 0.0, 0
    if len(used) == 1:
        qs = np.interp(QUANTILES, _GRID, used[0].grid)
    else:
        values = np.concatenate([p.grid for p in used])
        weights = np.concatenate([np.full(p.grid.size, p.count / p.grid.size) for p in used])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        cdf = (np.cumsum(weights) - weights / 2) / weights.sum()
        qs = np.interp(QUANTILES, cdf, values)
    quantiles = {_qname(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)}
    return quantiles, sum(p.above for p in used) / total, total


def score_quantiles(scores: F64) -> tuple[dict[str, float], float]:
    """The quantiles p50, p90, p99, p99.9 of the finite scores, and the share above 1.0 (zeros when none)."""
    quantiles, above, _ = merge_summaries([summarise(scores)])
    return quantiles, above


def _qname(q: float) -> str:
    return f"p{q * 100:g}"


@dataclass(slots=True)
class _Run:
    """What one model did on one device's held-out rows."""

    onsets: list[int]
    scores: ScoreSummary
    days: float
    raw: F64  # the score of each held-out row (1.0 = threshold, NaN: not scored)


def _onsets(findings: Iterable[Finding]) -> list[int]:
    return [f.ts for f in findings if f.kind in _ALARM_KINDS and f.phase is FindingPhase.ONSET]


def _alarm_open(det: PlatformDetector) -> bool:
    if isinstance(det, AssetDetector):
        return det.anomaly_active
    if isinstance(det, TrainedBaselineDetector):
        return bool(det.last_labels.size and det.last_labels[-1])
    return False


def _feed(det: PlatformDetector, ts: I64, x: F64) -> list[Finding]:
    out: list[Finding] = []
    for lo in range(0, ts.size, _BATCH):
        out += det.process(ts[lo:lo + _BATCH], x[lo:lo + _BATCH])
    return out


def _run_heldout(det: PlatformDetector, ts: I64, x: F64, split_ms: int, end_ms: int) -> _Run:
    onsets = [split_ms] if _alarm_open(det) else []
    parts: list[F64] = []
    for lo in range(0, ts.size, _BATCH):
        found = det.process(ts[lo:lo + _BATCH], x[lo:lo + _BATCH])
        onsets += _onsets(found)
        parts.append(threshold_scores(det, min(_BATCH, ts.size - lo)))
    raw = np.concatenate(parts) if parts else np.zeros(0)
    return _Run(onsets=onsets, scores=summarise(raw), days=max(end_ms - split_ms, 0) / DAY_MS, raw=raw)


def evaluate(runs: Sequence[tuple[Sequence[int], ScoreSummary, float]], faults: Sequence[Sequence[Window]],
             false_alarm_windows: Sequence[Sequence[Window]], *, split_ms: int, pad_before_ms: int,
             pad_after_ms: int, grace_ms: int) -> ModelMetrics:
    """A model's figures from its runs (per device: alarm onset times, held-out scores, asset-days) and each
    device's confirmed fault windows and false-alarm windows (see the module docstring, step 4)."""
    alarms = false_alarms = fa_onsets = n_faults = detected = rows = 0
    days = 0.0
    delays: list[float] = []
    all_scores: list[ScoreSummary] = []
    for (onsets, scores, d), fw, faw in zip(runs, faults, false_alarm_windows, strict=True):
        days += d
        all_scores.append(scores)
        for t in onsets:
            alarms += 1
            if not any(w.start_ms - pad_before_ms <= t <= w.end_ms + pad_after_ms for w in fw):
                false_alarms += 1
            if any(w.start_ms <= t <= w.end_ms for w in faw):
                fa_onsets += 1
        for w in fw:
            if w.end_ms < split_ms:
                continue  # not in the held-out span
            n_faults += 1
            hits = [t for t in onsets if w.start_ms - pad_before_ms <= t <= w.end_ms + grace_ms]
            if hits:
                detected += 1
                delays.append(max(0.0, (min(hits) - max(w.start_ms, split_ms)) / 1000.0))
    quantiles, above, rows = merge_summaries(all_scores)
    return ModelMetrics(
        rows_scored=rows, asset_days=days, alarms=alarms, false_alarms=false_alarms,
        false_alarms_per_asset_day=false_alarms / days if days > 0 else 0.0,
        false_alarm_window_onsets=fa_onsets, faults=n_faults, detected=detected,
        recall=detected / n_faults if n_faults else None,
        median_delay_s=float(statistics.median(delays)) if delays else None,
        score_quantiles=quantiles, share_above_1=above)


def _verdict(cand: ModelMetrics, champ: ModelMetrics) -> tuple[Literal["better", "not_better"], list[str]]:
    reasons: list[str] = []
    ok = True
    if cand.faults == 0:
        reasons.append("no confirmed fault in the held-out span: recall not compared")
    elif cand.detected < champ.detected:
        ok = False
        reasons.append(f"loses recall: finds {cand.detected} of {cand.faults} confirmed faults, the champion "
                       f"{champ.detected}")
    else:
        reasons.append(f"keeps recall: finds {cand.detected} of {cand.faults} confirmed faults (champion "
                       f"{champ.detected})")
    if cand.false_alarms > champ.false_alarms:
        ok = False
        reasons.append(f"raises false alarms: {cand.false_alarms} against the champion's {champ.false_alarms} "
                       f"({cand.false_alarms_per_asset_day:.2f} vs {champ.false_alarms_per_asset_day:.2f} per "
                       "asset-day)")
    else:
        reasons.append(f"false alarms {cand.false_alarms} against the champion's {champ.false_alarms} "
                       f"({cand.false_alarms_per_asset_day:.2f} vs {champ.false_alarms_per_asset_day:.2f} per "
                       "asset-day)")
    improves = (cand.false_alarms < champ.false_alarms or cand.detected > champ.detected
                or cand.false_alarm_window_onsets < champ.false_alarm_window_onsets)
    if ok and not improves:
        reasons.append("no improvement over the champion on the held-out span")
    return ("better" if ok and improves else "not_better"), reasons


# ---------------------------------------------------------------------------------------------------- fitting

def _sizes(cfg: TrainingConfig, reference_rows: int) -> tuple[int, int]:
    warm = min(max(round(cfg.warmup_fraction * reference_rows), cfg.min_warmup), cfg.max_warmup)
    ens = min(max(round(cfg.ensemble_fraction * reference_rows), cfg.min_ensemble), cfg.max_ensemble)
    return warm, ens


def make_detector(kind: DetectorKind, channels: Sequence[str], period_ms: int, *, warmup: int | None = None,
                  ensemble_warmup: int | None = None, config: DetectorConfig | None = None) -> PlatformDetector:
    """A fresh detector of the profile's kind (``warmup``/``ensemble_warmup`` None: the online defaults)."""
    if kind == "univariate":
        return UnivariateStreamDetector(channels=channels)
    if kind == "baseline":
        return TrainedBaselineDetector(channels=channels) if warmup is None else \
            TrainedBaselineDetector(channels=channels, train_rows=warmup)
    cfg = config if config is not None else DetectorConfig()
    if warmup is not None:
        cfg = replace(cfg, warmup_samples=warmup)
    if ensemble_warmup is not None:
        cfg = replace(cfg, ensemble_warmup=ensemble_warmup)
    return AssetDetector(channels=channels, period_ms=period_ms, config=cfg)


def _padded_mask(ts: I64, windows: Sequence[Window], before: int, after: int) -> npt.NDArray[np.bool_]:
    cut = np.zeros(ts.size, dtype=bool)
    for w in windows:
        lo = int(np.searchsorted(ts, w.start_ms - before, side="left"))
        hi = int(np.searchsorted(ts, w.end_ms + after, side="right"))
        cut[lo:hi] = True
    return cut


def _bin_edges(values: F64, bins: int) -> list[list[float]]:
    out: list[list[float]] = []
    for j in range(values.shape[1]):
        col = values[:, j]
        col = col[np.isfinite(col)]
        out.append([float(v) for v in np.quantile(col, np.linspace(0, 1, bins + 1))] if col.size else [])
    return out


def train(series: Iterable[DeviceSeries], labels: Sequence[Label], *, window_start_ms: int, window_end_ms: int,
          config: TrainingConfig | None = None, label_ids: Sequence[int] | None = None,
          champion: Callable[[str], PlatformDetector | None] | None = None, champion_ref: str = "built-in",
          detector_config: DetectorConfig | None = None, factory: DetectorFactory | None = None,
          progress: ProgressFn | None = None, total_devices: int = 0,
          regime_since: Mapping[str, int] | None = None) -> TrainingResult:
    """Train a candidate from ``series`` (one device at a time) and ``labels``; judge it against the champion.

    ``champion(device)`` gives the champion's fitted detector for a device (a fresh one per call: it is advanced
    through the window), or None for the built-in online detector (version 0), which is warmed on the training
    span. ``factory(device,
    channels, warmup, ensemble_warmup)`` builds the candidate's fresh detector (default: the config's kind, with
    ``detector_config``). ``progress(stage, done, total)`` is told after each device (``total_devices`` if the
    iterable's length is not known). ``regime_since`` maps a device to when its current regime began (a drift
    event's ``since``: a new product run, a recalibrated sensor): its training rows before then are left out of
    its reference, as the machine no longer behaves so; the held-out span and the other devices are unchanged.
    Raises :class:`TrainingError` when no device could be trained.
    """
    cfg = config if config is not None else TrainingConfig()
    if window_end_ms <= window_start_ms:
        raise TrainingError(f"empty training window: {window_start_ms} .. {window_end_ms}")
    split_ms = window_start_ms + math.ceil((1 - cfg.holdout_fraction) * (window_end_ms - window_start_ms))
    newest = newest_labels(labels, label_ids)

    def judge(runs: Sequence[tuple[Sequence[int], ScoreSummary, float]], faults: Sequence[Sequence[Window]],
              fas: Sequence[Sequence[Window]]) -> ModelMetrics:
        return evaluate(runs, faults, fas, split_ms=split_ms, pad_before_ms=cfg.pad_before_ms,
                        pad_after_ms=cfg.pad_after_ms, grace_ms=cfg.grace_ms)

    def build(device: str, channels: Sequence[str], warm: int, ens: int) -> PlatformDetector:
        if factory is not None:
            return factory(device, channels, warm, ens)
        return make_detector(cfg.detector, channels, cfg.period_ms, warmup=warm, ensemble_warmup=ens,
                             config=detector_config)

    detectors: dict[str, PlatformDetector] = {}
    rows_info: list[DeviceRows] = []
    warmups: dict[str, int] = {}
    ens_warmups: dict[str, int] = {}
    refs: dict[str, DeviceReference] = {}
    drift_refs: dict[str, drift.ReferenceStats] = {}
    cand_runs: list[tuple[Sequence[int], ScoreSummary, float]] = []
    champ_runs: list[tuple[Sequence[int], ScoreSummary, float]] = []
    dev_faults: list[list[Window]] = []
    dev_fas: list[list[Window]] = []
    per_device: dict[str, dict[str, ModelMetrics]] = {}
    digests: dict[str, str] = {}
    used_labels: dict[int, Label] = {}
    detector_name = ""
    total_rows = 0
    done = 0
    for s in series:
        done += 1
        ts_all = np.asarray(s.ts, dtype=np.int64)
        x_all = np.asarray(s.values, dtype=np.float64).reshape(ts_all.size, len(s.channels))
        if ts_all.size > 1 and not (np.diff(ts_all) >= 0).all():
            order = np.argsort(ts_all, kind="stable")
            ts_all, x_all = ts_all[order], x_all[order]
        lo = int(np.searchsorted(ts_all, window_start_ms, side="left"))
        hi = int(np.searchsorted(ts_all, window_end_ms, side="right"))
        lo = max(lo, hi - cfg.max_rows_per_device)  # the newest rows: bounded memory and time
        ts, x = ts_all[lo:hi], x_all[lo:hi]  # views: no copy of the device's data
        h = hashlib.sha256(s.device.encode())
        h.update(np.ascontiguousarray(ts, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
        digests[s.device] = h.hexdigest()
        total_rows += int(ts.size)
        faults: list[Window] = []
        fas: list[Window] = []
        for lid, label in newest:
            if not _applies(label, s) or label.end_ms < window_start_ms or label.start_ms > window_end_ms:
                continue
            used_labels[lid] = label
            w = Window(label.start_ms, label.end_ms, lid)
            (fas if label.verdict == Verdict.FALSE_ALARM else faults).append(w)
        k = int(np.searchsorted(ts, split_ms, side="left"))  # rows [0, k) train, [k, n) are held out
        train_rows = np.arange(ts.size) < k
        cut = _padded_mask(ts, faults, cfg.pad_before_ms, cfg.pad_after_ms) & train_rows
        ref = train_rows & ~cut
        since = regime_since.get(s.device) if regime_since is not None else None
        before = int(np.searchsorted(ts, since, side="left")) if since is not None else 0
        n_before = int(ref[:before].sum())
        ref[:before] = False
        n_ref = int(ref.sum())
        held = ~train_rows
        info = DeviceRows(device=s.device, rows=int(ts.size), train_rows=int(train_rows.sum()),
                          reference_rows=n_ref, cut_rows=int(cut.sum()), heldout_rows=int(held.sum()), trained=False,
                          regime_since_ms=since, before_regime_rows=n_before)
        if n_ref < cfg.min_reference_rows or not held.any():
            note = (f"only {n_ref} reference rows (need {cfg.min_reference_rows})" if n_ref < cfg.min_reference_rows
                    else "no held-out rows")
            rows_info.append(msgspec.structs.replace(info, note=note))
            if progress is not None:
                progress("devices", done, max(total_devices, done))
            continue
        warm, ens = _sizes(cfg, n_ref)
        cand = build(s.device, s.channels, warm, ens)
        detector_name = cand.name
        x_ref = x[ref]
        _feed(cand, ts[ref], x_ref)
        edges = _bin_edges(x_ref, cfg.bins)
        inputs = _drift_reference(ts[ref], x_ref, s.channels)
        del x_ref  # one device's copy at a time
        fitted = champion(s.device) if champion is not None else None
        champ = fitted if fitted is not None else make_detector(cfg.detector, s.channels, cfg.period_ms,
                                                                config=detector_config)
        _feed(champ, ts[:k], x[:k])
        cand_run = _run_heldout(cand, ts[k:], x[k:], split_ms, window_end_ms)
        champ_run = _run_heldout(champ, ts[k:], x[k:], split_ms, window_end_ms)
        drift_refs[s.device] = _with_scores(inputs, ts[k:], cand_run.raw)
        # the candidate as it stands at the end of the held-out span is what is deployed: it has seen (scored,
        # then learnt from) every row of the window after its training rows, as a live detector would have
        detectors[s.device] = cand
        warmups[s.device], ens_warmups[s.device] = warm, ens
        rows_info.append(msgspec.structs.replace(info, trained=True))
        c_tuple = (cand_run.onsets, cand_run.scores, cand_run.days)
        p_tuple = (champ_run.onsets, champ_run.scores, champ_run.days)
        per_device[s.device] = {"candidate": judge([c_tuple], [faults], [fas]),
                                "champion": judge([p_tuple], [faults], [fas])}
        cand_runs.append(c_tuple)
        champ_runs.append(p_tuple)
        dev_faults.append(faults)
        dev_fas.append(fas)
        q, above, _ = merge_summaries([cand_run.scores])
        refs[s.device] = DeviceReference(channels=list(s.channels), bin_edges=edges,
                                         rows=n_ref, score_quantiles=q, share_above_1=above)
        if progress is not None:
            progress("devices", done, max(total_devices, done))
    if not detectors:
        notes = "; ".join(f"{r.device}: {r.note}" for r in rows_info) or "no devices"
        raise TrainingError(f"no device could be trained ({notes})")
    cand_m = judge(cand_runs, dev_faults, dev_fas)
    champ_m = judge(champ_runs, dev_faults, dev_fas)
    verdict, reasons = _verdict(cand_m, champ_m)
    counts: dict[str, int] = {}
    for label in used_labels.values():
        counts[label.verdict.value] = counts.get(label.verdict.value, 0) + 1
    card = ModelCard(
        detector=detector_name, champion=champion_ref, window_start_ms=window_start_ms,
        window_end_ms=window_end_ms, split_ms=split_ms, holdout_fraction=cfg.holdout_fraction,
        pad_before_ms=cfg.pad_before_ms, pad_after_ms=cfg.pad_after_ms, grace_ms=cfg.grace_ms,
        warmup_samples=dict(sorted(warmups.items())), ensemble_warmup=dict(sorted(ens_warmups.items())),
        devices=sorted(rows_info, key=lambda r: r.device), labels=dict(sorted(counts.items())),
        candidate_metrics=cand_m, champion_metrics=champ_m, per_device=dict(sorted(per_device.items())),
        verdict=verdict, reasons=reasons)
    h = hashlib.sha256()
    for device in sorted(digests):
        h.update(device.encode() + b"\0" + digests[device].encode())
    data = DataSummary(window_start_ms=window_start_ms, window_end_ms=window_end_ms, devices=sorted(digests),
                       rows=total_rows, data_sha256=h.hexdigest())
    return TrainingResult(detectors=dict(sorted(detectors.items())), card=card, data=data,
                          reference=ReferenceStats(devices=dict(sorted(refs.items()))),
                          label_ids=sorted(used_labels), drift_references=dict(sorted(drift_refs.items())))


_DRIFT_ROWS: Final = 20_000  # rows a drift reference is computed from (evenly thinned beyond that)


def _thinned(ts: I64) -> npt.NDArray[np.intp] | slice:
    """The rows a drift reference is computed from: all, or ``_DRIFT_ROWS`` evenly spread."""
    return np.linspace(0, ts.size - 1, _DRIFT_ROWS).astype(np.intp) if ts.size > _DRIFT_ROWS else slice(None)


def _drift_reference(ts: I64, x: F64, channels: Sequence[str]) -> drift.ReferenceStats:
    """The drift monitor's reference of a device's training rows (with the limits its own windows set)."""
    pick = _thinned(ts)
    return drift.reference_from(x[pick], list(channels), ts=ts[pick])


def _with_scores(inputs: drift.ReferenceStats, ts: I64, scores: F64) -> drift.ReferenceStats:
    """``inputs`` with the score part of the reference: the candidate's scores on the held-out rows at ``ts``,
    where it runs as it will live (its ensemble calibrated; on its training rows it was still warming up), with
    the limit its own windows there set. Unchanged when no held-out row was scored."""
    if scores.shape != ts.shape or not np.isfinite(scores).any():
        return inputs
    pick = _thinned(ts)
    held = drift.reference_from(np.zeros((scores[pick].size, 0)), [], ts=ts[pick], scores=scores[pick])
    return msgspec.structs.replace(inputs, score_quantiles=held.score_quantiles,
                                   score_fractions=held.score_fractions, score_limit=held.score_limit)
