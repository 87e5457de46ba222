"""Degradation features of an asset's multi-sensor history, computed in streaming order.

One row per cycle (or any regular reporting period). The features of row ``t`` use rows ``<= t``
only: appending later cycles never changes them, so the model sees at run time exactly what it
was trained on at each cycle. Per kept sensor, after operating-regime normalisation:

* ``S.mean10``, ``S.mean30``: mean of the last 10 and 30 cycles (fewer at the start);
* ``S.slope30``: least-squares slope over the last 30 cycles (per cycle; 0 with one cycle);
* ``S.drift``: ``S.mean30`` minus the asset's own baseline, the mean of its first 30 cycles (so far);

plus ``age``, the asset's cycle number (cycles since it entered service).

Operating regimes: when the operational settings fall into tight clusters (k-means with k <= 6
explains >= 99.9 % of their variance), each cluster is a regime and every sensor is standardised
with its mean and spread within the regime of the row; otherwise there is one regime. Sensors
that are constant within every regime, or take fewer than three distinct values, are dropped.
A missing reading (NaN) holds the sensor's previous value. Everything fitted (regimes, their
statistics, the kept sensors) is a :class:`FeatureSpec`, which travels with the model as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SHORT, LONG, BASELINE = 10, 30, 30
MAX_REGIMES = 6
REGIME_EXPLAINED = 0.999
REGIME_SAMPLE = 5000  # rows the regime clustering looks at
AGE = "age"


@dataclass(frozen=True)
class AssetHistory:
    """An asset's history in streaming order: cycle numbers, operational settings, sensor readings."""

    asset: str
    cycles: IntArray  # (n,)
    settings: Matrix  # (n, k): the operating condition of each cycle; k may be 0
    sensors: Matrix  # (n, m)
    sensor_names: tuple[str, ...]  # m names
    setting_names: tuple[str, ...] = ()  # k names (default setting1..k)

    def __post_init__(self) -> None:
        if not self.setting_names:
            defaults = tuple(f"setting{i}" for i in range(1, self.settings.shape[1] + 1))
            object.__setattr__(self, "setting_names", defaults)
        if len(self.setting_names) != self.settings.shape[1]:
            raise ValueError(f"asset {self.asset}: {self.settings.shape[1]} setting columns, "
                             f"{len(self.setting_names)} names")
        n = len(self.cycles)
        if self.settings.shape[0] != n or self.sensors.shape[0] != n:
            raise ValueError(f"asset {self.asset}: {n} cycles but {self.settings.shape[0]} setting rows and "
                             f"{self.sensors.shape[0]} sensor rows")
        if self.sensors.shape[1] != len(self.sensor_names):
            raise ValueError(f"asset {self.asset}: {self.sensors.shape[1]} sensor columns, "
                             f"{len(self.sensor_names)} names")

    def __len__(self) -> int:
        return len(self.cycles)

    def head(self, n: int) -> AssetHistory:
        """The first ``n`` cycles (the asset as it was seen at cycle ``n``)."""
        return AssetHistory(self.asset, self.cycles[:n], self.settings[:n], self.sensors[:n], self.sensor_names,
                            self.setting_names)


