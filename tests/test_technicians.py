"""Simulated technicians: verdicts from ground truth (and from a real fleet), the error rate and the delay, the
driver answering each alert exactly once when its due time has come in data time, and the whole path into a
real AlertService over a real store (labels stored as a person's would be)."""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field

import numpy as np
import pytest

from edgeloop.alerts.service import AlertService
from edgeloop.clock import ManualClock
from edgeloop.detect import AssetDetector
from edgeloop.errors import NotFoundError, StoreError
from edgeloop.messages import Alert, Severity
from edgeloop.sim import CHANNELS, FaultKind, FaultSpec, Fleet, RegimeKind, RegimeSpec
from edgeloop.sim.technicians import (
    NO_FAULT,
    AlertFacts,
    FleetTruth,
    Inspection,
    SimulatedTechnicians,
    TechnicianPolicy,
)
from edgeloop.store import Store
from edgeloop.store.base import TelemetryChunk
from tests.support import HOT_RULES
from tests.test_alert_service import registry

T0 = 1_767_225_600_000
MIN = 60_000
HOUR = 60 * MIN


@dataclass
class Truth:
    """Hand-made ground truth: per device, the fault's (start, end, type), and a regime change from a time."""

    faults: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    regimes: dict[str, tuple[int, RegimeKind]] = field(default_factory=dict)
    asked: list[tuple[str, int, int]] = field(default_factory=list)

    def inspect(self, *, device: str, asset: str, start_ms: int, end_ms: int) -> Inspection:
        self.asked.append((device, start_ms, end_ms))
        fault = self.faults.get(device)
        regime = self.regimes.get(device)
        return Inspection(fault=fault[2] if fault and fault[0] <= end_ms and start_ms <= fault[1] else None,
                          regime=regime[1] if regime and regime[0] <= end_ms else None)


def facts(alert_id: int, device: str, first: int, last: int, cleared: int | None = None) -> AlertFacts:
    return AlertFacts(alert_id=alert_id, asset=f"asset-{device}", device=device, first_seen=first, last_seen=last,
                      cleared_at=cleared)


def test_verdicts_follow_the_ground_truth_of_the_alerts_span() -> None:
    truth = Truth(faults={"d1": (T0 + HOUR, T0 + 3 * HOUR, "bearing_wear"), "d2": (T0, T0 + HOUR, "dropout")},
                  regimes={"d3": (T0 + HOUR, RegimeKind.PRODUCT_RUN), "d4": (T0, RegimeKind.RECALIBRATION)})
    policy = TechnicianPolicy(seed=1, error_rate=0.0)
    wear = policy.verdict(facts(1, "d1", T0 + 2 * HOUR, T0 + 2 * HOUR + MIN), truth)
    assert (wear.verdict, wear.fault_type, wear.reason, wear.mistaken) == ("confirmed", "bearing_wear", "", False)
    # an alert that began before the fault but was still raised when it started: the technician finds it
    assert policy.verdict(facts(2, "d1", T0 + 50 * MIN, T0 + HOUR + MIN), truth).verdict == "confirmed"
    # a dropout reported when the data returned, 3 min after the stretch ended: inside the inspected pad
    assert policy.verdict(facts(3, "d2", T0 + HOUR + 3 * MIN, T0 + HOUR + 3 * MIN), truth).verdict == "confirmed"
    # ... but not 30 min later; nor an alert on a healthy device
    late = policy.verdict(facts(4, "d2", T0 + HOUR + 30 * MIN, T0 + HOUR + 31 * MIN), truth)
    assert (late.verdict, late.fault_type, late.reason) == ("false_alarm", "", NO_FAULT)
    assert policy.verdict(facts(5, "d0", T0, T0 + HOUR), truth).reason == NO_FAULT
    # the span ends when the alert cleared, if it did
    policy.verdict(facts(6, "d0", T0 + HOUR, T0 + 2 * HOUR, cleared=T0 + HOUR + 10 * MIN), truth)
    assert truth.asked[-1] == ("d0", T0 + HOUR - policy.pad_ms, T0 + HOUR + 10 * MIN)
    # a benign regime change in force is what the technician names as the reason
    product = policy.verdict(facts(7, "d3", T0 + HOUR + 5 * MIN, T0 + HOUR + 9 * MIN), truth)
    assert product.verdict == "false_alarm" and "product run" in product.reason
    assert product.truth == Inspection(fault=None, regime=RegimeKind.PRODUCT_RUN)
    assert "recalibrated" in policy.verdict(facts(8, "d4", T0 + HOUR, T0 + HOUR), truth).reason
    assert policy.verdict(facts(9, "d3", T0, T0 + 10 * MIN), truth).reason == NO_FAULT  # before the change


