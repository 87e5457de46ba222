"""``context``: is this short shape new *for this point of the cycle*? A contextual member for periodic signals.

``novelty`` asks whether a short shape was ever seen before; a daily cycle that fails to rise (a missing jump,
a quiet rush hour) shows only shapes that are normal at *some* time of day, so it scores nothing there. This
detector compares the newest shape only with the shapes at the same phase of the signal's own cycle:

- the stream of each feature is cut into blocks of ``step`` rows (by row count, so batching cannot move them);
  when a block ends, the means of the last ``blocks`` blocks form the current pattern;
- the cycle: every ``refit`` rows the period is estimated from the autocorrelation of the block means seen so
  far (the last ``memory`` blocks; :func:`~edgeloop.detect.detectors.seasonal.detect_period`, a peak of at
  least ``min_acf`` at a lag of at least ``min_period`` blocks); a signal without one scores only new extremes;
- the score of a pattern is the distance (mean absolute difference) to the nearest of the patterns that ended
  ``k`` periods earlier (``k = 1 .. periods``, each shifted by up to ``slack`` blocks either way, for a cycle
  that is not exactly a whole number of blocks), in units of the range of the block means seen so far;
- between block ends (and for a feature without a cycle) a row scores its excess beyond that range, as a value
  outside everything seen is out of context too (and a detector must flag an obvious fault).

A row scores its largest feature score (range ``[0, inf)``, 0 during ``warmup``); the explanation gives each
feature its share. Missing values (NaN) score 0; a block's mean is over its present values (the previous
block's mean when none).

The defaults are generic (blocks of 4 rows, patterns of 4 blocks as ``novelty``'s fine scale, the last 8
cycles, one block of slack, the period refitted every 64 rows; ``min_acf`` 0.3 as ``seasonal``). A cycle is
found once two of it have been seen, so the detector only helps on streams with at least two cycles of
history; on NAB (5-minute data with a daily cycle) that is 576 rows. In the ``ensemble``'s univariate preset
the score has the fixed scale 0.25 (a pattern a quarter of the range away from every same-phase pattern is one
decade of rarity, 5 times ``novelty``'s 0.05, as same-phase patterns are few and noisier than the nearest
of all): see that module for the NAB figures and how the scale was chosen.
"""

from __future__ import annotations

import math

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.detectors.seasonal import detect_period
from edgeloop.detect.protocol import normalise_shares
from edgeloop.detect.registry import register

__all__ = ["ContextDetector"]


class _Feature:
    """One feature's block means (a ring of ``memory`` blocks), its range and its cycle."""

    __slots__ = ("block_n", "block_sum", "hi", "last_mean", "lo", "mean_hi", "mean_lo", "means", "n_blocks", "period")

    def __init__(self, memory: int) -> None:
        self.means = np.full(memory, np.nan)  # block b's mean at means[b % memory]
        self.n_blocks = 0  # blocks completed
        self.block_sum = 0.0
        self.block_n = 0
        self.last_mean = math.nan
        self.period = 0  # in blocks; 0 = no cycle found (yet)
        self.lo = math.inf  # the range of the values
        self.hi = -math.inf
        self.mean_lo = math.inf  # the range of the block means
        self.mean_hi = -math.inf


