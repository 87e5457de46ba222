"""Quality gates of a rollout (pure): each looks at what the challenger (the version being rolled out) and the
champion (the version in service) did on the same targets and says ``pass``, ``fail`` or ``continue`` (not enough
evidence yet), with the figures behind it and a reason a person can read.

Gates are msgspec structs holding their settings (a campaign's spec stores them, tagged by ``kind``); each has
``decide(observation, *, now_ms, end_of_soak) -> GateDecision``. The observation is what the service collected
since the current phase began, cumulative (re-deciding on the same observation gives the same decision).

- ``RateSPRT``: event rates (false alarms per asset-day, or crashes per gateway-day for a release), a truncated
  Wald SPRT (``campaigns/stats.py`` states its error rates and the truncation rule).
- ``MissedFaultGate``: every champion episode and every confirmed fault must be found by the challenger within a
  grace period; one miss fails at once, naming the target and the time.
- ``ScoreShiftGate``: the challenger's live scores against the score quantiles of its model card.
- ``ProbeGate``: known-answer fault injections; the challenger must detect what the champion detects, not much later.
- ``LatencyGate``: inference latency (p95) and CPU of the challenger relative to the champion (edge models).
- ``InstallGate``: the wave's gateways run the pushed version; none refused it or went back from it by itself
  (edge models).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import msgspec
import numpy as np

from edgeloop.campaigns.stats import RateTest, quantile_distance

__all__ = [
    "Episode",
    "Episodes",
    "Gate",
    "GateDecision",
    "InstallGate",
    "Installs",
    "LatencyGate",
    "LatencyObservation",
    "MissedFaultGate",
    "Observation",
    "ProbeGate",
    "ProbeResult",
    "ProbeResults",
    "RateCounts",
    "RateSPRT",
    "ScoreSample",
    "ScoreShiftGate",
    "decide",
]

Status = Literal["pass", "fail", "continue"]
MAX_ITEMS = 100_000  # bound on any list an observation carries (episodes, probes, scores, latencies)


class GateDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One gate's decision: ``pass`` | ``fail`` | ``continue``, the figures behind it (finite numbers only, so the
    decision serialises to JSON) and a sentence saying why."""

    status: Status
    gate: str
    figures: dict[str, float]
    reason: str


