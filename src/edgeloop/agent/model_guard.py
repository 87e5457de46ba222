"""The agent's local guardrail over a newly installed model version (pure: no I/O, no clock).

While a version is on probation (installed less than ``probation_h`` ago), every scoring attempt is one outcome
in a sliding window of the last ``window`` attempts: a normal window, an alarm (score at or above the threshold)
or an error (ONNX Runtime raised, or the score is not a finite number). The version **breaches** when

* ``max_errors`` or more of the attempts in the window failed (a broken model must not wait for a full window), or
* the window is full and the share of alarms among its scored windows is over the limit.

The limit is, in order: the configured ``max_alarm_rate``; the model card's ``max_alarm_rate``; ten times the
card's ``expected_alarm_rate`` (the share of held-out windows above threshold), within [1 %, 50 %]; else 5 %.
The decision is the agent's own, offline too: no platform is needed to revert.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_ALARM_RATE = 0.05
CARD_FACTOR = 10.0  # how far over the card's expected alarm rate a version may run before it is reverted
_OK, _ALARM, _ERROR = 0, 1, 2


@dataclass(frozen=True, slots=True)
class GuardLimits:
    window: int  # attempts in the sliding window
    max_alarm_rate: float  # share of scored windows above threshold, over a full window
    max_errors: int  # inference errors within the window
    source: str  # where max_alarm_rate came from: config | card max_alarm_rate | card expected_alarm_rate | default


def guard_limits(*, window: int, max_errors: int, configured: float | None,
                 metrics: Mapping[str, float]) -> GuardLimits:
    """The limits for one version: the configuration's, else derived from its model card (see the module doc)."""
    if configured is not None:
        return GuardLimits(window, configured, max_errors, "config")
    card_max = metrics.get("max_alarm_rate")
    if card_max is not None and math.isfinite(card_max) and 0 < card_max <= 1:
        return GuardLimits(window, float(card_max), max_errors, "card max_alarm_rate")
    expected = metrics.get("expected_alarm_rate")
    if expected is not None and math.isfinite(expected) and expected >= 0:
        return GuardLimits(window, min(0.5, max(0.01, CARD_FACTOR * float(expected))), max_errors,
                           "card expected_alarm_rate")
    return GuardLimits(window, DEFAULT_MAX_ALARM_RATE, max_errors, "default")


@dataclass(frozen=True, slots=True)
class Breach:
    """Why a version on probation is reverted, with the figures that decided it."""

    reason: Literal["alarm_rate", "errors"]
    alarm_rate: float  # alarms / scored windows in the sliding window
    limit: float
    windows: int  # attempts in the window (scored + errors)
    alarms: int
    errors: int
    last_error: str

    def describe(self) -> str:
        if self.reason == "errors":
            return f"{self.errors} inference errors in the last {self.windows} windows: {self.last_error}"
        return (f"{self.alarms} of {self.windows - self.errors} scored windows above threshold "
                f"({self.alarm_rate:.1%}, limit {self.limit:.1%})")


class ModelGuard:
    """The sliding window of one version's outcomes; bounded by ``limits.window``."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self._outcomes: collections.deque[int] = collections.deque(maxlen=limits.window)
        self._alarms = 0
        self._errors = 0
        self.last_error = ""

    def _push(self, outcome: int) -> Breach | None:
        if len(self._outcomes) == self._outcomes.maxlen:
            gone = self._outcomes[0]
            self._alarms -= gone == _ALARM
            self._errors -= gone == _ERROR
        self._outcomes.append(outcome)
        self._alarms += outcome == _ALARM
        self._errors += outcome == _ERROR
        return self._check()

    @property
    def judged(self) -> bool:
        """A full window of outcomes has been judged (a version that has not breached by then kept its limits once)."""
        return len(self._outcomes) == self.limits.window

    def scored(self, score: float, threshold: float) -> Breach | None:
        """One scored window; a score that is not finite is an error."""
        if not math.isfinite(score):
            return self.failed(f"the model output {score}")
        return self._push(_ALARM if score >= threshold else _OK)

    def failed(self, error: str) -> Breach | None:
        """An attempt that raised (or gave no usable score)."""
        self.last_error = error[:500]
        return self._push(_ERROR)

    def _check(self) -> Breach | None:
        n = len(self._outcomes)
        scored = n - self._errors
        rate = self._alarms / scored if scored else 0.0
        if self._errors >= self.limits.max_errors:
            return Breach("errors", rate, self.limits.max_alarm_rate, n, self._alarms, self._errors, self.last_error)
        if n == self.limits.window and scored and rate > self.limits.max_alarm_rate:
            return Breach("alarm_rate", rate, self.limits.max_alarm_rate, n, self._alarms, self._errors,
                          self.last_error)
        return None
