"""``novelty``: has this feature ever looked like this before? A streaming discord detector for NAB-like signals.

Each feature is scored on its own, in units of the range it has shown (``hi - lo``, warm-up included), so one
alarm level fits signals of any scale. The range is every value seen, slowly forgotten: after each value the
extremes relax towards an EWMA of the level by the factor ``0.5 ** (1 / range_halflife)``, so a spike long ago
does not blunt the detector for ever. With ``range_age > 0`` a young detector forgets faster: at row ``t`` the
half-life is ``min(range_halflife, range_age * t)``, so what the first rows showed (a start-up transient far
above the later level) is forgotten by the factor ``0.5 ** (ln(t / t0) / range_age)`` by row ``t``: a little
(the level the extremes relax towards forgets it slowly too), but enough to matter on short streams (the
``ensemble``'s univariate preset uses 10; see that module).

- **new extreme**: a value beyond the range scores its excess over the range, ``(x - hi) / range`` or
  ``(lo - x) / range``;
- **new shape**, at two time scales: the stream is cut into blocks of ``step`` rows (and of ``step * coarse``
  rows), by row count so batching cannot move them; when a block ends, the means of the last ``blocks`` blocks
  form a short pattern, and its distance to the nearest pattern of that scale seen before (mean absolute
  difference; the overlapping recent patterns and those older than ``memory`` blocks excluded) over the range
  is the score.

A feature's raw score is the larger of the two. The output is shaped for alarms, as an operator (and NAB) wants
one alarm per episode, by each feature's own :class:`~edgeloop.detect.detectors.shaping.AlarmShaper`: after a
row reaches ``alarm`` the feature is quiet (scores 0) for ``refractory`` rows unless something ``escalate`` times
as novel comes, and each alarm raises the feature's bar (the divisor of its scores) by ``bar_gain``; the bar
relaxes back to 1 with half-life ``bar_halflife`` rows, so a feature that alarms often (pure noise, a restless
signal) has to be more novel to alarm again. All of it uses only rows up to the one scored. With
``shaping=False`` the output is the raw score (what the ``ensemble`` calibrates and shapes itself).
A row scores its largest feature score (range ``[0, inf)``); the explanation gives each feature its
share of the raw scores (all zeros when the row scores 0).

Missing values (NaN) score 0; a block's mean is over its present values (the previous block's mean when none).
"""

from __future__ import annotations

import math

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.detectors.shaping import AlarmShaper
from edgeloop.detect.protocol import normalise_shares
from edgeloop.detect.registry import register

__all__ = ["NoveltyDetector"]


class _Scale:
    """The patterns of one feature at one time scale: blocks of ``step`` rows (see the module docstring)."""

    __slots__ = ("block_n", "block_sum", "keys", "last_mean", "n_stored", "ring", "step", "store", "store_lo")

    def __init__(self, step: int, blocks: int) -> None:
        self.step = step
        self.block_sum = 0.0
        self.block_n = 0
        self.last_mean = math.nan
        self.ring: list[float] = []  # the last ``blocks`` block means
        self.store = np.empty((64, blocks))  # past patterns, rows store_lo .. n_stored - 1 in use
        self.keys = np.empty(64)  # each stored pattern's mean
        self.store_lo = 0
        self.n_stored = 0


def _nearest(past: F64, keys: F64, pattern: F64) -> float:
    """The smallest mean absolute difference between ``pattern`` and a row of ``past`` (``keys``: the rows' means).

    Exact, but fast: ``mean|p - q| >= |mean p - mean q|``, so once the most recent patterns give a bound ``d``,
    only the rows whose mean lies within ``d`` of the pattern's can be nearer.
    """
    recent = past[-8:]
    bound = float(np.abs(recent - pattern).mean(axis=1).min())
    key = float(pattern.mean())
    slack = bound * (1.0 + 1e-9) + 1e-12 * (abs(key) + 1.0)  # rounding must not exclude a row as near as the bound
    near = np.flatnonzero(np.abs(keys - key) <= slack)
    if near.size == 0:
        return bound
    return min(bound, float(np.abs(past[near] - pattern).mean(axis=1).min()))


class _Feature:
    """The state of one feature (see the module docstring)."""

    __slots__ = ("hi", "lo", "mid", "scales", "shaper")

    def __init__(self, steps: tuple[int, ...], blocks: int, shaper: AlarmShaper | None) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.mid = math.nan
        self.scales = [_Scale(step, blocks) for step in steps]
        self.shaper = shaper


