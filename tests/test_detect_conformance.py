"""The shared conformance suite: every registered detector (``edgeloop.detect.registry``) must pass it.

What a user relies on, whatever detector the platform runs: the same scores however the stream
is batched, no look-ahead, the same scores for the same seed, no crash or NaN on constant or
missing input, missing values never read as zero, scores in the documented range, an obvious
fault scored above normal data, and an explanation that points at the channel that broke.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeloop.detect.protocol import Detector
from edgeloop.detect.registry import available, make

N_FEATURES = 4
WARMUP = 64
NAMES = available()


def _normal(n: int, seed: int = 1) -> np.ndarray:
    """Correlated normal data around a level: what a healthy asset looks like."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, size=(n, 1))
    noise = rng.normal(0.0, 1.0, size=(n, N_FEATURES))
    return 50.0 + 3.0 * (0.6 * base + 0.8 * noise) + np.arange(N_FEATURES) * 10.0


def _det(name: str, seed: int = 0) -> Detector:
    return make(name, N_FEATURES, seed=seed, warmup=WARMUP)


def _loop(det: Detector, X: np.ndarray) -> np.ndarray:
    out = np.empty(X.shape[0])
    for i, x in enumerate(X):
        out[i] = det.score_one(x)
        det.learn_one(x)
    return out


def test_registry_lists_the_detectors() -> None:
    assert {"mad"} <= set(NAMES)
    with pytest.raises(ValueError, match="unknown detector"):
        make("no-such-detector", 3)


@pytest.mark.parametrize("name", NAMES)
def test_follows_the_protocol(name: str) -> None:
    det = _det(name)
    assert isinstance(det, Detector)
    assert det.name == name and det.n_features == N_FEATURES
    lo, hi = det.score_range
    assert 0.0 <= lo < hi


@pytest.mark.parametrize("name", NAMES)
def test_batched_path_equals_the_loop_and_any_split(name: str) -> None:
    X = _normal(400)
    X[300, 1] += 40.0  # one fault, so the scores are not all alike
    looped = _loop(_det(name), X)
    whole = _det(name).score_learn_many(X)
    np.testing.assert_allclose(whole, looped, rtol=1e-7, atol=1e-9)
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(np.arange(1, 400), size=12, replace=False))
    det = _det(name)
    split = np.concatenate([det.score_learn_many(part) for part in np.split(X, cuts)])
    np.testing.assert_allclose(split, looped, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_no_look_ahead(name: str) -> None:
    X = _normal(300)
    Y = X.copy()
    Y[200:] = _normal(100, seed=9) * 3.0  # a different future
    a = _det(name).score_learn_many(X)
    b = _det(name).score_learn_many(Y)
    np.testing.assert_allclose(a[:200], b[:200], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_scores(name: str) -> None:
    X = _normal(300)
    np.testing.assert_array_equal(_det(name, seed=3).score_learn_many(X), _det(name, seed=3).score_learn_many(X))


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_finite_in_range_and_zero_in_warmup(name: str) -> None:
    det = _det(name)
    s = det.score_learn_many(_normal(300))
    lo, hi = det.score_range
    assert np.isfinite(s).all() and (s >= lo).all() and (s <= hi).all()
    assert (s[: WARMUP - 1] == 0.0).all()
    assert det.warmed_up


@pytest.mark.parametrize("name", NAMES)
def test_constant_input_does_not_break_it(name: str) -> None:
    det = _det(name)
    X = np.full((300, N_FEATURES), 7.0)
    s = det.score_learn_many(X)
    assert np.isfinite(s).all()
    step = X[0].copy()
    step[2] = 8.0
    assert math.isfinite(det.score_one(step))
    assert np.isfinite(det.explain_one(step)).all()


@pytest.mark.parametrize("name", NAMES)
def test_missing_values_are_not_zero(name: str) -> None:
    det = _det(name)
    X = _normal(400)
    holes = X.copy()
    holes[::7, 0] = np.nan
    holes[::11, 3] = np.nan
    s = det.score_learn_many(holes)
    assert np.isfinite(s).all()
    normal = _normal(50, seed=4)
    missing = normal[10].copy()
    missing[1] = np.nan
    zero = normal[10].copy()
    zero[1] = 0.0
    assert math.isfinite(det.score_one(missing))
    assert det.score_one(missing) < det.score_one(zero), "a NaN must not score like a zero"
    assert det.score_one(np.full(N_FEATURES, np.nan)) == 0.0
    assert np.isfinite(det.explain_one(missing)).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_fault_outscores_normal_data(name: str) -> None:
    det = _det(name)
    det.score_learn_many(_normal(600))
    normal = det.score_learn_many(_normal(200, seed=2))
    fault = _normal(1, seed=3)[0]
    fault[2] += 30.0  # 10 sigma on one channel
    assert det.score_one(fault) > np.quantile(normal, 0.99)


@pytest.mark.parametrize("name", NAMES)
def test_explanation_points_at_the_faulty_channel(name: str) -> None:
    det = _det(name)
    det.score_learn_many(_normal(600))
    for channel in range(N_FEATURES):
        fault = _normal(1, seed=10 + channel)[0]
        fault[channel] += 30.0
        shares = det.explain_one(fault)
        assert shares.shape == (N_FEATURES,)
        assert (shares >= 0).all() and math.isclose(float(shares.sum()), 1.0, rel_tol=1e-9)
        assert shares[channel] > 0.5, f"channel {channel} broke but got {shares[channel]:.2f} of the blame"
