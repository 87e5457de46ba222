"""The alert rule engine (issue 6, step 1): rules as data, hysteresis, for_s, rate, missing data, scores, RUL,
composites, split invariance, NaN as missing."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from edgeloop.alerts.model import Signal, SignalState
from edgeloop.alerts.rule_config import RuleSet, ThresholdRule, parse_rules
from edgeloop.alerts.rules import RuleEngine
from edgeloop.clock import ManualClock
from edgeloop.detect.finding import Finding, FindingPhase
from edgeloop.errors import ConfigError, NotFoundError
from edgeloop.store.base import TelemetryChunk

T0 = 1_767_225_600_000
RAISE, CLEAR = SignalState.RAISE, SignalState.CLEAR


def chunk(values: Mapping[str, Sequence[float]], *, t0: int = T0, step_ms: int = 1000, device: str = "dev-1",
          asset: str = "pump-1", ts: list[int] | None = None) -> TelemetryChunk:
    channels = tuple(values)
    n = len(next(iter(values.values())))
    stamps = np.array(ts if ts is not None else [t0 + i * step_ms for i in range(n)], dtype=np.int64)
    vals = np.column_stack([np.array(values[c], dtype=np.float64) for c in channels])
    return TelemetryChunk(device=device, seq=0, channels=channels, ts=stamps, values=vals, tenant="acme", asset=asset)


def engine(yaml_text: str, **kw: object) -> RuleEngine:
    return RuleEngine(parse_rules(yaml_text), **kw)  # type: ignore[arg-type]


def brief(signals: list[Signal]) -> list[tuple[int, str, str]]:
    return [((s.ts - T0) // 1000, s.rule, str(s.state)) for s in signals]


# ---- parsing ------------------------------------------------------------------------------------------------

EXAMPLE = """\
rules:
  - {name: bearing-hot, kind: threshold, channel: bearing_temp, above: 85, clear_below: 80, for_s: 5,
     severity: critical}
  - {name: vib-high, kind: threshold, channel: vib, above: 7}
  - {name: pressure-drop, kind: rate, channel: pressure, below_per_s: -0.5, for_s: 10}
  - {name: flow-drop, kind: rate, channel: flow, below_per_s: -0.5}
  - {name: silent, kind: missing, after_s: 60}
  - {name: anomaly, kind: score, source: anomaly, above: 1.0}
  - {name: rul-low, kind: rul, below_cycles: 30}
  - {name: hot-and-loud, kind: all, of: [bearing-hot, vib-high], for_s: 30}
  - {name: any-leak, kind: any, of: [pressure-drop, flow-drop], assets: [pump-1, pump-2]}
