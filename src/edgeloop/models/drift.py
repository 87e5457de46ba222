"""Drift monitoring: is the live data still the data the champion model was trained on? Pure code (no I/O; time
is the samples' own time, in ms).

Four signals, each turned into explained :class:`DriftEvent` records that are shown and audited but never page
(a fault is drift too: a wearing bearing shifts its vibration; the event only reports, the retraining policy of
:mod:`edgeloop.models.retraining` decides what to do about it):

* **input drift** (:class:`DriftMonitor`, one per device): each channel's distribution over a sliding window
  (default 30 min, moved every 5 min) against the champion's training reference, as the population stability
  index (PSI) over the reference's decile bins (:class:`ReferenceStats`). A window drifts when a channel's PSI
  exceeds its limit (:class:`DriftConfig`); an event fires when ``consecutive`` windows in a row drift.
* **score shift** (the same monitor, when it is fed scores): the PSI of the live score distribution over the
  reference's score deciles.
* **alert-rate shift** (:class:`AlertRateMonitor`, one per profile): an asset's alert onsets in a window against
  its own history and against its peers, by the exact conditional test of two Poisson rates (given the total,
  the asset's share of the events is binomial with the share of the exposure).
* **label precision** (:class:`LabelPrecisionMonitor`): the share of false alarms among the last labels of a
  device and of the whole profile.

Every monitor raises one event per episode: once fired it is re-armed only after its signal has been quiet for a
while (``clear_ms``), so a lasting drift never floods. Every piece of state is bounded: a monitor keeps per-hop
bin counts of one window (never the samples), an alert monitor hourly counts of its horizon, a precision monitor
the last ``last_n`` labels.

Calibration (defaults: deciles plus a 0.5 % tail bin at each end, share floor 1e-3, a channel's limit the larger of
1.0 and 2.5 times the 99th percentile PSI of the training data's own windows, 3 drifting windows in a row, re-armed
after 6 quiet hours), on :class:`edgeloop.sim.Fleet` with one day as the reference: no event on 576 healthy device-
days (24 seeds x 8 devices x 3 days); speed levels scaled by 0.9 or 1.1 found 23-33 min after the change (16 of 16
each), with a +8 degC bearing temperature offset too both channels named (14 of 16); a +5 degC temperature offset
alone found in 14 of 16 (11 within the hour: a bearing temperature follows the load and the day slowly, so its own
windows stray far and its limit is high). Faults are drift too: cavitation and bearing wear fire 0.6-0.9 h after
onset, a stuck sensor 0.4 h (11 of 12), overheating 4-7 h, a sensor drift 1.5-11 h; dropouts do not. SKAB's
anomaly-free run (2.8 h) gives no event with its first 1.7 h as the reference, one (Thermocouple, which warms
through the run) with 1.4 h: a reference must span the slow cycles of the data it stands for.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "PROFILE_SCOPE",
    "AlertRateMonitor",
    "DriftConfig",
    "DriftEvent",
    "DriftKind",
    "DriftMonitor",
    "DriftStatus",
    "LabelLike",
    "LabelPrecisionMonitor",
    "ReferenceStats",
    "align",
    "bin_fractions",
    "poisson_p",
    "poisson_ratio_p",
    "psi",
    "reference_from",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DriftKind = Literal["input", "score", "alert_rate", "precision"]
DEFAULT_BINS = 10
DEFAULT_TAIL = 0.005
PROFILE_SCOPE = "*"  # the ``device`` of a profile-wide event (label precision over all of a profile's labels)
_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000


class ReferenceStats(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the champion was trained on, as much as drift monitoring needs (stored in the model's manifest).

    ``edges[c]``: channel ``channels[c]``'s inner bin edges (``bins - 1`` ascending values, the reference's
    deciles by default); a value ``x`` is in bin ``searchsorted(edges, x, side="right")``. ``fractions[c]``: the
    reference's share of each of those bins (empty: every bin ``1 / bins``, which quantile edges give unless the
    data has ties). ``score_quantiles`` / ``score_fractions``: the same for the detector's scores (empty: no score
    reference). ``limits[c]`` / ``score_limit``: how far the training data's own windows stray from the whole (the
    99th percentile of their PSI, see :func:`reference_from`; empty / None: unknown), which sets the level a live
    window must pass (:class:`DriftConfig`). ``alert_rate_per_day``: alert onsets per asset and day on the
    training data (None: unknown).
    A channel with no edges (no valid reference value) is not monitored.
    """

    channels: list[str]
    edges: list[list[float]]
    fractions: list[list[float]] = []
    score_quantiles: list[float] = []
    score_fractions: list[float] = []
    limits: list[float] = []
    score_limit: float | None = None
    alert_rate_per_day: float | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        if len(self.edges) != len(self.channels):
            raise ValueError(f"{len(self.channels)} channels but {len(self.edges)} edge lists")
        if self.fractions and len(self.fractions) != len(self.channels):
            raise ValueError(f"{len(self.channels)} channels but {len(self.fractions)} fraction lists")
        for c, e in enumerate(self.edges):
            if any(b < a for a, b in itertools.pairwise(e)) or any(not math.isfinite(v) for v in e):
                raise ValueError(f"the edges of {self.channels[c]} are not finite and ascending")
            if self.fractions and e and len(self.fractions[c]) != len(e) + 1:
                raise ValueError(f"{self.channels[c]}: {len(e)} edges need {len(e) + 1} fractions")
        if self.limits and len(self.limits) != len(self.channels):
            raise ValueError(f"{len(self.channels)} channels but {len(self.limits)} limits")
        if self.score_fractions and len(self.score_fractions) != len(self.score_quantiles) + 1:
            raise ValueError("score_fractions needs one more entry than score_quantiles")


