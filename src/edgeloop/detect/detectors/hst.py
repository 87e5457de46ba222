"""``hst``: Half-Space Trees (Tan, Ting & Liu 2011), river's ``anomaly.HalfSpaceTrees``, seeded.

Warm-up (``warmup`` rows): each feature's min and max over its present values fix an affine map
that puts the warm-up range on ``[margin, 1 - margin]`` of the unit interval; values outside are
clipped to ``[0, 1]`` (HST's trees split the unit cube). A feature that was constant during
warm-up gets a tiny span (``1e-6 * max(|level|, 1)``), so any later change clips to an edge.
At the end of the warm-up its complete rows are learned, which fills HST's first reference window
(``window_size`` is capped at the number of complete warm-up rows so it is ready right away).

After that each row is *scored, then learned*, one river call each (river is per-row; the batched
path is the same loop without the per-call overhead). The score is river's: ``1 - mass/max_mass``
in ``[0, 1]``, higher is more anomalous (a row in an empty region of the reference window scores
near 1; typical rows score ~0.1-0.6 depending on ``height`` and the data). Scores are ``0.0`` until
warmed up.

Missing values (NaN): for scoring, a missing feature takes its warm-up median (so a missing value
never scores like a zero); a row with any missing value is *not learned* (HST counts whole rows in
its node masses); a row with no present value scores ``0.0``.

Explanation (``explain_one``): leave-one-feature-out re-scoring. Feature ``j``'s contribution is
``score(x) - score(x with x_j := warm-up median_j)``, clipped at 0 and normalised: how much of
the anomaly goes away when that one feature is made typical. When no single feature lowers the
score (a typical row, or an anomaly spread over features), it falls back to the exact path
decomposition of river's score: per tree, along the row's path the reference mass drops from
``W`` at the root to ``m_k`` at depth ``k``; ``1 - score`` is ``sum_k m_k 2^k / max`` and the score
is the sum of each split's mass drop ``m_k - m_{k+1}`` weighted by ``2^{h+1} - 2^{k+1}`` (the
levels below it that lose that mass), credited to the split's feature; where river stops early
(mass below its size limit) the rest of the mass counts as dropped at that node. These shares sum
exactly to the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import anomaly

from edgeloop.detect._numeric import F64, Bool
from edgeloop.detect.protocol import normalise_shares
from edgeloop.detect.registry import register

__all__ = ["HalfSpaceTreesDetector"]


@register
class HalfSpaceTreesDetector:
    """Half-Space Trees on min-max scaled features; score in ``[0, 1]`` (see the module docstring)."""

    name = "hst"
    score_range = (0.0, 1.0)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 250, n_trees: int = 25,
                 height: int = 8, window_size: int = 250, margin: float = 0.45) -> None:
        if n_features < 1 or warmup < 2 or n_trees < 1 or height < 1 or window_size < 2 \
                or not 0.0 <= margin < 0.5:
            raise ValueError("hst: need n_features >= 1, warmup >= 2, n_trees >= 1, height >= 1, "
                             "window_size >= 2, 0 <= margin < 0.5")
        self.n_features = n_features
        self.seed = seed
        self.warmup = warmup
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.margin = margin
        self._warm: list[F64] = []
        self._ready = False
        self._lo = np.zeros(n_features)
        self._scale = np.ones(n_features)
        self._median_u = np.full(n_features, 0.5)
        self._keys = list(range(n_features))
        self._hst: Any = None  # river.anomaly.HalfSpaceTrees once the warm-up is over

    @property
    def warmed_up(self) -> bool:
        """True once the warm-up is over and HST's first reference window is full."""
        return self._ready and not self._hst._first_window

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        """Learn one row (a row with a missing value is not learned after warm-up)."""
        self.score_learn_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def score_one(self, x: F64) -> float:
        """HST score of one row in ``[0, 1]`` (``0.0`` while warming up or when all values are missing)."""
        if not self._ready:
            return 0.0
        u, present = self._scaled(np.asarray(x, dtype=np.float64).reshape(1, -1))
        if not present[0]:
            return 0.0
        return self._river_score(u[0])

    def score_learn_many(self, X: F64) -> F64:
        """Score then learn each row in order (a loop of river calls); return the ``(n,)`` scores."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        scores = np.zeros(X.shape[0])
        start = 0
        if not self._ready:
            need = self.warmup - len(self._warm)
            self._warm.extend(X[:need])
            start = min(need, X.shape[0])
            if len(self._warm) >= self.warmup:
                self._finish_warmup()
        if start >= X.shape[0]:
            return scores
        U, present = self._scaled(X[start:])
        complete: list[bool] = np.asarray(np.isfinite(X[start:]).all(axis=1), dtype=np.bool_).tolist()
        hst = self._hst
        keys = self._keys
        for i, (row, has_any, learn) in enumerate(zip(U.tolist(), present.tolist(), complete,
                                                               strict=True)):
            d = dict(zip(keys, row, strict=True))
            if has_any and not hst._first_window:
                scores[start + i] = float(hst.score_one(d))
            if learn:
                hst.learn_one(d)
        return scores

    def explain_one(self, x: F64) -> F64:
        """Each feature's share of the HST score of ``x``: leave-one-feature-out, else the path decomposition."""
        if not self.warmed_up:
            return np.zeros(self.n_features)
        u_all, present = self._scaled(np.asarray(x, dtype=np.float64).reshape(1, -1))
        if not present[0]:
            return np.zeros(self.n_features)
        u = u_all[0]
        s0 = self._river_score(u)
        if s0 <= 0.0:
            return np.zeros(self.n_features)
        delta = np.zeros(self.n_features)
        for j in range(self.n_features):
            v = u.copy()
            v[j] = self._median_u[j]
            delta[j] = s0 - self._river_score(v)
        shares = normalise_shares(delta)
        if shares.sum() > 0.0:
            return shares
        return normalise_shares(self.path_contributions(u))

    # ------------------------------------------------------------------ internals
    def _finish_warmup(self) -> None:
        w = np.array(self._warm)
        self._warm = []
        valid = np.isfinite(w)
        lo = np.zeros(self.n_features)
        hi = np.zeros(self.n_features)
        med = np.zeros(self.n_features)
        for j in range(self.n_features):
            col = w[valid[:, j], j]
            if col.size:
                lo[j], hi[j], med[j] = col.min(), col.max(), float(np.median(col))
        span = hi - lo
        tiny = 1e-6 * np.maximum(np.abs(lo), 1.0)
        span = np.where(span > tiny, span, tiny)
        self._lo = lo
        self._scale = (1.0 - 2.0 * self.margin) / span
        self._median_u = np.clip(self.margin + (med - lo) * self._scale, 0.0, 1.0)
        complete = w[valid.all(axis=1)]
        window = max(2, min(self.window_size, complete.shape[0]))
        self._hst = anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height, window_size=window,
                                           seed=self.seed)
        for row in self._scaled(complete)[0].tolist():
            self._hst.learn_one(dict(zip(self._keys, row, strict=True)))
        self._ready = True

    def _scaled(self, X: F64) -> tuple[F64, Bool]:
        """Rows mapped to ``[0, 1]`` with missing values at the warm-up median; and 'any value present'."""
        valid = np.isfinite(X)
        u = np.clip(self.margin + (X - self._lo) * self._scale, 0.0, 1.0)
        u = np.where(valid, u, self._median_u)
        any_present: Bool = np.asarray(valid.any(axis=1), dtype=np.bool_)
        return u, any_present

    def _river_score(self, u: F64) -> float:
        if self._hst._first_window:
            return 0.0
        return float(self._hst.score_one(dict(zip(self._keys, u.tolist(), strict=True))))

    def path_contributions(self, u: F64) -> F64:
        """The exact split of river's HST score of the scaled row ``u`` over the features it split on.

        Sums to ``score`` (to rounding): see the module docstring.
        """
        hst = self._hst
        contrib = np.zeros(self.n_features)
        size_limit = 0.1 * hst.window_size
        top = 2 ** (self.height + 1)
        for tree in hst.trees:
            node = tree
            for depth in range(self.height):
                mass = float(node.r_mass)
                if mass < size_limit:  # river stops here: the rest of the mass is lost at this split
                    contrib[node.feature] += mass * (top - 2 ** (depth + 1))
                    break
                child = node.children[0] if u[node.feature] < node.threshold else node.children[1]
                contrib[node.feature] += (mass - float(child.r_mass)) * (top - 2 ** (depth + 1))
                node = child
        out: F64 = contrib / hst._max_score
        return out
