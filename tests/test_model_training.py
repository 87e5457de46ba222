"""Training a detector model from stored data and technician labels (edgeloop.models.training), and running it in
a worker process (edgeloop.models.trainer)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import pytest

from edgeloop.detect import AssetDetector, Finding
from edgeloop.models.detector_artifact import PlatformDetector, dump_detectors, load_detectors
from edgeloop.models.trainer import SeriesWriter, TrainingFailed, TrainingRequest, read_series, run_training
from edgeloop.models.training import (
    DeviceSeries,
    TrainingConfig,
    TrainingError,
    merge_summaries,
    newest_labels,
    summarise,
    train,
)
from edgeloop.sim import Fleet
from edgeloop.sim.fleet import CHANNELS
from edgeloop.store.alerting import Label, Verdict

H = 3_600_000
TEMP = CHANNELS.index("bearing_temp")


def _label(alert: int, device: str, start: int, end: int, verdict: Verdict = Verdict.CONFIRMED, *, ts: int = 0,
           asset: str = "asset-1") -> Label:
    return Label(alert=alert, incident=None, tenant="t1", asset=asset, device=device, rule="anomaly",
                 verdict=verdict, fault_type="" if verdict == Verdict.FALSE_ALARM else "bearing_wear",
                 reason="normal load change" if verdict == Verdict.FALSE_ALARM else "", start_ms=start, end_ms=end,
                 first_seen=start, last_seen=end, peak=None, model_version="detector.pump-v1@0", by="tech",
                 ts=ts or end)


def _fleet(devices: int, seed: int, end_ms: int) -> list[DeviceSeries]:
    fleet = Fleet(devices=devices, faulty=0, seed=seed, start_ms=0, duration_ms=end_ms + 1000)
    return [DeviceSeries(device=c.device_id, ts=c.ts, values=c.values.copy(), channels=CHANNELS)
            for c in fleet.advance(end_ms + 1000)]


def test_a_candidate_trained_on_the_new_regime_stops_the_champions_false_alarms() -> None:
    shift_at, end = 2 * H, 10 * H
    series = _fleet(3, seed=5, end_ms=end)
    for s in series[:2]:  # a new product run: the bearing runs 10 °C warmer at the same load from 2 h on
        s.values[s.ts >= shift_at, TEMP] += 10.0
    before: dict[str, PlatformDetector] = {}
    for s in series:  # the champion: the online detector as it stood at the regime change, stored as an artifact
        det = AssetDetector(channels=CHANNELS)
        det.process(s.ts[s.ts < shift_at], s.values[s.ts < shift_at])
        before[s.device] = det
    blob = dump_detectors(before)

    result = train(series, [], window_start_ms=shift_at, window_end_ms=end,
                   champion=lambda device: load_detectors(blob)[device], champion_ref="detector.pump-v1@1")
    card = result.card
    for s in series[:2]:
        assert card.per_device[s.device]["champion"].false_alarms >= 1  # still alarms on the new regime
        assert card.per_device[s.device]["candidate"].false_alarms == 0
        assert card.per_device[s.device]["champion"].score_quantiles["p50"] > 1.0
        assert card.per_device[s.device]["candidate"].score_quantiles["p99"] < 1.0
    healthy = series[2].device  # the device without a shift: neither alarms
    assert card.per_device[healthy]["candidate"].false_alarms == card.per_device[healthy]["champion"].false_alarms == 0
    assert card.verdict == "better"
    assert card.champion == "detector.pump-v1@1"
    assert card.candidate_metrics.false_alarms == 0 and card.champion_metrics.false_alarms >= 2
    assert card.split_ms == shift_at + int(0.7 * (end - shift_at))
    assert set(result.detectors) == {s.device for s in series}
    # the trained model is an artifact like any other, and its drift reference covers every channel
    assert set(load_detectors(dump_detectors(result.detectors))) == set(result.detectors)
    ref = result.reference.devices[series[0].device]
    assert ref.channels == list(CHANNELS) and all(len(edges) == 11 for edges in ref.bin_edges)
    assert all(np.all(np.diff(edges) >= 0) for edges in ref.bin_edges)
    assert ref.bin_edges[TEMP][0] > before[series[0].device]._model.center[TEMP]  # type: ignore[union-attr]


def test_a_device_whose_regime_changed_inside_the_window_learns_from_the_change_on() -> None:
    shift_at, end = 2 * H, 10 * H
    series = _fleet(3, seed=5, end_ms=end)
    for s in series[:2]:
        s.values[s.ts >= shift_at, TEMP] += 10.0
    since = {s.device: shift_at for s in series[:2]}  # the drift events' since
    across = train(series, [], window_start_ms=0, window_end_ms=end)
    aware = train(series, [], window_start_ms=0, window_end_ms=end, regime_since=since)
    for s in series[:2]:
        # fitted across the change, the warm-up learnt the old regime: it alarms on the new one like the champion
        assert across.card.per_device[s.device]["candidate"].false_alarms >= 1
        assert aware.card.per_device[s.device]["candidate"].false_alarms == 0
        assert aware.card.per_device[s.device]["champion"].false_alarms >= 1
    rows = {r.device: r for r in aware.card.devices}
    assert rows[series[0].device].before_regime_rows == 2 * 3600 - 1  # samples at 1 s .. 7 199 s
    assert rows[series[0].device].regime_since_ms == shift_at
    untouched = rows[series[2].device]  # a device without a regime change keeps its whole reference
    assert untouched.before_regime_rows == 0 and untouched.reference_rows == untouched.train_rows
    assert aware.card.verdict == "better" and across.card.verdict == "not_better"


def _vibration_fault_series(seed: int) -> tuple[DeviceSeries, tuple[int, int], tuple[int, int]]:
    """One device whose vibration rises by half for 40 min twice: once in the training span, once held out."""
    (s,) = _fleet(1, seed=seed, end_ms=8 * H)
    first, again = (H, int(1.67 * H)), (int(6.5 * H), int(7.2 * H))
    for lo, hi in (first, again):
        s.values[(s.ts >= lo) & (s.ts <= hi), 0:3] *= 1.5
    return s, first, again


def test_a_confirmed_fault_is_cut_out_of_the_reference_and_that_matters() -> None:
    s, first, again = _vibration_fault_series(seed=2)
    later = _label(2, s.device, *again)
    cut = train([s], [_label(1, s.device, *first), later], window_start_ms=0, window_end_ms=8 * H)
    kept = train([s], [later], window_start_ms=0, window_end_ms=8 * H)  # the first fault never labelled

    rows = cut.card.devices[0]
    assert rows.cut_rows == (first[1] - first[0]) // 1000 + 1 + 2 * 1800  # the window, padded 30 min each side
    assert rows.reference_rows == rows.train_rows - rows.cut_rows
    assert kept.card.devices[0].cut_rows == 0
    assert cut.card.candidate_metrics.faults == kept.card.candidate_metrics.faults == 1
    assert cut.card.candidate_metrics.detected == 1  # learnt without the fault: finds it again
    assert cut.card.candidate_metrics.median_delay_s is not None
    assert cut.card.candidate_metrics.median_delay_s < 120
    assert kept.card.candidate_metrics.detected == 0  # learnt the fault as normal: misses it later
    assert kept.card.verdict == "not_better" and any("loses recall" in r for r in kept.card.reasons)
    assert cut.label_ids == [1, 2] and kept.label_ids == [2]


def test_the_newest_label_per_alert_wins() -> None:
    s, first, _ = _vibration_fault_series(seed=2)
    dev = s.device
    second = (int(3 * H), int(3.2 * H))
    labels = [
        _label(1, dev, *first, ts=100),  # confirmed ...
        _label(1, dev, *first, Verdict.FALSE_ALARM, ts=200),  # ... then corrected: a false alarm (kept as normal)
        _label(3, dev, *second, Verdict.FALSE_ALARM, ts=300),  # a false alarm ...
        _label(3, dev, *second, Verdict.RELABEL, ts=400),  # ... relabelled as a real event: cut out
    ]
    assert [(lid, lab.verdict) for lid, lab in newest_labels(labels, [10, 11, 12, 13])] == [
        (11, Verdict.FALSE_ALARM), (13, Verdict.RELABEL)]
    result = train([s], labels, label_ids=[10, 11, 12, 13], window_start_ms=0, window_end_ms=8 * H)
    assert result.card.devices[0].cut_rows == (second[1] - second[0]) // 1000 + 1 + 2 * 1800
    assert result.card.labels == {"false_alarm": 1, "relabel": 1}
    assert result.label_ids == [11, 13]
    # the same labels in another order: the newest still wins
    again = train([s], labels[::-1], label_ids=[13, 12, 11, 10], window_start_ms=0, window_end_ms=8 * H)
    assert again.card.devices[0].cut_rows == result.card.devices[0].cut_rows
    assert again.data.data_sha256 == result.data.data_sha256


class _Scripted:
    """A stand-in detector: alarm onsets at given times, a score per row from a function of time."""

    name = "scripted-v1"

    def __init__(self, onsets: list[int], high: set[int]) -> None:
        self.onsets = onsets
        self.high = high
        self.seen: list[int] = []
        self.last_scores = np.zeros(0)

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]:
        self.seen += ts.tolist()
        self.last_scores = np.array([2.0 if t in self.high else 0.5 for t in ts.tolist()])
        return [Finding(ts=t, kind="anomaly", severity="warning", score=2.0, explanation={"a": 1.0}, message="m")
                for t in ts.tolist() if t in self.onsets]


def test_the_cards_figures_on_a_hand_made_case() -> None:
    ts = np.arange(1, 10_001, dtype=np.int64) * 1000  # 1 Hz, 1 s .. 10 000 s
    s = DeviceSeries(device="d1", ts=ts, values=np.zeros((ts.size, 1)), channels=("a",))
    labels = [_label(1, "d1", 8_000_000, 8_500_000),  # a confirmed fault in the held-out span
              _label(2, "d1", 9_000_000, 9_100_000, Verdict.FALSE_ALARM),  # a false alarm in it
              _label(3, "d1", 2_000_000, 2_100_000)]  # a confirmed fault in the training span
    cand = _Scripted(onsets=[8_100_000, 9_500_000], high={7_000_000, 8_000_000, 9_000_000, 9_999_000})
    champ = _Scripted(onsets=[7_500_000, 9_050_000], high=set())
    cfg = TrainingConfig(pad_before_ms=60_000, pad_after_ms=60_000, grace_ms=60_000, min_reference_rows=100)
    result = train([s], labels, window_start_ms=0, window_end_ms=10_000_000, config=cfg,
                   factory=lambda *_: cand, champion=lambda _: champ)  # type: ignore[arg-type,return-value]
    card = result.card
    assert card.split_ms == 7_000_000
    rows = card.devices[0]
    assert (rows.rows, rows.train_rows, rows.heldout_rows) == (10_000, 6_999, 3_001)
    assert rows.cut_rows == 221  # 1 940 s .. 2 160 s
    assert rows.reference_rows == 6_778
    # the candidate learnt only the reference; both models scored exactly the held-out rows
    assert len(cand.seen) == 6_778 + 3_001 and not set(cand.seen) & set(range(1_940_000, 2_161_000, 1000))
    assert champ.seen == ts.tolist()  # a fitted champion is fed the whole training span, then the held-out span
    days = 3_000_000 / 86_400_000
    c, p = card.candidate_metrics, card.champion_metrics
    assert (c.alarms, c.false_alarms, c.false_alarm_window_onsets, c.faults, c.detected) == (2, 1, 0, 1, 1)
    assert c.recall == 1.0 and c.median_delay_s == 100.0
    assert c.false_alarms_per_asset_day == pytest.approx(1 / days)
    assert c.rows_scored == 3_001 and c.share_above_1 == pytest.approx(4 / 3_001)
    assert c.score_quantiles["p50"] == c.score_quantiles["p99"] == 0.5
    assert c.score_quantiles["p99.9"] == 2.0  # 4 of 3 001 rows are above the 99.9th percentile's rank
    assert (p.alarms, p.false_alarms, p.false_alarm_window_onsets, p.detected) == (2, 2, 1, 0)
    assert p.recall == 0.0 and p.median_delay_s is None and p.share_above_1 == 0.0
    assert card.verdict == "better"
    assert card.labels == {"confirmed": 2, "false_alarm": 1}


def test_data_digest_is_deterministic_and_devices_without_enough_reference_are_skipped() -> None:
    series = _fleet(2, seed=3, end_ms=3 * H)
    a = train(series, [], window_start_ms=0, window_end_ms=3 * H)
    b = train(series[::-1], [], window_start_ms=0, window_end_ms=3 * H)
    assert a.data.data_sha256 == b.data.data_sha256 and a.data.rows == 2 * 3 * 3600
    series[1].values[5, 0] += 0.001
    assert train(series, [], window_start_ms=0, window_end_ms=3 * H).data.data_sha256 != a.data.data_sha256
    gone = series[1]  # a device that went silent after 20 min: too little reference, it keeps the champion
    series[1] = DeviceSeries(device=gone.device, ts=gone.ts[:1200], values=gone.values[:1200], channels=CHANNELS)
    part = train(series, [], window_start_ms=0, window_end_ms=3 * H)
    assert set(part.detectors) == {series[0].device}
    (skipped,) = [r for r in part.card.devices if not r.trained]
    assert skipped.device == gone.device and "only 1200 reference rows" in skipped.note
    with pytest.raises(TrainingError, match="reference rows"):
        train(series, [], window_start_ms=0, window_end_ms=H, config=TrainingConfig(min_reference_rows=3600))


# ---------------------------------------------------------------------------------------------------- the worker

def _write(path: Path, series: list[DeviceSeries]) -> str:
    with SeriesWriter(path) as writer:
        for s in series:
            writer.add(s)
    return str(path)


def test_a_series_file_reads_back_one_device_at_a_time_in_device_order(tmp_path: Path) -> None:
    series = _fleet(2, seed=4, end_ms=H // 4)
    path = tmp_path / "series.npz"
    with SeriesWriter(path, max_rows=600) as writer:
        writer.add(series[1])
        writer.add(series[0])
        with pytest.raises(ValueError, match="already"):
            writer.add(series[0])
    assert path.stat().st_mode & 0o777 == 0o600  # telemetry is private data
    total, devices = read_series(path)
    assert total == 2
    got = list(devices)
    assert [s.device for s in got] == sorted(s.device for s in series)
    for s in got:
        orig = next(o for o in series if o.device == s.device)
        np.testing.assert_array_equal(s.ts, orig.ts[-600:])  # the newest rows, when capped
        np.testing.assert_array_equal(s.values, orig.values[-600:])
        assert s.channels == CHANNELS


async def test_training_in_a_worker_process_gives_the_same_model_and_reports_progress(tmp_path: Path) -> None:
    series = _fleet(2, seed=6, end_ms=3 * H)
    labels = [_label(1, series[0].device, H, H + 600_000)]
    request = TrainingRequest(series_path=_write(tmp_path / "s.npz", series), window_start_ms=0,
                              window_end_ms=3 * H, labels=labels, label_ids=[41])
    seen: list[tuple[str, int, int]] = []
    result = await run_training(request, progress=lambda *p: seen.append(p))
    local = train(series, labels, label_ids=[41], window_start_ms=0, window_end_ms=3 * H)
    assert msgspec.json.encode(result.card) == msgspec.json.encode(local.card)
    assert result.data == local.data and result.label_ids == [41]
    assert seen == [("started", 0, 2), ("devices", 1, 2), ("devices", 2, 2)]
    assert not multiprocessing.active_children()  # the worker is gone


async def test_a_worker_that_dies_mid_training_is_a_clear_failure(tmp_path: Path) -> None:
    series = _fleet(6, seed=7, end_ms=2 * H)
    request = TrainingRequest(series_path=_write(tmp_path / "s.npz", series), window_start_ms=0,
                              window_end_ms=2 * H)

    def kill_the_worker(stage: str, done: int, total: int) -> None:
        if stage == "started":  # six devices to go: seconds of work left when the worker is killed
            (worker,) = multiprocessing.active_children()
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)

    with pytest.raises(TrainingFailed, match="worker process died"):
        await run_training(request, progress=kill_the_worker)
    assert not multiprocessing.active_children()


async def test_cancelling_a_training_kills_its_worker(tmp_path: Path) -> None:
    series = _fleet(6, seed=7, end_ms=2 * H)
    request = TrainingRequest(series_path=_write(tmp_path / "s.npz", series), window_start_ms=0,
                              window_end_ms=2 * H)
    started = asyncio.Event()
    task = asyncio.create_task(run_training(request, progress=lambda stage, *_: started.set()))
    await started.wait()
    (worker,) = multiprocessing.active_children()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not worker.is_alive() and not multiprocessing.active_children()


async def test_a_training_error_in_the_worker_says_why(tmp_path: Path) -> None:
    series = _fleet(1, seed=8, end_ms=H // 2)
    request = TrainingRequest(series_path=_write(tmp_path / "s.npz", series), window_start_ms=0,
                              window_end_ms=H // 2)
    with pytest.raises(TrainingFailed, match=r"no device could be trained.*only 1259 reference rows \(need 4800\)"):
        await run_training(request)
    bad = TrainingRequest(series_path=request.series_path, window_start_ms=0, window_end_ms=H // 2,
                          labels=[_label(1, series[0].device, 0, 1000)], label_ids=[1, 2])
    with pytest.raises(TrainingFailed, match="ValueError: label_ids must give one id per label"):
        await run_training(bad)


@pytest.mark.parametrize(("kind", "name"), [("baseline", "trained-baseline-v1"),
                                            ("univariate", "ensemble-univariate-v1")])
def test_the_profiles_other_detector_kinds_train_too(kind: Literal["baseline", "univariate"], name: str) -> None:
    series = _fleet(1, seed=9, end_ms=3 * H)
    if kind == "univariate":  # a KPI stream: one channel
        series = [DeviceSeries(device=s.device, ts=s.ts, values=s.values[:, [TEMP]], channels=("bearing_temp",))
                  for s in series]
    result = train(series, [], window_start_ms=0, window_end_ms=3 * H, config=TrainingConfig(detector=kind))
    assert result.card.detector == name
    (det,) = result.detectors.values()
    assert det.name == name and det.warmed_up
    assert result.card.champion_metrics.rows_scored > 0 and result.card.candidate_metrics.rows_scored > 0
    (again,) = load_detectors(dump_detectors(result.detectors)).values()
    assert type(again) is type(det)


async def test_a_training_that_overruns_its_time_is_stopped(tmp_path: Path) -> None:
    series = _fleet(2, seed=7, end_ms=2 * H)
    request = TrainingRequest(series_path=_write(tmp_path / "s.npz", series), window_start_ms=0,
                              window_end_ms=2 * H)
    with pytest.raises(TrainingFailed, match=r"did not finish within 0\.05 s"):
        await run_training(request, timeout_s=0.05)  # less than a Python process takes to start
    assert not multiprocessing.active_children()


def test_score_quantiles_merged_over_devices_stay_close_to_the_exact_ones() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.exponential(scale, size) for scale, size in ((0.1, 50_000), (0.3, 20_000), (0.05, 130_000))]
    parts[1][:30] = np.nan  # rows not scored
    quantiles, above, count = merge_summaries([summarise(p) for p in parts])
    every = np.concatenate(parts)
    every = every[np.isfinite(every)]
    assert count == every.size and above == pytest.approx((every > 1.0).mean())
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)):
        lo, hi = np.quantile(every, [q - 0.001, q + 0.001])  # within 0.1 % of rank
        assert lo <= quantiles[name] <= hi, name