def align(values: F64, channels: Sequence[str], reference: ReferenceStats) -> F64:
    """``values[n, len(channels)]`` rearranged into the reference's channel order (what
    :meth:`DriftMonitor.observe` takes); a reference channel the data lacks is NaN (not judged), a data channel
    the reference lacks is dropped. For a profile whose channels changed since the champion was trained."""
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise ValueError(f"values must be (n, {len(channels)}), not {values.shape}")
    at = {name: j for j, name in enumerate(channels)}
    out = np.full((values.shape[0], len(reference.channels)), math.nan)
    for c, name in enumerate(reference.channels):
        if name in at:
            out[:, c] = values[:, at[name]]
    return out


def bin_fractions(values: F64, edges: Sequence[float]) -> F64:
    """The share of the finite ``values`` in each bin of ``edges`` (``len(edges) + 1`` bins); NaN when none."""
    x = values[np.isfinite(values)]
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right"),
                         minlength=len(edges) + 1).astype(np.float64)
    return counts / x.shape[0] if x.shape[0] else np.full(len(edges) + 1, math.nan)


def _quantile_edges(x: F64, bins: int, tail: float) -> list[float]:
    x = x[np.isfinite(x)]
    if not x.shape[0]:
        return []
    probs = np.arange(1, bins) / bins
    if tail > 0:
        probs = np.concatenate([[tail], probs, [1.0 - tail]])
    return [float(v) for v in np.quantile(x, probs)]


def reference_from(values: F64, channels: Sequence[str], *, ts: I64 | None = None, scores: F64 | None = None,
                   alert_rate_per_day: float | None = None, bins: int = DEFAULT_BINS, tail: float = DEFAULT_TAIL,
                   config: DriftConfig | None = None) -> ReferenceStats:
    """The reference of training data ``values[n, C]`` (NaN = missing; columns in ``channels`` order): each
    channel's bin edges (the ``bins``-quantiles, plus a tail bin of share ``tail`` at each end, so mass beyond
    what training saw weighs heavily) and its bin shares; the same for the detector's ``scores`` on that data.
    With the rows' times ``ts`` (ascending ms), the training data's own windows (``config``'s window and hop)
    are judged against the whole, and each channel's 99th percentile PSI becomes its ``limits`` entry: a channel
    that varies slowly (a bearing temperature following the load and the day) has windows far from its overall
    distribution even when nothing is wrong. What the training job stores with a candidate."""
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise ValueError(f"values must be (n, {len(channels)}), not {values.shape}")
    if bins < 2 or not 0 <= tail < 0.5 / bins:
        raise ValueError("need at least 2 bins, and a tail share below half a bin's")
    edges = [_quantile_edges(values[:, c], bins, tail) for c in range(len(channels))]
    fractions = [[float(f) for f in bin_fractions(values[:, c], e)] if e else [] for c, e in enumerate(edges)]
    s_edges: list[float] = []
    s_fractions: list[float] = []
    s = None if scores is None else np.asarray(scores, dtype=np.float64)
    if s is not None:
        if s.shape != (values.shape[0],):
            raise ValueError("scores must have one value per row")
        s_edges = _quantile_edges(s, bins, tail)
        if s_edges:
            s_fractions = [float(f) for f in bin_fractions(s, s_edges)]
    ref = ReferenceStats(channels=list(channels), edges=edges, fractions=fractions, score_quantiles=s_edges,
                         score_fractions=s_fractions, alert_rate_per_day=alert_rate_per_day,
                         rows=int(values.shape[0]))
    if ts is None:
        return ref
    if np.shape(ts) != (values.shape[0],):
        raise ValueError("ts must have one time per row")
    limits, score_limit = _self_limits(ref, np.asarray(ts, dtype=np.int64), values, s, config or DriftConfig())
    return msgspec.structs.replace(ref, limits=limits, score_limit=score_limit)