@register
class ContextDetector:
    name = "context"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 150, step: int = 4, blocks: int = 4,
                 periods: int = 8, slack: int = 1, memory: int = 4096, refit: int = 64, min_period: int = 6,
                 min_acf: float = 0.3) -> None:
        if (n_features < 1 or warmup < 1 or step < 1 or blocks < 1 or periods < 1 or slack < 0 or refit < 1
                or min_period < 2 or memory < 4 * min_period):
            raise ValueError("context: need n_features, warmup, step, blocks, periods, refit >= 1, slack >= 0, "
                             "min_period >= 2, memory >= 4 * min_period")
        self.n_features = n_features
        self.seed = seed  # deterministic: the seed is not used
        self.warmup = warmup
        self.step = step
        self.blocks = blocks
        self.periods = periods
        self.slack = slack
        self.memory = memory
        self.refit_blocks = max(1, refit // step)
        self.min_period = min_period
        self.min_acf = min_acf
        self._rows = 0  # rows learned
        self._features = [_Feature(memory) for _ in range(n_features)]
        # offsets of the candidate patterns' last blocks: k periods back, shifted by -slack .. slack (times period)
        self._shifts = np.arange(-slack, slack + 1)
        self._ks = np.arange(1, periods + 1)
        self._within = np.arange(1 - blocks, 1)  # a pattern's blocks relative to its last

    @property
    def warmed_up(self) -> bool:
        return self._rows >= self.warmup

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=True)

    def score_one(self, x: F64) -> float:
        return max(self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=False))

    def explain_one(self, x: F64) -> F64:
        return normalise_shares(np.array(self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=False)))

    def score_learn_many(self, X: F64) -> F64:
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        scores = np.zeros(X.shape[0])
        for i, row in enumerate(X.tolist()):
            scores[i] = max(self._row(row, commit=True))
        return scores

    # ------------------------------------------------------------------ internals
    def _row(self, x: F64 | list[float], *, commit: bool) -> list[float]:
        t = self._rows
        scoring = t >= self.warmup
        out = [self._feature(f, float(x[j]), t, scoring, commit) for j, f in enumerate(self._features)]
        if commit:
            self._rows = t + 1
        return out

    def _feature(self, f: _Feature, v: float, t: int, scoring: bool, commit: bool) -> float:
        present = math.isfinite(v)
        seen = f.hi >= f.lo
        scale = max(f.hi - f.lo, 1e-9 * max(1.0, abs(f.hi), abs(f.lo))) if seen else 0.0
        live = present and scoring and seen
        score = max(v - f.hi, f.lo - v, 0.0) / scale if live else 0.0
        if commit and present:
            f.lo = min(f.lo, v)
            f.hi = max(f.hi, v)
        if t % self.step != self.step - 1:
            if commit and present:
                f.block_sum += v
                f.block_n += 1
            return score
        total = f.block_sum + (v if present else 0.0)
        count = f.block_n + (1 if present else 0)
        mean = total / count if count else f.last_mean
        b = f.n_blocks  # this block's index
        if live and f.period > 0 and math.isfinite(mean) and f.mean_hi > f.mean_lo:
            score = max(score, self._nearest(f, b, mean) / (f.mean_hi - f.mean_lo))
        if commit:
            f.block_sum, f.block_n = 0.0, 0
            if math.isfinite(mean):
                f.last_mean = mean
                f.mean_lo = min(f.mean_lo, mean)
                f.mean_hi = max(f.mean_hi, mean)
            f.means[b % self.memory] = mean
            f.n_blocks = b + 1
            if f.n_blocks % self.refit_blocks == 0 and f.n_blocks >= 4 * self.min_period:
                n = min(f.n_blocks, self.memory)
                history = f.means[np.arange(f.n_blocks - n, f.n_blocks) % self.memory]
                period = detect_period(history, self.min_period, self.min_acf)
                f.period = period if period > 1 else 0
        return score

    def _nearest(self, f: _Feature, b: int, mean: float) -> float:
        """The distance of the pattern ending with block ``b`` (mean ``mean``) to the nearest same-phase one."""
        pattern = np.append(f.means[(b + self._within[:-1]) % self.memory], mean)
        if not np.isfinite(pattern).all():
            return 0.0
        ends = (b - self._ks[:, None] * f.period + self._shifts[None, :]).reshape(-1)
        oldest = max(0, b - self.memory + 1) + self.blocks - 1  # a candidate's blocks must all still be held
        ends = ends[ends >= oldest]
        if ends.size == 0:
            return 0.0
        past = f.means[(ends[:, None] + self._within[None, :]) % self.memory]
        dist = np.abs(past - pattern).mean(axis=1)
        dist = dist[np.isfinite(dist)]
        return float(dist.min()) if dist.size else 0.0
