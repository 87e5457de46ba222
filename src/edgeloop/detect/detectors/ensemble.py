"""``ensemble``: several registered detectors, their scores calibrated to one scale and fused.

Members score in different units (a z-score, a distance, a probability), so each is calibrated
per asset before they are combined. After the members' warm-up (``warmup`` rows), the next
``calibration`` rows are the calibration period: each member's scores there form its reference
distribution ``F``. From then on a member's score ``s`` becomes a *surprise* in decades of
rarity relative to the median:

    surprise(s) = max(0, log10(0.5 / (1 - F(s))))        for s up to F's 90th percentile q90,
    surprise(s) = log10(5) + (s - q90) / (beta * ln 10)   above it,

where ``F`` is the empirical distribution (interpolated) and the tail above ``q90`` is an
exponential fitted to the calibration exceedances (``beta``: their mean excess). So a surprise
of 1 is "as rare as the top 5 % of normal data", 3 is "about 1 in 2,000", and the scale is the
same for every member and every asset: the ensemble's score is the weighted mean of the members'
surprises (range ``[0, inf)``; 0 during warm-up and calibration). Nothing is tuned per asset by
hand: warm-up and calibration happen on the asset's own data as it streams.

The explanation is the members' explanations weighted by each member's share of the fused score.
Members keep learning after calibration; the calibration itself is fixed once made (a detector
that recalibrated on drifting data would learn to accept the fault it should report).

Options (all off by default, so the platform's residual ensemble in ``robust`` is unchanged):

- **per-member warm-up**: a member built with a longer ``warmup`` (in ``member_params``) calibrates
  on the ``calibration`` rows after its own warm-up; until then it adds nothing (surprise 0, and no
  weight in the mean), so a slow contextual member can join a fast one.
- ``member_scales``: members whose scores are already relative to the asset's own data (``novelty``
  and ``context`` score in units of the range the asset has shown) are not calibrated empirically but
  by a fixed scale, ``surprise = score / scale``. An empirical calibration of such a score from a few hundred
  early rows throws away the one thing that makes it comparable across assets: on NAB, ``novelty``
  through a 300-row empirical calibration fell from 67.0 to 57-60 (standard profile).
- ``fusion``: ``"mean"`` (weighted mean of the surprises, the default) or ``"max"`` (the largest
  weighted surprise, weights scaled so the largest is 1): with ``max`` one member that is sure is
  enough, as for members that look at different kinds of anomaly.
- ``shaping``: the fused surprise goes through an
  :class:`~edgeloop.detect.detectors.shaping.AlarmShaper` (one alarm per episode: a refractory
  period, escalation, a bar that rises with each alarm), the same code ``novelty`` uses per feature.
- ``preset``: named settings (:data:`PRESETS`) for a kind of stream; explicit arguments override
  them. ``"univariate"`` is for one KPI stream (what ``edgeloop eval nab`` runs, and what a device
  profile with one signal selects): two members that look at different kinds of anomaly, fused by
  ``max`` --- ``novelty``'s raw score (``shaping=False``: is this value or short shape new at all?;
  ``range_age`` 10) at the fixed scale 0.05 (5 % of the range seen is one decade: novelty's own alarm level) and
  ``context`` (is this short shape new *for this point of the signal's cycle*?) at 0.25 --- then
  ``novelty``'s alarm shaping (alarm 1 decade, refractory 100 rows, escalation x3, bar gain 1.3,
  bar half-life 2,000 rows). Warm-up 150 rows; calibration 300 rows only matters for an
  empirically calibrated member added to it. With ``novelty`` alone the scores are exactly
  ``novelty``'s divided by 0.05.

  How it was chosen (NAB, 58 files, one threshold per profile optimised over the corpus, as NAB
  does; standard / low-FP / low-FN): ``novelty`` alone 67.01 / 63.02 / 70.33; with ``context`` at
  scale 0.05 / 0.08 / 0.12 / 0.18 / 0.25 / 0.35: standard 65.2 / 68.5 / 68.5 / 68.8 / 68.6 / 67.8;
  0.25 gives 68.60 / 64.58 / 71.89 and was taken from the middle of the plateau (0.18 is 0.16
  better on the whole corpus). Split halves (even and odd files; the scale and the thresholds chosen
  on one half, scored on the other): tuned on the even files (scale 0.12), the odd ones score
  65.30 / 57.85 / 69.60; tuned on the odd files (0.25), the even ones 69.28 / 65.91 / 72.42; with
  the preset's 0.25 on both, 66.74 / 59.41 / 70.55 and 69.28 / 65.91 / 72.42; ``novelty`` alone
  65.22 / 59.52 / 68.94 and 67.73 / 64.36 / 70.45.
  Then ``novelty``'s ``range_age`` (its range forgets faster while young; see that module): 0 / 5 / 7 / 10 /
  15 / 20 / 30 give standard 68.60 / 69.09 / 69.55 / 70.16 / 69.22 / 68.70 / 68.55 on the whole corpus; 10
  gives 70.16 / 65.76 / 73.50. Chosen on the even files it is 10, and the odd ones score 69.87 / 64.74 /
  73.25; chosen on the odd files it is 10 too, and the even ones score 70.42 / 66.69 / 73.72.
  The member defaults were not tuned (blocks of 4 rows, 4 blocks, the last 8 cycles: other values
  tried moved the standard score by less than 1). A ``seasonal`` (Holt-Winters) member with a
  600-row warm-up did worse (weight 0.2: 67.6 / 55.9; weight 1: 60.6 / 44.5), and an empirical
  calibration of ``context`` much worse (47.0), as of ``novelty`` (57-60): a per-file calibration
  makes every file alarm about equally often, which a corpus-wide threshold cannot use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.detectors.shaping import AlarmShaper
from edgeloop.detect.protocol import Detector, normalise_shares
from edgeloop.detect.registry import make, register

__all__ = ["DEFAULT_MEMBERS", "PRESETS", "Calibration", "EnsembleDetector"]

DEFAULT_MEMBERS: tuple[str, ...] = ("mad",)
# Named settings for a kind of stream (see the module docstring); explicit arguments override them.
PRESETS: dict[str, dict[str, Any]] = {
    "univariate": {
        "members": ("novelty", "context"),
        "member_params": {"novelty": {"shaping": False, "range_age": 10.0}},
        "member_scales": {"novelty": 0.05, "context": 0.25},
        "warmup": 150,
        "calibration": 300,
        "fusion": "max",
        "shaping": {"alarm": 1.0, "refractory": 100, "escalate": 3.0, "bar_gain": 1.3, "bar_halflife": 2000.0},
    },
}
_LOG5 = math.log10(5.0)
_LN10 = math.log(10.0)


class Calibration:
    """Maps one member's raw scores to surprises (see the module docstring); fitted once."""

    def __init__(self, reference: F64) -> None:
        ref = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
        if ref.size == 0:
            ref = np.zeros(1)
        values, counts = np.unique(ref, return_counts=True)
        self._ref = values
        self._cdf = (np.cumsum(counts) - counts / 2.0) / ref.size  # mid-rank: ties (e.g. all 0) sit at their middle
        self.q90 = float(np.quantile(ref, 0.9))
        excess = ref[ref > self.q90] - self.q90
        tiny = 1e-9 + 1e-6 * abs(self.q90)
        self.beta = max(float(excess.mean()) if excess.size else 0.0, tiny)

    def surprise(self, s: F64) -> F64:
        s = np.asarray(s, dtype=np.float64)
        cdf = np.interp(s, self._ref, self._cdf)
        body = np.log10(0.5 / np.maximum(1.0 - cdf, 1e-12))
        tail = _LOG5 + (s - self.q90) / (self.beta * _LN10)
        out: F64 = np.maximum(np.where(s > self.q90, np.maximum(tail, body), body), 0.0)
        return out