def test_verdicts_from_a_real_fleet_ground_truth() -> None:
    hot_at, drop_at = T0 + 2 * HOUR, T0 + 2 * HOUR
    fleet = Fleet(devices=4, faulty=0, seed=2, start_ms=T0, duration_ms=4 * HOUR,
                  fault_schedule={1: FaultSpec(kind=FaultKind.OVERHEATING, start_ms=hot_at),
                                  2: FaultSpec(kind=FaultKind.DROPOUT, start_ms=drop_at)},
                  regimes=[RegimeSpec(kind=RegimeKind.RECALIBRATION, at_ms=T0 + HOUR, devices=(3,))])
    truth = FleetTruth(fleet)
    policy = TechnicianPolicy(seed=3, error_rate=0.0)
    healthy, hot, drop, recal = (d.device_id for d in fleet.devices)
    assert policy.verdict(facts(1, healthy, T0 + HOUR, T0 + 3 * HOUR), truth).verdict == "false_alarm"
    assert policy.verdict(facts(2, hot, T0 + HOUR, T0 + HOUR + 10 * MIN), truth).verdict == "false_alarm"
    v = policy.verdict(facts(3, hot, hot_at + 20 * MIN, hot_at + 25 * MIN), truth)
    assert (v.verdict, v.fault_type) == ("confirmed", "overheating")
    assert policy.verdict(facts(4, drop, drop_at + MIN, drop_at + 2 * MIN), truth).fault_type == "dropout"
    v = policy.verdict(facts(5, recal, T0 + HOUR + 2 * MIN, T0 + HOUR + 30 * MIN), truth)
    assert v.verdict == "false_alarm" and "recalibrated" in v.reason
    # an alert without a device is looked up by its asset; an unknown device has no fault
    by_asset = AlertFacts(alert_id=6, asset=fleet.devices[1].asset_id, device="", first_seen=hot_at + HOUR,
                          last_seen=hot_at + HOUR)
    assert policy.verdict(by_asset, truth).fault_type == "overheating"
    assert policy.verdict(facts(7, "elsewhere", T0, T0 + HOUR), truth).verdict == "false_alarm"


def test_the_error_rate_is_respected_and_errors_are_exactly_the_wrong_verdicts() -> None:
    truth = Truth(faults={"bad": (T0, T0 + 100 * HOUR, "cavitation")})
    policy = TechnicianPolicy(seed=11, error_rate=0.1)
    n = 4000
    verdicts = [policy.verdict(facts(i, "bad" if i % 2 else "good", T0 + HOUR, T0 + HOUR), truth)
                for i in range(1, n + 1)]
    wrong = [v for v in verdicts if v.mistaken]
    assert 0.1 - 0.02 < len(wrong) / n < 0.1 + 0.02  # 4.2 standard deviations either way
    for v in verdicts:
        real = v.alert_id % 2 == 1
        assert (v.verdict == "confirmed") == (real != v.mistaken)
        if v.verdict == "confirmed":
            assert v.fault_type == "cavitation" if real else v.fault_type in {k.value for k in FaultKind}
        else:
            assert v.reason == NO_FAULT and v.fault_type == ""
    # deterministic per seed and alert id, whatever order the alerts come in
    again = {v.alert_id: v for v in (policy.verdict(facts(i, "bad" if i % 2 else "good", T0 + HOUR, T0 + HOUR),
                                                    truth) for i in range(n, 0, -1))}
    assert all(again[v.alert_id] == v for v in verdicts)
    other = TechnicianPolicy(seed=12, error_rate=0.1)
    assert {v.alert_id for v in wrong} != {i for i in range(1, n + 1)
                                           if other.verdict(facts(i, "good", T0, T0), truth).mistaken}
    assert not any(TechnicianPolicy(seed=11, error_rate=0.0).verdict(facts(i, "good", T0, T0), truth).mistaken
                   for i in range(1, 500))


