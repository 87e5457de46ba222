"""The fleet simulator: determinism, physics, faults, ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeloop.sim import CHANNELS, DeviceChunk, FaultKind, Fleet

START = 1_767_225_600_000
HOUR = 3_600_000
MIN = 60_000
COL = {name: j for j, name in enumerate(CHANNELS)}


def collect(fleet: Fleet, steps: list[int]) -> dict[str, DeviceChunk]:
    """Advance through ``steps`` (absolute times) and join each device's chunks."""
    parts: dict[str, list[DeviceChunk]] = {d.device_id: [] for d in fleet.devices}
    for until in steps:
        for chunk in fleet.advance(until):
            parts[chunk.device_id].append(chunk)
    return {
        dev: DeviceChunk(dev, np.concatenate([c.ts for c in cs]), np.concatenate([c.values for c in cs]))
        for dev, cs in parts.items()
        if cs
    }


@pytest.fixture(scope="module")
def six_faults() -> tuple[Fleet, dict[str, DeviceChunk]]:
    fleet = Fleet(devices=10, faulty=6, seed=5, start_ms=START, duration_ms=6 * HOUR)
    return fleet, collect(fleet, [START + 6 * HOUR])


def test_same_output_regardless_of_advance_split() -> None:
    def make() -> Fleet:
        return Fleet(devices=8, faulty=6, seed=3, start_ms=START, duration_ms=3 * HOUR)

    whole = collect(make(), [START + 3 * HOUR])
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 7 * MIN, 200))
    steps = [START + int(c) for c in cuts if c < 3 * HOUR] + [START + 3 * HOUR + 5 * MIN]
    pieces = collect(make(), steps)
    assert whole.keys() == pieces.keys()
    for dev, chunk in whole.items():
        np.testing.assert_array_equal(chunk.ts, pieces[dev].ts)
        np.testing.assert_array_equal(chunk.values, pieces[dev].values)  # NaN == NaN here


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a = Fleet(devices=4, faulty=2, seed=9, start_ms=0, duration_ms=HOUR)
    b = Fleet(devices=4, faulty=2, seed=9, start_ms=0, duration_ms=HOUR)
    c = Fleet(devices=4, faulty=2, seed=10, start_ms=0, duration_ms=HOUR)
    assert a.devices == b.devices
    ca, cb, cc = a.advance(HOUR), b.advance(HOUR), c.advance(HOUR)
    for x, y in zip(ca, cb, strict=True):
        np.testing.assert_array_equal(x.values, y.values)
    assert not np.array_equal(ca[0].values, cc[0].values)


def test_layout_ids_and_profiles() -> None:
    fleet = Fleet(devices=25, faulty=3, seed=1, start_ms=START, duration_ms=HOUR)
    ids = [d.device_id for d in fleet.devices]
    assert len(set(ids)) == 25
    for i, d in enumerate(fleet.devices, start=1):
        assert d.device_id == f"{d.kind}-{i:04d}"
        assert d.asset_id == f"asset-{i:04d}"
        assert d.kind in ("pump", "motor")
        assert d.profile == f"{d.kind}-v1"
        assert d.site == "site-1"
    assert {d.line for d in fleet.devices} == {"line-1", "line-2", "line-3"}
    profiles = {p.name: p for p in fleet.profiles()}
    assert set(profiles) == {d.profile for d in fleet.devices}
    for p in profiles.values():
        assert p.channel_names() == CHANNELS
        assert p.sample_rate_hz == 1.0
        assert all(c.unit and c.min is not None and c.max is not None for c in p.channels)
    truth = fleet.ground_truth()
    assert sum(t is not None for t in truth) == 3
    assert [d.fault for d in fleet.devices] == truth


def test_time_grid_and_window_semantics() -> None:
    fleet = Fleet(devices=2, faulty=0, seed=1, start_ms=START, duration_ms=10 * MIN, period_ms=2000)
    assert fleet.advance(START) == []
    first = fleet.advance(START + 2500)
    assert [c.ts.tolist() for c in first] == [[START + 2000], [START + 2000]]
    rest = fleet.advance(START + HOUR)
    assert rest[0].ts[-1] == START + 10 * MIN == fleet.end_ms
    assert rest[0].ts.size == 299
    assert fleet.now_ms == START + HOUR
    assert fleet.advance(START + 2 * HOUR) == []
    with pytest.raises(ValueError, match="back in time"):
        fleet.advance(START)
    assert fleet.profiles()[0].sample_rate_hz == 0.5


