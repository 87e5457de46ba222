"""Rollout groups: a device (or gateway) in group ``north`` runs the champion of scope ``group:north`` when the group
has one, else the whole profile's; a campaign for a group replaces and promotes that scope's champion on that
group's devices only, and a whole-profile campaign leaves a group with its own champion alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.assets import ChannelSpec, Device, DeviceProfile
from edgeloop.campaigns.service import CampaignService
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError, ConflictError
from edgeloop.identity.pki import CertificateAuthority
from edgeloop.models.deployment import Deployment
from edgeloop.models.detector_artifact import dump_detectors
from edgeloop.models.manifest import ModelRef, Trigger
from edgeloop.models.registry import ModelRegistry
from edgeloop.models.rollout import RolloutPlan, start_rollout
from edgeloop.registry import Registry
from edgeloop.store import Store
from edgeloop.store.base import AuditRecord
from tests.test_model_registry import make_registry

MODEL = "detector.pump"
PROFILE = "pump"
HOUR = 3_600_000
PLAIN = ["pump-1", "pump-2", "pump-3"]
NORTH = ["pump-n1", "pump-n2"]
PUMP = DeviceProfile(name=PROFILE, channels=[ChannelSpec(name="flow")])


class World:
    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.models: ModelRegistry = make_registry(store, CertificateAuthority.init(tmp_path / "pki"), tmp_path)
        self.assets = Registry(devices={
            **{d: Device(id=d, tenant="acme", asset=d, profile=PROFILE) for d in PLAIN},
            **{d: Device(id=d, tenant="acme", asset=d, profile=PROFILE, rollout_group="north") for d in NORTH}})
        self.deployment = Deployment(registry=self.models, scope_of=lambda d: self.assets.devices[d].scope)
        self.models.alias_listeners.append(lambda _event: self.deployment.refresh())
        self.clock = ManualClock(1_796_400_000_000)
        self.campaigns = CampaignService(store=store, now=self.clock.now_ms, placement=self.deployment,
                                         aliases=self.deployment, audit=self.audit)

    async def audit(self, record: AuditRecord) -> None:
        await self.store.audit(record)

    async def versions(self, n: int) -> list[ModelRef]:
        out: list[ModelRef] = []
        for _ in range(n):
            m = await self.models.register("detector", MODEL, dump_detectors({}), by="ana", profile=PROFILE,
                                           trigger=Trigger(kind="person", by="ana"))
            out.append(m.ref)
        return out


def live(w: World) -> dict[str, str]:
    """The version each device scores with, live."""
    return {d: w.deployment.assignment(d, PUMP).live for d in w.assets.devices}


async def test_a_device_runs_its_rollout_groups_champion_else_the_whole_profiles(store: Store,
                                                                                  tmp_path: Path) -> None:
    w = World(store, tmp_path)
    v1, v2 = await w.versions(2)
    await w.models.promote(v1, by="ana", reason="fleet-wide")
    assert set(live(w).values()) == {str(v1)}, "a group without a champion of its own follows the whole profile"

    await w.models.promote(v2, by="ana", reason="north first", scope="group:north")
    assert live(w) == {**dict.fromkeys(PLAIN, str(v1)), **dict.fromkeys(NORTH, str(v2))}

    await w.models.rollback(MODEL, by="ana", reason="back", scope="group:north")
    assert set(live(w).values()) == {str(v1)}, "the group's first champion rolled back: it follows the profile again"
    assert await w.models.resolve(MODEL, "champion", "group:north") == v1, "the alias falls back to the profile's"
    history = await w.models.alias_history(MODEL, scope="group:north")
    assert [(e.action, e.version) for e in history] == [("set", 2), ("rollback", None)]
    with pytest.raises(ConflictError, match="no earlier champion to roll back to in scope group:north"):
        await w.models.rollback(MODEL, by="ana", reason="again", scope="group:north")

    await w.models.promote(ModelRef(MODEL, 0), by="ana", reason="north back to the built-in", scope="group:north")
    assert live(w) == {**dict.fromkeys(PLAIN, str(v1)), **dict.fromkeys(NORTH, f"{MODEL}@0")}
    with pytest.raises(ConfigError, match="never removed"):
        await w.models.set_alias(MODEL, "champion", None, by="ana", reason="no")
    with pytest.raises(ConfigError, match="must be \\* \\(the whole profile\\) or group:NAME"):
        await w.models.promote(v1, by="ana", reason="bad", scope="group:")


async def test_a_group_campaign_replaces_and_promotes_its_groups_champion_only(store: Store, tmp_path: Path) -> None:
    w = World(store, tmp_path)
    v1, v2 = await w.versions(2)
    await w.models.promote(v1, by="ana", reason="fleet-wide")

    async def start(plan: RolloutPlan) -> str:
        view = await start_rollout(campaigns=w.campaigns, models=w.models, registry=w.assets, ref=str(v2), plan=plan,
                                   by="ana", now_ms=w.clock.now_ms())
        return view.spec.id

    with pytest.raises(ConfigError, match="follow\\(s\\) another champion than the campaign's scope"):
        await start(RolloutPlan(targets=["pump-1", "pump-n1"], group="north"))
    cid = await start(RolloutPlan(waves=[1.0], shadow_h=0.5, soak_h=1.0, group="north", probes=False))
    view = await w.campaigns.get(cid)
    assert (view.spec.scope, view.spec.targets, view.spec.from_ref) == ("group:north", NORTH, str(v1)), \
        "the group's champion falls back to the profile's: that is what the campaign replaces"
    assert live(w) == dict.fromkeys(PLAIN + NORTH, str(v1)), "shadow: the champion still pages everywhere"
    assert {w.deployment.assignment(d, PUMP).shadow for d in NORTH} == {str(v2)}
    assert {w.deployment.assignment(d, PUMP).shadow for d in PLAIN} == {None}

    for _ in range(8):  # shadow, then the one wave soaks; no finding: nothing against it
        w.clock.advance(HOUR // 2)
        await w.campaigns.tick()
    view = await w.campaigns.get(cid)
    assert view.state.phase == "promoted", [e.message for e in view.events]
    assert await w.models.resolve(MODEL, "champion", "group:north") == v2
    assert await w.models.resolve(MODEL, "champion") == v1, "the whole profile keeps its champion"
    assert live(w) == {**dict.fromkeys(PLAIN, str(v1)), **dict.fromkeys(NORTH, str(v2))}

    # the whole profile's next campaign: the group with its own champion is not a target, nor can it be chosen
    (v3,) = await w.versions(1)
    profile_wide = await start_rollout(campaigns=w.campaigns, models=w.models, registry=w.assets, ref=str(v3),
                                       plan=RolloutPlan(probes=False), by="ana", now_ms=w.clock.now_ms())
    assert (profile_wide.spec.scope, profile_wide.spec.targets) == ("*", PLAIN)
    with pytest.raises(ConfigError, match="pump-n1 follow\\(s\\) another champion"):
        await start_rollout(campaigns=w.campaigns, models=w.models, registry=w.assets, ref=str(v3),
                            plan=RolloutPlan(targets=["pump-n1"]), by="ana", now_ms=w.clock.now_ms())
    with pytest.raises(ConfigError, match=r"already the champion of detector\.pump in rollout group north"):
        await start(RolloutPlan(group="north"))