@dataclass(frozen=True)
class FeatureSpec:
    """What the feature extractor learned from training histories (JSON-serialisable)."""

    sensor_names: tuple[str, ...]  # the sensors of the training histories
    kept: tuple[str, ...]  # the sensors that become features: an input history must have these
    setting_scale: tuple[float, ...]  # divisor of each setting before the regime distance
    centres: tuple[tuple[float, ...], ...]  # regime centres in scaled setting units
    means: tuple[tuple[float, ...], ...]  # per regime, per kept sensor
    stds: tuple[tuple[float, ...], ...]
    setting_names: tuple[str, ...] = ()  # the operational settings, in the order of setting_scale
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = [f"{s}.{f}" for s in self.kept for f in (f"mean{SHORT}", f"mean{LONG}", f"slope{LONG}", "drift")]
        object.__setattr__(self, "names", (*names, AGE))

    def to_json(self) -> str:
        return json.dumps({"sensor_names": self.sensor_names, "kept": self.kept, "setting_scale": self.setting_scale,
                           "centres": self.centres, "means": self.means, "stds": self.stds,
                           "setting_names": self.setting_names})

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        raw: dict[str, Any] = json.loads(text)

        def rows(key: str) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(v) for v in row) for row in raw[key])

        return cls(sensor_names=tuple(raw["sensor_names"]), kept=tuple(raw["kept"]),
                   setting_scale=tuple(float(v) for v in raw["setting_scale"]), centres=rows("centres"),
                   means=rows("means"), stds=rows("stds"), setting_names=tuple(raw.get("setting_names", ())))

    def channel_of(self, feature: str) -> str:
        """The sensor a feature is computed from (``age`` is its own channel)."""
        return feature.rsplit(".", 1)[0]


