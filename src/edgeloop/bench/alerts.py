"""``edgeloop bench alerts``: an alert storm through the real rule and incident engines (issue 6).

The simulator's fleet streams its telemetry through the platform's detector (``AssetDetector``), the rule engine
(``alerts.rules.RuleEngine``) and the incident engine (``alerts.incidents.IncidentEngine``), with an injected
clock (``edgeloop.clock.ManualClock``). Nothing is faked: the storm is made by changing the *telemetry* (rows
dropped, values changed) and by the gateway's own state, and the engines see only that. The run is
deterministic for a seed.

**Topology.** ``devices`` machines (1 Hz, 8 channels; each is one asset) on lines of ``line_size`` assets, two
sites. The first ``outage_devices`` (200) reach the platform through gateway ``gw-1``; the other lines are
behind ``gw-2``, ``gw-3``, ... (three lines each).

**The storm** (times are fractions of the run, so ``--quick`` has the same shape):

1. **Gateway outage**: ``gw-1`` goes down at 55 % of the run for ``outage_min`` minutes. Its devices send
   nothing meanwhile (a gateway that is down takes no readings, so there is no backfill), and the platform
   sees the gateway's heartbeats (every 10 s) stop: ``gateway_state(gw-1, online=False)`` 3 heartbeats after
   the outage began, ``online=True`` when it returns.
2. **Line-wide power dip**: every machine of the first line behind ``gw-2`` trips at 75 % of the run and
   restarts ``dip_s`` seconds later; meanwhile its load channels fall to 10 % (speed and flow x 0.1,
   pressure and vibration x 0.01, current to its idle share).
3. **Flapping assets**: ``flapping`` healthy machines have a loose bearing-temperature sensor from 10 % of the
   run on: spikes to 92-130 °C lasting 1-4 s, at exponential intervals (mean 6 min).
4. **True faults**: the simulator's ``faulty`` devices (bearing wear, cavitation, overheating, stuck and
   drifting sensors, dropouts; onset at 30-50 % of the run), found by the detector (findings go to
   ``RuleEngine.evaluate_finding``) and by the rules.

**Feeding.** Each device publishes one row per message. The run moves in steps of ``step_s`` (60 s) of
simulated time: per device, the step's consecutive messages are concatenated into one ``evaluate_chunk``
call, as ``ScoringStage._score_run`` concatenates a run. The detector is causal and per device, so it runs
ahead over windows of ``window_min`` minutes (the same data), and its findings are handed to the rule engine
in the step that contains their time. After the chunks and findings of a step, ``RuleEngine.tick`` (missing
data), then every signal of the step, with the gateway's state changes, goes to the incident engine in time
order, then ``IncidentEngine.tick``.

**What is measured.**

- ``raw_signals``: every ``Signal`` the rule engine emitted (raises and clears), plus the gateway's state
  changes (2: offline, online).
- ``notifications``: ``Page`` events of the incident engine; ``reduction_ratio`` = raw signals / notifications.
- An alert (``AlertOpened``) is *explained* by an injected cause when it is: the gateway's own alert, or
  ``device-silent`` on an asset behind ``gw-1`` opened during the outage (until 15 min after it); ``speed-low``
  on the dip line from the dip until 15 min after; ``bearing-hot`` on a flapping asset; or any alert on a
  faulty asset opened at or after its fault's onset (*a fault alert*). Other effects of a cause (say a
  detector finding on a machine after its line tripped) are not explained.
- ``fault_recall``: the share of injected faults with a page, at or after the onset, that lists a fault alert
  of the asset. ``fault_recall_any_page`` is looser: the asset appears in any page at or after the onset.
- ``false_pages``: pages none of whose alerts is explained.
- ``signals_per_s`` (the headline throughput): input readings (telemetry rows of 8 channels) per second through
  ``RuleEngine.evaluate_chunk`` on one core, with this benchmark's rule set, for 1-row messages batched per
  device over a 60 s scoring pass (60 rows per call, the concatenation timed too). Also reported: the same
  without batching, 1-row and 10-row messages one call each (the weak case: a lightly loaded scoring stage
  that sees one message per device at a time), the rate inside the storm run, and the incident engine's
  input signals per second (the storm's signal stream replayed through a fresh engine).

The process pins itself to one CPU (``sched_setaffinity``), like ``bench detect``.
"""

from __future__ import annotations

import json
import math
import os
import platform as platform_mod
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeloop.alerts.incidents import AlertOpened, Event, IncidentConfig, IncidentEngine, IncidentUpdated, Page
from edgeloop.alerts.model import Signal, SignalState, Suppression, Topology
from edgeloop.alerts.rule_config import RuleSet, rules_from_obj
from edgeloop.alerts.rules import RuleEngine
from edgeloop.bench.harness import cpu_model, pin_one_core, results_file
from edgeloop.clock import ManualClock
from edgeloop.detect import AssetDetector, Finding
from edgeloop.sim import CHANNELS, Fleet, SimDevice
from edgeloop.store.base import TelemetryChunk