def _when(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- observations: what the service collects since the phase began --------------------------------------------


class RateCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Cumulative event counts and exposures (e.g. asset-days) of both versions over the same targets and span.
    Counts of several phases add up (``+``); the conditional binomial of the sums is exact when the two exposures
    are equal in every phase (both versions score the same targets, as in a campaign), an approximation when their
    ratio changes from phase to phase."""

    challenger_events: int
    challenger_exposure: float
    champion_events: int
    champion_exposure: float

    def __add__(self, other: RateCounts) -> RateCounts:
        return RateCounts(challenger_events=self.challenger_events + other.challenger_events,
                          challenger_exposure=self.challenger_exposure + other.challenger_exposure,
                          champion_events=self.champion_events + other.champion_events,
                          champion_exposure=self.champion_exposure + other.champion_exposure)


class Episode(msgspec.Struct, frozen=True, kw_only=True):
    """A finding episode (or a confirmed fault's window) on one target; ``end_ms`` None = still open."""

    target: str
    start_ms: int
    end_ms: int | None = None


class Episodes(msgspec.Struct, frozen=True, kw_only=True):
    """Both versions' finding episodes on the same targets, and the faults technicians confirmed there."""

    champion: Sequence[Episode]
    challenger: Sequence[Episode]
    confirmed: Sequence[Episode] = ()


class ScoreSample(msgspec.Struct, frozen=True, kw_only=True):
    """A bounded sample of the challenger's live scores."""

    scores: Sequence[float]


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    """One known-answer fault injection: whether (and how long after the injected onset) each version found it."""

    target: str
    probe: str
    champion_detected: bool
    challenger_detected: bool
    champion_delay_ms: int | None = None
    challenger_delay_ms: int | None = None


class ProbeResults(msgspec.Struct, frozen=True, kw_only=True):
    probes: Sequence[ProbeResult]


class LatencyObservation(msgspec.Struct, frozen=True, kw_only=True):
    """Inference latencies (ms) of both versions and their CPU use over the same work (any common unit)."""

    challenger_ms: Sequence[float]
    champion_ms: Sequence[float]
    challenger_cpu: float
    champion_cpu: float


class Installs(msgspec.Struct, frozen=True, kw_only=True):
    """What the wave's gateways did with the version pushed to them (edge models): how many run it now, and
    which refused it or went back from it by themselves (their local guardrail), with why."""

    targets: int
    running: int
    refused: Sequence[str] = ()  # "gateway: reason"
    reverted: Sequence[str] = ()
    unjudged: Sequence[str] = ()  # gateways that run it whose guardrail has not judged a full window of it yet


Observation = RateCounts | Episodes | ScoreSample | ProbeResults | LatencyObservation | Installs


def _bounded(name: str, items: Sequence[object]) -> None:
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{name} holds {len(items)} items, more than {MAX_ITEMS}: sample it down first")


# --- gates ------------------------------------------------------------------------------------------------------


class RateSPRT(msgspec.Struct, frozen=True, kw_only=True, tag="rate_sprt", tag_field="kind"):
    """The challenger's event rate must not be worse than the champion's (``stats.RateTest`` with truncation at
    the end of the soak: pass iff ``x1 · e0 ≤ truncation_ratio · x0 · e1``, or the challenger had fewer than
    ``min_events`` events: one or two events are no evidence of a worse rate, and a champion whose false alarms
    are episodes that began before the campaign shows none), over the campaign or per phase (``scope``, see
    ``spans_phases``)."""

    ratio_h1: float = 2.0
    alpha: float = 0.05
    beta: float = 0.10
    truncation_ratio: float = 1.0
    min_events: int = 3
    scope: Literal["phase", "campaign"] = "campaign"
    sticky: ClassVar[bool] = True  # a sequential test stops at its first decision: a pass stays a pass

    @property
    def spans_phases(self) -> bool:
        """``scope="campaign"`` (the default): one test over the whole campaign, its counts carried from phase to
        phase, truncated only at the end of the last wave's soak; a phase does not wait for it (it fails the
        campaign whenever it crosses the upper boundary). ``scope="phase"``: a test per phase, truncated at the end
        of each. Why the campaign is the default: a fleet has few false alarms per phase, a test per phase is
        truncated in nearly every phase, and four conservative truncations in a row roll back most candidates as
        good as the champion (``campaigns/stats.py`` has the figures)."""
        return self.scope == "campaign"

    def __post_init__(self) -> None:
        RateTest(ratio_h1=self.ratio_h1, alpha=self.alpha, beta=self.beta)  # refuses impossible settings
        if not self.truncation_ratio > 0:
            raise ValueError(f"truncation_ratio must be above 0, not {self.truncation_ratio}")

    def decide(self, counts: RateCounts, *, now_ms: int, end_of_soak: bool, gate: str = "rate_sprt") -> GateDecision:
        del now_ms
        x1, e1 = counts.challenger_events, counts.challenger_exposure
        x0, e0 = counts.champion_events, counts.champion_exposure
        figures: dict[str, float] = {"challenger_events": float(x1), "challenger_exposure": float(e1),
                                     "champion_events": float(x0), "champion_exposure": float(e0)}
        if not all(math.isfinite(v) for v in (e1, e0)):
            raise ValueError(f"exposures must be finite, not {e1} and {e0}")
        if not (e1 > 0 and e0 > 0):
            return GateDecision(status="continue", gate=gate, figures=figures, reason="no exposure yet")
        test = RateTest(ratio_h1=self.ratio_h1, alpha=self.alpha, beta=self.beta)
        outcome = test.evaluate(x1, e1, x0, e0)
        figures.update(llr=outcome.llr, lower=outcome.lower, upper=outcome.upper, challenger_rate=x1 / e1,
                       champion_rate=x0 / e0)
        if x0 > 0:
            figures["ratio"] = (x1 / e1) / (x0 / e0)
        rates = f"challenger {x1} in {e1:g}, champion {x0} in {e0:g}"
        if outcome.verdict == "accept_h1":
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"rate {self.ratio_h1:g}× the champion's accepted (llr {outcome.llr:.3f} ≥ "
                                       f"{outcome.upper:.3f}): {rates}")
        if outcome.verdict == "accept_h0":
            return GateDecision(status="pass", gate=gate, figures=figures,
                                reason=f"not worse than the champion (llr {outcome.llr:.3f} ≤ {outcome.lower:.3f}): "
                                       f"{rates}")
        if not end_of_soak:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"undecided (llr {outcome.llr:.3f} between {outcome.lower:.3f} and "
                                       f"{outcome.upper:.3f}): {rates}")
        figures["truncated"] = 1.0
        if x1 * e0 <= self.truncation_ratio * x0 * e1:
            return GateDecision(status="pass", gate=gate, figures=figures,
                                reason=f"undecided at the end of the soak, observed rate not above the champion's: "
                                       f"{rates}")
        if x1 < self.min_events:
            return GateDecision(status="pass", gate=gate, figures=figures,
                                reason=f"undecided at the end of the soak, fewer than {self.min_events} challenger "
                                       f"events (no evidence of a worse rate): {rates}")
        return GateDecision(status="fail", gate=gate, figures=figures,
                            reason=f"undecided at the end of the soak, observed rate above the champion's: {rates}")


