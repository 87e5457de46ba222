"""``mahalanobis``: the multivariate baseline, a robust Mahalanobis distance from the warm-up.

Warm-up (``warmup`` rows): each feature's location and spread are its mean and standard deviation over its present
values; the correlations come from the complete rows (a diagonal model when fewer than ``2 * n_features + 2`` rows
are complete). One reweighting step makes the model robust, as in the reweighting step of MCD: rows whose squared
distance exceeds the chi-square 0.975 quantile are dropped and the model is refitted on the rest. The covariance is
shrunk towards its diagonal by ``shrinkage``, and each spread is floored at ``rel_floor`` of the feature's level
(and at a tiny fraction of it, for features that were constant during warm-up), so a constant feature never
divides by zero and a small wander of a large level is not an anomaly.

A row's score is the Mahalanobis distance ``d = sqrt(r' S^-1 r)``, ``r = x - m``, of its present features in the
marginal model of those features (``S`` restricted to them): a missing value is integrated out, never read as
zero. The range is ``[0, inf)``; with normal data ``d**2`` is about chi-square with as many degrees of freedom as
present features. The explanation gives feature ``j`` the share of ``r_j (S^-1 r)_j`` (these terms sum to
``d**2``), clipped at zero and normalised.

With ``refit_every = K > 0`` the model follows slow change: after every K learned rows (counted from the end of
the warm-up, so batching does not move the boundaries) the mean and covariance move by ``refit_weight`` towards
those of the block's complete rows that scored under the chi-square 0.99 quantile (anomalies are not learned).
With ``refit_every = 0`` (the default) the warm-up model is kept.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

from edgeloop.detect._numeric import F64, Bool
from edgeloop.detect.protocol import WarmupDetector, normalise_shares
from edgeloop.detect.registry import register

__all__ = ["MahalanobisDetector"]

Idx = npt.NDArray[np.intp]
_TINY = 1e-6  # spread floor, relative to max(|level|, 1): constant features


@register
class MahalanobisDetector(WarmupDetector):
    name = "mahalanobis"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 200, shrinkage: float = 0.1,
                 rel_floor: float = 0.0, refit_every: int = 0, refit_weight: float = 0.1) -> None:
        if n_features < 1 or warmup < 2 or not 0.0 <= shrinkage <= 1.0 or rel_floor < 0 or refit_every < 0 \
                or not 0.0 < refit_weight <= 1.0:
            raise ValueError("mahalanobis: need n_features >= 1, warmup >= 2, 0 <= shrinkage <= 1, rel_floor >= 0, "
                             "refit_every >= 0, 0 < refit_weight <= 1")
        super().__init__(n_features, warmup)
        self.seed = seed  # deterministic: the seed is not used
        self.shrinkage = shrinkage
        self.rel_floor = rel_floor
        self.refit_every = refit_every
        self.refit_weight = refit_weight
        self._block: list[F64] = []
        self._m = np.zeros(n_features)
        self._cov = np.eye(n_features)
        self._floor = np.ones(n_features)
        self._cut_fit = float(chi2.ppf(0.975, n_features))
        self._cut_refit = float(chi2.ppf(0.99, n_features))
        self._inv: dict[bytes, tuple[Idx, F64]] = {}  # present-pattern -> (indices, inverse of S restricted)

    # ------------------------------------------------------------------ protocol (see WarmupDetector)
    def _score(self, x: F64) -> float:
        return float(self._scores(x[None, :])[0])

    def _explain(self, x: F64) -> F64:
        present = np.isfinite(x)
        contrib = np.zeros(self.n_features)
        if present.any():
            idx, inv = self._inverse(present)
            r = x[idx] - self._m[idx]
            contrib[idx] = r * (inv @ r)
        return normalise_shares(contrib)

    def _run(self, X: F64) -> F64:
        """Score then learn rows after the warm-up; with ``refit_every`` the model moves at fixed row counts."""
        scores = np.zeros(X.shape[0])
        start = 0
        while start < X.shape[0]:
            stop = X.shape[0] if self.refit_every == 0 else \
                min(X.shape[0], start + self.refit_every - len(self._block))
            part = X[start:stop]
            scores[start:stop] = self._scores(part)
            if self.refit_every:
                self._block.extend(part)
                if len(self._block) >= self.refit_every:
                    self._refit(np.array(self._block))
                    self._block = []
            start = stop
        return scores

    # ------------------------------------------------------------------ model
    def _fit(self, W: F64) -> None:
        self._set_model(*self._estimate(W))
        keep = self._d2(W) <= self._cut_fit
        if keep.sum() >= 2 * self.n_features + 2 and not keep.all():
            self._set_model(*self._estimate(W[keep]))

    def _estimate(self, W: F64) -> tuple[F64, F64]:
        """Mean and covariance: per-feature moments over present values, correlations over complete rows."""
        p = self.n_features
        valid = np.isfinite(W)
        counts = valid.sum(axis=0)
        m = np.where(counts > 0, np.nansum(np.where(valid, W, 0.0), axis=0) / np.maximum(counts, 1), 0.0)
        dev = np.where(valid, W - m, 0.0)
        var = (dev * dev).sum(axis=0) / np.maximum(counts - 1, 1)
        complete = W[valid.all(axis=1)]
        corr = np.eye(p)
        if complete.shape[0] >= 2 * p + 2:
            c = np.cov(complete, rowvar=False).reshape(p, p)
            sd = np.sqrt(np.diag(c))
            ok = sd > 0
            corr[np.ix_(ok, ok)] = c[np.ix_(ok, ok)] / np.outer(sd[ok], sd[ok])
            np.fill_diagonal(corr, 1.0)
        sd_all = np.sqrt(var)
        return m, corr * np.outer(sd_all, sd_all)

    def _set_model(self, m: F64, cov: F64) -> None:
        self._floor = np.maximum(self.rel_floor * np.abs(m), _TINY * np.maximum(np.abs(m), 1.0))
        self._m = m
        self._cov = cov
        self._inv = {}

    def _effective_cov(self) -> F64:
        cov = (1.0 - self.shrinkage) * self._cov + self.shrinkage * np.diag(np.diag(self._cov))
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        target = np.maximum(sd, self._floor)
        scale = target / np.where(sd > 0, sd, 1.0)
        eff: F64 = cov * np.outer(scale, scale)
        np.fill_diagonal(eff, target * target)
        return eff

    def _inverse(self, present: Bool) -> tuple[Idx, F64]:
        """The present features' indices and the inverse of their covariance (cached per pattern)."""
        key = np.packbits(present).tobytes()
        got = self._inv.get(key)
        if got is None:
            idx: Idx = np.flatnonzero(present)
            inv: F64 = np.linalg.pinv(self._effective_cov()[np.ix_(idx, idx)], hermitian=True).astype(np.float64)
            got = (idx, inv)
            self._inv[key] = got
        return got

    def _d2(self, X: F64) -> F64:
        """Squared distances of rows (NaN = missing: the marginal of the present features)."""
        out = np.zeros(X.shape[0])
        valid = np.isfinite(X)
        if valid.all():  # the common case: one pattern
            idx, inv = self._inverse(valid[0]) if X.shape[0] else (np.arange(0), np.zeros((0, 0)))
            r = X - self._m
            d2: F64 = np.maximum(np.einsum("ij,jk,ik->i", r, inv, r), 0.0)
            return d2
        patterns, inverse = np.unique(valid, axis=0, return_inverse=True)
        for k, present in enumerate(patterns):
            if not present.any():
                continue
            rows = np.flatnonzero(inverse.reshape(-1) == k)
            idx, inv = self._inverse(present)
            r = X[np.ix_(rows, idx)] - self._m[idx]
            out[rows] = np.einsum("ij,jk,ik->i", r, inv, r)
        res: F64 = np.maximum(out, 0.0)
        return res

    def _scores(self, X: F64) -> F64:
        s: F64 = np.sqrt(self._d2(X))
        return s

    def _refit(self, B: F64) -> None:
        complete = B[np.isfinite(B).all(axis=1)]
        if complete.shape[0] < 2:
            return
        complete = complete[self._d2(complete) <= self._cut_refit]
        if complete.shape[0] < 2:
            return
        w = self.refit_weight
        m_b = complete.mean(axis=0)
        c_b = np.cov(complete, rowvar=False).reshape(self.n_features, self.n_features)
        d = m_b - self._m
        self._set_model(self._m + w * d, (1.0 - w) * self._cov + w * c_b + w * (1.0 - w) * np.outer(d, d))