__all__ = ["RULES", "Settings", "main", "run_storm"]

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN_MS = 60_000
SETTLE_MS = 15 * MIN_MS  # an injected cause explains its alerts until this long after it ended
TENANT = "bench"
SILENT_RULE = "device-silent"
DIP_RULE = "speed-low"
FLAP_RULE = "bearing-hot"

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: The benchmark's rules, as data (the schema of ``docs/alerts.md``). Levels come from the simulator's profiles:
#: normal speed is >= 50 % of rated (740 / 1,480 rpm), bearings run at 30-75 °C, vibration stays inside the
#: profile's expected range (pump 7.1 mm/s, motor 4.5 mm/s).
RULES: dict[str, Any] = {
    "version": 1,
    "rules": [
        {"name": SILENT_RULE, "kind": "missing", "after_s": 60, "severity": "warning",
         "message": "no data from the machine for 60 s"},
        {"name": DIP_RULE, "kind": "threshold", "channel": "speed", "below": 300, "clear_above": 400, "for_s": 2,
         "severity": "critical", "message": "machine stopped or tripped"},
        {"name": FLAP_RULE, "kind": "threshold", "channel": "bearing_temp", "above": 85, "clear_below": 80,
         "severity": "critical"},
        {"name": "vib-high-pump", "kind": "threshold", "channel": "vib_x", "above": 7.1, "clear_below": 6.5,
         "for_s": 10, "profiles": ["pump-v1"]},
        {"name": "vib-high-motor", "kind": "threshold", "channel": "vib_x", "above": 4.5, "clear_below": 4.0,
         "for_s": 10, "profiles": ["motor-v1"]},
        {"name": "anomaly", "kind": "score", "source": "anomaly", "above": 1.0, "clear_below": 0.5,
         "hold_s": 900},
        # a stuck-sensor finding scores exactly 1.0, and a level raises strictly above ``above``
        {"name": "sensor-stuck", "kind": "score", "source": "sensor_stuck", "above": 0.5, "hold_s": 900},
    ],
}


@dataclass(frozen=True)
class Settings:
    devices: int = 400
    faulty: int = 6
    hours: float = 3.0
    seed: int = 7
    line_size: int = 40
    outage_devices: int = 200  # behind gw-1, which goes down
    outage_min: float = 10.0
    dip_s: float = 20.0
    flapping: int = 3
    backfill: bool = False  # the outage gateway's journal replays the outage's readings when it returns
    step_s: int = 60  # simulated seconds per scoring pass
    window_min: int = 30  # the detector runs ahead over windows of this many simulated minutes
    heartbeat_s: int = 10  # a gateway is offline after 3 missed heartbeats
    throughput_budget_s: float = 3.0  # at most this long per throughput path
    throughput_minutes: int = 10  # simulated minutes of fleet data for the throughput paths
    pin: bool = True

    @classmethod
    def quick(cls) -> Settings:
        """The storm on 240 machines (gw-1's 200 and one line behind gw-2) for 2 simulated hours."""
        return cls(devices=240, hours=2.0, throughput_budget_s=1.0, throughput_minutes=3)

    def check(self) -> None:
        if self.line_size < 1 or self.outage_devices % self.line_size:
            raise ValueError(f"outage_devices ({self.outage_devices}) must be whole lines of {self.line_size}")
        if self.devices < self.outage_devices + self.line_size:
            raise ValueError(f"need at least {self.outage_devices + self.line_size} devices: the outage "
                             f"gateway's {self.outage_devices} and a line behind another gateway for the dip")
        if not 0 <= self.faulty + self.flapping <= self.devices - self.line_size:
            raise ValueError("too many faulty and flapping devices for the fleet")
        if self.hours < 1.0:
            raise ValueError("hours must be >= 1 (the detector learns for 20 min, faults begin at 30-50 %)")
        if self.step_s < 1 or (self.window_min * 60) % self.step_s:
            raise ValueError("step_s must divide the detector window")


# --- the scenario -----------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """The storm's layout and timeline, derived from the settings and the fleet."""

    settings: Settings
    fleet: Fleet
    topology: Topology
    line_of: dict[str, str]
    gateway_of: dict[str, str]
    outage_gateway: str
    outage_assets: frozenset[str]
    outage_start: int
    outage_end: int
    gateway_offline_at: int
    dip_line: str
    dip_assets: frozenset[str]
    dip_start: int
    dip_end: int
    flapping_assets: tuple[str, ...]
    spikes: dict[str, list[tuple[int, int, float]]]  # asset -> (start ms, end ms, value)
    faults: dict[str, SimDevice] = field(default_factory=dict)  # asset -> its faulty device

    def as_dict(self) -> dict[str, Any]:
        s = self.settings
        at = self._at
        gateways = Counter(self.gateway_of.values())
        return {
            "devices": s.devices, "faulty": s.faulty, "seed": s.seed, "hours": s.hours, "step_s": s.step_s,
            "backfill": s.backfill,
            "lines": len(set(self.line_of.values())), "line_size": s.line_size,
            "sites": len(set(self.topology.site_of_line.values())), "gateways": dict(sorted(gateways.items())),
            "outage": {"gateway": self.outage_gateway, "devices": len(self.outage_assets),
                       "start_min": at(self.outage_start), "minutes": s.outage_min,
                       "offline_signal_min": at(self.gateway_offline_at)},
            "dip": {"line": self.dip_line, "assets": len(self.dip_assets), "start_min": at(self.dip_start),
                    "seconds": s.dip_s},
            "flapping": {"assets": list(self.flapping_assets),
                         "spikes": sum(len(v) for v in self.spikes.values())},
            "faults": [{"asset": a, "device": d.device_id, "kind": str(d.fault.kind), "onset_min": at(d.fault.start_ms),
                        "channel": d.fault.channel} for a, d in self.faults.items() if d.fault is not None],
        }

    def _at(self, ms: int) -> float:
        return round((ms - self.fleet.start_ms) / MIN_MS, 2)