class FixedScale:
    """The calibration of a member whose scores are already relative to the asset's own data (``member_scales``):
    ``surprise(s) = s / scale``, so the member's score ``scale`` counts as one decade of rarity."""

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError("ensemble: member scales must be > 0")
        self.scale = scale

    def surprise(self, s: F64) -> F64:
        out: F64 = np.maximum(np.asarray(s, dtype=np.float64), 0.0) / self.scale
        return out


@register
class EnsembleDetector:
    name = "ensemble"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int | None = None, calibration: int | None = None,
                 members: Sequence[str] | None = None, weights: Sequence[float] | None = None,
                 member_params: Mapping[str, Mapping[str, Any]] | None = None, fusion: str | None = None,
                 shaping: Mapping[str, float] | None = None, member_scales: Mapping[str, float] | None = None,
                 preset: str | None = None) -> None:
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"ensemble: unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
        base = PRESETS[preset] if preset is not None else {}
        warmup = warmup if warmup is not None else int(base.get("warmup", 600))
        calibration = calibration if calibration is not None else base.get("calibration")
        members = members if members is not None else base.get("members", DEFAULT_MEMBERS)
        member_params = member_params if member_params is not None else base.get("member_params")
        fusion = fusion if fusion is not None else str(base.get("fusion", "mean"))
        shaping = shaping if shaping is not None else base.get("shaping")
        member_scales = dict(member_scales if member_scales is not None else base.get("member_scales", {}))
        if fusion not in ("mean", "max"):
            raise ValueError("ensemble: fusion is 'mean' or 'max'")
        if not members or "ensemble" in members:
            raise ValueError("ensemble: members must be a non-empty list of other detectors")
        params = dict(member_params or {})
        strays = sorted((set(params) | set(member_scales)) - set(members))
        if strays:
            raise ValueError(f"ensemble: member_params or member_scales for detectors that are not members: {strays}")
        self.n_features = n_features
        self.members: list[Detector] = [make(m, n_features, seed=seed + i, **{"warmup": warmup, **params.get(m, {})})
                                        for i, m in enumerate(members)]
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("ensemble: one non-negative weight per member, not all zero")
        self.weights = w / w.sum()
        self.warmup = warmup
        self.calibration = calibration if calibration is not None else max(warmup, 64)
        self.fusion = fusion
        # each member calibrates on the ``calibration`` rows after its own warm-up (never before the ensemble's)
        self._skips = [max(warmup, int(getattr(m, "warmup", warmup))) for m in self.members]
        self._fixed = [FixedScale(float(member_scales[m])) if m in member_scales else None for m in members]
        self._ends = [s + (0 if f is not None else self.calibration) for s, f in zip(self._skips, self._fixed,
                                                                                       strict=True)]
        self._shaper = (AlarmShaper(alarm=float(shaping.get("alarm", 2.0)),
                                    refractory=int(shaping.get("refractory", 100)),
                                    escalate=float(shaping.get("escalate", 3.0)),
                                    bar_gain=float(shaping.get("bar_gain", 1.3)),
                                    bar_halflife=float(shaping.get("bar_halflife", 2000.0)))
                        if shaping is not None else None)
        self._seen_total = 0  # rows seen
        self._calib_rows: list[list[F64]] = [[] for _ in self.members]  # each member's raw calibration scores
        self._cal: list[Calibration | FixedScale | None] = [None] * len(self.members)

    @property
    def warmed_up(self) -> bool:
        return any(c is not None for c in self._cal)

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        self.score_learn_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def score_one(self, x: F64) -> float:
        if not self.warmed_up:
            return 0.0
        raw = np.array([[m.score_one(x) for m in self.members]])
        fused = float(self._fuse(raw)[0])
        return self._shaper.shape(fused, self._seen_total, False) if self._shaper is not None else fused

    def member_surprises(self, x: F64) -> F64:
        """Each member's surprise for one row against the current state (0 for a member not calibrated yet)."""
        if not self.warmed_up:
            return np.zeros(len(self.members))
        raw = np.array([[m.score_one(x) for m in self.members]])
        row: F64 = self._surprises(raw)[0]
        return row

    def explain_one(self, x: F64) -> F64:
        sur = self.member_surprises(x) * self.weights
        if not sur.sum() > 0 or (self._shaper is not None and not self.score_one(x) > 0):
            return np.zeros(self.n_features)
        total = np.zeros(self.n_features)
        for share, member in zip(sur / sur.sum(), self.members, strict=True):
            if share > 0:
                total += share * member.explain_one(x)
        return normalise_shares(total)

    def score_learn_many(self, X: F64) -> F64:
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        n = X.shape[0]
        raw = np.column_stack([m.score_learn_many(X) for m in self.members]) if n else \
            np.zeros((0, len(self.members)))
        first = self._seen_total  # the ensemble's clock: row index of X[0]
        self._seen_total += n
        start = n  # the first row any member scores on its calibration
        for j in range(len(self.members)):
            # member j learns until row skip_j (its warm-up, counted on the ensemble's clock: a member is warm
            # from the row after its warm-up ends), calibrates on the next ``calibration`` rows, then scores
            end = self._ends[j]
            if self._cal[j] is None and self._fixed[j] is not None and first + n >= end:
                self._cal[j] = self._fixed[j]
            if self._cal[j] is None:
                lo, hi = max(self._skips[j] - first, 0), min(end - first, n)
                if hi > lo:
                    self._calib_rows[j].append(raw[lo:hi, j])
                if first + n >= end:
                    rows = self._calib_rows[j]
                    self._cal[j] = Calibration(np.concatenate(rows) if rows else np.zeros(0))
                    self._calib_rows[j] = []
            if self._cal[j] is not None:
                start = min(start, max(end - first, 0))
        scores = np.zeros(n)
        if start < n:
            # rows where a member is still calibrating get its surprise 0 and no weight (see _fuse)
            scores[start:] = self._fuse(raw[start:], first + start)
        if self._shaper is not None:
            for i in range(start, n):
                scores[i] = self._shaper.shape(float(scores[i]), first + i, True)
        return scores

    # ------------------------------------------------------------------ internals
    def _live(self, rows: int, first: int) -> F64:
        """``(rows, members)``: 1 where member j scores on its calibration (from row ``first`` on), else 0."""
        ends = np.array([e if c is not None else np.inf for e, c in zip(self._ends, self._cal, strict=True)])
        live: F64 = (first + np.arange(rows)[:, None] >= ends[None, :]).astype(np.float64)
        return live

    def _surprises(self, raw: F64, first: int | None = None) -> F64:
        live = self._live(raw.shape[0], self._seen_total if first is None else first)
        sur = np.column_stack([c.surprise(raw[:, j]) if c is not None else np.zeros(raw.shape[0])
                               for j, c in enumerate(self._cal)])
        out: F64 = sur * live
        return out

    def _fuse(self, raw: F64, first: int | None = None) -> F64:
        live = self._live(raw.shape[0], self._seen_total if first is None else first)
        sur = self._surprises(raw, first)
        if self.fusion == "max":
            fused: F64 = (sur * (self.weights / self.weights.max())).max(axis=1)
            return fused
        if live.all():
            fused = sur @ self.weights
            return fused
        weight = live @ self.weights
        fused = np.where(weight > 0, (sur @ self.weights) / np.where(weight > 0, weight, 1.0), 0.0)
        return fused