def test_delays_are_lognormal_around_the_median_and_capped() -> None:
    policy = TechnicianPolicy(seed=5, delay_median_min=20.0, delay_sigma=0.5, delay_max_min=60.0)
    delays = [(policy.due_ms(i, T0) - T0) / MIN for i in range(1, 3001)]
    assert statistics.median(delays) == pytest.approx(20.0, rel=0.06)
    assert min(delays) > 2.0 and max(delays) == 60.0  # exp(0.5 * 3.5) * 20 > 60: the cap is reached
    logs = np.log([d for d in delays if d < 60.0])
    assert float(np.std(logs)) == pytest.approx(0.5, rel=0.1)
    assert policy.due_ms(7, T0 + HOUR) == policy.due_ms(7, T0) + HOUR  # counted from the alert's start
    with pytest.raises(ValueError):
        TechnicianPolicy(error_rate=1.5)


def alert(alert_id: int, device: str, first: int, last: int | None = None) -> Alert:
    return Alert(id=alert_id, tenant="acme", asset=f"asset-{device}", device=device, kind="anomaly",
                 severity=Severity.WARNING, first_seen=first, last_seen=first if last is None else last)


@dataclass
class Platform:
    """Test double of what the driver needs: open alerts, the feedback path, the data clock."""

    open: list[Alert] = field(default_factory=list)
    now: int = T0
    given: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    fail: dict[int, list[Exception]] = field(default_factory=dict)  # alert id -> errors to raise, in turn
    listings: int = 0
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # set at each verdict given

    async def alerts(self) -> list[Alert]:
        self.listings += 1
        return list(self.open)

    async def feedback(self, alert_id: int, verdict: str, *, by: str, fault_type: str = "",
                       reason: str = "") -> object:
        errors = self.fail.get(alert_id)
        if errors:
            raise errors.pop(0)
        self.given.append((alert_id, verdict, by, fault_type, reason))
        self.answered.set()
        return None


def technicians(p: Platform, truth: Truth, **kw: int) -> SimulatedTechnicians:
    return SimulatedTechnicians(policy=TechnicianPolicy(seed=1, error_rate=0.0), truth=truth, alerts=p.alerts,
                                feedback=p.feedback, data_now=lambda: p.now, by="tech-sim", **kw)


async def test_the_driver_answers_each_alert_exactly_once_when_due_in_data_time() -> None:
    p = Platform()
    truth = Truth(faults={"d1": (T0, T0 + 10 * HOUR, "overheating")})
    tech = technicians(p, truth)
    p.open = [alert(1, "d1", T0), alert(2, "d2", T0 + MIN)]
    due = {i: tech.policy.due_ms(i, a.first_seen) for i, a in ((1, p.open[0]), (2, p.open[1]))}
    assert await tech.step() == [] and tech.pending == 2  # nothing due yet in data time
    p.now = min(due.values()) - 1
    assert await tech.step() == []
    first = min(due, key=lambda i: due[i])
    p.now = min(due.values())
    assert [v.alert_id for v in await tech.step()] == [first]
    p.open = [a for a in p.open if a.id != 2]  # alert 2 resolved meanwhile: still answered, once
    p.now = max(due.values()) + HOUR
    await tech.step()
    for _ in range(3):
        assert await tech.step() == []
    assert sorted(p.given) == [(1, "confirmed", "tech-sim", "overheating", ""),
                               (2, "false_alarm", "tech-sim", "", NO_FAULT)]
    assert (tech.stats.answered, tech.stats.confirmed, tech.stats.false_alarms, tech.pending) == (2, 1, 1, 0)


async def test_the_verdict_uses_the_alert_as_it_stands_when_due() -> None:
    """An alert first seen before its device's fault, still raised when the fault is there: by the time the
    technician looks, its span covers the fault."""
    p = Platform()
    truth = Truth(faults={"d1": (T0 + 30 * MIN, T0 + 10 * HOUR, "bearing_wear")})
    tech = technicians(p, truth)
    p.open = [alert(1, "d1", T0)]
    await tech.step()
    p.open = [alert(1, "d1", T0, last=T0 + 40 * MIN)]
    p.now = T0 + 10 * HOUR
    [v] = await tech.step()
    assert (v.verdict, v.fault_type) == ("confirmed", "bearing_wear")


