"""``edgeloop eval loop``: the closed learning loop, end to end, on a simulated fleet through the real platform.

The fleet publishes over MQTT into a platform with its own PKI (embedded broker, SQLite store, alert service,
model registry, drift monitoring, retraining policy, training jobs, campaign engine) at accelerated time; simulated
technicians answer every alert from the simulator's ground truth after a realistic delay, with a small error rate.
The runner only plays the world: the regime change, the faults, the technicians and one operator; everything else
is the platform's own loop.

The story (times from the regime change ``T``):

1. Until ``T`` the fleet is normal: every device's built-in detector (version 0) learns from its own data.
2. At ``T`` part of the fleet starts a new product run (other speed levels, a warmer bearing): the champion
   false-alarms there; technicians call those alarms false alarms.
3. The drift monitor sees the change; the retraining policy (automatic) waits for ``min_post_drift_h`` of the new
   normal, trains a candidate on it with the labels, and, when its model card says it is better, rolls it out:
   shadow, then canary waves, each gated (false alarms by a sequential test, missed faults, known-answer probes).
4. True faults come after ``T``: on unchanged devices during the rollout, on changed devices after it.
5. After ``after_promotion_h`` an operator trains a candidate *ignoring the labels* on a window that holds a
   developing fault, and pushes it out: it must be stopped in its shadow phase or first wave, and rolled back.
6. Then a version's artifact is changed on disk: the platform must refuse to load it.
7. Finally, in real time, the edge story (``edge_story.py``): real agents on ``edge_gateways`` gateways get a good
   edge model version (promoted) and a miscalibrated one (reverted by a gateway's guardrail, rolled back).

The outcome (``--json``): ``drift_detected_min``, ``false_alarms_per_100_machine_days_before`` / ``_after``,
``fault_recall_after``, ``promoted``, ``promotion_hours``, ``bad_candidate_max_share``,
``bad_candidate_rolled_back``, ``rollback_min``, ``missed_faults_during_rollout``, ``tampered_artifact_refused``,
``lineage_complete``, the edge story's ``edge_*`` figures, and the figures behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.app import Platform, PlatformConfig
from edgeloop.broker import free_port
from edgeloop.campaigns.service import CampaignView
from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import EdgeLoopError
from edgeloop.evaluation.edge_story import run_edge_story
from edgeloop.messages import Alert
from edgeloop.models.manifest import ModelRef, Trigger
from edgeloop.models.retraining import PolicySet
from edgeloop.models.rollout import RolloutPlan, start_rollout
from edgeloop.sim.fleet import FaultKind, FaultSpec, Fleet, RegimeKind, RegimeSpec
from edgeloop.sim.publisher import FleetPublisher
from edgeloop.sim.register import register_fleet
from edgeloop.sim.technicians import FleetTruth, SimulatedTechnicians, TechnicianPolicy

__all__ = ["LoopConfig", "run_loop"]

_MIN = 60_000
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR
Progress = Callable[[str, float, dict[str, Any]], None]  # phase, fraction done, figures


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    seed: int = 1
    devices: int = 20
    change_h: float = 8.0  # the regime change: after the built-in detector has calibrated (6 h 20 min)
    changed_fraction: float = 0.4
    min_post_drift_h: float = 6.0  # the policy trains on this much of the new normal (3 h left thermal transients)
    shadow_h: float = 2.0
    soak_h: float = 2.0
    waves: tuple[float, ...] = (0.1, 0.5, 1.0)
    after_promotion_h: float = 12.0
    deadline_h: float = 30.0  # after the change: a loop that has not promoted by then has failed
    technician_error_rate: float = 0.03
    step_min: float = 10.0
    edge_gateways: int = 3  # real agents running an edge model, for the edge story (0: none)
    edge_soak_s: float = 15.0  # each wave of an edge campaign, in real time (longer than the guard's 10 windows)
    tenant: str = "plant"
    data_dir: Path | None = None


@dataclass
class _Run:
    cfg: LoopConfig
    platform: Platform
    fleet: Fleet
    pub: FleetPublisher
    technicians: SimulatedTechnicians
    change_ms: int
    changed: set[str]
    fault_plan: dict[str, FaultSpec]
    step_ms: int
    report: Progress
    exposure: dict[str, float] = field(default_factory=dict)  # campaign id -> largest share on the candidate

    async def advance(self, until_ms: int) -> None:
        """Publish simulated time up to ``until_ms`` in steps; after each step the platform catches up, then the
        technicians, the learning loop and the campaigns take their turn (each on the platform's data clock)."""
        while self.fleet.now_ms < until_ms:
            await self.pub.run_until(min(until_ms, self.fleet.now_ms + self.step_ms), step_ms=self.step_ms)
            await self.settle()

    async def settle(self) -> None:
        p = self.platform
        await asyncio.wait_for(p.pipeline.wait_handled(self.pub.stats.messages), 120)
        await p.idle(60)
        await p.alerts.tick()
        await p.drift.settle()
        await self.technicians.step()
        await p.learning.tick()
        await p.campaigns.tick()
        for view in await p.campaigns.list(running_only=False):
            share = view.progress.fraction
            self.exposure[view.spec.id] = max(self.exposure.get(view.spec.id, 0.0), share)

    async def wait_for(self, done: Callable[[], Any], limit_ms: int) -> bool:
        while self.fleet.now_ms < limit_ms:
            if await done():
                return True
            await self.advance(min(limit_ms, self.fleet.now_ms + self.step_ms))
        return bool(await done())


async def run_loop(cfg: LoopConfig, *, progress: Progress | None = None, clock: Clock | None = None) -> dict[str, Any]:
    """Run the story above; its figures."""
    clock = clock or SystemClock()
    report = progress or (lambda _p, _f, _d: None)
    with contextlib.ExitStack() as stack:
        data_dir = cfg.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-loop-")))
        (data_dir / "retraining.yaml").write_text(_policies(cfg))
        pcfg = PlatformConfig(data_dir=data_dir / "platform", mqtt_port=free_port(), http_port=None,
                              pki_dir=data_dir / "pki", create_pki=True,
                              retraining=data_dir / "retraining.yaml",
                              rollout=RolloutPlan(waves=list(cfg.waves), shadow_h=cfg.shadow_h, soak_h=cfg.soak_h))
        async with Platform(pcfg, clock=clock) as platform:
            return await _story(cfg, platform, clock, report)
    raise AssertionError("unreachable")


def _policies(cfg: LoopConfig) -> str:
    lines = ["policies:"]
    for profile in ("pump-v1", "motor-v1"):
        lines += [f"  - profile: {profile}", "    mode: automatic", "    drift_kinds: [input]",
                  "    min_new_labels: 0", f"    min_post_drift_h: {cfg.min_post_drift_h}",
                  f"    cooldown_h: {cfg.deadline_h}"]
    return "\n".join(lines) + "\n"


async def _story(cfg: LoopConfig, platform: Platform, clock: Clock, report: Progress) -> dict[str, Any]:
    started = clock.monotonic()
    total_h = cfg.change_h + cfg.deadline_h + cfg.after_promotion_h + 12.0
    start = clock.now_ms() // _MIN * _MIN - int(total_h * _HOUR)
    change = start + int(cfg.change_h * _HOUR)
    probe = Fleet(devices=cfg.devices, faulty=0, seed=cfg.seed, start_ms=start, duration_ms=int(total_h * _HOUR),
                  regimes=[RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=change, fraction=cfg.changed_fraction,
                                      seed=cfg.seed)])
    changed = {r.device_id for r in probe.regime_changes()}
    order = [i for i, d in enumerate(probe.devices) if d.device_id not in changed]
    changed_idx = [i for i, d in enumerate(probe.devices) if d.device_id in changed]
    # true faults: two on unchanged devices while the candidate is rolled out, two on changed devices after it is
    # expected to be promoted, and one slow bearing wear the operator's bad candidate will learn as normal
    rollout_mid = change + int((1.0 + cfg.min_post_drift_h + cfg.shadow_h + cfg.soak_h) * _HOUR)
    promoted_by = change + int((1.5 + cfg.min_post_drift_h + cfg.shadow_h + cfg.soak_h * len(cfg.waves)) * _HOUR)
    plan: dict[int, FaultSpec] = {}
    kinds = [FaultKind.BEARING_WEAR, FaultKind.CAVITATION, FaultKind.OVERHEATING, FaultKind.CAVITATION]
    for k, i in enumerate(order[:2]):
        plan[i] = FaultSpec(kind=kinds[k], start_ms=rollout_mid + k * _HOUR)
    for k, i in enumerate(changed_idx[:2]):
        plan[i] = FaultSpec(kind=kinds[2 + k], start_ms=promoted_by + (2 + 3 * k) * _HOUR)
    bad_device = order[2]
    bad_fault_ms = promoted_by + int(cfg.after_promotion_h * _HOUR) - 3 * _HOUR
    plan[bad_device] = FaultSpec(kind=FaultKind.BEARING_WEAR, start_ms=bad_fault_ms)
    fleet = Fleet(devices=cfg.devices, faulty=0, seed=cfg.seed, start_ms=start, duration_ms=int(total_h * _HOUR),
                  regimes=[RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=change, fraction=cfg.changed_fraction,
                                      seed=cfg.seed)], fault_schedule=plan)
    await register_fleet(platform.registry, fleet, tenant=cfg.tenant)
    platform.alerts.replay_from(start)
    technicians = SimulatedTechnicians(
        policy=TechnicianPolicy(seed=cfg.seed, error_rate=cfg.technician_error_rate), truth=FleetTruth(fleet),
        alerts=lambda: platform.store.list_alerts(unresolved=True, limit=1000), feedback=platform.alerts.feedback,
        data_now=platform.data_now_ms)
    async with FleetPublisher(fleet=fleet, host=platform.config.mqtt_host, port=platform.config.mqtt_port,
                              tenant=cfg.tenant, samples_per_message=60,
                              wait_handled=platform.pipeline.wait_handled) as pub:
        run = _Run(cfg=cfg, platform=platform, fleet=fleet, pub=pub, technicians=technicians, change_ms=change,
                   changed=changed, fault_plan={fleet.devices[i].device_id: f for i, f in plan.items()},
                   step_ms=int(cfg.step_min * _MIN), report=report)
        report("normal", 0.0, {"devices": cfg.devices, "changed": len(changed)})
        await run.advance(change)
        report("change", 0.1, {})
        promoted = await run.wait_for(lambda: _promoted(platform), change + int(cfg.deadline_h * _HOUR))
        promoted_ms = await _promotion_ms(platform) if promoted else None
        report("promoted" if promoted else "not promoted", 0.6, {"at_h": _hours(promoted_ms, change)})
        after_end = (promoted_ms or fleet.now_ms) + int(cfg.after_promotion_h * _HOUR)
        await run.advance(min(after_end, fleet.end_ms))
        bad = await _bad_candidate(run, fleet.devices[bad_device].device_id, bad_fault_ms)
        tampered = await _tampered(platform, bad.get("ref"))
        outcome = await _outcome(run, promoted_ms, after_end, bad, tampered)
    if cfg.edge_gateways:
        # the edge story runs in real time: the replay of simulated history is over (alerting follows the clock
        # again, as ``edgeloop up`` does once its replay caught up), and the operator turns the detectors'
        # retraining policy off first (its windows would span the jump from the fleet's simulated past to now)
        platform.alerts.replaying = False
        platform.learning.policies = PolicySet()
        outcome |= await run_edge_story(platform, tenant=cfg.tenant, data_dir=platform.config.data_dir,
                                        seed=cfg.seed, gateways=cfg.edge_gateways, soak_s=cfg.edge_soak_s,
                                        report=report)
    outcome["wall_seconds"] = round(clock.monotonic() - started, 1)
    return outcome


