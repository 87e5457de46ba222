"""Anomaly detection on SKAB's water-pump runs (pure code, no I/O): features, a registered detector, alarms.

SKAB's protocol: in each run the first ``train_rows`` (400) rows are normal training data, the rest is the test.
Everything here is streaming: the label of a test row depends only on that row, the rows before it and the
training part of its run.

1. **Features.** The hydraulic operating point of the pump: ``Current`` (the motor's load), ``Pressure`` and
   ``Volume Flow RateRMS`` -- what a valve, a leak or cavitation changes first. Each is smoothed by a time-aware
   EWMA with a ``tau_s`` (3 s) time constant: the raw 1 Hz readings are quantised and noisy (the flow meter
   reads 32.0 with single-step jumps, pressure sits on a few levels), and a fault in SKAB lasts minutes, so a few
   seconds of smoothing cut the noise without delaying a detection past SKAB's +-15 s change-point windows.
   Vibration RMS, voltage and the two temperatures are left out by default: on SKAB's fault-free run vibration
   and the temperatures wander by 3-10 training standard deviations within an hour (the rig warming up) and the
   voltage is the mains supply, so from a 400 s training part they cannot tell a fault from drift. A missing
   reading holds the smoothed value; a channel is missing (NaN) until its first reading.
2. **Score.** The detector (default ``mahalanobis``) warms up on the training rows' features and scores every
   test row, score first then learn.
3. **Threshold.** The largest score of the training rows (``quantile`` 1.0) -- scored in-sample by a copy of the
   warmed-up detector, leaving out the first ``burn_rows`` while the EWMAs settle -- times ``margin`` (1.0): normal
   operation as seen in training does not alarm, and no tail model is fitted to 370 autocorrelated rows.
4. **Alarm.** A latch with hysteresis: raised after ``on_rows`` (3) consecutive rows above the threshold, cleared
   after ``off_rows`` (1) rows below ``release`` (0.35) times it. The three-row confirmation drops single-row
   spikes; the low release level keeps one alarm per fault instead of a flicker, which SKAB's change-point score
   charges for (every switch of the labels is a predicted change point).

The point labels are the alarm state (training rows are 0). :func:`evaluate` scores runs with SKAB's metrics
(:mod:`edgeloop.detect.skab_metrics`) over their test parts.

How the defaults were chosen: the channels and the smoothing from the physics above and SKAB's fault-free run;
``tau_s``, ``quantile``, ``margin``, ``release`` and ``on_rows``/``off_rows`` by a small grid (3 x 2 x 3 x 4 x 3 x
2) on the even-numbered half of the 16 ``valve1`` runs (in path order), then checked on the other half:

=================  =====  =====  =====  ====================================
runs               F1     FAR    MAR    change-point NAB std / low FP / low FN
=================  =====  =====  =====  ====================================
tuning half (8)    0.888  1.3 %  19.2 %  34.1 / 32.1 / 40.0
held-out half (8)  0.867  11.8 % 15.8 %  14.1 / 10.4 / 16.7
all 16             0.877  6.5 %  17.5 %  24.0 / 21.1 / 28.1
=================  =====  =====  =====  ====================================

The point metrics carry over; the change-point score does not (it turns on whether an alarm starts and ends
within +-15 s of a labelled change point, and half of SKAB's change points are inside a fault, where an
alarm does not switch), so it is reported, not tuned for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.detect._numeric import F64, ewma
from edgeloop.detect.nab import ProfileScore
from edgeloop.detect.registry import make
from edgeloop.detect.skab_data import CHANNELS, SkabRun
from edgeloop.detect.skab_metrics import (
    ChangepointRun,
    PointCounts,
    nab_changepoints,
    point_counts,
    predicted_changepoints,
)

__all__ = ["RunResult", "SkabConfig", "SkabReport", "detect_run", "evaluate", "features", "latch"]

Int8 = npt.NDArray[np.int8]


@dataclass(frozen=True)
class SkabConfig:
    """The pipeline's parameters (see the module docstring for why each default)."""

    train_rows: int = 400
    channels: tuple[str, ...] = ("Current", "Pressure", "Volume Flow RateRMS")
    tau_s: float = 3.0
    detector: str = "mahalanobis"
    detector_params: Mapping[str, Any] = field(default_factory=dict)
    burn_rows: int = 30
    quantile: float = 1.0
    margin: float = 1.0
    release: float = 0.35
    on_rows: int = 3
    off_rows: int = 1

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels:
            raise ValueError(f"SkabConfig.channels must be a non-empty subset of {CHANNELS}, got {unknown}")
        if self.train_rows < 2 or not 0 <= self.burn_rows < self.train_rows - 1:
            raise ValueError("SkabConfig: need train_rows >= 2 and 0 <= burn_rows < train_rows - 1")
        if self.tau_s <= 0 or self.margin <= 0 or not 0 < self.quantile <= 1 or not 0 < self.release <= 1:
            raise ValueError("SkabConfig: need tau_s > 0, margin > 0, 0 < quantile <= 1, 0 < release <= 1")
        if self.on_rows < 1 or self.off_rows < 1:
            raise ValueError("SkabConfig: need on_rows >= 1 and off_rows >= 1")