"""


def test_the_example_parses() -> None:
    rules = parse_rules(EXAMPLE)
    assert [r.kind for r in rules.rules] == ["threshold", "threshold", "rate", "rate", "missing", "score", "rul",
                                             "all", "any"]
    hot = rules.by_name()["bearing-hot"]
    assert isinstance(hot, ThresholdRule) and hot.clear_below == 80 and hot.severity == "critical"
    json_text = '{"rules": [{"name": "t", "kind": "threshold", "channel": "temp", "above": 1}]}'
    assert parse_rules(json_text).rules[0].name == "t"


@pytest.mark.parametrize(("change", "expected"), [
    (("clear_below: 80", "clear_below: 90"), r"line 2 \(rules\[0\] 'bearing-hot'\): clear_below \(90\) must be <="),
    (("vib-high]", "vib-hgh]"), r"line 10 \(rules\[7\] 'hot-and-loud'\): refers to 'vib-hgh', which is not"),
    (("above: 7}", "above: 7, colour: red}"), r"line 4 .*'vib-high'.*unknown field `colour`"),
    (("after_s: 60", "after_s: -1"), r"line 7 .*'silent'.*Expected `float` > 0"),
    (("kind: rul,", "kind: rull,"), r"line 9 \(rules\[6\] 'rul-low', kind\): Invalid value 'rull'"),
    (("name: flow-drop", "name: vib-high"), r"line 6 .*rules\[3\] 'vib-high'.*already used by rules\[1\]"),
    (("below_per_s: -0.5, for_s", "for_s"), r"line 5 .*'pressure-drop'.*exactly one of 'above_per_s' or"),
    (("above: 7}", "above: 7, clear_above: 8}"), r"line 4 .*'clear_above' goes with 'below'"),
    (("severity: critical", "severity: dire"), r"line 3 \(rules\[0\] 'bearing-hot', severity\): Invalid enum"),
])
def test_parse_errors_name_the_line_the_rule_and_the_problem(change: tuple[str, str], expected: str) -> None:
    text = EXAMPLE.replace(*change)
    assert text != EXAMPLE
    with pytest.raises(ConfigError, match=expected):
        parse_rules(text, origin="rules.yaml")


def test_composite_cycles_and_bad_documents_are_refused() -> None:
    cyclic = EXAMPLE + "  - {name: a, kind: any, of: [b]}\n  - {name: b, kind: all, of: [a, vib-high]}\n"
    with pytest.raises(ConfigError, match=r"line 12 .*composites form a cycle: a -> b -> a"):
        parse_rules(cyclic)
    with pytest.raises(ConfigError, match=r"line 3: not valid YAML/JSON"):
        parse_rules("rules: [\n  {name: x\n")
    with pytest.raises(ConfigError, match="expected a mapping with a 'rules' list"):
        parse_rules("- {name: x, kind: missing, after_s: 1}\n")


# ---- thresholds, hysteresis, for_s --------------------------------------------------------------------------

def test_hysteresis_gives_no_chatter_around_the_threshold() -> None:
    eng = engine("rules: [{name: hot, kind: threshold, channel: temp, above: 85, clear_below: 80}]")
    temps = [70, 84, 86, 84.9, 85.5, 84, 86, 81, 80.5, 79.9, 84, 85.1, 79]
    out = eng.evaluate_chunk(chunk({"temp": temps}))
    assert brief(out) == [(2, "hot", "raise"), (9, "hot", "clear"), (11, "hot", "raise"), (12, "hot", "clear")]
    assert out[0].value == 86 and out[0].severity == "warning" and out[0].explanation == {"temp": 1.0}
    assert out[0].tenant == "acme" and out[0].device == "dev-1" and out[0].key == ("pump-1", "hot")


def test_a_level_alert_says_its_value_against_its_limit_with_the_unit() -> None:
    """An explanation a technician can act on: "bearing_temp 86 °C above 85 °C", not a bare score."""
    units = {("dev-1", "bearing_temp"): "°C"}
    eng = engine("rules: [{name: hot, kind: threshold, channel: bearing_temp, above: 85, clear_below: 80},"
                 " {name: hot-msg, kind: threshold, channel: bearing_temp, above: 85, message: bearing overheating}]",
                 units=lambda device, channel: units.get((device, channel), ""))
    out = eng.evaluate_chunk(chunk({"bearing_temp": [70, 86, 79]}))
    assert [s.message for s in out] == ["bearing_temp 86 °C above 85 °C",
                                        "bearing overheating (bearing_temp 86 °C above 85 °C)",
                                        "bearing_temp 79 °C back below 80 °C", "bearing overheating"]
    plain = engine("rules: [{name: hot, kind: threshold, channel: bearing_temp, above: 85}]")  # no unit known
    assert plain.evaluate_chunk(chunk({"bearing_temp": [70, 86]}))[0].message == "bearing_temp 86 above 85"


def test_below_threshold_mirror_image() -> None:
    eng = engine("rules: [{name: low, kind: threshold, channel: level, below: 10, clear_above: 12}]")
    out = eng.evaluate_chunk(chunk({"level": [15, 9, 11, 9.5, 12.5, 11]}))
    assert brief(out) == [(1, "low", "raise"), (4, "low", "clear")]


def test_for_s_needs_the_condition_to_hold_continuously() -> None:
    eng = engine("rules: [{name: hot, kind: threshold, channel: temp, above: 85, for_s: 5}]")
    # above for 4 s (0..4 at 1 s steps = 4 s elapsed), drops, then above from t=6 for 5 s -> raise at t=11
    temps = [90, 90, 90, 90, 90, 80, 90, 90, 90, 90, 90, 90, 90, 70]
    out = eng.evaluate_chunk(chunk({"temp": temps}))
    assert brief(out) == [(11, "hot", "raise"), (13, "hot", "clear")]


def test_raise_is_not_repeated_while_the_condition_holds() -> None:
    eng = engine("rules: [{name: hot, kind: threshold, channel: temp, above: 85}]")
    out = []
    for k in range(5):
        out += eng.evaluate_chunk(chunk({"temp": [90.0] * 10}, t0=T0 + k * 10_000))
    assert brief(out) == [(0, "hot", "raise")]
    assert eng.active("pump-1") == ["hot"]


def test_nan_is_missing_not_zero() -> None:
    nan = float("nan")
    eng = engine("rules: [{name: cold, kind: threshold, channel: temp, below: 5},"
                 " {name: hot, kind: threshold, channel: temp, above: 85, for_s: 3}]")
    # NaN would read as 0 (below 5) if it were zero; it must neither raise "cold" nor break "hot"'s for_s run
    out = eng.evaluate_chunk(chunk({"temp": [20, nan, 90, nan, nan, 90, 90, nan, 20]}))
    assert brief(out) == [(5, "hot", "raise"), (8, "hot", "clear")]
    assert all(s.value is not None and not np.isnan(s.value) for s in out)
    # a row that is all NaN is no data: it is not where a rule raises even when for_s matured meanwhile
    eng2 = engine("rules: [{name: hot, kind: threshold, channel: temp, above: 85, for_s: 2}]")
    out2 = eng2.evaluate_chunk(chunk({"temp": [90, nan, nan, nan, 91]}))
    assert brief(out2) == [(4, "hot", "raise")]


def test_late_and_resent_rows_are_ignored() -> None:
    eng = engine("rules: [{name: hot, kind: threshold, channel: temp, above: 85}]")
    first = chunk({"temp": [90, 70]})
    assert brief(eng.evaluate_chunk(first)) == [(0, "hot", "raise"), (1, "hot", "clear")]
    assert eng.evaluate_chunk(first) == []


# ---- rate of change -----------------------------------------------------------------------------------------

def test_rate_between_consecutive_valid_samples() -> None:
    nan = float("nan")
    eng = engine("rules: [{name: drop, kind: rate, channel: pressure, below_per_s: -0.5, clear_above_per_s: -0.1}]")
    # steps of 1 s: -0.2/s, then -1/s (raise), NaN skipped: 8 -> 7 over 2 s = -0.5/s: not below -0.5, not above
    # the clear level -0.1 either (hysteresis keeps it raised), then flat (clear)
    out = eng.evaluate_chunk(chunk({"pressure": [10, 9.8, 8.8, nan, 7.8, 7.8]}))
    assert brief(out) == [(2, "drop", "raise"), (5, "drop", "clear")]
    assert out[0].value == pytest.approx(-1.0)
    # the rate across a chunk boundary uses the previous chunk's last valid sample
    out2 = eng.evaluate_chunk(chunk({"pressure": [nan, 5.0]}, t0=T0 + 6000))
    assert brief(out2) == [(7, "drop", "raise")]
    assert out2[0].value == pytest.approx((5.0 - 7.8) / 2)


def test_rate_with_for_s() -> None:
    eng = engine("rules: [{name: rise, kind: rate, channel: temp, above_per_s: 1, for_s: 3}]")
    out = eng.evaluate_chunk(chunk({"temp": [0, 2, 4, 6, 8, 8, 10, 12]}))
    assert brief(out) == [(4, "rise", "raise"), (5, "rise", "clear")]


# ---- missing data -------------------------------------------------------------------------------------------

def test_missing_data_with_an_injected_clock() -> None:
    clock = ManualClock(T0)
    eng = engine("rules: [{name: silent, kind: missing, after_s: 60}]", clock=clock)
    assert eng.evaluate_chunk(chunk({"temp": [20, 21]})) == []  # last data at T0 + 1 s
    clock.advance(60_000)
    assert eng.tick() == []  # 59 s of silence
    clock.advance(1_000)
    out = eng.tick()
    assert brief(out) == [(61, "silent", "raise")] and out[0].value == 60.0
    clock.advance(30_000)
    assert eng.tick() == []  # raised once, not again
    out = eng.evaluate_chunk(chunk({"temp": [22]}, t0=T0 + 95_000))
    assert brief(out) == [(95, "silent", "clear")]


def test_missing_data_clears_when_a_backfill_fills_the_gap() -> None:
    """An agent cut off from the platform replays its journal afterwards: the rows arrive late but contiguous.
    The silence raised meanwhile must clear (the device was never silent, its uplink was)."""
    clock = ManualClock(T0)
    eng = engine("rules: [{name: silent, kind: missing, after_s: 60}]", clock=clock)
    eng.evaluate_chunk(chunk({"temp": [20.0] * 10}))  # T0 .. T0 + 9 s
    clock.advance(120_000)
    assert brief(eng.tick()) == [(69, "silent", "raise")]
    out = eng.evaluate_chunk(chunk({"temp": [21.0] * 200}, t0=T0 + 10_000))  # the backfill: 10 s .. 209 s
    assert brief(out) == [(209, "silent", "clear")] and eng.active("pump-1") == []
    clock.advance(30_000)
    assert eng.tick() == []


def test_missing_data_is_per_device_and_the_asset_alert_lasts_while_any_is_silent() -> None:
    """An asset with a PLC and a vibration sensor: the sensor going silent raises although the PLC reports; the
    PLC going silent too raises nothing more; the alert clears only when both report again. A device that was
    expected but never reported is silent too."""
    clock = ManualClock(T0)
    eng = engine("rules: [{name: silent, kind: missing, after_s: 60}]", clock=clock)
    eng.expect("pump-1", devices=["plc", "vib", "never"], since_ms=T0)
    plc = chunk({"temp": [20.0] * 30}, device="plc")  # T0 .. T0 + 29 s
    vib = chunk({"temp": [1.0] * 5}, device="vib")  # T0 .. T0 + 4 s
    assert eng.evaluate_chunk(plc) == [] and eng.evaluate_chunk(vib) == []
    clock.advance(61_000)
    out = eng.tick()  # "never" is silent from T0 + 60 s, vib from T0 + 64 s: one raise, at the first
    assert [(s.ts - T0, s.state.value, s.device) for s in out] == [(60_000, "raise", "never")]
    assert eng.tick(T0 + 100_000) == []  # plc silent at T0 + 89 s too: still one alert
    assert eng.evaluate_chunk(chunk({"temp": [2.0]}, t0=T0 + 100_000, device="vib")) == []  # vib back
    assert eng.evaluate_chunk(chunk({"temp": [21.0]}, t0=T0 + 101_000, device="plc")) == []  # plc back
    out = eng.evaluate_chunk(chunk({"temp": [5.0]}, t0=T0 + 102_000, device="never"))  # the last one reports
    assert brief(out) == [(102, "silent", "clear")] and eng.active("pump-1") == []


def test_a_replay_finds_silence_only_in_a_devices_own_data() -> None:
    """While history is replayed, ticks leave silence alone (a device whose turn has not come is not silent);
    a gap in the device's own data still raises and clears."""
    clock = ManualClock(T0)
    eng = engine("rules: [{name: silent, kind: missing, after_s: 60}]", clock=clock)
    eng.evaluate_chunk(chunk({"temp": [20.0] * 3}))
    assert eng.tick(T0 + 600_000, missing=False) == []
    out = eng.evaluate_chunk(chunk({"temp": [21.0]}, t0=T0 + 200_000))  # its own gap of 198 s
    assert brief(out) == [(62, "silent", "raise"), (200, "silent", "clear")]


