"""Anomaly and change detection on SKAB's water-pump runs (pure code, no I/O): the evaluation of the platform's
``baseline`` detector.

SKAB's protocol: in each run the first ``train_rows`` (400) rows are normal training data, the rest is the test.
The pipeline below *is* the platform detector :class:`~edgeloop.detect.baseline.TrainedBaselineDetector` (what a
device profile with ``detector: baseline`` runs): :func:`detect_run` streams each run through one, built with
:class:`SkabConfig`'s settings by :func:`baseline_detector`; there is no benchmark-only code path. Everything is
streaming: a test row's labels depend only on that row, the rows before it and the training part of its run.
SKAB poses two problems over the same runs -- which *points* are anomalous (F1, FAR, MAR) and where the *changes*
are (a NAB score on change points) -- and the pipeline answers each with its own alarm over the same channels and
the same registered detector:

1. **Channels.** The hydraulic operating point of the pump: ``Current`` (the motor's load), ``Pressure`` and
   ``Volume Flow RateRMS`` -- what a valve, a leak or cavitation changes first (the detector's
   ``scored_channels``; in the platform it scores all of a profile's channels unless told otherwise). Vibration
   RMS, voltage and the two temperatures are left out by default: on SKAB's fault-free run vibration and the
   temperatures wander by 3-10 training standard deviations within an hour (the rig warming up) and the voltage
   is the mains supply, so from a 400 s training part they cannot tell a fault from drift. A missing reading
   holds the smoothed value; a channel is missing (NaN) until its first reading.
2. **Level features** (the anomaly alarm): each channel's time-aware EWMA with a ``tau_s`` (3 s) time constant. The
   raw 1 Hz readings are quantised and noisy (the flow meter reads 32.0 with single-step jumps, pressure sits on a
   few levels) and a SKAB fault lasts minutes, so a few seconds of smoothing cut the noise at little delay.
3. **Trend features** (the change alarm): each channel's fast EWMA minus its ``trend_tau_s`` (10 s) EWMA, a rate of
   change over about ten seconds. SKAB's faults are switched on and off by ramps of about a minute (a valve
   closing, then opening); the trend is non-zero while a ramp runs and back to noise once the level is steady, so
   its alarm rises when a change starts and clears when it is over.
4. **Scores.** One detector per alarm (default ``mahalanobis``) warms up on the training rows' features and scores
   every test row, score first then learn. For ``mahalanobis`` each level's spread is floored at 0.5 % of the
   level (``rel_floor``; the trends sit at zero, so it does not touch them): on SKAB's fault-free run the flow
   level wanders by about that much within an hour with no fault, more than a 400 s training part shows (current
   and pressure are so noisy at 1 Hz that the floor changes nothing for them). Without the floor the anomaly
   alarm flags 13 % of the fault-free run's test rows (in 1150-row pieces cut like SKAB runs), with it 4 %.
5. **Thresholds.** The largest score of the training rows -- scored in-sample by a copy of the warmed-up detector,
   leaving out the first ``burn_rows`` while the EWMAs settle (``quantile`` 1.0) -- times a margin: ``margin``
   (1.0) for the anomaly alarm (normal operation as seen in training does not alarm; no tail model is fitted to 370
   autocorrelated rows), ``change_margin`` (0.8) for the change alarm.
6. **Alarms.** A latch with hysteresis: raised after ``on_rows`` (3) consecutive rows above the threshold, cleared
   after ``off_rows`` (1) rows below ``release`` (0.35) times it (``change_release`` 0.2 for the change alarm). The
   three-row confirmation drops single-row spikes; the low release level keeps one alarm per episode instead of a
   flicker.

The point labels are the anomaly alarm's state; the predicted change points are the switches of the change alarm
(SKAB's convention: where a label series switches). Training rows are labelled 0. :func:`evaluate` scores runs
with SKAB's metrics (:mod:`edgeloop.evaluation.skab_metrics`) over their test parts, and also reports the change-point
score of the anomaly alarm's own switches, the figure SKAB's baselines report (they derive both from one label
series).

How the defaults were chosen: the channels, the smoothing and the level floor from the physics above and SKAB's
fault-free run; the thresholds and latches by small grids on the even-numbered half of the 16 ``valve1`` runs (in
path order): ``tau_s`` x ``quantile`` x ``margin`` x ``release`` x ``on_rows`` x ``off_rows`` (3 x 2 x 3 x 4 x 3 x
2) for the anomaly alarm, ``trend_tau_s`` x fast time constant x ``change_margin`` x ``change_release`` x
``change_on_rows`` (3 x 2 x 3 x 4 x 2) for the change alarm, then checked on the other half
(``edgeloop eval skab --data DIR`` on a folder holding either half):

=================  =====  ======  ======  ===================  ===================
runs               F1     FAR     MAR     NAB, change alarm    NAB, anomaly alarm
                                          std / lowFP / lowFN  std / lowFP / lowFN
=================  =====  ======  ======  ===================  ===================
tuning half (8)    0.862  1.2 %   23.4 %  36.5 / 32.1 / 43.7   32.2 / 30.5 / 37.6
held-out half (8)  0.865  11.6 %  16.4 %  38.2 / 33.0 / 46.3   16.7 / 13.1 / 19.5
all 16             0.864  6.4 %   19.8 %  37.4 / 32.6 / 45.0   24.3 / 21.6 / 28.4
=================  =====  ======  ======  ===================  ===================

The point metrics carry over to the held-out half (FAR moves with which runs drift), and so does the change
alarm's score; the anomaly alarm's switches do not make a change-point detector (whether an alarm starts and ends
within +-15 s of a labelled change point is luck, and half of SKAB's change points lie inside a fault, where it
does not switch). Choosing the change alarm on the other half instead (``trend_tau_s`` 20, fast 2 s, margin 1.0,
release 0.5, one row) scores 33.5 on the tuning half. All of this is one valve on one rig: SKAB's other folders
(``valve2``, ``other``) hold other faults, which these figures do not cover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.detect.baseline import MAHALANOBIS_PARAMS, Latch, TrainedBaselineDetector
from edgeloop.detect.protocol import F64
from edgeloop.evaluation.nab import ProfileScore
from edgeloop.evaluation.skab_data import CHANNELS, SkabRun
from edgeloop.evaluation.skab_metrics import (
    ChangepointRun,
    PointCounts,
    nab_changepoints,
    point_counts,
    predicted_changepoints,
)

__all__ = ["Alarm", "RunResult", "SkabConfig", "SkabReport", "baseline_detector", "detect_run", "evaluate",
           "latch"]

Int8 = npt.NDArray[np.int8]


@dataclass(frozen=True)
class SkabConfig:
    """The pipeline's parameters (see the module docstring for why each default)."""

    train_rows: int = 400
    channels: tuple[str, ...] = ("Current", "Pressure", "Volume Flow RateRMS")
    tau_s: float = 3.0
    detector: str = "mahalanobis"
    detector_params: Mapping[str, Any] | None = None  # None: MAHALANOBIS_PARAMS for mahalanobis, else {}
    burn_rows: int = 30
    quantile: float = 1.0
    margin: float = 1.0
    release: float = 0.35
    on_rows: int = 3
    off_rows: int = 1
    trend_tau_s: float = 10.0
    change_margin: float = 0.8
    change_release: float = 0.2
    change_on_rows: int = 3
    change_off_rows: int = 1

    def params(self) -> dict[str, Any]:
        """The detector's parameters: ``detector_params``, or the pipeline's defaults for its detector."""
        if self.detector_params is not None:
            return dict(self.detector_params)
        return dict(MAHALANOBIS_PARAMS) if self.detector == "mahalanobis" else {}

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels:
            raise ValueError(f"SkabConfig.channels must be a non-empty subset of {CHANNELS}, got {unknown}")
        if self.train_rows < 2 or not 0 <= self.burn_rows < self.train_rows - 1:
            raise ValueError("SkabConfig: need train_rows >= 2 and 0 <= burn_rows < train_rows - 1")
        if self.tau_s <= 0 or self.margin <= 0 or self.change_margin <= 0 or not 0 < self.quantile <= 1 \
                or not 0 < self.release <= 1 or not 0 < self.change_release <= 1 or self.trend_tau_s <= self.tau_s:
            raise ValueError("SkabConfig: need tau_s > 0, trend_tau_s > tau_s, margins > 0, 0 < quantile <= 1, "
                             "0 < releases <= 1")
        if min(self.on_rows, self.off_rows, self.change_on_rows, self.change_off_rows) < 1:
            raise ValueError("SkabConfig: need on_rows, off_rows, change_on_rows, change_off_rows >= 1")


