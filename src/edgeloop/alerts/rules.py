"""The rule engine: telemetry, detector scores, RUL and time passing in; :class:`Signal` s out.

State is kept per (asset, rule). A rule *raises* once when its condition has held for its ``for_s`` and
*clears* once when the condition ends: never a second raise while it holds (deduplication at the source).

Semantics (the rule schema is in :mod:`edgeloop.alerts.rule_config`):

* **Sample-driven and deterministic.** Conditions are evaluated at sample times, never at the wall clock: a
  threshold held for ``for_s`` raises at the first valid sample at least ``for_s`` after the condition began.
  The same stream gives the same signals however it is split into chunks (the state carried from one chunk
  to the next is exactly what the next row needs).
* **NaN is missing, never zero.** A NaN sample neither raises nor clears nor breaks a ``for_s`` run; a rate is
  taken between consecutive *valid* samples. A row whose values are all NaN is no data (for ``missing``).
* **Order.** Per (asset, device), rows at or before the last row already evaluated are ignored (a resent or
  late message does not evaluate twice).
* **Missing data**, per device: a device of the asset silent for ``after_s`` raises the asset's alert with
  ``ts`` = its last data + ``after_s`` (from :meth:`RuleEngine.tick`, or, if no tick came in between, when the
  data after the gap arrives: then the raise and the clear come together). The alert stays raised while any
  device of the asset is silent and clears when the last one reports again, also when late data fills the gap
  (an agent's backfill). :meth:`RuleEngine.expect` watches devices that have never reported.
* **Composites** (``all`` / ``any``) combine their members' raised states on one asset, row by row, and have
  their own ``for_s``; members not evaluated in a step keep their current state. Composites are evaluated at
  every step of the asset (rows with any data, a score, a RUL, a tick event).

* **Per-asset overrides.** :meth:`RuleEngine.set_override` replaces a level rule's raise / clear levels on one
  asset (e.g. a threshold tuned from technician feedback), checked like the rule document (hysteresis on the
  safe side, within the rule's ``tune`` bounds). The rule's state on that asset is kept: an alert raised under
  the old level clears when the value passes the new clear level.

Evaluation of a chunk is vectorised: every threshold and rate rule that reads the chunk's channels is one
column of an (n rows x k rules) matrix, and hysteresis, ``for_s`` runs and transitions are array operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from edgeloop.alerts.model import Signal, SignalState
from edgeloop.alerts.rule_config import (
    AllRule,
    AnyRule,
    MissingRule,
    RateRule,
    Rule,
    RuleSet,
    RulRule,
    ScoreRule,
    ThresholdRule,
    level_fields,
    level_problem,
)
from edgeloop.clock import Clock, SystemClock
from edgeloop.detect.finding import Finding, FindingPhase
from edgeloop.errors import ConfigError, NotFoundError
from edgeloop.store.base import TelemetryChunk

__all__ = ["RuleEngine"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

@dataclass(frozen=True, slots=True)
class _Level:
    """A rule compared against a level, normalised so that ``x = sign * value``: on when ``x > on``, off when
    ``x < off`` (``off <= on``: between the two the condition keeps its state: hysteresis)."""

    sign: float
    on: float
    off: float
    for_ms: int
    channel: str = ""


def _band(above: float | None, clear_below: float | None, below: float | None, clear_above: float | None,
          for_s: float, channel: str = "") -> _Level:
    """A level with hysteresis: raise above ``above`` (or below ``below``), clear past the clear level (which
    defaults to the raise level). A lower bound is stored negated, so every level raises upwards."""
    if above is not None:
        return _Level(1.0, above, above if clear_below is None else clear_below, round(for_s * 1000), channel)
    assert below is not None
    clear = below if clear_above is None else clear_above
    return _Level(-1.0, -below, -clear, round(for_s * 1000), channel)


def _compile_level(rule: Rule) -> _Level | None:
    if isinstance(rule, ThresholdRule):
        return _band(rule.above, rule.clear_below, rule.below, rule.clear_above, rule.for_s, rule.channel)
    if isinstance(rule, RateRule):
        return _band(rule.above_per_s, rule.clear_below_per_s, rule.below_per_s, rule.clear_above_per_s,
                     rule.for_s, rule.channel)
    if isinstance(rule, ScoreRule):
        return _band(rule.above, rule.clear_below, None, None, rule.for_s)
    if isinstance(rule, RulRule):
        return _band(None, None, rule.below_cycles, rule.clear_above, 0.0)
    return None


def _ffill_index(mask: Bool) -> I64:
    """Per column, the index of the last row <= this one where ``mask`` holds (-1 if none)."""
    rows = np.arange(mask.shape[0], dtype=np.int64)[:, None]
    out: I64 = np.maximum.accumulate(np.where(mask, rows, -1), axis=0)
    return out


def _machine(on: Bool, off: Bool, valid: Bool, ts: I64, cond0: Bool, start0: I64, q0: Bool,
             for_ms: I64) -> tuple[Bool, Bool, I64]:
    """Hysteresis and ``for_s`` over (n, k): returns the raised state per row and the carried condition/start.

    ``cond`` latches on at ``on`` and off at ``off``; a run of ``cond`` that began at ``start`` is raised
    from the first valid row with ``ts - start >= for_ms``; between valid rows the raised state is carried.
    """
    if on.shape[0] == 1:  # one row (single-sample messages, scores, ticks): the same, without the scans
        c1: Bool = np.where(on[0], True, np.where(off[0], False, cond0))
        s1: I64 = np.where(c1 & ~cond0, ts[0], start0)
        q1: Bool = np.where(valid[0], c1 & (ts[0] - s1 >= for_ms), q0)
        return q1[None, :], c1, s1
    k = on.shape[1]
    cols = np.arange(k)[None, :]
    di = _ffill_index(on | off)
    cond = np.where(di >= 0, on[np.maximum(di, 0), cols], cond0[None, :])
    prev = np.empty_like(cond)
    prev[0] = cond0
    prev[1:] = cond[:-1]
    si = _ffill_index(cond & ~prev)
    start = np.where(si >= 0, ts[np.maximum(si, 0)], start0[None, :])
    qraw = cond & (ts[:, None] - start >= for_ms[None, :])
    vi = _ffill_index(valid)
    q: Bool = np.where(vi >= 0, qraw[np.maximum(vi, 0), cols], q0[None, :])
    return q, cond[-1].copy(), start[-1].copy()


def _transitions(q: Bool, q0: Bool) -> tuple[I64, I64]:
    prev = np.empty_like(q)
    prev[0] = q0
    prev[1:] = q[:-1]
    rows, cols = np.nonzero(q != prev)
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass(slots=True)
class _Plan:
    """Which rules a chunk with these channels feeds on one asset, and how."""

    idx: I64  # level rule indices (threshold, rate)
    cols: I64  # column of each in the chunk's values
    rate: Bool
    rate_cols: I64  # positions of the rate rules in ``idx``
    on: F64
    off: F64
    sign: F64
    for_ms: I64
    missing: list[tuple[int, int]]  # (rule index, column or -1 for "any data")


@dataclass(slots=True)
class _AssetState:
    tenant: str
    n_rules: int
    devices: set[str] = field(default_factory=set)
    applies: Bool = field(init=False)
    cond: Bool = field(init=False)
    start: I64 = field(init=False)
    active: Bool = field(init=False)
    last_v: F64 = field(init=False)  # rate rules: the previous valid sample
    last_t: I64 = field(init=False)
    seen: I64 = field(init=False)  # missing: last data; score with hold_s: last score not below clear
    last_ts: dict[str, int] = field(default_factory=dict)  # per source (device, score source, rul)
    plans: dict[tuple[str, ...], _Plan] = field(default_factory=dict)
    overrides: dict[int, Rule] = field(default_factory=dict)  # rule index -> the rule with this asset's levels
    # missing rules, per device: device -> rule index -> its last data ("" stands for the asset's devices
    # before any of them reported), and rule index -> the devices silent now (the asset's alert is raised
    # while any is)
    dev_seen: dict[str, dict[int, int]] = field(default_factory=dict)
    silent: dict[int, set[str]] = field(default_factory=dict)
    levels: dict[int, _Level] = field(default_factory=dict)  # their compiled levels

    def __post_init__(self) -> None:
        r = self.n_rules
        self.applies = np.zeros(r, dtype=bool)
        self.cond = np.zeros(r, dtype=bool)
        self.start = np.zeros(r, dtype=np.int64)
        self.active = np.zeros(r, dtype=bool)
        self.last_v = np.full(r, np.nan)
        self.last_t = np.full(r, -1, dtype=np.int64)
        self.seen = np.full(r, -1, dtype=np.int64)


_Out = list[tuple[int, int, Signal]]  # (ts, rule index, signal), sorted before returning


class RuleEngine:
    """Evaluates a rule set per asset; every ``evaluate_*`` / ``tick`` returns the signals it produced, in
    time order (ties: rule order, members before the composites that use them).

    ``profiles`` maps asset or device ids to their profile name, for rules scoped by ``profiles``; ``units``
    gives a device's channel's unit (from its profile), for messages that say value and limit with their unit.
    """

    def __init__(self, rules: RuleSet | Sequence[Rule], *, clock: Clock | None = None,
                 profiles: Mapping[str, str] | None = None, units: Callable[[str, str], str] | None = None) -> None:
        given = tuple(rules.rules if isinstance(rules, RuleSet) else rules)
        self.clock: Clock = clock or SystemClock()
        self.profiles: Mapping[str, str] = profiles or {}
        self.units: Callable[[str, str], str] = units or (lambda device, channel: "")
        self.rules: tuple[Rule, ...] = _topological(given)
        self.index: dict[str, int] = {r.name: i for i, r in enumerate(self.rules)}
        self._levels: dict[int, _Level] = {}
        for i, rule in enumerate(self.rules):
            level = _compile_level(rule)
            if level is not None:
                self._levels[i] = level
        self._members: dict[int, list[int]] = {
            i: [self.index[m] for m in r.of] for i, r in enumerate(self.rules) if isinstance(r, AllRule | AnyRule)}
        depth: dict[int, int] = {}
        for i in self._members:  # members come first (topological order)
            depth[i] = 1 + max((depth.get(k, 0) for k in self._members[i]), default=0)
        self._layers: list[list[int]] = [[i for i in self._members if depth[i] == d]
                                         for d in range(1, max(depth.values(), default=0) + 1)]
        self._for_ms = np.array([round(r.for_s * 1000) if isinstance(r, AllRule | AnyRule) else 0
                                 for r in self.rules], dtype=np.int64)
        self._composite_expl: dict[int, dict[str, float]] = {
            i: _shares(self._channels_of(i)) for i in self._members}
        self._assets: dict[str, _AssetState] = {}

    # ---- inputs -------------------------------------------------------------------------------------------

    def expect(self, asset: str, *, tenant: str = "", since_ms: int | None = None,
               devices: Iterable[str] = ()) -> None:
        """Watch ``asset`` (each of ``devices``) for missing data from ``since_ms`` (default: now), even if it
        never sends anything."""
        devices = list(devices)
        st = self._state(asset, tenant, devices)
        since = self.clock.now_ms() if since_ms is None else since_ms
        for i, rule in enumerate(self.rules):
            if isinstance(rule, MissingRule) and st.applies[i]:
                for device in devices or [""]:
                    st.dev_seen.setdefault(device, {}).setdefault(i, since)

    def evaluate_chunk(self, chunk: TelemetryChunk) -> list[Signal]:
        """Evaluate every threshold, rate, missing and composite rule on one message's rows."""
        asset = chunk.asset or chunk.device
        st = self._state(asset, chunk.tenant, (chunk.device,))
        ts = np.asarray(chunk.ts, dtype=np.int64)
        vals = np.asarray(chunk.values, dtype=np.float64)
        if ts.shape[0] == 0:
            return []
        last = st.last_ts.get(chunk.device)
        if last is not None and ts[0] <= last:
            keep = ts > last
            ts, vals = ts[keep], vals[keep]
            if ts.shape[0] == 0:
                return []
        st.last_ts[chunk.device] = int(ts[-1])
        plan = st.plans.get(chunk.channels)
        if plan is None:
            plan = st.plans[chunk.channels] = self._plan(st, chunk.channels)
        out: _Out = []
        series: dict[int, Bool] = {}
        if plan.idx.shape[0]:
            self._levels_step(st, plan, ts, vals, chunk, series, out)
        has_data: Bool = np.zeros(ts.shape[0], dtype=bool)
        if vals.shape[1]:
            has_data = np.asarray(~np.isnan(vals).all(axis=1), dtype=bool)
        for ri, col in plan.missing:
            data = has_data if col < 0 else ~np.isnan(vals[:, col])
            self._missing_data(st, ri, ts[data], asset, chunk.device, out)
        if self._members and has_data.any():
            self._composites(st, asset, chunk.device, ts, has_data, series, out)
        return _sorted(out)

    def evaluate_score(self, asset: str, ts: int, score: float, *, source: str = "anomaly", tenant: str = "",
                       device: str = "", confidence: float = 1.0,
                       explanation: Mapping[str, float] | None = None) -> list[Signal]:
        """A detector's score (1.0 = its threshold) for ``asset`` at ``ts``: evaluates the ``score`` rules of
        ``source`` (and composites)."""
        st = self._state(asset, tenant, (device,) if device else ())
        out: _Out = []
        idx = [i for i, r in enumerate(self.rules)
               if isinstance(r, ScoreRule) and r.source == source and st.applies[i]]
        self._expire_holds(st, asset, ts, out, [i for i in idx if st.active[i]])
        self._point(st, asset, device, f"score:{source}", ts, idx, [score] * len(idx), confidence,
                    dict(explanation or {}), out)
        for i in idx:
            rule = self.rules[i]
            if isinstance(rule, ScoreRule) and rule.hold_s is not None and score >= (
                    st.levels.get(i) or self._levels[i]).off:
                st.seen[i] = max(int(st.seen[i]), ts)
        return _sorted(out)

    def evaluate_finding(self, asset: str, finding: Finding, *, tenant: str = "", device: str = "",
                         confidence: float = 1.0) -> list[Signal]:
        """A detector :class:`Finding`: its score under the source named by its kind (``anomaly``, ...).

        A state's later reports (see :class:`~edgeloop.detect.finding.FindingPhase`): ``holding`` keeps the
        ``score`` rules of its source raised (their ``hold_s`` counts from it; a rule not raised, e.g. after a
        rule change, raises as on an onset if the score passes its level; a low score never clears), and
        ``ended`` clears them at its time: the data shows the state is over.
        """
        source = str(finding.kind)
        if finding.phase is FindingPhase.ONSET:
            return self.evaluate_score(asset, finding.ts, finding.score, source=source, tenant=tenant,
                                       device=device, confidence=confidence, explanation=finding.explanation)
        st = self._state(asset, tenant, (device,) if device else ())
        out: _Out = []
        idx = [i for i, r in enumerate(self.rules)
               if isinstance(r, ScoreRule) and r.source == source and st.applies[i]]
        self._expire_holds(st, asset, finding.ts, out, [i for i in idx if st.active[i]])
        raised = [i for i in idx if st.active[i]]
        if finding.phase is FindingPhase.ENDED:
            for i in raised:
                self._flip(st, asset, device, i, finding.ts, out, value=finding.score)
            return _sorted(out)
        for i in raised:
            st.seen[i] = max(int(st.seen[i]), finding.ts)
        rest = [i for i in idx if not st.active[i]]
        if rest:  # not raised (a new rule document, a restart): the state raises as its onset would
            self._point(st, asset, device, f"score:{source}", finding.ts, rest, [finding.score] * len(rest),
                        confidence, dict(finding.explanation), out)
            for i in rest:
                if st.active[i]:
                    st.seen[i] = max(int(st.seen[i]), finding.ts)
        return _sorted(out)

    def evaluate_rul(self, asset: str, ts: int, rul: float, *, lower: float | None = None, tenant: str = "",
                     device: str = "", confidence: float = 1.0,
                     explanation: Mapping[str, float] | None = None) -> list[Signal]:
        """A RUL prediction (cycles; ``lower``: the interval's lower bound, if any) for ``asset`` at ``ts``."""
        st = self._state(asset, tenant, (device,) if device else ())
        out: _Out = []
        idx = [i for i, r in enumerate(self.rules) if isinstance(r, RulRule) and st.applies[i]]
        values = [lower if lower is not None and r.basis == "lower" else rul
                  for r in (self.rules[i] for i in idx) if isinstance(r, RulRule)]
        self._point(st, asset, device, "rul", ts, idx, values, confidence, dict(explanation or {}), out)
        return _sorted(out)

    def tick(self, now_ms: int | None = None, *, missing: bool = True) -> list[Signal]:
        """Time passing: raise ``missing`` rules of silent devices and clear ``score`` rules past their
        ``hold_s``. ``now_ms`` defaults to the engine's clock. ``missing=False`` leaves silence to the gaps in
        each device's own data (while history is replayed, a device whose turn has not come is not silent)."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        out: _Out = []
        for asset, st in self._assets.items():
            events: list[tuple[int, int, str]] = []
            for i, rule in enumerate(self.rules):
                if not st.applies[i]:
                    continue
                if isinstance(rule, MissingRule):
                    if not missing:
                        continue
                    after = round(rule.after_s * 1000)
                    quiet = st.silent.get(i, set())
                    for device, seen in st.dev_seen.items():
                        last = seen.get(i)
                        if last is not None and device not in quiet and now >= last + after:
                            events.append((last + after, i, device))
                elif isinstance(rule, ScoreRule) and rule.hold_s is not None and st.active[i] and st.seen[i] >= 0:
                    due = int(st.seen[i]) + round(rule.hold_s * 1000)
                    if now >= due:
                        events.append((due, i, ""))
            for due, i, device in sorted(events):
                rule = self.rules[i]
                if isinstance(rule, MissingRule):
                    st.silent.setdefault(i, set()).add(device)
                    if st.active[i]:
                        continue  # another device of the asset is silent already: one alert
                    self._flip(st, asset, device, i, due, out, value=float(rule.after_s))
                else:
                    self._flip(st, asset, device, i, due, out)
        return _sorted(out)

    def set_override(self, asset: str, rule: str, *, above: float | None = None, below: float | None = None,
                     clear_below: float | None = None, clear_above: float | None = None) -> Rule:
        """Give ``rule`` its own levels on ``asset`` only; returns the rule as it now applies there.

        The arguments name the levels as a threshold does, whatever the kind: ``above`` / ``clear_below`` for a
        rule that raises above a level (threshold, rate ``above_per_s``, score), ``below`` / ``clear_above`` for
        one that raises below (threshold, rate ``below_per_s``, RUL ``below_cycles``). Levels not given keep the
        rule's configured values (not those of an earlier override, which this one replaces). Raises
        ``NotFoundError`` for an unknown rule and ``ConfigError`` for a rule without levels, the wrong
        direction, a non-finite value, a clear level on the unsafe side or a level outside the rule's ``tune``
        bounds; a refused override leaves the previous one in force.
        """
        i = self.index.get(rule)
        if i is None:
            raise NotFoundError("rule", rule)
        base = self.rules[i]
        fields = level_fields(base)
        where = f"override of rule {rule!r} on {asset!r}"
        if fields is None:
            raise ConfigError(f"{where}: a {base.kind} rule has no level to override")
        given = {"above": above, "clear_below": clear_below} if fields.sign > 0 else {
            "below": below, "clear_above": clear_above}
        wrong = {"below": below, "clear_above": clear_above} if fields.sign > 0 else {
            "above": above, "clear_below": clear_below}
        if any(v is not None for v in wrong.values()):
            way, names = (("above", "'above' / 'clear_below'") if fields.sign > 0
                          else ("below", "'below' / 'clear_above'"))
            raise ConfigError(f"{where}: the rule raises {way} a level; override it with {names}")
        if all(v is None for v in given.values()):
            raise ConfigError(f"{where}: give a level to override")
        changes: dict[str, float] = {}
        for name, value in given.items():
            if value is None:
                continue
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {name} must be a finite number, not {value!r}")
            changes[fields.raise_field if name in ("above", "below") else fields.clear_field] = float(value)
        effective: Rule = msgspec.structs.replace(base, **changes)
        problem = level_problem(effective)
        if problem is not None:
            raise ConfigError(f"{where}: {problem[1]}")
        level = _compile_level(effective)
        assert level is not None
        st = self._state(asset, "", ())
        st.overrides[i] = effective
        st.levels[i] = level
        st.plans.clear()
        return effective

    def clear_override(self, asset: str, rule: str) -> bool:
        """Return ``rule`` on ``asset`` to its configured levels; ``False`` if it had no override."""
        i = self.index.get(rule)
        st = self._assets.get(asset)
        if i is None or st is None or i not in st.overrides:
            return False
        del st.overrides[i], st.levels[i]
        st.plans.clear()
        return True

    def overrides(self, asset: str) -> dict[str, Rule]:
        """The overridden rules of ``asset``, by name, as they apply there."""
        st = self._assets.get(asset)
        return {} if st is None else {self.rules[i].name: r for i, r in st.overrides.items()}

    def rule_for(self, asset: str, rule: str) -> Rule:
        """``rule`` as it applies on ``asset``: its override there, or the configured rule."""
        i = self.index.get(rule)
        if i is None:
            raise NotFoundError("rule", rule)
        st = self._assets.get(asset)
        return self.rules[i] if st is None else st.overrides.get(i, self.rules[i])

    def active(self, asset: str) -> list[str]:
        """The rules currently raised on ``asset``."""
        st = self._assets.get(asset)
        return [] if st is None else [self.rules[i].name for i in np.flatnonzero(st.active)]

    # ---- internals ----------------------------------------------------------------------------------------

    def _state(self, asset: str, tenant: str, devices: Iterable[str]) -> _AssetState:
        st = self._assets.get(asset)
        if st is None:
            st = self._assets[asset] = _AssetState(tenant=tenant, n_rules=len(self.rules))
            self._scope(asset, st)
        elif tenant and st.tenant != tenant:
            st.tenant = tenant
        new = [d for d in devices if d and d not in st.devices]
        if new:
            st.devices.update(new)
            self._scope(asset, st)
        return st

    def _scope(self, asset: str, st: _AssetState) -> None:
        profiles = frozenset(p for key in (asset, *st.devices) if (p := self.profiles.get(key)) is not None)
        st.applies = np.array([r.applies(asset, profiles) for r in self.rules], dtype=bool)
        st.plans.clear()

    def _plan(self, st: _AssetState, channels: tuple[str, ...]) -> _Plan:
        pos = {c: j for j, c in enumerate(channels)}
        idx, cols = [], []
        missing: list[tuple[int, int]] = []
        for i, rule in enumerate(self.rules):
            if not st.applies[i]:
                continue
            if isinstance(rule, ThresholdRule | RateRule) and rule.channel in pos:
                idx.append(i)
                cols.append(pos[rule.channel])
            elif isinstance(rule, MissingRule) and (rule.channel is None or rule.channel in pos):
                missing.append((i, -1 if rule.channel is None else pos[rule.channel]))
        lv = [st.levels.get(i) or self._levels[i] for i in idx]
        return _Plan(
            idx=np.array(idx, dtype=np.int64), cols=np.array(cols, dtype=np.int64),
            rate=np.array([isinstance(self.rules[i], RateRule) for i in idx], dtype=bool),
            rate_cols=np.array([j for j, i in enumerate(idx) if isinstance(self.rules[i], RateRule)], dtype=np.int64),
            on=np.array([x.on for x in lv]), off=np.array([x.off for x in lv]),
            sign=np.array([x.sign for x in lv]), for_ms=np.array([x.for_ms for x in lv], dtype=np.int64),
            missing=missing)

    def _levels_step(self, st: _AssetState, plan: _Plan, ts: I64, vals: F64, chunk: TelemetryChunk,
                     series: dict[int, Bool], out: _Out) -> None:
        idx = plan.idx
        x = vals[:, plan.cols]
        if plan.rate.any() and ts.shape[0] == 1:  # one row: the rate against the previous valid sample
            r = plan.rate_cols
            ri = idx[r]
            cur = x[0, r]
            ok = ~np.isnan(cur)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate1 = np.where(ok & (st.last_t[ri] >= 0), (cur - st.last_v[ri]) * 1000.0 / (ts[0] - st.last_t[ri]),
                                 np.nan)
            x = x.copy()
            x[0, r] = rate1
            st.last_v[ri] = np.where(ok, cur, st.last_v[ri])
            st.last_t[ri] = np.where(ok, ts[0], st.last_t[ri])
        elif plan.rate.any():
            r = plan.rate_cols
            ri = idx[r]
            v = np.vstack([st.last_v[ri][None, :], x[:, r]])  # row 0: the previous chunk's last valid sample
            t = np.empty(v.shape, dtype=np.int64)
            t[0] = st.last_t[ri]
            t[1:] = ts[:, None]
            ok = ~np.isnan(v)
            ok[0] &= t[0] >= 0
            pi = _ffill_index(ok)[:-1]  # previous valid row (padded coordinates) for rows 1..n
            cols = np.arange(r.shape[0])[None, :]
            pv, pt = v[np.maximum(pi, 0), cols], t[np.maximum(pi, 0), cols]
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = (v[1:] - pv) * 1000.0 / (t[1:] - pt)
            rate[(pi < 0) | ~ok[1:]] = np.nan
            x = x.copy()
            x[:, r] = rate
            last = _ffill_index(ok)[-1]
            has = last >= 0
            st.last_v[ri] = np.where(has, v[np.maximum(last, 0), cols[0]], np.nan)
            st.last_t[ri] = np.where(has, t[np.maximum(last, 0), cols[0]], -1)
        xs = x * plan.sign[None, :]
        valid = ~np.isnan(xs)
        q0 = st.active[idx]
        q, cond, start = _machine(xs > plan.on[None, :], xs < plan.off[None, :], valid, ts, st.cond[idx],
                                  st.start[idx], q0, plan.for_ms)
        st.cond[idx], st.start[idx], st.active[idx] = cond, start, q[-1]
        for j, i in enumerate(idx.tolist()):
            series[i] = q[:, j]
        rows, cols_ = _transitions(q, q0)
        for row, j in zip(rows.tolist(), cols_.tolist(), strict=True):
            i = int(idx[j])
            value = float(x[row, j])
            raised = bool(q[row, j])
            out.append((int(ts[row]), i, self._signal(st, chunk.asset or chunk.device, chunk.device, i,
                                                      int(ts[row]), raised, value)))

    def _missing_data(self, st: _AssetState, i: int, data_ts: I64, asset: str, device: str, out: _Out) -> None:
        """Valid data of ``device`` at ``data_ts``: its gaps of ``after_s`` or more raise and clear the asset's
        alert (raised while any of its devices is silent, cleared when the last one reports again)."""
        if data_ts.shape[0] == 0:
            return
        rule = self.rules[i]
        assert isinstance(rule, MissingRule)
        after = round(rule.after_s * 1000)
        quiet = st.silent.setdefault(i, set())
        seen = st.dev_seen.setdefault(device, {})
        placeholder = st.dev_seen.get("")
        if placeholder is not None and device:  # the asset was expected before its devices were known
            since = placeholder.pop(i, None)
            if not placeholder:
                del st.dev_seen[""]
            if since is not None and i not in seen:
                seen[i] = since
            if "" in quiet:
                quiet.discard("")
                quiet.add(device)  # the asset's silence was this device's
        prev = seen.get(i, -1)
        if prev < 0:  # the first data ever seen: gaps count from it
            prev, data_ts = int(data_ts[0]), data_ts[1:]
        t = np.concatenate([np.array([prev], dtype=np.int64), data_ts])
        for g in np.flatnonzero(np.diff(t) >= after).tolist():
            start, end = int(t[g]), int(t[g + 1])
            gap_s = (end - start) / 1000.0
            if not st.active[i]:
                st.active[i] = True
                out.append((start + after, i, self._signal(st, asset, device, i, start + after, True, gap_s)))
            quiet.discard(device)
            if not quiet:
                st.active[i] = False
                out.append((end, i, self._signal(st, asset, device, i, end, False, gap_s)))
        last = max(prev, int(data_ts[-1])) if data_ts.shape[0] else prev
        if device in quiet and data_ts.shape[0]:  # silent by ``tick``; data came (the gap may have been filled)
            quiet.discard(device)
            if not quiet and st.active[i]:
                st.active[i] = False
                out.append((last, i, self._signal(st, asset, device, i, last, False, None)))
        seen[i] = last

    def _point(self, st: _AssetState, asset: str, device: str, source: str, ts: int, idx: list[int],
               values: list[float], confidence: float, explanation: dict[str, float], out: _Out) -> None:
        """One value per level rule in ``idx`` (score, RUL) at ``ts``, then the composites."""
        last = st.last_ts.get(source)
        if last is not None and ts <= last:
            return
        st.last_ts[source] = ts
        tsa = np.array([ts], dtype=np.int64)
        series: dict[int, Bool] = {}
        if idx:
            ia = np.array(idx, dtype=np.int64)
            lv = [st.levels.get(i) or self._levels[i] for i in idx]
            xs = np.array([[x.sign * v for x, v in zip(lv, values, strict=True)]])
            q0 = st.active[ia]
            q, cond, start = _machine(xs > np.array([x.on for x in lv])[None, :],
                                      xs < np.array([x.off for x in lv])[None, :], ~np.isnan(xs),
                                      tsa, st.cond[ia], st.start[ia], q0,
                                      np.array([x.for_ms for x in lv], dtype=np.int64))
            st.cond[ia], st.start[ia], st.active[ia] = cond, start, q[-1]
            for j, i in enumerate(idx):
                series[i] = q[:, j]
                if q[0, j] != q0[j]:
                    out.append((ts, i, self._signal(st, asset, device, i, ts, bool(q[0, j]), values[j],
                                                    confidence=confidence, explanation=explanation)))
        if self._members:
            self._composites(st, asset, device, tsa, np.ones(1, dtype=bool), series, out)

    def _expire_holds(self, st: _AssetState, asset: str, ts: int, out: _Out, idx: list[int]) -> None:
        for i in idx:
            rule = self.rules[i]
            if isinstance(rule, ScoreRule) and rule.hold_s is not None and st.seen[i] >= 0:
                due = int(st.seen[i]) + round(rule.hold_s * 1000)
                if ts >= due:
                    self._flip(st, asset, "", i, due, out)

    def _flip(self, st: _AssetState, asset: str, device: str, i: int, ts: int, out: _Out, *,
              value: float | None = None) -> None:
        """Raise or clear rule ``i`` at ``ts`` outside a data step (tick, hold expiry), then the composites."""
        raised = not bool(st.active[i])
        st.active[i] = raised
        st.cond[i] = raised
        st.start[i] = ts
        out.append((ts, i, self._signal(st, asset, device, i, ts, raised, value)))
        if self._members:
            self._composites(st, asset, device, np.array([ts], dtype=np.int64), np.ones(1, dtype=bool), {}, out)

    def _composites(self, st: _AssetState, asset: str, device: str, ts: I64, valid: Bool, series: dict[int, Bool],
                    out: _Out) -> None:
        """Every composite of the asset over the rows of one step, a layer (nesting depth) at a time."""
        n = ts.shape[0]
        for layer in self._layers:
            idx = [i for i in layer if st.applies[i]]
            if not idx:
                continue
            cond = np.empty((n, len(idx)), dtype=bool)
            for j, i in enumerate(idx):
                members = self._members[i]
                arrays = [s for k in members if (s := series.get(k)) is not None]
                const = [bool(st.active[k]) for k in members if k not in series]
                if isinstance(self.rules[i], AllRule):
                    cond[:, j] = all(const) and (np.logical_and.reduce(arrays) if arrays else True)
                else:
                    cond[:, j] = any(const) or (np.logical_or.reduce(arrays) if arrays else False)
            ia = np.array(idx, dtype=np.int64)
            v = np.broadcast_to(valid[:, None], cond.shape)
            q0 = st.active[ia]
            q, c, s0 = _machine(cond & v, ~cond & v, v, ts, st.cond[ia], st.start[ia], q0, self._for_ms[ia])
            st.cond[ia], st.start[ia], st.active[ia] = c, s0, q[-1]
            for j, i in enumerate(idx):
                series[i] = q[:, j]
            rows, cols = _transitions(q, q0)
            for row, j in zip(rows.tolist(), cols.tolist(), strict=True):
                out.append((int(ts[row]), idx[j], self._signal(st, asset, device, idx[j], int(ts[row]),
                                                               bool(q[row, j]), None)))

    def _channels_of(self, i: int) -> list[str]:
        rule = self.rules[i]
        if isinstance(rule, ThresholdRule | RateRule):
            return [rule.channel]
        if isinstance(rule, MissingRule) and rule.channel:
            return [rule.channel]
        if isinstance(rule, AllRule | AnyRule):
            return sorted({c for m in rule.of for c in self._channels_of(self.index[m])})
        return []

    def _signal(self, st: _AssetState, asset: str, device: str, i: int, ts: int, raised: bool, value: float | None,
                *, confidence: float = 1.0, explanation: dict[str, float] | None = None) -> Signal:
        rule = st.overrides.get(i) or self.rules[i]
        if explanation is None:
            explanation = self._composite_expl[i] if i in self._composite_expl else _shares(self._channels_of(i))
        if value is not None and np.isnan(value):
            value = None
        unit = self.units(device, rule.channel) if isinstance(rule, ThresholdRule | RateRule) and device else ""
        said = _describe(rule, raised, value, unit)
        if rule.message:  # the rule's own words, and for a level the value against its limit
            said = f"{rule.message} ({said})" if isinstance(rule, ThresholdRule | RateRule) and raised else rule.message
        return Signal(ts=ts, tenant=st.tenant, asset=asset, rule=rule.name,
                      state=SignalState.RAISE if raised else SignalState.CLEAR, severity=rule.severity,
                      device=device, value=value, confidence=confidence, message=said, explanation=dict(explanation))


def _sorted(out: _Out) -> list[Signal]:
    out.sort(key=lambda e: (e[0], e[1]))
    return [s for _, _, s in out]


def _shares(channels: list[str]) -> dict[str, float]:
    return {c: 1.0 / len(channels) for c in channels} if channels else {}


def _topological(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Rules in the given order, except that a composite comes after all of its members."""
    by_name = {r.name: r for r in rules}
    if len(by_name) != len(rules):
        raise ValueError("rule names must be unique")
    done: dict[str, Rule] = {}
    visiting: set[str] = set()

    def visit(rule: Rule) -> None:
        if rule.name in done:
            return
        if rule.name in visiting:
            raise ValueError(f"composite rules form a cycle through {rule.name!r}")
        visiting.add(rule.name)
        if isinstance(rule, AllRule | AnyRule):
            for m in rule.of:
                if m not in by_name:
                    raise ValueError(f"rule {rule.name!r} refers to {m!r}, which is not defined")
                visit(by_name[m])
        visiting.discard(rule.name)
        done[rule.name] = rule

    for r in rules:
        visit(r)
    return tuple(done.values())


