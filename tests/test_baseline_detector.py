"""Machines with a commissioning run in the platform: a profile with ``detector: baseline`` is scored by the same
detector ``edgeloop eval skab`` evaluates, incrementally, and its alarms reach the store as explained alerts over
real MQTT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.broker import free_port
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.finding import Finding
from edgeloop.evaluation.nab_data import default_data_dir
from edgeloop.evaluation.skab import SkabConfig, baseline_detector, detect_run
from edgeloop.evaluation.skab_data import CHANNELS, SkabRun, load_runs
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import register_device
from tests.test_api import publish_all

SKAB = default_data_dir() / "skab"
HYDRAULIC = SkabConfig().channels  # what eval skab scores: Current, Pressure, Volume Flow RateRMS
SHORT = {"Current": "current", "Pressure": "pressure", "Volume Flow RateRMS": "flow"}  # platform channel names


def _runs() -> list[SkabRun]:
    assert (SKAB / "valve1").is_dir(), f"SKAB data not found in {SKAB} (set EDGELOOP_DATA)"
    return load_runs(SKAB)[0]


def _ms(run: SkabRun) -> np.ndarray:
    return run.timestamps.astype("datetime64[ms]").astype(np.int64)


def _stream(det: TrainedBaselineDetector, ts: np.ndarray, x: np.ndarray, cuts: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, list[Finding]]:
    labels, change, findings = [], [], []
    for part in np.split(np.arange(ts.size), cuts):
        findings += det.process(ts[part], x[part])
        labels.append(det.last_labels)
        change.append(det.last_change_labels)
    return np.concatenate(labels), np.concatenate(change), findings


def test_any_batch_split_gives_the_labels_and_findings_of_one_call() -> None:
    rng = np.random.default_rng(3)
    for run in _runs():
        ts = _ms(run)
        whole = baseline_detector()
        one = whole.process(ts, run.x)
        assert whole.warmed_up and len(one) >= 1, run.name
        for n_cuts in (1, 40, ts.size - 1):  # one cut, many, every row alone
            cuts = np.sort(rng.choice(np.arange(1, ts.size), size=n_cuts, replace=False))
            labels, change, findings = _stream(baseline_detector(), ts, run.x, cuts)
            np.testing.assert_array_equal(labels, whole.last_labels, err_msg=run.name)
            np.testing.assert_array_equal(change, whole.last_change_labels, err_msg=run.name)
            assert [(f.ts, f.message) for f in findings] == [(f.ts, f.message) for f in one], run.name
            for f, g in zip(findings, one, strict=True):
                assert f.score == pytest.approx(g.score) and f.explanation == pytest.approx(g.explanation)


def test_the_platform_detector_labels_what_eval_skab_scores() -> None:
    """The platform's defaults over a profile of the hydraulic channels = SkabConfig's pipeline, row for row."""
    rng = np.random.default_rng(4)
    cols = [CHANNELS.index(c) for c in HYDRAULIC]
    for run in _runs():
        evaluated = detect_run(run)
        ts = _ms(run)
        det = TrainedBaselineDetector(channels=[SHORT[c] for c in HYDRAULIC])  # as scoring._detector_for builds it
        cuts = np.sort(rng.choice(np.arange(1, ts.size), size=25, replace=False))
        labels, change, findings = _stream(det, ts, run.x[:, cols], cuts)
        np.testing.assert_array_equal(labels, evaluated.anomaly.labels, err_msg=run.name)
        np.testing.assert_array_equal(change, evaluated.change.labels, err_msg=run.name)
        assert (labels[:400] == 0).all() and det.threshold == pytest.approx(evaluated.anomaly.threshold)
        rises = np.flatnonzero(np.diff(evaluated.anomaly.labels, prepend=0) > 0)
        assert [f.ts for f in findings] == ts[rises].tolist(), run.name
        for f in findings:
            assert f.kind == "anomaly" and f.score >= 1.0 and sum(f.explanation.values()) == pytest.approx(1.0)
            assert set(f.explanation) <= set(SHORT.values()) and max(f.explanation, key=f.explanation.__getitem__) \
                in f.message


def test_channels_and_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="scored_channels"):
        TrainedBaselineDetector(channels=["a", "b"], scored_channels=["c"])
    with pytest.raises(ValueError):
        TrainedBaselineDetector(channels=["a"], train_rows=10, burn_rows=20)
    det = TrainedBaselineDetector(channels=["a", "b"], scored_channels=["b"], train_rows=20, burn_rows=2)
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=60), 10 + rng.normal(scale=0.1, size=60)])
    x[40:, 1] += 5.0  # a step on the scored channel
    x[25:, 0] = np.nan  # the unscored one may even go missing
    findings = det.process(np.arange(60, dtype=np.int64) * 1000, x)
    assert not det.last_labels[:20].any() and det.last_labels[45:].all()
    assert len(findings) == 1 and findings[0].explanation == {"b": 1.0} and "b (100 %)" in findings[0].message


async def test_a_baseline_profile_gets_alerts_over_mqtt(tmp_path: Path) -> None:
    run = next(r for r in _runs() if r.name == "valve1/1.csv")
    cols = [CHANNELS.index(c) for c in HYDRAULIC]
    expected = detect_run(run).anomaly.labels
    rises = np.flatnonzero(np.diff(expected, prepend=0) > 0)
    assert rises.size == 2
    rel = _ms(run) - _ms(run)[0]
    first = TrainedBaselineDetector(channels=[SHORT[c] for c in HYDRAULIC]).process(rel, run.x[:, cols])[0]
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=None)
    async with Platform(cfg) as p:
        await register_device(p, tenant="water", asset="pump-1", device="pump-1-hyd", kind="pump",
                              profile=DeviceProfile(
                                  name="pump-hydraulics", detector="baseline",
                                  channels=[ChannelSpec(name="current", unit="A"),
                                            ChannelSpec(name="pressure", unit="bar"),
                                            ChannelSpec(name="flow", unit="l/min")]))
        base = (p.clock.now_ms() // 1000 - int(rel[-1]) // 1000 - 10) * 1000
        messages = []
        for seq, lo in enumerate(range(0, rel.size, 50), start=1):
            samples = [Sample(ts=base + int(rel[i]),
                              values={SHORT[c]: float(run.x[i, j]) for c, j in zip(HYDRAULIC, cols, strict=True)})
                       for i in range(lo, min(lo + 50, rel.size))]
            messages.append((topic("water", "pump-1-hyd", TopicKind.TELEMETRY),
                             encode(Telemetry("pump-1-hyd", seq, samples))))
        await publish_all(p, messages)
        await p.idle(30)
        alerts = [a for a in await p.store.list_alerts() if a.asset == "pump-1"]
    assert len(alerts) == 1, "one open alert per (asset, kind): the second alarm updates it"
    alert = alerts[0]
    assert alert.detector == TrainedBaselineDetector.name == "trained-baseline-v1" and alert.kind == "anomaly"
    assert alert.model == "detector.pump-hydraulics@0"  # provenance: the profile's built-in version raised it
    assert alert.first_seen == base + int(rel[rises[0]]) and alert.count == rises.size
    assert alert.explanation == pytest.approx(first.explanation) and set(alert.explanation) <= set(SHORT.values())
    assert alert.message == first.message
