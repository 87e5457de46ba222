"""Running a registered detector over the NAB corpus and NAB's threshold optimisation (no file I/O).

- :func:`run_corpus` feeds each series, in streaming order, to its own detector instance (``n_features=1``) through
  the batched path ``score_learn_many`` (in chunks, so the score of row ``t`` can only use rows up to ``t``) and
  returns the files with their anomaly scores, ready for :mod:`edgeloop.evaluation.nab`. Files run in parallel
  processes when ``workers > 1``; ``progress(done, total)`` is called after each file.
- :func:`optimise_threshold` is NAB's "optimize" step: the one threshold per profile that maximises the raw score
  of the whole corpus. It is exact: the corpus raw score is a step function of the threshold that changes only at
  the scores themselves, so every distinct score is tried (in one sorted sweep, not one scoring run each).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.detect.protocol import F64
from edgeloop.detect.registry import make
from edgeloop.evaluation.nab import (
    PROBATIONARY_PERCENT,
    CostMatrix,
    ProfileScore,
    ScoredFile,
    Timestamps,
    Window,
    probationary_length,
    row_weights,
    score_profile,
    window_rows,
)

__all__ = ["CHUNK_ROWS", "UNIVARIATE_PARAMS", "NabSeries", "optimise_threshold", "optimise_thresholds", "run_corpus",
           "run_series", "threshold_curve"]

CHUNK_ROWS = 4096  # rows per score_learn_many call: a stream arrives in batches, never as a whole file

Progress = Callable[[int, int], None]

# The parameters a detector runs with on a single KPI stream, as NAB's files are (and as the platform selects for a
# univariate device profile): the ensemble's ``univariate`` preset (see ``edgeloop.detect.detectors.ensemble``).
UNIVARIATE_PARAMS: dict[str, dict[str, Any]] = {"ensemble": {"preset": "univariate"}}


@dataclass(frozen=True)
class NabSeries:
    """One corpus file: timestamps in order, the values (NaN = missing) and the labelled windows."""

    name: str
    timestamps: Timestamps
    values: F64
    windows: Sequence[Window]


def run_series(detector: str, values: F64, params: Mapping[str, Any] | None = None, seed: int = 0) -> F64:
    """The anomaly score of each value from a fresh ``detector`` fed in streaming order (score, then learn)."""
    det = make(detector, 1, seed=seed, **dict(params or {}))
    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    parts = [np.asarray(det.score_learn_many(x[lo:lo + CHUNK_ROWS]), dtype=np.float64)
             for lo in range(0, x.shape[0], CHUNK_ROWS)]
    scores: F64 = np.concatenate(parts) if parts else np.zeros(0)
    return scores


def _run_one(args: tuple[str, F64, Mapping[str, Any] | None, int]) -> F64:
    return run_series(*args)


def run_corpus(series: Sequence[NabSeries], detector: str, params: Mapping[str, Any] | None = None, *,
               seed: int = 0, workers: int = 1, progress: Progress | None = None) -> list[ScoredFile]:
    """Every series scored by its own ``detector`` instance, in the order given (see the module docstring)."""
    make(detector, 1, seed=seed, **dict(params or {}))  # an unknown name or bad parameter fails here, once
    total = len(series)
    results: list[F64 | None] = [None] * total
    jobs = [(detector, s.values, params, seed) for s in series]
    if workers <= 1 or total <= 1:
        for i, job in enumerate(jobs):
            results[i] = _run_one(job)
            if progress is not None:
                progress(i + 1, total)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, total)) as pool:
            # the longest files first, so no worker is left with a long one at the end
            order = sorted(range(total), key=lambda i: -len(series[i].values))
            futures = {pool.submit(_run_one, jobs[i]): i for i in order}
            for done, fut in enumerate(as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done, total)
    return [ScoredFile(name=s.name, timestamps=s.timestamps, scores=r, windows=s.windows)
            for s, r in zip(series, results, strict=True) if r is not None]


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


# -- NAB's threshold optimisation ---------------------------------------------------------------------------
def _file_events(f: ScoredFile, costs: CostMatrix, probation_percent: float) -> tuple[F64, F64, float]:
    """Where the file's raw score steps as the threshold falls: (score values, steps, raw score detecting nothing)."""
    n = len(f.scores)
    s = np.where(np.isfinite(f.scores), np.asarray(f.scores, dtype=np.float64), -math.inf)
    rows = window_rows(f.timestamps, f.windows)
    weight, window_of = row_weights(n, rows, costs)
    first_scored = probationary_length(n, probation_percent)
    scorable = np.arange(n) >= first_scored
    fp = scorable & (window_of < 0)
    values = [s[fp]]
    steps = [weight[fp]]
    base = 0.0
    for first, last in rows:
        if last < first_scored:
            continue
        base -= costs.fn_weight
        lo = max(first, first_scored)
        seg = s[lo:last + 1]
        prefix = np.maximum.accumulate(seg)
        record = np.ones(seg.size, dtype=bool)
        record[1:] = prefix[1:] > prefix[:-1]  # the rows that become the earliest detection as the threshold falls
        idx = np.flatnonzero(record & np.isfinite(seg))
        if idx.size == 0:
            continue
        w = weight[lo + idx]
        # falling past the highest record detects its row (instead of missing the window); each lower record
        # then moves the detection to its earlier row
        before = np.append(w[1:], -costs.fn_weight)
        values.append(seg[idx])
        steps.append(w - before)
    return np.concatenate(values), np.concatenate(steps), base


