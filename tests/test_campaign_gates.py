"""The rollout quality gates: the SPRT on a hand-computed path and its error rates by Monte Carlo, missed faults,
score shift, probes and latency."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from edgeloop.campaigns.gates import (
    Episode,
    Episodes,
    Gate,
    InstallGate,
    Installs,
    LatencyGate,
    LatencyObservation,
    MissedFaultGate,
    ProbeGate,
    ProbeResult,
    ProbeResults,
    RateCounts,
    RateSPRT,
    ScoreSample,
    ScoreShiftGate,
    decide,
)
from edgeloop.campaigns.stats import RateTest, quantile_distance, truncated_error_rates

MIN = 60_000
T0 = 1_780_000_000_000  # 2026-05-28 20:26:40 UTC


def counts(x1: int, x0: int, e1: float = 10.0, e0: float = 10.0) -> RateCounts:
    return RateCounts(challenger_events=x1, challenger_exposure=e1, champion_events=x0, champion_exposure=e0)


# --- the SPRT -----------------------------------------------------------------------------------------------------


def test_sprt_boundaries_and_log_likelihood_path_match_a_hand_computation() -> None:
    """Equal exposures: p0 = 1/2, p1 = 2/3, so each challenger event adds log(4/3) = 0.287682 and each champion
    event log(2/3) = -0.405465; the boundaries are log(0.9/0.05) = 2.890372 and log(0.1/0.95) = -2.251292."""
    gate = RateSPRT()
    test = RateTest()
    assert test.upper == pytest.approx(2.890372, abs=1e-6)
    assert test.lower == pytest.approx(-2.251292, abs=1e-6)
    # Challenger events only: 10 events → llr 2.876821 (just under the upper boundary), 11 → 3.164503 (fail).
    path = [gate.decide(counts(x1, 0), now_ms=T0, end_of_soak=False) for x1 in range(12)]
    assert [d.status for d in path] == ["continue"] * 11 + ["fail"]
    assert path[10].figures["llr"] == pytest.approx(2.876821, abs=1e-6)
    assert path[11].figures["llr"] == pytest.approx(3.164503, abs=1e-6)
    # Champion events only: 5 → -2.027326 (continue), 6 → -2.432791 (pass: not worse).
    assert gate.decide(counts(0, 5), now_ms=T0, end_of_soak=False).status == "continue"
    passed = gate.decide(counts(0, 6), now_ms=T0, end_of_soak=False)
    assert passed.status == "pass"
    assert passed.figures["llr"] == pytest.approx(-2.432791, abs=1e-6)
    # A mixed path: 7 challenger and 3 champion events: 7 · 0.287682 - 3 · 0.405465 = 0.797379.
    assert gate.decide(counts(7, 3), now_ms=T0, end_of_soak=False).figures["llr"] == pytest.approx(0.797379, abs=1e-6)


def test_sprt_with_unequal_exposures_uses_the_exposure_weighted_share() -> None:
    """e1 = 1, e0 = 3: p0 = 1/4, p1 = 2/5; x1 = 3, x0 = 5: 3 log(1.6) + 5 log(0.8) = 0.294293."""
    decision = RateSPRT().decide(counts(3, 5, e1=1.0, e0=3.0), now_ms=T0, end_of_soak=False)
    assert decision.figures["llr"] == pytest.approx(3 * math.log(1.6) + 5 * math.log(0.8), abs=1e-9)
    assert decision.figures["llr"] == pytest.approx(0.294293, abs=1e-6)
    assert decision.status == "continue"


def test_an_undecided_sprt_decides_by_the_point_estimate_at_the_end_of_the_soak() -> None:
    gate = RateSPRT()
    assert gate.decide(counts(3, 3), now_ms=T0, end_of_soak=True).status == "pass"  # equal rates pass
    assert gate.decide(counts(4, 3), now_ms=T0, end_of_soak=True).status == "fail"  # any worse fails
    assert gate.decide(counts(0, 0), now_ms=T0, end_of_soak=True).status == "pass"  # nothing happened
    # one or two alarms the champion had not are no evidence (its own may be episodes begun before the campaign)
    assert gate.decide(counts(2, 0), now_ms=T0, end_of_soak=True).status == "pass"
    assert gate.decide(counts(3, 0), now_ms=T0, end_of_soak=True).status == "fail"
    assert RateSPRT(min_events=1).decide(counts(1, 0), now_ms=T0, end_of_soak=True).status == "fail"
    # Exposures count: 4 events in 2 asset-days is the rate of 6 in 3.
    assert gate.decide(counts(4, 6, e1=2.0, e0=3.0), now_ms=T0, end_of_soak=True).status == "pass"
    assert gate.decide(counts(5, 6, e1=2.0, e0=3.0), now_ms=T0, end_of_soak=True).status == "fail"
    # A looser truncation ratio lets an r̂ = 4/3 through.
    assert RateSPRT(truncation_ratio=1.41).decide(counts(4, 3), now_ms=T0, end_of_soak=True).status == "pass"


def test_gates_wait_without_exposure_and_refuse_impossible_settings() -> None:
    assert RateSPRT().decide(counts(0, 0, e1=0.0), now_ms=T0, end_of_soak=True).status == "continue"
    with pytest.raises(msgspec.ValidationError, match="alpha"):
        msgspec.json.decode(b'{"kind": "rate_sprt", "alpha": 0.7}', type=RateSPRT)
    with pytest.raises(ValueError, match="ratio_h1"):
        RateSPRT(ratio_h1=1.0)
    with pytest.raises(msgspec.ValidationError, match="quantiles"):
        msgspec.json.decode(b'{"kind": "score_shift", "reference": [[1.5, 2.0]]}', type=ScoreShiftGate)
    with pytest.raises(ValueError, match="grace_ms"):
        MissedFaultGate(grace_ms=-1)


def test_sprt_error_rates_by_monte_carlo_match_the_stated_alpha_and_beta() -> None:
    """A long soak (400 expected events, truncation practically never reached): the test fails a challenger as
    good as the champion at most α (+ 2 standard errors) of the time, and passes one three times worse at most β
    of the time; one exactly at H1 (r = 2) passes at most β."""
    test = RateTest()
    rng = np.random.default_rng(15)
    trials = 4000
    tolerance = 2 * math.sqrt(0.1 * 0.9 / trials)  # ≈ 0.0095
    good = truncated_error_rates(test, ratio=1.0, expected_events=400, trials=trials, rng=rng)
    assert good["truncated_fail"] + good["truncated_pass"] < 0.01
    assert good["fail"] <= test.alpha + tolerance
    better = truncated_error_rates(test, ratio=0.5, expected_events=400, trials=trials, rng=rng)
    assert better["fail"] <= 0.005  # a better challenger practically never fails (monotone likelihood ratio)
    at_h1 = truncated_error_rates(test, ratio=2.0, expected_events=400, trials=trials, rng=rng)
    assert at_h1["pass"] <= test.beta + tolerance
    bad = truncated_error_rates(test, ratio=3.0, expected_events=400, trials=trials, rng=rng)
    assert bad["pass"] <= test.beta + tolerance
    assert bad["pass"] <= 0.02  # far beyond H1 the test is much sharper than β
    # Truncated after ~20 events the rule favours the champion: a 3× worse candidate still passes at most β.
    short_bad = truncated_error_rates(test, ratio=3.0, expected_events=20, trials=trials, rng=rng)
    assert short_bad["pass"] <= test.beta
    short_good = truncated_error_rates(test, ratio=1.0, expected_events=20, trials=trials, rng=rng)
    assert short_good["fail"] > test.alpha  # the documented price: good candidates are rolled back more often


# --- missed faults ------------------------------------------------------------------------------------------------


def test_a_champion_finding_the_challenger_also_finds_within_the_grace_period_passes() -> None:
    gate = MissedFaultGate(grace_ms=15 * MIN)
    episodes = Episodes(champion=[Episode(target="pump-1", start_ms=T0, end_ms=T0 + 30 * MIN)],
                        challenger=[Episode(target="pump-1", start_ms=T0 + 10 * MIN)])
    decision = gate.decide(episodes, now_ms=T0 + 60 * MIN, end_of_soak=False)
    assert decision.status == "pass"
    assert decision.figures["matched"] == 1.0


def test_a_champion_finding_the_challenger_misses_fails_once_the_grace_period_is_over_naming_target_and_time() -> None:
    gate = MissedFaultGate(grace_ms=15 * MIN)
    episodes = Episodes(champion=[Episode(target="pump-1", start_ms=T0, end_ms=T0 + 5 * MIN)],
                        challenger=[Episode(target="pump-2", start_ms=T0),  # another target does not count
                                    Episode(target="pump-1", start_ms=T0 + 16 * MIN)])  # too late
    within = gate.decide(episodes, now_ms=T0 + 14 * MIN, end_of_soak=False)
    assert within.status == "continue"
    assert within.figures["pending"] == 1.0
    after = gate.decide(episodes, now_ms=T0 + 15 * MIN, end_of_soak=False)
    assert after.status == "fail"
    assert "pump-1" in after.reason
    assert "2026-05-28 20:26:40 UTC" in after.reason
    assert after.figures["first_missed_ms"] == float(T0)


def test_a_confirmed_fault_must_be_found_somewhere_in_its_window() -> None:
    gate = MissedFaultGate(grace_ms=15 * MIN)
    fault = Episode(target="fan-7", start_ms=T0, end_ms=T0 + 120 * MIN)
    found_late_in_window = Episodes(champion=[], challenger=[Episode(target="fan-7", start_ms=T0 + 100 * MIN)],
                                    confirmed=[fault])
    assert gate.decide(found_late_in_window, now_ms=T0 + 200 * MIN, end_of_soak=False).status == "pass"
    not_found = Episodes(champion=[], challenger=[], confirmed=[fault])
    assert gate.decide(not_found, now_ms=T0 + 134 * MIN, end_of_soak=False).status == "continue"
    missed = gate.decide(not_found, now_ms=T0 + 135 * MIN, end_of_soak=False)
    assert missed.status == "fail"
    assert "confirmed fault on fan-7" in missed.reason


def test_an_open_challenger_episode_covers_a_later_champion_finding() -> None:
    episodes = Episodes(champion=[Episode(target="a", start_ms=T0 + 60 * MIN)],
                        challenger=[Episode(target="a", start_ms=T0, end_ms=None)])
    assert MissedFaultGate().decide(episodes, now_ms=T0 + 120 * MIN, end_of_soak=False).status == "pass"


# --- score shift --------------------------------------------------------------------------------------------------


def test_quantile_distance_is_the_largest_cdf_gap_on_the_reference_grid() -> None:
    reference = [(0.25, 1.0), (0.5, 2.0), (0.75, 3.0)]
    # F̂(1⁻) = F̂(1) = 1/4, F̂(2⁻) = 2/4, F̂(2) = 3/4: no gap; F̂(3⁻) = 1 where at most 0.75 lie below 3: 0.25.
    assert quantile_distance([0.5, 1.5, 2.0, 2.5], reference) == pytest.approx(0.25)
    # Exactly on the quantiles (a sample of 4 with one value in each quarter): no gap at all.
    assert quantile_distance([0.5, 1.5, 2.5, 3.5], reference) == pytest.approx(0.0)
    assert quantile_distance([5.0, 6.0], reference) == pytest.approx(0.75)  # all beyond: F̂(3) = 0 < 0.75


def test_quantile_distance_reads_tied_reference_quantiles_as_a_range() -> None:
    """Half of all reference scores are exactly 0 (quantiles 0.1 to 0.5 are all 0): a sample with 50 % zeros
    matches; one with 90 % zeros has 0.9 below 1.0, where the reference has at most 0.75."""
    reference = [(0.1, 0.0), (0.25, 0.0), (0.5, 0.0), (0.75, 1.0), (0.9, 2.0)]
    half_zero = [0.0] * 50 + list(np.linspace(0.01, 1.0, 25)) + list(np.linspace(1.01, 2.0, 15)) + [3.0] * 10
    assert quantile_distance(half_zero, reference) <= 0.02
    mostly_zero = [0.0] * 90 + [5.0] * 10
    assert quantile_distance(mostly_zero, reference) == pytest.approx(0.15)


def test_score_shift_gate_passes_a_sample_like_its_reference_and_fails_a_shifted_one() -> None:
    rng = np.random.default_rng(3)
    probs = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
    reference_scores = rng.gamma(2.0, 1.0, size=20_000)
    reference = [(q, float(np.quantile(reference_scores, q))) for q in probs]
    gate = ScoreShiftGate(reference=reference, max_distance=0.2, min_samples=200)
    like = gate.decide(ScoreSample(scores=rng.gamma(2.0, 1.0, size=1000).tolist()), now_ms=T0, end_of_soak=False)
    assert like.status == "pass"
    assert like.figures["distance"] < 0.08
    shifted = gate.decide(ScoreSample(scores=(rng.gamma(2.0, 1.0, size=1000) + 2.0).tolist()), now_ms=T0,
                          end_of_soak=False)
    assert shifted.status == "fail"
    few = gate.decide(ScoreSample(scores=[1.0] * 199 + [math.nan]), now_ms=T0, end_of_soak=True)
    assert few.status == "continue"


# --- probes and latency -------------------------------------------------------------------------------------------


def probe(name: str, old: bool, new: bool, old_ms: int | None = None, new_ms: int | None = None) -> ProbeResult:
    return ProbeResult(target="pump-1", probe=name, champion_detected=old, challenger_detected=new,
                       champion_delay_ms=old_ms, challenger_delay_ms=new_ms)


def test_probe_gate_fails_a_missed_or_much_slower_probe_and_ignores_what_the_champion_missed_too() -> None:
    gate = ProbeGate(min_probes=2, max_delay_ratio=2.0, delay_slack_ms=60_000)
    ok = [probe("spike", True, True, 60_000, 90_000), probe("drift", True, True, 300_000, 600_000),
          probe("stuck", False, False)]
    assert gate.decide(ProbeResults(probes=ok), now_ms=T0, end_of_soak=False).status == "pass"
    assert gate.decide(ProbeResults(probes=ok[:1]), now_ms=T0, end_of_soak=False).status == "continue"
    missed = gate.decide(ProbeResults(probes=[*ok, probe("bias", True, False)]), now_ms=T0, end_of_soak=False)
    assert missed.status == "fail"
    assert "bias" in missed.reason
    slow = gate.decide(ProbeResults(probes=[*ok, probe("spike2", True, True, 60_000, 181_000)]), now_ms=T0,
                       end_of_soak=False)
    assert slow.status == "fail"  # 181 s > 2 × 60 s + 60 s
    assert "spike2" in slow.reason


def test_latency_gate_compares_p95_and_cpu_with_the_champion() -> None:
    gate = LatencyGate(max_p95_ratio=1.5, max_cpu_ratio=1.5, min_samples=50)
    base = [float(v) for v in range(1, 101)]  # p95 = 95.05
    same = LatencyObservation(challenger_ms=base, champion_ms=base, challenger_cpu=1.0, champion_cpu=1.0)
    assert gate.decide(same, now_ms=T0, end_of_soak=True).status == "pass"
    slower = LatencyObservation(challenger_ms=[2 * v for v in base], champion_ms=base, challenger_cpu=1.0,
                                champion_cpu=1.0)
    decision = gate.decide(slower, now_ms=T0, end_of_soak=True)
    assert decision.status == "fail"
    assert decision.figures["p95_ratio"] == pytest.approx(2.0)
    hungry = LatencyObservation(challenger_ms=base, champion_ms=base, challenger_cpu=1.6, champion_cpu=1.0)
    assert "CPU" in gate.decide(hungry, now_ms=T0, end_of_soak=True).reason
    few = LatencyObservation(challenger_ms=base[:10], champion_ms=base, challenger_cpu=1.0, champion_cpu=1.0)
    assert gate.decide(few, now_ms=T0, end_of_soak=True).status == "continue"


def test_latency_gate_decides_once_at_the_end_of_the_soak_on_all_of_the_phases_samples() -> None:
    """A gate that failed at the first step whose figures crossed the limit would fail a version as fast as the
    champion after one busy minute; it says how things look so far and decides when the soak is over."""
    gate = LatencyGate(min_samples=3, samples="p95")
    busy = LatencyObservation(challenger_ms=[1.0, 2.0, 2.0], champion_ms=[1.0] * 10, challenger_cpu=1.7,
                              champion_cpu=1.0)
    early = gate.decide(busy, now_ms=T0, end_of_soak=False)
    assert early.status == "continue" and "so far" in early.reason and early.figures["p95_ratio"] == 2.0
    calm = LatencyObservation(challenger_ms=[1.0, 2.0, 2.0, *[1.0] * 10], champion_ms=[1.0] * 10,
                              challenger_cpu=1.1, champion_cpu=1.0)
    assert gate.decide(calm, now_ms=T0, end_of_soak=True).status == "pass"
    assert gate.decide(busy, now_ms=T0, end_of_soak=True).status == "fail", "still slower at the end: it fails"
    assert gate.sticky, "one decision per phase: the pass at the end of the soak is not judged again"


def test_latency_gate_ignores_a_ratio_whose_difference_is_below_its_floor() -> None:
    """Sub-millisecond models on a busy machine: 0.27 ms against 0.95 ms is 3.5× but no reason to roll back;
    the same ratio a millisecond wide is."""
    gate = LatencyGate(min_samples=3, samples="p95", min_delta_ms=1.0, min_cpu_delta=10.0)
    tiny = LatencyObservation(challenger_ms=[0.95] * 5, champion_ms=[0.27] * 5, challenger_cpu=16.0,
                              champion_cpu=8.0)
    decision = gate.decide(tiny, now_ms=T0, end_of_soak=True)
    assert decision.status == "pass" and decision.figures["p95_ratio"] == pytest.approx(0.95 / 0.27)
    heavy = LatencyObservation(challenger_ms=[4.0] * 5, champion_ms=[1.0] * 5, challenger_cpu=40.0,
                               champion_cpu=20.0)
    failed = gate.decide(heavy, now_ms=T0, end_of_soak=True)
    assert failed.status == "fail" and "4 ms is 4.00× the champion's 1 ms" in failed.reason
    assert "CPU 40 is 2.00× the champion's 20" in failed.reason
    with pytest.raises(ValueError, match="deltas"):
        LatencyGate(min_delta_ms=-1.0)


def test_latency_gate_on_reported_p95s_compares_the_typical_p95_so_one_busy_moment_does_not_fail_it() -> None:
    """Gateways report a p95 per heartbeat: a few heartbeats of a busy moment must not fail a version that is as
    fast as the champion, while a version slower in every heartbeat still fails."""
    gate = LatencyGate(min_samples=5, samples="p95")
    champion = [1.0] * 20
    spiky = [1.0] * 15 + [5.0] * 5  # 5 of 20 heartbeats during a busy moment
    assert LatencyGate(min_samples=5).decide(LatencyObservation(
        challenger_ms=spiky, champion_ms=champion, challenger_cpu=1.0, champion_cpu=1.0),
        now_ms=T0, end_of_soak=True).status == "fail", "as raw latencies, the spikes are the p95"
    decision = gate.decide(LatencyObservation(challenger_ms=spiky, champion_ms=champion, challenger_cpu=1.0,
                                              champion_cpu=1.0), now_ms=T0, end_of_soak=True)
    assert decision.status == "pass" and decision.figures["p95_ratio"] == pytest.approx(1.0)
    slower = gate.decide(LatencyObservation(challenger_ms=[2.0] * 20, champion_ms=champion, challenger_cpu=1.0,
                                            champion_cpu=1.0), now_ms=T0, end_of_soak=True)
    assert slower.status == "fail" and slower.figures["p95_ratio"] == pytest.approx(2.0)


def test_install_gate_fails_on_a_refusal_or_a_self_revert_and_passes_once_every_gateway_kept_and_was_judged() -> None:
    gate = InstallGate()

    def judge(obs: Installs, end: bool) -> str:
        return gate.decide(obs, now_ms=T0, end_of_soak=end).status

    assert judge(Installs(targets=2, running=2), False) == "continue", "a wave passes only when its soak is over"
    assert judge(Installs(targets=2, running=2), True) == "pass"
    assert judge(Installs(targets=2, running=1), True) == "continue", "one gateway (offline?) has not taken it"
    assert judge(Installs(targets=2, running=2, unjudged=["gw-b"]), True) == "continue"
    waiting = gate.decide(Installs(targets=2, running=2, unjudged=["gw-b"]), now_ms=T0, end_of_soak=True)
    assert "gw-b" in waiting.reason and waiting.figures["unjudged"] == 1.0
    reverted = gate.decide(Installs(targets=2, running=1, reverted=["gw-a: alarm_rate 0.9 (limit 0.5)"]),
                           now_ms=T0, end_of_soak=False)
    assert reverted.status == "fail" and "reverted on gw-a: alarm_rate" in reverted.reason
    assert judge(Installs(targets=2, running=1, refused=["gw-b: tampered: hash differs"]), False) == "fail"
    lenient = InstallGate(max_failures=1, min_running_share=0.5)
    assert lenient.decide(Installs(targets=2, running=1, refused=["gw-b: unloadable"]), now_ms=T0,
                          end_of_soak=True).status == "pass"
    with pytest.raises(ValueError):
        InstallGate(min_running_share=0.0)


def test_decide_refuses_an_observation_of_the_wrong_kind_and_decisions_serialise() -> None:
    with pytest.raises(TypeError, match="cannot judge"):
        decide("false_alarms", RateSPRT(), ScoreSample(scores=[1.0]), now_ms=T0, end_of_soak=False)
    decision = decide("false_alarms", RateSPRT(), counts(11, 0), now_ms=T0, end_of_soak=False)
    assert decision.gate == "false_alarms"
    gates: dict[str, Gate] = {"a": RateSPRT(), "b": MissedFaultGate(grace_ms=1), "c": ProbeGate(),
                              "d": LatencyGate(), "e": ScoreShiftGate(reference=[(0.5, 1.0)])}
    raw = msgspec.json.encode(gates)
    assert msgspec.json.decode(raw, type=dict[str, Gate]) == gates
    assert msgspec.json.decode(msgspec.json.encode(decision), type=type(decision)) == decision
