"""The campaign service over a real store: a candidate rolled out to promotion (aliases promoted, targets released),
a missed confirmed fault rolling the first wave back with bounded exposure, a restart in the middle of a campaign
(crash between applying and acknowledging) that resumes the placement and ends the same way, abort, approval, a
refused version, observations from stored findings and labels, and every log entry audited exactly once.

Scoring is simulated from the placement the service applied (``Fleet``): a version writes findings on a device only
if the placement (or the champion, once released) has it scoring there, so the tests see where versions really
ran."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from edgeloop.campaigns.engine import CampaignSpec, CampaignState, CampaignStateError, wave_targets
from edgeloop.campaigns.gates import (
    Episode,
    Episodes,
    ProbeGate,
    ProbeResult,
    ProbeResults,
    RateCounts,
    ScoreShiftGate,
)
from edgeloop.campaigns.live_scores import LiveScores
from edgeloop.campaigns.service import CampaignService, CampaignView
from edgeloop.errors import ConfigError, ConflictError, ModelRefused, NotFoundError, StoreError
from edgeloop.scoring import Assignment
from edgeloop.store import Store, open_store
from edgeloop.store.alerting import Label, Verdict
from edgeloop.store.base import AuditRecord, CampaignRecord, ModelFinding, TelemetryChunk

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_780_000_000_000
OLD, NEW = "detector.pump@3", "detector.pump@4"
TARGETS = [f"pump-{i:02d}" for i in range(20)]


def make_spec(**changes: Any) -> CampaignSpec:
    spec = CampaignSpec(id="c-1", payload="model", subject="detector.pump", from_ref=OLD, to_ref=NEW,
                        targets=list(TARGETS), shadow_ms=6 * HOUR, soak_ms=12 * HOUR)
    return msgspec.structs.replace(spec, **changes)


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@dataclass
class FakePlacement:
    """The deployment's overrides: device → assignment; a released device scores the champion alone."""

    assigned: dict[str, Assignment] = field(default_factory=dict)
    ever_live: set[str] = field(default_factory=set)  # devices that ever ran the candidate live
    refuse: set[str] = field(default_factory=set)  # refs that cannot be loaded

    async def assign(self, assignments: Mapping[str, Assignment]) -> None:
        for a in assignments.values():
            for ref in (a.live, a.shadow):
                if ref in self.refuse:
                    raise ModelRefused("tampered", f"{ref}: artifact hash differs from the manifest")
        self.assigned.update(assignments)
        self.ever_live |= {d for d, a in assignments.items() if a.live == NEW}

    def release(self, devices: Iterable[str]) -> None:
        for d in devices:
            self.assigned.pop(d, None)


@dataclass
class FakeAliases:
    champion: str = OLD
    promotions: list[tuple[str, str, str]] = field(default_factory=list)
    refreshes: int = 0

    async def promote(self, ref: str, *, by: str, reason: str, scope: str = "*") -> object:
        self.champion = ref
        self.promotions.append((ref, by, reason))
        return None

    async def refresh(self) -> None:
        self.refreshes += 1


