"""Alarm shaping: one alarm per episode from a stream of scores (used by ``novelty`` and ``ensemble``).

An operator (and NAB) wants one alarm per anomalous episode, and fewer alarms from a channel that is
restless by nature. :class:`AlarmShaper` turns a channel's raw scores ``r_t`` (in any units where
larger is more anomalous) into shaped scores, row by row and using only rows up to the one scored:

- **a bar that rises with each alarm**: the output is ``r_t / bar``. Each alarm (an output
  ``>= alarm``) multiplies the bar by ``bar_gain``; between alarms it relaxes back towards 1 with
  half-life ``bar_halflife`` rows. A channel that alarms often (pure noise, a restless signal) so has
  to be more anomalous to alarm again, and one that has been quiet for long is back at full
  sensitivity.
- **a refractory period**: for ``refractory`` rows after an alarm the output is 0, unless the row is
  ``escalate`` times as anomalous (after the bar) as the alarm that started the period, when it
  alarms again (and starts a new period).

``alarm`` should be about the level at which the shaped score is acted upon (the detector's
threshold): only outputs that reach it start a refractory period and raise the bar. The defaults
are ``novelty``'s (scores in units of the range seen, alarm 0.05 = 5 % of the range, chosen on NAB as
a whole; see that module); the ensemble's univariate preset sets its own, in decades of rarity.

``shape(r, t, commit=False)`` gives the output against the current state without changing it
(``score_one``); ``commit=True`` also records an alarm (``score_learn_many``/``learn_one``), so the
two paths agree row for row. ``t`` is the row index on the caller's own clock (rows learned), so
batching cannot move anything.
"""

from __future__ import annotations

import math

__all__ = ["AlarmShaper"]


class AlarmShaper:
    """The alarm state of one channel (see the module docstring)."""

    __slots__ = ("alarm", "bar", "bar_gain", "bar_row", "escalate", "last_alarm", "last_r", "log_bar_decay",
                 "refractory")

    def __init__(self, *, alarm: float = 0.05, refractory: int = 100, escalate: float = 3.0, bar_gain: float = 1.3,
                 bar_halflife: float = 2000.0) -> None:
        if alarm <= 0 or refractory < 0 or escalate < 1 or bar_gain < 1 or bar_halflife <= 0:
            raise ValueError("alarm shaping: need alarm > 0, refractory >= 0, escalate >= 1, bar_gain >= 1, "
                             "bar_halflife > 0")
        self.alarm = alarm
        self.refractory = refractory
        self.escalate = escalate
        self.bar_gain = bar_gain
        self.log_bar_decay = math.log(0.5) / bar_halflife
        self.last_alarm = -(10**18)  # row of the last alarm
        self.last_r = 0.0  # its shaped score
        self.bar = 1.0  # the bar at ``bar_row``
        self.bar_row = 0

    def shape(self, raw: float, t: int, commit: bool) -> float:
        """The shaped score of raw score ``raw`` at row ``t``; with ``commit`` an alarm is recorded."""
        bar = max(1.0, self.bar * math.exp(self.log_bar_decay * (t - self.bar_row)))
        out = raw / bar
        if out > 0.0:
            quiet = t - self.last_alarm < self.refractory
            if quiet and out <= self.escalate * self.last_r:
                out = 0.0
            elif out >= self.alarm and commit:
                self.last_alarm = t
                self.last_r = out
                self.bar = bar * self.bar_gain
                self.bar_row = t
        return out