class MissedFaultGate(msgspec.Struct, frozen=True, kw_only=True, tag="missed_faults", tag_field="kind"):
    """No fault may be missed: every champion episode must be matched by a challenger episode on the same target
    starting or open within ``grace_ms`` of the champion's start; every confirmed fault by a challenger episode
    overlapping ``[start - grace, end + grace]`` (an open confirmed fault: ``[start - grace, start + grace]``).
    A reference becomes a miss once its deadline (its window's end + grace) has passed unmatched: the gate fails at
    once, naming the target and time. References still inside their grace period keep the gate at ``continue``."""

    sticky: ClassVar[bool] = False  # judged again on every step until the phase ends
    spans_phases: ClassVar[bool] = False  # judged on each phase's own observations

    grace_ms: int = 15 * 60_000

    def __post_init__(self) -> None:
        if self.grace_ms < 0:
            raise ValueError(f"grace_ms must be at least 0, not {self.grace_ms}")

    def decide(self, episodes: Episodes, *, now_ms: int, end_of_soak: bool,
               gate: str = "missed_faults") -> GateDecision:
        del end_of_soak
        for name in ("champion", "challenger", "confirmed"):
            _bounded(name, getattr(episodes, name))
        found: dict[str, list[tuple[int, int]]] = {}
        for ep in episodes.challenger:
            found.setdefault(ep.target, []).append((ep.start_ms, now_ms if ep.end_ms is None else ep.end_ms))
        references = [("champion finding", ep.target, ep.start_ms, ep.start_ms) for ep in episodes.champion]
        references += [("confirmed fault", ep.target, ep.start_ms, ep.start_ms if ep.end_ms is None else ep.end_ms)
                       for ep in episodes.confirmed]
        misses: list[tuple[int, str, str]] = []
        matched = pending = 0
        for what, target, start, end in references:
            lo, hi = start - self.grace_ms, end + self.grace_ms
            if any(s <= hi and e >= lo for s, e in found.get(target, ())):
                matched += 1
            elif now_ms >= hi:
                misses.append((start, target, what))
            else:
                pending += 1
        figures = {"references": float(len(references)), "matched": float(matched), "pending": float(pending),
                   "missed": float(len(misses)), "grace_ms": float(self.grace_ms)}
        if misses:
            misses.sort()
            start, target, what = misses[0]
            figures["first_missed_ms"] = float(start)
            more = f" (and {len(misses) - 1} more)" if len(misses) > 1 else ""
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"challenger missed the {what} on {target} at {_when(start)} "
                                       f"within {self.grace_ms / 60_000:g} min{more}")
        if pending:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"{pending} fault(s) still within the grace period")
        return GateDecision(status="pass", gate=gate, figures=figures,
                            reason=f"all {len(references)} champion finding(s) and confirmed fault(s) found")


