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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.protocol import Detector, normalise_shares
from edgeloop.detect.registry import make, register

__all__ = ["DEFAULT_MEMBERS", "Calibration", "EnsembleDetector"]

DEFAULT_MEMBERS: tuple[str, ...] = ("mad",)
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


@register
class EnsembleDetector:
    name = "ensemble"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 600, calibration: int | None = None,
                 members: Sequence[str] = DEFAULT_MEMBERS, weights: Sequence[float] | None = None,
                 member_params: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if not members or "ensemble" in members:
            raise ValueError("ensemble: members must be a non-empty list of other detectors")
        params = dict(member_params or {})
        strays = sorted(set(params) - set(members))
        if strays:
            raise ValueError(f"ensemble: member_params for detectors that are not members: {strays}")
        self.n_features = n_features
        self.members: list[Detector] = [make(m, n_features, seed=seed + i, warmup=warmup, **params.get(m, {}))
                                        for i, m in enumerate(members)]
        w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("ensemble: one non-negative weight per member, not all zero")
        self.weights = w / w.sum()
        self.warmup = warmup
        self.calibration = calibration if calibration is not None else max(warmup, 64)
        self._seen_total = 0  # rows seen
        self._seen = 0  # calibration rows collected
        self._calib_rows: list[F64] = []  # (rows, members) raw scores of the calibration period
        self._cal: list[Calibration] | None = None

    @property
    def warmed_up(self) -> bool:
        return self._cal is not None

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        self.score_learn_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def score_one(self, x: F64) -> float:
        if self._cal is None:
            return 0.0
        raw = np.array([[m.score_one(x) for m in self.members]])
        return float(self._fuse(raw)[0])

    def member_surprises(self, x: F64) -> F64:
        """Each member's surprise for one row against the current state (zeros before calibration)."""
        if self._cal is None:
            return np.zeros(len(self.members))
        raw = np.array([[m.score_one(x) for m in self.members]])
        row: F64 = self._surprises(raw)[0]
        return row

    def explain_one(self, x: F64) -> F64:
        sur = self.member_surprises(x) * self.weights
        if not sur.sum() > 0:
            return np.zeros(self.n_features)
        total = np.zeros(self.n_features)
        for share, member in zip(sur / sur.sum(), self.members, strict=True):
            if share > 0:
                total += share * member.explain_one(x)
        return normalise_shares(total)

    def score_learn_many(self, X: F64) -> F64:
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        raw = np.column_stack([m.score_learn_many(X) for m in self.members]) if X.shape[0] else \
            np.zeros((0, len(self.members)))
        n = X.shape[0]
        scores = np.zeros(n)
        start = 0
        if self._cal is None:
            ready = np.ones(n, dtype=bool)
            # a member is warm from the row after its warm-up ends: rows it scored 0 before then are not
            # part of its calibration; count warm-up rows by the ensemble's own clock
            skip = max(0, self.warmup - self._seen_total)
            self._seen_total += n
            ready[:skip] = False
            rows = raw[ready]
            need = self.calibration - self._seen
            take = rows[:need]
            self._calib_rows.append(take)
            self._seen += take.shape[0]
            start = min(n, skip + take.shape[0])
            if self._seen >= self.calibration:
                ref = np.concatenate(self._calib_rows)
                self._cal = [Calibration(ref[:, j]) for j in range(len(self.members))]
                self._calib_rows = []
        else:
            self._seen_total += n
        if start < n and self._cal is not None:
            scores[start:] = self._fuse(raw[start:])
        return scores

    # ------------------------------------------------------------------ internals
    def _surprises(self, raw: F64) -> F64:
        assert self._cal is not None
        return np.column_stack([c.surprise(raw[:, j]) for j, c in enumerate(self._cal)])

    def _fuse(self, raw: F64) -> F64:
        fused: F64 = self._surprises(raw) @ self.weights
        return fused
