"""The statistics under the rollout gates (pure): a truncated Wald SPRT on the ratio of two Poisson rates, and a
distance between a score sample and a reference given as quantiles.

Why a sequential test: a wave should end as soon as the evidence is clear (a much worse candidate is rolled back
after a handful of false alarms, a clearly better one is not held for the whole soak), and looking at the counts
after every step must not inflate the error rates the way repeated fixed-sample tests would.

The rate test. The challenger raised ``x1`` events over exposure ``e1`` (asset-days), the champion ``x0`` over
``e0``. With Poisson counts, conditionally on ``n = x1 + x0`` the challenger's share is binomial,
``x1 | n ~ Bin(n, p(r))`` with ``p(r) = r e1 / (r e1 + e0)`` and ``r`` the ratio of the two rates: the nuisance
(the champion's own rate) drops out. Wald's SPRT of H0 ``r = 1`` against H1 ``r = r1`` (default 2) accumulates
the log-likelihood ratio ``llr = x1 log(p1/p0) + x0 log((1-p1)/(1-p0))`` and stops at the first crossing of
``upper = log((1-β)/α)`` (H1 accepted: the challenger is worse, the gate fails) or ``lower = log(β/(1-α))``
(H0 accepted: the challenger is not worse, the gate passes). Because ``p(r)`` grows with ``r`` (monotone
likelihood ratio), the test rejects a challenger with any ``r ≤ 1`` with probability at most that at ``r = 1``.

Stated error rates (``α = 0.05``, ``β = 0.10``), for the untruncated test: P(fail | r ≤ 1) ≈ α and
P(pass | r ≥ r1) ≈ β; Wald's inequalities bound them by ``α/(1-β)`` and ``β/(1-α)`` when evaluated after every
event (a step sees several events at once, which changes them little). With equal exposures the test needs on
average 37 events (both versions together) to decide when ``r = 1``, 45 when ``r = 2`` and 26 when ``r = 3``
(simulated, 20 000 runs).
``tests/test_campaign_gates.py`` checks both rates by Monte Carlo.

Truncation (the soak ends): an undecided test decides by the point estimate, conservatively: it passes if and only
if ``x1 · e0 ≤ truncation_ratio · x0 · e1`` (default ratio 1: the challenger's observed rate is not above the
champion's; ``x1 = 0`` always passes, ``x0 = 0 < x1`` always fails). This favours the champion: a wrongful rollback
keeps the proven version (the safe side), so with few events a good candidate is often rolled back. Measured by
``truncated_error_rates`` (equal exposures, 4000 trials, seed 7; "events" = expected events of both versions in the
soak):

    events   P(fail | r = 1)   P(pass | r = 2)   P(pass | r = 3)
      10          0.44              0.17              0.07
      20          0.44              0.08              0.01
      50          0.26              0.07              0.004
     100          0.08              0.08              0.005
     400          0.05              0.09              0.005     (truncation practically never reached)

So the stated α and β hold once a soak sees on the order of 100 events of both versions together; below about 20
no rule can tell r = 1 from r = 2, and a longer soak (or a wider wave) is the only remedy. ``truncation_ratio``
1.41 is Wald's own truncation rule (the sign of the llr with ``r1 = 2``): at 20 events it fails a good candidate
0.21 of the time and passes an r = 2 one 0.22 of the time.

Per phase or per campaign. A fleet raises few false alarms: 100 assets at 0.2 per asset-day give 20 per version in
a 24 h shadow and 2 in a 24 h first wave of 10 %. Testing each phase on its own truncates nearly every phase, and
a candidate exactly as good as the champion survives four truncations in a row about 0.15 of the time. One test
over the whole campaign (``RateSPRT(scope="campaign")``, the default: counts carried across phases, truncated at
the end of the last soak) sees ~90 events per version instead. Measured with the engine (100 targets, 24 h shadow
and soaks, hourly steps, Poisson false alarms, 300 campaigns each; share promoted):

    false alarms / asset-day    r    per campaign   per phase
          0.2                  1.0       0.90         0.15
          0.2                  2.0       0.08         0.00
          0.2                  3.0       0.01         0.00
          1.0                  1.0       0.98         0.41
          1.0                  2.0       0.06         0.00

The price of the campaign-wide test: a candidate twice as bad that the shadow phase does not catch (a third of
them at 0.2 / asset-day) may reach a later wave before the test fails it: 14 % of such campaigns rolled back from
the 50 % wave and 6 % from 100 %. ``tests/test_campaign_engine.py`` keeps these figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec
import numpy as np

__all__ = ["RateTest", "SprtOutcome", "quantile_distance", "truncated_error_rates"]

Verdict = Literal["accept_h0", "accept_h1", "undecided"]


class SprtOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Where the test stands: the verdict and the figures that explain it."""

    verdict: Verdict
    llr: float
    lower: float
    upper: float
    share_h0: float  # p(1): the challenger's expected share of all events if it is no worse
    share_h1: float  # p(r1)


