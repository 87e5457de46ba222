"""Edge-model campaigns: the campaign service rolls an edge model's version out to gateways by pushes, judged from
what the gateways report. The gateways here run the agent's real model code (``EdgeModels``: signed slots,
probation guardrail, push handling) and report through a real store (heartbeats and events as ingest stores
them); the broker between them is played by a retained-message table, one message per gateway topic, delivered
when the gateway is online (the brokers' own delivery of pushes is tested in ``test_agent_models.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from edgeloop.agent.config import LocalModel
from edgeloop.agent.edge_models import EdgeModels
from edgeloop.campaigns.engine import CampaignSpec
from edgeloop.campaigns.gates import InstallGate, LatencyGate, MissedFaultGate, RateSPRT
from edgeloop.campaigns.service import CampaignService, CampaignView
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError
from edgeloop.messages import DeviceEvent, Heartbeat, Sample, encode
from edgeloop.models.edge_rollout import EdgeRollout, default_edge_gates
from edgeloop.models.manifest import Trigger
from edgeloop.store import Store, open_store
from edgeloop.store.base import AuditRecord, GatewayHeartbeat, StoredEvent
from tests.test_agent_models import NAME, Pki, write
from tests.test_campaign_service import FakeAliases, FakePlacement

HOUR = 3_600_000
GATEWAYS = ("gw-a", "gw-b", "gw-c", "gw-d")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("edge-pki"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'edgeloop.db'}") as s:
        yield s


@dataclass
class Gateway:
    name: str
    models: EdgeModels
    events: list[DeviceEvent]
    online: bool = True
    seen: bytes = b""  # the last retained push delivered


@dataclass
class World:
    """Gateways running the agent's model code, a retained push per gateway topic, the platform's store."""

    store: Store
    clock: ManualClock
    gateways: dict[str, Gateway]
    retained: dict[str, bytes] = field(default_factory=dict)  # topic → the last push
    sample: int = 0

    async def publish(self, topic: str, payload: bytes) -> None:
        self.retained[topic] = payload

    def deliver(self) -> None:
        """Every online gateway gets its topic's retained push, unless it got that very message already."""
        for gw in self.gateways.values():
            payload = self.retained.get(f"edgeloop/v1/acme/{gw.name}/model")
            if gw.online and payload is not None and payload != gw.seen:
                gw.seen = payload
                gw.models.apply_push(payload)

    async def run(self, minutes: int, *, temp: float = 50.0) -> None:
        """``minutes`` of one sample a second on each online gateway's press, then heartbeats and events stored
        (an offline gateway's events wait in its journal, as the agent's do)."""
        for _ in range(minutes):
            self.clock.advance(60_000)
            for gw in self.gateways.values():
                if not gw.online:
                    continue
                for i in range(60):
                    ts = self.clock.now_ms() - 60_000 + i * 1000
                    gw.models.observe(f"press-{gw.name}", Sample(ts=ts, values={"temp": temp + 0.1 * (i % 3),
                                                                                 "vib": 1.0}))
            await self.report()

    async def report(self) -> None:
        now = self.clock.now_ms()
        for gw in self.gateways.values():
            if not gw.online:
                continue
            beat = Heartbeat(gateway=gw.name, ts=now, interval_s=60, devices=[f"press-{gw.name}"],
                             journal_messages=0, journal_bytes=0, journal_samples=0, oldest_unsent_age_s=None,
                             sync_lag_s=None, dropped_samples=0, accepted_samples=0, uplink_connected=1,
                             uplink_links=1, bytes_sent=0, bytes_raw=0, cpu_percent=5.0, rss_bytes=1,
                             sources={}, config_version=1, models=gw.models.health())
            await self.store.write_heartbeats([GatewayHeartbeat(
                gateway=gw.name, tenant="acme", ts_ms=now, received_ms=now, heartbeat=encode(beat).decode(),
                devices=tuple(beat.devices), dropped_samples=0)])
            await self.store.write_events([StoredEvent(device=e.device, tenant="acme", ts_ms=e.ts, kind=e.kind,
                                                       severity=e.severity.value, message=e.message,
                                                       data=dict(e.data), received_ms=now) for e in gw.events])
            gw.events.clear()


def world(store: Store, pki: Pki, tmp_path: Path) -> World:
    clock = ManualClock(1_800_000_000_000)
    v1 = write(tmp_path / "v1.elm", pki.bundle(1))
    gateways: dict[str, Gateway] = {}
    for name in GATEWAYS:
        events: list[DeviceEvent] = []
        em = EdgeModels(data_dir=tmp_path / name, chain_pem=pki.ca.chain_pem, gateway=name, emit=events.append,
                        clock=clock)
        em.configure([msgspec.convert({"name": NAME, "devices": [f"press-{name}"], "path": str(v1),
                                       "guard_windows": 20}, LocalModel)], strict=False)
        gateways[name] = Gateway(name, em, events)
    clock.advance(48 * HOUR)  # v1 has served for two days: out of probation everywhere
    return World(store=store, clock=clock, gateways=gateways)


