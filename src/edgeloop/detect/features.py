"""Features and fusion over a per-asset multi-sensor stream (pure code, no I/O).

- :func:`align` puts channels sampled at different rates (or at jittered times) on one time grid:
  each grid point takes each channel's latest reading at or before it (no look-ahead), and NaN
  when that reading is older than ``max_age_ms`` (a silent sensor is missing, never a stale or
  zero value).
- :func:`window_features` summarises one window of rows per channel: mean, std, RMS, min, max,
  slope (least squares against time, per second), kurtosis (excess; 0 for a normal signal) and
  crest factor (peak / RMS). Missing values are left out; a channel with fewer than
  ``min_valid`` readings in the window gets NaN for every feature, so a detector downstream sees
  "missing", never zero.
- :func:`spectral_bands` turns a raw vibration channel into band energies (RMS per frequency
  band, Welch-free single FFT with a Hann window), for channels that carry a waveform.
- :func:`sliding_features` computes feature rows for windows ending every ``step_ms``; each row
  uses only samples at or before its window's end, so the same function serves training and
  streaming scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeloop.detect._numeric import F64, I64

__all__ = ["FEATURES", "align", "feature_names", "sliding_features", "spectral_bands", "window_features"]

FEATURES: tuple[str, ...] = ("mean", "std", "rms", "min", "max", "slope", "kurtosis", "crest")


def feature_names(channels: Sequence[str], features: Sequence[str] = FEATURES) -> list[str]:
    """Column names of :func:`window_features` rows: ``CHANNEL:FEATURE``, grouped by feature."""
    return [f"{c}:{f}" for f in features for c in channels]


def align(streams: Sequence[tuple[I64, F64]], grid_ms: I64, max_age_ms: int) -> F64:
    """One column per stream: its latest value at or before each grid time, NaN if none within ``max_age_ms``.

    ``streams`` are ``(ts, values)`` pairs, each sorted by time (ms). Returns ``(len(grid_ms), len(streams))``.
    """
    grid = np.asarray(grid_ms, dtype=np.int64)
    out = np.full((grid.size, len(streams)), np.nan)
    for j, (stream_ts, values) in enumerate(streams):
        ts = np.asarray(stream_ts, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        if ts.size == 0:
            continue
        if ts.size > 1 and (np.diff(ts) < 0).any():
            raise ValueError(f"stream {j}: timestamps must be sorted")
        idx = np.searchsorted(ts, grid, side="right") - 1
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        fresh = ok & (grid - ts[safe] <= max_age_ms)
        out[:, j] = np.where(fresh, v[safe], np.nan)
    return out


def window_features(ts: I64, x: F64, features: Sequence[str] = FEATURES, min_valid: int = 2) -> F64:
    """One feature row for a window: ``x`` is (rows, channels) at times ``ts`` (ms), NaN = missing.

    The row holds ``len(features) * channels`` values grouped by feature (see :func:`feature_names`).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("x must be (rows, channels)")
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
    valid = np.isfinite(x)
    n = valid.sum(axis=0)
    enough = n >= max(min_valid, 1)
    cnt = np.maximum(n, 1)
    xv = np.where(valid, x, 0.0)
    mean = xv.sum(axis=0) / cnt
    dev = np.where(valid, x - mean, 0.0)
    var = (dev * dev).sum(axis=0) / cnt
    std = np.sqrt(var)
    rms = np.sqrt((xv * xv).sum(axis=0) / cnt)
    out: dict[str, F64] = {"mean": mean, "std": std, "rms": rms}
    if "min" in features or "max" in features:
        out["min"] = np.where(valid, x, np.inf).min(axis=0) if x.shape[0] else np.full(x.shape[1], np.nan)
        out["max"] = np.where(valid, x, -np.inf).max(axis=0) if x.shape[0] else np.full(x.shape[1], np.nan)
    if "slope" in features:
        t = (np.asarray(ts, dtype=np.float64) / 1000.0)[:, None]
        tmean = np.where(valid, t, 0.0).sum(axis=0) / cnt
        tdev = np.where(valid, t - tmean, 0.0)
        sxx = (tdev * tdev).sum(axis=0)
        out["slope"] = np.where(sxx > 0, (tdev * dev).sum(axis=0) / np.where(sxx > 0, sxx, 1.0), 0.0)
    if "kurtosis" in features:
        m4 = (dev**4).sum(axis=0) / cnt
        out["kurtosis"] = np.where(var > 0, m4 / np.where(var > 0, var * var, 1.0) - 3.0, 0.0)
    if "crest" in features:
        peak = np.where(valid, np.abs(x), 0.0).max(axis=0) if x.shape[0] else np.zeros(x.shape[1])
        out["crest"] = np.where(rms > 0, peak / np.where(rms > 0, rms, 1.0), 0.0)
    row = np.concatenate([out[f] for f in features])
    row[np.tile(~enough, len(features))] = np.nan
    return row


def spectral_bands(signal: F64, fs_hz: float, bands_hz: Sequence[tuple[float, float]]) -> F64:
    """RMS of a waveform in each frequency band ``[lo, hi)`` (Hann window, one FFT; NaN samples -> NaN bands).

    By Parseval, the band RMS values add up (in squares) to the signal's RMS about its mean, up to the
    window's leakage: a bearing defect shows as energy rising in its band while the total stays put.
    """
    s = np.asarray(signal, dtype=np.float64)
    if fs_hz <= 0 or s.ndim != 1:
        raise ValueError("need a 1-D signal and fs_hz > 0")
    if s.size < 4 or not np.isfinite(s).all():
        return np.full(len(bands_hz), np.nan)
    w = np.hanning(s.size)
    spec = np.fft.rfft((s - s.mean()) * w)
    power = (np.abs(spec) ** 2) * 2.0 / (s.size * float((w * w).sum()))  # one-sided, mean-square per bin
    power[0] /= 2.0
    if s.size % 2 == 0:
        power[-1] /= 2.0
    freqs = np.fft.rfftfreq(s.size, d=1.0 / fs_hz)
    return np.array([np.sqrt(power[(freqs >= lo) & (freqs < hi)].sum()) for lo, hi in bands_hz])


def sliding_features(ts: I64, x: F64, window_ms: int, step_ms: int, features: Sequence[str] = FEATURES,
                     min_valid: int = 2) -> tuple[I64, F64]:
    """Feature rows for windows ``(end - window_ms, end]`` with ``end`` every ``step_ms`` from the first full one.

    Returns ``(ends, rows)``; windows without ``min_valid`` readings of a channel have NaN for its features.
    """
    ts = np.asarray(ts, dtype=np.int64)
    if window_ms <= 0 or step_ms <= 0:
        raise ValueError("window_ms and step_ms must be > 0")
    width = len(features) * x.shape[1]
    if ts.size == 0 or int(ts[-1]) - int(ts[0]) < window_ms:
        return np.zeros(0, dtype=np.int64), np.zeros((0, width))
    ends = np.arange(int(ts[0]) + window_ms, int(ts[-1]) + 1, step_ms, dtype=np.int64)
    lo = np.searchsorted(ts, ends - window_ms, side="right")
    hi = np.searchsorted(ts, ends, side="right")
    rows = np.array([window_features(ts[a:b], x[a:b], features, min_valid) for a, b in zip(lo, hi, strict=True)])
    return ends, rows.reshape(len(ends), width)
