"""``seasonal``: forecast residuals of an additive Holt-Winters model per feature, for periodic signals.

Warm-up (``warmup`` rows): each feature's period is found from the autocorrelation of its warm-up data
(linear trend removed): the lag in ``[min_period, warmup // 2]`` with the highest autocorrelation peak, kept
when that peak is at least ``min_acf``; otherwise the feature has no season (period 1, a smoothed level). The
level starts at the warm-up mean and the seasonal profile at the mean deviation of each phase.

After warm-up, row ``t`` of a feature with period ``p`` is forecast as ``level + season[t mod p]`` from the
state before it; the score is the standardised residual ``|x - forecast| / s`` (range ``[0, inf)``), with ``s``
an EWMA of the absolute residuals (x 1.2533, a sigma for normal residuals, half-life ``halflife`` rows) that
never falls below ``floor_frac`` of the warm-up residual spread (nor a tiny fraction of the level). Then
the state learns: ``level += alpha * (x - season - level)``, ``season += gamma * (x - level - season)``.
A row scores its largest feature residual; the explanation gives feature ``j`` the share ``z_j**2 / sum(z**2)``.

Missing values (NaN) score 0 and leave their feature's state as it is (the phase still advances by rows).
"""

from __future__ import annotations

import math

import numpy as np

from edgeloop.detect._numeric import F64
from edgeloop.detect.protocol import WarmupDetector, normalise_shares
from edgeloop.detect.registry import register

__all__ = ["SeasonalDetector", "detect_period"]

_ABS_TO_SIGMA = math.sqrt(math.pi / 2.0)


def detect_period(values: F64, min_period: int = 4, min_acf: float = 0.3) -> int:
    """The dominant period of ``values`` (NaN = missing) from its autocorrelation, or 1 when there is none."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    n = x.size
    if ok.sum() < 2 * min_period + 2:
        return 1
    t = np.arange(n, dtype=np.float64)
    slope, icept = np.polyfit(t[ok], x[ok], 1)
    r = np.where(ok, x - (slope * t + icept), 0.0)
    denom = float(np.dot(r, r))
    if denom <= 0.0:
        return 1
    max_lag = n // 2
    if max_lag <= min_period:
        return 1
    spec = np.fft.rfft(r, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[: max_lag + 2] / denom
    best, best_lag = min_acf, 1
    for k in range(min_period, max_lag + 1):
        if acf[k] >= acf[k - 1] and acf[k] >= acf[k + 1] and acf[k] > best:
            best, best_lag = float(acf[k]), k
    return best_lag


@register
class SeasonalDetector(WarmupDetector):
    name = "seasonal"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 600, alpha: float = 0.1,
                 gamma: float = 0.1, halflife: float = 500.0, floor_frac: float = 0.3, min_period: int = 4,
                 min_acf: float = 0.3) -> None:
        if n_features < 1 or warmup < 2 or not (0 < alpha <= 1) or not (0 <= gamma <= 1) or halflife <= 0:
            raise ValueError("seasonal: need n_features >= 1, warmup >= 2, 0 < alpha <= 1, 0 <= gamma <= 1, "
                             "halflife > 0")
        super().__init__(n_features, warmup)
        self.seed = seed  # deterministic: the seed is not used
        self.alpha = alpha
        self.gamma = gamma
        self._a = 0.5 ** (1.0 / halflife)
        self.floor_frac = floor_frac
        self.min_period = min_period
        self.min_acf = min_acf
        self._t = 0  # rows seen after warm-up (the phase)
        self.periods = [1] * n_features
        self._level = np.zeros(n_features)
        self._season: list[F64] = [np.zeros(1) for _ in range(n_features)]
        self._s = np.ones(n_features)
        self._floor = np.ones(n_features)

    # ------------------------------------------------------------------ protocol (see WarmupDetector)
    def _score(self, x: F64) -> float:
        return float(self._z(x).max())

    def _explain(self, x: F64) -> F64:
        z = self._z(x)
        return normalise_shares(z * z)

    def _run(self, X: F64) -> F64:
        return np.array([self._step(row) for row in X], dtype=np.float64)

    # ------------------------------------------------------------------ internals
    def _phase(self) -> list[int]:
        return [self._t % p for p in self.periods]

    def _forecast(self) -> F64:
        ph = self._phase()
        forecast: F64 = self._level + np.array([self._season[j][ph[j]] for j in range(self.n_features)])
        return forecast

    def _z(self, x: F64) -> F64:
        e = np.abs(x - self._forecast()) / np.maximum(self._s, self._floor)
        z: F64 = np.where(np.isfinite(e), e, 0.0)
        return z

    def _step(self, x: F64) -> float:
        ph = self._phase()
        season = np.array([self._season[j][ph[j]] for j in range(self.n_features)])
        resid = x - (self._level + season)
        e = np.abs(resid) / np.maximum(self._s, self._floor)
        ok = np.isfinite(x)
        z = np.where(ok, e, 0.0)
        # learn (present features only)
        a = self._a
        self._s = np.where(ok, a * self._s + (1.0 - a) * _ABS_TO_SIGMA * np.abs(np.where(ok, resid, 0.0)), self._s)
        level = np.where(ok, self._level + self.alpha * np.where(ok, x - season - self._level, 0.0), self._level)
        if self.gamma > 0:
            for j in range(self.n_features):
                if ok[j] and self.periods[j] > 1:
                    s = self._season[j]
                    s[ph[j]] += self.gamma * (x[j] - level[j] - s[ph[j]])
        self._level = level
        self._t += 1
        return float(z.max())

    def _fit(self, w: F64) -> None:
        n = w.shape[0]
        spreads = np.zeros(self.n_features)
        levels = np.zeros(self.n_features)
        for j in range(self.n_features):
            col = w[:, j]
            ok = np.isfinite(col)
            p = detect_period(col, self.min_period, self.min_acf)
            self.periods[j] = p
            mean = float(col[ok].mean()) if ok.any() else 0.0
            season = np.zeros(p)
            if p > 1:
                phase = np.arange(n) % p
                for k in range(p):
                    vals = col[(phase == k) & ok]
                    season[k] = float(vals.mean()) - mean if vals.size else 0.0
            # the warm-up ends at row n: the next row has phase n mod p; rotate so phase 0 is that row
            self._season[j] = np.roll(season, -(n % p)) if p > 1 else season
            resid = col[ok] - mean - (season[np.arange(n)[ok] % p] if p > 1 else 0.0)
            levels[j] = mean
            spreads[j] = float(np.mean(np.abs(resid))) * _ABS_TO_SIGMA if resid.size else 0.0
        tiny = 1e-6 * np.maximum(np.abs(levels), 1.0)
        self._floor = np.maximum(self.floor_frac * spreads, tiny)
        self._s = np.maximum(spreads, tiny)
        self._level = levels
        self._t = 0
