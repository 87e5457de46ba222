"""The scoring stage runs a live and a shadow model version per device: only the live one's findings reach the
alert service (with the version as the alert's provenance); both are recorded with their version; swapping the
roles swaps which one pages without rebuilding (so without a new warm-up) either detector."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeloop.assets import DeviceProfile
from edgeloop.clock import ManualClock
from edgeloop.detect.finding import Finding
from edgeloop.models.findings import FindingLog
from edgeloop.scoring import Assignment, ScoringStage
from edgeloop.store import Store
from tests.test_alert_service import MIN, T0, chunk, service


class Above:
    """A stand-in detector: one anomaly onset per crossing of its level (the real ones are tested on their own)."""

    name = "above-v1"

    def __init__(self, level: float) -> None:
        self.channels: tuple[str, ...] = ("temp",)
        self.level = level
        self.high = False

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        out = []
        for t, v in zip(ts.tolist(), x[:, 0].tolist(), strict=True):
            if v > self.level and not self.high:
                out.append(Finding(ts=t, kind="anomaly", severity="warning", score=v / self.level,
                                   explanation={"temp": 1.0}, message=f"temp above {self.level}"))
            self.high = v > self.level
        return out


class Source:
    def __init__(self) -> None:
        self.assignment_now = Assignment("detector.p@1", "detector.p@2")
        self.made: list[str] = []

    def assignment(self, device: str, profile: DeviceProfile | None) -> Assignment:
        return self.assignment_now

    def detector(self, ref: str, device: str, channels: tuple[str, ...]) -> Any:
        self.made.append(ref)
        return Above(50.0 if ref.endswith("@1") else 80.0)


async def test_only_the_live_version_pages_and_both_are_recorded(store: Store) -> None:
    clock = ManualClock(T0 + 3 * MIN)
    alerts = await service(store, clock)  # the default rules: a detector's anomaly raises an alert
    source = Source()
    stage = ScoringStage(alerts=alerts, models=source, on_findings=FindingLog(store=store))
    t = T0 + 3 * MIN
    await stage.score([chunk(0, 1, t, [40.0, 60.0, 61.0])])  # @1 (level 50) fires, @2 (level 80) does not
    [alert] = await store.list_alerts()
    assert (alert.model, alert.detector) == ("detector.p@1", "above-v1")
    await stage.score([chunk(0, 2, t + 10_000, [40.0, 90.0])])  # both fire; only the live one is an alert's repeat
    recorded = [(f.model, f.live, f.ts) for f in await store.list_model_findings()]
    assert recorded == [("detector.p@1", True, t + 1000), ("detector.p@2", False, t + 11_000),
                        ("detector.p@1", True, t + 11_000)]
    assert stage.stats.shadow_findings == 1 and stage.stats.findings == 2

    source.assignment_now = Assignment("detector.p@2", "detector.p@1")  # a canary wave: the challenger pages
    await stage.score([chunk(0, 3, t + 20_000, [40.0, 85.0])])
    assert source.made == ["detector.p@1", "detector.p@2"], "a role swap keeps both detectors running"
    live = [f for f in await store.list_model_findings(since=t + 20_000)]
    assert [(f.model, f.live) for f in live] == [("detector.p@1", False), ("detector.p@2", True)]

    source.assignment_now = Assignment("detector.p@2")  # promoted: the old version is dropped
    await stage.score([chunk(0, 4, t + 30_000, [40.0, 99.0])])
    assert [(f.model, f.live) for f in await store.list_model_findings(since=t + 30_000)] == [("detector.p@2", True)]



async def test_a_safety_net_shadow_pages_what_the_candidate_misses(store: Store) -> None:
    """Behind a canary the champion shadows with ``safety_net``: a fault only it finds still raises an alert, with
    the champion's version as its provenance (its verdict then judges the candidate)."""
    clock = ManualClock(T0 + 3 * MIN)
    source = Source()
    source.assignment_now = Assignment("detector.p@2", "detector.p@1", safety_net=True)  # candidate live (80)
    stage = ScoringStage(alerts=await service(store, clock), models=source, on_findings=FindingLog(store=store))
    await stage.score([chunk(0, 1, T0 + 3 * MIN, [40.0, 60.0, 61.0])])  # only the champion (50) fires
    [alert] = await store.list_alerts()
    assert alert.model == "detector.p@1"
    assert [(f.model, f.live) for f in await store.list_model_findings()] == [("detector.p@1", False)]