def latch(scores: F64, threshold: float, release: float, on_rows: int, off_rows: int) -> Int8:
    """Alarm labels of ``scores`` in order: raised after ``on_rows`` consecutive scores above ``threshold``,
    cleared after ``off_rows`` consecutive scores below ``release * threshold`` (each label uses the past only)."""
    return Latch(threshold, release, on_rows, off_rows).feed(np.asarray(scores, dtype=np.float64))


@dataclass(frozen=True)
class Alarm:
    """One alarm over a run: per-row scores, 0/1 labels and the threshold (training rows score and label 0; the
    threshold is NaN when the run is no longer than its training part)."""

    scores: F64
    labels: Int8
    threshold: float


@dataclass(frozen=True)
class RunResult:
    """One run through the pipeline: the anomaly alarm (point labels) and the change alarm (change points)."""

    name: str
    anomaly: Alarm
    change: Alarm


def _seconds(run: SkabRun) -> F64:
    s: F64 = (run.timestamps - run.timestamps[0]).astype("timedelta64[s]").astype(np.float64)
    return s


def baseline_detector(config: SkabConfig | None = None) -> TrainedBaselineDetector:
    """The platform detector with ``config``'s settings, over SKAB's eight channels, scoring ``config.channels``."""
    cfg = config if config is not None else SkabConfig()
    return TrainedBaselineDetector(
        channels=CHANNELS, scored_channels=cfg.channels, train_rows=cfg.train_rows, tau_s=cfg.tau_s,
        detector=cfg.detector, detector_params=cfg.params(), burn_rows=cfg.burn_rows, quantile=cfg.quantile,
        margin=cfg.margin, release=cfg.release, on_rows=cfg.on_rows, off_rows=cfg.off_rows,
        trend_tau_s=cfg.trend_tau_s, change_margin=cfg.change_margin, change_release=cfg.change_release,
        change_on_rows=cfg.change_on_rows, change_off_rows=cfg.change_off_rows)


