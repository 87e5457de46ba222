"""``trained-baseline-v1``: the platform's detector for machines with a known-normal commissioning run (pure code).

A device profile with ``detector: baseline`` says: the first ``train_rows`` samples of each device are normal
operation (a commissioning run). The detector learns them, then alarms on what does not look like them. It is the
pipeline ``edgeloop eval skab`` evaluates -- :func:`edgeloop.evaluation.skab.detect_run` feeds each SKAB run through
this class -- so the figures in :mod:`edgeloop.evaluation.skab` are this detector's (see there for why each default):

1. **Features.** Of the scored channels (``scored_channels``; default all of the device's channels), a
   time-aware EWMA with time constant ``tau_s`` (the *level*) and the level minus a slower EWMA (``trend_tau_s``,
   the *trend*, a rate of change). A missing reading (NaN) holds the average; a channel is missing until its
   first reading. The decay of a row is ``exp(-dt / tau)`` with ``dt`` the time since the previous row of the
   stream (0 when time does not move forward; such rows are scored, not dropped).
2. **Training.** The first ``train_rows`` rows are buffered and labelled 0. Then one registered detector per
   feature set (default ``mahalanobis`` with spreads floored at 0.5 % of the level) warms up on them, and each
   threshold is the ``quantile`` (1.0: the largest) of the training rows' in-sample scores, leaving out the first
   ``burn_rows`` while the EWMAs settle, times ``margin`` (level) or ``change_margin`` (trend).
3. **Alarms.** Each later row is scored (score first, then learn) and fed to a latch: raised after ``on_rows``
   consecutive scores above the threshold, cleared after ``off_rows`` below ``release`` times it. The level's
   latch is the *anomaly alarm*, the trend's the *change alarm*.

**Findings.** One anomaly :class:`Finding` at each rising edge of the anomaly alarm: the score is the row's score
over the threshold (>= 1 by construction), the explanation each scored channel's share (the detector's
``explain_one`` of the level row) and the message names the channels that carry most of it. The change alarm is
computed by the same code (``last_change_labels``: what ``eval skab`` scores as change points) but raises no
findings: the platform's alert kinds have no "change", and a change alarm mostly repeats the anomaly alarm's
starts.

The state (EWMAs, training buffer, detectors, latches) carries across calls, so any split of a stream into
batches gives the same labels and findings, and a row's label depends only on that row and the rows before it.
``last_labels`` / ``last_scores`` (and the ``change`` pair) hold the per-row alarm state of the last batch.

In the platform (:mod:`edgeloop.scoring`) the defaults suit 1 Hz machine data like SKAB's: 400 s of
commissioning, 3 s smoothing, 10 s trends. It scores all of the profile's channels; which channels a machine's
faults show in is a per-machine choice (SKAB's pump: the hydraulic ones), made with ``scored_channels``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edgeloop.detect._numeric import F64
from edgeloop.detect.finding import Finding, FindingKind
from edgeloop.detect.protocol import Detector
from edgeloop.detect.registry import make

__all__ = ["MAHALANOBIS_PARAMS", "Latch", "TrainedBaselineDetector"]

Int8 = npt.NDArray[np.int8]
MAHALANOBIS_PARAMS: Mapping[str, Any] = {"rel_floor": 0.005}  # spreads >= 0.5 % of the level
_MIN_LOG_DECAY = -9.0  # as edgeloop.detect._numeric.ewma: a long gap is (almost) a reset


class Latch:
    """An alarm with hysteresis over scores in order: raised after ``on_rows`` consecutive scores above
    ``threshold``, cleared after ``off_rows`` consecutive scores below ``release * threshold``."""

    def __init__(self, threshold: float, release: float, on_rows: int, off_rows: int) -> None:
        self.threshold = threshold
        self.low = release * threshold
        self.on_rows = on_rows
        self.off_rows = off_rows
        self.state = 0
        self._above = 0
        self._below = 0

    def feed(self, scores: F64) -> Int8:
        """The labels of ``scores`` (the state carries over to the next call)."""
        labels = np.zeros(scores.shape[0], dtype=np.int8)
        state, above, below = self.state, self._above, self._below
        for i, s in enumerate(scores.tolist()):
            above = above + 1 if s > self.threshold else 0
            below = below + 1 if s < self.low else 0
            if not state and above >= self.on_rows:
                state = 1
            elif state and below >= self.off_rows:
                state = 0
            labels[i] = state
        self.state, self._above, self._below = state, above, below
        return labels


class _Ewma:
    """Time-aware EWMAs of a few channels, one row at a time (hold on missing, missing until the first reading)."""

    def __init__(self, n: int, tau_s: float) -> None:
        self.tau_s = tau_s
        self.y = [math.nan] * n

    def step(self, u: list[float], dt_s: float) -> list[float]:
        ld = max(-dt_s / self.tau_s, _MIN_LOG_DECAY)
        a, w = math.exp(ld), -math.expm1(ld)
        y = self.y
        for j, v in enumerate(u):
            if not math.isnan(v):  # a reading
                y[j] = v if math.isnan(y[j]) else a * y[j] + w * v
        return list(y)


class _Alarm:
    """One feature set's detector, threshold and latch."""

    def __init__(self, det: Detector, threshold: float, latch: Latch) -> None:
        self.det = det
        self.threshold = threshold
        self.latch = latch


