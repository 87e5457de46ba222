"""Benign regime changes and scheduled faults in the fleet simulator: ground truth, physics, determinism, and
the point of the scenario: the champion detector, trained before the change, false-alarms on the changed devices
(and only on them)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.detect import AssetDetector, FindingKind
from edgeloop.sim import CHANNELS, DeviceChunk, FaultKind, FaultSpec, Fleet, RegimeKind, RegimeSpec

START = 1_767_225_600_000
HOUR = 3_600_000
MIN = 60_000
COL = {name: j for j, name in enumerate(CHANNELS)}


def collect(fleet: Fleet, step_ms: int = 37 * MIN) -> dict[str, DeviceChunk]:
    """The whole run, advanced in steps of ``step_ms``, one joined chunk per device."""
    parts: dict[str, list[DeviceChunk]] = {d.device_id: [] for d in fleet.devices}
    t = fleet.start_ms
    while t < fleet.end_ms:
        t += step_ms
        for chunk in fleet.advance(t):
            parts[chunk.device_id].append(chunk)
    return {dev: DeviceChunk(dev, np.concatenate([c.ts for c in cs]), np.concatenate([c.values for c in cs]))
            for dev, cs in parts.items() if cs}


def fleet(*regimes: RegimeSpec, devices: int = 6, faulty: int = 0, seed: int = 4, hours: float = 3.0,
          schedule: dict[int, FaultSpec] | None = None) -> Fleet:
    return Fleet(devices=devices, faulty=faulty, seed=seed, start_ms=START, duration_ms=int(hours * HOUR),
                 regimes=regimes, fault_schedule=schedule)


def test_a_regime_change_touches_only_its_devices_and_only_from_its_time() -> None:
    at = START + 2 * HOUR
    plain = collect(fleet())
    changed = fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, devices=(1, 4)),
                    RegimeSpec(kind=RegimeKind.RECALIBRATION, at_ms=at, devices=(2,)))
    data = collect(changed, step_ms=11 * MIN)  # another split: the output does not depend on it
    ids = {c.device_id for c in changed.regime_changes()}
    assert ids == {changed.devices[i].device_id for i in (1, 2, 4)}
    for dev, chunk in plain.items():
        np.testing.assert_array_equal(chunk.ts, data[dev].ts)
        before = chunk.ts < at
        np.testing.assert_array_equal(chunk.values[before], data[dev].values[before])
        if dev in ids:
            assert not np.array_equal(chunk.values[~before], data[dev].values[~before])
        else:
            np.testing.assert_array_equal(chunk.values, data[dev].values)


def test_ground_truth_names_devices_time_kind_and_sizes_and_is_deterministic() -> None:
    at = START + HOUR
    spec = RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, fraction=0.4, seed=3)
    a, b = fleet(spec, devices=10), fleet(spec, devices=10)
    other = fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, fraction=0.4, seed=4), devices=10)
    changes = a.regime_changes()
    assert changes == b.regime_changes() and len(changes) == 4
    assert {c.device_id for c in changes} != {c.device_id for c in other.regime_changes()}
    by_id = {d.device_id: d for d in a.devices}
    for c in changes:
        assert c.kind is RegimeKind.PRODUCT_RUN and c.at_ms == at and c.asset_id == by_id[c.device_id].asset_id
        assert 0.38 <= c.detail["speed_band_low"] < c.detail["speed_band_high"] <= 0.8
        assert 1.06 <= c.detail["load_factor"] <= 1.10 and 5.0 <= c.detail["process_heat_c"] <= 6.5
        assert a.regimes_at(c.device_id, at - 1) == [] and a.regimes_at(c.device_id, at) == [c]
    recal = fleet(RegimeSpec(kind=RegimeKind.RECALIBRATION, at_ms=at, fraction=1.0), devices=4).regime_changes()
    assert len(recal) == 4
    for c in recal:
        assert 0.06 <= abs(c.detail["pressure_gain"] - 1.0) <= 0.09
        assert 4.0 <= abs(c.detail["bearing_temp_offset"]) <= 5.5
        assert 0.08 <= abs(c.detail["vib_gain"] - 1.0) <= 0.12


def test_product_run_moves_the_load_band_and_raises_pressure_at_a_given_speed() -> None:
    at = START + 2 * HOUR
    plain = collect(fleet(hours=4))
    run = fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, devices=(0, 3)), hours=4)
    data = collect(run)
    ranges = {p.name: p.channels for p in run.profiles()}
    for change in run.regime_changes():
        dev = next(d for d in run.devices if d.device_id == change.device_id)
        old, new = plain[dev.device_id].values, data[dev.device_id].values
        ts = data[dev.device_id].ts
        settled = ts >= at + 2 * MIN
        rated = float(np.median(old[ts < at, COL["speed"]] / 0.75))  # about the middle of the old band
        speed_old, speed_new = old[settled, COL["speed"]], new[settled, COL["speed"]]
        # the load cycle keeps its shape, in the new, lower band
        lo, hi = change.detail["speed_band_low"], change.detail["speed_band_high"]
        assert speed_new.max() < speed_old.min() + 0.35 * rated and speed_new.mean() < 0.85 * speed_old.mean()
        assert lo - 0.05 < speed_new.min() / rated and speed_new.max() / rated < hi + 0.05
        # a denser product: more pressure (and hydraulic current) at the same speed, the same noise draws
        ratio = (new[settled, COL["pressure"]] / old[settled, COL["pressure"]]) / (speed_new / speed_old) ** 2
        assert float(np.median(ratio)) == pytest.approx(change.detail["load_factor"], rel=0.005)
        # still plausible physics: every reading inside the profile's range, nothing missing
        for j, spec in enumerate(ranges[dev.profile]):
            assert spec.min is not None and spec.max is not None
            assert spec.min <= new[:, j].min() and new[:, j].max() <= spec.max
        assert not np.isnan(new).any()


def test_recalibration_changes_readings_not_physics_at_once() -> None:
    at = START + HOUR + 30 * MIN
    plain = collect(fleet(hours=2))
    recal = fleet(RegimeSpec(kind=RegimeKind.RECALIBRATION, at_ms=at, fraction=0.5, seed=1), hours=2)
    data = collect(recal)
    assert len(recal.regime_changes()) == 3
    for change in recal.regime_changes():
        old, new = plain[change.device_id].values, data[change.device_id].values
        after = data[change.device_id].ts >= at
        gains = {"pressure": change.detail["pressure_gain"], "vib_x": change.detail["vib_gain"],
                 "vib_y": change.detail["vib_gain"], "vib_z": change.detail["vib_gain"],
                 "flow": change.detail.get("flow_gain", 1.0)}
        for name, gain in gains.items():  # exact up to the sensor's rounding
            np.testing.assert_allclose(new[after, COL[name]], old[after, COL[name]] * gain, rtol=0, atol=0.02)
        np.testing.assert_allclose(new[after, COL["bearing_temp"]],
                                   old[after, COL["bearing_temp"]] + change.detail["bearing_temp_offset"],
                                   rtol=0, atol=0.011)
        for name in ("speed", "motor_current"):  # the physics did not change
            np.testing.assert_array_equal(new[:, COL[name]], old[:, COL[name]])


def anomalies(f: Fleet) -> dict[str, list[int]]:
    """Times of the champion detector's anomaly onsets per device over the whole run."""
    detectors = {d.device_id: AssetDetector(channels=CHANNELS) for d in f.devices}
    found: dict[str, list[int]] = {d.device_id: [] for d in f.devices}
    t = f.start_ms
    while t < f.end_ms:
        t += 10 * MIN
        for chunk in f.advance(t):
            found[chunk.device_id] += [x.ts for x in detectors[chunk.device_id].process(chunk.ts, chunk.values)
                                       if x.kind == FindingKind.ANOMALY]
    return found


