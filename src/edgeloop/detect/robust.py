"""``robust-ensemble-v2``: a streaming, per-asset, multi-sensor detector (pure code, no I/O).

How it works
------------
1. **Warm-up** (first ``warmup_samples`` usable samples, default 1200 = 20 min
   at 1 Hz). Each channel is standardised with its median and MAD. The load
   channels (default ``speed``) become load features: powers 1..3 of the
   standardised load (affinity laws) and, only for channels where they cut the
   residual clearly (the thermal lag of a bearing: by 40 % and by at least 5 %
   of the channel's spread), their time-aware EWMAs at 5 and 15 min. Every
   other channel gets a ridge regression on these features: "what this channel
   reads at this load, given the recent load".
2. **Scoring.** After warm-up, each sample gets per-channel residuals
   (observed - expected), smoothed by an EWMA (60 s) and divided by the spread
   the smoothed residual is allowed: the larger of its out-of-sample spread
   (blocked cross-validation over the warm-up) and a floor of 10 % of the
   channel's normal spread (30 % for lagged channels) or 3 % of its typical
   level -- a 20 min warm-up cannot reveal model error below that. This is
   ``t_j``; the score is ``sum(t_j**2) / threshold``, so ``1.0`` is the
   threshold and ``t_j**2 / sum(t**2)`` is channel ``j``'s exact share of it.
   **The ensemble.** The same t-values also stream into the calibrated ``ensemble`` detector
   (``edgeloop.detect.detectors.ensemble``; default member: ``mahalanobis`` with shrinkage 0.5),
   which learns their joint spread over the first ``ensemble_warmup`` scored samples (3 h),
   calibrates its surprise over as many more, and from then on reports a fused surprise in
   decades of rarity; divided by ``ensemble_threshold`` (20) it is a second score where 1.0 is
   the threshold. It sees what the per-channel sum misses: several channels leaving their joint
   normal pattern together (bearing wear on three vibration axes; pressure and flow in
   cavitation). The anomaly score is the larger of the two, and the explanation comes from the
   one that is larger.
3. **Confirmation.** An anomaly is confirmed when the score stays above 1 for
   ``persistence_samples`` consecutive samples, and cleared after
   ``clear_samples`` consecutive samples below ``clear_score``. One
   :class:`Finding` per episode, at the sample that confirmed it. **A new cause is a new episode:** when, for
   ``cause_change_samples`` consecutive samples above 1, the channel that contributes most to the score belongs
   to none of the channel families that explained the episode's onset (with at least 10 % each), the episode
   ends there (an ``ended`` report, "its cause changed") and a new one begins at the same sample, with its own
   onset and explanation. Without this, a fault that starts under an open episode of another cause (a
   false alarm on motor current that is still open when a bearing starts to overheat) raised no alert of its own.
4. **Settling after a gap.** Across a timestamp gap the load path the machine followed is unknown, so the
   lagged load features (and the residual smoothing) start from a guess. For the longest lag time constant
   (the smoothing time when no lags are used) after the data returns, scores are computed and
   learnt from but confirm no anomaly; an episode already open stays open. Without this, an outage of a few
   minutes made healthy thermal channels look "below normal for this load" as soon as data came back, and
   still 10 minutes later (a 15 min EWMA keeps half of a 10 min guess after 10 min).
5. **Data quality rules**, independent of the model: ``data_gap`` when a channel
   is missing (NaN) for ``gap_samples`` consecutive samples, or when consecutive
   timestamps jump by more than ``max(gap_periods * period, gap_min_ms)``;
   ``sensor_stuck`` when a channel that varied during warm-up repeats exactly
   the same value for ``stuck_samples`` samples (or 2x its longest warm-up
   repeat, if longer).
6. **States hold until the data shows they ended.** A stuck sensor, a channel
   without values and an anomaly episode (a drift, a wearing bearing: whatever
   keeps the score up) are states, not events: after its ``onset`` finding,
   each is re-asserted as a ``holding`` finding at most every ``reassert_ms``
   of sample time while it holds, and reported ``ended`` at the sample that
   shows it is over (the value moves again, values return, the episode
   clears). These reports are in :attr:`AssetDetector.last_updates` after each
   :meth:`~AssetDetector.process` call (which returns onsets only); the alert
   rules keep a state's alert raised while it is re-asserted and clear it at
   its end. A timestamp gap is an event: it is seen when the data is back.

Missing values are never treated as zero: a missing residual holds the smoothed
state, and a sample without its load value cannot be scored and holds it too. No look-ahead:
the score of a sample depends only on that sample and earlier ones. All state
is carried between calls, so the findings do not depend on how the stream is
split into batches.

>>> import numpy as np
>>> det = AssetDetector(channels=["speed", "flow"], config=DetectorConfig(warmup_samples=100))
>>> ts = np.arange(1, 301, dtype=np.int64) * 1000
>>> rng = np.random.default_rng(0)
>>> speed = 1000 + 200 * np.sin(ts / 60_000)
>>> x = np.column_stack([speed, 0.1 * speed + rng.normal(0, 0.5, 300)])
>>> det.process(ts, x)
[]
>>> det.warmed_up, det.samples_seen
(True, 300)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from edgeloop.detect._numeric import F64, I64, Bool, ewma, run_lengths
from edgeloop.detect.finding import Finding, FindingKind, FindingPhase
from edgeloop.detect.protocol import Detector
from edgeloop.detect.registry import make

__all__ = ["AssetDetector", "DetectorConfig"]

_MAD_TO_SIGMA = 1.4826
# channel-name prefix -> words used in a finding's message (first match wins)
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("vib", "vibration"),
    ("bearing_temp", "bearing temperature"),
    ("temp", "temperature"),
    ("motor_current", "motor current"),
    ("current", "current"),
    ("pressure", "pressure"),
    ("flow", "flow"),
    ("speed", "speed"),
)
_KIND_ORDER = {FindingKind.DATA_GAP: 0, FindingKind.SENSOR_STUCK: 1, FindingKind.ANOMALY: 2}


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Tuning of :class:`AssetDetector`; the defaults suit 1 Hz condition-monitoring data."""

    warmup_samples: int = 1200  # usable samples to learn from (20 min at 1 Hz)
    load_channels: tuple[str, ...] = ("speed",)  # channels that describe the operating point
    load_degree: int = 3  # powers of the load used as features (affinity laws: s, s², s³)
    lag_time_constants_s: tuple[float, ...] = (300.0, 900.0)  # EWMA load features (thermal lag)
    cv_folds: int = 4  # blocked cross-validation folds over the warm-up (out-of-sample spread)
    lag_gain: float = 0.6  # lagged features are used for a channel only if they cut its residual by 40 %
    lag_min_cut: float = 0.05  # ... and by at least this fraction of the channel's spread (half of model_floor)
    ridge: float = 1e-3  # ridge penalty, relative to the number of training rows
    residual_floor: float = 0.02  # minimum residual spread, as a fraction of the channel's spread
    model_floor: float = 0.1  # smoothed residual spread >= this fraction of the channel's spread
    lag_model_floor: float = 0.3  # the same for channels that need the lagged (thermal) features
    level_floor: float = 0.03  # ... and >= this fraction of the channel's typical level
    residual_clip: float = 30.0  # residuals clip at this many residual spreads (no single spike dominates)
    smoothing_s: float = 60.0  # EWMA time constant of the residuals
    sigma_inflation: float = 1.3  # margin on the warm-up spread of the smoothed residuals
    threshold: float = 12.0  # sum of squared smoothed t-values that maps to score 1.0
    ensemble_members: tuple[str, ...] = ("mahalanobis",)  # registered detectors fused over the residual t-values
    ensemble_member_params: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
        ("mahalanobis", (("shrinkage", 0.5),)),)  # per member: (name, ((parameter, value), ...))
    ensemble_warmup: int = 10800  # scored rows the ensemble members learn from, then as many to calibrate on
    ensemble_threshold: float = 20.0  # fused surprise (decades of rarity) that maps to score 1.0
    persistence_samples: int = 45  # consecutive samples above 1.0 to confirm an anomaly
    clear_score: float = 0.5  # an anomaly clears below this score ...
    clear_samples: int = 300  # ... held for this many consecutive samples
    cause_change_samples: int = 300  # an open episode whose cause moves to other channels for this long ends and
    # a new one begins (0: never); see 3. in the module docstring
    critical_score: float = 3.0  # score at confirmation from which a finding is critical
    stuck_samples: int = 120  # identical consecutive values that make a channel stuck
    stuck_max_repeat_fraction: float = 0.2  # channels repeating more often than this in warm-up are exempt
    gap_samples: int = 60  # consecutive missing values of a channel that make a data gap
    gap_periods: int = 10  # a timestamp jump above max(gap_periods * period, gap_min_ms) is a data gap
    gap_min_ms: int = 30_000
    gap_critical_ms: int = 900_000  # a timestamp gap this long is critical
    settle_after_gap: bool = True  # after a timestamp gap, confirm no anomaly while the lagged state settles
    reassert_ms: int = 60_000  # a state that holds is re-asserted this often (well inside the rules' hold_s)

    def __setstate__(self, state: Sequence[object]) -> None:
        """Unpickle (a registered detector's config): one stored before a field was added takes its default."""
        known = fields(self)
        if len(state) > len(known):
            raise ValueError("a stored DetectorConfig has more fields than this version knows")
        for k, f in enumerate(known):
            object.__setattr__(self, f.name, state[k] if k < len(state) else f.default)

    def __post_init__(self) -> None:
        positive_ints = ("warmup_samples", "cv_folds", "load_degree", "persistence_samples", "clear_samples",
                         "stuck_samples", "gap_samples", "gap_periods", "reassert_ms")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"DetectorConfig.{name} must be >= 1")
        positive = ("smoothing_s", "sigma_inflation", "threshold", "residual_clip", "critical_score",
                    "ensemble_threshold")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"DetectorConfig.{name} must be > 0")
        if not 0 < self.clear_score <= 1:
            raise ValueError("DetectorConfig.clear_score must be in (0, 1]")
        if self.ridge < 0 or self.residual_floor < 0 or self.gap_min_ms < 0 or self.lag_min_cut < 0:
            raise ValueError("DetectorConfig.ridge, residual_floor, lag_min_cut and gap_min_ms must be >= 0")
        if self.ensemble_warmup < 2:
            raise ValueError("DetectorConfig.ensemble_warmup must be >= 2")
        if any(not t > 0 for t in self.lag_time_constants_s):
            raise ValueError("DetectorConfig.lag_time_constants_s must be > 0")