class ScoreShiftGate(msgspec.Struct, frozen=True, kw_only=True, tag="score_shift", tag_field="kind"):
    """The challenger's live score distribution must stay near its model card's reference (``(probability,
    value)`` quantiles): ``stats.quantile_distance`` (a KS distance on the reference's grid) at most
    ``max_distance``; ``continue`` while fewer than ``min_samples`` scores."""

    sticky: ClassVar[bool] = False  # judged again on every step until the phase ends
    spans_phases: ClassVar[bool] = False  # judged on each phase's own observations

    reference: list[tuple[float, float]]
    max_distance: float = 0.3
    min_samples: int = 200

    def __post_init__(self) -> None:
        if not self.reference or len(self.reference) > 1000:
            raise ValueError("reference must hold 1 to 1000 (probability, value) quantiles")
        if any(not (0.0 <= q <= 1.0 and math.isfinite(v)) for q, v in self.reference):
            raise ValueError("reference quantiles need probabilities in [0, 1] and finite values")
        if not (0.0 < self.max_distance <= 1.0 and self.min_samples >= 1):
            raise ValueError(f"max_distance must lie in (0, 1] and min_samples be at least 1, not "
                             f"{self.max_distance}, {self.min_samples}")

    def decide(self, sample: ScoreSample, *, now_ms: int, end_of_soak: bool,
               gate: str = "score_shift") -> GateDecision:
        del now_ms, end_of_soak
        _bounded("scores", sample.scores)
        finite = [s for s in sample.scores if math.isfinite(s)]
        figures: dict[str, float] = {"samples": float(len(finite)), "max_distance": self.max_distance}
        if len(finite) < self.min_samples:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"{len(finite)} of {self.min_samples} scores needed")
        distance = quantile_distance(finite, self.reference)
        figures["distance"] = distance
        if distance > self.max_distance:
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"live scores far from the model card's reference (KS {distance:.3f} > "
                                       f"{self.max_distance:g})")
        return GateDecision(status="pass", gate=gate, figures=figures,
                            reason=f"live scores match the reference (KS {distance:.3f} ≤ {self.max_distance:g})")


class ProbeGate(msgspec.Struct, frozen=True, kw_only=True, tag="probes", tag_field="kind"):
    """Known-answer fault injections: a probe the champion detects must be detected by the challenger, within
    ``max_delay_ratio`` × the champion's delay + ``delay_slack_ms``; ``continue`` until ``min_probes`` probes."""

    sticky: ClassVar[bool] = False  # judged again on every step until the phase ends
    spans_phases: ClassVar[bool] = False  # judged on each phase's own observations

    min_probes: int = 1
    max_delay_ratio: float = 3.0  # a version that learnt a fault misses it; a slower one is not that (eval loop: a
    delay_slack_ms: int = 300_000  # healthy retrained candidate found overheating in 527 s where the champion took 159)

    def falls_short(self, p: ProbeResult) -> bool:
        """The champion detected the probe and the challenger did not, or much later."""
        if not p.champion_detected:
            return False
        if not p.challenger_detected:
            return True
        return p.champion_delay_ms is not None and p.challenger_delay_ms is not None and (
            p.challenger_delay_ms > self.max_delay_ratio * p.champion_delay_ms + self.delay_slack_ms)

    def decide(self, results: ProbeResults, *, now_ms: int, end_of_soak: bool,
               gate: str = "probes") -> GateDecision:
        del now_ms, end_of_soak
        _bounded("probes", results.probes)
        missed: list[ProbeResult] = []
        slow: list[ProbeResult] = []
        for p in results.probes:
            if self.falls_short(p):
                (slow if p.challenger_detected else missed).append(p)
        counted = [p for p in results.probes if p.champion_detected]
        figures: dict[str, float] = {
            "probes": float(len(results.probes)), "champion_detected": float(len(counted)),
            "challenger_detected": float(sum(p.challenger_detected for p in results.probes)),
            "missed": float(len(missed)), "slow": float(len(slow))}
        delays = [(p.champion_delay_ms, p.challenger_delay_ms) for p in counted
                  if p.champion_delay_ms is not None and p.challenger_delay_ms is not None]
        if delays:
            figures["champion_delay_ms_median"] = float(np.median([a for a, _ in delays]))
            figures["challenger_delay_ms_median"] = float(np.median([b for _, b in delays]))
        if missed:
            p = missed[0]
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"challenger missed probe {p.probe} on {p.target} that the champion detected")
        if slow:
            p = slow[0]
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"challenger found probe {p.probe} on {p.target} after "
                                       f"{p.challenger_delay_ms} ms, the champion after {p.champion_delay_ms} ms")
        if len(counted) < self.min_probes:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"{len(counted)} of {self.min_probes} probes the champion detected")
        return GateDecision(status="pass", gate=gate, figures=figures,
                            reason=f"challenger detected all {len(counted)} probes the champion detected")


