"""The actions engine: a policy decides, checks hold it, people approve it, a command acts, and every step is on
the decision log.

For each trigger (an alert opening, a schedule, a person) and each policy of the tenant that it fires:

1. **decided**: the policy and its version, what set it off (the alert, its rule, incident, model version, score,
   the samples it rested on: device and seq range), the action and its target device; one trace id from here to
   the gateway's answer. A policy in mode ``off``, stopped by an operator (a hold on ``policy:NAME``), or with a
   decision still open on the same asset decides nothing.
2. **checked**: each check with the value it saw: a technician's hold on the asset (manual override), the target
   device's newest reading at most ``fresh_s`` old, the machine's mode, every interlock. One that fails holds the
   decision (``held``).
3. mode ``dry-run``: recorded as what it would have sent (``dry_run``), never sent.
4. an approval class ``one`` / ``two``: ``awaiting_approval`` until enough different people approve (``approve``);
   one rejection ends it (``rejected``); past its ``ttl_s`` it ``expired``. Approved, the checks run again (the
   world may have moved) before anything is sent.
5. **sent**: a command (``CommandService``) with the decision's id as its idempotency key, the trace id, and the time
   the decision has left as its lifetime; then **answered** with the gateway's answer (``applied`` with the value
   read back, ``refused``, ``failed``, ``expired``) and, ``EFFECT_AFTER_S`` after it applied, the **effect** seen in
   the telemetry (``verified``).

Every step is a record of the hash-chained decision log (``store.record_decision``), written with the decision's
new state in one transaction; a state change is compare-and-set, so two approvals at once cannot both send.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from edgeloop.actions.checks import Check, run_checks, target_device
from edgeloop.actions.commands import CommandService
from edgeloop.actions.policy import (
    AlertTrigger,
    PersonTrigger,
    Policy,
    PolicySet,
    ScheduleTrigger,
    SetpointAction,
    WorkOrderAction,
    parse_policies,
)
from edgeloop.actions.readings import LatestReadings, Reading
from edgeloop.clock import Clock
from edgeloop.errors import ConflictError, NotFoundError
from edgeloop.messages import Alert, AlertStatus
from edgeloop.registry import Registry
from edgeloop.store.actions import GENESIS, DecisionEntry, DecisionRecord, HoldRecord, PolicyDocument, entry_digest
from edgeloop.store.alerting import WorkOrderRecord
from edgeloop.store.base import AuditRecord, Store

__all__ = ["EFFECT_AFTER_S", "ActionEngine", "Check", "LogCheck", "verify_log"]

log = logging.getLogger(__name__)
MAX_QUEUED = 10_000
EFFECT_AFTER_S = 30.0
OPEN = ("awaiting_approval", "sent")
NEEDED = {"none": 0, "one": 1, "two": 2}
QUIET = ("maintenance", "silenced")  # an alert raised during planned work, or silenced by a person, acts on nothing


@dataclass(frozen=True, slots=True)
class _Trigger:
    tenant: str
    asset: str
    cause: str  # "alert 41 (bearing-wear)", "schedule every 3600 s", "person ana"
    facts: dict[str, Any]
    trace: str
    rule: str | None = None  # the alert's rule (alert triggers)
    only: str | None = None  # a person runs this one policy
    by: str = "system"


class ActionEngine:
    def __init__(self, *, store: Store, registry: Registry, commands: CommandService, readings: LatestReadings,
                 clock: Clock, audit: Callable[[AuditRecord], Awaitable[None]] | None = None,
                 effect_after_s: float = EFFECT_AFTER_S) -> None:
        self.store = store
        self.effect_after_s = effect_after_s
        self.registry = registry
        self.commands = commands
        self.readings = readings
        self.clock = clock
        self.audit = audit or store.audit
        self._documents: dict[str, tuple[int, PolicySet]] = {}
        self._queue: collections.deque[_Trigger] = collections.deque()
        self._scheduled: dict[tuple[str, str, str], int] = {}  # (tenant, policy, asset) -> last run
        self._lock = asyncio.Lock()
        self.dropped = 0

    # -- policies ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        for doc in await self.store.latest_policies():
            self._documents[doc.tenant] = (doc.version, parse_policies(doc.text, origin=f"policies of {doc.tenant}"))

    def policies(self, tenant: str) -> tuple[int, PolicySet]:
        """The tenant's policies in force and their version (0: none yet)."""
        return self._documents.get(tenant, (0, PolicySet()))

    async def put_policies(self, tenant: str, text: str, *, by: str, source: str = "") -> PolicyDocument:
        """Validate (``ConfigError`` names the line) and put in force a new version of the tenant's policies."""
        if tenant not in self.registry.tenants:
            raise NotFoundError("tenant", tenant)
        parsed = await asyncio.to_thread(parse_policies, text, origin="policies")
        now = self.clock.now_ms()
        doc = await self.store.put_policies(tenant, text, by=by, at_ms=now)
        self._documents[tenant] = (doc.version, parsed)
        modes = ", ".join(f"{p.name} {p.mode}" for p in parsed.policies) or "none"
        await self.audit(AuditRecord(ts_ms=now, actor=by, action="policies.set", target=tenant, outcome="ok",
                                     detail=f"version {doc.version}: {modes}", source=source))
        return doc

    # -- triggers ---------------------------------------------------------------------------------------------
    def on_alerts(self, alerts: Sequence[Alert]) -> None:
        """Alerts that just opened (the alert service calls it after storing them)."""
        for alert in alerts:
            if alert.status != AlertStatus.OPEN or alert.tenant not in self._documents or \
                    alert.suppressed in QUIET:
                continue
            facts = {"alert": alert.id, "rule": alert.kind, "incident": alert.incident, "device": alert.device,
                     "model": alert.model, "score": alert.score, "severity": str(alert.severity),
                     "first_seen": alert.first_seen, "last_seen": alert.last_seen,
                     "samples": {"device": alert.device,
                                 "seqs": self.readings.seqs(alert.device, alert.first_seen, alert.last_seen)}}
            self._enqueue(_Trigger(tenant=alert.tenant, asset=alert.asset, cause=f"alert {alert.id} ({alert.kind})",
                                   facts=facts, trace=secrets.token_hex(16), rule=alert.kind))

    async def run_person(self, tenant: str, policy: str, asset: str, *, by: str) -> DecisionRecord:
        """A person runs ``policy`` on ``asset`` now (its checks, approvals and mode apply as always)."""
        version, found = self.policies(tenant)
        chosen = found.by_name().get(policy)
        if chosen is None:
            raise NotFoundError("policy", policy)
        if not isinstance(chosen.trigger, PersonTrigger):
            raise ConflictError(f"policy {policy} is not run by a person (its trigger is "
                                f"{chosen.trigger.__struct_config__.tag})")
        if asset not in self.registry.assets or self.registry.tenant_of("asset", asset) != tenant:
            raise NotFoundError("asset", asset)
        trigger = _Trigger(tenant=tenant, asset=asset, cause=f"person {by}", facts={"person": by},
                           trace=secrets.token_hex(16), only=policy, by=by)
        async with self._lock:
            made = await self._decide(trigger, chosen, version)
        if made is None:
            raise ConflictError(f"policy {policy} decided nothing on {asset}: it is off, stopped, or a decision of it "
                                "is still open there")
        return made

    def _enqueue(self, trigger: _Trigger) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            log.error("actions: %d triggers wait already; %s on %s is dropped", MAX_QUEUED, trigger.cause,
                      trigger.asset)
            return
        self._queue.append(trigger)

    # -- the loop ---------------------------------------------------------------------------------------------
    async def run(self, every_s: float = 1.0) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # the loop goes on; one bad step must not stop the engine
                log.exception("the actions engine's step failed")
            await asyncio.sleep(every_s)

    async def step(self) -> None:
        """Decide on queued triggers and due schedules, then move open decisions on."""
        async with self._lock:
            while self._queue:
                trigger = self._queue.popleft()
                version, found = self.policies(trigger.tenant)
                for policy in found.policies:
                    if _fires(policy, trigger):
                        await self._decide(trigger, policy, version)
            await self._schedules()
            await self._advance()

    async def _schedules(self) -> None:
        now = self.clock.now_ms()
        for tenant, (version, found) in self._documents.items():
            for policy in found.policies:
                if not isinstance(policy.trigger, ScheduleTrigger):
                    continue
                for asset in policy.trigger.assets:
                    key = (tenant, policy.name, asset)
                    last = self._scheduled.get(key)
                    if last is not None and now - last < policy.trigger.every_s * 1000:
                        continue
                    self._scheduled[key] = now
                    await self._decide(_Trigger(tenant=tenant, asset=asset, cause=f"schedule every "
                                                f"{policy.trigger.every_s:g} s", facts={"schedule": now},
                                                trace=secrets.token_hex(16)), policy, version)

    # -- deciding ---------------------------------------------------------------------------------------------
    async def _decide(self, trigger: _Trigger, policy: Policy, version: int) -> DecisionRecord | None:
        now = self.clock.now_ms()
        world = LiveWorld(self.readings, self.store, now)
        if policy.mode == "off" or await world.hold(trigger.tenant, f"policy:{policy.name}") is not None:
            return None
        if trigger.asset not in self.registry.assets:
            return None
        for state in OPEN:  # one open decision of a policy per asset
            if any(d.policy == policy.name for d in await self.store.list_decisions(
                    tenant=trigger.tenant, asset=trigger.asset, state=state, limit=100)):
                return None
        device = target_device(policy, trigger.asset, self.registry)
        decision = DecisionRecord(
            id=f"dec-{secrets.token_hex(8)}", tenant=trigger.tenant, asset=trigger.asset, device=device or "",
            policy=policy.name, policy_version=version, mode=policy.mode, state="held", created_ms=now,
            updated_ms=now, expires_ms=now + int(policy.ttl_s * 1000), trace=trigger.trace, cause=trigger.cause,
            action=_describe(policy), needed=NEEDED[policy.approval])
        decided = self._entry(decision, "decided", trigger.by, {
            "policy": policy.name, "policy_version": version, "mode": policy.mode, "approval": policy.approval,
            "action": _action_body(policy), "device": device, "cause": trigger.cause, "trace": trigger.trace,
            **trigger.facts})
        checks = await self._checks(policy, decision, now)
        entries = [decided, self._entry(decision, "checked", "system", {"checks": [asdict(c) for c in checks]})]
        failed = [c for c in checks if not c.ok]
        if failed:
            decision = replace(decision, state="held")
            entries.append(self._entry(decision, "held", "system", {"reason": "; ".join(c.detail for c in failed)}))
            log.warning("policy %s on %s held: %s", policy.name, trigger.asset, entries[-1].body)
        elif policy.mode == "dry-run":
            decision = replace(decision, state="dry_run")
            entries.append(self._entry(decision, "dry_run", "system", {"would": _action_body(policy),
                                                                       "device": device}))
        elif decision.needed:
            decision = replace(decision, state="awaiting_approval")
            entries.append(self._entry(decision, "awaiting_approval", "system", {"needed": decision.needed}))
        else:
            decision = replace(decision, state="approved")  # no approval needed, mode on: act now
        await self.store.record_decision(decision, entries, new=True)
        if decision.state == "approved":
            return await self._act(decision, policy, by=trigger.by)
        return decision

    async def _checks(self, policy: Policy, decision: DecisionRecord, now: int) -> list[Check]:
        return await run_checks(policy, tenant=decision.tenant, asset=decision.asset, device=decision.device,
                                world=LiveWorld(self.readings, self.store, now), registry=self.registry)

    # -- approvals and acting -----------------------------------------------------------------------------------
    async def approve(self, decision_id: str, *, by: str, approve: bool, note: str = "",
                      tenant: str | None = None) -> DecisionRecord:
        """A person's approval (or rejection) of a decision awaiting it; ``ConflictError`` for a second approval by
        the same person, or a decision not awaiting approval."""
        async with self._lock:
            decision = await self.store.get_decision(decision_id)
            if decision is None or (tenant is not None and decision.tenant != tenant):
                raise NotFoundError("decision", decision_id)
            if decision.state != "awaiting_approval":
                raise ConflictError(f"decision {decision_id} is {decision.state}, not awaiting approval")
            now = self.clock.now_ms()
            if now >= decision.expires_ms:
                await self._expire(decision, now)
                raise ConflictError(f"decision {decision_id} expired before it was approved")
            entries = await self.store.decision_entries(decision_id)
            if any(e.kind == "approved" and e.actor == by for e in entries):
                raise ConflictError(f"{by} approved decision {decision_id} already: the second approval must come "
                                    "from another person")
            if not approve:
                rejected = replace(decision, state="rejected", updated_ms=now)
                await self._move(decision, rejected, [self._entry(rejected, "rejected", by, {"note": note})])
                return rejected
            approved = replace(decision, approvals=decision.approvals + 1, updated_ms=now)
            entry = self._entry(approved, "approved", by, {"note": note, "approvals": approved.approvals,
                                                            "needed": approved.needed})
            if approved.approvals < approved.needed:
                await self._move(decision, approved, [entry])
                return approved
            policy = self._policy_of(approved)
            if policy is None:
                ended = replace(approved, state="held", updated_ms=now)
                await self._move(decision, ended, [entry, self._entry(ended, "held", "system", {
                    "reason": f"policy {approved.policy} is no longer in force"})])
                return ended
            checks = await self._checks(policy, approved, now)
            checked = self._entry(approved, "checked", "system", {"checks": [asdict(c) for c in checks]})
            failed = [c for c in checks if not c.ok]
            if failed:
                held = replace(approved, state="held")
                await self._move(decision, held, [entry, checked, self._entry(held, "held", "system", {
                    "reason": "; ".join(c.detail for c in failed)})])
                return held
            ready = replace(approved, state="approved")  # _act moves it on to sent (or done)
            await self._move(decision, ready, [entry, checked])
            approvers = [e.actor for e in entries if e.kind == "approved"] + [by]
            return await self._act(ready, policy, by=",".join(approvers))

    async def _act(self, decision: DecisionRecord, policy: Policy, *, by: str) -> DecisionRecord:
        now = self.clock.now_ms()
        action = policy.action
        if isinstance(action, WorkOrderAction):
            order = WorkOrderRecord(id=f"wo-{secrets.token_hex(6)}", tenant=decision.tenant, asset=decision.asset,
                                    opened_ms=now, opened_by=f"policy:{policy.name}", note=action.title[:1000])
            await self.store.put_work_order(order)
            done = replace(decision, state="done", updated_ms=now)
            await self._move(decision, done, [self._entry(done, "work_order", "system", {"work_order": order.id,
                                                                                        "title": action.title})])
            return done
        ttl_s = max(1.0, (decision.expires_ms - now) / 1000)
        cmd = await self.commands.issue(device=decision.device, action=action.actuator, value=action.value,
                                        key=decision.id, ttl_s=ttl_s, issued_by=f"policy:{policy.name}" if
                                        by == "system" else by, decision=decision.id, trace=decision.trace)
        sent = replace(decision, state="sent", command=cmd.id, updated_ms=now)
        await self._move(decision, sent, [self._entry(sent, "sent", "system", {
            "command": cmd.id, "seq": cmd.seq, "key": cmd.key, "device": cmd.device, "action": cmd.action,
            "value": cmd.value, "expires": cmd.expires, "trace": cmd.trace})])
        return sent

    async def _advance(self) -> None:
        """Open decisions move on: approvals that ran out of time, answers from the gateways, effects."""
        now = self.clock.now_ms()
        for decision in await self.store.list_decisions(state="awaiting_approval", limit=1000):
            if now >= decision.expires_ms:
                await self._expire(decision, now)
        for decision in await self.store.list_decisions(state="approved", limit=1000):  # a stop between the two
            policy = self._policy_of(decision)
            if now >= decision.expires_ms or policy is None:
                await self._expire(decision, now)
            else:  # its idempotency key (the decision's id) makes a second issue return the first command
                await self._act(decision, policy, by="system")
        for decision in await self.store.list_decisions(state="sent", limit=1000):
            cmd = await self.store.get_command(decision.command)
            if cmd is None or cmd.status in ("pending", "sent"):
                continue
            answered = replace(decision, state=cmd.status, updated_ms=now)
            await self._move(decision, answered, [self._entry(answered, "answered", decision.device, {
                "command": cmd.id, "status": cmd.status, "code": cmd.code, "reason": cmd.reason,
                "before": cmd.value_before, "read_back": cmd.read_back, "at": cmd.status_ms})])
        for decision in await self.store.list_decisions(state="applied", limit=1000):
            if now - decision.updated_ms < self.effect_after_s * 1000:
                continue
            policy = self._policy_of(decision)
            channel = policy.action.channel if policy is not None and isinstance(policy.action, SetpointAction) \
                else None
            seen = self.readings.reading(decision.device, channel) if channel else None
            verified = replace(decision, state="verified", updated_ms=now)
            await self._move(decision, verified, [self._entry(verified, "effect", "system", {
                "channel": channel, "value": seen.value if seen else None, "ts": seen.ts if seen else None,
                "newest_reading": self.readings.newest_ts(decision.device)})])

    async def _expire(self, decision: DecisionRecord, now: int) -> None:
        expired = replace(decision, state="expired", updated_ms=now)
        await self._move(decision, expired, [self._entry(expired, "expired", "system", {
            "approvals": decision.approvals, "needed": decision.needed})])

    async def _move(self, before: DecisionRecord, after: DecisionRecord, entries: list[DecisionEntry]) -> None:
        if not await self.store.record_decision(after, entries, expect_state=before.state):
            raise ConflictError(f"decision {before.id} changed meanwhile")

    # -- holds (manual override of an asset, an operator's stop of a policy) ---------------------------------------
    async def hold(self, tenant: str, target: str, *, by: str, duration_s: float, reason: str,
                   source: str = "") -> HoldRecord:
        """Hold automation on ``target`` (an asset id, or ``policy:NAME``) for ``duration_s``."""
        if target.startswith("policy:"):
            if target.removeprefix("policy:") not in self.policies(tenant)[1].by_name():
                raise NotFoundError("policy", target.removeprefix("policy:"))
        elif target not in self.registry.assets or self.registry.tenant_of("asset", target) != tenant:
            raise NotFoundError("asset", target)
        now = self.clock.now_ms()
        hold = HoldRecord(id=f"hold-{secrets.token_hex(6)}", tenant=tenant, target=target, held_by=by,
                          reason=reason[:500], created_ms=now, until_ms=now + int(duration_s * 1000))
        await self.store.add_hold(hold)
        await self.audit(AuditRecord(ts_ms=now, actor=by, action="automation.hold", target=target, outcome="ok",
                                     detail=f"{hold.id} for {duration_s:g} s: {reason}", source=source))
        return hold

    async def release(self, hold_id: str, *, by: str, tenant: str | None = None, source: str = "") -> HoldRecord:
        now = self.clock.now_ms()
        ended = await self.store.end_hold(hold_id, by=by, at_ms=now, tenant=tenant)
        if ended is None:
            raise NotFoundError("hold", hold_id)
        await self.audit(AuditRecord(ts_ms=now, actor=by, action="automation.release", target=ended.target,
                                     outcome="ok", detail=ended.id, source=source))
        return ended

    # -- helpers ------------------------------------------------------------------------------------------------
    def _policy_of(self, decision: DecisionRecord) -> Policy | None:
        return self.policies(decision.tenant)[1].by_name().get(decision.policy)

    def _entry(self, decision: DecisionRecord, kind: str, actor: str, body: dict[str, Any]) -> DecisionEntry:
        return DecisionEntry(decision=decision.id, tenant=decision.tenant, asset=decision.asset,
                             ts=self.clock.now_ms(), kind=kind, actor=actor[:200],
                             body=json.dumps(body, sort_keys=True, separators=(",", ":"), default=str))