async def test_a_repair_visit_corrects_a_mistaken_confirmation_and_leaves_a_real_one() -> None:
    """A technician who took a false alarm for a fault finds nothing on site: the verdict is corrected (the newest
    label of the alert wins downstream); a real fault's confirmation stands, and each alert is visited once."""
    p = Platform()
    truth = Truth(faults={"d1": (T0, T0 + 10 * HOUR, "overheating")})
    tech = SimulatedTechnicians(policy=TechnicianPolicy(seed=1, error_rate=1.0), truth=truth, alerts=p.alerts,
                                feedback=p.feedback, data_now=lambda: p.now, by="tech-sim")
    p.open = [alert(1, "d1", T0), alert(2, "d2", T0)]  # every first verdict is wrong (error rate 1)
    await tech.step()
    p.now = max(tech.policy.due_ms(1, T0), tech.policy.due_ms(2, T0))  # both answered, no visit due yet (4 h)
    await tech.step()
    assert sorted(v for _, v, *_ in p.given) == ["confirmed", "false_alarm"]  # d2 confirmed, d1 called false
    confirmed_due = max(v.due_ms for v in tech.verdicts if v.verdict == "confirmed")
    p.now = confirmed_due + round(tech.policy.repair_visit_min * MIN) - 1
    assert await tech.step() == []
    p.now += 1
    [fix] = await tech.step()
    assert (fix.alert_id, fix.verdict, fix.mistaken) == (2, "false_alarm", False) and "on site" in fix.reason
    p.now += 24 * HOUR
    assert await tech.step() == []
    assert (tech.stats.visits, tech.stats.corrected, len(p.given)) == (1, 1, 3)

    p2 = Platform()
    real = SimulatedTechnicians(policy=TechnicianPolicy(seed=1, error_rate=0.0), truth=truth, alerts=p2.alerts,
                                feedback=p2.feedback, data_now=lambda: p2.now, by="tech-sim")
    p2.open = [alert(1, "d1", T0)]
    await real.step()
    p2.now = T0 + 24 * HOUR
    await real.step()
    await real.step()
    assert [v for _, v, *_ in p2.given] == ["confirmed"] and (real.stats.visits, real.stats.corrected) == (1, 0)


async def test_store_errors_are_retried_and_refusals_are_not() -> None:
    p = Platform(now=T0 + 10 * HOUR)
    tech = technicians(p, Truth())
    p.open = [alert(1, "d1", T0), alert(2, "d2", T0 + MIN), alert(3, "d3", T0 + 2 * MIN)]
    p.fail = {1: [StoreError("database is locked")], 2: [NotFoundError("alert", 2)]}
    await tech.step()  # the store error stops this round: given again at the next one
    assert tech.stats.retried == 1 and p.given == [] and tech.pending == 3
    await tech.step()
    await tech.step()
    assert sorted(a for a, *_ in p.given) == [1, 3] and tech.stats.failed == 1 and tech.pending == 0


async def test_pending_and_remembered_alerts_are_bounded() -> None:
    p = Platform()
    tech = technicians(p, Truth(), max_pending=3, max_remembered=2)
    p.open = [alert(i, "d", T0 + i) for i in range(1, 6)]
    await tech.step()
    assert tech.pending == 3 and tech.stats.dropped == 2
    p.now = T0 + 100 * HOUR
    await tech.step()  # the first three answered; the other two taken in at the next listing
    await tech.step()
    assert sorted(a for a, *_ in p.given) == [1, 2, 3, 4, 5]
    await tech.step()  # ids 1..5 still listed (say, not resolved yet): never answered twice
    assert len(p.given) == 5


async def test_run_steps_until_stopped_without_spinning() -> None:
    p = Platform(now=T0 + 100 * HOUR)
    stop = asyncio.Event()
    tech = technicians(p, Truth())
    p.open = [alert(1, "d1", T0), alert(2, "d2", T0)]
    stop.set()
    await tech.run(stop=stop, interval_s=3600.0)  # stopped: one step, then it returns at once
    assert p.listings == 1 and len(p.given) == 2
    stop.clear()
    p.open.append(alert(3, "d3", T0))
    p.answered.clear()
    task = asyncio.create_task(tech.run(stop=stop, interval_s=3600.0))
    await asyncio.wait_for(p.answered.wait(), timeout=5.0)  # the first step of this run
    assert [a for a, *_ in p.given] == [1, 2, 3] and p.listings == 2
    for _ in range(50):
        await asyncio.sleep(0)
    assert p.listings == 2  # waiting out its interval, not polling
    stop.set()
    await asyncio.wait_for(task, timeout=5.0)
    assert p.listings == 3


