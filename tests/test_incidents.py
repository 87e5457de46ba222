"""The incident engine (issue 6): dedup, correlation, suppression with reasons, priority, with an injected clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from edgeloop.alerts.incidents import (
    AlertMerged,
    AlertOpened,
    AlertResolved,
    Event,
    IncidentConfig,
    IncidentEngine,
    IncidentMerged,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Page,
)
from edgeloop.alerts.model import Signal, SignalState, Suppression, SuppressionReason, Topology
from edgeloop.alerts.priority import priority, route
from edgeloop.alerts.suppress import MaintenanceWindow, Scope, Silence
from edgeloop.clock import ManualClock

T0 = 1_767_225_600_000  # the platform start
T = T0 + 3_600_000  # an hour later: well past the startup grace
S = 1000
MIN = 60_000


def raise_(ts: int, asset: str, rule: str, severity: str = "warning", confidence: float = 1.0) -> Signal:
    return Signal(ts=ts, tenant="t1", asset=asset, rule=rule, state=SignalState.RAISE, severity=severity,
                  confidence=confidence)


def clear(ts: int, asset: str, rule: str) -> Signal:
    return Signal(ts=ts, tenant="t1", asset=asset, rule=rule, state=SignalState.CLEAR)


def engine(topology: Topology | None = None, **cfg: object) -> tuple[IncidentEngine, ManualClock]:
    clock = ManualClock(T0)
    config = IncidentConfig(**cfg)  # type: ignore[arg-type]
    return IncidentEngine(topology or Topology(), config, clock), clock


def pages(events: Sequence[Event]) -> list[Page]:
    return [e for e in events if isinstance(e, Page)]


def suppressions(events: Sequence[Event]) -> list[Suppression]:
    return [e for e in events if isinstance(e, Suppression)]


# --- the storm ----------------------------------------------------------------------------------------------


def storm_topology(n_behind: int = 200, n_noisy: int = 5) -> Topology:
    behind = {f"a{i:03d}": "gw-1" for i in range(n_behind)}
    lines = {a: "L-gw" for a in behind}
    lines.update({f"n{i}": f"L-n{i}" for i in range(n_noisy)})
    return Topology(line_of_asset=lines, site_of_line={ln: "site-1" for ln in set(lines.values())},
                    gateway_of_asset=behind, criticality={f"n{i}": 4 for i in range(n_noisy)})


def storm_signals(n_behind: int = 200, n_noisy: int = 5, minutes: int = 60, period_ms: int = 20 * S) -> list[Signal]:
    """Noisy assets flip two rules every ``period_ms`` for ``minutes``; gw-1 drops at +10 min, back at +40 min.

    20 of the silences behind the gateway arrive *before* the gateway's own signal (its heartbeat timeout is
    slower than the devices' missing-data rules), the rest after; all clear a few seconds after it returns.
    """
    sig: list[Signal] = []
    for k in range(minutes * MIN // period_ms):
        t = T + k * period_ms
        for i in range(n_noisy):
            sig.append(raise_(t + i, f"n{i}", "vibration-high"))
            sig.append(raise_(t + i + 1, f"n{i}", "temp-high", severity="critical"))
            sig.append(clear(t + i + 5 * S, f"n{i}", "vibration-high"))
            sig.append(clear(t + i + 6 * S, f"n{i}", "temp-high"))
    off, on = T + 10 * MIN, T + 40 * MIN
    for i in range(n_behind):
        sig.append(raise_(off - 10 * S + i * 10 if i < 20 else off + 30 * S + i * 20, f"a{i:03d}", "missing-data"))
        sig.append(clear(on + 2 * S + i * 10, f"a{i:03d}", "missing-data"))
    sig.append(raise_(off, "gw-1", "gateway-offline", severity="critical"))
    sig.append(clear(on, "gw-1", "gateway-offline"))
    sig.sort(key=lambda s: s.ts)
    return sig


def test_storm_one_page_for_the_gateway_silences_linked_and_resolved_on_return() -> None:
    eng, _ = engine(storm_topology(), started_at_ms=T0)
    signals = storm_signals()
    events = eng.process_many(signals)
    events += eng.tick(T + 3 * 3_600_000)
    ps = pages(events)
    gw_pages = [p for p in ps if p.kind == "gateway"]
    assert len(gw_pages) == 1
    gw_inc = gw_pages[0].incident
    assert gw_pages[0].route == "urgent"  # critical gateway, criticality 3 behind it -> 60
    # the design: each noisy asset is its own problem, paged once for its incident (both its rules in it),
    # however many raises (180 per rule) it sends; nothing else pages
    noisy = [p for p in ps if p.kind != "gateway"]
    assert sorted(p.scope for p in noisy) == [f"n{i}" for i in range(5)]
    assert all(p.kind == "asset" and len(p.alerts) == 2 for p in noisy)
    assert len(ps) == 6
    # the 200 silences hang under the gateway's incident, each with a CORRELATED record naming it
    inc = eng.incident(gw_inc)
    linked = [eng.alert(a) for a in inc.alerts]
    assert len(linked) == 201 and sorted(a.asset for a in linked if a.rule == "missing-data") == [
        f"a{i:03d}" for i in range(200)]
    last: dict[str, Suppression] = {}
    for s in suppressions(events):
        if s.rule == "missing-data":
            last[s.asset] = s
    assert len(last) == 200
    assert all(s.reason is SuppressionReason.CORRELATED and s.incident == gw_inc and "gw-1" in s.detail
               for s in last.values())
    # the 20 early silences briefly looked like a line-wide cause; that incident was merged, never paged
    merged = [e for e in events if isinstance(e, IncidentMerged)]
    assert merged and all(m.into in {gw_inc} or eng.incident(m.into).merged_into == gw_inc for m in merged)
    # when the gateway returns and data flows again, the incident and every linked alert resolve
    resolved = [e for e in events if isinstance(e, IncidentResolved) and e.incident == gw_inc]
    assert len(resolved) == 1 and resolved[0].ts == T + 40 * MIN + 2 * S + 199 * 10
    assert all(a.resolved_at is not None for a in linked)
    # raw signals per page
    assert len(signals) / len(ps) > 50


def test_a_device_still_silent_after_its_gateway_returned_pages_on_its_own() -> None:
    topo = Topology(gateway_of_asset={"a1": "gw", "a2": "gw"})
    eng, _ = engine(topo, started_at_ms=T0, gateway_recovery_ms=2 * MIN)
    ev = eng.gateway_state("gw", online=False, ts=T)
    ev += eng.process_many([raise_(T + 5 * S, "a1", "missing-data"), raise_(T + 6 * S, "a2", "missing-data")])
    ev += eng.gateway_state("gw", online=True, ts=T + 10 * MIN)
    ev += eng.process(clear(T + 10 * MIN + 3 * S, "a1", "missing-data"))
    assert [p.kind for p in pages(ev)] == ["gateway"]
    ev2 = eng.tick(T + 12 * MIN)
    (p,) = pages(ev2)
    assert p.scope == "a2" and "still silent" in p.title
    assert any(isinstance(e, IncidentResolved) and e.incident == pages(ev)[0].incident for e in ev2)


def test_the_gap_reported_when_a_gateway_returns_is_part_of_its_outage() -> None:
    """Detectors report a data gap when data comes back after an outage: 2 devices behind the gateway do so
    right after it returns. Those gaps are the outage's own, linked under its incident and resolved at once;
    a gap on an asset not behind it still pages, and so does one after the recovery window."""
    topo = Topology(gateway_of_asset={"a1": "gw", "a2": "gw"})
    eng, _ = engine(topo, started_at_ms=T0, gateway_recovery_ms=2 * MIN,
                    silence_rules=frozenset({"missing-data", "data_gap"}))
    ev = eng.gateway_state("gw", online=False, ts=T)
    ev += eng.process_many([raise_(T + 5 * S, "a1", "missing-data"), raise_(T + 6 * S, "a2", "missing-data")])
    ev += eng.gateway_state("gw", online=True, ts=T + 10 * MIN)
    ev += eng.process_many([clear(T + 10 * MIN + 1 * S, "a1", "missing-data"), raise_(T + 10 * MIN + 1 * S, "a1",
                                                                                       "data_gap"),
                            clear(T + 10 * MIN + 2 * S, "a2", "missing-data"), raise_(T + 10 * MIN + 2 * S, "a2",
                                                                                       "data_gap"),
                            raise_(T + 10 * MIN + 3 * S, "b9", "data_gap")])
    ev += eng.tick(T + 20 * MIN)
    gw_inc = next(p.incident for p in pages(ev) if p.kind == "gateway")
    assert sorted(p.scope for p in pages(ev)) == ["b9", "gw"]
    gaps = [eng.open_alert(a, "data_gap") for a in ("a1", "a2")]
    assert gaps == [None, None], "resolved at once"
    why = [s for s in suppressions(ev) if s.rule == "data_gap"]
    assert [(s.asset, s.reason, s.incident) for s in why] == [("a1", SuppressionReason.CORRELATED, gw_inc),
                                                              ("a2", SuppressionReason.CORRELATED, gw_inc)]
    assert "outage" in why[0].detail
    ev = eng.process(raise_(T + 25 * MIN, "a1", "data_gap"))  # long after the recovery: a problem of its own
    ev += eng.tick(T + 26 * MIN)
    assert [p.scope for p in pages(ev)] == ["a1"]


# --- line-wide cause ----------------------------------------------------------------------------------------


def test_line_wide_power_dip_is_one_incident_one_page() -> None:
    topo = Topology(line_of_asset={f"p{i}": "L2" for i in range(40)}, site_of_line={"L2": "s"})
    eng, _ = engine(topo, started_at_ms=T0)
    ev = eng.process_many([raise_(T + i * 100, f"p{i}", "undervoltage") for i in range(30)])
    ev += eng.tick(T + 5 * MIN)
    (p,) = pages(ev)
    assert p.kind == "line" and p.scope == "L2" and len(p.assets) == 30
    live = [i for i in eng.inbox()]
    assert len(live) == 1 and live[0].id == p.incident
    assert sum(isinstance(e, IncidentMerged) for e in ev) == 5  # the first five opened their own, then merged
    # other lines / rules do not join
    ev = eng.process(raise_(T + 6 * MIN, "p35", "overtemp"))
    assert any(isinstance(e, IncidentOpened) for e in ev)


def test_line_threshold_by_fraction_for_small_lines() -> None:
    topo = Topology(line_of_asset={f"q{i}": "L3" for i in range(4)})
    eng, _ = engine(topo, started_at_ms=T0)
    ev = eng.process_many([raise_(T, "q0", "undervoltage"), raise_(T + S, "q1", "undervoltage")])
    ev += eng.tick(T + MIN)
    (p,) = pages(ev)
    assert p.kind == "line" and set(p.assets) == {"q0", "q1"}


# --- suppression --------------------------------------------------------------------------------------------


def test_maintenance_window_suppresses_and_records_who_and_why() -> None:
    topo = Topology(line_of_asset={"m1": "L1", "m2": "L1", "x": "L9"}, site_of_line={"L1": "s1", "L9": "s1"})
    eng, _ = engine(topo, started_at_ms=T0)
    eng.add_maintenance(MaintenanceWindow(id="mw-3", scope=Scope.LINE, target="L1", start_ms=T, end_ms=T + 60 * MIN,
                                          by="alice", reason="pump overhaul"))
    ev = eng.process(raise_(T + MIN, "m1", "pressure-low", severity="critical"))
    ev += eng.tick(T + 10 * MIN)
    assert not pages(ev)
    (opened,) = [e for e in ev if isinstance(e, AlertOpened)]
    assert opened.suppressed is SuppressionReason.MAINTENANCE  # the alert exists: nothing is lost
    (s,) = suppressions(ev)
    assert s.reason is SuppressionReason.MAINTENANCE and s.asset == "m1"
    assert "alice" in s.detail and "pump overhaul" in s.detail and "mw-3" in s.detail
    # another line is not covered; after the window, the line pages again
    ev = eng.process(raise_(T + 11 * MIN, "x", "pressure-low"))
    ev += eng.process(raise_(T + 61 * MIN, "m2", "pressure-low"))
    ev += eng.tick(T + 70 * MIN)
    assert sorted(p.scope for p in pages(ev)) == ["m2", "x"]


def test_site_window_covers_assets_of_its_lines() -> None:
    topo = Topology(line_of_asset={"m1": "L1"}, site_of_line={"L1": "s1"})
    eng, _ = engine(topo, started_at_ms=T0)
    eng.add_maintenance(MaintenanceWindow(id="mw", scope=Scope.SITE, target="s1", start_ms=T, end_ms=T + MIN,
                                          by="carol", reason="shutdown"))
    ev = eng.process(raise_(T + S, "m1", "r")) + eng.tick(T + 10 * MIN)
    assert not pages(ev) and suppressions(ev)[0].reason is SuppressionReason.MAINTENANCE


def test_flapping_signal_pages_once() -> None:
    eng, _ = engine(started_at_ms=T0, auto_resolve_ms=5 * S, flap_max_raises=3, flap_period_ms=60 * MIN,
                    flap_hold_ms=30 * MIN, asset_window_ms=10 * MIN)
    ev: list[Event] = []
    for k in range(20):  # raise, clear 10 s later, resolve 5 s after that, again a minute later
        ev += eng.process(raise_(T + k * MIN, "f1", "level-high"))
        ev += eng.process(clear(T + k * MIN + 10 * S, "f1", "level-high"))
    ev += eng.tick(T + 40 * MIN)
    assert len(pages(ev)) == 1
    assert sum(isinstance(e, AlertOpened) for e in ev) == 20  # every raise still made an alert
    reasons = Counter(s.reason for s in suppressions(ev))
    # raises 2 and 3 join the paged incident (reopened); from the 4th on the rule is held off as flapping
    assert reasons == {SuppressionReason.CORRELATED: 2, SuppressionReason.FLAPPING: 17}
    flap = [s for s in suppressions(ev) if s.reason is SuppressionReason.FLAPPING]
    assert "held off until" in flap[0].detail and "more than 3 times" in flap[0].detail
    # outside the incident window but inside the hold (last flap + 30 min): still held off
    ev = eng.process(raise_(T + 44 * MIN, "f1", "level-high")) + eng.tick(T + 50 * MIN)
    assert not pages(ev) and suppressions(ev)[0].reason is SuppressionReason.FLAPPING
    eng.process(clear(T + 45 * MIN, "f1", "level-high"))
    # quiet for longer than the hold and the flap period: it pages again
    ev = eng.process(raise_(T + 4 * 3_600_000, "f1", "level-high")) + eng.tick(T + 5 * 3_600_000)
    assert len(pages(ev)) == 1


def test_manual_silence_who_why_until() -> None:
    eng, _ = engine(started_at_ms=T0)
    eng.add_silence(Silence(id="s1", scope=Scope.ASSET, target="k1", by="bob", reason="sensor being replaced",
                            until_ms=T + 30 * MIN, rule="temp-high"))
    ev = eng.process(raise_(T, "k1", "temp-high")) + eng.tick(T + 5 * MIN)
    assert not pages(ev)
    (s,) = suppressions(ev)
    assert s.reason is SuppressionReason.SILENCED and "bob" in s.detail and "sensor being replaced" in s.detail
    # another rule on the same asset is not silenced: it joins the incident and makes it page
    ev = eng.process(raise_(T + 6 * MIN, "k1", "vibration-high"))
    (p,) = pages(ev)
    assert p.scope == "k1" and len(p.alerts) == 2
    # after the silence ends (or is ended), the rule pages
    eng.end_silence("s1")
    ev = eng.process(raise_(T + 2 * 3_600_000, "k2", "temp-high")) + eng.tick(T + 3 * 3_600_000)
    assert len(pages(ev)) == 1


def test_startup_grace() -> None:
    eng, _ = engine(startup_grace_ms=120 * S)  # started at the clock's now, T0
    ev = eng.process(raise_(T0 + 30 * S, "g1", "r")) + eng.tick(T0 + 10 * MIN)
    assert not pages(ev)
    assert suppressions(ev)[0].reason is SuppressionReason.STARTUP_GRACE
    ev = eng.process(raise_(T0 + 200 * S, "g2", "r")) + eng.tick(T0 + 20 * MIN)
    assert [p.scope for p in pages(ev)] == ["g2"]
    eng.restarted(T0 + 30 * MIN)
    ev = eng.process(raise_(T0 + 31 * MIN, "g3", "r")) + eng.tick(T0 + 40 * MIN)
    assert not pages(ev)


# --- dedup, auto-resolve, priority --------------------------------------------------------------------------


def test_dedup_one_open_alert_per_asset_rule() -> None:
    eng, _ = engine(started_at_ms=T0)
    ev = eng.process_many([raise_(T, "d1", "r"), raise_(T + S, "d1", "r"), raise_(T + 2 * S, "d1", "r",
                                                                                  severity="critical")])
    assert sum(isinstance(e, AlertOpened) for e in ev) == 1
    merged = [e for e in ev if isinstance(e, AlertMerged)]
    assert [m.count for m in merged] == [2, 3] and merged[-1].severity == "critical"
    assert [s.reason for s in suppressions(ev)] == [SuppressionReason.DUPLICATE] * 2
    a = eng.open_alert("d1", "r")
    assert a is not None and (a.count, a.first_seen, a.last_seen) == (3, T, T + 2 * S)
    ev = eng.tick(T + MIN)
    (p,) = pages(ev)
    assert p.priority == priority("critical", 3, 1.0)


def test_auto_resolve_after_the_condition_cleared_for_the_configured_time() -> None:
    eng, _ = engine(started_at_ms=T0, auto_resolve_ms=5 * MIN)
    eng.process(raise_(T, "r1", "r"))
    eng.process(clear(T + MIN, "r1", "r"))
    assert not [e for e in eng.tick(T + 6 * MIN - 1) if isinstance(e, AlertResolved)]
    ev = eng.tick(T + 6 * MIN)
    assert [e.ts for e in ev if isinstance(e, AlertResolved)] == [T + 6 * MIN]
    assert any(isinstance(e, IncidentResolved) for e in ev)
    assert eng.open_alert("r1", "r") is None
    # a raise before the time is up cancels the resolution
    eng.process(raise_(T + 10 * MIN, "r2", "r"))
    eng.process(clear(T + 11 * MIN, "r2", "r"))
    eng.process(raise_(T + 14 * MIN, "r2", "r"))
    assert not [e for e in eng.tick(T + 30 * MIN) if isinstance(e, AlertResolved)]
    eng.process(clear(T + 31 * MIN, "r2", "r"))
    ev = eng.tick(T + 36 * MIN)
    assert [e.ts for e in ev if isinstance(e, AlertResolved)] == [T + 36 * MIN]


def test_priority_orders_the_inbox_and_routes() -> None:
    topo = Topology(criticality={"big": 5, "mid": 3, "small": 1})
    eng, _ = engine(topo, started_at_ms=T0)
    ev = eng.process_many([raise_(T, "small", "r", severity="critical"),
                           raise_(T + 1, "mid", "r", severity="warning"),
                           raise_(T + 2, "big", "r", severity="critical", confidence=0.9),
                           raise_(T + 3, "mid", "s", severity="info")])
    ev += eng.tick(T + MIN)
    assert [i.scope for i in eng.inbox()] == ["big", "mid", "small"]
    assert [i.priority for i in eng.inbox()] == [90.0, 40.0, 20.0]
    assert {p.scope: p.route for p in pages(ev)} == {"big": "urgent", "mid": "normal", "small": "normal"}
    assert priority("info", 1, 1.0) == 6.7 and priority("critical", 5, 1.0) == 100.0
    assert priority("warning", 9, 2.0) == priority("warning", 5, 1.0)  # clamped
    assert route(60.0) == "urgent" and route(59.9) == "normal"


def test_deterministic() -> None:
    sig = storm_signals(n_behind=50, n_noisy=3, minutes=45)
    topo = storm_topology(50, 3)
    a, _ = engine(topo, started_at_ms=T0)
    b, _ = engine(topo, started_at_ms=T0)
    assert a.process_many(sig) == b.process_many(sig)


def test_a_large_storm_stays_small_in_pages() -> None:
    sig = storm_signals(n_behind=200, n_noisy=50, minutes=60, period_ms=20 * S)  # ~36,000 signals
    eng, _ = engine(storm_topology(200, 50), started_at_ms=T0)
    ev = eng.process_many(sig) + eng.tick(T + 3 * 3_600_000)
    kinds = Counter(p.kind for p in pages(ev))
    assert kinds == {"gateway": 1, "asset": 50}


def test_gateway_offline_again_during_recovery_keeps_the_silence_linked() -> None:
    topo = Topology(gateway_of_asset={"a1": "gw"})
    eng, _ = engine(topo, started_at_ms=T0, gateway_recovery_ms=2 * MIN)
    ev = eng.gateway_state("gw", online=False, ts=T)
    ev += eng.process(raise_(T + 5 * S, "a1", "missing-data"))
    ev += eng.gateway_state("gw", online=True, ts=T + 10 * MIN)
    ev += eng.gateway_state("gw", online=False, ts=T + 11 * MIN)
    ev += eng.tick(T + 13 * MIN)
    assert [p.kind for p in pages(ev)] == ["gateway", "gateway"]
    a = eng.open_alert("a1", "missing-data")
    assert a is not None and eng.incident(a.incident).kind == "gateway"


def test_a_problem_that_returns_within_the_repeat_window_does_not_page_again() -> None:
    """An intermittent fault raises every 20 min, each time long after the last alert resolved: one page for
    its first hour (the incident reopens), a new page once it has been quiet for more than the window."""
    eng, _ = engine(started_at_ms=T0, auto_resolve_ms=2 * MIN, flap_max_raises=100)
    ev: list[Event] = []
    for k in range(3):  # raises at T, T + 20 min, T + 40 min
        t = T + k * 20 * MIN
        ev += eng.process_many([raise_(t, "p1", "dropout"), clear(t + 30 * S, "p1", "dropout")])
        ev += eng.tick(t + 10 * MIN)
    assert len(pages(ev)) == 1
    assert sum(1 for e in ev if isinstance(e, IncidentUpdated) and e.change == "reopened") == 2
    ev = eng.process(raise_(T + 40 * MIN + 61 * MIN, "p1", "dropout")) + eng.tick(T + 110 * MIN)
    assert [p.scope for p in pages(ev)] == ["p1"], "quiet for over an hour: a new problem"


def test_compact_forgets_closed_incidents_but_not_open_ones() -> None:
    eng, _ = engine(started_at_ms=T0, auto_resolve_ms=MIN)
    eng.process_many([raise_(T, "c1", "r"), clear(T + S, "c1", "r"), raise_(T, "c2", "r")])
    eng.tick(T + 5 * MIN)
    assert eng.compact(T + 60 * MIN) == 0, "within the repeat window a raise of c1/r would rejoin it: kept"
    assert eng.compact(T + 61 * MIN) == 1
    assert [i.scope for i in eng.inbox()] == ["c2"]
    ev = eng.process(raise_(T + 62 * MIN, "c1", "r")) + eng.tick(T + 70 * MIN)
    assert [p.scope for p in pages(ev)] == ["c1"]
