"""A platform detector's scores of its last batch on one scale: 1.0 = its threshold (what a model card's score
quantiles, the drift monitor's score bins and a campaign's score gate compare)."""

from __future__ import annotations

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.robust import AssetDetector
from edgeloop.detect.stream import UnivariateStreamDetector

__all__ = ["threshold_scores"]


def threshold_scores(det: AssetDetector | TrainedBaselineDetector | UnivariateStreamDetector, n: int) -> F64:
    """The last batch's scores with 1.0 = the threshold, one per row of a batch of ``n`` rows (NaN: not scored,
    and for rows the detector dropped as out of time order, at the end)."""
    raw = np.asarray(det.last_scores, dtype=np.float64)
    if isinstance(det, TrainedBaselineDetector):
        raw = raw / det.threshold if det.warmed_up else np.full(raw.shape, np.nan)
    out: F64 = raw if raw.size == n else np.concatenate([raw, np.full(max(n - raw.size, 0), np.nan)])[:n]
    return out