def chunk(device: int, seq: int, t: int, temps: list[float]) -> TelemetryChunk:
    ts = np.array([t + k * 1000 for k in range(len(temps))], dtype=np.int64)
    return TelemetryChunk(device=f"d{device}", seq=seq, channels=("temp",), ts=ts,
                          values=np.array(temps, dtype=np.float64).reshape(-1, 1), tenant="acme",
                          asset=f"a{device}")


async def test_against_a_real_alert_service_verdicts_become_stored_labels(store: Store) -> None:
    clock = ManualClock(T0)
    svc = AlertService(store=store, registry=registry(), clock=clock)
    await svc.start()
    await svc.replace_rules(HOT_RULES, by="ops")
    t = T0 + 3 * MIN
    clock.advance(t - T0)
    for c in (chunk(0, 1, t, [85, 86]), chunk(1, 1, t, [90])):  # d0 is overheating; d1's sensor misread
        svc.observe_run(c)
    await svc.flush()
    data_now = t
    truth = Truth(faults={"d0": (T0, T0 + 10 * HOUR, "overheating")})
    tech = SimulatedTechnicians(policy=TechnicianPolicy(seed=2, error_rate=0.0), truth=truth,
                                alerts=lambda: store.list_alerts(unresolved=True, limit=1000),
                                feedback=svc.feedback, data_now=lambda: data_now, by="sim-technician")
    assert await tech.step() == [] and tech.pending == 2
    data_now = t + 10 * HOUR
    given = await tech.step()
    assert len(given) == 2
    await tech.step()
    labels = await store.list_labels(tenant="acme")
    assert sorted((lb.device, lb.verdict.value, lb.fault_type, lb.reason, lb.by) for lb in labels) == [
        ("d0", "confirmed", "overheating", "", "sim-technician"),
        ("d1", "false_alarm", "", NO_FAULT, "sim-technician")]
    alerts = {a.id: a for a in await store.list_alerts()}
    for lb in labels:
        assert lb.model_version != "" and alerts[lb.alert].device == lb.device
        assert lb.ts >= alerts[lb.alert].last_seen
    await svc.aclose()


def test_the_champions_alarms_after_a_product_run_are_called_false_alarms_and_real_faults_confirmed() -> None:
    """The simulated loop's first half without a platform: a product run on three devices at 7 h, true faults on
    two others after it; the champion detector's alarms become alerts, and the technicians answer them from the
    fleet's ground truth: the product run named as the reason of each false alarm, the faults by type."""
    at = T0 + 7 * HOUR
    fleet = Fleet(devices=6, faulty=0, seed=1, start_ms=T0, duration_ms=9 * HOUR,
                  fault_schedule={1: FaultSpec(kind=FaultKind.BEARING_WEAR, start_ms=at + 30 * MIN),
                                  3: FaultSpec(kind=FaultKind.CAVITATION, start_ms=at + 30 * MIN)},
                  regimes=[RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, devices=(0, 2, 4))])
    detectors = {d.device_id: AssetDetector(channels=CHANNELS) for d in fleet.devices}
    spans: dict[str, list[int]] = {}  # device -> [first seen, last seen] of what the detector found
    t = T0
    while t < fleet.end_ms:
        t += 10 * MIN
        for c in fleet.advance(t):
            det = detectors[c.device_id]
            for f in det.process(c.ts, c.values) + det.last_updates:
                span = spans.setdefault(c.device_id, [f.ts, f.ts])
                span[1] = max(span[1], f.ts)
    policy = TechnicianPolicy(seed=4, error_rate=0.0)
    truth = FleetTruth(fleet)
    answers = {dev: policy.verdict(facts(i, dev, first, last), truth)
               for i, (dev, (first, last)) in enumerate(sorted(spans.items()), start=1)}
    ids = [d.device_id for d in fleet.devices]
    assert set(answers) == {ids[0], ids[1], ids[2], ids[3], ids[4]}  # the healthy, unchanged device is quiet
    for i in (0, 2, 4):
        v = answers[ids[i]]
        assert v.verdict == "false_alarm" and "product run" in v.reason and spans[ids[i]][0] >= at
    assert (answers[ids[1]].verdict, answers[ids[1]].fault_type) == ("confirmed", "bearing_wear")
    assert (answers[ids[3]].verdict, answers[ids[3]].fault_type) == ("confirmed", "cavitation")
