"""Remaining useful life in the running platform: a model trained by ``train_rul`` on C-MAPSS engines, put in
the platform's model folder, watches engines that report over MQTT and raises one explained ``rul`` alert per
engine as it nears failure, not before. Real MQTT (embedded broker), real SQLite store, the ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.evaluation.cmapss_data import SENSOR_NAMES, SETTING_NAMES, default_cmapss_dir, load_runs
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.rul.model import RulParams, train_rul
from edgeloop.rul.monitor import RUL_DETECTOR
from tests.test_api import publish_all

HELD_OUT = 3  # the last engines of FD001 are the ones the platform watches; the model never saw them
HORIZON = 30.0


async def test_engines_near_failure_get_one_explained_rul_alert(tmp_path: Path) -> None:
    engines = load_runs(default_cmapss_dir() / "train_FD001.txt")
    train, watched = engines[:-HELD_OUT], engines[-HELD_OUT:]
    trained = train_rul(train, RulParams(n_estimators=60, learning_rate=0.1, stride=4, calibration_folds=2))
    models = tmp_path / "platform" / "models" / "rul"
    models.mkdir(parents=True)
    (models / "turbofan.onnx").write_bytes(trained.onnx)

    channels = (*SETTING_NAMES, *SENSOR_NAMES)
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=None,
                         rul_horizon=HORIZON)
    async with Platform(cfg) as p:
        reg = p.registry
        await reg.put_tenant(Tenant(id="air"))
        await reg.put_site(Site(id="hangar", tenant="air"))
        await reg.put_line(Line(id="fleet", site="hangar"))
        await reg.put_profile(DeviceProfile(name="turbofan-v1", channels=[ChannelSpec(name=c) for c in channels]))
        base = (p.clock.now_ms() // 1000 - 1000) * 1000  # one cycle a second, in the recent past
        messages = []
        for e in watched:
            await reg.put_asset(Asset(id=f"engine-{e.asset}", line="fleet", kind="turbofan"))
            await reg.put_device(Device(id=f"fadec-{e.asset}", tenant="air", asset=f"engine-{e.asset}",
                                        profile="turbofan-v1"))
            rows = np.column_stack([e.settings, e.sensors])
            for seq, lo in enumerate(range(0, len(e), 10), start=1):  # ten cycles per message
                samples = [Sample(ts=base + int(e.cycles[i]) * 1000,
                                  values=dict(zip(channels, map(float, rows[i]), strict=True)))
                           for i in range(lo, min(lo + 10, len(e)))]
                messages.append((topic("air", f"fadec-{e.asset}", TopicKind.TELEMETRY),
                                 encode(Telemetry(f"fadec-{e.asset}", seq, samples))))
        for lo in range(0, len(messages), 5):  # a fleet reporting over time, not one burst: a few messages at once
            await publish_all(p, messages[lo:lo + 5])
            await p.idle(30)
        await p.idle(30)
        snapshot = await p.snapshot()
        alerts = [a for a in await p.store.list_alerts() if a.kind == "rul"]

    assert snapshot["scoring"]["rul_models"] == ["turbofan"]
    assert snapshot["scoring"]["rul_predictions"] >= sum(len(e) for e in watched) // 50  # every few messages at least
    by_asset = {a.asset: a for a in alerts}
    assert sorted(by_asset) == sorted(f"engine-{e.asset}" for e in watched), "one rul alert per watched engine"
    for e in watched:
        alert = by_asset[f"engine-{e.asset}"]
        cycle = (alert.first_seen - base) // 1000
        true_rul = int(e.cycles[-1]) - cycle
        assert 0 <= true_rul <= 2.5 * HORIZON, f"engine {e.asset}: alert at cycle {cycle}, {true_rul} before failure"
        assert alert.detector == RUL_DETECTOR and alert.severity in ("warning", "critical") and alert.score >= 1.0
        assert "remaining useful life" in alert.message and f"{HORIZON:g}-cycle horizon" in alert.message
        assert alert.explanation and set(alert.explanation) <= set(SENSOR_NAMES)
        assert abs(sum(alert.explanation.values()) - 1.0) < 1e-9