def _self_limits(ref: ReferenceStats, ts: I64, values: F64, scores: F64 | None,
                 config: DriftConfig) -> tuple[list[float], float | None]:
    """Each channel's (and the score's) 99th percentile PSI over the training data's own windows; 0 when no
    window could be judged."""
    monitor = DriftMonitor(device="reference", reference=ref, model="", config=config)
    seen: list[DriftStatus] = []
    hop = ts // config.hop_ms
    cuts = np.flatnonzero(np.diff(hop)) + 1
    for lo, hi in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [ts.shape[0]]]).tolist(),
                      strict=True):
        monitor.observe(ts[lo:hi], values[lo:hi], None if scores is None else scores[lo:hi])
        if monitor.status.window_end_ms is not None and (not seen or seen[-1] is not monitor.status):
            seen.append(monitor.status)
    monitor.advance(int(ts[-1]) + config.hop_ms if ts.shape[0] else 0)
    if monitor.status.window_end_ms is not None and (not seen or seen[-1] is not monitor.status):
        seen.append(monitor.status)
    limits = []
    for name in ref.channels:
        figs = [st.channels[name] for st in seen if name in st.channels]
        limits.append(round(float(np.quantile(figs, 0.99)), 4) if figs else 0.0)
    s_figs = [st.score for st in seen if st.score is not None]
    return limits, (round(float(np.quantile(s_figs, 0.99)), 4) if s_figs else None)


def psi(reference: F64, live: F64, *, floor: float = 1e-3) -> float:
    """The population stability index ``sum((p - q) * ln(p / q))`` of the live bin shares ``live`` against the
    reference's ``reference``, each share floored at ``floor`` (an empty bin would make it infinite)."""
    p = np.maximum(live, floor)
    q = np.maximum(reference, floor)
    return float(np.sum((p - q) * np.log(p / q)))


class DriftEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One drift episode of a device (or asset, or profile: ``device`` ``"*"``), explained; recorded, shown and
    audited, never paged.

    ``channels``: what drifted and how far (channel -> PSI for input drift, ``score`` for a score shift, ``alerts``
    -> rate ratio for an alert-rate shift, ``false_alarms`` -> share), largest first. ``figure`` is the largest of
    them (the test's p-value's complement is not used: figures are distances or ratios), ``threshold`` the level
    it had to pass. ``since_ms``: the start of the first drifting window of the episode; ``detected_ms``: when the
    event fired. ``model``: the reference (``detector.pump@3``) of the champion the data drifted from. ``id``: set
    by the store once the event is recorded (training requests name their triggering events by it).
    """

    device: str
    kind: DriftKind
    since_ms: int
    detected_ms: int
    channels: dict[str, float]
    figure: float
    threshold: float
    message: str
    model: str
    asset: str | None = None
    profile: str = ""
    id: int | None = None


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ranked(figures: Mapping[str, float]) -> dict[str, float]:
    """Largest first; equal figures by name (deterministic)."""
    return {k: round(v, 4) for k, v in sorted(figures.items(), key=lambda kv: (-kv[1], kv[0]))}


class DriftConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a :class:`DriftMonitor` decides (defaults calibrated on the simulator; see the module docstring).

    A window of ``window_ms`` is evaluated every ``hop_ms`` (``window_ms`` a multiple of it). A channel with
    fewer than ``min_samples`` valid values in the window is not judged, nor a window with data in fewer than half
    of its hops (a silence's end must fill in first). A channel drifts when its PSI exceeds its
    limit: ``psi_threshold``, or ``limit_factor`` times the reference's own limit for the channel
    (:attr:`ReferenceStats.limits`) when that is larger (the same for the scores with ``score_threshold``). An
    event fires after ``consecutive`` drifting windows in a row, and the monitor is re-armed after ``clear_ms``
    without a drifting window. Windows that begin before the monitor's first sample are not judged.
    """

    window_ms: Annotated[int, msgspec.Meta(gt=0)] = 30 * _MINUTE_MS
    hop_ms: Annotated[int, msgspec.Meta(gt=0)] = 5 * _MINUTE_MS
    psi_threshold: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    score_threshold: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    limit_factor: Annotated[float, msgspec.Meta(ge=0)] = 2.5
    consecutive: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    clear_ms: Annotated[int, msgspec.Meta(ge=0)] = 6 * _HOUR_MS
    min_samples: Annotated[int, msgspec.Meta(ge=1)] = 100
    floor: Annotated[float, msgspec.Meta(gt=0, lt=0.1)] = 1e-3

    def __post_init__(self) -> None:
        if self.window_ms % self.hop_ms or self.window_ms // self.hop_ms > 1000:
            raise ValueError("window_ms must be a multiple of hop_ms, at most 1000 hops")