@pytest.mark.parametrize(("kind", "seed"), [(RegimeKind.PRODUCT_RUN, 1), (RegimeKind.PRODUCT_RUN, 3),
                                            (RegimeKind.RECALIBRATION, 2), (RegimeKind.RECALIBRATION, 5)])
def test_the_champion_false_alarms_on_changed_devices_after_the_change_and_not_elsewhere(
        kind: RegimeKind, seed: int) -> None:
    """The detector learns from the first 20 min and calibrates its ensemble over the next 6 h; the change comes
    at 7 h. Every changed device false-alarms within 45 min of it; no unchanged device alarms at all."""
    at = START + 7 * HOUR
    f = fleet(RegimeSpec(kind=kind, at_ms=at, devices=(0, 2, 4, 6)), devices=8, seed=seed, hours=9)
    changed = {c.device_id for c in f.regime_changes()}
    for dev, onsets in anomalies(f).items():
        if dev in changed:
            assert onsets and all(t >= at for t in onsets) and onsets[0] <= at + 45 * MIN, (dev, onsets)
        else:
            assert onsets == [], (dev, onsets)


def test_scheduled_faults_start_when_told_on_the_device_told() -> None:
    at = START + HOUR
    wear_at, stuck_at = START + 2 * HOUR, START + 2 * HOUR + 30 * MIN
    schedule = {0: FaultSpec(kind=FaultKind.BEARING_WEAR, start_ms=wear_at),
                3: FaultSpec(kind=FaultKind.SENSOR_STUCK, start_ms=stuck_at, channel="pressure")}
    f = fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, devices=(0, 3)), devices=8, faulty=3,
              hours=4, schedule=schedule)
    truth = f.ground_truth()
    assert truth[0] == FaultSpec(kind=FaultKind.BEARING_WEAR, start_ms=wear_at)
    assert truth[3] == FaultSpec(kind=FaultKind.SENSOR_STUCK, start_ms=stuck_at, channel="pressure")
    assert sum(t is not None for t in truth) == 5  # three more drawn, on other devices
    dev0, dev3 = f.devices[0].device_id, f.devices[3].device_id
    assert f.fault_active_since(dev0, wear_at - 1) is None and f.fault_active_since(dev0, wear_at) == wear_at
    # the same fleet with the wear starting only at the very end: the wear shows from its start on
    late = {0: FaultSpec(kind=FaultKind.BEARING_WEAR, start_ms=START + 4 * HOUR), 3: schedule[3]}
    clean = collect(fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=at, devices=(0, 3)), devices=8, faulty=3,
                          hours=4, schedule=late))
    data = collect(f)
    ts = data[dev0].ts
    vib = data[dev0].values[:, COL["vib_x"]] / clean[dev0].values[:, COL["vib_x"]]
    assert np.all(vib[ts < wear_at] == 1.0) and float(np.mean(vib[ts >= f.end_ms - 30 * MIN])) > 1.5
    pressure = data[dev3].values[:, COL["pressure"]]
    ts3 = data[dev3].ts
    assert np.unique(pressure[ts3 >= stuck_at]).size == 1 and np.unique(pressure[ts3 < stuck_at]).size > 100


