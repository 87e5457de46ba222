"""The ensemble's calibration: every member's score on one scale, learned from the asset's own data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeloop.detect.detectors.ensemble import Calibration, EnsembleDetector
from edgeloop.detect.registry import make


def test_surprise_is_decades_of_rarity_relative_to_the_median() -> None:
    ref = np.random.default_rng(0).exponential(1.0, 20_000)
    cal = Calibration(ref)
    med, q95, q99 = np.quantile(ref, [0.5, 0.95, 0.99])
    s = cal.surprise(np.array([0.0, med, q95, q99]))
    assert s[0] == 0.0 and s[1] == pytest.approx(0.0, abs=0.01)
    assert s[2] == pytest.approx(1.0, abs=0.05)  # the top 5 % of normal data: one decade
    assert s[3] == pytest.approx(math.log10(50), abs=0.1)
    # beyond the data, the fitted exponential tail: exp(1) data, 1 in 10^4 at ln(10^4) = 9.2
    assert cal.surprise(np.array([math.log(1e4)]))[0] == pytest.approx(math.log10(0.5e4), abs=0.15)
    grid = np.linspace(0, 30, 3001)
    assert (np.diff(cal.surprise(grid)) >= 0).all(), "surprise must grow with the score"


def test_constant_reference_maps_its_value_to_zero_and_anything_else_high() -> None:
    cal = Calibration(np.zeros(500))
    assert cal.surprise(np.array([0.0]))[0] == 0.0
    assert cal.surprise(np.array([1e-3]))[0] > 100
    assert np.isfinite(cal.surprise(np.array([1e6]))).all()


def test_members_on_different_scales_count_alike() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(0, 1, (3000, 3))
    det = make("ensemble", 3, warmup=500, calibration=1000, members=["mad", "mad"], weights=[1, 3])
    assert isinstance(det, EnsembleDetector)
    s = det.score_learn_many(X)
    assert (s[:1500] == 0).all() and det.warmed_up
    # on normal data the fused surprise rarely exceeds 2 decades
    assert np.mean(s[1500:] > 2.0) < 0.02
    x = X[-1].copy()
    x[1] += 12.0
    assert det.score_one(x) > 4.0
    assert det.explain_one(x).argmax() == 1


def test_bad_member_lists_are_rejected() -> None:
    with pytest.raises(ValueError, match="members"):
        make("ensemble", 2, members=[])
    with pytest.raises(ValueError, match="members"):
        make("ensemble", 2, members=["ensemble"])
    with pytest.raises(ValueError, match="weight"):
        make("ensemble", 2, members=["mad"], weights=[1, 2])
    with pytest.raises(ValueError, match="unknown detector"):
        make("ensemble", 2, members=["nope"])


def test_the_univariate_preset_shapes_alarms_like_novelty() -> None:
    """One copy of the alarm shaping: novelty's raw score through the ensemble (a fixed scale, then the shaper)
    gives novelty's own shaped scores, times the scale's inverse."""
    rng = np.random.default_rng(5)
    x = np.sin(np.arange(6000) * 2 * np.pi / 96) + rng.normal(0, 0.1, 6000)
    x[3000:3010] += 3.0
    x[4500:4700] = 0.0
    X = x.reshape(-1, 1)
    ens = make("ensemble", 1, preset="univariate", members=["novelty"], member_scales={"novelty": 0.05})
    nov = make("novelty", 1, range_age=10.0)
    s_ens = np.concatenate([ens.score_learn_many(X[i:i + 700]) for i in range(0, 6000, 700)])
    s_nov = nov.score_learn_many(X)
    np.testing.assert_allclose(s_ens, s_nov / 0.05, rtol=1e-9, atol=1e-12)
    assert s_ens[3000:3010].max() > 1.0 and (s_ens[3011:3100] == 0).all()  # one alarm, then the refractory period
    assert ens.score_one(X[-1]) == pytest.approx(nov.score_one(X[-1]) / 0.05)


def test_a_young_novelty_forgets_a_start_up_transient() -> None:
    """With ``range_age`` the range's half-life grows with the rows seen (``range_age`` times the age), so a
    start-up burst ten times the later level blunts the detector (a little) less than the fixed 10,000-row
    half-life."""
    rng = np.random.default_rng(3)
    x = 1.0 + rng.normal(0, 0.05, 1500)
    x[:20] = 10.0
    x[1200:1216] = 2.5
    X = x.reshape(-1, 1)
    young_det = make("novelty", 1, shaping=False, range_age=10.0)
    fixed_det = make("novelty", 1, shaping=False)
    young, fixed = young_det.score_learn_many(X), fixed_det.score_learn_many(X)
    assert young[1200:1220].max() > fixed[1200:1220].max() > 0.1
    assert young[600:1200].max() < 0.02  # the normal rows stay quiet as the range shrinks
    f_young, f_fixed = young_det._features[0], fixed_det._features[0]  # the ranges themselves
    assert f_young.hi - f_young.lo < 0.98 * (f_fixed.hi - f_fixed.lo)  # a little: the level the extremes relax
    # towards (an EWMA of the values) forgets the burst slowly too
    with pytest.raises(ValueError, match="range_age"):
        make("novelty", 1, range_age=-1.0)


def test_members_calibrate_after_their_own_warm_up() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(0, 1, (2000, 1))
    det = make("ensemble", 1, warmup=100, calibration=200, members=["mad", "seasonal"],
               member_params={"seasonal": {"warmup": 600}})
    assert isinstance(det, EnsembleDetector)
    s = det.score_learn_many(X)
    assert (s[:300] == 0).all() and (s[300:] > 0).any()  # mad alone from row 300, seasonal joins at row 800
    assert det.member_surprises(X[-1]).shape == (2,)


def test_presets_and_shaping_are_checked() -> None:
    with pytest.raises(ValueError, match="preset"):
        make("ensemble", 1, preset="nope")
    with pytest.raises(ValueError, match="fusion"):
        make("ensemble", 1, fusion="median")
    with pytest.raises(ValueError, match="not members"):
        make("ensemble", 1, members=["mad"], member_scales={"novelty": 0.05})
    with pytest.raises(ValueError, match="alarm shaping"):
        make("ensemble", 1, shaping={"alarm": 1.0, "escalate": 0.5})


def test_the_contextual_member_sees_a_cycle_that_fails_to_drop() -> None:
    """A daily-like cycle (period 96 rows) that stays high for a whole cycle: ``context`` compares each short shape
    with the same phase of earlier cycles, so the missing drop scores far above the normal cycles."""
    rng = np.random.default_rng(4)
    t = np.arange(96 * 20)
    x = np.where(t % 96 < 48, 0.0, 1.0) + rng.normal(0, 0.02, t.size)
    x[96 * 15:96 * 16] = 1.0 + rng.normal(0, 0.02, 96)  # the drop that did not come
    X = x.reshape(-1, 1)
    ctx = make("context", 1).score_learn_many(X)
    normal = slice(96 * 8, 96 * 15)  # after the cycle is found
    assert ctx[96 * 15:96 * 16].max() > 0.5 > 3 * ctx[normal].max()
    ens = make("ensemble", 1, preset="univariate")
    s = ens.score_learn_many(X)
    assert s[96 * 15:96 * 16].max() > 1.0 > s[normal].max()  # an alarm, and none in the normal cycles before


def test_the_univariate_preset_streams_like_the_loop_without_look_ahead() -> None:
    """What eval nab runs is a platform detector like any other: batching cannot change it, nor can later rows."""
    rng = np.random.default_rng(9)
    t = np.arange(2400)
    x = np.sin(t * 2 * np.pi / 96) + rng.normal(0, 0.1, t.size)
    x[1500:1520] += 2.0
    x[1800] = np.nan
    X = x.reshape(-1, 1)
    whole = make("ensemble", 1, preset="univariate").score_learn_many(X)
    det = make("ensemble", 1, preset="univariate")
    looped = np.empty(t.size)
    for i, row in enumerate(X):
        looped[i] = det.score_one(row)
        det.learn_one(row)
    np.testing.assert_allclose(whole, looped, rtol=1e-7, atol=1e-9)
    changed = X.copy()
    changed[2000:] += 50.0
    np.testing.assert_array_equal(make("ensemble", 1, preset="univariate").score_learn_many(changed)[:2000],
                                  whole[:2000])
    assert whole[1500:1520].max() > 1.0 and np.isfinite(whole).all()
