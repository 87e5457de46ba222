"""The campaigns' probes on the platform: a device whose fault a technician confirmed and whose alert is still open
must be anomalous to the candidate too (its last 30 min of data replayed through copies of both versions). A
candidate that learnt the ongoing fault as normal fails the probe gate; one that agrees passes; a fault called a
false alarm, or whose alert is resolved, asks nothing."""

from __future__ import annotations

import msgspec
import numpy as np

from edgeloop.campaigns.engine import CampaignSpec
from edgeloop.campaigns.gates import ProbeGate
from edgeloop.detect.finding import Finding
from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.models.probe_runner import PlatformProbes
from edgeloop.store import Store
from edgeloop.store.alerting import AlertChanges, Label, Verdict
from edgeloop.store.base import TelemetryChunk

T0 = 1_796_400_000_000
SPEC = CampaignSpec(id="c-1", payload="model", subject="detector.pump", from_ref="detector.pump@1",
                    to_ref="detector.pump@2", targets=["d1", "d2"])


class Episode:
    """A detector that calls every row anomalous, or none (too little data is stored for an injected probe)."""

    channels = ("a",)

    def __init__(self, alarming: bool) -> None:
        self.alarming = alarming
        self.last_scores = np.zeros(0)

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        self.last_scores = np.full(len(ts), 1.2 if self.alarming else 0.2)  # a slow fault: around the threshold
        return []


class Scoring:
    def __init__(self, states: dict[tuple[str, str], bool]) -> None:
        self.states = states

    def detector(self, device: str, ref: str) -> Episode:
        return Episode(self.states[(device, ref)])

    def last_scored_ms(self, device: str) -> int | None:
        return T0


async def _data(store: Store) -> None:
    """20 min of each device's data before T0."""
    ts = T0 - np.arange(1200, 0, -1, dtype=np.int64) * 1000
    await store.write_chunks([TelemetryChunk(device=d, seq=1, channels=("a",), ts=ts, values=np.ones((1200, 1)))
                              for d in ("d1", "d2")])


async def _alert(store: Store, alert_id: int, device: str, verdict: Verdict, *, resolved: bool = False) -> None:
    alert = Alert(id=alert_id, tenant="t", asset=f"a-{device}", device=device, kind="anomaly",
                  severity=Severity.WARNING, first_seen=T0 - 3_600_000, last_seen=T0, detector="robust-ensemble-v2",
                  model="detector.pump@1")
    await store.write_alert_changes(AlertChanges(opened=[alert]))
    if resolved:
        await store.write_alert_changes(AlertChanges(updated=[msgspec.structs.replace(
            alert, status=AlertStatus.RESOLVED, resolved_at=T0, resolved_by="tech")]))
    await store.put_labels([Label(alert=alert_id, incident=None, tenant="t", asset=alert.asset, device=device,
                                  rule="anomaly", verdict=verdict, fault_type="bearing_wear", reason="",
                                  start_ms=alert.first_seen, end_ms=alert.last_seen, first_seen=alert.first_seen,
                                  last_seen=alert.last_seen, peak=None, model_version=alert.model, by="tech",
                                  ts=T0)])


async def test_a_candidate_calm_on_a_confirmed_ongoing_fault_fails_the_probe_gate(store: Store) -> None:
    await _data(store)
    await _alert(store, 1, "d1", Verdict.CONFIRMED)
    await _alert(store, 2, "d2", Verdict.FALSE_ALARM)  # not a fault: asks nothing of the candidate
    learnt = Scoring({("d1", "detector.pump@1"): True, ("d1", "detector.pump@2"): False,
                      ("d2", "detector.pump@1"): True, ("d2", "detector.pump@2"): False})
    results = await PlatformProbes(store=store, scoring=learnt, probes=()).run(SPEC, SPEC.targets, T0)
    assert [(r.target, r.probe, r.champion_detected, r.challenger_detected) for r in results.probes] == [
        ("d1", "confirmed-fault-1", True, False)]
    decision = ProbeGate().decide(results, now_ms=T0, end_of_soak=False)
    assert decision.status == "fail" and "confirmed-fault-1 on d1" in decision.reason

    agrees = Scoring({(d, r): True for d in ("d1", "d2") for r in ("detector.pump@1", "detector.pump@2")})
    results = await PlatformProbes(store=store, scoring=agrees, probes=()).run(SPEC, SPEC.targets, T0)
    assert ProbeGate().decide(results, now_ms=T0, end_of_soak=False).status == "pass"


async def test_a_resolved_fault_asks_nothing(store: Store) -> None:
    await _data(store)
    await _alert(store, 1, "d1", Verdict.CONFIRMED, resolved=True)
    scoring = Scoring({("d1", "detector.pump@1"): True, ("d1", "detector.pump@2"): False,
                       ("d2", "detector.pump@1"): False, ("d2", "detector.pump@2"): False})
    results = await PlatformProbes(store=store, scoring=scoring, probes=()).run(SPEC, SPEC.targets, T0)
    assert results.probes == []


class Level:
    """A detector that finds values above its level (an onset when it is crossed), scores value / level."""

    channels = ("a",)

    def __init__(self, level: float) -> None:
        self.level = level
        self.high = False
        self.last_scores = np.zeros(0)

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        out = []
        self.last_scores = x[:, 0] / self.level
        for t, v in zip(ts.tolist(), x[:, 0].tolist(), strict=True):
            if v > self.level and not self.high:
                out.append(Finding(ts=t, kind="anomaly", severity="warning", score=v / self.level,
                                   explanation={"a": 1.0}, message="a above its level"))
            self.high = v > self.level
        return out


class Levels:
    def __init__(self, champion: float, challenger: float) -> None:
        self.levels = {"detector.pump@1": champion, "detector.pump@2": challenger}

    def detector(self, device: str, ref: str) -> Level:
        return Level(self.levels[ref])

    def last_scored_ms(self, device: str) -> int | None:
        return T0


async def test_a_candidate_that_learnt_a_fault_s_onset_as_normal_misses_it_in_the_replay(store: Store) -> None:
    """The fault rose from 40 to 60 two hours before its alert and reads 200 now: a candidate whose normal reaches
    100 still scores the fault high now (a level check passes it) but misses its onset when it is replayed."""
    hour = 3_600_000
    ts = T0 - np.arange(4 * 3600, 0, -1, dtype=np.int64) * 1000  # four hours up to T0
    values = np.where(ts < T0 - 2 * hour, 40.0, np.where(ts < T0 - 20 * 60_000, 60.0, 200.0)).reshape(-1, 1)
    await store.write_chunks([TelemetryChunk(device="d1", seq=1, channels=("a",), ts=ts, values=values)])
    await _alert(store, 1, "d1", Verdict.CONFIRMED)  # first seen an hour before T0
    spec = CampaignSpec(id="c-1", payload="model", subject="detector.pump", from_ref="detector.pump@1",
                        to_ref="detector.pump@2", targets=["d1"])
    learnt = await PlatformProbes(store=store, scoring=Levels(50.0, 100.0), probes=()).run(spec, ["d1"], T0)
    by_probe = {r.probe: (r.champion_detected, r.challenger_detected) for r in learnt.probes}
    assert by_probe == {"confirmed-fault-1": (True, True), "confirmed-onset-1": (True, False)}
    assert ProbeGate().decide(learnt, now_ms=T0, end_of_soak=False).status == "fail"
    same = await PlatformProbes(store=store, scoring=Levels(50.0, 50.0), probes=()).run(spec, ["d1"], T0)
    assert ProbeGate().decide(same, now_ms=T0, end_of_soak=False).status == "pass"