@dataclass(slots=True)
class _Episode:
    """One signal's episode state: a run of drifting windows, and whether an event may fire."""

    streak: int = 0
    since_ms: int = 0
    armed: bool = True
    quiet_since_ms: int | None = None

    def step(self, *, drifting: bool, start_ms: int, end_ms: int, needed: int, clear_ms: int) -> bool:
        """One judged window ``[start_ms, end_ms)``; whether the episode's event fires now."""
        if not drifting:
            self.streak = 0
            if self.quiet_since_ms is None:
                self.quiet_since_ms = end_ms
            if not self.armed and end_ms - self.quiet_since_ms >= clear_ms:
                self.armed = True
            return False
        self.quiet_since_ms = None
        if self.streak == 0:
            self.since_ms = start_ms
        self.streak += 1
        if self.armed and self.streak >= needed:
            self.armed = False
            return True
        return False


class DriftStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A monitor's last judged window: each judged channel's PSI (and the score's), and whether an episode
    is going on (an event fired and has not cleared)."""

    device: str
    window_end_ms: int | None
    channels: dict[str, float]
    score: float | None
    drifting: bool
    score_shifted: bool


@dataclass(slots=True)
class _Hop:
    index: int
    counts: I64  # (C, bins) channel bin counts
    score_counts: I64  # (score bins,)


class DriftMonitor:
    """Input drift and score shift of one device against its champion's :class:`ReferenceStats`.

    Feed it the device's batches in time order (``observe``); it returns the events that fired. State: the bin
    counts of the last ``window_ms / hop_ms`` hops, whatever the stream's length or rate. Samples older than the
    current hop (late data) are counted in the current hop: what matters is the distribution, not the order.
    """

    def __init__(self, *, device: str, reference: ReferenceStats, model: str, asset: str | None = None,
                 profile: str = "", config: DriftConfig | None = None) -> None:
        self.device = device
        self.asset = asset
        self.profile = profile
        self.model = model
        self.reference = reference
        self.config = config or DriftConfig()
        self._edges = [np.asarray(e, dtype=np.float64) for e in reference.edges]
        self._judged = np.array([bool(e) for e in reference.edges], dtype=bool)
        self._nbins = max((len(e) + 1 for e in reference.edges), default=1)
        self._ref = np.zeros((len(reference.channels), self._nbins))
        for c, e in enumerate(reference.edges):
            if not e:
                continue  # no valid reference value: the channel is not monitored
            k = len(e) + 1
            self._ref[c, :k] = reference.fractions[c] if reference.fractions else np.full(k, 1.0 / k)
        self._s_edges = np.asarray(reference.score_quantiles, dtype=np.float64)
        ks = self._s_edges.shape[0] + 1
        self._s_ref = (np.asarray(reference.score_fractions, dtype=np.float64) if reference.score_fractions
                       else np.full(ks, 1.0 / ks))
        cfg = self.config
        own = reference.limits or [0.0] * len(reference.channels)
        self.limits: dict[str, float] = {name: max(cfg.psi_threshold, cfg.limit_factor * own[c])
                                         for c, name in enumerate(reference.channels) if reference.edges[c]}
        self.score_limit = max(cfg.score_threshold, cfg.limit_factor * (reference.score_limit or 0.0))
        self._streak_figures: dict[str, float] = {}  # the largest PSI of each channel over its limit, this run
        self._hops: collections.deque[_Hop] = collections.deque(maxlen=self.config.window_ms // self.config.hop_ms)
        self._cur: _Hop | None = None
        self._first_hop: int | None = None  # windows that begin before the first data are not judged
        self._input = _Episode()
        self._score = _Episode()
        self._last = DriftStatus(device=device, window_end_ms=None, channels={}, score=None, drifting=False,
                                 score_shifted=False)

    # ----------------------------------------------------------------- public

    def observe(self, ts: I64, values: F64, scores: F64 | None = None) -> list[DriftEvent]:
        """Take a batch (``ts[n]`` ms ascending, ``values[n, C]`` in the reference's channel order, NaN = missing,
        optional detector ``scores[n]``); the events that fired on the windows it completed."""
        ts = np.asarray(ts, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape != (ts.shape[0], len(self.reference.channels)):
            raise ValueError(f"values must be ({ts.shape[0]}, {len(self.reference.channels)}), not {values.shape}")
        if scores is not None and np.shape(scores) != ts.shape:
            raise ValueError("scores must have one value per row")
        events: list[DriftEvent] = []
        if not ts.shape[0]:
            return events
        hop = ts // self.config.hop_ms
        cuts = np.flatnonzero(np.diff(hop)) + 1
        for lo, hi in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [ts.shape[0]]]).tolist(),
                          strict=True):
            h = int(hop[lo])
            if self._cur is None:
                self._cur = self._empty(h)
                self._first_hop = h
            elif h > self._cur.index:
                events.extend(self._close_until(h))
            self._count(self._cur, values[lo:hi], None if scores is None else np.asarray(scores[lo:hi]))
        return events

    def advance(self, now_ms: int) -> list[DriftEvent]:
        """Close the hops that ended by ``now_ms`` without new data (a silent device's windows empty out)."""
        if self._cur is None or now_ms // self.config.hop_ms <= self._cur.index:
            return []
        return self._close_until(now_ms // self.config.hop_ms)

    @property
    def status(self) -> DriftStatus:
        """The last judged window (see :class:`DriftStatus`)."""
        return self._last

    def state_size(self) -> int:
        """The integers of state kept (bin counts of the window's hops): bounded by the configuration."""
        per = int(self._ref.size) + int(self._s_ref.shape[0])
        return per * (len(self._hops) + (self._cur is not None))

    # ----------------------------------------------------------------- windows

    def _empty(self, index: int) -> _Hop:
        return _Hop(index=index, counts=np.zeros(self._ref.shape, dtype=np.int64),
                    score_counts=np.zeros(self._s_ref.shape[0], dtype=np.int64))

    def _count(self, hop: _Hop, x: F64, s: F64 | None) -> None:
        for c, edges in enumerate(self._edges):
            if not self._judged[c]:
                continue
            col = x[:, c]
            col = col[np.isfinite(col)]
            if col.shape[0]:
                hop.counts[c] += np.bincount(np.searchsorted(edges, col, side="right"), minlength=self._nbins)
        if s is not None and self._s_edges.shape[0]:
            s = s[np.isfinite(s)]
            hop.score_counts += np.bincount(np.searchsorted(self._s_edges, s, side="right"),
                                            minlength=self._s_ref.shape[0])

    def _close_until(self, index: int) -> list[DriftEvent]:
        """Close the current hop and the empty ones up to ``index`` (at most a window's worth of them: more
        would only judge empty windows), each closing judging the window that ends with it."""
        assert self._cur is not None
        events: list[DriftEvent] = []
        last = self._cur.index
        self._hops.append(self._cur)
        events.extend(self._judge(last))
        gap = index - last - 1
        maxlen = self._hops.maxlen or 1
        for h in range(index - min(gap, maxlen), index):
            self._hops.append(self._empty(h))
            events.extend(self._judge(h))
        self._cur = self._empty(index)
        return events

    def _judge(self, last: int) -> list[DriftEvent]:
        cfg = self.config
        first = last - cfg.window_ms // cfg.hop_ms + 1
        start_ms, end_ms = first * cfg.hop_ms, (last + 1) * cfg.hop_ms
        if self._first_hop is None or first < self._first_hop:
            return []  # warming up: the window is not full yet
        inside = [h for h in self._hops if h.index >= first]
        filled = [h.index for h in inside if h.counts.any() or h.score_counts.any()]
        if 2 * len(filled) < cfg.window_ms // cfg.hop_ms:
            return []  # less than half the window has data (a device back from a silence): not judged yet
        start_ms = min(filled) * cfg.hop_ms  # drift is dated from the data, not from a silence before it
        counts = np.sum([h.counts for h in inside], axis=0)
        n = counts.sum(axis=1)
        figures: dict[str, float] = {}
        for c, name in enumerate(self.reference.channels):
            if self._judged[c] and n[c] >= cfg.min_samples:
                k = len(self.reference.edges[c]) + 1
                figures[name] = psi(self._ref[c, :k], counts[c, :k] / n[c], floor=cfg.floor)
        events: list[DriftEvent] = []
        if figures:
            over = {name: v for name, v in figures.items() if v > self.limits[name]}
            if not over:
                self._streak_figures = {}
            for name, v in over.items():
                self._streak_figures[name] = max(v, self._streak_figures.get(name, 0.0))
            if self._input.step(drifting=bool(over), start_ms=start_ms, end_ms=end_ms, needed=cfg.consecutive,
                                clear_ms=cfg.clear_ms):
                events.append(self._input_event(self._streak_figures, end_ms))
        score: float | None = None
        s_counts = np.sum([h.score_counts for h in inside], axis=0)
        ns = int(s_counts.sum())
        if self._s_edges.shape[0] and ns >= cfg.min_samples:
            score = psi(self._s_ref, s_counts / ns, floor=cfg.floor)
            if self._score.step(drifting=score > self.score_limit, start_ms=start_ms, end_ms=end_ms,
                                needed=cfg.consecutive, clear_ms=cfg.clear_ms):
                events.append(self._event("score", {"score": score}, self.score_limit, self._score.since_ms,
                                          end_ms, f"the detector's scores shifted from the training reference "
                                          f"since {_clock(self._score.since_ms)} (PSI {score:.2g}, limit "
                                          f"{self.score_limit:.2g})"))
        if figures or score is not None:
            self._last = DriftStatus(device=self.device, window_end_ms=end_ms, channels=_ranked(figures),
                                     score=None if score is None else round(score, 4),
                                     drifting=not self._input.armed, score_shifted=not self._score.armed)
        return events

    def _input_event(self, over: Mapping[str, float], end_ms: int) -> DriftEvent:
        ranked = _ranked(over)
        names = ", ".join(ranked)
        figs = ", ".join(f"{v:.2g}" for v in ranked.values())
        limits = ", ".join(f"{self.limits[k]:.2g}" for k in ranked)
        msg = (f"{names} drifted from the training reference since {_clock(self._input.since_ms)} "
               f"(PSI {figs}; limit {limits})")
        return self._event("input", ranked, self.limits[next(iter(ranked))], self._input.since_ms, end_ms, msg)

    def _event(self, kind: DriftKind, figures: Mapping[str, float], threshold: float, since_ms: int,
               detected_ms: int, message: str) -> DriftEvent:
        ranked = _ranked(figures)
        return DriftEvent(device=self.device, asset=self.asset, profile=self.profile, kind=kind, since_ms=since_ms,
                          detected_ms=detected_ms, channels=ranked, figure=max(ranked.values()),
                          threshold=threshold, message=message, model=self.model)


# --------------------------------------------------------------------------------------------------- alert rate


def poisson_ratio_p(k: int, t_k: float, m: int, t_m: float) -> float:
    """One-sided p-value of ``k`` events over exposure ``t_k`` being more frequent than ``m`` over ``t_m``:
    given ``n = k + m``, under equal rates ``k`` is binomial(``n``, ``t_k / (t_k + t_m)``); ``P(K >= k)``."""
    if k <= 0:
        return 1.0
    return float(stats.binom.sf(k - 1, k + m, t_k / (t_k + t_m)))


def poisson_p(k: int, expected: float) -> float:
    """One-sided p-value of ``k`` or more Poisson events where ``expected`` were expected."""
    return 1.0 if k <= 0 else float(stats.poisson.sf(k - 1, max(expected, 1e-12)))


@dataclass(slots=True)
class _AssetRate:
    first_ms: int
    device: str | None
    buckets: collections.OrderedDict[int, int] = field(default_factory=collections.OrderedDict)
    episode: _Episode = field(default_factory=_Episode)


class AlertRateMonitor:
    """Alert-rate shift of a profile's assets: is an asset alerting much more than it used to, or than its peers?

    Fed alert onsets (``observe_alert``); ``check(now_ms)`` judges each asset's count over the last ``window_ms``
    against its own history (the ``history_ms`` before the window, from when the asset was first seen; or the
    reference's ``alert_rate_per_day`` while there is less than a window of history) and against the pooled
    count of the other assets over the same window. A shift needs at least ``min_alerts`` alerts, a rate at least
    ``min_ratio`` times the one compared with, and a p-value below ``alpha`` (see :func:`poisson_ratio_p`). The
    event's figures are those rate ratios (``vs_history``, ``vs_reference``, ``vs_peers``); a rate compared with
    no alerts at all counts half an alert, so a ratio stays finite.
    State: hourly counts over ``window_ms + history_ms`` per asset, at most ``max_assets`` assets (later ones
    are counted in ``assets_refused`` and not monitored).
    """

    def __init__(self, *, profile: str, model: str, window_ms: int = _DAY_MS, history_ms: int = 28 * _DAY_MS,
                 bucket_ms: int = _HOUR_MS, alpha: float = 1e-3, min_alerts: int = 3, min_ratio: float = 2.0,
                 reference_rate_per_day: float | None = None, clear_ms: int | None = None,
                 max_assets: int = 10_000) -> None:
        if window_ms <= 0 or history_ms < 0 or bucket_ms <= 0 or window_ms % bucket_ms or history_ms % bucket_ms:
            raise ValueError("window_ms and history_ms must be multiples of bucket_ms")
        self.profile = profile
        self.model = model
        self.window_ms = window_ms
        self.history_ms = history_ms
        self.bucket_ms = bucket_ms
        self.alpha = alpha
        self.min_alerts = min_alerts
        self.min_ratio = min_ratio
        self.reference_rate_per_day = reference_rate_per_day
        self.clear_ms = window_ms if clear_ms is None else clear_ms
        self.max_assets = max_assets
        self.assets_refused = 0
        self._assets: dict[str, _AssetRate] = {}

    def add_asset(self, asset: str, since_ms: int, *, device: str | None = None) -> None:
        """Start watching ``asset`` (its exposure counts from ``since_ms``); a second call changes nothing."""
        if asset not in self._assets:
            if len(self._assets) >= self.max_assets:
                self.assets_refused += 1
                return
            self._assets[asset] = _AssetRate(first_ms=since_ms, device=device)

    def observe_alert(self, asset: str, ts_ms: int, *, device: str | None = None) -> None:
        """One alert onset on ``asset`` at ``ts_ms`` (an asset not seen yet is watched from then on)."""
        self.add_asset(asset, ts_ms, device=device)
        a = self._assets.get(asset)
        if a is None:
            return
        if device is not None:
            a.device = device
        b = ts_ms // self.bucket_ms
        a.buckets[b] = a.buckets.get(b, 0) + 1
        if len(a.buckets) > (self.window_ms + self.history_ms) // self.bucket_ms + 1:
            a.buckets.pop(min(a.buckets))

    def state_size(self) -> int:
        """Buckets kept over all assets (bounded by ``max_assets`` times the horizon's buckets)."""
        return sum(len(a.buckets) for a in self._assets.values())

    def check(self, now_ms: int) -> list[DriftEvent]:
        """Judge every asset at ``now_ms``; the events of new episodes."""
        w0 = now_ms - self.window_ms
        h0 = w0 - self.history_ms
        lo_b = h0 // self.bucket_ms
        for a in self._assets.values():  # forget what fell out of the horizon
            for b in [b for b in a.buckets if b < lo_b]:
                del a.buckets[b]
        window = {name: self._count(a, w0, now_ms) for name, a in self._assets.items()}
        exposure = {name: max(0, now_ms - max(a.first_ms, w0)) for name, a in self._assets.items()}
        total_k, total_t = sum(window.values()), sum(exposure.values())
        events: list[DriftEvent] = []
        for name, a in self._assets.items():
            k, t_k = window[name], exposure[name]
            figures: dict[str, float] = {}
            parts: list[str] = []
            if t_k > 0 and k >= self.min_alerts:
                t_h = max(0, w0 - max(a.first_ms, h0))
                rate_k = k / t_k * _DAY_MS
                if t_h >= self.window_ms:
                    h = self._count(a, h0, w0)
                    rate_h = h / t_h * _DAY_MS
                    if poisson_ratio_p(k, t_k, h, t_h) < self.alpha and rate_k >= self.min_ratio * rate_h:
                        figures["vs_history"] = rate_k / (max(h, 0.5) / t_h * _DAY_MS)
                        parts.append(f"{rate_k:.3g}/day against {rate_h:.3g}/day before")
                elif self.reference_rate_per_day is not None:
                    ref = self.reference_rate_per_day
                    if poisson_p(k, ref * t_k / _DAY_MS) < self.alpha and rate_k >= self.min_ratio * ref:
                        figures["vs_reference"] = rate_k / max(ref, 0.5 / max(t_k / _DAY_MS, 1.0))
                        parts.append(f"{rate_k:.3g}/day against {ref:.3g}/day on the training data")
                m, t_m = total_k - k, total_t - t_k
                if t_m > 0:
                    rate_m = m / t_m * _DAY_MS
                    if poisson_ratio_p(k, t_k, m, t_m) < self.alpha and rate_k >= self.min_ratio * rate_m:
                        figures["vs_peers"] = rate_k / (max(m, 0.5) / t_m * _DAY_MS)
                        parts.append(f"{rate_k:.3g}/day against {rate_m:.3g}/day on its peers")
            if a.episode.step(drifting=bool(figures), start_ms=w0, end_ms=now_ms, needed=1,
                              clear_ms=self.clear_ms):
                events.append(DriftEvent(
                    device=a.device or name, asset=name, profile=self.profile, kind="alert_rate",
                    since_ms=self._first_alert(a, w0, now_ms), detected_ms=now_ms, channels=_ranked(figures),
                    figure=max(_ranked(figures).values()), threshold=self.min_ratio, model=self.model,
                    message=f"{name} raised {k} alerts in the last {self.window_ms / _HOUR_MS:.3g} h: "
                            + "; ".join(parts)))
        return events

    def _count(self, a: _AssetRate, lo_ms: int, hi_ms: int) -> int:
        lo, hi = lo_ms // self.bucket_ms, hi_ms // self.bucket_ms
        return sum(n for b, n in a.buckets.items() if lo <= b < hi)

    def _first_alert(self, a: _AssetRate, lo_ms: int, hi_ms: int) -> int:
        lo, hi = lo_ms // self.bucket_ms, hi_ms // self.bucket_ms
        return min((b for b in a.buckets if lo <= b < hi), default=lo) * self.bucket_ms


# --------------------------------------------------------------------------------------------------- labels


class LabelLike(Protocol):
    """What the monitors and the retraining policy read of a technician's label (``store.Label`` has it)."""

    @property
    def alert(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def asset(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def ts(self) -> int: ...


class LabelPrecisionMonitor:
    """The share of false alarms among the last ``last_n`` labels of each device and of the whole profile
    (``device`` ``"*"``); a share above ``max_false_share`` with at least ``min_labels`` labels is a drift event.
    A later label on the same alert replaces the earlier one (a relabel is a real event, not a false alarm).
    The episode re-arms once the share is back at or below the level. State: ``last_n`` labels per device, at
    most ``max_devices`` devices."""

    def __init__(self, *, profile: str, model: str, last_n: int = 20, min_labels: int = 10,
                 max_false_share: float = 0.5, max_devices: int = 10_000) -> None:
        if not 1 <= min_labels <= last_n:
            raise ValueError("need 1 <= min_labels <= last_n")
        self.profile = profile
        self.model = model
        self.last_n = last_n
        self.min_labels = min_labels
        self.max_false_share = max_false_share
        self.max_devices = max_devices
        self.devices_refused = 0
        self._recent: dict[str, collections.OrderedDict[int, tuple[bool, int]]] = {}
        self._episodes: dict[str, _Episode] = {}

    def observe(self, label: LabelLike) -> list[DriftEvent]:
        """Take one label; the events it fires (the device's, the profile's)."""
        events: list[DriftEvent] = []
        false = str(label.verdict) == "false_alarm"
        for scope in (label.device, PROFILE_SCOPE):
            recent = self._recent.get(scope)
            if recent is None:
                if len(self._recent) >= self.max_devices + 1:
                    self.devices_refused += 1
                    continue
                recent = self._recent[scope] = collections.OrderedDict()
                self._episodes[scope] = _Episode()
            recent.pop(label.alert, None)
            recent[label.alert] = (false, label.ts)
            while len(recent) > self.last_n:
                recent.popitem(last=False)
            n = len(recent)
            share = sum(f for f, _ in recent.values()) / n
            if self._episodes[scope].step(drifting=n >= self.min_labels and share > self.max_false_share,
                                          start_ms=min(t for _, t in recent.values()), end_ms=label.ts,
                                          needed=1, clear_ms=0):
                whose = "the profile's" if scope == PROFILE_SCOPE else f"{scope}'s"
                events.append(DriftEvent(
                    device=scope, asset=label.asset if scope != PROFILE_SCOPE else None, profile=self.profile,
                    kind="precision", since_ms=self._episodes[scope].since_ms, detected_ms=label.ts,
                    channels={"false_alarms": round(share, 4)}, figure=round(share, 4),
                    threshold=self.max_false_share, model=self.model,
                    message=f"{round(share * n)} of {whose} last {n} labels were false alarms "
                            f"({share:.0%}, more than {self.max_false_share:.0%})"))
        return events

    def share(self, scope: str = PROFILE_SCOPE) -> float | None:
        """The current false-alarm share of a device (or the profile), None without labels."""
        recent = self._recent.get(scope)
        return sum(f for f, _ in recent.values()) / len(recent) if recent else None
