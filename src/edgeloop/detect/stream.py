"""``ensemble-univariate-v1``: the platform's detector for KPI streams (pure code, no I/O).

A device profile with ``detector: univariate`` (a stream of one or a few independent KPIs: a CPU load, a
request rate, a tank level) is scored by the ``ensemble`` detector's ``univariate`` preset, the very
detector ``edgeloop eval nab`` evaluates: novelty and context members fused by max, with the alarm shaping
that raises one alarm per episode. A row whose shaped score reaches ``threshold`` (default 1.10, the
threshold NAB's optimiser chose for the standard profile over the 58-file corpus) becomes an anomaly
:class:`Finding`, explained by each channel's share.

The interface matches :class:`~edgeloop.detect.robust.AssetDetector` (``process(ts, x) -> findings``), so
the scoring stage treats both alike. Rows whose time is not after the previous row are dropped (counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.finding import Finding, FindingKind
from edgeloop.detect.registry import make

__all__ = ["NAB_STANDARD_THRESHOLD", "UnivariateStreamDetector"]

NAB_STANDARD_THRESHOLD = 1.0857  # `edgeloop eval nab --json` -> thresholds.standard for the default ensemble


class UnivariateStreamDetector:
    """Per device: the univariate ensemble over its channels; one finding per alarm."""

    name: ClassVar[str] = "ensemble-univariate-v1"

    def __init__(self, *, channels: Sequence[str], threshold: float = NAB_STANDARD_THRESHOLD, seed: int = 0,
                 critical_score: float = 3.0) -> None:
        self.channels: tuple[str, ...] = tuple(channels)
        if not self.channels or threshold <= 0:
            raise ValueError("need at least one channel and threshold > 0")
        self.threshold = threshold
        self.critical_score = critical_score
        self.detector = make("ensemble", len(self.channels), seed=seed, preset="univariate")
        self.samples_seen = 0
        self.samples_dropped = 0
        self._last_ts: int | None = None
        self.last_scores: F64 = np.zeros(0)  # the last batch's kept rows' scores over the threshold (1.0 = threshold)

    @property
    def warmed_up(self) -> bool:
        return self.detector.warmed_up

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        tsa = np.asarray(ts, dtype=np.int64).reshape(-1)
        xa = np.asarray(x, dtype=np.float64).reshape(tsa.shape[0], len(self.channels))
        self.last_scores = np.zeros(0)
        if tsa.size == 0:
            return []
        prev = self._last_ts if self._last_ts is not None else np.iinfo(np.int64).min
        keep = tsa > np.maximum.accumulate(np.concatenate([[prev], tsa[:-1]]))
        if not keep.all():
            self.samples_dropped += int((~keep).sum())
            tsa, xa = tsa[keep], xa[keep]
            if tsa.size == 0:
                return []
        xa = np.where(np.isfinite(xa), xa, np.nan)
        scores = self.detector.score_learn_many(xa)
        self.last_scores = scores / self.threshold
        self.samples_seen += tsa.size
        self._last_ts = int(tsa[-1])
        hits = np.flatnonzero(scores >= self.threshold)
        return [self._finding(int(tsa[i]), float(scores[i]) / self.threshold, xa[i]) for i in hits.tolist()]

    def _finding(self, ts: int, score: float, row: F64) -> Finding:
        shares = self.detector.explain_one(row)
        if not shares.sum() > 0:
            shares = np.full(len(self.channels), 1.0 / len(self.channels))
        explanation = {c: float(s) for c, s in zip(self.channels, shares, strict=True) if s > 0}
        top = max(explanation, key=explanation.__getitem__)
        return Finding(ts=ts, kind=FindingKind.ANOMALY, severity="critical" if score >= self.critical_score
                       else "warning", score=score, explanation=explanation,
                       message=f"{top} behaves unlike its own history ({round(100 * explanation[top])} % of the "
                               f"anomaly)")