def service(w: World, bundles: dict[str, bytes]) -> tuple[CampaignService, FakeAliases, list[AuditRecord]]:
    async def bundle(ref: str) -> bytes:
        return bundles[ref]

    audit: list[AuditRecord] = []

    async def record(a: AuditRecord) -> None:
        audit.append(a)

    rollout = EdgeRollout(store=w.store, bundle=bundle, publish=w.publish, now=w.clock.now_ms,
                          tenant_of=lambda gw: "acme" if gw in w.gateways else None)
    aliases = FakeAliases(champion=f"{NAME}@1")
    return (CampaignService(store=w.store, now=w.clock.now_ms, placement=FakePlacement(), aliases=aliases,
                            audit=record, gateways=rollout), aliases, audit)


def spec(waves: list[float], **kw: object) -> CampaignSpec:
    gates = default_edge_gates()
    # the same tiny model on both sides: sub-millisecond latencies whose ratio is noise on a shared machine
    gates["latency"] = LatencyGate(min_samples=5, max_p95_ratio=50.0, max_cpu_ratio=50.0)
    return CampaignSpec(id="c-press-2", payload="edge_model", subject=NAME, from_ref=f"{NAME}@1", to_ref=f"{NAME}@2",
                        targets=list(GATEWAYS), waves=waves, shadow=False, shadow_ms=0, soak_ms=HOUR,
                        gates=gates, **kw)  # type: ignore[arg-type]


def versions(w: World) -> dict[str, int]:
    return {name: gw.models.active[NAME].model.version for name, gw in w.gateways.items()}


async def test_a_good_edge_version_goes_out_wave_by_wave_and_is_promoted(store: Store, pki: Pki,
                                                                          tmp_path: Path) -> None:
    w = world(store, pki, tmp_path)
    svc, aliases, audit = service(w, {f"{NAME}@2": pki.bundle(2)})
    view = await svc.start(spec([0.25, 0.5, 1.0]), by="ana")
    shares: list[float] = []
    for _ in range(8 * 6):  # ticks every 10 min, at most 8 h
        w.deliver()
        await w.run(10)
        await svc.tick()
        view = await svc.get("c-press-2")
        running = sum(v == 2 for v in versions(w).values())
        shares.append(running / len(GATEWAYS))
        if view.state.phase == "promoted":
            break
    w.deliver()
    assert view.state.phase == "promoted", [e.message for e in view.events]
    assert versions(w) == dict.fromkeys(GATEWAYS, 2)
    assert aliases.champion == f"{NAME}@2"
    assert 0.25 in shares and 0.5 in shares, "one gateway, then half, then all"
    passed = [e for e in view.events if e.kind == "gate.passed"]
    assert {e.message.split(": ")[1] for e in passed} >= {"install", "latency", "alarms"}
    install = next(e for e in passed if ": install:" in e.message)
    assert install.figures["running"] == install.figures["targets"] == 1.0  # the first wave: one gateway
    assert [a.action for a in audit][-1] == "campaign.promoted"


async def test_a_breach_rolls_back_every_exposed_gateway_including_one_offline_when_it_was_found(
        store: Store, pki: Pki, tmp_path: Path) -> None:
    """v2 alarms on healthy data. Half the fleet takes it; one of those gateways goes offline; the other's own
    guardrail reverts it and reports that; the install gate fails the wave; the rollback push waits for the
    offline gateway, which goes back to v1 as soon as it reconnects. The other half never runs v2."""
    w = world(store, pki, tmp_path)
    svc, aliases, _ = service(w, {f"{NAME}@2": pki.bundle(2, threshold=40.0)})
    view = await svc.start(spec([0.5, 1.0]), by="ana")
    wave = sorted(view.state.live)
    assert len(wave) == 2
    w.deliver()
    assert {versions(w)[g] for g in wave} == {2}
    breaching, offline = wave
    w.gateways[offline].online = False  # its link drops before it scores anything with v2
    for _ in range(12):
        await w.run(5)
        await svc.tick()
        view = await svc.get("c-press-2")
        if view.state.phase != "wave":
            break
    assert view.state.phase == "rolled_back", [e.message for e in view.events]
    [failed] = [e for e in view.events if e.kind == "gate.failed"]
    assert failed.message.startswith("wave 1: install:") and f"reverted on {breaching}: alarm_rate" in failed.message
    assert versions(w)[breaching] == 1, "the gateway reverted by itself"
    assert versions(w)[offline] == 2, "offline: it still runs v2 and knows nothing yet"
    w.deliver()
    await w.run(1)
    assert versions(w)[offline] == 2, "still offline"
    w.gateways[offline].online = True  # reconnects: the retained rollback push is delivered
    w.deliver()
    await w.report()
    assert versions(w) == dict.fromkeys(GATEWAYS, 1)
    answers = [e for e in await store.list_events(device=offline, kind="model")]
    assert answers[0].data["status"] == "rolled_back" and answers[0].data["version"] == 1
    assert aliases.champion == f"{NAME}@1" and aliases.promotions == []
    rest = set(GATEWAYS) - set(wave)
    assert all(not (w.gateways[g].models.slots.state(NAME).installed_ms or {}).get(2) for g in rest), \
        "the gateways outside the wave never ran v2"