def build_scenario(s: Settings) -> Scenario:
    s.check()
    duration = round(s.hours * 3_600_000)
    fleet = Fleet(devices=s.devices, faulty=s.faulty, seed=s.seed, start_ms=START_MS, duration_ms=duration)
    rng = np.random.default_rng([s.seed, 0xA1E27])
    line_of: dict[str, str] = {}
    gateway_of: dict[str, str] = {}
    outage_lines = s.outage_devices // s.line_size
    for i, dev in enumerate(fleet.devices):
        line = i // s.line_size
        line_of[dev.asset_id] = f"line-{line + 1:02d}"
        gateway_of[dev.asset_id] = "gw-1" if line < outage_lines else f"gw-{(line - outage_lines) // 3 + 2}"
    site_of_line = {ln: ("site-a" if gateway_of[a] == "gw-1" else "site-b") for a, ln in line_of.items()}
    topology = Topology(line_of_asset=dict(line_of), site_of_line=site_of_line, gateway_of_asset=dict(gateway_of))
    end = fleet.end_ms

    def at(fraction: float) -> int:
        return START_MS + round(fraction * duration / 1000) * 1000

    outage_start = at(0.55)
    outage_end = outage_start + round(s.outage_min * MIN_MS)
    dip_line = f"line-{outage_lines + 1:02d}"
    dip_start = at(0.75)
    faults = {d.asset_id: d for d in fleet.devices if d.fault is not None}
    healthy = [d.asset_id for d in fleet.devices if d.fault is None]
    flapping = tuple(sorted(rng.choice(healthy, size=s.flapping, replace=False).tolist())) if s.flapping else ()
    spikes: dict[str, list[tuple[int, int, float]]] = {}
    for asset in flapping:
        t = float(at(0.10))
        out: list[tuple[int, int, float]] = []
        while True:
            t += max(20_000.0, float(rng.exponential(6 * MIN_MS)))
            begin = int(t // 1000) * 1000
            if begin >= end:
                break
            out.append((begin, begin + 1000 * int(rng.integers(1, 5)), float(rng.uniform(92.0, 130.0))))
        spikes[asset] = out
    return Scenario(
        settings=s, fleet=fleet, topology=topology, line_of=line_of, gateway_of=gateway_of, outage_gateway="gw-1",
        outage_assets=frozenset(a for a, g in gateway_of.items() if g == "gw-1"), outage_start=outage_start,
        outage_end=outage_end, gateway_offline_at=outage_start + 3 * s.heartbeat_s * 1000, dip_line=dip_line,
        dip_assets=frozenset(a for a, ln in line_of.items() if ln == dip_line), dip_start=dip_start,
        dip_end=dip_start + round(s.dip_s * 1000), flapping_assets=flapping, spikes=spikes, faults=faults)


_SPEED, _FLOW, _PRES, _CUR, _TEMP = (CHANNELS.index(c) for c in ("speed", "flow", "pressure", "motor_current",
                                                                  "bearing_temp"))
_VIB = [CHANNELS.index(c) for c in ("vib_x", "vib_y", "vib_z")]
_DIP_K = 0.1


def inject(sc: Scenario, asset: str, ts: I64, values: F64) -> tuple[I64, F64]:
    """The dip and the sensor spikes applied to one device's rows (the outage is applied by :func:`run_storm`)."""
    changed = False
    if asset in sc.dip_assets:
        hit = (ts >= sc.dip_start) & (ts < sc.dip_end)
        if hit.any():
            values, changed = values.copy(), True
            k = _DIP_K
            values[hit, _SPEED] *= k
            values[hit, _FLOW] *= k
            values[hit, _PRES] *= k * k
            for j in _VIB:
                values[hit, j] *= k * k
            values[hit, _CUR] *= 0.25 + 0.75 * k**3
    for begin, stop, value in sc.spikes.get(asset, ()):
        if begin > ts[-1] if ts.shape[0] else True:
            break
        hit = (ts >= begin) & (ts < stop)
        if hit.any():
            if not changed:
                values, changed = values.copy(), True
            values[hit, _TEMP] = value
    return ts, values


def _outage(sc: Scenario, device: str, ts: I64, values: F64,
            backlog: dict[str, list[tuple[I64, F64]]] | None) -> tuple[I64, F64]:
    """The rows of a device behind the outage gateway that reach the platform now: none during the outage; with a
    ``backlog`` (backfill), the outage's rows are held and arrive, in order, with the first rows after it."""
    during = (ts >= sc.outage_start) & (ts < sc.outage_end)
    if backlog is None:
        return (ts[~during], values[~during]) if during.any() else (ts, values)
    held = backlog.setdefault(device, [])
    if during.any():
        held.append((ts[during], values[during]))
    after = ts >= sc.outage_end
    if not after.any():
        return ts[ts < sc.outage_start], values[ts < sc.outage_start]
    before = ts < sc.outage_start
    parts = [(ts[before], values[before]), *held, (ts[after], values[after])]
    held.clear()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- the storm run ----------------------------------------------------------------------------------------------


@dataclass
class StormResult:
    signals: list[Signal] = field(default_factory=list)  # from the rule engine
    gateway_signals: int = 0
    events: list[Event] = field(default_factory=list)
    findings: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    messages: int = 0
    chunk_calls: int = 0
    rule_chunk_s: float = 0.0  # time inside RuleEngine.evaluate_chunk
    rule_other_s: float = 0.0  # evaluate_finding + tick
    incident_s: float = 0.0
    detector_s: float = 0.0
    simulate_s: float = 0.0
    stream: list[tuple[str, Any]] = field(default_factory=list)  # what the incident engine got, for the replay


def engines(sc: Scenario, rules: RuleSet) -> tuple[ManualClock, RuleEngine, IncidentEngine]:
    clock = ManualClock(START_MS)
    profiles = {k: d.profile for d in sc.fleet.devices for k in (d.asset_id, d.device_id)}
    rule_engine = RuleEngine(rules, clock=clock, profiles=profiles)
    for d in sc.fleet.devices:
        rule_engine.expect(d.asset_id, tenant=TENANT, since_ms=START_MS, devices=(d.device_id,))
    incident_engine = IncidentEngine(sc.topology, IncidentConfig(started_at_ms=START_MS), clock=clock)
    return clock, rule_engine, incident_engine


def run_storm(sc: Scenario, rules: RuleSet, progress: Callable[[int, int], None] | None = None) -> StormResult:
    s = sc.settings
    fleet = sc.fleet
    clock, rule_engine, incident_engine = engines(sc, rules)
    res = StormResult()
    asset_of = {d.device_id: d.asset_id for d in fleet.devices}
    detectors = {d.device_id: AssetDetector(channels=CHANNELS, period_ms=fleet.period_ms) for d in fleet.devices}
    gateway_events = [(sc.gateway_offline_at, sc.outage_gateway, False), (sc.outage_end, sc.outage_gateway, True)]
    backlog: dict[str, list[tuple[I64, F64]]] | None = {} if s.backfill else None
    step_ms = s.step_s * 1000
    window_ms = s.window_min * MIN_MS
    total = fleet.end_ms - fleet.start_ms
    t = fleet.start_ms
    while t < fleet.end_ms:
        w_end = min(t + window_ms, fleet.end_ms)
        # simulate the window step by step, with the storm applied
        t0 = time.perf_counter()
        steps: list[tuple[int, list[tuple[str, I64, F64]]]] = []
        u = t
        while u < w_end:
            u = min(u + step_ms, w_end)
            rows = []
            for c in fleet.advance(u):
                asset = asset_of[c.device_id]
                ts, values = inject(sc, asset, c.ts, c.values)
                if asset in sc.outage_assets:
                    ts, values = _outage(sc, c.device_id, ts, values, backlog)
                if ts.shape[0]:
                    rows.append((c.device_id, ts, values))
            steps.append((u, rows))
        res.simulate_s += time.perf_counter() - t0
        # the detector runs ahead over the window (causal, per device: the same findings as step by step)
        t0 = time.perf_counter()
        per_step: list[list[tuple[str, Finding]]] = [[] for _ in steps]
        bounds = np.array([u for u, _ in steps], dtype=np.int64)
        by_device: dict[str, list[tuple[I64, F64]]] = {}
        for _, rows in steps:
            for device, ts, values in rows:
                by_device.setdefault(device, []).append((ts, values))
        for device, parts in by_device.items():
            ts = np.concatenate([p[0] for p in parts])
            values = np.concatenate([p[1] for p in parts])
            for f in detectors[device].process(ts, values):
                per_step[int(np.searchsorted(bounds, f.ts))].append((device, f))
        res.detector_s += time.perf_counter() - t0
        # the engines, one scoring pass per step
        prev = t
        for (u, rows), findings in zip(steps, per_step, strict=True):
            out: list[Signal] = []
            t0 = time.perf_counter()
            for device, ts, values in rows:
                chunk = TelemetryChunk(device=device, seq=int(ts[0]) // 1000, channels=CHANNELS, ts=ts, values=values,
                                       tenant=TENANT, asset=asset_of[device])
                out += rule_engine.evaluate_chunk(chunk)
                res.rows += ts.shape[0]
                res.messages += ts.shape[0]
                res.chunk_calls += 1
            t1 = time.perf_counter()
            res.rule_chunk_s += t1 - t0
            for device, f in sorted(findings, key=lambda e: (e[1].ts, e[0])):
                res.findings[str(f.kind)] += 1
                out += rule_engine.evaluate_finding(asset_of[device], f, tenant=TENANT, device=device)
            clock.advance(u - clock.now_ms())
            out += rule_engine.tick()
            t2 = time.perf_counter()
            res.rule_other_s += t2 - t1
            res.signals += out
            items: list[tuple[int, int, str, str, Any]] = [(x.ts, 1, x.asset, x.rule, x) for x in out]
            items += [(ts_, 0, gw, "", online) for ts_, gw, online in gateway_events if prev < ts_ <= u]
            items.sort(key=lambda e: e[:4])
            t0 = time.perf_counter()
            for ts_, kind, asset, _, x in items:
                if kind == 0:
                    res.events += incident_engine.gateway_state(asset, bool(x), ts_, tenant=TENANT)
                    res.gateway_signals += 1
                    res.stream.append(("gateway", (asset, bool(x), ts_)))
                else:
                    res.events += incident_engine.process(x)
                    res.stream.append(("signal", x))
            res.events += incident_engine.tick()
            res.stream.append(("tick", u))
            res.incident_s += time.perf_counter() - t0
            prev = u
        t = w_end
        if progress is not None:
            progress(t - fleet.start_ms, total)
    return res


# --- analysis ---------------------------------------------------------------------------------------------------


def causes_of(sc: Scenario, asset: str, rule: str, ts: int, gateway_rule: str) -> tuple[str, ...]:
    """The injected causes that explain an alert or a signal (see the module docstring), the cause its rule
    matches first, then ``fault`` for anything on a faulty asset from its onset on; empty: unexplained."""
    out: list[str] = []
    gateway = rule == gateway_rule and asset == sc.outage_gateway
    if gateway or (rule == SILENT_RULE and asset in sc.outage_assets
                   and sc.outage_start <= ts <= sc.outage_end + SETTLE_MS):
        out.append("gateway outage")
    elif rule == DIP_RULE and asset in sc.dip_assets and sc.dip_start <= ts <= sc.dip_end + SETTLE_MS:
        out.append("line dip")
    elif rule == FLAP_RULE and asset in sc.flapping_assets:
        out.append("flapping")
    dev = sc.faults.get(asset)
    if dev is not None and dev.fault is not None and ts >= dev.fault.start_ms:
        out.append("fault")
    return tuple(out)


CAUSES = ("gateway outage", "line dip", "flapping", "fault")


def analyse(sc: Scenario, res: StormResult, gateway_rule: str) -> dict[str, Any]:
    opened: dict[int, AlertOpened] = {e.alert: e for e in res.events if isinstance(e, AlertOpened)}
    pages = [e for e in res.events if isinstance(e, Page)]
    causes = {a: causes_of(sc, e.asset, e.rule, e.ts, gateway_rule) for a, e in opened.items()}
    start = sc.fleet.start_ms

    def page_cause(p: Page) -> str | None:
        """The gateway's page is the outage's. Any other page is a fault's when it lists an alert of a faulty asset
        from its onset on (an asset still silent after its gateway returned, because of a dropout, is its fault),
        unless it is a line page of the dip; else the first cause its alerts have."""
        if p.kind == "gateway":
            return "gateway outage" if p.scope == sc.outage_gateway else None
        found = {c for a in p.alerts for c in causes[a]}
        if p.kind == "line" and "line dip" in found:
            return "line dip"
        return next((c for c in ("fault", *CAUSES) if c in found), None)

    cause_of_page = {p.incident: page_cause(p) for p in pages}
    signals_by: Counter[str] = Counter()
    for x in res.signals:
        signals_by[next(iter(causes_of(sc, x.asset, x.rule, x.ts, gateway_rule)), "unexplained")] += 1
    signals_by["gateway outage"] += res.gateway_signals
    pages_by: Counter[str] = Counter(c or "unexplained" for c in cause_of_page.values())
    raw = len(res.signals) + res.gateway_signals
    faults: list[dict[str, Any]] = []
    for asset, dev in sc.faults.items():
        assert dev.fault is not None
        onset = dev.fault.start_ms
        hits = [(p, a) for p in pages if p.ts >= onset and cause_of_page[p.incident] == "fault" for a in p.alerts
                if opened[a].asset == asset and "fault" in causes[a]]
        first = min(hits, key=lambda h: h[0].ts, default=None)
        any_page = any(p.ts >= onset and asset in p.assets for p in pages)
        faults.append({
            "asset": asset, "device": dev.device_id, "kind": str(dev.fault.kind),
            "onset_min": round((onset - start) / MIN_MS, 2), "notified": first is not None,
            "in_any_page": any_page, "rule": opened[first[1]].rule if first else None,
            "delay_min": round((first[0].ts - onset) / MIN_MS, 2) if first else None,
            "pages": len({p.incident for p, _ in hits}),
            "raw_signals": sum(1 for x in res.signals if x.asset == asset and x.ts >= onset)})
    n_faults = len(faults)
    silences = {e.asset for e in opened.values() if e.rule == SILENT_RULE and "gateway outage" in causes[e.alert]}
    outage_pages = [p for p in pages if cause_of_page[p.incident] == "gateway outage"]
    gw_pages = [p for p in pages if p.kind == "gateway" and p.scope == sc.outage_gateway]
    # the silences the outage's incident took: opened under it, or moved into it when the gateway went offline
    gw_incidents = {e.incident for e in opened.values() if e.rule == gateway_rule}
    joined = {e.alert for e in res.events if isinstance(e, IncidentUpdated) and e.change == "alert-added"
              and e.incident in gw_incidents and e.alert is not None}
    linked = {e.asset for e in opened.values()
              if e.rule == SILENT_RULE and (e.incident in gw_incidents or e.alert in joined)}
    after_outage = [e for e in opened.values() if e.rule != SILENT_RULE and e.asset in sc.outage_assets
                    and not causes[e.alert] and sc.outage_end <= e.ts <= sc.outage_end + SETTLE_MS]
    dip_pages = [p for p in pages if cause_of_page[p.incident] == "line dip"]
    after_dip = [e for e in opened.values() if e.asset in sc.dip_assets and not causes[e.alert]
                 and sc.dip_start <= e.ts <= sc.dip_end + SETTLE_MS]
    suppressed: Counter[str] = Counter(str(e.reason) for e in res.events if isinstance(e, Suppression))
    return {
        "raw_signals": raw, "rule_signals": len(res.signals), "gateway_signals": res.gateway_signals,
        "raises": sum(1 for x in res.signals if x.state is SignalState.RAISE),
        "alerts": len(opened), "incidents": len({e.incident for e in opened.values()}),
        "notifications": len(pages),
        "reduction_ratio": round(raw / len(pages), 2) if pages else None,
        "fault_recall": round(sum(f["notified"] for f in faults) / n_faults, 4) if n_faults else None,
        "fault_recall_any_page": round(sum(f["in_any_page"] for f in faults) / n_faults, 4) if n_faults else None,
        "false_pages": pages_by.get("unexplained", 0),
        "by_cause": {c: {"raw_signals": signals_by.get(c, 0), "pages": pages_by.get(c, 0)}
                     for c in (*CAUSES, "unexplained")},
        "gateway_outage": {"gateway": sc.outage_gateway, "devices": len(sc.outage_assets),
                           "silences": len(silences), "silences_linked_to_gateway_incident": len(linked),
                           "gateway_pages": len(gw_pages), "pages": len(outage_pages),
                           "page_alerts": len(gw_pages[0].alerts) if gw_pages else 0,
                           "unexplained_alerts_after": len(after_outage),
                           "unexplained_alerts_after_rules": dict(Counter(e.rule for e in after_outage))},
        "line_dip": {"line": sc.dip_line, "assets": len(sc.dip_assets),
                     "raised": len({opened[a].asset for a in causes if "line dip" in causes[a]}),
                     "pages": len(dip_pages), "unexplained_alerts_after": len(after_dip)},
        "faults": faults,
        "findings": dict(sorted(res.findings.items())),
        "suppressions": dict(sorted(suppressed.items())),
        "pages": [{"min": round((p.ts - start) / MIN_MS, 2), "kind": p.kind, "scope": p.scope, "title": p.title,
                   "route": p.route, "priority": p.priority, "alerts": len(p.alerts), "assets": len(p.assets),
                   "cause": cause_of_page[p.incident] or "unexplained"} for p in pages],
    }


# --- throughput -------------------------------------------------------------------------------------------------


def _throughput_data(s: Settings) -> tuple[list[SimDevice], I64, F64]:
    """``throughput_minutes`` of the fleet (healthy shape): ts (n,), values (devices, n, 8)."""
    minutes = s.throughput_minutes
    fleet = Fleet(devices=s.devices, faulty=0, seed=s.seed, start_ms=START_MS, duration_ms=minutes * MIN_MS + 1000)
    chunks = fleet.advance(START_MS + minutes * MIN_MS)
    ts = chunks[0].ts
    return fleet.devices, ts, np.stack([c.values for c in chunks])


def _fresh_rules(devices: list[SimDevice], rules: RuleSet) -> RuleEngine:
    clock = ManualClock(START_MS)
    eng = RuleEngine(rules, clock=clock, profiles={k: d.profile for d in devices for k in (d.asset_id, d.device_id)})
    for d in devices:
        eng.expect(d.asset_id, tenant=TENANT, since_ms=START_MS, devices=(d.device_id,))
    return eng


def rule_throughput(devices: list[SimDevice], ts: I64, values: F64, rules: RuleSet, *, rows_per_message: int,
                    batch_messages: int, budget_s: float) -> dict[str, Any]:
    """Rows/s through ``evaluate_chunk`` in time order over all devices: messages of ``rows_per_message`` rows,
    ``batch_messages`` consecutive messages of a device concatenated into one call (timed with the call)."""
    eng = _fresh_rules(devices, rules)
    n = ts.shape[0]
    per_call = rows_per_message * batch_messages
    rows = calls = 0
    elapsed = 0.0
    for lo in range(0, n - per_call + 1, per_call):
        t0 = time.perf_counter()
        for j, d in enumerate(devices):
            if batch_messages == 1:
                t_, v_ = ts[lo:lo + per_call], values[j, lo:lo + per_call]
            else:  # the scoring stage concatenates the run of a device's messages
                t_ = np.concatenate([ts[m:m + rows_per_message] for m in range(lo, lo + per_call, rows_per_message)])
                v_ = np.concatenate([values[j, m:m + rows_per_message]
                                     for m in range(lo, lo + per_call, rows_per_message)])
            eng.evaluate_chunk(TelemetryChunk(device=d.device_id, seq=lo, channels=CHANNELS, ts=t_, values=v_,
                                              tenant=TENANT, asset=d.asset_id))
        elapsed += time.perf_counter() - t0
        rows += per_call * len(devices)
        calls += len(devices)
        if elapsed >= budget_s:
            break
    return {"rows_per_message": rows_per_message, "rows_per_call": per_call, "rows": rows, "calls": calls,
            "rows_per_s": round(rows / elapsed) if elapsed else None,
            "channel_values_per_s": round(rows * len(CHANNELS) / elapsed) if elapsed else None,
            "us_per_call": round(1e6 * elapsed / calls, 1) if calls else None}


def incident_throughput(sc: Scenario, stream: list[tuple[str, Any]], repeats: int = 3) -> dict[str, Any]:
    """The storm's input stream (signals, gateway states, ticks) replayed through fresh incident engines."""
    best = math.inf
    n_signals = sum(1 for k, _ in stream if k != "tick")
    pages = 0
    for _ in range(repeats):
        eng = IncidentEngine(sc.topology, IncidentConfig(started_at_ms=START_MS), clock=ManualClock(START_MS))
        events = 0
        t0 = time.perf_counter()
        for kind, x in stream:
            if kind == "signal":
                ev = eng.process(x)
            elif kind == "gateway":
                ev = eng.gateway_state(x[0], x[1], x[2], tenant=TENANT)
            else:
                ev = eng.tick(x)
            events += len(ev)
            pages += sum(1 for e in ev if isinstance(e, Page))
        best = min(best, time.perf_counter() - t0)
    return {"signals": n_signals, "ticks": len(stream) - n_signals, "seconds": round(best, 4),
            "signals_per_s": round(n_signals / best) if best > 0 else None, "pages_per_replay": pages // repeats}


# --- the command ------------------------------------------------------------------------------------------------


@dataclass
class _Bar:
    progress: Progress
    task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("storm (simulated minutes)", total=total / MIN_MS)
        self.progress.update(self.task, completed=done / MIN_MS)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                    TimeElapsedColumn(), console=console, transient=True)


def run(settings: Settings, console: Console) -> dict[str, Any]:
    """The whole benchmark: the storm, its analysis and the throughput paths; returns the report."""
    started = time.monotonic()
    load = os.getloadavg()
    cpu = pin_one_core() if settings.pin else None
    rules = rules_from_obj(RULES, origin="bench/alerts.py RULES")
    sc = build_scenario(settings)
    console.print(f"storm: {settings.devices} machines, {settings.hours:g} simulated h, seed {settings.seed}; "
                  f"{len(sc.outage_assets)} behind {sc.outage_gateway} (outage), dip on {sc.dip_line}, "
                  f"{len(sc.flapping_assets)} flapping, {len(sc.faults)} faulty")
    with _progress(console) as bar:
        res = run_storm(sc, rules, _Bar(bar))
    gateway_rule = IncidentConfig().gateway_rule
    storm = analyse(sc, res, gateway_rule)
    console.print(f"  {storm['raw_signals']:,} raw signals, {storm['notifications']} pages; throughput ...")
    devices, ts, values = _throughput_data(settings)
    b = settings.throughput_budget_s
    batched = rule_throughput(devices, ts, values, rules, rows_per_message=1, batch_messages=settings.step_s,
                              budget_s=b)
    per_10 = rule_throughput(devices, ts, values, rules, rows_per_message=10, batch_messages=1, budget_s=b)
    per_1 = rule_throughput(devices, ts, values, rules, rows_per_message=1, batch_messages=1, budget_s=b)
    incidents = incident_throughput(sc, res.stream)
    in_storm = round(res.rows / res.rule_chunk_s) if res.rule_chunk_s else None
    report: dict[str, Any] = {
        "benchmark": "alerts",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario": sc.as_dict(),
        "rules": RULES,
        "incident_config": {k: (sorted(v) if isinstance(v, frozenset) else v)
                            for k, v in asdict(IncidentConfig(started_at_ms=START_MS)).items()},
        **{k: storm[k] for k in ("reduction_ratio", "fault_recall", "fault_recall_any_page", "false_pages",
                                 "raw_signals", "notifications")},
        "signals_per_s": batched["rows_per_s"],
        "signals_per_s_definition": ("telemetry rows (8 channels each) per second through RuleEngine.evaluate_chunk "
                                     f"on one core: 1-row messages, {settings.step_s} per device concatenated per "
                                     "call"),
        "storm": storm,
        "throughput": {
            "rules_batched": batched, "rules_10_row_messages": per_10, "rules_1_row_messages": per_1,
            "rules_in_storm": {"rows": res.rows, "calls": res.chunk_calls, "rows_per_s": in_storm,
                               "us_per_call": round(1e6 * res.rule_chunk_s / res.chunk_calls, 1)
                               if res.chunk_calls else None},
            "incidents": incidents,
        },
        "timing_s": {"simulate": round(res.simulate_s, 2), "detector": round(res.detector_s, 2),
                     "rules_chunks": round(res.rule_chunk_s, 2), "rules_findings_and_ticks": round(res.rule_other_s, 2),
                     "incidents": round(res.incident_s, 2)},
        "machine": {"cpu": cpu, "cpu_model": cpu_model(), "cores": os.cpu_count(),
                    "load_before": [round(x, 2) for x in load], "python": platform_mod.python_version(),
                    "numpy": np.__version__, "machine": platform_mod.machine()},
    }
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return report


def render(report: dict[str, Any], out: Console) -> None:
    st = report["storm"]
    sc = report["scenario"]
    table = Table(title=f"bench alerts: storm on {sc['devices']} machines, {sc['hours']:g} simulated h "
                        f"(seed {sc['seed']})")
    for col in ("cause", "raw signals", "pages", "signals per page"):
        table.add_column(col, justify="left" if col == "cause" else "right")
    for cause, v in st["by_cause"].items():
        ratio = f"{v['raw_signals'] / v['pages']:.1f}" if v["pages"] else "-"
        table.add_row(cause, f"{v['raw_signals']:,}", str(v["pages"]), ratio)
    ratio = report["reduction_ratio"]
    table.add_row("[b]all[/b]", f"[b]{st['raw_signals']:,}[/b]", f"[b]{st['notifications']}[/b]",
                  f"[b]{ratio if ratio is not None else '-'}[/b]")
    out.print(table)
    g = st["gateway_outage"]
    out.print(f"gateway outage: {g['silences']} of {g['devices']} machines went silent, "
              f"{g['silences_linked_to_gateway_incident']} linked to the gateway's incident, "
              f"{g['pages']} page(s) ({g['gateway_pages']} for the gateway, listing {g['page_alerts']} alerts)")
    d = st["line_dip"]
    out.print(f"line dip on {d['line']}: {d['raised']} of {d['assets']} machines raised, {d['pages']} page(s)")
    faults = Table(title="injected faults")
    for col in ("asset", "fault", "onset (min)", "notified", "by rule", "delay (min)", "pages"):
        faults.add_column(col)
    for f in st["faults"]:
        faults.add_row(f["asset"], f["kind"], f"{f['onset_min']:.1f}", "yes" if f["notified"] else "[red]no[/red]",
                       f["rule"] or "-", "-" if f["delay_min"] is None else f"{f['delay_min']:.1f}", str(f["pages"]))
    out.print(faults)
    tp = report["throughput"]
    speed = Table(title=f"throughput, one core (cpu {report['machine']['cpu']})")
    for col in ("path", "rows per call", "rows/s", "µs per call"):
        speed.add_column(col, justify="left" if col == "path" else "right")
    for label, key in (("rules: 1-row messages, batched per device", "rules_batched"),
                       ("rules: 10-row messages, one call each", "rules_10_row_messages"),
                       ("rules: 1-row messages, one call each", "rules_1_row_messages"),
                       ("rules: inside the storm run", "rules_in_storm")):
        r = tp[key]
        speed.add_row(label, str(r.get("rows_per_call", report["scenario"]["step_s"])), f"{r['rows_per_s']:,}",
                      f"{r['us_per_call']}")
    inc = tp["incidents"]
    speed.add_row("incident engine (signals/s, storm replayed)", "-", f"{inc['signals_per_s']:,}", "-")
    out.print(speed)
    out.print(f"reduction {ratio}:1 (target >= 50), fault recall {report['fault_recall']} (target 1.0), "
              f"false pages {report['false_pages']}, rule engine {report['signals_per_s']:,} rows/s batched "
              f"(target >= 20,000); {report['elapsed_seconds']} s")


def main(*, settings: Settings, json_path: str | None, console: Console, out: Console) -> dict[str, Any]:
    """Run, write the JSON (``json_path``, ``-`` for stdout, default bench/results/alerts-<UTC>.json) and print."""
    report = run(settings, console)
    text = json.dumps(report, indent=2) + "\n"
    if json_path == "-":
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return report
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path = results_file("alerts")
    path.write_text(text)
    console.print(f"done in {report['elapsed_seconds']:.0f} s; results written to {path}")
    render(report, out)
    return report