class RateTest(msgspec.Struct, frozen=True, kw_only=True):
    """Wald's SPRT of two Poisson rates through the conditional binomial (see the module docstring)."""

    ratio_h1: float = 2.0
    alpha: float = 0.05
    beta: float = 0.10

    def __post_init__(self) -> None:
        if not (self.ratio_h1 > 1.0 and math.isfinite(self.ratio_h1)):
            raise ValueError(f"ratio_h1 must be a finite number above 1, not {self.ratio_h1}")
        if not (0.0 < self.alpha < 0.5 and 0.0 < self.beta < 0.5):
            raise ValueError(f"alpha and beta must lie in (0, 0.5), not {self.alpha}, {self.beta}")

    @property
    def upper(self) -> float:
        """Crossing it accepts H1 (the challenger's rate is ``ratio_h1`` times the champion's)."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """Crossing it accepts H0 (the challenger's rate is no higher than the champion's)."""
        return math.log(self.beta / (1.0 - self.alpha))

    def shares(self, e1: float, e0: float) -> tuple[float, float]:
        """The challenger's share of all events under H0 and under H1, given both exposures (> 0)."""
        p0 = e1 / (e1 + e0)
        p1 = self.ratio_h1 * e1 / (self.ratio_h1 * e1 + e0)
        return p0, p1

    def llr(self, x1: float, e1: float, x0: float, e0: float) -> float:
        """The log-likelihood ratio of H1 to H0 for ``x1`` challenger and ``x0`` champion events."""
        p0, p1 = self.shares(e1, e0)
        return x1 * math.log(p1 / p0) + x0 * math.log((1.0 - p1) / (1.0 - p0))

    def evaluate(self, x1: int, e1: float, x0: int, e0: float) -> SprtOutcome:
        """The verdict for cumulative counts and exposures (both exposures finite and > 0)."""
        if x1 < 0 or x0 < 0 or not (0 < e1 < math.inf and 0 < e0 < math.inf):
            raise ValueError(f"counts must be ≥ 0 and exposures > 0, not x1={x1} e1={e1} x0={x0} e0={e0}")
        p0, p1 = self.shares(e1, e0)
        value = self.llr(x1, e1, x0, e0)
        verdict: Verdict = "undecided"
        if value >= self.upper:
            verdict = "accept_h1"
        elif value <= self.lower:
            verdict = "accept_h0"
        return SprtOutcome(verdict=verdict, llr=value, lower=self.lower, upper=self.upper, share_h0=p0, share_h1=p1)


def truncated_error_rates(test: RateTest, *, ratio: float, expected_events: float, trials: int,
                          rng: np.random.Generator, truncation_ratio: float = 1.0) -> dict[str, float]:
    """Simulate the truncated test with equal exposures: events arrive one by one, each the challenger's with
    probability ``ratio / (ratio + 1)``; the soak holds ``Poisson(expected_events)`` of them (both versions'
    events together). Returns the shares of trials that failed, passed early, and failed or passed by
    truncation. Vectorised: ``trials × max events`` booleans, so keep ``expected_events`` in the hundreds."""
    p = ratio / (ratio + 1.0)
    lengths = rng.poisson(expected_events, size=trials)
    width = max(1, int(lengths.max()))
    challenger = rng.random((trials, width)) < p
    p0, p1 = test.shares(1.0, 1.0)
    step_up, step_down = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))
    llr = np.cumsum(np.where(challenger, step_up, step_down), axis=1)
    inside = np.arange(width)[None, :] < lengths[:, None]
    up = (llr >= test.upper) & inside
    down = (llr <= test.lower) & inside
    first_up = np.where(up.any(axis=1), up.argmax(axis=1), width)
    first_down = np.where(down.any(axis=1), down.argmax(axis=1), width)
    failed_early = first_up < first_down
    passed_early = first_down < first_up
    undecided = ~(failed_early | passed_early)
    x1 = (challenger & inside).sum(axis=1)
    x0 = lengths - x1
    truncated_pass = undecided & (x1 <= truncation_ratio * x0)
    truncated_fail = undecided & ~truncated_pass
    return {
        "fail": float((failed_early | truncated_fail).mean()),
        "pass": float((passed_early | truncated_pass).mean()),
        "fail_early": float(failed_early.mean()),
        "pass_early": float(passed_early.mean()),
        "truncated_fail": float(truncated_fail.mean()),
        "truncated_pass": float(truncated_pass.mean()),
    }


def quantile_distance(sample: Sequence[float], reference: Sequence[tuple[float, float]]) -> float:
    """A Kolmogorov–Smirnov distance between a sample and a distribution known only by its quantiles
    (``(probability, value)`` pairs, e.g. a model card's score quantiles), measured on the reference's own grid.

    At each distinct reference value ``v`` the reference says ``F(v) ≥ q_hi`` and ``F(v⁻) ≤ q_lo`` (the largest and
    smallest probabilities quoted at ``v``: ties are common, many scores are exactly 0). The distance is the largest
    amount by which the sample's empirical CDF breaks one of these: ``q_hi − F̂(v)`` or ``F̂(v⁻) − q_lo``. For a
    continuous reference this is ``max |F̂(v_i) − q_i|``; it is 0 for a sample drawn from the reference (up to
    noise of about ``1/√n``) and approaches 1 for a sample entirely beyond it."""
    values = np.sort(np.asarray(sample, dtype=np.float64))
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the sample holds no finite value")
    if not reference:
        raise ValueError("the reference holds no quantile")
    pairs = sorted((float(v), float(q)) for q, v in reference)
    distance = 0.0
    n = float(values.size)
    i = 0
    while i < len(pairs):
        v = pairs[i][0]
        j = i
        while j < len(pairs) and pairs[j][0] == v:
            j += 1
        probs = [q for _, q in pairs[i:j]]
        q_lo, q_hi = min(probs), max(probs)
        at_or_below = np.searchsorted(values, v, side="right") / n
        below = np.searchsorted(values, v, side="left") / n
        distance = max(distance, q_hi - float(at_or_below), float(below) - q_lo)
        i = j
    return distance
