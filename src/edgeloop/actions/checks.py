"""A policy's checks against a world: the live one (the newest readings, holds and commands now) or history (what
was stored at a past time, for ``policies replay``). Each check says what it saw and its value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edgeloop.actions.policy import (
    Condition,
    PeersInterlock,
    Policy,
    RateInterlock,
    SetpointAction,
    StateInterlock,
    WorkOrderAction,
)
from edgeloop.actions.readings import Reading
from edgeloop.conditions import condition_text, holds
from edgeloop.registry import Registry
from edgeloop.store.actions import HoldRecord

__all__ = ["Check", "World", "reports", "run_checks", "target_device"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    value: float | None = None


class World(Protocol):
    """What the checks look at, at one moment."""

    now: int

    async def newest_ts(self, device: str) -> int | None:
        """When the device's newest sample (at or before ``now``) was taken."""
        ...

    async def reading(self, device: str, channel: str) -> Reading | None:
        """The newest valid reading of a channel at or before ``now``."""
        ...

    async def hold(self, tenant: str, target: str) -> HoldRecord | None:
        """A hold running at ``now`` on ``target`` (an asset, ``policy:NAME``)."""
        ...

    async def changes(self, devices: Sequence[str], actuator: str, since: int) -> int:
        """Commands of ``actuator`` to these devices in ``[since, now)`` that were not refused or expired."""
        ...


async def run_checks(policy: Policy, *, tenant: str, asset: str, device: str | None, world: World,
                     registry: Registry) -> list[Check]:
    now = world.now
    hold = await world.hold(tenant, asset)
    out = [Check("override", hold is None, "no hold on the asset" if hold is None else
                 f"automation held on {asset} by {hold.held_by} until {hold.until_ms}: {hold.reason}")]
    if isinstance(policy.action, WorkOrderAction):
        return out
    if not device:
        return [*out, Check("target", False, f"no device of {asset} to act on")]
    newest = await world.newest_ts(device)
    age_s = None if newest is None else (now - newest) / 1000
    fresh = age_s is not None and age_s <= policy.preconditions.fresh_s
    out.append(Check("fresh", fresh, f"newest reading of {device} " + ("unknown" if age_s is None else
                                                                       f"{age_s:.1f} s old")
                     + f" (at most {policy.preconditions.fresh_s:g} s)", age_s))
    if policy.preconditions.mode is not None:
        out.append(await _condition("mode", device, policy.preconditions.mode, world, policy.preconditions.fresh_s,
                                    wanted=True))
    for lock in policy.interlocks:
        if isinstance(lock, StateInterlock):
            cond = Condition(channel=lock.channel, above=lock.above, below=lock.below, equals=lock.equals)
            out.append(await _condition(lock.name, lock.device, cond, world, lock.fresh_s, wanted=False))
        elif isinstance(lock, PeersInterlock):
            out.extend(await _peers(lock, asset, world, registry))
        else:
            out.append(await _rate(lock, policy, asset, world, registry))
    return out


def target_device(policy: Policy, asset: str, registry: Registry) -> str | None:
    """The device a setpoint acts on: the policy's ``device`` (if it is the asset's), else the asset's device that
    reports the action's ``channel``, else the asset's only device; None for a work order or when none fits."""
    action = policy.action
    if not isinstance(action, SetpointAction):
        return None
    if action.device is not None:
        dev = registry.devices.get(action.device)
        return action.device if dev is not None and dev.asset == asset else None
    devices = sorted(d.id for d in registry.devices.values() if d.asset == asset)
    if action.channel is not None:
        devices = [d for d in devices if reports(registry, d, action.channel)]
    return devices[0] if len(devices) == 1 else None


def reports(registry: Registry, device: str, channel: str) -> bool:
    """Whether the device's profile has the channel."""
    dev = registry.devices.get(device)
    profile = registry.profiles.get(dev.profile) if dev is not None else None
    return profile is not None and channel in profile.channel_names()


async def _condition(name: str, device: str, cond: Condition, world: World, fresh_s: float, *,
                     wanted: bool) -> Check:
    """``wanted``: the condition must hold (a mode); else it must not (an interlock). A missing or stale reading
    fails either way."""
    found = await world.reading(device, cond.channel)
    what = f"{device}.{cond.channel}"
    if found is None or (world.now - found.ts) > fresh_s * 1000:
        return Check(name, False, f"{what}: no reading in the last {fresh_s:g} s")
    met = holds(cond, found.value)
    ok = met if wanted else not met
    return Check(name, ok, f"{what} = {found.value:g}: {'is' if met else 'is not'} {condition_text(cond)}",
                 found.value)


async def _peers(lock: PeersInterlock, asset: str, world: World, registry: Registry) -> list[Check]:
    """One check per device of the line's other machines whose profile reports the channel."""
    mine = registry.assets.get(asset)
    peers = {a.id for a in registry.assets.values() if mine is not None and a.line == mine.line and a.id != asset}
    cond = Condition(channel=lock.channel, above=lock.above, below=lock.below, equals=lock.equals)
    devices = sorted(d.id for d in registry.devices.values() if d.asset in peers
                     and reports(registry, d.id, lock.channel))
    return [await _condition(lock.name, dev, cond, world, lock.fresh_s, wanted=False) for dev in devices] \
        or [Check(lock.name, True, f"no other machine of the line reports {lock.channel}")]


async def _rate(lock: RateInterlock, policy: Policy, asset: str, world: World, registry: Registry) -> Check:
    assert isinstance(policy.action, SetpointAction)
    devices = sorted(d.id for d in registry.devices.values() if d.asset == asset)
    count = await world.changes(devices, policy.action.actuator, world.now - int(lock.window_s * 1000))
    return Check(lock.name, count < lock.max, f"{count} change(s) of {policy.action.actuator} on {asset} in the "
                                              f"last {lock.window_s:g} s (at most {lock.max})", float(count))