def _regime_centres(settings: Matrix) -> tuple[Matrix, Matrix]:
    """(scale per setting, regime centres in scaled units): one centre unless the settings cluster tightly."""
    from sklearn.cluster import KMeans

    scale = settings.std(axis=0) if settings.shape[0] else np.ones(settings.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    scaled = settings / scale
    single = scaled.mean(axis=0, keepdims=True)
    sample = scaled[np.random.default_rng(0).permutation(len(scaled))[:REGIME_SAMPLE]]
    total = float(((sample - sample.mean(axis=0)) ** 2).sum())
    if settings.shape[1] == 0 or total <= 0:
        return scale, single

    def clusters(k: int) -> Matrix | None:
        km = KMeans(n_clusters=k, n_init=2, random_state=0).fit(sample)
        tight = km.inertia_ <= (1 - REGIME_EXPLAINED) * total
        return np.asarray(km.cluster_centers_, dtype=np.float64) if tight else None

    most = min(MAX_REGIMES, len(np.unique(sample, axis=0)))  # k-means warns when asked for more
    if most < 2 or clusters(most) is None:  # if the most regimes do not explain the settings, fewer will not
        return scale, single
    for k in range(2, most + 1):
        centres = clusters(k)
        if centres is not None:
            return scale, centres
    return scale, single


def _assign(settings: Matrix, scale: Matrix, centres: Matrix) -> IntArray:
    if centres.shape[0] == 1:
        return np.zeros(settings.shape[0], dtype=np.int64)
    d = (((settings / scale)[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(d.argmin(axis=1), dtype=np.int64)


def fit_feature_spec(histories: list[AssetHistory]) -> FeatureSpec:
    """Regimes, their sensor statistics and the sensors worth keeping, from training histories."""
    if not histories:
        raise ValueError("no histories to fit features on")
    names = histories[0].sensor_names
    for h in histories:
        if h.sensor_names != names or h.setting_names != histories[0].setting_names:
            raise ValueError(f"asset {h.asset}: channels {h.setting_names + h.sensor_names} differ from "
                             f"{histories[0].setting_names + names}")
    settings = np.concatenate([h.settings for h in histories])
    sensors = np.concatenate([h.sensors for h in histories])
    scale, centres = _regime_centres(settings)
    regime = _assign(settings, scale, centres)
    means = np.zeros((len(centres), len(names)))
    stds = np.ones((len(centres), len(names)))
    distinct = np.zeros(len(names), dtype=np.int64)
    for r in range(len(centres)):
        rows = sensors[regime == r]
        if len(rows) == 0:
            continue
        means[r] = rows.mean(axis=0)
        spread = rows.std(axis=0)
        stds[r] = np.where(spread > 1e-9 * np.maximum(1.0, np.abs(means[r])), spread, 0.0)
        distinct = np.maximum(distinct, [len(np.unique(rows[:, j])) for j in range(len(names))])
    keep = [j for j in range(len(names)) if distinct[j] >= 3 and (stds[:, j] > 0).any()]
    if not keep:
        raise ValueError("every sensor is constant within its operating regime: nothing to learn from")
    safe = np.where(stds[:, keep] > 0, stds[:, keep], 1.0)
    return FeatureSpec(sensor_names=names, kept=tuple(names[j] for j in keep), setting_scale=tuple(scale.tolist()),
                       centres=tuple(tuple(c) for c in centres.tolist()),
                       means=tuple(tuple(m) for m in means[:, keep].tolist()),
                       stds=tuple(tuple(s) for s in safe.tolist()), setting_names=histories[0].setting_names)


def _window_sums(values: Matrix, width: int) -> tuple[Matrix, Matrix]:
    """Per row t, the sum over rows max(0, t-width+1)..t of each column, and the row counts (n, 1)."""
    n = values.shape[0]
    csum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    end = np.arange(1, n + 1)
    start = np.maximum(0, end - width)
    return csum[end] - csum[start], (end - start).astype(np.float64)[:, None]


def _rolling_slope(z: Matrix, width: int) -> Matrix:
    """Least-squares slope of each column over the last ``width`` rows (0 where only one row)."""
    n = z.shape[0]
    x = np.arange(n, dtype=np.float64)[:, None]
    sy, count = _window_sums(z, width)
    sx, _ = _window_sums(x, width)
    sxx, _ = _window_sums(x * x, width)
    sxy, _ = _window_sums(x * z, width)
    # centred sums: n * cov and n * var of the window
    var = sxx - sx * sx / count
    cov = sxy - sx * sy / count
    return np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12)


def _hold_missing(z: Matrix) -> Matrix:
    """A missing (NaN) reading holds the sensor's previous value; before its first reading, the regime mean (0)."""
    valid = np.isfinite(z)
    if valid.all():
        return z
    rows = np.where(valid, np.arange(len(z))[:, None], -1)
    last = np.maximum.accumulate(rows, axis=0)
    held = np.take_along_axis(z, np.maximum(last, 0), axis=0)
    return np.where(last >= 0, held, 0.0)


def asset_features(spec: FeatureSpec, history: AssetHistory) -> Matrix:
    """The feature rows of every cycle of ``history`` (row t uses cycles <= t), columns ``spec.names``."""
    missing = [s for s in spec.kept if s not in history.sensor_names]
    if missing:
        raise ValueError(f"asset {history.asset}: no readings for {', '.join(missing)}")
    settings = history.settings
    if len(spec.centres) > 1:  # the regime of each row depends on the settings: take them by name
        absent = [s for s in spec.setting_names if s not in history.setting_names]
        if absent or len(spec.setting_names) != len(spec.setting_scale):
            raise ValueError(f"asset {history.asset}: no readings for settings {', '.join(absent) or '?'}")
        settings = settings[:, [history.setting_names.index(s) for s in spec.setting_names]]
    n = len(history)
    if n == 0:
        return np.zeros((0, len(spec.names)))
    kept = [history.sensor_names.index(s) for s in spec.kept]
    centres = np.array(spec.centres, dtype=np.float64)
    regime = _assign(settings, np.array(spec.setting_scale), centres)
    z = _hold_missing((history.sensors[:, kept] - np.array(spec.means)[regime]) / np.array(spec.stds)[regime])
    short_sum, short_n = _window_sums(z, SHORT)
    long_sum, long_n = _window_sums(z, LONG)
    mean_long = long_sum / long_n
    first = np.cumsum(z[:BASELINE], axis=0) / np.arange(1, min(n, BASELINE) + 1)[:, None]
    baseline = np.vstack([first, np.repeat(first[-1:], max(0, n - BASELINE), axis=0)])
    per_sensor = np.stack([short_sum / short_n, mean_long, _rolling_slope(z, LONG), mean_long - baseline], axis=2)
    age = history.cycles.astype(np.float64)[:, None]
    return np.hstack([per_sensor.reshape(n, -1), age])
