"""The NAB scorer (Lavin & Ahmad 2015, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta
Anomaly Benchmark"), our own implementation of the published method. Pure functions, no I/O.

Per file:

- the first ``min(floor(0.15 * n), 750)`` rows are a probationary period: detections there are ignored, and
  a window lying wholly inside it is neither rewarded nor penalised;
- a row is a detection when its anomaly score is ``>= threshold``;
- inside a window of ``W`` rows ending at row ``e``, a detection at row ``i`` is worth
  ``tp_weight * S(-(e - i + 1) / W) / S(-1)``: ``tp_weight`` at the window's first row, falling towards 0 at its
  end; only the best (earliest) detection of a window counts;
- a window without a detection costs ``fn_weight``;
- every detection outside a window costs ``fp_weight * S(d)``, where ``d = (i - e_prev) / (W_prev - 1)`` is the
  distance past the preceding window (``S(d) = -1`` before the first window and from ``d >= 3`` on);

with the scaled sigmoid ``S(x) = 2 / (1 + exp(5 x)) - 1``. A corpus is scored per profile and normalised to
``100 * (raw - null) / (perfect - null)``: "null" detects nothing (every scorable window costs ``fn_weight``),
"perfect" detects every window at its first row (every window earns ``tp_weight``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATIONARY_PERCENT = 0.15
PROBATIONARY_CAP_ROWS = 5000  # the probationary period is at most 15 % of 5000 rows

Timestamps = NDArray[np.datetime64]
Window = tuple[np.datetime64, np.datetime64]


@dataclass(frozen=True)
class CostMatrix:
    """The weights of one application profile."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class ScoredFile:
    """One corpus file: timestamps in the corpus's row order, the detector's anomaly score per row, and the
    labelled windows."""

    name: str
    timestamps: Timestamps
    scores: NDArray[np.float64]
    windows: Sequence[Window]


@dataclass(frozen=True)
class ProfileScore:
    raw: float
    null: float
    perfect: float

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def scaled_sigmoid(position: float) -> float:
    """``2 * sigmoid(-5 x) - 1``: about +0.987 at -1 (a window's start), 0 at 0 (its end), -1 from 3 on."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(rows: int, percent: float = PROBATIONARY_PERCENT) -> int:
    return min(math.floor(percent * rows), math.floor(percent * PROBATIONARY_CAP_ROWS))


def window_rows(timestamps: Timestamps, windows: Sequence[Window]) -> list[tuple[int, int]]:
    """Each window as (first row, last row), inclusive, in the file's own row order: from the first row at or
    after its start to the first row at its end (NAB's rule), or else the last row before it; windows with no
    row are dropped. Rows are never reordered: real data repeats a timestamp at a daylight-saving change, and
    may step back (NAB's ``machine_temperature_system_failure.csv`` goes back an hour, and NAB's results files
    keep its rows as they are)."""
    rows: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        begun = np.flatnonzero(timestamps >= start)
        if not begun.size:
            continue
        first = int(begun[0])
        ended = np.flatnonzero(timestamps[first:] >= end)
        last = first + int(ended[0]) if ended.size else len(timestamps)
        if last >= len(timestamps) or timestamps[last] != end:
            last -= 1
        if first <= last:
            rows.append((first, last))
    return rows


def row_weights(rows: int, windows: Sequence[tuple[int, int]], costs: CostMatrix) -> tuple[
        NDArray[np.float64], NDArray[np.int64]]:
    """The value of a detection at each row (positive in windows, negative outside) and each row's window
    index (-1 outside any window)."""
    weight = np.empty(rows, dtype=np.float64)
    window_of = np.full(rows, -1, dtype=np.int64)
    max_tp = scaled_sigmoid(-1.0)
    cursor = 0
    previous: tuple[int, int] | None = None
    for k, (first, last) in enumerate([*windows, (rows, rows)]):
        # rows between the previous window (or the file's start) and this window: false positives
        gap = np.arange(cursor, min(first, rows))
        if gap.size:
            if previous is None or previous[1] == previous[0]:
                weight[gap] = -costs.fp_weight
            else:
                distance = (gap - previous[1]) / float(previous[1] - previous[0])
                weight[gap] = costs.fp_weight * _scaled_sigmoid_array(distance)
        if first >= rows:
            break
        inside = np.arange(first, last + 1)
        width = float(last - first + 1)
        position = -(last - inside + 1) / width
        weight[inside] = costs.tp_weight * _scaled_sigmoid_array(position) / max_tp
        window_of[inside] = k
        cursor = last + 1
        previous = (first, last)
    return weight, window_of


def _scaled_sigmoid_array(position: NDArray[np.float64]) -> NDArray[np.float64]:
    value: NDArray[np.float64] = 2.0 / (1.0 + np.exp(np.minimum(5.0 * position, 50.0))) - 1.0
    return np.where(position >= 3.0, -1.0, value)


def raw_score(timestamps: Timestamps, scores: NDArray[np.float64], windows: Sequence[Window], threshold: float,
              costs: CostMatrix, probation_percent: float = PROBATIONARY_PERCENT) -> float:
    """The raw NAB score of one file for one profile."""
    if len(timestamps) != len(scores):
        raise ValueError(f"{len(timestamps)} timestamps but {len(scores)} anomaly scores")
    n = len(scores)
    rows = window_rows(timestamps, windows)
    weight, window_of = row_weights(n, rows, costs)
    scorable = np.arange(n) >= probationary_length(n, probation_percent)
    detected = scorable & (np.asarray(scores, dtype=np.float64) >= threshold)
    total = float(weight[detected & (window_of < 0)].sum())
    for k, (_first, last) in enumerate(rows):
        if last < probationary_length(n, probation_percent):
            continue  # wholly inside the probationary period: not scored
        hits = detected & (window_of == k)
        total += float(weight[hits].max()) if hits.any() else -costs.fn_weight
    return total


def scorable_windows(timestamps: Timestamps, windows: Sequence[Window],
                     probation_percent: float = PROBATIONARY_PERCENT) -> int:
    """How many windows of a file end after its probationary period (the ones a detector can miss)."""
    limit = probationary_length(len(timestamps), probation_percent)
    return sum(1 for _first, last in window_rows(timestamps, windows) if last >= limit)


def score_profile(files: Sequence[ScoredFile], threshold: float, costs: CostMatrix,
                  probation_percent: float = PROBATIONARY_PERCENT) -> ProfileScore:
    raw = sum(raw_score(f.timestamps, f.scores, f.windows, threshold, costs, probation_percent) for f in files)
    null = -costs.fn_weight * sum(scorable_windows(f.timestamps, f.windows, probation_percent) for f in files)
    perfect = costs.tp_weight * sum(len(f.windows) for f in files)
    return ProfileScore(raw=raw, null=null, perfect=perfect)


def score_corpus(files: Sequence[ScoredFile], thresholds: Mapping[str, float], profiles: Mapping[str, CostMatrix],
                 probation_percent: float = PROBATIONARY_PERCENT) -> dict[str, ProfileScore]:
    """Every profile of ``profiles`` (normally the three of :data:`PROFILES`) at its threshold."""
    missing = [p for p in profiles if p not in thresholds]
    if missing:
        raise ValueError(f"no threshold for profile(s) {', '.join(missing)}")
    return {name: score_profile(files, thresholds[name], costs, probation_percent)
            for name, costs in profiles.items()}