def test_missing_data_gap_seen_without_a_tick_and_all_nan_rows_are_no_data() -> None:
    nan = float("nan")
    eng = engine("rules: [{name: silent, kind: missing, after_s: 10}]")
    # the rows at 1..11 s carry only NaN: the asset has been silent from 0 s to 12 s
    values = [20.0] + [nan] * 11 + [21.0]
    out = eng.evaluate_chunk(chunk({"temp": values}))
    assert brief(out) == [(10, "silent", "raise"), (12, "silent", "clear")]


def test_expected_asset_that_never_reports_raises() -> None:
    clock = ManualClock(T0)
    eng = engine("rules: [{name: silent, kind: missing, after_s: 30, assets: [press-9]}]", clock=clock)
    eng.expect("press-9", tenant="acme")
    eng.expect("pump-1", tenant="acme")  # out of the rule's scope
    assert brief(eng.tick(T0 + 30_000)) == [(30, "silent", "raise")]


# ---- scores and RUL -----------------------------------------------------------------------------------------

def test_score_rule_with_hysteresis_confidence_and_hold() -> None:
    eng = engine("rules: [{name: anomaly, kind: score, above: 1.0, clear_below: 0.8, hold_s: 60, severity: critical}]")
    finding = Finding(ts=T0, kind="anomaly", severity="warning", score=1.4, explanation={"a": 0.75, "b": 0.25},
                      message="odd")
    out = eng.evaluate_finding("pump-1", finding, tenant="acme", device="dev-1", confidence=0.9)
    assert brief(out) == [(0, "anomaly", "raise")]
    assert out[0].confidence == 0.9 and out[0].explanation == {"a": 0.75, "b": 0.25} and out[0].value == 1.4
    assert eng.evaluate_score("pump-1", T0 + 10_000, 0.9) == []  # between clear_below and above: holds
    assert brief(eng.tick(T0 + 70_000)) == [(70, "anomaly", "clear")]  # no score >= 0.8 for 60 s
    assert eng.evaluate_score("pump-1", T0 + 80_000, 0.5, source="other") == []


