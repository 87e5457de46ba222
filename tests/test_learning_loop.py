"""The learning loop on a real platform (PKI, embedded broker, SQLite), driven through the command line: a candidate
trained from stored data, rolled out through shadow and a canary wave, the platform restarted in the middle of the
campaign (it resumes where it was: the same devices run the candidate), then promoted; every alert names the
version that raised it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner, Result

from edgeloop.app import Platform, PlatformConfig
from edgeloop.cli import app
from edgeloop.clock import ManualClock
from edgeloop.scoring import Assignment
from edgeloop.sim.fleet import Fleet
from edgeloop.sim.publisher import FleetPublisher
from edgeloop.sim.register import register_fleet
from tests.support import free_port

HOUR = 3_600_000
START = 1_796_400_000_000
PROFILE = "pump-v1"


async def _publish(platform: Platform, clock: ManualClock, fleet: Fleet, until: int) -> None:
    """The fleet's samples up to ``until`` into the platform as they happen (the platform's clock follows them),
    then the campaigns' turn."""
    async with FleetPublisher(fleet=fleet, host=platform.config.mqtt_host, port=platform.config.mqtt_port,
                              tenant="plant", samples_per_message=60,
                              wait_handled=platform.pipeline.wait_handled) as pub:
        while fleet.now_ms < until:
            step = min(until, fleet.now_ms + 600_000)
            clock.advance(step - clock.now_ms())
            await pub.run_until(step, step_ms=600_000)
            await asyncio.wait_for(platform.pipeline.wait_handled(pub.stats.messages), 60)
            await platform.idle(30)
            await platform.campaigns.tick()
        assert await pub.drain(30)


def _placement(platform: Platform, devices: list[str]) -> dict[str, Assignment]:
    profile = platform.registry.registry.profiles[PROFILE]
    return {d: platform.deployment.assignment(d, profile) for d in devices}