@dataclass
class Fleet:
    """The platform around the service: store, clock, placement, aliases; and simulated scoring."""

    store: Store
    clock: Clock
    placement: FakePlacement
    aliases: FakeAliases
    service: CampaignService
    alert_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def scoring(self, device: str) -> set[str]:
        a = self.placement.assigned.get(device)
        return {self.aliases.champion} if a is None else {a.live, *([a.shadow] if a.shadow else [])}

    async def onset(self, device: str, ref: str, ts: int, kind: str = "anomaly") -> None:
        """``ref`` finds something on ``device`` at ``ts`` if it scores there."""
        if ref in self.scoring(device):
            await self.store.add_model_findings([finding(device, ref, ts, kind)])

    async def label(self, device: str, start: int, end: int, verdict: Verdict = Verdict.CONFIRMED,
                    *, alert: int | None = None, at: int | None = None) -> int:
        alert = next(self.alert_ids) if alert is None else alert
        await self.store.put_labels([Label(
            alert=alert, incident=None, tenant="acme", asset=f"asset-{device}", device=device, rule="anomaly",
            verdict=verdict, fault_type="bearing" if verdict != Verdict.FALSE_ALARM else "", reason="", start_ms=start,
            end_ms=end, first_seen=start, last_seen=end, peak=2.0, model_version=OLD, by="tech",
            ts=end if at is None else at)])
        return alert

    async def hours(self, n: int, scenario: Callable[[int], Awaitable[None]] | None = None) -> None:
        """``n`` hours of hourly ticks; ``scenario(t)`` writes what scoring found in the hour before ``t``."""
        for _ in range(n):
            self.clock.ms += HOUR
            if scenario is not None:
                await scenario(self.clock.ms)
            await self.service.tick()


def finding(device: str, ref: str, ts: int, kind: str = "anomaly") -> ModelFinding:
    return ModelFinding(model=ref, live=True, tenant="acme", asset=f"asset-{device}", device=device, ts=ts, kind=kind,
                        severity="warning", score=1.5, explanation={"temp": 1.0}, message="anomaly")


def service_for(store: Store, clock: Clock, placement: FakePlacement, aliases: FakeAliases, *,
                audit: Callable[[AuditRecord], Awaitable[None]] | None = None,
                probes: Any = None, scores: LiveScores | None = None) -> CampaignService:
    return CampaignService(store=store, now=clock, placement=placement, aliases=aliases,
                           audit=audit or store.audit, probes=probes, scores=scores)


def fleet_for(store: Store, clock: Clock | None = None, **kw: Any) -> Fleet:
    clock = clock or Clock()
    placement, aliases = FakePlacement(), FakeAliases()
    return Fleet(store=store, clock=clock, placement=placement, aliases=aliases,
                 service=service_for(store, clock, placement, aliases, **kw))


