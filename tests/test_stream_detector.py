"""KPI streams in the platform: a profile with ``detector: univariate`` is scored by the same ensemble that
``edgeloop eval nab`` evaluates, and its alarms reach the store as explained alerts over real MQTT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.broker import free_port
from edgeloop.detect.stream import NAB_STANDARD_THRESHOLD, UnivariateStreamDetector
from edgeloop.evaluation.nab_data import default_data_dir, load_corpus, nab_dir
from edgeloop.evaluation.nab_run import UNIVARIATE_PARAMS, run_series
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import register_device
from tests.test_api import publish_all

FILES = ["realTraffic/speed_7578.csv", "realKnownCause/rogue_agent_key_hold.csv"]


def test_the_platform_detector_alarms_exactly_where_the_evaluated_one_does() -> None:
    rng = np.random.default_rng(1)
    for series in load_corpus(nab_dir(default_data_dir()), FILES):
        evaluated = run_series("ensemble", series.values, UNIVARIATE_PARAMS["ensemble"])
        expected = np.flatnonzero(evaluated >= NAB_STANDARD_THRESHOLD)
        det = UnivariateStreamDetector(channels=["value"])
        ts = np.arange(1, series.values.size + 1, dtype=np.int64) * 300_000
        cuts = np.sort(rng.choice(np.arange(1, ts.size), size=20, replace=False))
        findings = [f for part in np.split(np.arange(ts.size), cuts)
                    for f in det.process(ts[part], series.values[part, None])]
        assert [f.ts // 300_000 - 1 for f in findings] == expected.tolist(), series.name
        assert expected.size >= 1, f"{series.name}: the evaluated detector alarms at least once"
        assert all(f.explanation == {"value": 1.0} and f.score >= 1.0 for f in findings)


async def test_a_kpi_profile_gets_univariate_alerts_over_mqtt(tmp_path: Path) -> None:
    series = load_corpus(nab_dir(default_data_dir()), FILES[:1])[0]
    expected = np.flatnonzero(run_series("ensemble", series.values, UNIVARIATE_PARAMS["ensemble"])
                              >= NAB_STANDARD_THRESHOLD)
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=None)
    async with Platform(cfg) as p:
        await register_device(p, tenant="city", asset="sensor-7578", device="loop-7578", kind="traffic",
                              profile=DeviceProfile(name="speed-kpi", channels=[ChannelSpec(name="speed", unit="mph")],
                                                    detector="univariate"))
        base = (p.clock.now_ms() // 1000 - series.values.size - 10) * 1000
        messages = []
        for seq, lo in enumerate(range(0, series.values.size, 50), start=1):
            samples = [Sample(ts=base + i * 1000, values={"speed": float(series.values[i])})
                       for i in range(lo, min(lo + 50, series.values.size))]
            messages.append((topic("city", "loop-7578", TopicKind.TELEMETRY),
                             encode(Telemetry("loop-7578", seq, samples))))
        await publish_all(p, messages)
        await p.idle(30)
        alerts = [a for a in await p.store.list_alerts() if a.asset == "sensor-7578"]
    assert len(alerts) == 1, "one open alert per (asset, kind): later alarms update it"
    alert = alerts[0]
    assert alert.detector == UnivariateStreamDetector.name and alert.kind == "anomaly"
    assert alert.first_seen == base + int(expected[0]) * 1000
    assert alert.count == expected.size
    assert alert.explanation == {"speed": 1.0} and "speed" in alert.message