def test_a_state_is_held_by_its_holding_reports_and_cleared_by_its_end() -> None:
    """``holding`` keeps a score rule raised past its ``hold_s`` (a low score does not clear it, it is no
    repeat), ``ended`` clears it at its time; a rule not raised when a state holds (a new rule document) raises."""
    eng = engine("rules: [{name: stuck, kind: score, source: sensor_stuck, above: 0.5, hold_s: 900}]")

    def report(t_s: int, phase: FindingPhase, score: float = 1.0) -> Finding:
        return Finding(ts=T0 + t_s * 1000, kind="sensor_stuck", severity="warning", score=score,
                       explanation={"flow": 1.0}, message="flow stuck", phase=phase)

    assert brief(eng.evaluate_finding("pump-1", report(0, FindingPhase.ONSET))) == [(0, "stuck", "raise")]
    for t in range(60, 3600, 60):  # an hour of holding reports, one a low score: the rule stays raised
        assert eng.evaluate_finding("pump-1", report(t, FindingPhase.HOLDING, 0.1 if t == 600 else 1.0)) == []
        assert eng.tick(T0 + t * 1000 + 30_000) == []
    assert eng.active("pump-1") == ["stuck"]
    assert brief(eng.evaluate_finding("pump-1", report(3630, FindingPhase.ENDED, 0.0))) == [(3630, "stuck", "clear")]
    assert eng.evaluate_finding("pump-1", report(3700, FindingPhase.ENDED, 0.0)) == []  # nothing raised: no-op
    fresh = engine("rules: [{name: stuck, kind: score, source: sensor_stuck, above: 0.5, hold_s: 900}]")
    assert brief(fresh.evaluate_finding("pump-1", report(60, FindingPhase.HOLDING))) == [(60, "stuck", "raise")]
    assert brief(fresh.tick(T0 + 60_000 + 900_000)) == [(960, "stuck", "clear")]  # no report since: hold expires