async def _promoted(platform: Platform) -> bool:
    return any(v.state.phase == "promoted" for v in await platform.campaigns.list())


async def _promotion_ms(platform: Platform) -> int | None:
    times = [e.ts_ms for v in await platform.campaigns.list() for e in v.events if e.kind == "promoted"]
    return min(times) if times else None


def _hours(ms: int | None, since: int) -> float | None:
    return None if ms is None else round((ms - since) / _HOUR, 2)


async def _bad_candidate(run: _Run, device: str, fault_ms: int) -> dict[str, Any]:
    """An operator trains on a window holding a developing fault, without the labels, and pushes it out."""
    p = run.platform
    profile = p.registry.registry.devices[device].profile
    now = run.fleet.now_ms
    # the window starts after the fault began: the whole reference is the worn machine, learnt as its normal
    job = await p.training.plan(profile=profile, start_ms=max(fault_ms + 20 * _MIN, now - 6 * _HOUR), end_ms=now,
                                trigger=Trigger(kind="person", by="operator", ref="pushed by hand"),
                                use_labels=False)
    try:
        manifest = await p.training.run(job)
    except EdgeLoopError as exc:
        return {"error": f"the bad candidate could not be trained: {exc}"}
    ref = str(manifest.ref)
    try:
        view = await start_rollout(campaigns=p.campaigns, models=p.models, registry=p.registry.registry, ref=ref,
                                   plan=p.config.rollout, by="operator", now_ms=p.alerts.now(), probes=p.probes)
    except EdgeLoopError as exc:
        return {"ref": ref, "error": f"the bad candidate could not be rolled out: {exc}"}
    started = p.alerts.now()
    cid = view.spec.id

    async def ended() -> bool:
        return (await p.campaigns.get(cid)).state.phase in {"promoted", "rolled_back", "aborted"}

    limit = run.fleet.now_ms + int((run.cfg.shadow_h + run.cfg.soak_h * len(run.cfg.waves) + 6) * _HOUR)
    await run.wait_for(ended, min(limit, run.fleet.end_ms))
    final = await p.campaigns.get(cid)
    back = [e.ts_ms for e in final.events if e.kind in {"rolled_back", "aborted"}]
    return {"ref": ref, "campaign": cid, "phase": final.state.phase, "card_verdict": manifest.card.get("verdict"),
            "max_share": run.exposure.get(cid, 0.0), "rolled_back": final.state.phase in {"rolled_back", "aborted"},
            "rollback_min": round((min(back) - started) / _MIN, 1) if back else None,
            "why": [e.message for e in final.events if e.kind == "gate.failed"][:3]}