def test_healthy_devices_are_complete_and_physically_correlated() -> None:
    fleet = Fleet(devices=6, faulty=0, seed=2, start_ms=START, duration_ms=4 * HOUR)
    chunks = collect(fleet, [START + 4 * HOUR])
    for dev in fleet.devices:
        c = chunks[dev.device_id]
        assert c.ts.size == 4 * 3600
        assert np.all(np.diff(c.ts) == 1000)
        assert not np.isnan(c.values).any()
        v = c.values
        speed = v[:, COL["speed"]]
        assert np.corrcoef(speed, v[:, COL["flow"]])[0, 1] > 0.97
        assert np.corrcoef(speed**2, v[:, COL["pressure"]])[0, 1] > 0.95
        assert np.corrcoef(speed**3, v[:, COL["motor_current"]])[0, 1] > 0.97
        for axis in ("vib_x", "vib_y", "vib_z"):
            assert np.corrcoef(speed**2, v[:, COL[axis]])[0, 1] > 0.9
        # the bearing temperature follows the load with a lag: it tracks the recent mean load
        temp = v[:, COL["bearing_temp"]]
        w = 10 * 60
        trailing = (np.cumsum(speed)[w:] - np.cumsum(speed)[:-w]) / w
        lagged = np.corrcoef(trailing, temp[w:])[0, 1]
        assert lagged > 0.6
        assert lagged > np.corrcoef(speed, temp)[0, 1] + 0.2
        assert temp.min() > 15.0 and temp.max() < 90.0
        # the load cycle visits several levels within the first 20 minutes
        first = speed[: 20 * 60]
        assert (first.max() - first.min()) / first.max() > 0.3


def test_fault_onsets_are_in_the_expected_window() -> None:
    for duration in (HOUR, 6 * HOUR, 30 * 24 * HOUR):
        fleet = Fleet(devices=12, faulty=12, seed=4, start_ms=START, duration_ms=duration)
        for dev in fleet.devices:
            assert dev.fault is not None
            at = dev.fault.start_ms - START
            assert at >= 20 * MIN
            assert at >= 0.3 * duration - 1000
            assert at <= max(0.5 * duration, 20 * MIN) + 1000
            sensor = dev.fault.kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT)
            assert (dev.fault.channel is not None) == sensor
            assert dev.fault.channel != "speed"
        assert {d.fault.kind for d in fleet.devices if d.fault} == set(FaultKind)


def test_fault_kinds_can_be_restricted() -> None:
    fleet = Fleet(devices=5, faulty=4, seed=4, start_ms=0, duration_ms=HOUR,
                  fault_kinds=[FaultKind.CAVITATION])
    assert [d.fault.kind for d in fleet.devices if d.fault] == [FaultKind.CAVITATION] * 4


def _windows(fleet: Fleet, chunks: dict[str, DeviceChunk], kind: FaultKind) -> tuple[np.ndarray, np.ndarray, str]:
    dev = next(d for d in fleet.devices if d.fault and d.fault.kind is kind)
    assert dev.fault is not None
    c = chunks[dev.device_id]
    onset = dev.fault.start_ms
    before = c.values[(c.ts < onset) & (c.ts >= onset - 30 * MIN)]
    after = c.values[c.ts > fleet.end_ms - 30 * MIN]
    return before, after, dev.fault.channel or ""


def _mean(w: np.ndarray, ch: str) -> float:
    return float(np.nanmean(w[:, COL[ch]]))