def _describe(rule: Rule, raised: bool, value: float | None, unit: str = "") -> str:
    """What the signal says: the value against the rule's limit, with the channel's unit when it has one."""
    u = f" {unit}" if unit else ""
    v = "?" if value is None else f"{value:.4g}{u}"
    if isinstance(rule, ThresholdRule):
        if rule.above is not None:
            clear = rule.above if rule.clear_below is None else rule.clear_below
            return (f"{rule.channel} {v} above {rule.above:g}{u}" + (f" for {rule.for_s:g} s" if rule.for_s else "")
                    if raised else f"{rule.channel} {v} back below {clear:g}{u}")
        back = rule.below if rule.clear_above is None else rule.clear_above
        return (f"{rule.channel} {v} below {rule.below:g}{u}" + (f" for {rule.for_s:g} s" if rule.for_s else "")
                if raised else f"{rule.channel} {v} back above {back:g}{u}")
    if isinstance(rule, RateRule):
        limit = rule.above_per_s if rule.above_per_s is not None else rule.below_per_s
        beyond = (f", limit {limit:g}{u}/s" if limit is not None else "")
        return (f"{rule.channel} changing at {v}/s{beyond}" + (f" for {rule.for_s:g} s" if rule.for_s else "")
                if raised else f"{rule.channel} rate back to {v}/s")
    if isinstance(rule, MissingRule):
        what = f"no {rule.channel} data" if rule.channel else "no data"
        return f"{what} for {rule.after_s:g} s" if raised else f"data again after {v} s"
    if isinstance(rule, ScoreRule):
        return f"{rule.source} score {v} above {rule.above:g}" if raised else f"{rule.source} score back to {v}"
    if isinstance(rule, RulRule):
        return (f"remaining useful life {v} cycles, below {rule.below_cycles:g}" if raised
                else f"remaining useful life back to {v} cycles")
    joiner = " and " if isinstance(rule, AllRule) else " or "
    return (joiner.join(rule.of) + (f" for {rule.for_s:g} s" if rule.for_s else "") if raised
            else f"{joiner.join(rule.of)}: no longer")