def test_rul_rule_uses_the_lower_bound() -> None:
    eng = engine("rules: [{name: rul-low, kind: rul, below_cycles: 30, clear_above: 40}]")
    assert eng.evaluate_rul("eng-1", T0, 50, lower=35) == []
    assert brief(eng.evaluate_rul("eng-1", T0 + 1000, 45, lower=28)) == [(1, "rul-low", "raise")]
    assert eng.evaluate_rul("eng-1", T0 + 2000, 45, lower=38) == []
    assert brief(eng.evaluate_rul("eng-1", T0 + 3000, 60, lower=41)) == [(3, "rul-low", "clear")]


# ---- composites ---------------------------------------------------------------------------------------------

COMPOSITES = """\
rules:
  - {name: hot, kind: threshold, channel: temp, above: 85}
  - {name: loud, kind: threshold, channel: vib, above: 7}
  - {name: hot-and-loud, kind: all, of: [hot, loud], for_s: 3, severity: critical}
  - {name: hot-or-loud, kind: any, of: [hot, loud]}
"""


def test_composite_and_or_with_for_s() -> None:
    eng = engine(COMPOSITES)
    temp = [80, 90, 90, 90, 90, 90, 90, 90, 80, 80]
    vib = [1, 1, 8, 8, 8, 1, 8, 8, 8, 1]
    out = eng.evaluate_chunk(chunk({"temp": temp, "vib": vib}))
    assert brief(out) == [
        (1, "hot", "raise"), (1, "hot-or-loud", "raise"),
        (2, "loud", "raise"),
        (5, "loud", "clear"),  # hot-and-loud held 3 s only (2..4): not yet; then broken at 5
        (6, "loud", "raise"),
        (8, "hot", "clear"),  # hot-and-loud from 6 would raise at 9 but ends at 8
        (9, "loud", "clear"), (9, "hot-or-loud", "clear"),
    ]
    eng2 = engine(COMPOSITES)
    out2 = eng2.evaluate_chunk(chunk({"temp": [90] * 6, "vib": [8] * 6}))
    assert [(t, r) for t, r, s in brief(out2) if r == "hot-and-loud"] == [(3, "hot-and-loud")]
    raised = next(s for s in out2 if s.rule == "hot-and-loud")
    assert raised.severity == "critical" and raised.explanation == {"temp": 0.5, "vib": 0.5}


def test_composite_across_two_devices_of_one_asset_and_a_score() -> None:
    eng = engine("rules:\n  - {name: hot, kind: threshold, channel: temp, above: 85}\n"
                 "  - {name: odd, kind: score, above: 1}\n  - {name: both, kind: all, of: [hot, odd]}\n")
    assert brief(eng.evaluate_chunk(chunk({"temp": [90]}, device="t-1"))) == [(0, "hot", "raise")]
    out = eng.evaluate_score("pump-1", T0 + 2000, 2.0)
    assert brief(out) == [(2, "odd", "raise"), (2, "both", "raise")]
    out = eng.evaluate_chunk(chunk({"temp": [80]}, t0=T0 + 3000, device="t-1"))
    assert brief(out) == [(3, "hot", "clear"), (3, "both", "clear")]


