"""Known-answer fault probes: the built-in champion finds every default probe on healthy simulated devices; a
version that learnt a fault as normal misses it and the probe gate stops its rollout; the live detectors are
never touched."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache

import msgspec
import numpy as np
import pytest

from edgeloop.campaigns.gates import ProbeGate, ProbeResult
from edgeloop.detect import AssetDetector
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.models.probes import DEFAULT_PROBES, Effect, Probe, ProbedDetector, inject, probe_results, run_probes
from edgeloop.sim import CHANNELS, DeviceChunk, FaultKind, Fleet

H = 3_600_000
MIN = 60_000
WINDOW = 75 * 60  # rows given to run_probes: 45 min of warm rows, then the probes' 30 min
BEARING_WEAR = DEFAULT_PROBES[0]


@cache
def healthy(seed: int, hours: float) -> tuple[DeviceChunk, ...]:
    fleet = Fleet(devices=4, faulty=0, seed=seed, start_ms=0, duration_ms=int(hours * H))
    return tuple(fleet.advance(int(hours * H)))


def live(chunk: DeviceChunk, rows: int | None = None) -> AssetDetector:
    """The built-in detector (default configuration) after scoring the device's data (its first ``rows``)."""
    det = AssetDetector(channels=CHANNELS)
    det.process(chunk.ts[:rows], chunk.values[:rows])
    return det


def probe(champion: ProbedDetector, challenger: ProbedDetector, chunk: DeviceChunk, end: int | None = None, *,
          probes: Sequence[Probe] = DEFAULT_PROBES, after_ms: int | None = None) -> list[ProbeResult]:
    """Probe on the device's recent data: the ``WINDOW`` rows before ``end`` (default: its last rows)."""
    end = chunk.ts.shape[0] if end is None else end
    return run_probes(champion, challenger, device=chunk.device_id, ts=chunk.ts[end - WINDOW:end],
                      values=chunk.values[end - WINDOW:end], channels=CHANNELS, probes=probes, after_ms=after_ms)


@pytest.mark.parametrize(("seed", "hours"), [(1, 2.0), (2, 2.0), (3, 8.0)])
def test_the_built_in_champion_detects_every_default_probe_on_healthy_devices(seed: int, hours: float) -> None:
    # 2 h: before the detector's ensemble is calibrated (the per-channel statistic alone); 8 h: with it
    for chunk in healthy(seed, hours):
        champion = live(chunk)
        results = probe(champion, champion, chunk)
        assert [r.probe for r in results] == [p.name for p in DEFAULT_PROBES]
        for r in results:
            assert r.target == chunk.device_id
            assert r.champion_detected and r.challenger_detected, (chunk.device_id, r)
            assert r.champion_delay_ms is not None and 0 <= r.champion_delay_ms < 25 * MIN, (chunk.device_id, r)
        assert ProbeGate().decide(probe_results(results), now_ms=0, end_of_soak=False).status == "pass"


