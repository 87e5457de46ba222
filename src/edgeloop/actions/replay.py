"""Policy replay: what a policy (or a new version of it) would have done on stored history, before anyone turns
it on (``edgeloop policies replay``).

Every trigger the policy would have seen in ``[start, end)`` (the alerts of its rule that opened then; its
schedule's ticks) is decided again at the trigger's time against history (``HistoryWorld``): the readings stored
then, the holds that ran then, and the commands sent then, except this policy's own, which the replay replaces with
what it would itself have sent. Each row says what the policy would have done (``would_send``, ``held`` with the
checks that held it, ``dry_run``, ``awaiting_approval``), what the version in force would have done on the same
trigger, and what the platform really decided. Nothing is sent and nothing is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgeloop.actions.checks import Check, run_checks, target_device
from edgeloop.actions.policy import AlertTrigger, Policy, ScheduleTrigger, SetpointAction
from edgeloop.actions.readings import Reading
from edgeloop.messages import Alert
from edgeloop.registry import Registry
from edgeloop.store.actions import HoldRecord
from edgeloop.store.base import Store, TelemetryChunk

__all__ = ["MAX_TRIGGERS", "ReplayRow", "replay"]

MAX_TRIGGERS = 10_000
LOOKBACK_MS = 3_600_000  # how far back a reading is looked for (a check's freshness is never longer)


@dataclass(frozen=True, slots=True)
class ReplayRow:
    ts: int
    asset: str
    cause: str
    outcome: str  # would_send | held | dry_run | awaiting_approval | off
    detail: str  # the action and its device, or the checks that held it
    checks: list[Check] = field(default_factory=list)
    in_force: str | None = None  # the version in force's outcome on the same trigger (None: no such policy)
    actual: str | None = None  # the state of the decision the platform really made (None: none)


class HistoryWorld:
    """The world at a past moment, from the store; ``sent``: what the replayed policy would have sent so far."""

    def __init__(self, store: Store, policy: str, sent: list[tuple[str, str, int]]) -> None:
        self.store = store
        self.policy = policy
        self.sent = sent  # (device, actuator, ts)
        self.now = 0
        self._own: dict[str, bool] = {}  # decision id -> whether it is this policy's
        self._read: tuple[int, dict[str, list[TelemetryChunk]]] = (-1, {})  # (now, device -> its chunks then)

    async def _chunks(self, device: str) -> list[TelemetryChunk]:
        """The device's chunks of the hour up to ``now``, read once per moment (every check of it looks at them)."""
        at, read = self._read
        if at != self.now:
            read = {}
            self._read = (self.now, read)
        if device not in read:
            read[device] = await self.store.read_chunks(device, self.now - LOOKBACK_MS, self.now + 1)
        return read[device]

    async def newest_ts(self, device: str) -> int | None:
        chunks = await self._chunks(device)
        times = [int(t) for c in chunks for t in c.ts if t <= self.now]
        return max(times) if times else None

    async def reading(self, device: str, channel: str) -> Reading | None:
        best: Reading | None = None
        for chunk in await self._chunks(device):
            if channel not in chunk.channels:
                continue
            j = chunk.channels.index(channel)
            for i in range(len(chunk.ts)):
                ts, v = int(chunk.ts[i]), float(chunk.values[i, j])
                if ts <= self.now and not math.isnan(v) and (best is None or ts >= best.ts):
                    best = Reading(v, ts)
        return best

    async def hold(self, tenant: str, target: str) -> HoldRecord | None:
        for h in await self.store.list_holds(tenant=tenant, target=target, limit=1000):
            if h.created_ms <= self.now < (h.ended_ms if h.ended_ms is not None else h.until_ms):
                return h
        return None

    async def changes(self, devices: Sequence[str], actuator: str, since: int) -> int:
        count = sum(1 for d, a, ts in self.sent if d in devices and a == actuator and since <= ts < self.now)
        for device in devices:
            for c in await self.store.list_commands(device=device, since=since, until=self.now, limit=1000):
                if c.action == actuator and c.status not in ("refused", "expired") and not await self._mine(c.decision):
                    count += 1
        return count

    async def _mine(self, decision: str) -> bool:
        if not decision:
            return False
        if decision not in self._own:
            found = await self.store.get_decision(decision)
            self._own[decision] = found is not None and found.policy == self.policy
        return self._own[decision]


