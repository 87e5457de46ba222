"""Rolling a model version out: the campaign a person (or the retraining policy) asks for, built from the registry
(the champion it replaces). A detector version goes to its profile's devices (the asset registry); an edge model's
version goes to the gateways that run the model (their heartbeats say so), with no shadow phase and the edge gates
(``models/edge_rollout.py``). On request (``RolloutPlan.score_shift_max``) a trained detector version is also
gated on its live scores against its model card's held-out score quantiles (``ScoreShiftGate``).

A campaign moves one alias scope: the whole profile (``*``: its devices, or gateways, that are in no rollout group
with a champion of its own) or one rollout group (``RolloutPlan.group``: that group's devices or gateways, and the
champion of scope ``group:NAME`` is what it replaces and what it promotes)."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec

from edgeloop.assets import RolloutGroup
from edgeloop.campaigns.engine import CampaignSpec, default_gates
from edgeloop.campaigns.gates import ProbeGate, ScoreShiftGate
from edgeloop.campaigns.service import CampaignService, CampaignView
from edgeloop.errors import ConfigError, NotFoundError
from edgeloop.messages import Id
from edgeloop.models.edge_rollout import default_edge_gates, gateways_running
from edgeloop.models.manifest import ModelRef
from edgeloop.models.registry import ModelRegistry
from edgeloop.registry import Registry

__all__ = ["RolloutPlan", "start_rollout"]

_HOUR_MS = 3_600_000


class RolloutPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How carefully to roll a version out (the defaults: a day of shadow, then 10 % → 50 % → 100 % of the
    profile's devices, each soaking a day)."""

    waves: Annotated[list[Annotated[float, msgspec.Meta(gt=0, le=1)]], msgspec.Meta(min_length=1, max_length=20)] = \
        msgspec.field(default_factory=lambda: [0.1, 0.5, 1.0])
    shadow_h: Annotated[float, msgspec.Meta(ge=0, le=24 * 90)] = 24.0
    soak_h: Annotated[float, msgspec.Meta(gt=0, le=24 * 90)] = 24.0
    approvals: Annotated[list[bool], msgspec.Meta(max_length=20)] = msgspec.field(default_factory=list)
    targets: Annotated[list[Id], msgspec.Meta(max_length=100_000)] | None = None  # default: the profile's devices
    # (an edge model: the gateways running it)
    probes: bool = True  # known-answer fault probes gate every phase (when the platform runs them)
    # the candidate's live scores against its model card's held-out score quantiles: the largest KS distance
    # allowed (None: no such gate; see docs/models.md for why it is not on by default)
    score_shift_max: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    group: RolloutGroup = ""  # a rollout group: only its devices (gateways), promoted in scope group:NAME


async def start_rollout(*, campaigns: CampaignService, models: ModelRegistry, registry: Registry, ref: str,
                        plan: RolloutPlan, by: str, now_ms: int, probes: bool = False) -> CampaignView:
    """Start the campaign that moves ``ref``'s profile from its champion to ``ref``. ``probes``: whether the
    platform runs known-answer probes (the probe gate is added only then)."""
    try:
        target = ModelRef.parse(ref)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    manifest = await models.get(target)
    if manifest.kind not in ("detector", "edge") or (manifest.kind == "detector" and manifest.profile is None):
        raise ConfigError(f"{ref} is a {manifest.kind} model: only detector and edge versions roll out")
    scope = f"group:{plan.group}" if plan.group else "*"
    champion = await models.champion(target.name, scope)
    if champion is None:  # a detector always has one (the built-in detector)
        raise ConfigError(f"edge model {target.name} has no champion: promote the version the gateways run first "
                          f"(edgeloop models promote {target.name}@<n>)")
    if champion == target:
        raise ConfigError(f"{ref} is already the champion of {target.name}"
                          + (f" in rollout group {plan.group}" if plan.group else ""))
    in_scope = await _in_scope(models, registry, target.name, scope)
    edge = manifest.kind == "edge"
    if edge:
        targets = await _gateways(campaigns, registry, target.name, plan.targets, in_scope)
        gates = default_edge_gates()
    else:
        assert manifest.profile is not None  # checked above
        targets = _targets(registry, manifest.profile, plan.targets, in_scope)
        gates = default_gates() | ({"probes": ProbeGate()} if probes and plan.probes else {})
        if plan.score_shift_max is not None:
            reference = _score_reference(manifest.card)
            if not reference:
                raise ConfigError(f"{ref} has no held-out score quantiles in its model card: no score_shift gate")
            gates["score_shift"] = ScoreShiftGate(reference=reference, max_distance=plan.score_shift_max)
    spec = CampaignSpec(
        id=_campaign_id(target, "edge." if edge else "detector."), payload="edge_model" if edge else "model",
        subject=target.name, from_ref=str(champion), to_ref=str(target), targets=targets, waves=list(plan.waves),
        shadow=not edge, shadow_ms=0 if edge else int(plan.shadow_h * _HOUR_MS), soak_ms=int(plan.soak_h * _HOUR_MS),
        approvals=list(plan.approvals), gates=gates, created_by=by, created_ms=now_ms, scope=scope)
    return await campaigns.start(spec, by=by)