def threshold_curve(files: Sequence[ScoredFile], costs: CostMatrix,
                    probation_percent: float = PROBATIONARY_PERCENT) -> tuple[F64, F64]:
    """The corpus raw score at every threshold that matters: ``(thresholds, raw)``, thresholds descending, with
    ``raw[k]`` the score for detections ``score >= thresholds[k]``; the first entry (``inf``) detects nothing."""
    values: list[F64] = []
    steps: list[F64] = []
    base = 0.0
    for f in files:
        v, d, b = _file_events(f, costs, probation_percent)
        values.append(v)
        steps.append(d)
        base += b
    v = np.concatenate(values) if values else np.zeros(0)
    d = np.concatenate(steps) if steps else np.zeros(0)
    keep = np.isfinite(v)
    v, d = v[keep], d[keep]
    order = np.argsort(-v, kind="stable")
    v, d = v[order], d[order]
    cum = base + np.cumsum(d)
    last_of_value = np.append(v[1:] != v[:-1], True)  # all rows of one score value step together
    thresholds: F64 = np.concatenate([[math.inf], v[last_of_value]])
    raw: F64 = np.concatenate([[base], cum[last_of_value]])
    return thresholds, raw


def optimise_threshold(files: Sequence[ScoredFile], costs: CostMatrix,
                       probation_percent: float = PROBATIONARY_PERCENT) -> tuple[float, ProfileScore]:
    """The threshold maximising the corpus raw score for ``costs`` and its score.

    Any threshold between the best score value and the next lower one gives the same detections; the midpoint
    is returned (the widest margin both ways). Ties go to the highest threshold (fewest detections).
    """
    thresholds, raw = threshold_curve(files, costs, probation_percent)
    k = int(np.argmax(raw))
    if k == 0:  # detecting nothing is best: a threshold above every score
        top = float(thresholds[1]) if thresholds.size > 1 else 0.0
        best = top + max(1.0, abs(top))
    elif k + 1 < thresholds.size:
        best = 0.5 * (float(thresholds[k]) + float(thresholds[k + 1]))
        if not thresholds[k + 1] < best <= thresholds[k]:  # no float between them
            best = float(thresholds[k])
    else:
        best = float(thresholds[k])
    return best, score_profile(files, best, costs, probation_percent)


def optimise_thresholds(files: Sequence[ScoredFile], profiles: Mapping[str, CostMatrix],
                        probation_percent: float = PROBATIONARY_PERCENT) -> dict[str, float]:
    """One optimised threshold per profile (NAB's "optimize" step)."""
    return {name: optimise_threshold(files, costs, probation_percent)[0] for name, costs in profiles.items()}