def _fires(policy: Policy, trigger: _Trigger) -> bool:
    if trigger.only is not None:
        return policy.name == trigger.only
    if isinstance(policy.trigger, AlertTrigger):
        return trigger.rule is not None and policy.trigger.rule in ("*", trigger.rule) and (
            not policy.trigger.assets or trigger.asset in policy.trigger.assets)
    return False


def _describe(policy: Policy) -> str:
    action = policy.action
    if isinstance(action, SetpointAction):
        return f"{action.actuator} -> {action.value:g}"
    return f"work order: {action.title}"


def _action_body(policy: Policy) -> dict[str, Any]:
    action = policy.action
    if isinstance(action, SetpointAction):
        return {"kind": "setpoint", "actuator": action.actuator, "value": action.value}
    return {"kind": "work_order", "title": action.title}


@dataclass(frozen=True, slots=True)
class LogCheck:
    """What ``verify_log`` found: the records walked, the newest hash (keep it elsewhere: a record cut off the
    end of the log shows only against it), and each break of the chain."""

    records: int
    head: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_log(store: Store, *, max_problems: int = 100) -> LogCheck:
    """Walk the whole decision log: each record's hash must be its content's, and its ``prev`` the hash of the
    record before it. An altered record fails the first; a deleted one the second."""
    prev, count, after = GENESIS, 0, 0
    problems: list[str] = []
    while True:
        page = await store.decision_log(after_id=after)
        if not page:
            break
        for entry in page:
            count += 1
            if entry.prev != prev:
                problems.append(f"record {entry.id} ({entry.decision} {entry.kind}): it follows {entry.prev[:12]}, "
                                f"but the record before it is {prev[:12]}: a record before it was removed or changed")
            if entry_digest(entry, entry.prev) != entry.hash:
                problems.append(f"record {entry.id} ({entry.decision} {entry.kind}): its content does not match its "
                                "hash: it was altered")
            prev = entry.hash
            after = entry.id
        if len(problems) >= max_problems:
            break
    return LogCheck(records=count, head=prev, problems=problems[:max_problems])


class LiveWorld:
    """The world now: the newest readings (``LatestReadings``), the stored holds and commands."""

    def __init__(self, readings: LatestReadings, store: Store, now: int) -> None:
        self.readings = readings
        self.store = store
        self.now = now

    async def newest_ts(self, device: str) -> int | None:
        return self.readings.newest_ts(device)

    async def reading(self, device: str, channel: str) -> Reading | None:
        return self.readings.reading(device, channel)

    async def hold(self, tenant: str, target: str) -> HoldRecord | None:
        found = await self.store.list_holds(tenant=tenant, target=target, active_at=self.now, limit=1)
        return found[0] if found else None

    async def changes(self, devices: Sequence[str], actuator: str, since: int) -> int:
        count = 0
        for device in devices:
            count += sum(1 for c in await self.store.list_commands(device=device, since=since, limit=1000)
                         if c.action == actuator and c.status not in ("refused", "expired"))
        return count