class LatencyGate(msgspec.Struct, frozen=True, kw_only=True, tag="latency", tag_field="kind"):
    """Edge models: the challenger's p95 inference latency and its CPU use, each relative to the champion's, at
    most ``max_p95_ratio`` and ``max_cpu_ratio`` (and the p95 under ``max_p95_ms`` when set); ``continue`` while
    either side has fewer than ``min_samples`` latencies. ``samples``: what each latency is: one inference's
    (``latency``: the gate takes the 95th percentile), or a p95 a gateway reported over many (``p95``: the gate
    takes their median, the typical p95, which one busy moment of a gateway does not move). A ratio over its
    limit fails only when the difference is also above ``min_delta_ms`` (p95) or ``min_cpu_delta`` (CPU, in the
    observation's unit): a sub-millisecond model that takes 0.3 ms more is no reason to roll back, and at that
    scale the ratio is the machine's noise.

    Judged once, at the end of the soak, on all of the phase's samples (``continue`` before, with the figures so
    far): latency and CPU are noisy on a shared gateway, and a gate that fails at the first step whose figures
    cross a limit fails a version as fast as the champion sooner or later (one busy minute is enough). A version
    that is too slow to run at all is caught sooner, by the install gate (inference errors, the guardrail)."""

    sticky: ClassVar[bool] = True  # one decision per phase, at the end of its soak: a pass stays a pass
    spans_phases: ClassVar[bool] = False  # judged on each phase's own observations

    max_p95_ratio: float = 1.5
    max_cpu_ratio: float = 1.5
    max_p95_ms: float | None = None
    min_samples: int = 50
    samples: Literal["latency", "p95"] = "latency"
    min_delta_ms: float = 0.0
    min_cpu_delta: float = 0.0

    def __post_init__(self) -> None:
        if not (self.max_p95_ratio > 0 and self.max_cpu_ratio > 0 and self.min_delta_ms >= 0
                and self.min_cpu_delta >= 0 and self.min_samples >= 1):
            raise ValueError("latency gate: ratios must be above 0, deltas at least 0 and min_samples at least 1")

    def decide(self, obs: LatencyObservation, *, now_ms: int, end_of_soak: bool,
               gate: str = "latency") -> GateDecision:
        del now_ms
        _bounded("challenger_ms", obs.challenger_ms)
        _bounded("champion_ms", obs.champion_ms)
        new = np.asarray(obs.challenger_ms, dtype=np.float64)
        old = np.asarray(obs.champion_ms, dtype=np.float64)
        new, old = new[np.isfinite(new)], old[np.isfinite(old)]
        figures: dict[str, float] = {"challenger_samples": float(new.size), "champion_samples": float(old.size)}
        if min(new.size, old.size) < self.min_samples:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"fewer than {self.min_samples} latencies on a side")
        if not (math.isfinite(obs.challenger_cpu) and math.isfinite(obs.champion_cpu)):
            raise ValueError(f"CPU figures must be finite, not {obs.challenger_cpu} and {obs.champion_cpu}")
        q = 95 if self.samples == "latency" else 50
        p95_new = float(np.percentile(new, q))
        p95_old = float(np.percentile(old, q))
        p95_ratio = p95_new / max(p95_old, 1e-9)
        cpu_ratio = obs.challenger_cpu / max(obs.champion_cpu, 1e-9)
        figures.update(challenger_p95_ms=p95_new, champion_p95_ms=p95_old, p95_ratio=p95_ratio,
                       cpu_ratio=cpu_ratio)
        problems = []
        if p95_ratio > self.max_p95_ratio and p95_new - p95_old > self.min_delta_ms:
            problems.append(f"p95 latency {p95_new:.3g} ms is {p95_ratio:.2f}× the champion's {p95_old:.3g} ms "
                            f"(limit {self.max_p95_ratio:g}×)")
        if self.max_p95_ms is not None and p95_new > self.max_p95_ms:
            problems.append(f"p95 latency {p95_new:.3g} ms over {self.max_p95_ms:g} ms")
        if cpu_ratio > self.max_cpu_ratio and obs.challenger_cpu - obs.champion_cpu > self.min_cpu_delta:
            problems.append(f"CPU {obs.challenger_cpu:.3g} is {cpu_ratio:.2f}× the champion's {obs.champion_cpu:.3g} "
                            f"(limit {self.max_cpu_ratio:g}×)")
        so_far = f"p95 {p95_ratio:.2f}× and CPU {cpu_ratio:.2f}× the champion's"
        if not end_of_soak:
            return GateDecision(status="continue", gate=gate, figures=figures,
                                reason=f"{so_far} so far (judged at the end of the soak)")
        if problems:
            return GateDecision(status="fail", gate=gate, figures=figures, reason="; ".join(problems))
        return GateDecision(status="pass", gate=gate, figures=figures, reason=so_far)


