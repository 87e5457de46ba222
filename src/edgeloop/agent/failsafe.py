"""Local fail-safe rules: decided on the agent from the samples it reads, online or offline.

A rule watches one channel of one device. When the value stays above (or below) its limit
for ``for_s`` seconds of sample time, the rule *trips* and its action (a register or node
write on the machine's PLC) is due. While the rule's ``override`` channel (a key switch on
the machine, read like any other point) is non-zero, a person has taken over: the rule does
not act and reports that it was overridden. A missing reading (``None``) neither trips nor
clears a rule. After tripping, a rule re-arms only when the condition has cleared.

This module decides; the runner performs the writes and records the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeloop.agent.config import FailSafeRule, ModbusWrite
from edgeloop.messages import Sample

Verdict = Literal["trip", "overridden", "clear"]


@dataclass(frozen=True, slots=True)
class Decision:
    rule: FailSafeRule
    verdict: Verdict
    ts: int
    value: float | None
    message: str


@dataclass(slots=True)
class _State:
    since_ms: int | None = None  # when the condition became true (sample time)
    tripped: bool = False  # acted (or is acting): waits for the condition to clear
    overridden: bool = False  # reported as overridden in this episode


class FailSafe:
    def __init__(self, rules: list[FailSafeRule]) -> None:
        self.rules = rules
        self._by_device: dict[str, list[FailSafeRule]] = {}
        for rule in rules:
            self._by_device.setdefault(rule.device, []).append(rule)
        self._state = {rule.name: _State() for rule in rules}
        self._last: dict[tuple[str, str], float | None] = {}  # (device, channel) -> last value seen

    def observe(self, device: str, sample: Sample) -> list[Decision]:
        """Feed one sample (in time order per device); returns what the rules decided on it."""
        rules = self._by_device.get(device)
        if not rules:
            return []
        for channel, value in sample.values.items():
            self._last[(device, channel)] = value
        out: list[Decision] = []
        for rule in rules:
            if rule.channel in sample.values:
                decision = self._step(rule, sample.ts, sample.values[rule.channel])
                if decision is not None:
                    out.append(decision)
        return out

    def rearm(self, rule: FailSafeRule) -> None:
        """The action could not be performed: let the next sample try again."""
        self._state[rule.name].tripped = False

    def overridden(self, rule: FailSafeRule) -> bool:
        if rule.override is None:
            return False
        value = self._last.get((rule.device, rule.override))
        return value is not None and value != 0

    def _step(self, rule: FailSafeRule, ts: int, value: float | None) -> Decision | None:
        st = self._state[rule.name]
        if value is None:
            return None
        limit = rule.above if rule.above is not None else rule.below
        assert limit is not None  # checked when the configuration was parsed
        over = value > limit if rule.above is not None else value < limit
        if not over:
            was = st.tripped or st.overridden
            st.since_ms, st.tripped, st.overridden = None, False, False
            if was:
                return Decision(rule, "clear", ts, value, f"{rule.channel} back to {value:g}: {rule.name} re-armed")
            return None
        if st.since_ms is None:
            st.since_ms = ts
        if st.tripped or ts - st.since_ms < rule.for_s * 1000:
            return None
        side = ">" if rule.above is not None else "<"
        what = f"{rule.channel} {value:g} {side} {limit:g} for {(ts - st.since_ms) / 1000:.1f} s"
        if self.overridden(rule):
            if st.overridden:
                return None
            st.overridden = True
            return Decision(rule, "overridden", ts, value,
                            f"{what}: local override {rule.override} is on, {rule.name} does not act")
        st.tripped = True
        return Decision(rule, "trip", ts, value, f"{what}: {rule.name} acts ({describe_action(rule)})")


def describe_action(rule: FailSafeRule) -> str:
    a = rule.action
    if isinstance(a, ModbusWrite):
        return f"write {a.value} to register {a.address} of {a.source}"
    return f"write {a.value} to node {a.node} of {a.source}"