def _score_reference(card: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The ``(probability, value)`` quantiles of a trained version's held-out scores, from its model card (empty
    for a version without a card: the score-distribution gate needs one)."""
    quantiles = (card.get("candidate_metrics") or {}).get("score_quantiles") or {}
    out: list[tuple[float, float]] = []
    for name, value in quantiles.items():
        try:
            q = float(str(name).removeprefix("p")) / 100.0
        except ValueError:
            continue
        if 0.0 <= q <= 1.0 and isinstance(value, int | float) and math.isfinite(value):
            out.append((q, float(value)))
    return sorted(out)


def _campaign_id(target: ModelRef, prefix: str) -> str:
    return f"c-{target.name.removeprefix(prefix)}-{target.version}-{secrets.token_hex(3)}"


async def _in_scope(models: ModelRegistry, registry: Registry, model: str, scope: str) -> Callable[[str], bool]:
    """Whether a device (or gateway) is in the campaign's scope: for a group, its members; for the whole profile,
    every device but the members of a group with a champion of its own (they follow that one)."""
    own = {a.scope for a in await models.aliases() if a.name == model and a.alias == "champion"}

    def follows(device: str) -> bool:
        dev = registry.devices.get(device)
        group = dev.scope if dev is not None else "*"
        return group == scope if scope != "*" else group == "*" or group not in own

    return follows


async def _gateways(campaigns: CampaignService, registry: Registry, model: str, chosen: Sequence[str] | None,
                    in_scope: Callable[[str], bool]) -> list[str]:
    """An edge campaign's targets: the gateways chosen (registered), else those of the scope whose heartbeat runs
    ``model``."""
    if chosen is not None:
        for gateway in chosen:
            if gateway not in registry.devices:
                raise NotFoundError("gateway", gateway)
        return _only_in_scope(sorted(set(chosen)), in_scope)
    gateways = sorted(g for g in await gateways_running(campaigns.store, model) if in_scope(g))
    if not gateways:
        raise ConfigError(f"no gateway reports running edge model {model} in the campaign's scope: nothing to roll "
                          "out to")
    return gateways


def _targets(registry: Registry, profile: str, chosen: Sequence[str] | None,
             in_scope: Callable[[str], bool]) -> list[str]:
    devices = sorted(d.id for d in registry.devices.values() if d.profile == profile and in_scope(d.id))
    if chosen is None:
        if not devices:
            raise ConfigError(f"no device of profile {profile!r} in the campaign's scope is registered: nothing to "
                              "roll out to")
        return devices
    for device in chosen:
        if device not in registry.devices:
            raise NotFoundError("device", device)
        if registry.devices[device].profile != profile:
            raise ConfigError(f"device {device!r} is of profile {registry.devices[device].profile!r}, not "
                              f"{profile!r}")
    return _only_in_scope(sorted(set(chosen)), in_scope)


def _only_in_scope(chosen: list[str], in_scope: Callable[[str], bool]) -> list[str]:
    """``chosen``, if every one follows the campaign's scope (a target that follows another champion would be
    promoted in a scope it does not follow)."""
    outside = [t for t in chosen if not in_scope(t)]
    if outside:
        raise ConfigError(f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''} follow(s) another "
                          "champion than the campaign's scope: choose targets of one scope (a rollout group's, with "
                          "--group, or the whole profile's)")
    return chosen
