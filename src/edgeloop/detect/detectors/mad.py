"""``mad``: the robust univariate baseline, one independent score per feature.

Warm-up (``warmup`` rows): each feature's median and MAD (x 1.4826, a sigma for normal data)
start the state. After that, the location and spread follow EWMAs (half-life ``halflife`` rows):
``m <- m + (1 - a)(x - m)`` and ``s <- s + (1 - a)(1.2533 |x - m_prev| - s)``. A row's score is
the largest ``|x_j - m_j| / s_j`` over its present features (a z-score: range ``[0, inf)``); the
explanation gives feature ``j`` the share ``z_j**2 / sum(z**2)``.

The spread never falls below ``floor_frac`` of the warm-up spread (nor below a tiny fraction of
the level, for features that were constant during warm-up), so a quiet stretch does not turn
ordinary noise into alarms. Missing values (NaN) hold the state of their feature.
"""

from __future__ import annotations

import math

import numpy as np

from edgeloop.detect._numeric import F64, ewma
from edgeloop.detect.protocol import WarmupDetector, normalise_shares
from edgeloop.detect.registry import register

__all__ = ["MadDetector"]

_MAD_TO_SIGMA = 1.4826
_ABS_TO_SIGMA = math.sqrt(math.pi / 2.0)  # E|x - mu| = sigma * sqrt(2 / pi) for normal data


@register
class MadDetector(WarmupDetector):
    name = "mad"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 200, halflife: float = 2000.0,
                 floor_frac: float = 0.5) -> None:
        if n_features < 1 or warmup < 2 or halflife <= 0 or floor_frac < 0:
            raise ValueError("mad: need n_features >= 1, warmup >= 2, halflife > 0, floor_frac >= 0")
        super().__init__(n_features, warmup)
        self.seed = seed  # deterministic: the seed is not used
        self._log_a = math.log(0.5) / halflife
        self.floor_frac = floor_frac
        self._m = np.zeros(n_features)
        self._s = np.ones(n_features)
        self._floor = np.ones(n_features)

    # ------------------------------------------------------------------ protocol (see WarmupDetector)
    def _score(self, x: F64) -> float:
        return float(self._z(x[None, :], self._m[None, :], self._spread()).max())

    def _explain(self, x: F64) -> F64:
        z = self._z(x[None, :], self._m[None, :], self._spread())[0]
        return normalise_shares(z * z)

    # ------------------------------------------------------------------ internals
    def _fit(self, w: F64) -> None:
        valid = np.isfinite(w)
        med = np.array([np.median(w[valid[:, j], j]) if valid[:, j].any() else 0.0 for j in range(w.shape[1])])
        mad = np.array([np.median(np.abs(w[valid[:, j], j] - med[j])) if valid[:, j].any() else 0.0
                        for j in range(w.shape[1])]) * _MAD_TO_SIGMA
        std = np.array([np.std(w[valid[:, j], j]) if valid[:, j].any() else 0.0 for j in range(w.shape[1])])
        spread = np.where(mad > 0, mad, std)  # a mostly-constant feature with rare steps: its std
        tiny = 1e-6 * np.maximum(np.abs(med), 1.0)
        self._floor = np.maximum(self.floor_frac * spread, tiny)
        self._m = med
        self._s = spread

    def _spread(self) -> F64:
        s: F64 = np.maximum(self._s, self._floor)[None, :]
        return s

    @staticmethod
    def _z(X: F64, m: F64, s: F64) -> F64:
        z = np.abs(X - m) / s
        return np.where(np.isfinite(z), z, 0.0)

    def _run(self, X: F64) -> F64:
        n = X.shape[0]
        valid = np.isfinite(X)
        ld = np.full(n, self._log_a)
        m_after = ewma(X, valid, ld, self._m)
        m_before = np.vstack([self._m[None, :], m_after[:-1]])
        dev = _ABS_TO_SIGMA * np.abs(X - m_before)
        s_after = ewma(dev, valid, ld, self._s)  # the state is unfloored: the floor applies when scoring
        s_before = np.maximum(np.vstack([self._s[None, :], s_after[:-1]]), self._floor)
        z = self._z(X, m_before, s_before)
        self._m = m_after[-1]
        self._s = s_after[-1]
        best: F64 = z.max(axis=1)
        return best