def test_scope_by_asset_and_profile() -> None:
    eng = engine("rules:\n  - {name: a, kind: threshold, channel: temp, above: 1, assets: [pump-1]}\n"
                 "  - {name: p, kind: threshold, channel: temp, above: 1, profiles: [oven]}\n",
                 profiles={"dev-9": "oven"})
    assert brief(eng.evaluate_chunk(chunk({"temp": [5]}))) == [(0, "a", "raise")]
    out = eng.evaluate_chunk(chunk({"temp": [5]}, device="dev-9", asset="oven-1"))
    assert [(s.asset, s.rule) for s in out] == [("oven-1", "p")]


# ---- split invariance ---------------------------------------------------------------------------------------

SPLIT_RULES = """\
rules:
  - {name: hot, kind: threshold, channel: temp, above: 1.0, clear_below: 0.5, for_s: 3}
  - {name: cold, kind: threshold, channel: temp, below: -1.0, clear_above: -0.5}
  - {name: loud, kind: threshold, channel: vib, above: 1.2, for_s: 2}
  - {name: jump, kind: rate, channel: temp, above_per_s: 0.8, clear_below_per_s: 0.2}
  - {name: fall, kind: rate, channel: vib, below_per_s: -0.4, for_s: 1}
  - {name: gap, kind: missing, after_s: 5}
  - {name: vib-gap, kind: missing, channel: vib, after_s: 4}
  - {name: both, kind: all, of: [hot, loud], for_s: 4}
  - {name: either, kind: any, of: [jump, fall, both]}
"""


def _stream(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.choice([1000, 1000, 1000, 2000, 7000], size=n)).astype(np.int64)
    t = (ts - T0) / 1000.0
    values = np.column_stack([1.6 * np.sin(t / 60), 1.6 * np.sin(t / 25)]) + rng.normal(0, 0.4, size=(n, 2))
    values[rng.random((n, 2)) < 0.08] = np.nan
    values[rng.random(n) < 0.02] = np.nan
    return ts, values


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_same_signals_however_the_stream_is_split(seed: int) -> None:
    ts, values = _stream(seed)
    rules = parse_rules(SPLIT_RULES)

    def run(cuts: list[int]) -> list[Signal]:
        eng = RuleEngine(rules)
        out: list[Signal] = []
        bounds = [0, *cuts, len(ts)]
        for a, b in itertools.pairwise(bounds):
            out += eng.evaluate_chunk(TelemetryChunk(device="d", seq=a, channels=("temp", "vib"), ts=ts[a:b],
                                                     values=values[a:b], tenant="t", asset="a"))
        return out

    whole = run([])
    assert len(whole) > 50
    assert {s.rule for s in whole} == {"hot", "cold", "loud", "jump", "fall", "gap", "vib-gap", "both", "either"}
    rng = np.random.default_rng(seed + 100)
    order = {r.name: i for i, r in enumerate(rules.rules)}

    def same(got: list[Signal]) -> None:
        # per rule, the very same sequence; across rules, the same signals in (ts, rule) order. (A "missing" raise
        # found from a gap without a tick is dated back to its deadline, so where the gap's end falls relative
        # to a chunk boundary can move it before or after other rules' signals of the same chunk.)
        for rule in order:
            assert [s for s in got if s.rule == rule] == [s for s in whole if s.rule == rule]
        assert sorted(got, key=lambda s: (s.ts, order[s.rule])) == sorted(whole, key=lambda s: (s.ts, order[s.rule]))

    for _ in range(4):
        cuts = sorted(set(rng.integers(1, len(ts), size=int(rng.integers(1, 400))).tolist()))
        same(run(cuts))
    same(run(list(range(1, len(ts)))))  # one row per chunk