def detect_run(run: SkabRun, config: SkabConfig | None = None) -> RunResult:
    """Both alarms over one run: the run streamed through :func:`baseline_detector` (see the module docstring)."""
    det = baseline_detector(config)
    det.process(run.timestamps.astype("datetime64[ms]").astype(np.int64), run.x)
    return RunResult(
        name=run.name,
        anomaly=Alarm(scores=det.last_scores, labels=det.last_labels, threshold=det.threshold),
        change=Alarm(scores=det.last_change_scores, labels=det.last_change_labels, threshold=det.change_threshold))


@dataclass(frozen=True)
class SkabReport:
    """SKAB's metrics over the test parts of a set of runs."""

    runs: int
    counts: PointCounts  # the anomaly alarm's point labels
    windows: int  # labelled change points in the test parts
    nab: dict[str, ProfileScore]  # the change alarm's switches
    nab_anomaly_alarm: dict[str, ProfileScore]  # the anomaly alarm's own switches (SKAB's baselines' convention)

    def nab_score(self, profile: str, alarm: str = "change") -> float:
        """The normalised change-point NAB score of ``profile`` (0 = detect nothing, 100 = perfect) of the
        ``alarm`` ("change" or "anomaly")."""
        scores = self.nab if alarm == "change" else self.nab_anomaly_alarm
        return scores[profile].normalized if self.windows else math.nan


def evaluate(runs: Sequence[SkabRun], config: SkabConfig | None = None,
             progress: Callable[[str], None] | None = None) -> SkabReport:
    """Run the pipeline on every run and score the test parts (``progress`` is told each run's name)."""
    cfg = config if config is not None else SkabConfig()
    counts = PointCounts(0, 0, 0, 0)
    change_cps: list[ChangepointRun] = []
    anomaly_cps: list[ChangepointRun] = []
    for run in runs:
        if progress is not None:
            progress(run.name)
        result = detect_run(run, cfg)
        t = slice(min(cfg.train_rows, run.x.shape[0]), None)
        counts = counts + point_counts(run.anomaly[t], result.anomaly.labels[t])
        seconds, true_cp = _seconds(run)[t], run.changepoint[t] == 1
        change_cps.append(ChangepointRun(seconds, true_cp, predicted_changepoints(result.change.labels[t])))
        anomaly_cps.append(ChangepointRun(seconds, true_cp, predicted_changepoints(result.anomaly.labels[t])))
    windows = sum(int(c.true_cp.sum()) for c in change_cps)
    return SkabReport(runs=len(runs), counts=counts, windows=windows, nab=nab_changepoints(change_cps),
                      nab_anomaly_alarm=nab_changepoints(anomaly_cps))
