"""Features and fusion: alignment without look-ahead, window statistics, spectral bands, missing data as NaN."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.detect.features import align, feature_names, sliding_features, spectral_bands, window_features


def test_align_holds_the_latest_reading_and_never_looks_ahead() -> None:
    fast = (np.arange(0, 10_000, 100, dtype=np.int64), np.arange(100, dtype=np.float64))  # 10 Hz
    slow = (np.array([0, 5000], dtype=np.int64), np.array([1.0, 2.0]))  # every 5 s
    grid = np.array([0, 950, 4999, 5000, 9000], dtype=np.int64)
    out = align([fast, slow], grid, max_age_ms=6000)
    np.testing.assert_array_equal(out[:, 0], [0, 9, 49, 50, 90])  # the reading at or before, never after
    np.testing.assert_array_equal(out[:, 1], [1, 1, 1, 2, 2])
    stale = align([slow], np.array([-1, 4000, 12_000], dtype=np.int64), max_age_ms=3000)
    assert np.isnan(stale[0, 0]) and np.isnan(stale[1, 0]) and np.isnan(stale[2, 0])  # before any, too old
    with pytest.raises(ValueError, match="sorted"):
        align([(np.array([2, 1], dtype=np.int64), np.array([0.0, 1.0]))], grid, 10)


def test_window_features_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    ts = np.arange(1000, dtype=np.int64) * 10  # 100 Hz, 10 s
    ramp = 3.0 + 0.5 * ts / 1000.0  # slope 0.5 per second
    noise = rng.normal(0.0, 1.0, 1000)
    row = window_features(ts, np.column_stack([ramp, noise]))
    names = feature_names(["ramp", "noise"])
    f = dict(zip(names, row, strict=True))
    assert f["ramp:slope"] == pytest.approx(0.5)
    assert f["ramp:mean"] == pytest.approx(ramp.mean())
    assert f["noise:std"] == pytest.approx(noise.std())
    assert f["noise:rms"] == pytest.approx(np.sqrt((noise**2).mean()))
    assert abs(f["noise:kurtosis"]) < 0.4  # normal data: excess kurtosis about 0
    assert f["noise:crest"] == pytest.approx(np.abs(noise).max() / np.sqrt((noise**2).mean()))
    assert f["ramp:min"] == ramp.min() and f["ramp:max"] == ramp.max()
    spiky = noise.copy()
    spiky[::100] = 25.0  # impacts, as a bearing defect makes them
    g = dict(zip(names, window_features(ts, np.column_stack([ramp, spiky])), strict=True))
    assert g["noise:kurtosis"] > 10 and g["noise:crest"] > 2 * f["noise:crest"]


def test_missing_values_are_left_out_and_a_silent_channel_is_nan_not_zero() -> None:
    ts = np.arange(10, dtype=np.int64) * 1000
    x = np.column_stack([np.arange(10.0), np.full(10, np.nan)])
    x[3, 0] = np.nan
    row = dict(zip(feature_names(["a", "b"]), window_features(ts, x), strict=True))
    assert row["a:mean"] == pytest.approx(np.nanmean(x[:, 0]))
    assert row["a:slope"] == pytest.approx(1.0)
    assert all(np.isnan(v) for k, v in row.items() if k.startswith("b:"))
    with pytest.raises(ValueError, match="unknown features"):
        window_features(ts, x, ["median"])


def test_spectral_bands_find_the_tone_and_add_up_to_the_rms() -> None:
    fs = 1000.0
    t = np.arange(2000) / fs
    sig = 2.0 * np.sin(2 * np.pi * 120 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)
    bands = spectral_bands(sig, fs, [(0, 100), (100, 200), (300, 400), (0, 500.1)])
    assert bands[1] == pytest.approx(2.0 / np.sqrt(2), rel=0.02)
    assert bands[2] == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert bands[0] < 0.05
    assert bands[3] == pytest.approx(sig.std(), rel=0.02)
    assert np.isnan(spectral_bands(np.array([1.0, np.nan, 2.0, 3.0, 4.0]), fs, [(0, 10)])).all()


def test_sliding_features_use_only_the_past() -> None:
    ts = np.arange(100, dtype=np.int64) * 1000
    x = np.arange(100.0)[:, None]
    ends, rows = sliding_features(ts, x, window_ms=10_000, step_ms=5000, features=["mean", "max"])
    assert ends[0] == 10_000 and rows.shape == (len(ends), 2)
    i = int(np.flatnonzero(ends == 50_000)[0])
    assert rows[i, 1] == 50.0 and rows[i, 0] == pytest.approx(np.mean(np.arange(41, 51)))
    changed = x.copy()
    changed[60:] = 1e6  # a different future
    _, rows2 = sliding_features(ts, changed, 10_000, 5000, ["mean", "max"])
    np.testing.assert_array_equal(rows[ends <= 59_000], rows2[ends <= 59_000])