def test_signals_alternate_raise_and_clear_per_rule() -> None:
    ts, values = _stream(9)
    eng = RuleEngine(parse_rules(SPLIT_RULES))
    out = eng.evaluate_chunk(TelemetryChunk(device="d", seq=0, channels=("temp", "vib"), ts=ts, values=values,
                                            asset="a"))
    for rule in {s.rule for s in out}:
        states = [s.state for s in out if s.rule == rule]
        assert states == [RAISE, CLEAR] * (len(states) // 2) + [RAISE] * (len(states) % 2)
    assert [s.ts for s in out] == sorted(s.ts for s in out)


def test_engine_accepts_a_list_of_rules_and_refuses_bad_references() -> None:
    rules = list(parse_rules(COMPOSITES).rules)
    eng = RuleEngine(list(reversed(rules)))
    assert [r.name for r in eng.rules][-2:] == ["hot-or-loud", "hot-and-loud"] or eng.index["hot"] < eng.index[
        "hot-and-loud"]
    with pytest.raises(ValueError, match="not defined"):
        RuleEngine(RuleSet(rules=tuple(rules[2:])))


# ---- tuning policies and per-asset overrides ----------------------------------------------------------------

TUNED = """\
rules:
  - {name: hot, kind: threshold, channel: temp, above: 85, clear_below: 80,
     tune: {mode: auto, after_false_alarms: 3, period_s: 3600, max_step: 2, max: 90}}
  - {name: low, kind: threshold, channel: level, below: 10, clear_above: 12, tune: {max_step_pct: 10, min: 5}}
  - {name: jump, kind: rate, channel: temp, above_per_s: 2}
  - {name: anomaly, kind: score, above: 1.0, clear_below: 0.8}
  - {name: rul-low, kind: rul, below_cycles: 30, clear_above: 40}
  - {name: silent, kind: missing, after_s: 60}
"""


def test_tuning_policy_parses() -> None:
    hot = parse_rules(TUNED).by_name()["hot"]
    assert isinstance(hot, ThresholdRule) and hot.tune is not None
    assert (hot.tune.mode, hot.tune.after_false_alarms, hot.tune.max_step, hot.tune.max) == ("auto", 3, 2.0, 90.0)
    low = parse_rules(TUNED).by_name()["low"]
    assert isinstance(low, ThresholdRule) and low.tune is not None
    assert (low.tune.mode, low.tune.after_false_alarms, low.tune.period_s) == ("propose", 3, 7 * 86_400.0)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("max_step: 2, max: 90", "max_step: 2, min: 80",
     r"line 3 \(rules\[0\] 'hot'\): tune.max is required: the rule raises above a level"),
    ("max_step: 2, max: 90", "max_step: 2, max_step_pct: 5, max: 90",
     r"'hot'\): give exactly one of 'max_step' \(in the rule's unit\) or 'max_step_pct'"),
    ("max_step: 2, max: 90", "max_step: 2, max: 84",
     r"'hot'\): above \(85\) is outside the tuning bounds \[-inf, 84\]"),
    ("max_step: 2, max: 90", "max_step: 2, min: 95, max: 90", r"tune.min \(95\) must be <= tune.max \(90\)"),
    ("max_step: 2, max: 90", "max_step: 2, maxx: 90", r"'hot', tune\): Object contains unknown field `maxx`"),
    ("max_step: 2, max: 90", "max_step: .inf, max: 90", r"tune.max_step must be a finite number"),
    ("max_step: 2, max: 90", "max_step: 0, max: 90", r"'hot', tune.max_step\): Expected `float` > 0"),
    ("mode: auto", "mode: manual", r"'hot', tune.mode\): Invalid enum value 'manual'"),
    ("max_step_pct: 10, min: 5", "max_step_pct: 10, max: 20", r"'low'\): tune.min is required: the rule raises below"),
])
def test_tuning_policy_errors_name_the_line_the_rule_and_the_problem(old: str, new: str, expected: str) -> None:
    assert old in TUNED
    with pytest.raises(ConfigError, match=expected):
        parse_rules(TUNED.replace(old, new))


def test_an_override_changes_when_the_rule_raises_on_that_asset_only() -> None:
    eng = engine(TUNED)
    tuned = eng.set_override("pump-1", "hot", above=89, clear_below=84)
    assert isinstance(tuned, ThresholdRule) and (tuned.above, tuned.clear_below) == (89, 84)
    assert eng.rule_for("pump-1", "hot") == tuned and eng.rule_for("pump-2", "hot") == eng.rules[0]
    temps = [80, 87, 90, 86, 83, 79]
    one = [s for s in eng.evaluate_chunk(chunk({"temp": temps}, asset="pump-1")) if s.rule == "hot"]
    two = [s for s in eng.evaluate_chunk(chunk({"temp": temps}, asset="pump-2", device="dev-2")) if s.rule == "hot"]
    assert brief(one) == [(2, "hot", "raise"), (4, "hot", "clear")]  # above 89, clear below 84
    assert brief(two) == [(1, "hot", "raise"), (5, "hot", "clear")]  # the configured 85 / 80
    assert one[0].message == "temp 90 above 89" and two[0].message == "temp 87 above 85"
    assert set(eng.overrides("pump-1")) == {"hot"} and eng.overrides("pump-2") == {}
    assert eng.clear_override("pump-1", "hot") and not eng.clear_override("pump-1", "hot")
    later = eng.evaluate_chunk(chunk({"temp": [86.0, 79.0]}, asset="pump-1", t0=T0 + 10_000))
    assert brief([s for s in later if s.rule == "hot"]) == [(10, "hot", "raise"), (11, "hot", "clear")]