def learnt_intermittent_wear(chunk: DeviceChunk, seed: int) -> AssetDetector:
    """A version fitted on a window holding the fault: during its warm-up the bearing wear of the probe (vibration
    × 1.8) came and went in minute-long stretches, so it learnt that vibration as normal."""
    det = AssetDetector(channels=CHANNELS)
    warm = det.config.warmup_samples
    on = np.repeat(np.random.default_rng(seed).random(warm // 60 + 1) < 0.5, 60)[:warm]
    faulty = chunk.values[:warm].copy()
    faulty[:, [CHANNELS.index(c) for c in ("vib_x", "vib_y", "vib_z")]] *= (1.0 + 0.8 * on)[:, None]
    det.process(chunk.ts[:warm], faulty)
    return det


def test_a_version_that_learnt_the_fault_misses_that_probe_and_the_gate_stops_it() -> None:
    per_device: dict[str, list[ProbeResult]] = {}
    for chunk in healthy(1, 3.0):
        champion = live(chunk)
        challenger = learnt_intermittent_wear(chunk, seed=1)
        # on the healthy data after its warm-up it raises nothing: live data alone would not tell
        assert challenger.process(chunk.ts[1200:], chunk.values[1200:]) == []
        [r] = per_device[chunk.device_id] = probe(champion, challenger, chunk, probes=[BEARING_WEAR])
        assert r.champion_detected and r.champion_delay_ms is not None
        slow = r.challenger_delay_ms is not None and r.challenger_delay_ms > 2 * r.champion_delay_ms + MIN
        assert not r.challenger_detected or slow, r
    decision = ProbeGate().decide(probe_results(per_device), now_ms=0, end_of_soak=False)
    assert decision.status == "fail"
    assert "bearing_wear" in decision.reason
    assert decision.figures["champion_detected"] == 4.0


def test_a_healthy_version_fitted_on_other_data_passes_the_probe_gate() -> None:
    results: list[ProbeResult] = []
    for chunk in healthy(1, 3.0):
        champion = live(chunk)
        challenger = AssetDetector(channels=CHANNELS)  # fitted on the same device's data from 40 min later
        challenger.process(chunk.ts[2400:], chunk.values[2400:])
        results += probe(champion, challenger, chunk)
    decision = ProbeGate().decide(probe_results(results), now_ms=0, end_of_soak=False)
    assert decision.status == "pass", decision.reason
    assert decision.figures["champion_detected"] == 4 * len(DEFAULT_PROBES)


def test_the_live_detectors_are_not_modified() -> None:
    chunk = healthy(2, 3.0)[0]
    cut = int(2.5 * 3600)  # the live detectors have seen 2.5 h; the last 30 min come after the probes
    champion, challenger = live(chunk, cut), learnt_intermittent_wear(chunk, seed=2)
    challenger.process(chunk.ts[1200:cut], chunk.values[1200:cut])
    twins = copy.deepcopy(champion), copy.deepcopy(challenger)
    probe(champion, challenger, chunk, end=cut)
    later_ts, later_x = chunk.ts[cut:], chunk.values[cut:].copy()
    later_x[900:, :3] *= 2.0  # something to find, so that findings are compared too
    for det, twin in zip((champion, challenger), twins, strict=True):
        assert det.samples_seen == twin.samples_seen
        findings = det.process(later_ts, later_x)
        assert findings and findings == twin.process(later_ts, later_x)
        np.testing.assert_array_equal(det.last_scores, twin.last_scores)


def test_probing_is_deterministic_and_independent_of_the_column_order() -> None:
    chunk = healthy(3, 2.0)[1]
    champion = live(chunk)
    challenger = learnt_intermittent_wear(chunk, seed=3)
    challenger.process(chunk.ts[1200:], chunk.values[1200:])
    first = probe(champion, challenger, chunk)
    assert probe(champion, challenger, chunk) == first
    order = list(reversed(range(len(CHANNELS))))
    shuffled = run_probes(champion, challenger, device=chunk.device_id, ts=chunk.ts[-WINDOW:],
                          values=chunk.values[-WINDOW:, order], channels=[CHANNELS[j] for j in order])
    assert shuffled == first


def test_a_version_of_another_detector_kind_is_probed_alike() -> None:
    # the champion's answers do not depend on what it is compared with
    chunk = healthy(2, 2.0)[2]
    champion = live(chunk)
    other = TrainedBaselineDetector(channels=CHANNELS)
    other.process(chunk.ts, chunk.values)
    results = probe(champion, other, chunk)
    alone = probe(champion, champion, chunk)
    assert [(r.probe, r.champion_detected, r.champion_delay_ms) for r in results] == \
        [(r.probe, r.champion_detected, r.champion_delay_ms) for r in alone]
    assert all(r.challenger_delay_ms is None or r.challenger_delay_ms >= 0 for r in results)


def test_a_probe_applies_only_to_devices_with_its_channels() -> None:
    chunk = healthy(1, 2.0)[0]
    names = ("speed", "pressure", "flow")
    cols = [CHANNELS.index(c) for c in names]
    det = AssetDetector(channels=names)
    det.process(chunk.ts, chunk.values[:, cols])
    results = run_probes(det, det, device="hydraulic-only", ts=chunk.ts[-WINDOW:],
                         values=chunk.values[-WINDOW:, cols], channels=names)
    assert [r.probe for r in results] == ["cavitation", "sensor_drift"]
    assert all(r.champion_detected for r in results)
    assert run_probes(det, det, device="x", ts=chunk.ts[-WINDOW:], values=chunk.values[-WINDOW:, cols],
                      channels=names, probes=[BEARING_WEAR]) == []


def test_a_device_that_is_not_normal_gives_no_evidence() -> None:
    # a wearing bearing: the champion's anomaly episode is open, so no probe onset can show; the gate waits
    fleet = Fleet(devices=1, faulty=1, seed=4, start_ms=0, duration_ms=3 * H, fault_kinds=[FaultKind.BEARING_WEAR])
    [chunk] = fleet.advance(3 * H)
    fault = fleet.ground_truth()[0]
    assert fault is not None and fault.start_ms < chunk.ts[-WINDOW]
    champion = live(chunk)
    results = probe(champion, champion, chunk)
    assert results and not any(r.champion_detected or r.challenger_detected for r in results)
    assert ProbeGate().decide(probe_results(results), now_ms=0, end_of_soak=False).status == "continue"


def test_inject_ramps_each_effect_in_from_the_start() -> None:
    ts = np.arange(6, dtype=np.int64) * MIN
    x = np.column_stack([np.full(6, 2.0), np.full(6, 40.0), [10.0, 10.0, np.nan, 10.0, 10.0, 10.0]])
    p = Probe(name="p", ramp_ms=2 * MIN, effects=(Effect(channels=("vib_*",), change="scale", amount=0.5),
                                                  Effect(channels=("temp",), change="add", amount=4.0),
                                                  Effect(channels=("flow", "temp"), change="add_level",
                                                         amount=0.1, pick="first")))
    out = inject(p, ts, x, ["vib_x", "temp", "flow"], start_ms=2 * MIN)
    np.testing.assert_allclose(out[:, 0], [2.0, 2.0, 2.0, 2.5, 3.0, 3.0])
    np.testing.assert_allclose(out[:, 1], [40.0, 40.0, 40.0, 42.0, 44.0, 44.0])
    np.testing.assert_allclose(out[:, 2], [10.0, 10.0, np.nan, 10.5, 11.0, 11.0])  # NaN stays missing
    np.testing.assert_array_equal(x[:, 0], 2.0)  # the input is not altered
    assert p.applies_to(["vib_x", "temp", "flow"]) and not p.applies_to(["vib_x", "flow"])


def test_probes_round_trip_as_json_and_refuse_nonsense() -> None:
    raw = msgspec.json.encode(DEFAULT_PROBES)
    assert msgspec.json.decode(raw, type=tuple[Probe, ...]) == DEFAULT_PROBES
    with pytest.raises(ValueError, match="name"):
        Probe(name="Bad Name", effects=(Effect(channels=("x",), change="add", amount=1.0),))
    with pytest.raises(ValueError, match="above -1"):
        Effect(channels=("x",), change="scale", amount=-1.0)
    with pytest.raises(ValueError, match="no effects"):
        Probe(name="empty", effects=())
    with pytest.raises(ValueError, match="length_ms"):
        Probe(name="long", effects=(Effect(channels=("x",), change="add", amount=1.0),), length_ms=5 * H)


def test_data_that_does_not_fit_is_refused() -> None:
    chunk = healthy(1, 2.0)[0]
    champion = live(chunk)
    with pytest.raises(ValueError, match="need 30 min"):
        run_probes(champion, champion, device="d", ts=chunk.ts[-3600:], values=chunk.values[-3600:],
                   channels=CHANNELS)
    with pytest.raises(ValueError, match="later than the replay"):  # the detector has seen more than told
        probe(champion, champion, chunk, after_ms=int(chunk.ts[-1]) - 10 * MIN)
    with pytest.raises(ValueError, match="no column"):
        run_probes(champion, champion, device="d", ts=chunk.ts[-WINDOW:], values=chunk.values[-WINDOW:, :7],
                   channels=CHANNELS[:7])
    with pytest.raises(ValueError, match="strictly increasing"):
        run_probes(champion, champion, device="d", ts=chunk.ts[-WINDOW:][::-1], values=chunk.values[-WINDOW:],
                   channels=CHANNELS)


def test_probe_results_file_each_device_s_results_in_a_stable_order() -> None:
    a = ProbeResult(target="b", probe="x", champion_detected=True, challenger_detected=True)
    b = ProbeResult(target="a", probe="y", champion_detected=True, challenger_detected=False)
    assert [r.target for r in probe_results({"b": [a], "a": [b]}).probes] == ["a", "b"]
    assert probe_results([a, b]) == probe_results({"a": [b], "b": [a]})
    with pytest.raises(ValueError, match="filed under"):
        probe_results({"a": [a]})
