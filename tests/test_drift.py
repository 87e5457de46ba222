"""Drift monitoring (edgeloop.models.drift): a regime change is found within the hour and explained, healthy
devices stay quiet for days, one event per episode, bounded state; alert-rate and label-precision shifts."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from edgeloop.models.drift import (
    AlertRateMonitor,
    DriftConfig,
    DriftEvent,
    DriftMonitor,
    LabelPrecisionMonitor,
    ReferenceStats,
    align,
    poisson_ratio_p,
    psi,
    reference_from,
)
from edgeloop.sim.fleet import CHANNELS, Fleet

MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
SPEED, TEMP = CHANNELS.index("speed"), CHANNELS.index("bearing_temp")


def _watch(seed: int, *, devices: int, days: float, shift_at: int | None = None,
           speed_factor: float = 1.0, temp_offset: float = 0.0) -> tuple[list[DriftEvent], Fleet]:
    """One simulated day as each device's training reference, then ``days`` watched (in 10 min batches); the
    first device's speed levels scaled and bearing temperature offset from ``shift_at`` on (a new product run)."""
    fleet = Fleet(devices=devices, faulty=0, seed=seed, start_ms=0, duration_ms=DAY + int(days * DAY))
    monitors = {}
    for c in fleet.advance(DAY):
        ref = reference_from(c.values, CHANNELS, ts=c.ts)
        monitors[c.device_id] = DriftMonitor(device=c.device_id, reference=ref, model="detector.pump-v1@1",
                                             profile="pump-v1")
    shifted = fleet.devices[0].device_id
    events: list[DriftEvent] = []
    t = DAY
    while t < fleet.end_ms:
        t += 10 * MIN
        for c in fleet.advance(t):
            values = c.values
            if shift_at is not None and c.device_id == shifted:
                values = values.copy()
                after = c.ts >= shift_at
                values[after, SPEED] *= speed_factor
                values[after, TEMP] += temp_offset
            events.extend(monitors[c.device_id].observe(c.ts, values))
    return events, fleet


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_regime_change_is_detected_within_an_hour_and_names_the_shifted_channels(seed: int) -> None:
    shift_at = DAY + 10 * HOUR + 7 * MIN
    events, fleet = _watch(seed, devices=2, days=0.75, shift_at=shift_at, speed_factor=0.9, temp_offset=8.0)
    assert len(events) == 1, events  # the shifted device, once; the other device stays quiet
    ev = events[0]
    assert ev.device == fleet.devices[0].device_id and ev.kind == "input"
    assert shift_at < ev.detected_ms <= shift_at + 60 * MIN
    assert set(ev.channels) == {"speed", "bearing_temp"}  # the untouched channels are not blamed
    assert list(ev.channels.values()) == sorted(ev.channels.values(), reverse=True)
    assert ev.figure == max(ev.channels.values()) and ev.figure > ev.threshold
    assert ev.since_ms <= shift_at < ev.detected_ms  # the first drifting window holds the change
    first, second = list(ev.channels)
    assert ev.message.startswith(f"{first}, {second} drifted from the training reference since ")
    assert ev.model == "detector.pump-v1@1" and ev.profile == "pump-v1"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_healthy_devices_raise_no_drift_event_over_three_days(seed: int) -> None:
    events, _ = _watch(seed, devices=3, days=3)
    assert events == []