def test_an_override_set_while_raised_clears_at_the_new_clear_level() -> None:
    eng = engine(TUNED)
    assert brief([s for s in eng.evaluate_chunk(chunk({"temp": [86.0]})) if s.rule == "hot"]) == [(0, "hot", "raise")]
    eng.set_override("pump-1", "hot", above=89, clear_below=84)
    out = [s for s in eng.evaluate_chunk(chunk({"temp": [85.0, 83.0]}, t0=T0 + 1000)) if s.rule == "hot"]
    assert brief(out) == [(2, "hot", "clear")]  # 85 is above the new clear level 84: still raised


def test_overrides_of_below_rate_score_and_rul_rules() -> None:
    eng = engine(TUNED)
    eng.set_override("pump-1", "low", below=8)  # clear_above stays 12
    out = eng.evaluate_chunk(chunk({"level": [9.0, 7.0, 11.0, 12.5]}))
    assert brief(out) == [(1, "low", "raise"), (3, "low", "clear")]
    eng.set_override("pump-1", "jump", above=5)
    out = eng.evaluate_chunk(chunk({"temp": [10.0, 13.0, 19.0]}, t0=T0 + 10_000))
    assert brief([s for s in out if s.rule == "jump"]) == [(12, "jump", "raise")]
    eng.set_override("pump-1", "anomaly", above=1.5, clear_below=1.2)
    assert eng.evaluate_score("pump-1", T0, 1.4) == []
    assert brief(eng.evaluate_score("pump-1", T0 + 1000, 1.6)) == [(1, "anomaly", "raise")]
    assert brief(eng.evaluate_score("pump-2", T0, 1.4)) == [(0, "anomaly", "raise")]
    eng.set_override("pump-1", "rul-low", below=20, clear_above=25)
    assert eng.evaluate_rul("pump-1", T0, 50, lower=25) == []
    assert brief(eng.evaluate_rul("pump-1", T0 + 1000, 50, lower=19)) == [(1, "rul-low", "raise")]
    assert brief(eng.evaluate_rul("pump-1", T0 + 2000, 50, lower=26)) == [(2, "rul-low", "clear")]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"above": 88, "clear_below": 89}, r"override of rule 'hot' on 'pump-1': clear_below \(89\) must be <= above"),
    ({"above": 79}, r"clear_below \(80\) must be <= above \(79\), or the alert would chatter"),
    ({"above": 91}, r"above \(91\) is outside the tuning bounds \[-inf, 90\]"),
    ({"below": 80}, r"the rule raises above a level; override it with 'above' / 'clear_below'"),
    ({"above": float("nan")}, r"above must be a finite number"),
    ({}, r"give a level to override"),
])
def test_a_bad_override_is_refused_and_the_previous_one_stays(kwargs: dict[str, float], expected: str) -> None:
    eng = engine(TUNED)
    eng.set_override("pump-1", "hot", above=87, clear_below=82)
    with pytest.raises(ConfigError, match=expected):
        eng.set_override("pump-1", "hot", **kwargs)
    kept = eng.overrides("pump-1")["hot"]
    assert isinstance(kept, ThresholdRule) and (kept.above, kept.clear_below) == (87, 82)


def test_overrides_of_unknown_or_level_less_rules_are_refused() -> None:
    eng = engine(TUNED)
    with pytest.raises(NotFoundError, match="rule 'nope' not found"):
        eng.set_override("pump-1", "nope", above=1)
    with pytest.raises(ConfigError, match="a missing rule has no level to override"):
        eng.set_override("pump-1", "silent", above=1)
    with pytest.raises(ConfigError, match=r"'low' on 'pump-1': the rule raises below a level; override it with "
                                          r"'below' / 'clear_above'"):
        eng.set_override("pump-1", "low", clear_below=3)
    with pytest.raises(ConfigError, match=r"below \(4\) is outside the tuning bounds \[5, inf\]"):
        eng.set_override("pump-1", "low", below=4)
    assert eng.overrides("pump-1") == {}