async def test_an_edge_campaign_refuses_what_it_could_not_run(store: Store, pki: Pki, tmp_path: Path) -> None:
    w = world(store, pki, tmp_path)
    svc, _, _ = service(w, {})
    with pytest.raises(ConfigError, match="no shadow phase"):
        await svc.start(msgspec.structs.replace(spec([1.0]), shadow=True, shadow_ms=HOUR), by="ana")
    with pytest.raises(ConfigError, match="not registered: gw-x"):
        await svc.start(msgspec.structs.replace(spec([1.0]), targets=["gw-a", "gw-x"]), by="ana")
    with pytest.raises(ConfigError, match="is not judged on gateways"):
        await svc.start(msgspec.structs.replace(spec([1.0]), gates={"missed": MissedFaultGate()}), by="ana")
    with pytest.raises(ConfigError, match="not a version >= 1"):
        await svc.start(msgspec.structs.replace(spec([1.0]), from_ref=f"{NAME}@0"), by="ana")
    assert await svc.list() == []
    assert set(default_edge_gates()) == {"install", "latency", "alarms"}
    assert isinstance(default_edge_gates()["install"], InstallGate)
    assert isinstance(default_edge_gates()["alarms"], RateSPRT)


async def test_start_rollout_targets_the_gateways_running_the_model_and_says_why_it_cannot_start(
        store: Store, pki: Pki, tmp_path: Path) -> None:
    """``edgeloop campaigns start edge.press@2``: from the champion to the version, on the gateways whose heartbeat
    says they run the model, no shadow phase, the edge gates; a clear error without a champion or a gateway."""
    from edgeloop.assets import Device
    from edgeloop.identity.pki import CertificateAuthority
    from edgeloop.models.rollout import RolloutPlan, start_rollout
    from edgeloop.registry import Registry
    from tests.test_agent_models import onnx_model
    from tests.test_model_registry import make_registry

    w = world(store, pki, tmp_path)
    svc, _, _ = service(w, {f"{NAME}@2": pki.bundle(2)})
    models = make_registry(store, CertificateAuthority.init(tmp_path / "platform-pki"), tmp_path)
    trigger = Trigger(kind="person", by="ana")
    v1 = await models.register("edge", NAME, onnx_model(70.0), by="ana", trigger=trigger)
    v2 = await models.register("edge", NAME, onnx_model(70.0), by="ana", trigger=trigger, parent=v1.ref)
    assets = Registry(devices={g: Device(id=g, tenant="acme", asset=g, profile="gw") for g in GATEWAYS})

    async def start() -> CampaignView:
        return await start_rollout(campaigns=svc, models=models, registry=assets, ref=str(v2.ref),
                                   plan=RolloutPlan(waves=[0.5, 1.0], soak_h=1.0), by="ana",
                                   now_ms=w.clock.now_ms())

    with pytest.raises(ConfigError, match="has no champion: promote the version the gateways run first"):
        await start()
    await models.promote(v1.ref, by="ana", reason="what runs")
    with pytest.raises(ConfigError, match="no gateway reports running edge model"):
        await start()  # no heartbeat yet
    w.gateways["gw-d"].online = False  # its last heartbeat never came: not a target
    await w.report()
    view = await start()
    assert view.spec.payload == "edge_model" and view.spec.targets == ["gw-a", "gw-b", "gw-c"]
    assert (view.spec.from_ref, view.spec.to_ref, view.spec.shadow) == (f"{NAME}@1", f"{NAME}@2", False)
    assert set(view.spec.gates) == {"install", "latency", "alarms"} and view.state.phase == "wave"

    # a rollout group of gateways: only its gateways that run the model, and the group's scope is promoted
    await svc.abort(view.spec.id, by="ana", reason="rolled out per group instead")
    assets.devices["gw-b"] = Device(id="gw-b", tenant="acme", asset="gw-b", profile="gw", rollout_group="east")
    east = await start_rollout(campaigns=svc, models=models, registry=assets, ref=str(v2.ref),
                               plan=RolloutPlan(waves=[1.0], soak_h=1.0, group="east"), by="ana",
                               now_ms=w.clock.now_ms())
    assert (east.spec.targets, east.spec.scope, east.spec.from_ref) == (["gw-b"], "group:east", f"{NAME}@1")
