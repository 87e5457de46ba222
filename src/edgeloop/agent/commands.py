"""Platform commands on the gateway: the local safety envelope, decided here, whatever the platform asked.

A command (``messages.Command``) names an actuator of this gateway's configuration (``agent.yaml``
``actuators:``) and a value. Before anything moves, :func:`check` refuses it, with a code and a reason, when:

- ``expired``: its ``expires`` time has passed on this gateway's clock (a command that waited out an outage is
  never executed late);
- ``unknown_action``: no actuator of that name for that device;
- ``stale_seq``: the platform already had a newer command applied to the device (a late delivery never undoes a
  newer setpoint);
- ``out_of_range``: the value is outside the actuator's ``min``..``max``;
- ``rate_limited``: the actuator changed less than ``min_interval_s`` ago;
- ``overridden``: the device's ``override`` channel (a key switch read from the machine) is non-zero: a person
  has the machine;
- ``interlock``: an interlock's condition holds;
- ``stale_reading``: a reading the override or an interlock rests on is missing or older than ``max_age_s``.

Once the current value is read from the machine, :func:`check_step` refuses a change larger than ``max_step``
(``step_too_large``). Exactly-once (``duplicate`` for a second command with the same idempotency key, the first
answer again for a redelivered id) is the journal's command ledger (``journal.py``); the runner performs the
write and the read-back (``runner.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edgeloop.agent.config import Actuator
from edgeloop.conditions import condition_text, holds
from edgeloop.messages import Command

__all__ = ["Reading", "Refusal", "check", "check_step", "read_back_ok", "watched_channels"]

RefusalCode = Literal["invalid", "expired", "duplicate", "unknown_action", "stale_seq", "out_of_range",
                      "rate_limited", "overridden", "interlock", "stale_reading", "step_too_large", "busy"]


@dataclass(frozen=True, slots=True)
class Refusal:
    code: RefusalCode
    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """The newest reading of a channel: its value (None: no valid reading) and when it was read (ms)."""

    value: float | None
    ts: int


def watched_channels(actuators: list[Actuator]) -> set[tuple[str, str]]:
    """The (device, channel) readings the envelope rests on: every override and interlock channel."""
    out: set[tuple[str, str]] = set()
    for act in actuators:
        if act.override is not None:
            out.add((act.device, act.override))
        out.update((lock.device, lock.channel) for lock in act.interlocks)
    return out


def check(cmd: Command, act: Actuator | None, *, now_ms: int, applied_seq: int | None,
          last_change_ms: int | None, reading: Callable[[str, str], Reading | None]) -> Refusal | None:
    """The first reason ``cmd`` must not run now, or None. ``applied_seq``: the newest seq applied to the
    device; ``last_change_ms``: when the actuator last changed (both from the ledger)."""
    if now_ms >= cmd.expires:
        return Refusal("expired", f"expired {(now_ms - cmd.expires) / 1000:.1f} s ago (gateway clock)")
    if act is None:
        return Refusal("unknown_action", f"no actuator {cmd.action!r} for device {cmd.device} on this gateway")
    if applied_seq is not None and cmd.seq <= applied_seq:
        return Refusal("stale_seq", f"seq {cmd.seq} is not newer than seq {applied_seq}, already applied")
    if not act.min <= cmd.value <= act.max:
        return Refusal("out_of_range", f"{cmd.value:g} is outside the envelope {act.min:g}..{act.max:g}")
    if last_change_ms is not None and now_ms - last_change_ms < act.min_interval_s * 1000:
        return Refusal("rate_limited", f"{act.name} changed {(now_ms - last_change_ms) / 1000:.0f} s ago; at most "
                                       f"one change per {act.min_interval_s:g} s")
    max_age_ms = act.max_age_s * 1000
    if act.override is not None:
        found = _fresh(reading(act.device, act.override), now_ms, max_age_ms)
        if isinstance(found, Refusal):
            return Refusal(found.code, f"override {act.device}.{act.override}: {found.reason}")
        if found != 0:
            return Refusal("overridden", f"override {act.device}.{act.override} is on ({found:g}): a person has "
                                         "the machine")
    for lock in act.interlocks:
        found = _fresh(reading(lock.device, lock.channel), now_ms, max_age_ms)
        if isinstance(found, Refusal):
            return Refusal(found.code, f"interlock {lock.name} ({lock.device}.{lock.channel}): {found.reason}")
        if holds(lock, found):
            return Refusal("interlock", f"interlock {lock.name}: {lock.device}.{lock.channel} is {found:g} "
                                        f"({condition_text(lock)})")
    return None


def check_step(act: Actuator, current: float | None, value: float) -> Refusal | None:
    """Refuse a change of more than ``max_step`` from the value read from the machine (unknown: refused too)."""
    if act.max_step is None:
        return None
    if current is None:
        return Refusal("stale_reading", f"{act.name} could not be read before the write: max_step cannot be checked")
    if abs(value - current) > act.max_step:
        return Refusal("step_too_large", f"{current:g} -> {value:g} is a step of {abs(value - current):g}; at most "
                                         f"{act.max_step:g}")
    return None


def read_back_ok(act: Actuator, value: float, read_back: float | None) -> bool:
    """Whether the value read back after the write is the value asked for (within ``tolerance``; by default
    the register's resolution, its ``scale``)."""
    if read_back is None:
        return False
    tolerance = act.tolerance if act.tolerance is not None else getattr(act.write, "scale", 0.0) * 0.5 + 1e-9
    return abs(read_back - value) <= tolerance


def _fresh(found: Reading | None, now_ms: int, max_age_ms: float) -> float | Refusal:
    if found is None or found.value is None:
        return Refusal("stale_reading", "no valid reading")
    age = now_ms - found.ts
    if age > max_age_ms:
        return Refusal("stale_reading", f"newest reading is {age / 1000:.1f} s old (at most {max_age_ms / 1000:g} s)")
    return found.value
