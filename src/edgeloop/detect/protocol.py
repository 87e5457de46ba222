"""The one protocol every streaming anomaly scorer follows (pure code, no I/O).

A :class:`Detector` scores fixed-width rows: the channels of one asset, or features computed
from them. It is used in streaming order, always *score first, then learn*:

    for x in rows:
        s = det.score_one(x)     # uses only rows learned so far: no look-ahead
        det.learn_one(x)

``score_learn_many(X)`` is the batched path of exactly that loop: the scores are the same
(to floating-point rounding, ``rtol=1e-7``) and the state afterwards is the same, however the
stream is split into batches. A detector that learns in blocks (fit on a warm-up, refit every
K rows) counts the rows it has seen, so its block boundaries fall on the same rows whatever
the batching.

Conventions, checked by the shared conformance suite (``tests/test_detect_conformance.py``):

- **Scores** are finite floats ``>= 0``; higher is more anomalous. Each detector documents its
  range in ``score_range`` (``(0.0, inf)`` for unbounded scores, ``(0.0, 1.0)`` for
  probabilities). While it is warming up (``warmed_up`` is False) a detector scores ``0.0``.
- **Missing values** are ``NaN`` entries. They are never read as zero: a detector scores a row
  from its present values (``0.0`` when none are present) and learns nothing from the missing
  ones. Constant input (zero spread) must not produce NaN, inf or an exception.
- **Determinism**: randomised detectors take a ``seed``; the same seed and input give the same
  scores.
- **Explanations**: ``explain_one(x)`` gives each feature's non-negative share of the score of
  ``x`` against the current state; the shares sum to 1, or are all 0 when the score is 0 (or the
  detector is not warmed up). Statistical detectors give exact contributions; tree models give
  SHAP values (TreeExplainer), clipped at zero and normalised.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from edgeloop.detect._numeric import F64

__all__ = ["F64", "Detector", "WarmupBuffer", "WarmupDetector", "normalise_shares"]


@runtime_checkable
class Detector(Protocol):
    """A streaming anomaly scorer over rows of ``n_features`` floats (see the module docstring)."""

    name: str  # registry name, e.g. "mad", "mahalanobis", "hst", "iforest", "seasonal", "ensemble"
    n_features: int
    score_range: tuple[float, float]

    @property
    def warmed_up(self) -> bool: ...

    def learn_one(self, x: F64) -> None:
        """Update the state with one row (``(n_features,)``, NaN = missing)."""

    def score_one(self, x: F64) -> float:
        """The anomaly score of one row against the current state (no update)."""

    def score_learn_many(self, X: F64) -> F64:
        """Score then learn each row of ``X`` (``(n, n_features)``) in order; return the ``(n,)`` scores."""

    def explain_one(self, x: F64) -> F64:
        """Each feature's share of the score of ``x`` (``(n_features,)``, >= 0, sums to 1 or is all 0)."""


def normalise_shares(contrib: F64) -> F64:
    """Clip contributions at zero and scale them to sum to 1 (all zeros stay zeros; NaN counts as 0)."""
    c = np.where(np.isfinite(contrib), np.maximum(contrib, 0.0), 0.0)
    total = float(c.sum())
    if total <= 0.0:
        return np.zeros_like(c)
    shares: F64 = c / total
    return shares


class WarmupBuffer:
    """The first ``size`` rows of a stream, which a detector learns from before it scores."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: list[F64] = []

    def take(self, X: F64) -> tuple[int, F64 | None]:
        """Keep the rows of ``X`` the warm-up still needs.

        Returns the index of the first row of ``X`` after the warm-up (``len(X)`` if there is none) and, when
        this call filled the warm-up, all its rows as one ``(size, n_features)`` array (else ``None``).
        """
        need = self.size - len(self._rows)
        if need <= 0:
            return 0, None
        self._rows.extend(X[:need])
        if len(self._rows) < self.size:
            return X.shape[0], None
        rows = np.array(self._rows)
        self._rows = []
        return need, rows


class WarmupDetector:
    """Base of the detectors that learn from their first ``warmup`` rows before they score.

    It holds what they share: the warm-up buffer, the scores of 0 and the empty explanations while warming up,
    and the one-row methods of the protocol in terms of the batched path. A subclass implements ``_fit(rows)``
    (learn the warm-up), ``_run(X)`` (score then learn rows after it; the ``(n,)`` scores), and ``_score(x)``
    and ``_explain(x)`` (one 1-D row against the current state, no update).
    """

    n_features: int

    def __init__(self, n_features: int, warmup: int) -> None:
        self.n_features = n_features
        self.warmup = warmup
        self._warm = WarmupBuffer(warmup)
        self._ready = False

    @property
    def warmed_up(self) -> bool:
        return self._ready

    def learn_one(self, x: F64) -> None:
        self.score_learn_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def score_one(self, x: F64) -> float:
        if not self._ready:
            return 0.0
        return self._score(np.asarray(x, dtype=np.float64).reshape(-1))

    def explain_one(self, x: F64) -> F64:
        if not self._ready:
            return np.zeros(self.n_features)
        return self._explain(np.asarray(x, dtype=np.float64).reshape(-1))

    def score_learn_many(self, X: F64) -> F64:
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        scores = np.zeros(X.shape[0])
        start = 0
        if not self._ready:
            start, rows = self._warm.take(X)
            if rows is not None:
                self._fit(rows)
                self._ready = True
        if start < X.shape[0]:
            scores[start:] = self._run(X[start:])
        return scores

    def _fit(self, rows: F64) -> None:
        raise NotImplementedError

    def _run(self, X: F64) -> F64:
        raise NotImplementedError

    def _score(self, x: F64) -> float:
        raise NotImplementedError

    def _explain(self, x: F64) -> F64:
        raise NotImplementedError