def test_bearing_wear_raises_vibration_then_temperature(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    before, after, _ = _windows(*six_faults, FaultKind.BEARING_WEAR)
    for axis in ("vib_x", "vib_y", "vib_z"):
        norm_b = _mean(before, axis) / np.mean(before[:, COL["speed"]] ** 2)
        norm_a = _mean(after, axis) / np.mean(after[:, COL["speed"]] ** 2)
        assert norm_a > 1.5 * norm_b
    assert _mean(after, "bearing_temp") > _mean(before, "bearing_temp") + 4.0


def test_cavitation_drops_pressure_and_flow_and_shakes(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    before, after, _ = _windows(*six_faults, FaultKind.CAVITATION)

    def per_load(w: np.ndarray, ch: str, power: int) -> float:
        return float(np.mean(w[:, COL[ch]] / w[:, COL["speed"]] ** power))

    assert per_load(after, "pressure", 2) < 0.85 * per_load(before, "pressure", 2)
    assert per_load(after, "flow", 1) < 0.92 * per_load(before, "flow", 1)
    assert per_load(after, "vib_x", 2) > 1.2 * per_load(before, "vib_x", 2)


def test_overheating_heats_without_load_change(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    before, after, _ = _windows(*six_faults, FaultKind.OVERHEATING)
    assert _mean(after, "bearing_temp") > _mean(before, "bearing_temp") + 10.0
    assert abs(_mean(after, "speed") / _mean(before, "speed") - 1.0) < 0.2


def test_sensor_stuck_freezes_one_channel(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    fleet, chunks = six_faults
    before, after, ch = _windows(fleet, chunks, FaultKind.SENSOR_STUCK)
    assert np.ptp(before[:, COL[ch]]) > 0
    assert np.ptp(after[:, COL[ch]]) == 0
    dev = next(d for d in fleet.devices if d.fault and d.fault.kind is FaultKind.SENSOR_STUCK)
    assert dev.fault is not None
    c = chunks[dev.device_id]
    k = int(np.searchsorted(c.ts, dev.fault.start_ms))
    assert np.all(c.values[k:, COL[ch]] == c.values[k - 1, COL[ch]])  # frozen at the last good value
    others = [j for j in range(len(CHANNELS)) if j != COL[ch]]
    assert np.all(np.ptp(after[:, others], axis=0) > 0)


def test_sensor_drift_moves_one_channel_away(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    before, after, ch = _windows(*six_faults, FaultKind.SENSOR_DRIFT)
    assert abs(_mean(after, ch) - _mean(before, ch)) > 0.15 * abs(_mean(before, ch))


def test_dropout_has_nan_stretches_and_silent_gaps(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    fleet, chunks = six_faults
    dev = next(d for d in fleet.devices if d.fault and d.fault.kind is FaultKind.DROPOUT)
    assert dev.fault is not None
    c = chunks[dev.device_id]
    pre = c.ts < dev.fault.start_ms
    assert not np.isnan(c.values[pre]).any()
    assert np.all(np.diff(c.ts[pre]) == 1000)
    post_ts, post = c.ts[~pre], c.values[~pre]
    gaps = np.diff(post_ts)
    assert (gaps >= 60_000).sum() >= 2  # the device went silent at least twice
    assert gaps.max() <= 10 * MIN + 1000
    missing = np.isnan(post).any(axis=1)
    assert missing.sum() >= 60
    # every NaN stretch lasts 1-10 minutes
    edges = np.flatnonzero(np.diff(np.concatenate([[0], missing.astype(np.int8), [0]])))
    lengths = edges[1::2] - edges[::2]
    assert lengths.size >= 2 and lengths.min() >= 50 and lengths.max() <= 600


def test_healthy_devices_in_a_faulty_fleet_have_no_gaps(six_faults: tuple[Fleet, dict[str, DeviceChunk]]) -> None:
    fleet, chunks = six_faults
    for dev in fleet.devices:
        if dev.fault is None:
            c = chunks[dev.device_id]
            assert c.ts.size == 6 * 3600
            assert not np.isnan(c.values).any()


def test_month_long_run_stays_fast_and_bounded() -> None:
    fleet = Fleet(devices=2, faulty=2, seed=8, start_ms=START, duration_ms=30 * 24 * HOUR, period_ms=60_000,
                  fault_kinds=[FaultKind.BEARING_WEAR, FaultKind.SENSOR_DRIFT])
    chunks = collect(fleet, [START + d * 24 * HOUR for d in range(1, 31)])
    for dev in fleet.devices:
        c = chunks[dev.device_id]
        assert c.ts.size == 30 * 24 * 60
        assert np.isfinite(c.values).all()


def test_chunk_to_canonical_samples() -> None:
    chunk = DeviceChunk("pump-0001", np.array([1000, 2000], dtype=np.int64),
                        np.array([[1.0] * 7 + [math.nan], [2.0] * 8]))
    samples = chunk.samples()
    assert samples[0].ts == 1000 and samples[0].values["speed"] is None
    assert samples[1].values["vib_x"] == 2.0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Fleet(devices=2, faulty=3, seed=1, start_ms=0, duration_ms=HOUR)
    with pytest.raises(ValueError):
        Fleet(devices=2, faulty=0, seed=1, start_ms=0, duration_ms=HOUR, period_ms=0)
    with pytest.raises(ValueError):
        Fleet(devices=2, faulty=1, seed=1, start_ms=0, duration_ms=HOUR, fault_kinds=[])


def test_fault_active_since_is_the_ground_truth_of_states() -> None:
    """Every fault but a dropout holds from its onset to the end of the run; a dropout only inside a stretch."""
    fleet = Fleet(devices=10, faulty=6, seed=5, start_ms=START, duration_ms=6 * HOUR)
    for dev in fleet.devices:
        if dev.fault is None:
            assert fleet.fault_active_since(dev.device_id, fleet.end_ms) is None
            continue
        onset = dev.fault.start_ms
        assert fleet.fault_active_since(dev.device_id, onset - 1000) is None
        if dev.fault.kind is not FaultKind.DROPOUT:
            assert fleet.fault_active_since(dev.device_id, onset) == onset
            assert fleet.fault_active_since(dev.device_id, fleet.end_ms) == onset
    dev = next(d for d in fleet.devices if d.fault and d.fault.kind is FaultKind.DROPOUT)
    chunks = collect(Fleet(devices=10, faulty=6, seed=5, start_ms=START, duration_ms=6 * HOUR),
                     [START + 6 * HOUR])[dev.device_id]
    assert dev.fault is not None
    for t in range(dev.fault.start_ms, fleet.end_ms, 7_000):  # a stretch is exactly where data is missing
        i = int(np.searchsorted(chunks.ts, t))
        sent = i < chunks.ts.shape[0] and chunks.ts[i] == t
        broken = not sent or bool(np.isnan(chunks.values[i]).any())
        since = fleet.fault_active_since(dev.device_id, t)
        assert (since is not None) == broken, t
        assert since is None or since <= t
    with pytest.raises(KeyError):
        fleet.fault_active_since("no-such-device", fleet.end_ms)


def test_scenario_counts_a_fault_still_active_at_the_end_without_an_open_alert() -> None:
    from edgeloop.messages import Alert, AlertStatus, Severity
    from edgeloop.scenario import state_at_end

    fleet = Fleet(devices=2, faulty=2, seed=6, start_ms=START, duration_ms=2 * HOUR,
                  fault_kinds=[FaultKind.SENSOR_STUCK, FaultKind.DROPOUT])
    stuck = next(d for d in fleet.devices if d.fault and d.fault.kind is FaultKind.SENSOR_STUCK)
    dropout = next(d for d in fleet.devices if d.fault and d.fault.kind is FaultKind.DROPOUT)

    def alert(dev_id: str, kind: str, status: AlertStatus) -> Alert:
        return Alert(tenant="t", asset="a", device=dev_id, kind=kind, severity=Severity.WARNING,
                     first_seen=START, last_seen=START, message="m", status=status)

    resolved = [alert(stuck.device_id, "sensor_stuck", AlertStatus.RESOLVED)]
    assert state_at_end(fleet, stuck, resolved) == (True, [])  # still stuck, alert resolved: counted
    held = [*resolved, alert(stuck.device_id, "sensor_stuck", AlertStatus.ACKNOWLEDGED),
            alert(dropout.device_id, "device-silent", AlertStatus.OPEN)]
    assert state_at_end(fleet, stuck, held) == (True, ["sensor_stuck"])
    # seed 6: the run ends 6.8 min into one of the dropout's silent stretches (older than the 5 min allowance)
    assert state_at_end(fleet, dropout, held) == (True, ["device-silent"])
    between = Fleet(devices=2, faulty=2, seed=7, start_ms=START, duration_ms=2 * HOUR,
                    fault_kinds=[FaultKind.SENSOR_STUCK, FaultKind.DROPOUT])
    quiet = next(d for d in between.devices if d.fault and d.fault.kind is FaultKind.DROPOUT)
    assert state_at_end(between, quiet, []) == (False, [])  # between two stretches: nothing holds