def features(x: F64, seconds: F64, channels: Sequence[str], tau_s: float) -> F64:
    """Time-aware EWMAs (time constant ``tau_s``) of the chosen ``channels`` of SKAB rows ``x`` (n, 8) at
    ``seconds``; a missing reading holds the average, and a channel is NaN until its first reading."""
    cols = [CHANNELS.index(c) for c in channels]
    u = x[:, cols]
    valid = np.isfinite(u)
    if u.shape[0] == 0:
        return u.copy()
    dt = np.diff(seconds, prepend=seconds[0])
    first = np.argmax(valid, axis=0)
    y0 = np.where(valid.any(axis=0), u[first, np.arange(u.shape[1])], 0.0)
    out = ewma(np.where(valid, u, 0.0), valid, -np.maximum(dt, 0.0) / tau_s, y0)
    started = np.maximum.accumulate(valid, axis=0)
    res: F64 = np.where(started, out, np.nan)
    return res


def latch(scores: F64, threshold: float, release: float, on_rows: int, off_rows: int) -> Int8:
    """Alarm labels of ``scores`` in order: raised after ``on_rows`` consecutive scores above ``threshold``,
    cleared after ``off_rows`` consecutive scores below ``release * threshold`` (each label uses the past only)."""
    labels = np.zeros(scores.shape[0], dtype=np.int8)
    state, above, below = 0, 0, 0
    low = release * threshold
    for i, s in enumerate(scores.tolist()):
        above = above + 1 if s > threshold else 0
        below = below + 1 if s < low else 0
        if not state and above >= on_rows:
            state = 1
        elif state and below >= off_rows:
            state = 0
        labels[i] = state
    return labels


@dataclass(frozen=True)
class RunResult:
    """One run through the pipeline: per-row scores and 0/1 labels (training rows score and label 0)."""

    name: str
    scores: F64
    labels: Int8
    threshold: float


def _seconds(run: SkabRun) -> F64:
    s: F64 = (run.timestamps - run.timestamps[0]).astype("timedelta64[s]").astype(np.float64)
    return s


def detect_run(run: SkabRun, config: SkabConfig | None = None) -> RunResult:
    """Scores and alarm labels of one run (see the module docstring)."""
    cfg = config if config is not None else SkabConfig()
    n_train = min(cfg.train_rows, run.x.shape[0])
    f = features(run.x, _seconds(run), cfg.channels, cfg.tau_s)
    det = make(cfg.detector, f.shape[1], warmup=n_train, **dict(cfg.detector_params))
    scores = np.zeros(f.shape[0])
    det.score_learn_many(f[:n_train])
    calib = copy.deepcopy(det).score_learn_many(f[min(cfg.burn_rows, n_train - 1):n_train])
    level = float(np.quantile(calib, cfg.quantile)) if calib.size else 0.0
    threshold = max(level * cfg.margin, 1e-12)
    scores[n_train:] = det.score_learn_many(f[n_train:])
    labels = np.zeros(f.shape[0], dtype=np.int8)
    labels[n_train:] = latch(scores[n_train:], threshold, cfg.release, cfg.on_rows, cfg.off_rows)
    return RunResult(name=run.name, scores=scores, labels=labels, threshold=threshold)


@dataclass(frozen=True)
class SkabReport:
    """SKAB's metrics over the test parts of a set of runs."""

    runs: int
    counts: PointCounts
    windows: int
    nab: dict[str, ProfileScore]

    def nab_score(self, profile: str) -> float:
        """The normalised change-point NAB score of ``profile`` (0 = detect nothing, 100 = perfect)."""
        return self.nab[profile].normalized if self.windows else math.nan


def evaluate(runs: Sequence[SkabRun], config: SkabConfig | None = None,
             progress: Callable[[str], None] | None = None) -> SkabReport:
    """Run the pipeline on every run and score the test parts (``progress`` is told each run's name)."""
    cfg = config if config is not None else SkabConfig()
    counts = PointCounts(0, 0, 0, 0)
    cps: list[ChangepointRun] = []
    for run in runs:
        if progress is not None:
            progress(run.name)
        result = detect_run(run, cfg)
        t = slice(min(cfg.train_rows, run.x.shape[0]), None)
        counts = counts + point_counts(run.anomaly[t], result.labels[t])
        cps.append(ChangepointRun(seconds=_seconds(run)[t], true_cp=run.changepoint[t] == 1,
                                  predicted_cp=predicted_changepoints(result.labels[t])))
    windows = sum(int(c.true_cp.sum()) for c in cps)
    return SkabReport(runs=len(runs), counts=counts, windows=windows, nab=nab_changepoints(cps))