class InstallGate(msgspec.Struct, frozen=True, kw_only=True, tag="install", tag_field="kind"):
    """Edge models: a gateway that refuses the pushed version (its signature, a model it cannot load) or goes back
    from it by itself (its probation guardrail: alarm rate, inference errors) fails the wave at once, beyond
    ``max_failures``; the phase passes at the end of its soak when at least ``min_running_share`` of the wave's
    gateways run the version (an offline gateway that has not taken it yet holds the wave until the longest soak).
    """

    sticky: ClassVar[bool] = False
    spans_phases: ClassVar[bool] = False

    max_failures: int = 0
    min_running_share: float = 1.0

    def __post_init__(self) -> None:
        if self.max_failures < 0 or not 0.0 < self.min_running_share <= 1.0:
            raise ValueError("install gate: max_failures must be >= 0 and min_running_share in (0, 1]")

    def decide(self, obs: Installs, *, now_ms: int, end_of_soak: bool, gate: str = "install") -> GateDecision:
        del now_ms
        _bounded("refused", obs.refused)
        _bounded("reverted", obs.reverted)
        share = obs.running / obs.targets if obs.targets else 0.0
        figures = {"targets": float(obs.targets), "running": float(obs.running), "running_share": share,
                   "refused": float(len(obs.refused)), "reverted": float(len(obs.reverted)),
                   "unjudged": float(len(obs.unjudged))}
        failures = [*(f"refused on {r}" for r in obs.refused), *(f"reverted on {r}" for r in obs.reverted)]
        if len(failures) > self.max_failures:
            return GateDecision(status="fail", gate=gate, figures=figures,
                                reason=f"{len(failures)} gateway(s) could not keep the version: "
                                       + "; ".join(failures[:5]) + (" …" if len(failures) > 5 else ""))
        if not end_of_soak or not obs.targets or share < self.min_running_share:
            reason = f"{obs.running} of {obs.targets} gateway(s) run it so far (need {self.min_running_share:.0%})"
        elif obs.unjudged:
            reason = f"the guardrail of {', '.join(obs.unjudged[:5])} has not judged a full window of it yet"
        else:
            return GateDecision(status="pass", gate=gate, figures=figures,
                                reason=f"{obs.running} of {obs.targets} gateway(s) run it, none went back")
        return GateDecision(status="continue", gate=gate, figures=figures, reason=reason)


Gate = RateSPRT | MissedFaultGate | ScoreShiftGate | ProbeGate | LatencyGate | InstallGate


def decide(name: str, gate: Gate, observation: Observation, *, now_ms: int, end_of_soak: bool) -> GateDecision:
    """Dispatch ``observation`` to ``gate`` (named ``name`` in the campaign); a mismatched observation type is a
    programming error in the collecting service and raises ``TypeError``."""
    if isinstance(gate, RateSPRT) and isinstance(observation, RateCounts):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    if isinstance(gate, MissedFaultGate) and isinstance(observation, Episodes):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    if isinstance(gate, ScoreShiftGate) and isinstance(observation, ScoreSample):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    if isinstance(gate, ProbeGate) and isinstance(observation, ProbeResults):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    if isinstance(gate, LatencyGate) and isinstance(observation, LatencyObservation):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    if isinstance(gate, InstallGate) and isinstance(observation, Installs):
        return gate.decide(observation, now_ms=now_ms, end_of_soak=end_of_soak, gate=name)
    raise TypeError(f"gate {name!r} ({type(gate).__name__}) cannot judge a {type(observation).__name__}")
