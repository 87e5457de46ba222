"""The tree detectors beyond the shared conformance suite: ``hst`` (river's Half-Space Trees) and
``iforest`` (scikit-learn's Isolation Forest scored through ONNX Runtime, explained with SHAP).

No timing asserts here: speed is measured outside the tests.
"""

from __future__ import annotations

import math

import numpy as np
from river import anomaly

from edgeloop.detect.detectors.hst import HalfSpaceTreesDetector
from edgeloop.detect.detectors.iforest import IsolationForestDetector
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
        caught += int(det.score_one(fault) > np.quantile(normal, 0.99))
        shares = det.explain_one(fault)
        assert math.isclose(float(shares.sum()), 1.0, rel_tol=1e-9)
        assert int(np.argmax(shares)) == channel and shares[channel] > 0.5
    # HST isolates a one-channel fault only in the trees that split that channel near the root:
    # with 8 channels it misses some (see the report); most must still clear the 99th percentile.
    assert caught >= 7


def test_hst_does_not_learn_rows_with_missing_values() -> None:
    det = make("hst", N, seed=3, warmup=100)
    assert isinstance(det, HalfSpaceTreesDetector)
    X = _plant(400)
    det.score_learn_many(X)
    before = det._l_mass.copy()
    holes = _plant(10, seed=1)
    holes[:, 4] = np.nan
    s = det.score_learn_many(holes)
    assert np.isfinite(s).all() and (s > 0).all()
    np.testing.assert_array_equal(det._l_mass, before)


def test_hst_scores_equal_rivers_half_space_trees() -> None:
    """The numpy walk is river's algorithm: a river HalfSpaceTrees fed the same scaled rows agrees exactly."""
    kw = {"n_trees": 7, "height": 5, "window_size": 50}
    det = make("hst", N, seed=9, warmup=120, **kw)
    assert isinstance(det, HalfSpaceTreesDetector)
    X = np.vstack([_plant(120), _plant(400, seed=3), _plant(40, seed=4) * 1.2])
    X[130:140, 2] = np.nan  # not learned, scored with the median
    X[300, 5] -= 20.0
    ours = np.concatenate([det.score_learn_many(part) for part in np.array_split(X, 13)])
    ref = anomaly.HalfSpaceTrees(n_trees=7, height=5, window_size=50, seed=9)
    keys = list(range(N))
    U, _ = det._scaled(X)
    theirs = np.zeros(X.shape[0])
    for i, (u, x) in enumerate(zip(U.tolist(), X, strict=True)):
        d = dict(zip(keys, u, strict=True))
        if i >= 120:
            theirs[i] = ref.score_one(d)  # type: ignore[no-untyped-call]
        if np.isfinite(x).all():
            ref.learn_one(d)  # type: ignore[no-untyped-call]
    np.testing.assert_array_equal(ours, theirs)
    assert det._counter == ref.counter


# ---------------------------------------------------------------------------- iforest
def test_iforest_onnx_scores_equal_sklearn_score_samples() -> None:
    det = make("iforest", N, seed=4, warmup=300)
    assert isinstance(det, IsolationForestDetector)
    det.score_learn_many(_plant(300))
    X = np.vstack([_plant(2000, seed=8), _plant(50, seed=9) * 1.5])  # normal rows and far-out ones
    onnx_raw = det.onnx_scores(X)
    np.testing.assert_allclose(onnx_raw, det.sklearn_scores(X), rtol=0, atol=1e-4)
    np.testing.assert_allclose(onnx_raw, -det.forest.score_samples(X), rtol=0, atol=1e-4)


def test_iforest_skl2onnx_exporter_gives_the_same_scores() -> None:
    compact = make("iforest", N, seed=4, warmup=200, n_estimators=10)
    stock = make("iforest", N, seed=4, warmup=200, n_estimators=10, exporter="skl2onnx")
    assert isinstance(stock, IsolationForestDetector)
    X = _plant(600)
    np.testing.assert_allclose(stock.score_learn_many(X), compact.score_learn_many(X), rtol=0, atol=1e-5)
    np.testing.assert_allclose(stock.onnx_scores(X), -stock.forest.score_samples(X), rtol=0, atol=1e-4)


def test_iforest_refits_at_fixed_rows_and_adapts_to_a_level_shift() -> None:
    kw = {"seed": 5, "warmup": 256, "refit_every": 500, "window": 500}
    X = np.vstack([_plant(1256), _plant(1500, seed=11) + 15.0])  # every channel steps up 7.5 sigma
    whole = make("iforest", N, **kw)
    s = whole.score_learn_many(X)
    rows = make("iforest", N, **kw)
    for part in np.array_split(X, 37):
        rows.score_learn_many(part)
    assert isinstance(whole, IsolationForestDetector) and isinstance(rows, IsolationForestDetector)
    assert whole.n_fits == rows.n_fits == 1 + (X.shape[0] - 256) // 500 == 6
    assert whole.next_refit == rows.next_refit == 256 + 6 * 500
    normal_q99 = float(np.quantile(s[256:1256], 0.99))
    assert np.median(s[1256:1756]) > 10 * normal_q99  # before the model has seen the new level
    assert np.quantile(s[-500:], 0.9) < normal_q99  # after two refits it is the new normal


def test_iforest_shap_points_at_the_faulty_channel_on_eight_correlated_channels() -> None:
    for range_weight in (0.0, 1.0):  # the forest's SHAP values alone, and with the range term
        det = make("iforest", N, seed=6, warmup=1000, range_weight=range_weight)
        det.score_learn_many(_plant(1000))
        blame = []
        for channel in range(N):
            fault = _plant(1, seed=30 + channel)[0]
            fault[channel] += 8.0  # 4 sigma on one channel
            shares = det.explain_one(fault)
            assert math.isclose(float(shares.sum()), 1.0, rel_tol=1e-9)
            assert int(np.argmax(shares)) == channel, (range_weight, channel, shares)
            blame.append(shares[channel])
        # SHAP alone shares the blame with the row's own (normal) extremes on other channels: the
        # faulty channel gets the most, and most of it on average; with the range term, most each time.
        assert np.mean(blame) > 0.6 and (min(blame) > 0.5 if range_weight else min(blame) > 0.3), blame


def test_iforest_missing_values_take_the_training_median() -> None:
    det = make("iforest", N, seed=7, warmup=300)
    assert isinstance(det, IsolationForestDetector)
    det.score_learn_many(_plant(300))
    x = _plant(1, seed=3)[0]
    holes = x.copy()
    holes[[1, 5]] = np.nan
    filled = x.copy()
    filled[[1, 5]] = det._median[[1, 5]]
    assert det.score_one(holes) == det.score_one(filled)
    assert det.score_one(np.full(N, np.nan)) == 0.0
