"""Action policies as data: what the platform may do to a machine, when, under which checks and with whose
approval. A YAML or JSON document, validated with the line of each error (like the alert rules)::

    policies:
      - name: slow-press-on-bearing-wear
        mode: dry-run                       # off | dry-run (decides and records, never sends) | on
        trigger: {kind: alert, rule: bearing-wear}   # or {kind: schedule, every_s: 3600, assets: [...]},
                                                    # {kind: person}
        action: {kind: setpoint, actuator: speed, value: 900}     # or {kind: work_order, title: ...}
        preconditions:
          fresh_s: 10                       # the target device's newest reading at most 10 s old
          mode: {channel: mode, equals: 1}  # the machine is in the expected mode
        interlocks:                         # any that holds forbids the action
          - {kind: state, name: b-stopped, device: pump-b, channel: running, equals: 0}
          - {kind: peers, name: line-stopped, channel: running, equals: 0}   # another machine of the line
          - {kind: rate, name: one-per-10-min, max: 1, window_s: 600}        # changes of this actuator per asset
        approval: one                       # none | one | two (two different people)
        ttl_s: 300                          # the decision (and its command) lapses after this

A RUL horizon or a detector finding triggers a policy through the alert rule that watches it (``rul`` and
``score`` rules): ``{kind: alert, rule: <that rule>}``.

YAML reads a bare ``on`` / ``off`` as a boolean: ``mode: on`` and ``mode: off`` mean the modes of those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from edgeloop.errors import ConfigError
from edgeloop.messages import CHANNEL_PATTERN, ID_PATTERN
from edgeloop.yaml_lines import convert, item_label, load_yaml, read_text, where

__all__ = ["Policy", "PolicySet", "load_policies", "parse_policies", "policies_from_obj"]

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
DeviceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Channel = Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]


class AlertTrigger(msgspec.Struct, tag="alert", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """An alert of rule ``rule`` opens (``*``: of any rule) on an asset in ``assets`` (empty: any)."""

    rule: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    assets: list[DeviceId] = msgspec.field(default_factory=list)


class ScheduleTrigger(msgspec.Struct, tag="schedule", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Every ``every_s``, on each asset of ``assets``."""

    every_s: Annotated[float, msgspec.Meta(ge=60, le=30 * 86_400)]
    assets: Annotated[list[DeviceId], msgspec.Meta(min_length=1, max_length=1000)]


class PersonTrigger(msgspec.Struct, tag="person", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """A person runs it on an asset (``edgeloop actions run``)."""


Trigger = AlertTrigger | ScheduleTrigger | PersonTrigger


class SetpointAction(msgspec.Struct, tag="setpoint", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Set actuator ``actuator`` (of the gateway that runs the target device) to ``value``. The target device is
    ``device``, else the asset's device that reports ``channel`` (or, without it, its only device)."""

    actuator: Name
    value: float
    device: DeviceId | None = None
    channel: Channel | None = None


class WorkOrderAction(msgspec.Struct, tag="work_order", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Open a work order on the asset (no machine moves)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


Action = SetpointAction | WorkOrderAction


class Condition(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``channel`` is above ``above``, below ``below`` or equal to ``equals`` (give one)."""

    channel: Channel
    above: float | None = None
    below: float | None = None
    equals: float | None = None


class Preconditions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What must hold of the target device before acting: its newest reading at most ``fresh_s`` old; the machine
    in the expected ``mode`` (a condition on its newest reading)."""

    fresh_s: Seconds = 30.0
    mode: Condition | None = None


class StateInterlock(msgspec.Struct, tag="state", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Never while ``channel`` of ``device`` is above/below/equal (its newest reading; none or stale holds too)."""

    name: Name
    device: DeviceId
    channel: Channel
    above: float | None = None
    below: float | None = None
    equals: float | None = None
    fresh_s: Seconds = 60.0


class PeersInterlock(msgspec.Struct, tag="peers", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Never while another asset of the same line has ``channel`` above/below/equal (each of its devices that
    reports the channel; a missing or stale reading holds too)."""

    name: Name
    channel: Channel
    above: float | None = None
    below: float | None = None
    equals: float | None = None
    fresh_s: Seconds = 60.0


class RateInterlock(msgspec.Struct, tag="rate", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Never more than ``max`` commands of this actuator to an asset within ``window_s`` (every policy's)."""

    name: Name
    max: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    window_s: Seconds


Interlock = StateInterlock | PeersInterlock | RateInterlock


class Policy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    trigger: Trigger
    action: Action
    mode: Literal["off", "dry-run", "on"] = "dry-run"
    preconditions: Preconditions = msgspec.field(default_factory=Preconditions)
    interlocks: Annotated[list[Interlock], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    approval: Literal["none", "one", "two"] = "one"
    ttl_s: Annotated[float, msgspec.Meta(ge=10, le=86_400)] = 300.0
    description: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class PolicySet(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    policies: Annotated[list[Policy], msgspec.Meta(max_length=500)] = msgspec.field(default_factory=list)

    def by_name(self) -> dict[str, Policy]:
        return {p.name: p for p in self.policies}


def parse_policies(text: str, *, origin: str = "policies") -> PolicySet:
    """Parse YAML or JSON; ``ConfigError`` names the line, the policy and the problem."""
    doc, node = load_yaml(text, origin)
    return policies_from_obj(doc, origin=origin, node=node)


def load_policies(path: Path) -> PolicySet:
    return parse_policies(read_text(path, "policies file"), origin=str(path))


def policies_from_obj(doc: Any, *, origin: str = "policies", node: Any = None) -> PolicySet:
    if not isinstance(doc, dict) or "policies" not in doc:
        raise ConfigError(f"{origin}: expected a mapping with a 'policies' list")

    policies = doc.get("policies")
    if isinstance(policies, list):  # YAML 1.1 reads a bare on/off as true/false: mode: on is the mode "on"
        doc = {**doc, "policies": [{**p, "mode": {True: "on", False: "off"}[p["mode"]]}
                                   if isinstance(p, dict) and isinstance(p.get("mode"), bool) else p
                                   for p in policies]}
    found = convert(doc, PolicySet, origin=origin, node=node, label=item_label(doc, "policies", "name"))
    at = where(origin, node)
    seen: set[str] = set()
    for i, policy in enumerate(found.policies):
        spot = f"{at(f'$.policies[{i}]')} (policies[{i}] {policy.name!r})"
        if policy.name in seen:
            raise ConfigError(f"{spot}: the name is used twice")
        seen.add(policy.name)
        conditions: list[tuple[Condition | StateInterlock | PeersInterlock, str]] = \
            [(policy.preconditions.mode, "preconditions.mode")] if policy.preconditions.mode else []
        conditions += [(lock, f"interlock {lock.name!r}") for lock in policy.interlocks
                       if not isinstance(lock, RateInterlock)]
        for cond, what in conditions:
            if sum(x is not None for x in (cond.above, cond.below, cond.equals)) != 1:
                raise ConfigError(f"{spot}: {what}: give exactly one of above, below, equals")
        locks = [lock.name for lock in policy.interlocks]
        if len(set(locks)) != len(locks):
            raise ConfigError(f"{spot}: interlock names must be unique within the policy")
        if isinstance(policy.action, WorkOrderAction) and policy.interlocks:
            raise ConfigError(f"{spot}: interlocks guard machine actions; a work order has none")
    return found
