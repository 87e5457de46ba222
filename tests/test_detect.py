"""The robust-ensemble-v2 detector, on its own and against the simulated fleet (no I/O)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeloop.detect import AssetDetector, DetectorConfig, Finding, FindingKind
from edgeloop.evaluation.sim_eval import FleetResult, run_fleet
from edgeloop.sim import CHANNELS, FaultKind, Fleet

START = 1_767_225_600_000
HOUR = 3_600_000
MIN = 60_000


def check_fleet(result: FleetResult) -> None:
    delays = result.delays_min()
    missed = [dev for dev, d in delays.items() if d is None]
    assert not missed, f"faulty devices without a finding after onset: {missed}"
    false_alarms = set(result.healthy_with_findings()) | set(result.early_findings())
    assert len(false_alarms) <= 1, f"false alarms on {sorted(false_alarms)}"
    for findings in result.findings.values():
        for f in findings:
            check_finding(f)


def check_finding(f: Finding, channels: tuple[str, ...] = CHANNELS) -> None:
    assert f.kind in {k.value for k in FindingKind}
    assert f.severity in ("warning", "critical")
    assert f.score > 0 and math.isfinite(f.score)
    assert f.explanation and all(c in channels for c in f.explanation)
    assert math.isclose(sum(f.explanation.values()), 1.0, rel_tol=1e-9)
    assert f.message and "\n" not in f.message


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_two_hour_fleet_three_faulty(seed: int) -> None:
    fleet = Fleet(devices=20, faulty=3, seed=seed, start_ms=START, duration_ms=2 * HOUR)
    check_fleet(run_fleet(fleet))


def test_six_hour_fleet_all_six_fault_kinds() -> None:
    fleet = Fleet(devices=20, faulty=6, seed=5, start_ms=START, duration_ms=6 * HOUR)
    assert {d.fault.kind for d in fleet.devices if d.fault} == set(FaultKind)
    result = run_fleet(fleet)
    check_fleet(result)
    # the right kind of finding for the fault: rules for sensor faults, the model for the machine
    kinds = {d.fault.kind: {f.kind for f in result.findings[d.device_id] if f.ts >= d.fault.start_ms}
             for d in fleet.devices if d.fault}
    assert FindingKind.SENSOR_STUCK in kinds[FaultKind.SENSOR_STUCK]
    assert FindingKind.DATA_GAP in kinds[FaultKind.DROPOUT]
    for k in (FaultKind.BEARING_WEAR, FaultKind.CAVITATION, FaultKind.OVERHEATING, FaultKind.SENSOR_DRIFT):
        assert FindingKind.ANOMALY in kinds[k]


def test_one_day_fleet_with_big_batches() -> None:
    fleet = Fleet(devices=12, faulty=6, seed=3, start_ms=START, duration_ms=24 * HOUR)
    check_fleet(run_fleet(fleet, step_ms=10 * MIN))


def test_explanations_point_at_the_faulty_channel() -> None:
    fleet = Fleet(devices=6, faulty=6, seed=5, start_ms=START, duration_ms=6 * HOUR)
    result = run_fleet(fleet, step_ms=5 * MIN)
    for dev in fleet.devices:
        assert dev.fault is not None
        first = next(f for f in result.findings[dev.device_id] if f.ts >= dev.fault.start_ms)
        top = max(first.explanation, key=first.explanation.__getitem__)
        if dev.fault.kind is FaultKind.BEARING_WEAR:
            assert top.startswith("vib_") and "vibration" in first.message and "above" in first.message
        elif dev.fault.kind is FaultKind.OVERHEATING:
            assert top == "bearing_temp" and "above normal" in first.message
        elif dev.fault.kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT):
            assert top == dev.fault.channel


@pytest.fixture(scope="module")
def healthy_streams() -> list[tuple[np.ndarray, np.ndarray]]:
    """100 min of 100 healthy devices (pumps and motors, each with its own load cycle and gains)."""
    fleet = Fleet(devices=100, faulty=0, seed=1, start_ms=START, duration_ms=100 * MIN)
    return [(c.ts, c.values) for c in fleet.advance(fleet.end_ms)]


@pytest.mark.parametrize("channel", ["pressure", "flow", "motor_current", "vib_x"])
def test_drift_on_an_instantaneous_channel_is_found(
    healthy_streams: list[tuple[np.ndarray, np.ndarray]], channel: str
) -> None:
    """A sensor drift on a channel that follows the load without lag (affinity laws) is found
    before it reaches 50 % of the channel's typical level, on every device of a fleet.

    Regression: on ~2 % of devices the lagged load features cut the small pressure residual of
    the warm-up by 40 % in-sample (they fit the slow process disturbance), so pressure was
    modelled as a thermal-like lagged channel with the loose floor and a drift went unseen.
    """
    j = CHANNELS.index(channel)
    onset = START + 20 * MIN  # right after the warm-up
    late = []
    for i, (ts, values) in enumerate(healthy_streams):
        x = values.copy()
        level = abs(float(np.median(x[:1200, j])))
        drift = 0.25 * np.maximum(ts - onset, 0) / (30 * MIN)  # 25 % of the level per 30 min
        x[:, j] += (1.0 if i % 2 == 0 else -1.0) * drift * level
        det = AssetDetector(channels=CHANNELS)
        found = [f.ts for f in det.process(ts, x) if f.kind == FindingKind.ANOMALY]
        assert all(t >= onset for t in found)
        if not found or drift[np.searchsorted(ts, found[0])] > 0.5:
            late.append(i)
    assert not late, f"{channel} drift found late or never on devices {late}"


def _device_stream(seed: int, kind: FaultKind, hours: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    fleet = Fleet(devices=1, faulty=1, seed=seed, start_ms=START, duration_ms=int(hours * HOUR),
                  fault_kinds=[kind])
    chunk = fleet.advance(fleet.end_ms)[0]
    return chunk.ts, chunk.values


def _key(f: Finding) -> tuple[int, str, str]:
    return f.ts, f.kind, f.severity


@pytest.mark.parametrize("kind", [FaultKind.DROPOUT, FaultKind.CAVITATION])
def test_findings_do_not_depend_on_batch_split(kind: FaultKind) -> None:
    ts, x = _device_stream(4, kind)
    whole = AssetDetector(channels=CHANNELS)
    expected = whole.process(ts, x)
    assert expected
    rng = np.random.default_rng(1)
    for sizes in ([1] * 0 + list(rng.integers(1, 400, 200)), [50] * 200, [1] * 1500 + [7] * 2000):
        det = AssetDetector(channels=CHANNELS)
        got: list[Finding] = []
        lo = 0
        for size in sizes:
            got += det.process(ts[lo : lo + size], x[lo : lo + size])
            lo += size
        got += det.process(ts[lo:], x[lo:])
        assert [_key(f) for f in got] == [_key(f) for f in expected]
        for a, b in zip(got, expected, strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-9)
            assert a.explanation.keys() == b.explanation.keys()
            assert a.message.split("(")[0] == b.message.split("(")[0]
        assert det.last_score == pytest.approx(whole.last_score, rel=1e-9, abs=1e-12)
        assert det.samples_seen == whole.samples_seen


def test_no_look_ahead() -> None:
    ts, x = _device_stream(6, FaultKind.BEARING_WEAR)
    full = AssetDetector(channels=CHANNELS)
    full.process(ts, x)
    for k in (1500, 3000, 5000):
        prefix = AssetDetector(channels=CHANNELS)
        prefix.process(ts[:k], x[:k])
        np.testing.assert_allclose(prefix.last_scores, full.last_scores[:k], rtol=1e-9, atol=1e-12)


def test_constant_input_is_quiet() -> None:
    n = 3000
    ts = START + np.arange(1, n + 1, dtype=np.int64) * 1000
    x = np.tile(np.array([1.0, 2.0, 3.0, 40.0, 20.0, 3.0, 100.0, 1480.0]), (n, 1))
    det = AssetDetector(channels=CHANNELS)
    assert det.process(ts, x) == []
    assert det.warmed_up and det.samples_seen == n
    assert det.last_score == 0.0
    # a constant channel that later changes is not a stuck sensor, and nothing divides by zero
    x2 = x.copy()
    x2[:, 0] = 5.0
    with np.errstate(all="raise"):
        det.process(ts + n * 1000, x2)


def test_all_nan_input_reports_gaps_not_anomalies() -> None:
    n = 2000
    ts = START + np.arange(1, n + 1, dtype=np.int64) * 1000
    det = AssetDetector(channels=CHANNELS)
    findings = det.process(ts, np.full((n, len(CHANNELS)), np.nan))
    assert [f.kind for f in findings] == [FindingKind.DATA_GAP]
    gap = findings[0]
    assert gap.ts == ts[59]
    assert set(gap.explanation) == set(CHANNELS)
    check_finding(gap)
    assert not det.warmed_up
    assert det.process(ts[-1:] + 1000, np.full((1, len(CHANNELS)), np.nan)) == []  # still the same gap


def test_single_samples_and_empty_batches() -> None:
    det = AssetDetector(channels=["speed", "flow"])
    assert det.process(np.array([1000], dtype=np.int64), np.array([[1.0, 2.0]])) == []
    assert det.process(np.zeros(0, dtype=np.int64), np.zeros((0, 2))) == []
    assert det.process(np.array([2000], dtype=np.int64), np.array([1.0, np.nan])) == []
    assert det.samples_seen == 2
    assert not det.warmed_up


def test_out_of_order_rows_are_dropped() -> None:
    det = AssetDetector(channels=["a"])
    det.process(np.array([1000, 2000, 2000, 1500, 3000], dtype=np.int64), np.ones((5, 1)))
    assert det.samples_seen == 3 and det.samples_dropped == 2
    det.process(np.array([3000], dtype=np.int64), np.ones((1, 1)))
    assert det.samples_dropped == 3


def test_bad_shapes_and_configs_are_rejected() -> None:
    det = AssetDetector(channels=["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        det.process(np.array([1, 2], dtype=np.int64), np.ones((2, 3)))
    with pytest.raises(ValueError):
        AssetDetector(channels=[])
    with pytest.raises(ValueError):
        AssetDetector(channels=["a", "a"])
    with pytest.raises(ValueError):
        DetectorConfig(warmup_samples=0)
    with pytest.raises(ValueError):
        DetectorConfig(clear_score=2.0)
    with pytest.raises(ValueError):
        DetectorConfig(lag_min_cut=-0.1)


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = START + np.arange(1, n + 1, dtype=np.int64) * 1000
    speed = 1000 + 300 * np.sin(np.arange(n) / 120.0)
    flow = 0.1 * speed + rng.normal(0, 1.0, n)
    vib = 1e-6 * speed**2 + rng.normal(0, 0.02, n)
    return ts, np.column_stack([speed, flow, vib])


def test_timestamp_gap_and_missing_channel_are_data_gaps() -> None:
    ts, x = _synthetic(3000)
    ts = ts.copy()
    ts[2000:] += 10 * MIN  # the device went silent for 10 minutes
    x[2500:2600, 2] = np.nan  # the vibration sensor gave nothing for 100 s
    det = AssetDetector(channels=["speed", "flow", "vib"], config=DetectorConfig(warmup_samples=600))
    findings = det.process(ts, x)
    gaps = [f for f in findings if f.kind == FindingKind.DATA_GAP]
    assert [f.ts for f in gaps] == [ts[2000], ts[2559]]
    assert "no samples for 10.0 min" in gaps[0].message
    assert gaps[1].explanation == {"vib": 1.0}
    assert "vib missing" in gaps[1].message


def test_stuck_channel() -> None:
    ts, x = _synthetic(3000)
    x[2000:, 1] = x[1999, 1]
    det = AssetDetector(channels=["speed", "flow", "vib"], config=DetectorConfig(warmup_samples=600))
    findings = det.process(ts, x)
    stuck = [f for f in findings if f.kind == FindingKind.SENSOR_STUCK]
    assert len(stuck) == 1
    assert stuck[0].ts == ts[1999 + 119]
    assert stuck[0].explanation == {"flow": 1.0}


def _reports(det: AssetDetector, ts: np.ndarray, x: np.ndarray, size: int) -> list[tuple[int, str, str]]:
    """(ts, kind, phase) of every onset, holding and ended report, fed in batches of ``size``."""
    out: list[tuple[int, str, str]] = []
    for lo in range(0, ts.shape[0], size):
        out += [(f.ts, f.kind, f.phase.value) for f in det.process(ts[lo:lo + size], x[lo:lo + size])]
        out += [(f.ts, f.kind, f.phase.value) for f in det.last_updates]
    return sorted(out)


def test_a_stuck_channel_is_reasserted_while_flat_and_ended_when_it_moves() -> None:
    ts, x = _synthetic(3000)
    x[1500:2500, 1] = x[1499, 1]  # flat for 1000 s, then it reads again
    cfg = DetectorConfig(warmup_samples=600)
    reports = _reports(AssetDetector(channels=["speed", "flow", "vib"], config=cfg), ts, x, 3000)
    stuck = [(t, p) for t, k, p in reports if k == FindingKind.SENSOR_STUCK]
    onset = int(ts[1499 + 119])
    assert stuck[0] == (onset, "onset") and stuck[-1] == (int(ts[2500]), "ended")
    held = [t for t, p in stuck if p == "holding"]
    assert held == list(range(onset + MIN, int(ts[2499]) + 1, MIN))  # every reassert_ms (60 s) while flat
    for size in (1, 7, 60, 997):  # the same reports however the stream is split
        det = AssetDetector(channels=["speed", "flow", "vib"], config=cfg)
        assert _reports(det, ts, x, size) == reports


def test_a_missing_channel_holds_until_values_return_and_an_episode_until_it_clears() -> None:
    ts, x = _synthetic(4000)
    x[1000:1400, 2] = np.nan  # vib gives nothing for 400 s
    x[2000:3000, 2] *= 1.6  # then reads 60 % high for 1000 s
    det = AssetDetector(channels=["speed", "flow", "vib"], config=DetectorConfig(warmup_samples=600))
    reports = _reports(det, ts, x, 50)
    gap = [(t, p) for t, k, p in reports if k == FindingKind.DATA_GAP]
    assert gap[0] == (int(ts[1059]), "onset") and gap[-1] == (int(ts[1400]), "ended")
    assert {p for _, p in gap[1:-1]} == {"holding"}
    episode = [(t, p) for t, k, p in reports if k == FindingKind.ANOMALY]
    assert [p for _, p in episode[:1]] == ["onset"] and episode[-1][1] == "ended"
    assert ts[3000] < episode[-1][0] < ts[3000 + 400]  # ends once the score stayed low for clear_samples
    gaps = np.diff([t for t, _ in episode[:-1]])
    assert gaps.max() <= MIN + 1000  # re-asserted all the time it held


def test_anomaly_explanation_and_episode() -> None:
    ts, x = _synthetic(4000)
    normal = x[:, 2].copy()
    x[2000:3000, 2] *= 1.6  # vibration 60 % above normal for 1000 s, then back to normal
    det = AssetDetector(channels=["speed", "flow", "vib"], config=DetectorConfig(warmup_samples=600))
    findings = det.process(ts, x)
    anomalies = [f for f in findings if f.kind == FindingKind.ANOMALY]
    assert len(anomalies) == 1  # one finding per episode
    a = anomalies[0]
    assert ts[2000] < a.ts < ts[2000 + 300]
    assert a.explanation["vib"] > 0.9
    assert a.message.startswith("vibration (vib ") and a.message.endswith("above normal for this load")
    # the evidence in the channel's own unit: the level seen against the level expected for this load
    seen, expected = a.evidence["vib"]
    k = int(np.searchsorted(ts, a.ts))
    assert expected == pytest.approx(float(normal[k - 30:k + 1].mean()), rel=0.15)  # what vib was without the fault
    assert seen > 1.3 * expected and set(a.evidence) == {"vib"}
    check_finding(a, ("speed", "flow", "vib"))
    # after it cleared, a new episode gives a new finding
    ts2, x2 = ts + 4000 * 1000, x.copy()
    x2[:, 2] *= 1.6
    assert [f.kind for f in det.process(ts2, x2)] == [FindingKind.ANOMALY]


def test_a_new_cause_under_an_open_episode_ends_it_and_opens_its_own() -> None:
    """Vibration 60 % high from 2000 s on (an episode opens, explained by vib), then from 3000 s the flow reads
    40 % high as well, far more surprising: after ``cause_change_samples`` the vib episode ends and a flow episode
    begins at the same sample, whatever the batches; with the check off there is one episode."""
    ts, x = _synthetic(5000)
    x[2000:, 2] *= 1.6
    x[3000:, 1] *= 1.4
    cfg = DetectorConfig(warmup_samples=600)
    det = AssetDetector(channels=["speed", "flow", "vib"], config=cfg)
    onsets: list[Finding] = []
    ended: list[Finding] = []
    for lo in range(0, 5000, 250):
        onsets += [f for f in det.process(ts[lo:lo + 250], x[lo:lo + 250]) if f.kind == FindingKind.ANOMALY]
        ended += [f for f in det.last_updates if f.kind == FindingKind.ANOMALY and f.phase.value == "ended"]
    assert [max(f.explanation, key=f.explanation.__getitem__) for f in onsets] == ["vib", "flow"]
    # 300 s after flow took over from vib as the largest contributor (both residuals are clipped: a few minutes)
    assert ts[3000 + cfg.cause_change_samples - 1] <= onsets[1].ts < ts[4000]
    assert [f.ts for f in ended] == [onsets[1].ts], "the vib episode ends where the flow one begins"
    assert "its cause changed (now flow)" in ended[0].message and ended[0].explanation == onsets[0].explanation
    assert det.anomaly_active and det.process(ts[:0], x[:0]) == []
    whole = AssetDetector(channels=["speed", "flow", "vib"], config=cfg)
    assert _reports(whole, ts, x, 5000) == _reports(AssetDetector(channels=["speed", "flow", "vib"], config=cfg),
                                                     ts, x, 37)
    off = AssetDetector(channels=["speed", "flow", "vib"], config=DetectorConfig(warmup_samples=600,
                                                                                  cause_change_samples=0))
    assert len([f for f in off.process(ts, x) if f.kind == FindingKind.ANOMALY]) == 1


def test_a_detector_config_stored_before_a_field_was_added_takes_its_default() -> None:
    """Registered detector versions are pickles: one made before ``cause_change_samples`` existed still loads."""
    cfg = DetectorConfig(warmup_samples=600)
    old_state = cfg.__getstate__()[:-1]
    old = DetectorConfig.__new__(DetectorConfig)
    old.__setstate__(old_state)
    assert old == cfg and old.cause_change_samples == 300
    with pytest.raises(ValueError, match="more fields"):
        DetectorConfig.__new__(DetectorConfig).__setstate__([*cfg.__getstate__(), 1])


def test_detector_has_a_version_name() -> None:
    assert AssetDetector.name == "robust-ensemble-v2"


def test_eval_sim_reports_recall_false_alerts_and_delay() -> None:
    from typer.testing import CliRunner

    from edgeloop.cli import app

    res = CliRunner().invoke(app, ["eval", "sim", "--devices", "12", "--faulty", "6", "--sim-hours", "6",
                                   "--seed", "5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["faulty"] == 6 and data["machine_days"] == 3.0
    assert set(data["recall_per_fault"]) == {k.value for k in FaultKind}
    assert data["recall"] == 1.0 and data["false_alerts"] == 0
    assert 0 < data["median_delay_min"] < 120
    bad = CliRunner().invoke(app, ["eval", "sim", "--devices", "2", "--faulty", "3"])
    assert bad.exit_code != 0 and "more than --devices" in bad.output
