"""The edge part of ``edgeloop eval loop``: real agents on simulated gateways run a signed edge model, and the
platform's campaigns roll new versions of it out to them, in real time.

After the detector story (which runs on simulated time), ``gateways`` in-process edge agents (the real
``Agent``: simulator source, durable journal, MQTT uplink to the platform's broker, signed model slots, probation
guardrail) each watch one simulated pump with version 1 of an ONNX edge model (``train_edge_model`` on healthy
history of that pump), registered, signed and promoted in the platform's registry. Then:

1. **A good candidate**, version 2 (the same recipe on a longer history), is rolled out by the platform
   (``start_rollout``: waves over the gateways, each soaking ``soak_s`` seconds, gated on installs kept, latency
   and CPU, alarm rate): it must be promoted, every gateway running it.
2. **A bad candidate**, version 3 (version 2 with its threshold set at the 10th percentile of healthy scores, so
   it alarms on nine healthy windows in ten), is rolled out the same way: the first wave's gateway reverts it by
   its own guardrail, the install gate fails, the campaign rolls back; it must never run beyond the first wave.

The figures: ``edge_promoted``, ``edge_promotion_s``, ``edge_bad_max_share``, ``edge_bad_rolled_back``,
``edge_rollback_s`` and, per gateway, the version it runs at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.agent.config import parse_config
from edgeloop.agent.gateway_kit import SIM_PROFILE, sim_profile, sim_serials
from edgeloop.agent.inference import sliding_features, train_edge_model
from edgeloop.agent.runner import Agent, cancel_all
from edgeloop.app import Platform
from edgeloop.assets import Asset, Device, Line, Site
from edgeloop.campaigns.service import CampaignView
from edgeloop.errors import ConfigError
from edgeloop.models.edge_rollout import gateways_running
from edgeloop.models.manifest import Trigger
from edgeloop.models.rollout import RolloutPlan, start_rollout
from edgeloop.sim import CHANNELS
from edgeloop.sim.fleet import Fleet

__all__ = ["EDGE_MODEL", "run_edge_story"]

EDGE_MODEL = "edge.sim-pump"
_HOUR = 3_600_000
WINDOW_S = 5.0  # the edge model's feature window: a new version scores 5 s after it is installed, then every 0.5 s
Report = Callable[[str, float, dict[str, Any]], None]


def _history(seed: int, start_ms: int, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """Healthy samples (1 Hz) of the gateways' simulated pump over its first ``hours`` after a start at
    ``start_ms``: an agent's simulator starts its machines cold, so their first hours are the normal it shows (a
    simulated day, as the agent's simulator draws it: the load schedule is drawn over the fleet's duration)."""
    fleet = Fleet(devices=1, faulty=0, seed=seed, start_ms=start_ms, duration_ms=24 * _HOUR, period_ms=1000)
    ts: list[int] = []
    rows: list[list[float]] = []
    for chunk in fleet.advance(start_ms + int(hours * _HOUR)):
        for sample in chunk.samples(CHANNELS):
            ts.append(sample.ts)
            rows.append([np.nan if (v := sample.values.get(c)) is None else float(v) for c in CHANNELS])
    return np.asarray(ts, dtype=np.int64), np.asarray(rows, dtype=np.float64)


def _miscalibrated(model: bytes, ts: np.ndarray, values: np.ndarray) -> bytes:
    """``model`` with its threshold at the 10th percentile of its scores on healthy data (a bad candidate)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load_model_from_string(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feats = sliding_features(ts, values, float(meta["edgeloop.window_s"]), 1.0).astype(np.float32)
    out = session.run([meta["edgeloop.score_output"]], {session.get_inputs()[0].name: feats})[0]
    scores = float(meta.get("edgeloop.score_sign", "1")) * np.asarray(out, dtype=np.float64).reshape(-1)
    for prop in proto.metadata_props:
        if prop.key == "edgeloop.threshold":
            prop.value = repr(float(np.percentile(scores, 10)))
    buf = io.BytesIO()
    onnx.save_model(proto, buf)
    return buf.getvalue()


async def _register_gateways(platform: Platform, tenant: str, names: list[str], device: str) -> None:
    service = platform.registry
    await service.put_profile(sim_profile())
    if "edge-site" not in service.registry.sites:
        await service.create(Site(id="edge-site", tenant=tenant, name="edge gateways"))
        await service.create(Line(id="edge-line", site="edge-site", name="edge gateways"))
    for name in names:
        for dev in (f"{name}-gw", f"{name}-{device}"):
            if dev not in service.registry.devices:
                await service.create(Asset(id=dev, line="edge-line", kind="pump", name=dev))
                await service.create(Device(id=dev, tenant=tenant, asset=dev, profile=SIM_PROFILE, name=dev))


@contextlib.asynccontextmanager
async def _agents(configs: list[str]) -> AsyncIterator[list[Agent]]:
    agents = [Agent(parse_config(text, origin="agent.yaml")) for text in configs]
    tasks = [asyncio.create_task(a.run(drain_s=0.5), name=f"edge-agent-{i}") for i, a in enumerate(agents)]
    try:
        yield agents
    finally:
        await cancel_all(tasks)


async def _wait(done: Callable[[], Any], *, timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await done():
            return True
        await asyncio.sleep(every_s)
    return bool(await done())


async def _running(platform: Platform, gateways: list[str]) -> dict[str, int | None]:
    """The edge model's version each gateway's latest heartbeat reports."""
    beats = await gateways_running(platform.store, EDGE_MODEL)
    return {gw: beats[gw].models[EDGE_MODEL].version if gw in beats else None for gw in gateways}


async def _campaign(platform: Platform, ref: str, plan: RolloutPlan, *, timeout_s: float,
                    gateways: list[str]) -> tuple[CampaignView, float, float]:
    """Roll ``ref`` out and wait for the end; the campaign, its duration (s) and the largest share of the gateways
    whose heartbeat said they ran ``ref``."""
    assert platform.models is not None
    version = int(ref.rpartition("@")[2])
    started = time.monotonic()
    view = await start_rollout(campaigns=platform.campaigns, models=platform.models,
                               registry=platform.registry.registry, ref=ref, plan=plan, by="operator",
                               now_ms=platform.alerts.now())
    largest = 0.0

    async def over() -> bool:
        nonlocal largest, view
        running = await _running(platform, gateways)
        largest = max(largest, sum(v == version for v in running.values()) / len(gateways))
        view = await platform.campaigns.get(view.spec.id)
        return view.state.phase in {"promoted", "rolled_back", "aborted"}

    await _wait(over, timeout_s=timeout_s)
    return view, time.monotonic() - started, largest


async def run_edge_story(platform: Platform, *, tenant: str, data_dir: Path, seed: int, gateways: int = 3,
                         soak_s: float = 15.0, report: Report | None = None) -> dict[str, Any]:
    """Run the story above on ``platform`` (started, its broker without TLS); its figures."""
    if gateways < 2:
        raise ConfigError(f"the edge story needs at least 2 gateways (a wave and its control), not {gateways}")
    say = report or (lambda _p, _f, _d: None)
    assert platform.models is not None and platform.config.pki_dir is not None
    names = [f"edge{k + 1}" for k in range(gateways)]
    device = sim_serials(1, seed)[0]
    await _register_gateways(platform, tenant, names, device)
    week_ago = (int(time.time() * 1000) - 7 * 24 * _HOUR) // 1000 * 1000  # the same time of day
    ts, values = await asyncio.to_thread(_history, seed, week_ago, 6.0)
    short = ts < week_ago + 2 * _HOUR
    v1 = await asyncio.to_thread(train_edge_model, ts[short], values[short], list(CHANNELS), window_s=WINDOW_S)
    v2 = await asyncio.to_thread(train_edge_model, ts, values, list(CHANNELS), window_s=WINDOW_S)
    v3 = await asyncio.to_thread(_miscalibrated, v2, ts[short], values[short])
    trigger = Trigger(kind="person", by="operator", ref="eval loop: edge story")
    m1 = await platform.models.register("edge", EDGE_MODEL, v1, by="operator", trigger=trigger)
    await platform.models.promote(m1.ref, by="operator", reason="the version the gateways run")
    m2 = await platform.models.register("edge", EDGE_MODEL, v2, by="operator", trigger=trigger, parent=m1.ref)
    m3 = await platform.models.register("edge", EDGE_MODEL, v3, by="operator", trigger=trigger, parent=m2.ref)
    folder = data_dir / "edge"
    folder.mkdir(parents=True, exist_ok=True)
    v1_file = folder / "v1.elm"
    v1_file.write_bytes(await platform.models.export(m1.ref, by="operator"))
    chain = Path(platform.config.pki_dir) / "ca-chain.pem"  # what the agents check the models' signer against
    configs = [f"""\
agent: {{tenant: {tenant}, gateway: {name}-gw, data_dir: {folder / name}, commit_ms: 50, heartbeat_s: 0.5,
         models_trust: {chain}}}
uplink: {{mqtt: "{platform.config.mqtt_host}:{platform.config.mqtt_port}"}}
sources: [{{name: sim, kind: simulator, devices: 1, seed: {seed}, prefix: {name}-, poll_ms: 1000}}]
models: [{{name: {EDGE_MODEL}, path: {v1_file}, devices: [{name}-{device}], every_s: 0.5, guard_windows: 10,
           max_alarm_rate: 0.5, probation_h: 1}}]
""" for name in names]
    gw_ids = [f"{n}-gw" for n in names]
    plan = RolloutPlan(waves=[1 / gateways, 1.0], shadow_h=0.0, soak_h=soak_s / 3600)
    say("edge", 0.85, {"gateways": gateways})
    async with _agents(configs):
        ready = await _wait(lambda: _all_on(platform, gw_ids, m1.version), timeout_s=60)
        good, good_s, _ = await _campaign(platform, str(m2.ref), plan, timeout_s=12 * soak_s + 60, gateways=gw_ids)
        bad, bad_s, bad_share = await _campaign(platform, str(m3.ref), plan, timeout_s=12 * soak_s + 60,
                                                gateways=gw_ids)
        await _wait(lambda: _all_on(platform, gw_ids, m2.version), timeout_s=30)
        final = await _running(platform, gw_ids)
    return {
        "edge_gateways": gateways, "edge_ready": ready,
        "edge_promoted": good.state.phase == "promoted", "edge_promotion_s": round(good_s, 1),
        "edge_bad_max_share": round(bad_share, 3), "edge_bad_rolled_back": bad.state.phase == "rolled_back",
        "edge_rollback_s": round(bad_s, 1), "edge_running_at_end": final,
        "edge_campaigns": [{"id": v.spec.id, "to": v.spec.to_ref, "phase": v.state.phase,
                            "events": [f"{e.kind}: {e.message}" for e in v.events][-8:]} for v in (good, bad)],
    }


async def _all_on(platform: Platform, gateways: list[str], version: int) -> bool:
    return all(v == version for v in (await _running(platform, gateways)).values())
