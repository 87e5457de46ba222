"""The tree detectors beyond the shared conformance suite: ``hst`` (river's Half-Space Trees) and
``iforest`` (scikit-learn's Isolation Forest scored through ONNX Runtime, explained with SHAP).

No timing asserts here: speed is measured outside the tests.
"""

from __future__ import annotations

import math

import numpy as np

from edgeloop.detect.detectors.hst import HalfSpaceTreesDetector
from edgeloop.detect.registry import make

N = 8


def _plant(n: int, seed: int = 0) -> np.ndarray:
    """Eight correlated channels around different levels (one common driver, like a real asset)."""
    rng = np.random.default_rng(seed)
    load = rng.normal(0.0, 1.0, size=(n, 1))
    noise = rng.normal(0.0, 1.0, size=(n, N))
    return 20.0 + 2.0 * (0.7 * load + 0.7 * noise) + np.arange(N) * 5.0


# ---------------------------------------------------------------------------- hst
def test_hst_path_decomposition_sums_to_the_score() -> None:
    det = make("hst", N, seed=1, warmup=200)
    assert isinstance(det, HalfSpaceTreesDetector)
    det.score_learn_many(_plant(1000))
    for x in _plant(20, seed=5):
        u, _ = det._scaled(x.reshape(1, -1))
        contrib = det.path_contributions(u[0])
        assert (contrib >= 0).all()
        assert math.isclose(float(contrib.sum()), det.score_one(x), rel_tol=1e-9, abs_tol=1e-12)


def test_hst_explanation_points_at_the_faulty_channel_on_eight_channels() -> None:
    det = make("hst", N, seed=2, warmup=200)
    det.score_learn_many(_plant(1500))
    normal = det.score_learn_many(_plant(300, seed=7))
    caught = 0
    for channel in range(N):
        fault = _plant(1, seed=20 + channel)[0]
        fault[channel] -= 30.0  # 15 sigma down on one channel
        caught += det.score_one(fault) > np.quantile(normal, 0.99)
        shares = det.explain_one(fault)
        assert math.isclose(float(shares.sum()), 1.0, rel_tol=1e-9)
        assert int(np.argmax(shares)) == channel and shares[channel] > 0.5
    # HST isolates a one-channel fault only in the trees that split that channel near the root:
    # with 8 channels it misses some (see the report); most must still clear the 99th percentile.
    assert caught >= 7


def test_hst_does_not_learn_rows_with_missing_values() -> None:
    det = make("hst", N, seed=3, warmup=100)
    X = _plant(400)
    det.score_learn_many(X)
    before = [t.l_mass for t in det._hst.trees]
    holes = _plant(10, seed=1)
    holes[:, 4] = np.nan
    s = det.score_learn_many(holes)
    assert np.isfinite(s).all() and (s > 0).all()
    assert [t.l_mass for t in det._hst.trees] == before