class TrainedBaselineDetector:
    """Per device: learn the first ``train_rows`` rows, then alarm on what is unlike them (module docstring)."""

    name: ClassVar[str] = "trained-baseline-v1"

    def __init__(self, *, channels: Sequence[str], scored_channels: Sequence[str] | None = None,
                 train_rows: int = 400, tau_s: float = 3.0, detector: str = "mahalanobis",
                 detector_params: Mapping[str, Any] | None = None, burn_rows: int = 30, quantile: float = 1.0,
                 margin: float = 1.0, release: float = 0.35, on_rows: int = 3, off_rows: int = 1,
                 trend_tau_s: float = 10.0, change_margin: float = 0.8, change_release: float = 0.2,
                 change_on_rows: int = 3, change_off_rows: int = 1, critical_score: float = 3.0) -> None:
        self.channels: tuple[str, ...] = tuple(channels)
        self.scored_channels: tuple[str, ...] = tuple(scored_channels) if scored_channels is not None \
            else self.channels
        unknown = [c for c in self.scored_channels if c not in self.channels]
        if not self.scored_channels or unknown:
            raise ValueError(f"scored_channels must be a non-empty subset of the channels {self.channels}, "
                             f"got {unknown or 'none'}")
        if train_rows < 2 or not 0 <= burn_rows < train_rows - 1:
            raise ValueError("need train_rows >= 2 and 0 <= burn_rows < train_rows - 1")
        if tau_s <= 0 or margin <= 0 or change_margin <= 0 or not 0 < quantile <= 1 or not 0 < release <= 1 \
                or not 0 < change_release <= 1 or trend_tau_s <= tau_s:
            raise ValueError("need tau_s > 0, trend_tau_s > tau_s, margins > 0, 0 < quantile <= 1, "
                             "0 < releases <= 1")
        if min(on_rows, off_rows, change_on_rows, change_off_rows) < 1:
            raise ValueError("need on_rows, off_rows, change_on_rows, change_off_rows >= 1")
        self.train_rows = train_rows
        self.detector = detector
        self.detector_params: dict[str, Any] = dict(detector_params) if detector_params is not None else (
            dict(MAHALANOBIS_PARAMS) if detector == "mahalanobis" else {})
        make(detector, len(self.scored_channels), warmup=train_rows, **self.detector_params)  # fail early
        self.burn_rows = burn_rows
        self.quantile = quantile
        self.margin, self.release, self.on_rows, self.off_rows = margin, release, on_rows, off_rows
        self.change_margin, self.change_release = change_margin, change_release
        self.change_on_rows, self.change_off_rows = change_on_rows, change_off_rows
        self.critical_score = critical_score
        self._cols = [self.channels.index(c) for c in self.scored_channels]
        self._level = _Ewma(len(self._cols), tau_s)
        self._slow = _Ewma(len(self._cols), trend_tau_s)
        self._train_level: list[list[float]] = []
        self._train_trend: list[list[float]] = []
        self._anomaly: _Alarm | None = None
        self._change: _Alarm | None = None
        self._last_ts: int | None = None
        self.samples_seen = 0
        self.samples_dropped = 0  # always 0: rows whose time does not move forward are scored with dt = 0
        empty_f: F64 = np.zeros(0)
        empty_i: Int8 = np.zeros(0, dtype=np.int8)
        self.last_scores, self.last_labels = empty_f, empty_i
        self.last_change_scores, self.last_change_labels = empty_f, empty_i

    @property
    def warmed_up(self) -> bool:
        return self._anomaly is not None

    @property
    def threshold(self) -> float:
        """The anomaly alarm's threshold (NaN until trained)."""
        return self._anomaly.threshold if self._anomaly is not None else math.nan

    @property
    def change_threshold(self) -> float:
        """The change alarm's threshold (NaN until trained)."""
        return self._change.threshold if self._change is not None else math.nan

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        """Feed rows ``x`` (n, channels) at times ``ts`` (ms); return the anomaly alarm's new findings."""
        tsa = np.asarray(ts, dtype=np.int64).reshape(-1)
        n = tsa.shape[0]
        xa = np.asarray(x, dtype=np.float64).reshape(n, len(self.channels))[:, self._cols]
        xa = np.where(np.isfinite(xa), xa, np.nan)
        level, trend = self._features(tsa, xa)
        scores, labels = np.zeros(n), np.zeros(n, dtype=np.int8)
        c_scores, c_labels = np.zeros(n), np.zeros(n, dtype=np.int8)
        start = 0
        if self._anomaly is None:
            start = min(n, self.train_rows - len(self._train_level))
            self._train_level.extend(level[:start].tolist())
            self._train_trend.extend(trend[:start].tolist())
            if len(self._train_level) >= self.train_rows:
                self._train()
        prev = self._anomaly.latch.state if self._anomaly is not None else 0
        if start < n and self._anomaly is not None and self._change is not None:
            scores[start:] = self._anomaly.det.score_learn_many(level[start:])
            labels[start:] = self._anomaly.latch.feed(scores[start:])
            c_scores[start:] = self._change.det.score_learn_many(trend[start:])
            c_labels[start:] = self._change.latch.feed(c_scores[start:])
        self.samples_seen += n
        self.last_scores, self.last_labels = scores, labels
        self.last_change_scores, self.last_change_labels = c_scores, c_labels
        if self._anomaly is None:
            return []
        rises = np.flatnonzero(np.diff(labels, prepend=np.int8(prev)) > 0)
        return [self._finding(int(tsa[i]), float(scores[i]) / self._anomaly.threshold, level[i])
                for i in rises.tolist()]

    # ------------------------------------------------------------------ internals
    def _features(self, tsa: npt.NDArray[np.int64], xa: F64) -> tuple[F64, F64]:
        """The level and trend rows of a batch, carrying the EWMAs and the previous time across calls."""
        n, k = xa.shape
        level, trend = np.empty((n, k)), np.empty((n, k))
        last = self._last_ts
        for i, (t, row) in enumerate(zip(tsa.tolist(), xa.tolist(), strict=True)):
            dt = max(t - last, 0) / 1000.0 if last is not None else 0.0
            last = t
            fast = self._level.step(row, dt)
            slow = self._slow.step(row, dt)
            level[i] = fast
            trend[i] = [f - s for f, s in zip(fast, slow, strict=True)]
        self._last_ts = last
        return level, trend

    def _train(self) -> None:
        """Warm both detectors up on the buffered training rows, set the thresholds and the latches."""
        lv, tr = np.array(self._train_level), np.array(self._train_trend)
        self._train_level, self._train_trend = [], []
        self._anomaly = self._fit(lv, self.margin, self.release, self.on_rows, self.off_rows)
        self._change = self._fit(tr, self.change_margin, self.change_release, self.change_on_rows,
                                 self.change_off_rows)

    def _fit(self, f: F64, margin: float, release: float, on_rows: int, off_rows: int) -> _Alarm:
        det = make(self.detector, f.shape[1], warmup=self.train_rows, **self.detector_params)
        det.score_learn_many(f)
        calib = copy.deepcopy(det).score_learn_many(f[self.burn_rows:])
        level = float(np.quantile(calib, self.quantile)) if calib.size else 0.0
        threshold = max(level * margin, 1e-12)
        return _Alarm(det, threshold, Latch(threshold, release, on_rows, off_rows))

    def _finding(self, ts: int, score: float, row: F64) -> Finding:
        assert self._anomaly is not None
        shares = self._anomaly.det.explain_one(row)
        if not shares.sum() > 0:
            shares = np.full(len(self.scored_channels), 1.0 / len(self.scored_channels))
        explanation = {c: float(s) for c, s in zip(self.scored_channels, shares, strict=True) if s > 0}
        ranked = sorted(explanation, key=explanation.__getitem__, reverse=True)
        top, total = [], 0.0
        for c in ranked[:3]:
            top.append(c)
            total += explanation[c]
            if total >= 0.8:
                break
        parts = ", ".join(f"{c} ({round(100 * explanation[c])} %)" for c in top)
        return Finding(ts=ts, kind=FindingKind.ANOMALY, severity="critical" if score >= self.critical_score
                       else "warning", score=score, explanation=explanation,
                       message=f"unlike the commissioning run: {parts} of the anomaly")