async def replay(store: Store, registry: Registry, policy: Policy, *, tenant: str, start: int, end: int,
                 in_force: Policy | None = None) -> list[ReplayRow]:
    """What ``policy`` would have done in ``[start, end)``, oldest first (at most ``MAX_TRIGGERS`` triggers)."""
    triggers = await _triggers(store, registry, policy, tenant, start, end)
    sent: list[tuple[str, str, int]] = []
    world = HistoryWorld(store, policy.name, sent)
    force_sent: list[tuple[str, str, int]] = []
    force_world = HistoryWorld(store, policy.name, force_sent)
    rows = []
    for ts, asset, cause, alert in triggers:
        outcome, detail, checks = await _decide(policy, tenant, asset, ts, world, registry)
        if outcome == "would_send":
            device = target_device(policy, asset, registry)
            sent.append((device or "", _actuator(policy), ts))
        before = None
        if in_force is not None:
            before, _, _ = await _decide(in_force, tenant, asset, ts, force_world, registry)
            if before == "would_send":
                force_sent.append((target_device(in_force, asset, registry) or "", _actuator(in_force), ts))
        actual = None
        if alert is not None:
            real = [d for d in await store.list_decisions(tenant=tenant, asset=asset, since=ts - 60_000, limit=100)
                    if d.policy == policy.name and d.cause.startswith(f"alert {alert.id} ")]
            actual = real[0].state if real else None
        rows.append(ReplayRow(ts=ts, asset=asset, cause=cause, outcome=outcome, detail=detail, checks=checks,
                              in_force=before, actual=actual))
    return rows


async def _decide(policy: Policy, tenant: str, asset: str, ts: int, world: HistoryWorld,
                  registry: Registry) -> tuple[str, str, list[Check]]:
    if policy.mode == "off":
        return "off", "the policy is off", []
    world.now = ts
    device = target_device(policy, asset, registry)
    checks = await run_checks(policy, tenant=tenant, asset=asset, device=device, world=world, registry=registry)
    failed = [c for c in checks if not c.ok]
    if failed:
        return "held", "; ".join(c.detail for c in failed), checks
    action = policy.action
    what = (f"{action.actuator} -> {action.value:g} on {device}" if isinstance(action, SetpointAction)
            else f"work order: {action.title}")
    if policy.mode == "dry-run":
        return "dry_run", what, checks
    if policy.approval != "none":
        return "awaiting_approval", f"{what} after {policy.approval} approval(s)", checks
    return "would_send", what, checks


async def _triggers(store: Store, registry: Registry, policy: Policy, tenant: str, start: int,
                    end: int) -> list[tuple[int, str, str, Alert | None]]:
    trigger = policy.trigger
    out: list[tuple[int, str, str, Alert | None]] = []
    if isinstance(trigger, AlertTrigger):
        for alert in await store.list_alerts(tenant=tenant, since_ms=start, limit=MAX_TRIGGERS):
            if alert.first_seen < end and trigger.rule in ("*", alert.kind) and (
                    not trigger.assets or alert.asset in trigger.assets) and alert.asset in registry.assets:
                out.append((alert.first_seen, alert.asset, f"alert {alert.id} ({alert.kind})", alert))
    elif isinstance(trigger, ScheduleTrigger):
        step = int(trigger.every_s * 1000)
        for ts in range(start, end, step):
            out.extend((ts, asset, f"schedule every {trigger.every_s:g} s", None) for asset in trigger.assets
                       if asset in registry.assets)
            if len(out) >= MAX_TRIGGERS:
                break
    out.sort(key=lambda t: (t[0], t[1]))
    return out[:MAX_TRIGGERS]


def _actuator(policy: Policy) -> str:
    return policy.action.actuator if isinstance(policy.action, SetpointAction) else ""