def _gauss(rng: np.random.Generator, start: int, minutes: int, mean: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    ts = start + np.arange(minutes * 60, dtype=np.int64) * 1000
    x = rng.normal(size=(ts.shape[0], 2))
    x[:, 0] += mean
    return ts, x


def _iid_monitor(rng: np.random.Generator, **config: int) -> DriftMonitor:
    ts, x = _gauss(rng, 0, 24 * 60)
    ref = reference_from(x, ["a", "b"], ts=ts)
    return DriftMonitor(device="d1", reference=ref, model="detector.p@2", config=DriftConfig(**config))


def _feed(m: DriftMonitor, rng: np.random.Generator, start: int, minutes: int, mean: float = 0.0) -> list[DriftEvent]:
    events: list[DriftEvent] = []
    for lo in range(0, minutes, 10):
        ts, x = _gauss(rng, start + lo * MIN, min(10, minutes - lo), mean)
        events.extend(m.observe(ts, x))
    return events


def test_a_lasting_drift_is_one_event_and_a_new_episode_after_it_cleared_another() -> None:
    rng = np.random.default_rng(5)
    m = _iid_monitor(rng)
    t0 = DAY
    assert _feed(m, rng, t0, 60) == []
    first = _feed(m, rng, t0 + HOUR, 24 * 60, mean=2.0)  # a day shifted: one event, not one per window
    assert [list(e.channels) for e in first] == [["a"]]
    assert m.status.drifting
    assert _feed(m, rng, t0 + 25 * HOUR, 8 * 60) == []  # back to normal for longer than clear_ms: re-armed
    assert not m.status.drifting
    second = _feed(m, rng, t0 + 33 * HOUR, 60, mean=-2.0)
    assert len(second) == 1 and second[0].since_ms >= t0 + 33 * HOUR - 30 * MIN


def test_a_short_lull_does_not_re_arm_the_episode() -> None:
    rng = np.random.default_rng(6)
    m = _iid_monitor(rng)
    events = _feed(m, rng, DAY, 3 * 60, mean=2.0)
    events += _feed(m, rng, DAY + 3 * HOUR, 60)  # an hour normal: less than clear_ms (6 h)
    events += _feed(m, rng, DAY + 4 * HOUR, 3 * 60, mean=2.0)
    assert len(events) == 1


def test_state_does_not_grow_with_the_stream() -> None:
    rng = np.random.default_rng(7)
    m = _iid_monitor(rng)
    _feed(m, rng, DAY, 2 * 60)
    size, pickled = m.state_size(), len(pickle.dumps(m._hops))
    _feed(m, rng, DAY + 2 * HOUR, 3 * 24 * 60)
    assert m.state_size() == size
    assert len(pickle.dumps(m._hops)) <= pickled + 64  # counts get larger numbers, not more of them


def test_missing_values_and_silence_are_not_drift() -> None:
    rng = np.random.default_rng(8)
    m = _iid_monitor(rng)
    ts, x = _gauss(rng, DAY, 3 * 60)
    x[:, 1] = np.nan  # a channel with no valid reading is not judged, nor blamed
    assert m.observe(ts, x) == []
    assert set(m.status.channels) == {"a"}
    assert m.advance(DAY + 10 * HOUR) == []  # a silent device: its windows empty out, nothing fires
    late = _feed(m, rng, DAY + 10 * HOUR, 60, mean=3.0)  # after the silence, a fresh window must fill first
    assert len(late) == 1 and late[0].since_ms >= DAY + 10 * HOUR


def _scores(rng: np.random.Generator, scale: float, n: int) -> np.ndarray:
    return np.asarray(rng.gamma(2.0, scale, size=(n,)), dtype=np.float64)


def test_a_channel_without_reference_values_is_not_monitored() -> None:
    rng = np.random.default_rng(12)
    ts, x = _gauss(rng, 0, 6 * 60)
    x[:, 1] = np.nan
    ref = reference_from(x, ["a", "b"], ts=ts)
    assert ref.edges[1] == [] and ref.fractions[1] == []
    m = DriftMonitor(device="d1", reference=ref, model="detector.p@2")
    ts, x = _gauss(rng, DAY, 60)
    x[:, 1] += 100.0
    assert m.observe(ts, x) == [] and set(m.status.channels) == {"a"}


def test_align_puts_a_profile_s_columns_in_the_reference_order() -> None:
    ref = ReferenceStats(channels=["a", "b"], edges=[[0.0], [1.0]])
    got = align(np.array([[7.0, 1.0, 2.0]]), ["c", "b", "a"], ref)
    assert got.tolist() == [[2.0, 1.0]]
    assert np.isnan(align(np.array([[1.0]]), ["a"], ref)[0, 1])  # a channel the data lacks is missing


def test_score_shift_against_the_reference_scores() -> None:
    rng = np.random.default_rng(9)
    ts, x = _gauss(rng, 0, 24 * 60)
    scores = _scores(rng, 0.2, ts.shape[0])
    m = DriftMonitor(device="d1", reference=reference_from(x, ["a", "b"], ts=ts, scores=scores),
                     model="detector.p@2")
    ts, x = _gauss(rng, DAY, 2 * 60)
    assert m.observe(ts, x, _scores(rng, 0.2, ts.shape[0])) == []
    ts, x = _gauss(rng, DAY + 2 * HOUR, 2 * 60)
    events = m.observe(ts, x, _scores(rng, 0.6, ts.shape[0]))  # the detector scores three times higher
    assert [(e.kind, list(e.channels)) for e in events] == [("score", ["score"])]
    assert "scores shifted" in events[0].message


def test_reference_survives_the_manifest_and_psi_is_zero_on_itself() -> None:
    rng = np.random.default_rng(10)
    ts, x = _gauss(rng, 0, 6 * 60)
    ref = reference_from(x, ["a", "b"], ts=ts, alert_rate_per_day=0.5)
    again = msgspec.json.decode(msgspec.json.encode(ref), type=ReferenceStats)
    assert again == ref and len(ref.edges[0]) == 11 and len(ref.limits) == 2
    q = np.asarray(ref.fractions[0])
    assert psi(q, q) == 0.0 and psi(q, np.roll(q, 3)) > 1.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"channels": ["a"], "edges": [[2.0, 1.0]]}', type=ReferenceStats)


# ----------------------------------------------------------------------------------------------- alert rate