async def _tampered(platform: Platform, ref: str | None) -> dict[str, Any]:
    """A version's artifact changed on disk: loading it must be refused (and audited)."""
    if ref is None:
        return {"refused": False, "why": "no version to tamper with"}
    manifest = await platform.models.get(ref)
    path = platform.models.artifacts.path(manifest.artifact_sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    try:
        await platform.models.load(ModelRef.parse(ref), by="eval")
    except EdgeLoopError as exc:
        audited = [a for a in await platform.store.list_audit(action="model.refused") if a.target == ref]
        return {"refused": True, "code": getattr(exc, "code", ""), "audited": bool(audited)}
    return {"refused": False}


def _false_alarm(run: _Run, a: Alert) -> bool:
    inspection = FleetTruth(run.fleet).inspect(device=a.device, asset=a.asset, start_ms=a.first_seen - 5 * _MIN,
                                                end_ms=a.last_seen)
    return inspection.fault is None


async def _outcome(run: _Run, promoted_ms: int | None, after_end: int, bad: dict[str, Any],
                   tampered: dict[str, Any]) -> dict[str, Any]:
    p, fleet, change = run.platform, run.fleet, run.change_ms
    alerts = await p.store.list_alerts(limit=100_000)
    drift = sorted(e.detected_ms for e in await p.store.list_drift_events(limit=100_000)
                   if e.device in run.changed and e.detected_ms >= change)
    n = len(fleet.devices)
    end_before = promoted_ms or fleet.now_ms

    def per_100_days(lo: int, hi: int) -> float | None:
        if hi <= lo:
            return None
        count = sum(1 for a in alerts if lo <= a.first_seen < hi and _false_alarm(run, a))
        return round(100.0 * count / (n * (hi - lo) / _DAY), 2)

    settle = 30 * _MIN  # the first alerts after a promotion may still be the champion's (merged) episodes
    faults_after = [(d, f) for d, f in run.fault_plan.items() if f.start_ms >= change]
    found = {d: any(a.device == d and a.first_seen >= f.start_ms for a in alerts) for d, f in faults_after}
    campaigns = await p.campaigns.list()
    good = next((v for v in campaigns if v.state.phase == "promoted"), None)
    during = _missed_during(campaigns, alerts, faults_after)
    lineage = await p.models.lineage_complete(good.spec.to_ref) if good is not None else False
    return {
        "seed": run.cfg.seed, "devices": n, "changed_devices": len(run.changed),
        "drift_detected_min": round((drift[0] - change) / _MIN, 1) if drift else None,
        "false_alarms_per_100_machine_days_before": per_100_days(change, end_before),
        "false_alarms_per_100_machine_days_after": (per_100_days(promoted_ms + settle, after_end)
                                                    if promoted_ms is not None else None),
        "fault_recall_after": round(sum(found.values()) / len(found), 3) if found else None,
        "faults_after_change": {d: {"kind": f.kind.value, "found": found[d]} for d, f in faults_after},
        "promoted": promoted_ms is not None, "promotion_hours": _hours(promoted_ms, change),
        "promoted_version": good.spec.to_ref if good is not None else None,
        "bad_candidate_max_share": bad.get("max_share"), "bad_candidate_rolled_back": bad.get("rolled_back", False),
        "rollback_min": bad.get("rollback_min"), "bad_candidate": bad,
        "missed_faults_during_rollout": during,
        "tampered_artifact_refused": bool(tampered.get("refused")), "tampered": tampered,
        "lineage_complete": lineage,
        "campaigns": [_campaign(v) for v in campaigns],
        "labels": len(await p.store.list_labels()), "alerts": len(alerts),
        "technicians": dataclasses.asdict(run.technicians.stats),
    }


def _missed_during(campaigns: list[CampaignView], alerts: list[Alert], faults: list[tuple[str, FaultSpec]]) -> int:
    """Faults that began on a campaign's device while it ran and never got an alert on that device afterwards (a
    slow fault found after the campaign ended was not missed: overheating takes hours to show)."""
    missed = 0
    for device, fault in faults:
        during = any(device in v.spec.targets and v.spec.created_ms <= fault.start_ms
                     <= (v.progress.ended_ms or v.state.phase_start_ms) for v in campaigns)
        if during and not any(a.device == device and a.last_seen >= fault.start_ms for a in alerts):
            missed += 1
    return missed


def _campaign(v: CampaignView) -> dict[str, Any]:
    return {"id": v.spec.id, "from": v.spec.from_ref, "to": v.spec.to_ref, "phase": v.state.phase,
            "by": v.spec.created_by, "events": [f"{e.kind}: {e.message}" for e in v.events][-12:]}