async def test_a_candidate_is_trained_rolled_out_resumed_after_a_restart_and_promoted(tmp_path: Path) -> None:
    runner = CliRunner()
    fleet = Fleet(devices=8, faulty=0, seed=3, start_ms=START, duration_ms=20 * HOUR)
    pumps = sorted(d.device_id for d in fleet.devices if d.profile == PROFILE)
    cfg = PlatformConfig(data_dir=tmp_path / "data", mqtt_port=free_port(), http_port=free_port(),
                         pki_dir=tmp_path / "pki", create_pki=True)

    clock = ManualClock(START)
    async with Platform(cfg, clock=clock) as platform:
        url = platform.http_url
        assert url is not None

        async def run(*args: str) -> Result:  # the CLI blocks on HTTP; the server runs on this loop
            return await asyncio.to_thread(runner.invoke, app, [*args, "--url", url], catch_exceptions=False)

        await register_fleet(platform.registry, fleet, tenant="plant")
        await _publish(platform, clock, fleet, START + 10 * HOUR)

        trained = await run("models", "train", "--profile", PROFILE, "--hours", "3", "--json")
        assert trained.exit_code == 0, trained.output
        job = json.loads(trained.stdout)
        assert (job["state"], job["version"]) == ("done", f"detector.{PROFILE}@1"), job
        shown = json.loads((await run("models", "show", f"detector.{PROFILE}@1", "--json")).stdout)
        manifest = shown.get("manifest", shown)
        assert manifest["parent"] == f"detector.{PROFILE}@0" and manifest["data"]["devices"] == pumps
        assert set(manifest["card"]["drift_reference"]) == set(pumps)  # what drift compares against once it runs
        # with the score bins of the candidate's held-out scores: drift judges its live scores' shift too
        assert all(r["score_quantiles"] and r["score_limit"] is not None
                   for r in manifest["card"]["drift_reference"].values())
        lineage = json.loads((await run("models", "lineage", f"detector.{PROFILE}@1", "--json")).stdout)
        assert lineage["complete"] is True

        started = await run("campaigns", "start", f"detector.{PROFILE}@1", "--waves", "0.5,1",
                            "--shadow-hours", "0.5", "--soak-hours", "0.5", "--score-shift", "1", "--json")
        assert started.exit_code == 0, started.output
        cid = json.loads(started.stdout)["spec"]["id"]
        await _publish(platform, clock, fleet, START + 10 * HOUR + 50 * 60_000)  # past the shadow phase, into wave 1
        view = await platform.campaigns.get(cid)
        assert (view.state.phase, view.progress.wave) == ("wave", 1), view.progress
        before = _placement(platform, pumps)
        live = {d for d, a in before.items() if a.live.endswith("@1")}
        assert 0 < len(live) < len(pumps)
        assert all(a.safety_net and a.shadow == f"detector.{PROFILE}@0" for d, a in before.items() if d in live)

    async with Platform(cfg, clock=clock) as platform:  # a restart in the middle of the wave
        assert _placement(platform, pumps) == before, "the restarted platform places the campaign as it was"
        assert (await platform.campaigns.get(cid)).state.phase == "wave"
        await _publish(platform, clock, fleet, START + 12 * HOUR)
        view = await platform.campaigns.get(cid)
        assert view.state.phase == "promoted", [e.message for e in view.events]
        assert str(await platform.models.champion(f"detector.{PROFILE}")) == f"detector.{PROFILE}@1"
        assert all(a == Assignment(f"detector.{PROFILE}@1") for a in _placement(platform, pumps).values())
        kinds = [e.kind for e in view.events]
        assert kinds.count("wave.entered") == 2 and kinds[-1] == "promoted"
        # the score gate (asked for, at KS 1: it passes once fed) judged the scoring stage's live scores, per phase
        shifts = [e.figures for e in view.events if e.kind == "gate.passed" and "score_shift" in e.message]
        assert len(shifts) == 3 and all(f["samples"] >= 200 and 0 <= f["distance"] <= 1 for f in shifts), shifts
        audited = [a.detail for a in await platform.store.list_audit(action="campaign.wave.entered", limit=100)]
        assert len(audited) == 2, "each step is audited once, across the restart"


async def test_a_device_counts_as_faulty_only_while_the_newest_verdict_on_its_open_alert_is_a_fault() -> None:
    """A confirmation corrected to a false alarm (a repair visit found nothing) leaves the device's data normal:
    the loop retrains it again; a confirmation that stands keeps it out while the alert is open."""
    from types import SimpleNamespace

    from edgeloop.models.loop import LearningLoop
    from edgeloop.store.alerting import Label, Verdict

    now = 1_767_225_600_000

    def lab(alert: int, device: str, verdict: Verdict, ts: int) -> Label:
        return Label(alert=alert, incident=None, tenant="acme", asset=f"asset-{device}", device=device,
                     rule="anomaly", verdict=verdict, fault_type="", reason="", start_ms=now - 9_000_000,
                     end_ms=now - 8_000_000, first_seen=now - 9_000_000, last_seen=now - 8_000_000, peak=2.0,
                     model_version="detector.pump-v1@0", by="tech", ts=ts)

    labels = [lab(1, "d1", Verdict.CONFIRMED, now - 7_000_000), lab(1, "d1", Verdict.FALSE_ALARM, now - 1_000),
              lab(2, "d2", Verdict.CONFIRMED, now - 7_000_000), lab(3, "d3", Verdict.CONFIRMED, now - 7_000_000)]

    class Store:
        async def list_alerts(self, **_: object) -> list[SimpleNamespace]:
            return [SimpleNamespace(id=1), SimpleNamespace(id=2)]  # alert 3 is resolved

        async def list_labels(self, **_: object) -> list[Label]:
            return labels

    loop = LearningLoop.__new__(LearningLoop)
    loop.store, loop.now = Store(), lambda: now  # type: ignore[assignment]
    assert await loop._open_faults() == {"d2"}