def test_alert_rate_shift_against_own_history_and_peers() -> None:
    now = 40 * DAY
    m = AlertRateMonitor(profile="pump-v1", model="detector.pump-v1@3")
    for i in range(10):
        m.add_asset(f"asset-{i}", 0)
    for day in range(10, 39):  # every asset: one alert a day in its history
        for i in range(10):
            m.observe_alert(f"asset-{i}", day * DAY + i * HOUR)
    for h in range(8):  # asset-3: eight alerts in the last day; the others one each
        m.observe_alert("asset-3", now - DAY + 1 + h * HOUR, device="pump-0004")
    for i in (0, 1, 2, 4, 5, 6, 7, 8, 9):
        m.observe_alert(f"asset-{i}", now - 2 * HOUR)
    events = m.check(now)
    assert [(e.asset, e.device, e.kind) for e in events] == [("asset-3", "pump-0004", "alert_rate")]
    ev = events[0]
    assert set(ev.channels) == {"vs_history", "vs_peers"}
    assert ev.channels["vs_peers"] == pytest.approx(8.0) and ev.channels["vs_history"] == pytest.approx(8.0)
    # the test itself: 8 in a day against 9 on 9 peer-days is significant, 6 against 9 is not (yet)
    assert poisson_ratio_p(8, 1.0, 9, 9.0) < 1e-3 < poisson_ratio_p(6, 1.0, 9, 9.0)
    assert m.check(now + HOUR) == []  # the same episode does not fire again


def test_alert_rate_of_a_whole_profile_rising_is_a_shift_against_history_only() -> None:
    now = 30 * DAY
    m = AlertRateMonitor(profile="p", model="detector.p@1", min_alerts=3)
    for i in range(4):
        m.add_asset(f"a{i}", 0)
        for day in range(2, 29, 2):  # one alert every other day
            m.observe_alert(f"a{i}", day * DAY)
        for h in range(5):
            m.observe_alert(f"a{i}", now - 20 * HOUR + h * HOUR)
    events = m.check(now)
    assert len(events) == 4 and all(set(e.channels) == {"vs_history"} for e in events)


def test_few_alerts_or_a_young_asset_without_reference_are_not_a_shift() -> None:
    m = AlertRateMonitor(profile="p", model="detector.p@1")
    m.observe_alert("a1", DAY + 1)
    m.observe_alert("a1", DAY + 2)
    assert m.check(2 * DAY) == []  # two alerts: fewer than min_alerts
    young = AlertRateMonitor(profile="p", model="detector.p@1", reference_rate_per_day=0.5)
    for h in range(5):
        young.observe_alert("a1", 10 * HOUR + h * HOUR)
    [ev] = young.check(DAY)
    assert set(ev.channels) == {"vs_reference"}  # no history yet: judged against the training data's rate
    assert ev.figure == pytest.approx(5 / (14 / 24) / 0.5, abs=1e-3)  # watched from its first alert on
    lone = AlertRateMonitor(profile="p", model="detector.p@1")  # peers that never alerted: still a finite ratio
    for i in range(1, 12):
        lone.add_asset(f"a{i}", 0)
    for h in range(4):
        lone.observe_alert("a1", DAY + h * HOUR)
    [ev] = lone.check(2 * DAY)
    assert ev.channels == {"vs_peers": pytest.approx(4 / (0.5 / 10))}  # half an alert over 10 peer-days


def test_alert_rate_state_is_bounded_by_the_horizon() -> None:
    m = AlertRateMonitor(profile="p", model="detector.p@1", window_ms=DAY, history_ms=7 * DAY)
    for h in range(60 * 24):  # 60 days of hourly alerts
        m.observe_alert("a1", h * HOUR)
    assert m.state_size() <= 8 * 24 + 1


# ----------------------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class _Label:
    alert: int
    device: str
    asset: str
    verdict: str
    ts: int


def test_label_precision_fires_once_per_device_and_for_the_profile() -> None:
    m = LabelPrecisionMonitor(profile="pump-v1", model="detector.pump-v1@2", last_n=10, min_labels=6)
    events: list[DriftEvent] = []
    verdicts = ["confirmed", "false_alarm", "false_alarm", "confirmed", "false_alarm", "false_alarm",
                "false_alarm", "false_alarm"]
    for i, v in enumerate(verdicts):
        events += m.observe(_Label(alert=i, device="pump-0001", asset="asset-0001", verdict=v, ts=i * HOUR))
    assert [(e.device, e.kind) for e in events] == [("pump-0001", "precision"), ("*", "precision")]
    assert events[0].figure == pytest.approx(4 / 6, abs=1e-4) and events[0].detected_ms == 5 * HOUR
    assert "4 of pump-0001's last 6 labels were false alarms" in events[0].message
    # relabelled as real faults (the newest label per alert wins): the share falls, the episode re-arms
    for i in (1, 2, 4, 5):
        assert m.observe(_Label(alert=i, device="pump-0001", asset="asset-0001", verdict="relabel",
                                ts=(10 + i) * HOUR)) == []
    assert m.share("pump-0001") == pytest.approx(2 / 8)
    again = []
    for i in range(20, 30):
        again += m.observe(_Label(alert=i, device="pump-0001", asset="asset-0001", verdict="false_alarm",
                                  ts=i * HOUR))
    assert [e.device for e in again] == ["pump-0001", "*"]
    assert m.share("pump-0001") == 1.0  # only the last 10 labels count
