"""SKAB's metrics (pure functions, no I/O): point F1/FAR/MAR and the NAB score on change points.

Both follow SKAB's own evaluation (``core/metrics.py`` of https://github.com/waico/SKAB, taken from the ``tsad``
package, as its notebooks call it), restricted to the test part of each run (rows from ``train_rows`` on):

**Points** (``chp_score(..., metric="binary")``): over all test rows of all runs, ``F1 = TP / (TP + (FP + FN) / 2)``,
``FAR = FP / (FP + TN)`` and ``MAR = FN / (FN + TP)``, here as fractions (SKAB prints percentages).

**Change points** (``chp_score(true_cp, predicted_cp, metric="nab", window_width="30S",
anomaly_window_destination="center")`` with its defaults ``clear_anomalies_mode=True``,
``intersection_mode="cut right window"``, ``scale_func="improved"``, ``scale_koef=1``):

- a run's *predicted change points* are the rows where its predicted labels switch (``|diff|``; the first test row
  counts when it is predicted anomalous), so each alarm episode contributes its start and its end;
- each labelled change point at time ``t`` gets the detection window ``[t - 15 s, t + 15 s]`` (30 s centred on it,
  both ends included); when windows overlap, the later one starts where the earlier one ends;
- the earliest predicted change point in a window scores ``A_tp`` at the window's start falling to ``A_fp`` at its
  end along SKAB's "improved" curve ``y(u) = (A_tp - A_fp)/2 * (1 - tanh(x)/tanh(pi/2)) + A_fp`` with
  ``x = -pi/2 + pi * k/999`` at ``k = min(floor(1000 u), 999)``, ``u`` the position in the window (0..1); later
  predictions in the same window cost nothing;
- every predicted change point outside all windows costs ``A_fp`` (flat: no distance weighting), every window
  without one costs ``A_fn``;
- per profile, ``100 * (score - null) / (perfect - null)`` over all runs, where null is ``A_fn`` per window and
  perfect ``A_tp`` per window. The profiles are NAB's (:mod:`edgeloop.evaluation.nab`): ``A_tp = 1`` and
  ``A_fp = -0.11 / -0.22 / -0.11``, ``A_fn = -1 / -1 / -2`` for standard / low FP / low FN.

This is not NAB's original scorer (Lavin & Ahmad's sigmoid, probation and distance-weighted false positives, our
:mod:`edgeloop.evaluation.nab`); SKAB's published change-point NAB figures use the rules above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.evaluation.nab import PROFILES, CostMatrix, ProfileScore

__all__ = ["NAB_PROFILES", "ChangepointRun", "PointCounts", "changepoint_windows", "nab_changepoints",
           "point_counts", "predicted_changepoints", "window_score"]

NAB_PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": CostMatrix(tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    "reward_low_FN_rate": CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
}
assert tuple(NAB_PROFILES) == PROFILES
WINDOW_S = 30.0  # SKAB's window_width="30S", centred on each change point
_DETAIL = 1000  # SKAB's detalization of the scoring curve
Bool = npt.NDArray[np.bool_]
Int64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PointCounts:
    """Point confusion counts, with SKAB's point metrics as fractions."""

    tp: int
    fp: int
    tn: int
    fn: int

    def __add__(self, other: PointCounts) -> PointCounts:
        return PointCounts(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)

    @property
    def f1(self) -> float:
        d = self.tp + (self.fp + self.fn) / 2
        return self.tp / d if d else 0.0

    @property
    def far(self) -> float:
        """False alarm rate FP / (FP + TN)."""
        d = self.fp + self.tn
        return self.fp / d if d else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate FN / (FN + TP)."""
        d = self.fn + self.tp
        return self.fn / d if d else 0.0


def point_counts(truth: npt.ArrayLike, predicted: npt.ArrayLike) -> PointCounts:
    """Confusion counts of 0/1 ``predicted`` labels against 0/1 ``truth`` (same length)."""
    t = np.asarray(truth) == 1
    p = np.asarray(predicted) == 1
    if t.shape != p.shape:
        raise ValueError(f"{t.shape[0]} labels but {p.shape[0]} predictions")
    return PointCounts(tp=int((t & p).sum()), fp=int((~t & p).sum()), tn=int((~t & ~p).sum()),
                       fn=int((t & ~p).sum()))


def predicted_changepoints(predicted: npt.ArrayLike) -> Bool:
    """SKAB's predicted change points: where the 0/1 labels switch, and the first row when it is 1."""
    p = np.asarray(predicted).astype(np.int64)
    cp = np.zeros(p.shape, dtype=bool)
    if p.size:
        cp[0] = p[0] == 1
        cp[1:] = p[1:] != p[:-1]
    return cp


def changepoint_windows(seconds: Sequence[float] | npt.NDArray[np.float64],
                        width_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """The centred detection windows ``[t - w/2, t + w/2]`` of change points at ``seconds`` (sorted), an
    overlapping window starting where the one before it ends (SKAB's "cut right window")."""
    windows = [[float(t) - width_s / 2, float(t) + width_s / 2] for t in sorted(seconds)]
    for before, after in itertools.pairwise(windows):
        after[0] = max(before[1], after[0])
    return [(a, b) for a, b in windows]


def window_score(position: float, costs: CostMatrix) -> float:
    """Value of the earliest detection at ``position`` (0 = window start, 1 = its end) on SKAB's curve."""
    k = min(max(math.floor(position * _DETAIL), 0), _DETAIL - 1)
    x = -math.pi / 2 + math.pi * k / (_DETAIL - 1)
    a_tp, a_fp = costs.tp_weight, -costs.fp_weight
    return (a_tp - a_fp) / 2 * -math.tanh(x) / math.tanh(math.pi / 2) + (a_tp - a_fp) / 2 + a_fp


@dataclass(frozen=True)
class ChangepointRun:
    """One run's test part for the change-point score: times in seconds, true and predicted change points."""

    seconds: npt.NDArray[np.float64]
    true_cp: Bool
    predicted_cp: Bool


def _raw(run: ChangepointRun, costs: CostMatrix, width_s: float) -> tuple[float, int]:
    windows = changepoint_windows(run.seconds[run.true_cp], width_s)
    times = run.seconds[run.predicted_cp]
    inside = np.zeros(times.shape, dtype=bool)
    score = 0.0
    for start, end in windows:
        hit = (times >= start) & (times <= end)
        inside |= hit
        if hit.any():
            score += window_score((float(times[hit][0]) - start) / (end - start), costs)
        else:
            score -= costs.fn_weight
    score -= costs.fp_weight * int((~inside).sum())
    return score, len(windows)


def nab_changepoints(runs: Sequence[ChangepointRun], profiles: Mapping[str, CostMatrix] = NAB_PROFILES,
                     width_s: float = WINDOW_S) -> dict[str, ProfileScore]:
    """SKAB's change-point NAB score of ``runs`` per profile (see the module docstring)."""
    result: dict[str, ProfileScore] = {}
    for name, costs in profiles.items():
        raw, windows = 0.0, 0
        for run in runs:
            r, w = _raw(run, costs, width_s)
            raw += r
            windows += w
        result[name] = ProfileScore(raw=raw, null=-costs.fn_weight * windows, perfect=costs.tp_weight * windows)
    return result