@register
class NoveltyDetector:
    name = "novelty"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 150, step: int = 4, coarse: int = 4,
                 blocks: int = 4, memory: int = 8192, range_halflife: float = 10000.0, alarm: float = 0.05,
                 refractory: int = 100, escalate: float = 3.0, bar_gain: float = 1.3,
                 bar_halflife: float = 2000.0, shaping: bool = True, range_age: float = 0.0) -> None:
        if (n_features < 1 or warmup < 1 or step < 1 or coarse < 1 or blocks < 1 or memory < 1 or range_halflife <= 0
                or range_age < 0):
            raise ValueError("novelty: need n_features, warmup, step, coarse, blocks, memory >= 1, "
                             "range_halflife > 0, range_age >= 0")

        def shaper() -> AlarmShaper:
            return AlarmShaper(alarm=alarm, refractory=refractory, escalate=escalate, bar_gain=bar_gain,
                               bar_halflife=bar_halflife)

        shaper()  # checks the shaping parameters even when shaping is off
        self.n_features = n_features
        self.seed = seed  # deterministic: the seed is not used
        self.warmup = warmup
        self.steps = (step, step * coarse) if coarse > 1 else (step,)
        self.blocks = blocks
        self.memory = memory
        self.shaping = shaping
        self.range_halflife = range_halflife
        self.range_age = range_age
        self._range_keep = 0.5 ** (1.0 / range_halflife)
        self._rows = 0  # rows learned
        self._features = [_Feature(self.steps, blocks, shaper() if shaping else None)
                          for _ in range(n_features)]

    @property
    def warmed_up(self) -> bool:
        return self._rows >= self.warmup

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=True)

    def score_one(self, x: F64) -> float:
        return max(self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=False)[0])

    def explain_one(self, x: F64) -> F64:
        out, raw = self._row(np.asarray(x, dtype=np.float64).reshape(-1), commit=False)
        if max(out) <= 0.0:
            return np.zeros(self.n_features)
        return normalise_shares(np.array(raw))

    def score_learn_many(self, X: F64) -> F64:
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        scores = np.zeros(X.shape[0])
        for i, row in enumerate(X.tolist()):
            scores[i] = max(self._row(row, commit=True)[0])
        return scores

    # ------------------------------------------------------------------ internals
    def _row(self, x: F64 | list[float], *, commit: bool) -> tuple[list[float], list[float]]:
        """Each feature's output and raw score for row ``x``; with ``commit`` the state learns the row."""
        t = self._rows
        scoring = t >= self.warmup
        outs: list[float] = []
        raws: list[float] = []
        for j, f in enumerate(self._features):
            out, raw = self._feature(f, float(x[j]), t, scoring, commit)
            outs.append(out)
            raws.append(raw)
        if commit:
            self._rows = t + 1
        return outs, raws

    def _feature(self, f: _Feature, v: float, t: int, scoring: bool, commit: bool) -> tuple[float, float]:
        present = math.isfinite(v)
        lo, hi = f.lo, f.hi
        seen = hi >= lo
        scale = max(hi - lo, 1e-9 * max(1.0, abs(hi), abs(lo))) if seen else 0.0
        live = present and scoring and seen
        raw = max(v - hi, lo - v, 0.0) / scale if live else 0.0
        for sc in f.scales:
            nearest = self._pattern(sc, v, t, present, live, commit)
            if nearest > 0.0:
                raw = max(raw, nearest / scale)
        if commit and present:
            if seen:  # the range relaxes towards the recent level: old extremes are slowly forgotten
                keep = self._range_keep
                if self.range_age > 0.0 and self.range_age * t < self.range_halflife:
                    keep = 0.5 ** (1.0 / max(1.0, self.range_age * t))
                mid = keep * f.mid + (1.0 - keep) * v
                f.mid = mid
                f.hi = max(v, mid + (hi - mid) * keep)
                f.lo = min(v, mid - (mid - lo) * keep)
            else:
                f.mid, f.lo, f.hi = v, v, v
        out = f.shaper.shape(raw, t, commit) if f.shaper is not None else raw
        return out, raw

    def _pattern(self, sc: _Scale, v: float, t: int, present: bool, live: bool, commit: bool) -> float:
        """At the end of a block of ``sc``: the distance of the new pattern to its nearest past one (0 when there
        is none or ``live`` is False); with ``commit`` the block is learned."""
        if t % sc.step != sc.step - 1:
            if commit and present:
                sc.block_sum += v
                sc.block_n += 1
            return 0.0
        total = sc.block_sum + (v if present else 0.0)
        count = sc.block_n + (1 if present else 0)
        mean = total / count if count else sc.last_mean
        nearest = 0.0
        pattern: F64 | None = None
        ring = sc.ring
        if math.isfinite(mean):
            ring = [*sc.ring[1 - self.blocks:], mean] if self.blocks > 1 else [mean]
            if len(ring) == self.blocks:
                pattern = np.array(ring)
                usable = sc.n_stored - self.blocks  # the newest patterns overlap this one
                first = max(sc.store_lo, usable - self.memory)
                if live and usable > first:
                    lo, hi = first - sc.store_lo, usable - sc.store_lo
                    nearest = _nearest(sc.store[lo:hi], sc.keys[lo:hi], pattern)
        if commit:
            sc.block_sum, sc.block_n = 0.0, 0
            if math.isfinite(mean):
                sc.last_mean = mean
                sc.ring = ring
            if pattern is not None:
                self._store(sc, pattern)
        return nearest

    def _store(self, f: _Scale, pattern: F64) -> None:
        used = f.n_stored - f.store_lo
        if used == f.store.shape[0]:
            keep = self.memory + self.blocks  # what a search can still reach
            if used > 2 * keep:
                f.store[:keep] = f.store[used - keep:used]
                f.keys[:keep] = f.keys[used - keep:used]
                f.store_lo = f.n_stored - keep
                used = keep
            else:
                grown = np.empty((2 * f.store.shape[0], self.blocks))
                grown[:used] = f.store[:used]
                f.store = grown
                keys = np.empty(2 * f.keys.shape[0])
                keys[:used] = f.keys[:used]
                f.keys = keys
        f.store[used] = pattern
        f.keys[used] = float(pattern.mean())
        f.n_stored += 1