async def champion_false_alarms(fleet: Fleet, t: int) -> None:
    """The champion raises a false alarm on one device every other hour; the candidate raises none."""
    if (t // HOUR) % 2 == 0:
        await fleet.onset(TARGETS[(t // HOUR) % len(TARGETS)], OLD, t - 30 * MIN)


async def audit_kinds(store: Store, campaign: str) -> list[str]:
    return [a.action for a in await store.list_campaign_audit(campaign)]


def seqs_audited(records: Sequence[AuditRecord]) -> collections.Counter[int]:
    return collections.Counter(int(a.detail[1:a.detail.index("]")]) for a in records)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'edgeloop.db'}") as s:
        yield s


# --- the good path ----------------------------------------------------------------------------------------------


async def test_good_candidate_is_promoted_aliases_set_and_targets_released(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    view = await fleet.service.start(make_spec(), by="alice")
    assert view.state.phase == "shadow"
    assert fleet.placement.assigned == {t: Assignment(OLD, NEW) for t in TARGETS}  # the candidate only shadows

    async def scenario(t: int) -> None:
        await champion_false_alarms(fleet, t)
        if t == T0 + 20 * HOUR:  # a real fault on a wave-1 device: both versions find it, a technician confirms it
            device = wave_targets(make_spec())[1][0]
            await fleet.onset(device, OLD, t - 40 * MIN)
            await fleet.onset(device, NEW, t - 35 * MIN)
            await fleet.label(device, t - 45 * MIN, t - 5 * MIN)

    await fleet.hours(7, scenario)  # the shadow phase passed: wave 1 (2 of 20 targets)
    wave1 = wave_targets(make_spec())[0]
    assert len(wave1) == 2
    assert fleet.placement.assigned == {t: Assignment(NEW, OLD, safety_net=True) if t in wave1 else Assignment(OLD, NEW)
                                        for t in TARGETS}
    await fleet.hours(40, scenario)

    view = await fleet.service.get("c-1")
    assert view.state.phase == "promoted", view.state.outcome
    assert fleet.aliases.champion == NEW and fleet.aliases.refreshes >= 1
    assert fleet.aliases.promotions[0][:2] == (NEW, "campaign:c-1")
    assert fleet.placement.assigned == {}  # released: every device scores the (new) champion
    assert [c.id for c in await sqlite_store.list_campaigns(running_only=True)] == []
    kinds = await audit_kinds(sqlite_store, "c-1")
    assert kinds[0] == "campaign.campaign.started" and kinds[-1] == "campaign.promoted"
    assert kinds.count("campaign.wave.entered") == 3
    assert view.progress.phase == "promoted" and view.progress.fraction == 1.0
    wave2 = [e for e in view.events if e.kind == "gate.passed" and e.message.startswith("wave 2: missed_faults")]
    assert wave2[0].figures["references"] == 1 == wave2[0].figures["matched"]  # the fault both found
    assert seqs_audited(await sqlite_store.list_campaign_audit("c-1")) == collections.Counter(range(len(view.events)))
    assert [c.spec.id for c in await fleet.service.list()] == ["c-1"]


# --- a missed fault rolls the first wave back -------------------------------------------------------------------


async def test_confirmed_fault_missed_in_wave_one_rolls_back_with_bounded_exposure(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    await fleet.hours(7)  # into wave 1
    device = wave_targets(make_spec())[0][0]
    fault = fleet.clock.ms + 2 * HOUR

    async def scenario(t: int) -> None:
        if t == fault + HOUR:  # the champion (safety net behind the canary) finds it, the candidate does not
            await fleet.onset(device, OLD, fault + 5 * MIN)
        if t == fault + 2 * HOUR:  # the technician confirms the paged alert
            await fleet.label(device, fault, fault + HOUR, at=t - 10 * MIN)

    await fleet.hours(4, scenario)
    view = await fleet.service.get("c-1")
    assert view.state.phase == "rolled_back"
    assert "missed_faults" in view.state.outcome
    assert fleet.placement.assigned == {}  # back to the champion, which did not change
    assert fleet.aliases.promotions == [] and fleet.aliases.champion == OLD
    assert len(fleet.placement.ever_live) <= 0.1 * len(TARGETS)
    failed = await sqlite_store.list_audit(action="campaign.gate.failed")
    assert len(failed) == 1 and failed[0].target == "c-1"
    assert device in failed[0].detail and '"missed":1.0' in failed[0].detail  # the figures, as JSON
    assert (await audit_kinds(sqlite_store, "c-1"))[-1] == "campaign.rolled_back"
    await fleet.hours(3)  # a finished campaign is left alone
    assert len(await sqlite_store.list_campaign_audit("c-1")) == len(view.events)


async def test_a_late_verdict_on_an_earlier_wave_still_rolls_back(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    device = wave_targets(make_spec())[0][0]
    fault = T0 + 16 * HOUR  # in wave 1 (6-18 h); only the champion (the safety net) finds it

    async def scenario(t: int) -> None:
        if t == fault + HOUR:
            await fleet.onset(device, OLD, fault + 5 * MIN)
        if t == T0 + 21 * HOUR:  # the verdict comes in wave 2, after wave 1 passed
            await fleet.label(device, fault, fault + HOUR, at=t - 10 * MIN)

    await fleet.hours(20, scenario)
    assert (await fleet.service.get("c-1")).progress.wave == 2
    await fleet.hours(1, scenario)
    view = await fleet.service.get("c-1")
    assert view.state.phase == "rolled_back" and "missed_faults" in view.state.outcome
    assert fleet.placement.assigned == {} and fleet.aliases.champion == OLD


# --- restart in the middle ---------------------------------------------------------------------------------------


class PowerCut(Exception):
    """The platform stops between applying a step and acknowledging it."""


async def run_campaign(path: Path, *, cut_at: int | None) -> tuple[CampaignView, list[AuditRecord], list[str]]:
    """The same campaign, uninterrupted or with a power cut while auditing log entry ``cut_at`` (after its audit
    record was written), then a new platform over the same database resumes it."""
    clock = Clock()

    async def scenario(fleet: Fleet, t: int) -> None:
        await champion_false_alarms(fleet, t)

    async with open_store(f"sqlite:///{path}") as store:
        async def cutting_audit(r: AuditRecord) -> None:
            await store.audit(r)
            if cut_at is not None and r.detail.startswith(f"[{cut_at}]"):
                raise PowerCut

        fleet = fleet_for(store, clock, audit=cutting_audit)
        await fleet.service.start(make_spec(approvals=[]), by="alice")
        placements = []
        try:
            for _ in range(60):
                clock.ms += HOUR
                await scenario(fleet, clock.ms)
                await fleet.service.tick()
                placements.append(dict(fleet.placement.assigned))
        except PowerCut:
            before = dict(fleet.placement.assigned)
            assert (await fleet.service.get("c-1")).state.phase == "wave"
        else:
            assert cut_at is None
            view = await fleet.service.get("c-1")
            return view, await store.list_campaign_audit("c-1"), []
    async with open_store(f"sqlite:///{path}") as store:  # the restarted platform: nothing assigned yet
        fleet = fleet_for(store, clock)
        assert await fleet.service.resume() == 1
        assert fleet.placement.assigned == before  # the placement is back as it was
        resumed = [a for a in (await store.list_campaign_audit("c-1"))]
        while clock.ms < T0 + 60 * HOUR:
            clock.ms += HOUR
            await scenario(fleet, clock.ms)
            await fleet.service.tick()
        view = await fleet.service.get("c-1")
        assert fleet.placement.assigned == {} and fleet.aliases.champion == NEW
        return view, await store.list_campaign_audit("c-1"), [a.action for a in resumed]


async def test_restart_mid_campaign_resumes_placement_and_ends_the_same_way(tmp_path: Path) -> None:
    plain, plain_audit, _ = await run_campaign(tmp_path / "a.db", cut_at=None)
    assert plain.state.phase == "promoted"
    second_wave = next(e.seq for e in plain.events if e.kind == "wave.entered" and e.figures["wave"] == 1.0)
    cut, cut_audit, _ = await run_campaign(tmp_path / "b.db", cut_at=second_wave)
    assert cut.state.phase == "promoted"
    assert [(e.kind, e.ts_ms, e.by) for e in cut.events] == [(e.kind, e.ts_ms, e.by) for e in plain.events]
    # every log entry audited exactly once, the one written just before the cut included
    assert seqs_audited(cut_audit) == collections.Counter(range(len(cut.events)))
    assert [a.action for a in cut_audit] == [a.action for a in plain_audit]


async def test_a_new_process_places_active_campaigns_on_its_first_tick_even_without_resume(
        sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    await fleet.hours(8)  # wave 1
    placed = dict(fleet.placement.assigned)
    again = fleet_for(sqlite_store, fleet.clock)  # resume() failed (or was forgotten): the first tick places
    await again.hours(1)
    assert again.placement.assigned == placed
    assert len(await sqlite_store.list_audit(action="campaign.wave.entered")) == 1


# --- operators ---------------------------------------------------------------------------------------------------


async def test_abort_releases_every_target_and_keeps_the_champion(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    await fleet.hours(8)  # wave 1
    assert any(a.live == NEW for a in fleet.placement.assigned.values())
    view = await fleet.service.abort("c-1", by="carol", reason="line 3 changeover")
    assert view.state.phase == "aborted"
    assert fleet.placement.assigned == {} and fleet.aliases.promotions == []
    [aborted] = await sqlite_store.list_audit(action="campaign.aborted")
    assert aborted.actor == "carol" and "line 3 changeover" in aborted.detail
    with pytest.raises(CampaignStateError):
        await fleet.service.abort("c-1", by="carol", reason="again")
    await fleet.hours(2)
    assert (await fleet.service.get("c-1")).state.phase == "aborted"
    with pytest.raises(NotFoundError):
        await fleet.service.abort("nope", by="carol", reason="")


async def test_a_wave_needing_approval_waits_for_the_operator(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(approvals=[False, True, False]), by="alice")
    await fleet.hours(19)  # shadow (6 h) and wave 1 (12 h) passed
    wave1, wave2 = wave_targets(make_spec())[:2]
    assert (await fleet.service.get("c-1")).state.phase == "awaiting_approval"
    await fleet.hours(24)
    assert (await fleet.service.get("c-1")).state.phase == "awaiting_approval"  # the engine never approves
    assert {d for d, a in fleet.placement.assigned.items() if a.live == NEW} == set(wave1)  # wave 1 kept
    view = await fleet.service.approve("c-1", by="bob")
    assert view.state.phase == "wave" and view.progress.wave == 2
    assert {d for d, a in fleet.placement.assigned.items() if a.live == NEW} == set(wave2)
    [given] = await sqlite_store.list_audit(action="campaign.approval.given")
    assert given.actor == "bob"
    with pytest.raises(CampaignStateError):
        await fleet.service.approve("c-1", by="bob")


async def test_a_refused_version_aborts_the_campaign_cleanly(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    fleet.placement.refuse = {NEW}
    view = await fleet.service.start(make_spec(), by="alice")
    assert view.state.phase == "aborted" and "tampered" in view.state.outcome
    assert fleet.placement.assigned == {} and fleet.aliases.promotions == []
    [aborted] = await sqlite_store.list_audit(action="campaign.aborted")
    assert aborted.actor == "engine" and "tampered" in aborted.detail
    await fleet.hours(2)  # the loop goes on
    fleet.placement.refuse = set()
    assert (await fleet.service.start(make_spec(id="c-2"), by="alice")).state.phase == "shadow"  # subject free


async def test_start_refuses_what_cannot_run(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    with pytest.raises(ConflictError, match="still rolling out"):
        await fleet.service.start(make_spec(id="c-2"), by="bob")
    with pytest.raises(ConflictError, match="already exists"):
        await fleet.service.start(make_spec(subject="detector.fan", from_ref="detector.fan@1",
                                            to_ref="detector.fan@2"), by="bob")
    with pytest.raises(ConfigError, match="no live scores"):  # a gate nothing feeds could never pass
        await fleet.service.start(make_spec(id="c-3", gates={"shift": ScoreShiftGate(reference=[(0.5, 1.0)])}),
                                  by="bob")
    with pytest.raises(ConfigError, match="no probe runner"):
        await fleet.service.start(make_spec(id="c-3", gates={"probes": ProbeGate()}), by="bob")
    with pytest.raises(ConfigError, match="model versions only"):
        await fleet.service.start(make_spec(id="c-3", payload="release"), by="bob")
    with pytest.raises(ConfigError, match="not a version of"):
        await fleet.service.start(make_spec(id="c-3", to_ref="detector.fan@4"), by="bob")
    assert [c.spec.id for c in await fleet.service.list(running_only=True)] == ["c-1"]


async def test_a_placement_failure_is_retried_on_the_next_tick(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    await fleet.service.start(make_spec(), by="alice")
    real_assign = fleet.placement.assign
    failures = 0

    async def flaky(assignments: Mapping[str, Assignment]) -> None:
        nonlocal failures
        if any(a.live == NEW for a in assignments.values()) and failures == 0:
            failures += 1
            raise StoreError("artifact store unreachable")
        await real_assign(assignments)

    fleet.placement.assign = flaky  # type: ignore[method-assign]
    await fleet.hours(6)  # the shadow phase passes; wave 1 cannot be placed yet
    assert failures == 1 and not any(a.live == NEW for a in fleet.placement.assigned.values())
    assert (await fleet.service.get("c-1")).state.phase == "wave"  # what should run is kept
    await fleet.hours(1)
    assert {d for d, a in fleet.placement.assigned.items() if a.live == NEW} == set(wave_targets(make_spec())[0])
    assert (await sqlite_store.list_audit(action="campaign.wave.entered"))[0].detail.startswith("[")
    assert len(await sqlite_store.list_audit(action="campaign.wave.entered")) == 1


async def test_the_loop_outlives_a_failing_tick(sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    fleet = fleet_for(sqlite_store)
    calls = 0
    third = asyncio.Event()

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls == 1:
            raise RuntimeError("a bug in one tick")

    fleet.service.tick = tick  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="edgeloop.campaigns.service"):
        task = asyncio.create_task(fleet.service.run(0))
        await asyncio.wait_for(third.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls >= 3
    assert "campaign tick failed" in caplog.text and "a bug in one tick" in caplog.text


# --- observations ------------------------------------------------------------------------------------------------


async def test_observations_count_false_alarms_outside_confirmed_windows(sqlite_store: Store) -> None:
    fleet = fleet_for(sqlite_store)
    spec = make_spec()
    state = CampaignState(campaign_id="c-1", phase="shadow", wave=-1, phase_start_ms=T0)
    a, b, outsider = TARGETS[0], TARGETS[1], "fan-7"
    await sqlite_store.add_model_findings([
        finding(a, OLD, T0 + HOUR), finding(a, NEW, T0 + 2 * HOUR),  # false alarms
        finding(a, OLD, T0 + 3 * HOUR + 20 * MIN), finding(a, NEW, T0 + 3 * HOUR + 25 * MIN),  # in the fault window
        finding(a, OLD, T0 + 5 * HOUR + 20 * MIN),  # inside the 30 min padding after the fault: not a false alarm
        finding(b, OLD, T0 + 4 * HOUR, kind="data_gap"),  # not the model's doing
        finding(outsider, NEW, T0 + HOUR),  # not a target
        finding(b, "detector.pump@2", T0 + HOUR),  # another version
        finding(b, OLD, T0 - HOUR),  # before the phase
    ])
    await fleet.label(a, T0 + 3 * HOUR, T0 + 5 * HOUR)  # confirmed
    relabelled = await fleet.label(b, T0 + 6 * HOUR, T0 + 7 * HOUR)  # confirmed, then called a false alarm
    await fleet.label(b, T0 + 6 * HOUR, T0 + 7 * HOUR, Verdict.FALSE_ALARM, alert=relabelled, at=T0 + 8 * HOUR)
    now = T0 + 12 * HOUR
    obs = await fleet.service.observe(spec, state, now)
    assert obs["false_alarms"] == RateCounts(challenger_events=1, challenger_exposure=20 * 0.5, champion_events=1,
                                             champion_exposure=20 * 0.5)
    assert obs["missed_faults"] == Episodes(
        champion=[], challenger=[Episode(target=a, start_ms=t, end_ms=t) for t in (T0 + 2 * HOUR,
                                                                                 T0 + 3 * HOUR + 25 * MIN)],
        confirmed=[Episode(target=a, start_ms=T0 + 3 * HOUR, end_ms=T0 + 5 * HOUR)])


@dataclass
class FakeProbes:
    challenger_detects: bool
    calls: list[tuple[int, int]] = field(default_factory=list)  # (now, number of targets)

    async def run(self, spec: CampaignSpec, targets: Sequence[str], now_ms: int) -> ProbeResults:
        self.calls.append((now_ms, len(targets)))
        return ProbeResults(probes=[ProbeResult(target=t, probe="bearing", champion_detected=True,
                                                challenger_detected=self.challenger_detects,
                                                champion_delay_ms=60_000, challenger_delay_ms=90_000)
                                    for t in targets[:3]])


async def test_probes_run_once_per_phase_and_a_missed_probe_rolls_back(sqlite_store: Store) -> None:
    gates = {"missed_faults": make_spec().gates["missed_faults"], "probes": ProbeGate()}
    good = FakeProbes(challenger_detects=True)
    fleet = fleet_for(sqlite_store, probes=good)
    await fleet.service.start(make_spec(gates=gates), by="alice")
    await fleet.hours(19)  # shadow (0-6 h), wave 1 (6-18 h), the first hour of wave 2
    assert [n for _, n in good.calls] == [20, 20, 20]  # once per phase, over every target (synthetic faults)
    assert (await fleet.service.get("c-1")).progress.wave == 2

    bad = FakeProbes(challenger_detects=False)
    other = fleet_for(sqlite_store, probes=bad)
    await other.service.abort("c-1", by="alice", reason="next test")
    await other.service.start(make_spec(id="c-2", gates=gates), by="alice")
    await other.hours(1)
    view = await other.service.get("c-2")
    assert view.state.phase == "rolled_back" and "probe" in view.state.outcome


def scored_run(device: str, start: int, scores: Sequence[float]) -> TelemetryChunk:
    """``len(scores)`` samples a second apart from ``start`` (the values do not matter to the score gate)."""
    ts = start + np.arange(len(scores), dtype=np.int64) * 1000
    return TelemetryChunk(device=device, seq=1, channels=("temp",), ts=ts, values=np.zeros((len(scores), 1)),
                          tenant="acme", asset=f"asset-{device}")


def test_live_scores_keep_a_thinned_bounded_sample_per_version() -> None:
    live = LiveScores(per_version=50, every_ms=10_000, max_versions=2)
    scores = np.full(120, 0.2)
    scores[:15] = np.nan  # not scored yet (warm-up): skipped
    live.observe(scored_run("pump-00", T0, scores), NEW, scores, True)
    kept = live.sample(NEW, ["pump-00"], since_ms=T0)
    assert kept == [0.2] * 11, "one score per 10 s of sample time, from the first scored row (15 s, 25 s, ... 115 s)"
    later = np.full(30, 0.4)  # the next run continues the device's 10 s rhythm
    live.observe(scored_run("pump-00", T0 + 120_000, later), NEW, later, False)
    assert live.sample(NEW, ["pump-00"], since_ms=T0 + 120_000) == [0.4] * 3
    assert live.sample(NEW, ["pump-01"], since_ms=T0) == [], "only the devices asked for"
    for _ in range(10):  # bounded per version: the newest 50
        live.observe(scored_run("pump-00", T0 + 10 * HOUR + _ * 1000 * 600, np.ones(600)), NEW, np.ones(600), True)
    assert len(live.sample(NEW, ["pump-00"], since_ms=0)) == 50
    live.observe(scored_run("pump-00", T0, np.ones(1)), OLD, np.ones(1), True)
    live.observe(scored_run("pump-00", T0, np.ones(1)), "detector.pump@5", np.ones(1), True)
    assert live.sample(NEW, ["pump-00"], since_ms=0) == [], "at most two versions: the least recently fed went"


async def test_the_score_gate_judges_the_candidates_live_scores_on_the_compared_targets(sqlite_store: Store) -> None:
    """A candidate whose live scores sit where its model card says passes; one whose scores are all above its
    threshold (a scaling bug, say) rolls back in its shadow phase."""
    reference = [(0.5, 0.2), (0.9, 0.5), (0.99, 0.9)]
    gates: dict[str, Any] = {"score_shift": ScoreShiftGate(reference=reference, min_samples=100)}
    for cid, level, phase in (("c-good", 0.2, "promoted"), ("c-bad", 3.0, "rolled_back")):
        live = LiveScores()
        fleet = fleet_for(sqlite_store, scores=live)
        await fleet.service.start(make_spec(id=cid, gates=gates, shadow_ms=HOUR, soak_ms=HOUR), by="alice")
        rng = np.random.default_rng(1)

        async def scenario(t: int, level: float = level, live: LiveScores = live,
                           rng: np.random.Generator = rng) -> None:
            for device in TARGETS:
                values = rng.uniform(0.0, 0.45, 360) if level < 1 else rng.uniform(level, level + 1, 360)
                live.observe(scored_run(device, t - HOUR, values), NEW, values, True)

        await fleet.hours(8, scenario)
        view = await fleet.service.get(cid)
        assert view.state.phase == phase, view.events
        if phase == "rolled_back":
            assert "shadow" in view.state.outcome and "score_shift" in view.state.outcome
            assert any("KS 0.990 > 0.3" in e.message for e in view.events), [e.message for e in view.events]


# --- the store (both backends) -----------------------------------------------------------------------------------


def record_of(cid: str, subject: str, *, active: bool = True, created: int = T0) -> CampaignRecord:
    return CampaignRecord(id=cid, payload="model", subject=subject, spec='{"id":"x"}', state='{"phase":"shadow"}',
                          phase="shadow", active=active, created_ms=created, updated_ms=created)


async def test_store_keeps_campaigns(store: Store) -> None:
    await store.add_campaign(record_of("c-1", "detector.pump"))
    await store.add_campaign(record_of("c-2", "detector.fan", created=T0 + 1))
    with pytest.raises(ConflictError, match="still rolling out"):
        await store.add_campaign(record_of("c-3", "detector.pump"))
    with pytest.raises(ConflictError, match="already exists"):
        await store.add_campaign(record_of("c-1", "detector.valve"))
    done = dataclasses.replace(record_of("c-1", "detector.pump", active=False), state='{"phase":"promoted"}',
                                   phase="promoted", updated_ms=T0 + 9, spec="")
    await store.put_campaign(done)
    got = await store.get_campaign("c-1")
    assert got == dataclasses.replace(done, spec='{"id":"x"}')  # the spec is never rewritten
    assert [c.id for c in await store.list_campaigns()] == ["c-2", "c-1"]
    assert [c.id for c in await store.list_campaigns(running_only=True)] == ["c-2"]
    await store.add_campaign(record_of("c-3", "detector.pump", created=T0 + 2))  # the subject is free again
    with pytest.raises(NotFoundError):
        await store.put_campaign(record_of("c-9", "detector.pump"))
    assert await store.get_campaign("c-9") is None
    await store.audit(AuditRecord(ts_ms=T0, actor="alice", action="campaign.campaign.started", target="c-1",
                                  outcome="ok", detail="[0] roll"))
    await store.audit(AuditRecord(ts_ms=T0, actor="alice", action="model.promoted", target="c-1", outcome="ok"))
    await store.audit(AuditRecord(ts_ms=T0, actor="alice", action="campaign.aborted", target="c-2", outcome="ok"))
    assert [a.detail for a in await store.list_campaign_audit("c-1")] == ["[0] roll"]


async def test_store_lists_model_onsets_for_the_gates(store: Store) -> None:
    await store.add_model_findings([finding("p1", NEW, T0 + 2), finding("p2", OLD, T0 + 1),
                                    finding("p1", OLD, T0 + 3, kind="data_gap"), finding("p1", "detector.fan@1", T0),
                                    finding("p3", NEW, T0 + 10), finding("p3", NEW, T0 - 1)])
    assert await store.list_model_onsets(models=[OLD, NEW], kind="anomaly", since=T0, until=T0 + 10) == [
        (OLD, "p2", T0 + 1), (NEW, "p1", T0 + 2)]
    assert await store.list_model_onsets(models=[], kind="anomaly", since=T0, until=T0 + 10) == []