def test_fault_in_is_what_an_inspection_of_a_span_finds() -> None:
    start = START + 2 * HOUR
    f = fleet(devices=3, hours=4, schedule={1: FaultSpec(kind=FaultKind.OVERHEATING, start_ms=start),
                                            2: FaultSpec(kind=FaultKind.DROPOUT, start_ms=start)})
    healthy, hot, drop = (d.device_id for d in f.devices)
    assert f.fault_in(healthy, START, f.end_ms) is None
    assert f.fault_in(hot, START, start - 1) is None
    spec = f.fault_in(hot, start - HOUR, start)
    assert spec is not None and spec.kind is FaultKind.OVERHEATING
    assert f.fault_in(hot, f.end_ms - MIN, f.end_ms) == spec
    assert f.fault_in(hot, start + MIN, start) is None  # an empty span
    # a dropout is found where one of its stretches overlaps the span, not in the pauses between them
    first = f.fault_active_since(drop, start)
    assert first == start and f.fault_in(drop, start, start) is not None
    t = start
    while f.fault_active_since(drop, t) is not None:
        t += 1000
    pause_start = t
    while f.fault_active_since(drop, t) is None and t < f.end_ms:
        t += 1000
    assert t - pause_start > 2 * MIN  # a pause between stretches
    assert f.fault_in(drop, pause_start + 1000, t - 2000) is None
    assert f.fault_in(drop, pause_start + 1000, t) is not None
    with pytest.raises(KeyError):
        f.fault_in("nope", START, f.end_ms)


def test_invalid_regimes_and_schedules_are_refused() -> None:
    inside = START + HOUR
    with pytest.raises(ValueError, match="inside the run"):
        fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=START))
    with pytest.raises(ValueError, match="fraction"):
        fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=inside, fraction=1.5))
    with pytest.raises(ValueError, match="outside"):
        fleet(RegimeSpec(kind=RegimeKind.PRODUCT_RUN, at_ms=inside, devices=(6,)))
    with pytest.raises(ValueError, match="no device"):
        fleet(schedule={9: FaultSpec(kind=FaultKind.CAVITATION, start_ms=inside)})
    with pytest.raises(ValueError, match="inside the run"):
        fleet(schedule={0: FaultSpec(kind=FaultKind.CAVITATION, start_ms=START + 10 * HOUR)})
    with pytest.raises(ValueError, match="sensor fault"):
        fleet(schedule={0: FaultSpec(kind=FaultKind.CAVITATION, start_ms=inside, channel="pressure")})
    with pytest.raises(ValueError, match="sensor fault"):
        fleet(schedule={0: FaultSpec(kind=FaultKind.SENSOR_DRIFT, start_ms=inside, channel="speed")})
    with pytest.raises(ValueError, match="faulty"):
        fleet(devices=3, faulty=3, schedule={0: FaultSpec(kind=FaultKind.CAVITATION, start_ms=inside)})