@dataclass(slots=True)
class _Model:
    """What warm-up learned, plus the streaming state that continues from it."""

    center: F64  # (C,) per-channel median
    scale: F64  # (C,) per-channel robust spread (1.0 for constant channels)
    coef: F64  # (p, J) regression of each scored channel on the load features
    sigma_r: F64  # (J,) residual spread
    sigma_m: F64  # (J,) spread of the smoothed residual
    clip: F64  # (J,) standardised residuals are clipped to +-clip
    use: Bool  # (J,) scored channels that are modelled (not constant during warm-up)
    stuck_limit: I64  # (C,) repeats that make a channel stuck (0 = exempt)
    lag_state: F64  # (T * q,) EWMA state of the load features, one block of q per time constant
    m_state: F64  # (J,) EWMA state of the standardised residuals


@dataclass(slots=True)
class _Warmup:
    ts: list[I64] = field(default_factory=list)
    x: list[F64] = field(default_factory=list)
    rows: int = 0
    usable: int = 0


class AssetDetector:
    """Streaming multi-sensor detector for one asset; see the module docstring."""

    name: ClassVar[str] = "robust-ensemble-v2"
    # state added after detectors were first stored (a detector unpickled from an older version starts from these)
    _cause_carry: int = 0
    _cause: frozenset[str] = frozenset()

    def __init__(self, *, channels: Sequence[str], period_ms: int = 1000,
                 config: DetectorConfig | None = None) -> None:
        self.channels: tuple[str, ...] = tuple(channels)
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must be a non-empty sequence of distinct names")
        if period_ms <= 0:
            raise ValueError("period_ms must be > 0")
        self.period_ms = period_ms
        self.config = config if config is not None else DetectorConfig()
        cfg = self.config
        n_ch = len(self.channels)
        self._load = np.array([i for i, c in enumerate(self.channels) if c in cfg.load_channels],
                              dtype=np.intp)
        self._scored = np.array([i for i, c in enumerate(self.channels) if c not in cfg.load_channels],
                                dtype=np.intp)
        self._gap_ms = max(cfg.gap_periods * period_ms, cfg.gap_min_ms)
        self._taus_ms = np.array(cfg.lag_time_constants_s, dtype=np.float64) * 1000.0
        self._smooth_ms = cfg.smoothing_s * 1000.0
        self._lag_inv_tau = np.repeat(1.0 / self._taus_ms, self._load.size * cfg.load_degree)
        self.samples_seen = 0
        self.samples_dropped = 0  # rows ignored because their timestamp was not after the previous one
        self.last_score = 0.0  # score of the last scored sample (1.0 == threshold)
        self.last_scores: F64 = np.zeros(0)  # scores of the last batch's kept rows (NaN = not scored)
        self.last_updates: list[Finding] = []  # the last batch's holding / ended reports of states (see 6.)
        self._holds: dict[FindingKind, bool] = {}  # state -> held at the last row seen
        self._reported: dict[FindingKind, int] = {}  # state -> sample time of its last onset or holding report
        self._onset: dict[FindingKind, Finding] = {}  # state -> the onset that opened it (severity, explanation)
        self._gap_rows: Bool = np.zeros(0, dtype=bool)  # last batch: rows where a channel is missing too long
        self._anomaly_rows: Bool = np.zeros(0, dtype=bool)  # last batch: rows inside an anomaly episode
        self._last_ts: int | None = None
        self._prev_row = np.full(n_ch, np.nan)
        self._nan_run = np.zeros(n_ch, dtype=np.int64)
        self._eq_run = np.zeros(n_ch, dtype=np.int64)
        self._warm: _Warmup | None = _Warmup()
        self._model: _Model | None = None
        self._ensemble: Detector | None = None  # fused detectors over the residual t-values, made at fit
        self._active = False  # an anomaly episode is open
        self._carry = 0  # current run: above threshold (if not active) / below clear (if active)
        self._cause_carry = 0  # current run (episode open): above 1 with its top channel outside the cause
        self._cause: frozenset[str] = frozenset()  # the channel families that explained the open episode's onset
        self._scored_center = np.zeros(self._scored.size)
        self._scored_scale = np.ones(self._scored.size)
        self._load_const = np.zeros(self._load.size * cfg.load_degree, dtype=bool)
        self._settle_until = np.iinfo(np.int64).min  # no anomaly is confirmed before this time (after a gap)
        self._settle_max_ms = float(self._taus_ms.max()) if self._taus_ms.size else self._smooth_ms

    @property
    def warmed_up(self) -> bool:
        return self._model is not None

    @property
    def anomaly_active(self) -> bool:
        """An anomaly episode is open at the last row seen (its onset was reported; it has not cleared yet)."""
        return self._active

    # ----------------------------------------------------------------- streaming

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        """Score a batch; return the findings confirmed in it (ordered by time).

        ``ts`` (n,) are int64 ms, ascending; ``x`` (n, len(channels)) float64 with
        NaN for missing values. Rows whose time is not after the previous row are
        ignored (counted in ``samples_dropped``).
        """
        tsa = np.asarray(ts, dtype=np.int64).reshape(-1)
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim == 1 and tsa.shape[0] == 1:
            xa = xa.reshape(1, -1)
        if xa.ndim != 2 or xa.shape != (tsa.shape[0], len(self.channels)):
            raise ValueError(
                f"x must have shape ({tsa.shape[0]}, {len(self.channels)}), got {xa.shape}"
            )
        n = tsa.shape[0]
        self.last_scores = np.zeros(0)
        self.last_updates = []
        self._cause_ends: list[Finding] = []  # ``ended`` reports of episodes whose cause changed (this batch)
        if n == 0:
            return []
        prev_ts = self._last_ts if self._last_ts is not None else np.iinfo(np.int64).min
        before = np.maximum.accumulate(np.concatenate([np.array([prev_ts], dtype=np.int64), tsa[:-1]]))
        keep = tsa > before
        if not keep.all():
            self.samples_dropped += int(n - keep.sum())
            tsa, xa = tsa[keep], xa[keep]
            n = tsa.shape[0]
            if n == 0:
                return []
        if not np.isfinite(xa).all():
            xa = np.where(np.isfinite(xa), xa, np.nan)
        first = self._last_ts if self._last_ts is not None else int(tsa[0])
        dt = np.diff(tsa, prepend=np.int64(first)).astype(np.float64)

        findings = self._gaps(tsa, xa, dt)
        settling = self._settling(tsa, dt)
        self.last_scores = np.full(n, np.nan)
        start = 0
        if self._model is None:
            start = self._feed_warmup(tsa, xa)
        stuck_carry = self._eq_run
        eq = xa == np.vstack([self._prev_row[None, :], xa[:-1]])
        eq_run = run_lengths(eq, stuck_carry)
        self._eq_run = eq_run[-1].copy()
        self._prev_row = xa[-1].copy()
        stuck_rows: Bool = np.zeros(n, dtype=bool)
        self._anomaly_rows = np.zeros(n, dtype=bool)
        if self._model is not None and start < n:
            findings += self._stuck(tsa[start:], xa[start:], eq_run[start:])
            limit = self._model.stuck_limit
            stuck_rows[start:] = ((eq_run[start:] + 1 >= limit) & (limit > 0)).any(axis=1)
            findings += self._anomaly(tsa[start:], xa[start:], dt[start:], self.last_scores[start:],
                                      None if settling is None else settling[start:], self._anomaly_rows[start:])
        self.samples_seen += n
        self._last_ts = int(tsa[-1])
        if len(findings) > 1:
            findings.sort(key=lambda f: (f.ts, _KIND_ORDER[FindingKind(f.kind)]))
        for f in findings:
            if f.kind != FindingKind.DATA_GAP or f.ts in self._gap_onsets(tsa):
                self._onset[FindingKind(f.kind)] = f
        for kind, rows in ((FindingKind.DATA_GAP, self._gap_rows), (FindingKind.SENSOR_STUCK, stuck_rows),
                           (FindingKind.ANOMALY, self._anomaly_rows)):
            self.last_updates += self._state_reports(kind, tsa, xa, rows)
        self.last_updates += self._cause_ends
        if len(self.last_updates) > 1:
            self.last_updates.sort(key=lambda f: (f.ts, _KIND_ORDER[FindingKind(f.kind)]))
        return findings

    def _gap_onsets(self, ts: I64) -> set[int]:
        """Times of this batch's rows where a channel's missing run reached ``gap_samples`` (a state's onset)."""
        rows = self._gap_rows
        prev = np.concatenate([[False], rows[:-1]])
        return set(ts[rows & ~prev].tolist())

    def _state_reports(self, kind: FindingKind, ts: I64, x: F64, holds: Bool) -> list[Finding]:
        """``holding`` reports every ``reassert_ms`` while ``holds`` (per row), ``ended`` where it stops holding.

        A run of ``holds`` that starts in this batch starts with its onset finding, which counts as a report;
        one carried over from the previous batch continues from that batch's last report.
        """
        prev = self._holds.get(kind, False)
        if not prev and not holds.any():
            return []
        n = ts.shape[0]
        step = self.config.reassert_ms
        last = self._reported.get(kind, int(ts[0]))
        out: list[Finding] = []
        edges = np.flatnonzero(holds != np.concatenate([[prev], holds[:-1]])).tolist()
        state, pos = prev, 0
        for end in [*edges, n]:
            if state and end > pos:
                if pos > 0 or not prev:
                    last = int(ts[pos])  # a new run: its onset finding was the report
                while True:
                    i = pos + int(np.searchsorted(ts[pos:end], last + step, side="left"))
                    if i >= end:
                        break
                    last = int(ts[i])
                    out.append(self._state_finding(kind, FindingPhase.HOLDING, i, ts, x))
            if state and end < n:
                out.append(self._state_finding(kind, FindingPhase.ENDED, end, ts, x))
            state, pos = not state, end
        self._holds[kind] = bool(holds[-1])
        self._reported[kind] = last
        return out

    def _state_finding(self, kind: FindingKind, phase: FindingPhase, i: int, ts: I64, x: F64) -> Finding:
        onset = self._onset.get(kind)
        since = f", {_duration(float(ts[i] - onset.ts))} since its onset" if onset is not None else ""
        what = {FindingKind.DATA_GAP: "channel without values", FindingKind.SENSOR_STUCK: "stuck sensor",
                FindingKind.ANOMALY: "anomaly"}[kind]
        if phase is FindingPhase.ENDED:
            message = f"{what} over: the data shows it ended"
        elif kind is FindingKind.SENSOR_STUCK and onset is not None:
            chans = [c for c in onset.explanation if c in self.channels]
            vals = ", ".join(f"{c} at {x[i, self.channels.index(c)]:.6g}" for c in chans)
            message = f"{vals} still stuck (same reading{since})"
        else:
            message = f"{what} still holds{since}"
        score = float(self.last_scores[i]) if kind is FindingKind.ANOMALY and self.last_scores.size > i else 1.0
        if phase is FindingPhase.ENDED or not math.isfinite(score):
            score = 0.0 if phase is FindingPhase.ENDED else 1.0
        return Finding(ts=int(ts[i]), kind=kind, severity=onset.severity if onset is not None else "warning",
                       score=score, explanation=dict(onset.explanation) if onset is not None else {},
                       message=message, phase=phase)

    def _settling(self, ts: I64, dt: F64) -> Bool | None:
        """Rows inside a settling period after a timestamp gap (None: none), carried across batches."""
        if not self.config.settle_after_gap:
            return None
        for i in np.flatnonzero(dt > self._gap_ms).tolist():
            self._settle_until = max(self._settle_until, int(ts[i]) + int(self._settle_max_ms))
        if ts[0] >= self._settle_until:
            return None
        mask: Bool = ts < self._settle_until
        return mask

    # ----------------------------------------------------------------- data quality

    def _gaps(self, ts: I64, x: F64, dt: F64) -> list[Finding]:
        cfg = self.config
        out: list[Finding] = []
        self._gap_rows = np.zeros(ts.shape[0], dtype=bool)
        jumps = np.flatnonzero(dt > self._gap_ms)
        if jumps.size:
            share = 1.0 / len(self.channels)
            for i in jumps.tolist():
                gap = float(dt[i])
                out.append(Finding(
                    ts=int(ts[i]),
                    kind=FindingKind.DATA_GAP,
                    severity="critical" if gap >= cfg.gap_critical_ms else "warning",
                    score=gap / self._gap_ms,
                    explanation=dict.fromkeys(self.channels, share),
                    message=f"no samples for {_duration(gap)} (all channels)",
                ))
        missing = np.isnan(x)
        if missing.any() or self._nan_run.any():
            run = run_lengths(missing, self._nan_run)
            self._nan_run = run[-1].copy()
            self._gap_rows = np.asarray((run >= cfg.gap_samples).any(axis=1), dtype=bool)
            onset = run == cfg.gap_samples
            for i in np.flatnonzero(onset.any(axis=1)).tolist():
                names = [self.channels[j] for j in np.flatnonzero(onset[i]).tolist()]
                out.append(Finding(
                    ts=int(ts[i]),
                    kind=FindingKind.DATA_GAP,
                    severity="warning",
                    score=1.0,
                    explanation=dict.fromkeys(names, 1.0 / len(names)),
                    message=f"{', '.join(names)} missing for {_duration(cfg.gap_samples * self.period_ms)}",
                ))
        return out

    def _stuck(self, ts: I64, x: F64, eq_run: I64) -> list[Finding]:
        model = self._model
        assert model is not None
        # eq_run counts repeats of the previous value: a value seen k times in a row has run k - 1
        onset = (eq_run + 1 == model.stuck_limit) & (model.stuck_limit > 0)
        out: list[Finding] = []
        if not onset.any():
            return out
        for i in np.flatnonzero(onset.any(axis=1)).tolist():
            cols = np.flatnonzero(onset[i]).tolist()
            names = [self.channels[j] for j in cols]
            values = ", ".join(f"{self.channels[j]} at {x[i, j]:.6g}" for j in cols)
            n_rep = int(model.stuck_limit[cols[0]])
            out.append(Finding(
                ts=int(ts[i]),
                kind=FindingKind.SENSOR_STUCK,
                severity="warning",
                score=1.0,
                explanation=dict.fromkeys(names, 1.0 / len(names)),
                message=f"{values} stuck (same reading {n_rep} times in a row)",
            ))
        return out

    # ----------------------------------------------------------------- warm-up

    def _usable(self, x: F64) -> Bool:
        ok = np.ones(x.shape[0], dtype=bool)
        if self._load.size:
            ok &= ~np.isnan(x[:, self._load]).any(axis=1)
        if self._scored.size:
            ok &= ~np.isnan(x[:, self._scored]).all(axis=1)
        return ok

    def _feed_warmup(self, ts: I64, x: F64) -> int:
        """Buffer warm-up rows; fit when enough are usable. Returns the first row to score."""
        warm = self._warm
        assert warm is not None
        need = self.config.warmup_samples
        cum = np.cumsum(self._usable(x)) + warm.usable
        done = np.flatnonzero(cum >= need)
        end = int(done[0]) + 1 if done.size else x.shape[0]
        warm.ts.append(ts[:end].copy())
        warm.x.append(x[:end].copy())
        warm.rows += end
        warm.usable = int(cum[end - 1])
        limit = 4 * need
        if warm.rows > 2 * limit:  # bound the buffer when most rows are unusable
            all_ts, all_x = np.concatenate(warm.ts)[-limit:], np.concatenate(warm.x)[-limit:]
            warm.ts, warm.x, warm.rows = [all_ts], [all_x], limit
        if not done.size:
            return int(x.shape[0])
        self._fit(np.concatenate(warm.ts), np.concatenate(warm.x))
        self._warm = None
        return end

    def _load_features(self, x: F64, center: F64, scale: F64) -> tuple[F64, Bool]:
        u = (x[:, self._load] - center[self._load]) / scale[self._load]
        base = np.concatenate([u**k for k in range(1, self.config.load_degree + 1)], axis=1)
        return base, ~np.isnan(base).any(axis=1)

    def _fit(self, ts: I64, x: F64) -> None:
        cfg = self.config
        m_rows, n_ch = x.shape
        center = np.zeros(n_ch)
        scale = np.ones(n_ch)
        constant = np.zeros(n_ch, dtype=bool)
        stuck_limit = np.zeros(n_ch, dtype=np.int64)
        for j in range(n_ch):
            col = x[:, j]
            vals = col[~np.isnan(col)]
            if vals.size == 0:
                constant[j] = True
                continue
            med = float(np.median(vals))
            spread = _MAD_TO_SIGMA * float(np.median(np.abs(vals - med)))
            if not spread > 0:
                spread = float(np.std(vals))
            center[j] = med
            if spread > 1e-12 * max(1.0, abs(med)):
                scale[j] = spread
            else:
                constant[j] = True
                continue
            # stuck rule: only for channels that normally vary from sample to sample
            pairs = ~np.isnan(col[1:]) & ~np.isnan(col[:-1])
            if pairs.sum() < 10:
                continue
            same = (col[1:] == col[:-1]) & pairs
            if same.sum() / pairs.sum() <= cfg.stuck_max_repeat_fraction:
                longest = int(run_lengths(same, 0).max()) + 1 if same.any() else 1
                stuck_limit[j] = max(cfg.stuck_samples, 2 * longest)

        dt = np.diff(ts, prepend=ts[0]).astype(np.float64)
        n_scored = self._scored.size
        if self._load.size:
            base, lvalid = self._load_features(x, center, scale)
            base = np.where(np.tile(constant[self._load], cfg.load_degree)[None, :] & lvalid[:, None], 0.0, base)
            first = np.flatnonzero(lvalid)
            y0 = base[first[0]] if first.size else np.zeros(base.shape[1])
            wide = np.tile(base, self._taus_ms.size)
            lag_valid = None if lvalid.all() else np.broadcast_to(lvalid[:, None], wide.shape)
            lag = ewma(wide, lag_valid, -dt[:, None] * self._lag_inv_tau, np.tile(y0, self._taus_ms.size))
            feats = np.concatenate([np.ones((m_rows, 1)), base, lag], axis=1)
            lag_state = lag[-1].copy()
        else:
            lvalid = np.ones(m_rows, dtype=bool)
            feats = np.ones((m_rows, 1))
            lag_state = np.zeros(0)
        p = feats.shape[1]
        n_static = 1 + (self._load.size * cfg.load_degree)
        # standardise the feature columns for a well-conditioned ridge; fold it back into coef
        fv = feats[lvalid]
        mu = fv.mean(axis=0) if fv.size else np.zeros(p)
        sd = fv.std(axis=0) if fv.size else np.ones(p)
        mu[0], sd[0] = 0.0, 1.0
        sd = np.where(sd > 1e-12, sd, 1.0)
        fs = (feats - mu) / sd
        penalty = np.eye(p)
        penalty[0, 0] = 0.0
        coef = np.zeros((p, n_scored))
        sigma_r = np.ones(n_scored)
        use = np.zeros(n_scored, dtype=bool)
        z = (x[:, self._scored] - center[self._scored]) / scale[self._scored]
        resid = np.full((m_rows, n_scored), np.nan)
        cv = np.full((m_rows, n_scored), np.nan)
        dynamic = np.zeros(n_scored, dtype=bool)
        for k, j in enumerate(self._scored.tolist()):
            rows = lvalid & ~np.isnan(z[:, k])
            if constant[j] or rows.sum() < max(10, 2 * p):
                continue
            a = fs[rows]
            beta, e = _ridge(a, z[rows, k], cfg.ridge * rows.sum() * penalty)
            spread = _mad(e)
            if n_static < p:  # lagged load features only where they clearly help (thermal lag)
                b_static, e_static = _ridge(a[:, :n_static], z[rows, k],
                                            cfg.ridge * rows.sum() * penalty[:n_static, :n_static])
                s_static = _mad(e_static)
                # A real lag (a bearing heating up) leaves the static fit a residual that is a
                # sizeable part of the channel's spread, and the lagged features remove most of it.
                # On an instantaneous channel (pressure ∝ s²) the static residual is a few % of the
                # spread (noise, process disturbance); over a 20 min warm-up the lagged features can
                # still cut it by 40 % in-sample by fitting that disturbance. Such a cut, under
                # lag_min_cut, is no lag worth modelling: the channel stays static and keeps the
                # tight floor (the loose one is for the extrapolation error of a real lag model),
                # and whatever lag it has is in the static model's out-of-sample spread anyway.
                if not (spread < cfg.lag_gain * s_static and s_static - spread >= cfg.lag_min_cut):
                    beta = np.concatenate([b_static, np.zeros(p - n_static)])
                    e, spread = e_static, s_static
            sigma_r[k] = max(spread, cfg.residual_floor, 1e-9)
            resid[rows, k] = e / sigma_r[k]
            # out-of-sample residuals (blocked cross-validation over time) tell how well the
            # model carries to data it has not seen; they set the spread of the smoothed residual
            cols = p if beta[n_static:].any() else n_static
            dynamic[k] = cols > n_static
            idx = np.flatnonzero(rows)
            for fold in np.array_split(np.arange(idx.size), cfg.cv_folds):
                train = np.ones(idx.size, dtype=bool)
                train[fold] = False
                if train.sum() < 2 * cols:
                    continue
                b_cv, _ = _ridge(a[train, :cols], z[idx[train], k],
                                 cfg.ridge * train.sum() * penalty[:cols, :cols])
                cv[idx[fold], k] = (z[idx[fold], k] - a[fold, :cols] @ b_cv) / sigma_r[k]
            # fold the feature standardisation into the coefficients
            raw = beta / sd
            raw[0] = beta[0] - float(mu @ raw)
            coef[:, k] = raw
            use[k] = True
        # the smoothed residual cannot be trusted to better than a fraction of the channel's normal
        # spread (model error the short warm-up cannot show); single residuals are clipped well above
        floor_z = np.maximum(
            np.where(dynamic, cfg.lag_model_floor, cfg.model_floor),
            cfg.level_floor * np.abs(center[self._scored]) / scale[self._scored],
        )
        floor_r = floor_z / sigma_r
        clip = cfg.residual_clip * np.maximum(1.0, floor_r)
        r = np.clip(resid, -clip, clip)
        m = ewma(r, ~np.isnan(r), -dt / self._smooth_ms, np.zeros(n_scored))
        r_cv = np.clip(cv, -clip, clip)
        cv_valid = ~np.isnan(r_cv)
        m_cv = ewma(r_cv, cv_valid, -dt / self._smooth_ms, np.zeros(n_scored))
        burn = min(m_rows // 2, int(2 * self._smooth_ms / self.period_ms))
        tail = np.where(cv_valid[burn:], m_cv[burn:], 0.0)
        counts = cv_valid[burn:].sum(axis=0)
        rms = np.sqrt((tail * tail).sum(axis=0) / np.maximum(counts, 1))
        w = -math.expm1(-self.period_ms / self._smooth_ms)
        white = math.sqrt(w / (2.0 - w))  # spread of a smoothed white residual
        floor = np.maximum(white, floor_r)
        sigma_m = np.maximum(np.where(counts > 0, rms, white), floor) * cfg.sigma_inflation
        self._model = _Model(
            center=center,
            scale=scale,
            coef=coef,
            sigma_r=sigma_r,
            sigma_m=sigma_m,
            clip=clip,
            use=use,
            stuck_limit=stuck_limit,
            lag_state=lag_state,
            m_state=m[-1].copy() if m_rows else np.zeros(n_scored),
        )
        self._scored_center = center[self._scored]
        self._scored_scale = scale[self._scored]
        if cfg.ensemble_members and n_scored:
            self._ensemble = make("ensemble", n_scored, warmup=cfg.ensemble_warmup, members=cfg.ensemble_members,
                                  member_params={m: dict(p) for m, p in cfg.ensemble_member_params
                                                 if m in cfg.ensemble_members})
        self._load_const = np.tile(constant[self._load], cfg.load_degree)

    # ----------------------------------------------------------------- anomaly

    def _scores(self, x: F64, dt: F64) -> tuple[F64, F64, F64, F64, F64]:
        """Score, t-values, smoothed residuals, the ensemble's part of the score and the standardised level each
        scored channel is expected at for its load (model must be fitted).

        Two views of the same residuals, each scaled so that 1.0 is its threshold: the exact statistic
        ``sum(t**2) / threshold`` and the calibrated ensemble's fused surprise over the t-values
        divided by ``ensemble_threshold``. The score is the larger of the two.
        """
        model = self._model
        assert model is not None
        cfg = self.config
        n = x.shape[0]
        if self._load.size:
            base, lvalid = self._load_features(x, model.center, model.scale)
            if self._load_const.any():
                base = np.where(self._load_const[None, :] & lvalid[:, None], 0.0, base)
            parts = [np.ones((n, 1)), base]
            if self._taus_ms.size:
                wide = np.tile(base, self._taus_ms.size)
                lag_valid = None if lvalid.all() else np.broadcast_to(lvalid[:, None], wide.shape)
                lag = ewma(wide, lag_valid, -dt[:, None] * self._lag_inv_tau, model.lag_state)
                model.lag_state = lag[-1].copy()
                parts.append(lag)
            feats = np.concatenate(parts, axis=1)
        else:
            feats = np.ones((n, 1))
        pred = feats @ model.coef
        z = (x[:, self._scored] - self._scored_center) / self._scored_scale
        r = np.clip((z - pred) / model.sigma_r, -model.clip, model.clip)
        rvalid = ~np.isnan(r)
        m = ewma(r, None if rvalid.all() else rvalid, -dt / self._smooth_ms, model.m_state)
        model.m_state = m[-1].copy()
        t = np.where(model.use, m / model.sigma_m, 0.0)
        score = np.einsum("ij,ij->i", t, t) / cfg.threshold
        if self._ensemble is None:
            return score, t, m, np.zeros(n), pred
        ens = self._ensemble.score_learn_many(t) / cfg.ensemble_threshold
        return np.maximum(score, ens), t, m, ens, pred

    def _anomaly(self, ts: I64, x: F64, dt: F64, out_scores: F64, settling: Bool | None,
                 out_active: Bool) -> list[Finding]:
        cfg = self.config
        if not self._scored.size:
            return []
        out_active[:] = self._active
        score, t, m, ens, pred = self._scores(x, dt)
        out_scores[:] = score
        self.last_score = float(score[-1])
        above = score > 1.0 if settling is None else (score > 1.0) & ~settling
        out: list[Finding] = []
        n = score.shape[0]
        top: npt.NDArray[np.str_] | None = None  # per row, the top channel's family (made once an episode is open)
        i = 0
        while i < n:
            if not self._active:
                run = run_lengths(above[i:], self._carry)
                hit = np.flatnonzero(run >= cfg.persistence_samples)
                if not hit.size:
                    self._carry = int(run[-1])
                    break
                k = i + int(hit[0])
                self._open(out, k, ts, score, t, m, ens, pred)
                out_active[k:] = True
            else:
                run = run_lengths(score[i:] < cfg.clear_score, self._carry)
                hit = np.flatnonzero(run >= cfg.clear_samples)
                k = i + int(hit[0]) if hit.size else n
                moved = None
                if cfg.cause_change_samples and k > i:
                    top = self._top_families(t) if top is None else top
                    moved = self._cause_moved(above[i:k], top[i:k])
                if moved is not None and top is not None:  # a new cause before the episode cleared: a new episode
                    k = i + moved
                    old = out[-1] if out else self._onset.get(FindingKind.ANOMALY)
                    self._cause_ends.append(Finding(
                        ts=int(ts[k]), kind=FindingKind.ANOMALY, phase=FindingPhase.ENDED, score=0.0,
                        severity=old.severity if old is not None else "warning",
                        explanation=dict(old.explanation) if old is not None else {},
                        message=f"anomaly over: its cause changed (now {top[k]})"))
                    self._open(out, k, ts, score, t, m, ens, pred)
                elif not hit.size:
                    self._carry = int(run[-1])
                    break
                else:
                    self._active, self._carry, self._cause_carry = False, 0, 0
                    out_active[k:] = False
            i = k + 1
        return out

    def _open(self, out: list[Finding], k: int, ts: I64, score: F64, t: F64, m: F64, ens: F64, pred: F64) -> None:
        """Open an episode at row ``k``: its onset finding, and the channel families that explain it."""
        finding = self._anomaly_finding(int(ts[k]), float(score[k]), t[k], m[k], bool(ens[k] >= score[k]), pred[k])
        out.append(finding)
        self._active, self._carry, self._cause_carry = True, 0, 0
        self._cause = frozenset(_family(c) for c, share in finding.explanation.items() if share >= 0.1)

    def _top_families(self, t: F64) -> npt.NDArray[np.str_]:
        """Per row, the family of the scored channel with the largest squared t-value."""
        families = np.array([_family(self.channels[j]) for j in self._scored.tolist()])
        top: npt.NDArray[np.str_] = families[np.argmax(np.nan_to_num(t * t), axis=1)]
        return top

    def _cause_moved(self, above: Bool, top: npt.NDArray[np.str_]) -> int | None:
        """The first row (of these, the episode open) where its cause has moved for ``cause_change_samples`` rows
        (above 1, the top channel outside the onset's families), or None (the run carried on)."""
        if not self._cause:
            return None  # an episode opened before causes were kept: its cause is unknown
        moved = above & ~np.isin(top, list(self._cause))
        run = run_lengths(moved, self._cause_carry)
        hit = np.flatnonzero(run >= self.config.cause_change_samples)
        if hit.size:
            return int(hit[0])
        self._cause_carry = int(run[-1])
        return None

    def _anomaly_finding(self, ts: int, score: float, t: F64, m: F64, by_ensemble: bool, pred: F64) -> Finding:
        # the exact shares of sum(t**2), or the ensemble's explanation when it is the larger score
        # (the ensemble explains against its state at the end of the batch; if that sees nothing, the exact
        # shares stand)
        sq = t * t
        if by_ensemble and self._ensemble is not None:
            shares = self._ensemble.explain_one(t)
            if shares.sum() > 0:
                sq = shares
        total = float(sq.sum())
        names = [self.channels[j] for j in self._scored.tolist()]
        explanation = {names[k]: float(sq[k]) / total for k in np.flatnonzero(sq > 0).tolist()}
        order = sorted(explanation, key=lambda c: -explanation[c])
        top: list[str] = []
        acc = 0.0
        for c in order:
            if len(top) == 3 or (top and (acc >= 0.8 or explanation[c] < 0.05)):
                break
            top.append(c)
            acc += explanation[c]
        signs = {names[k]: float(m[k]) for k in range(len(names))}
        families: list[str] = []
        for c in top:
            fam = _family(c)
            if fam not in families:
                families.append(fam)
        ups = {signs[c] > 0 for c in top}
        direction = ("above" if ups == {True} else "below") + " normal for this load" if len(ups) == 1 \
            else "away from normal for this load"
        parts = ", ".join(f"{c} {round(100 * explanation[c])} %" for c in top)
        # back in the channel's unit: the level expected for this load, and the (smoothed) level seen
        model = self._model
        assert model is not None
        expected = pred * self._scored_scale + self._scored_center
        seen = expected + m * model.sigma_r * self._scored_scale
        evidence = {names[k]: (float(seen[k]), float(expected[k])) for k in range(len(names))
                    if names[k] in top and np.isfinite(seen[k]) and np.isfinite(expected[k])}
        return Finding(
            ts=ts,
            kind=FindingKind.ANOMALY,
            severity="critical" if score >= self.config.critical_score else "warning",
            score=score,
            explanation=explanation,
            message=f"{' and '.join(families)} ({parts}) {direction}",
            evidence=evidence,
        )


def _ridge(a: F64, y: F64, penalty: F64) -> tuple[F64, F64]:
    beta = np.linalg.solve(a.T @ a + penalty, a.T @ y).astype(np.float64, copy=False)
    return beta, y - a @ beta


def _mad(e: F64) -> float:
    return _MAD_TO_SIGMA * float(np.median(np.abs(e - np.median(e))))


def _family(channel: str) -> str:
    for prefix, words in _FAMILIES:
        if channel.startswith(prefix):
            return words
    return channel


def _duration(ms: float) -> str:
    if ms < 120_000:
        return f"{ms / 1000:.0f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"
