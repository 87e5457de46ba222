"""Notifications from the running platform: ``alerting.yaml`` channels get signed pages, an unacknowledged
incident escalates to the channel its level names, and a delivery that fails for good is kept as an
undelivered record with its payload."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeloop.alerts.service import load_settings
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.conftest import SECRET, Receiver
from tests.support import register_device
from tests.test_api import publish_all

T0 = 1_795_000_000_000
RULES = "version: 1\nrules:\n  - {name: hot, kind: threshold, channel: temp, above: 80, severity: critical}\n"


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_pages_escalations_and_undelivered_notifications(tmp_path: Path, receiver: Receiver) -> None:
    settings = tmp_path / "alerting.yaml"
    settings.write_text(f"""\
channels:
  - {{type: webhook, name: ops, url: "{receiver.url}", secret: {SECRET}, max_attempts: 1}}
  - {{type: webhook, name: lead, url: "{receiver.url}/lead", secret: {SECRET}, max_attempts: 1, routes: []}}
  - {{type: webhook, name: broken, url: "http://127.0.0.1:9/hook", secret: x, max_attempts: 2,
     backoff_base_s: 0.01, backoff_cap_s: 0.01, timeout_s: 2}}
lifecycle:
  levels: [{{after_s: 600, notify: [lead]}}]
""")
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path / "p", mqtt_port=free_port(), http_port=None, alerting=settings)
    async with Platform(cfg, clock=clock) as p:
        await register_device(p, tenant="acme", asset="pump-1", device="pump-1-dev", kind="pump",
                              profile=DeviceProfile(name="pump", channels=[ChannelSpec(name="temp")]))
        await p.alerts.replace_rules(RULES, by="test")
        clock.advance(150_000)  # past the startup grace
        t = clock.now_ms()
        msg = Telemetry("pump-1-dev", 1, [Sample(ts=t, values={"temp": 95.0})])
        await publish_all(p, [(topic("acme", "pump-1-dev", TopicKind.TELEMETRY), encode(msg))])
        assert await p.idle(30)
        clock.advance(30_000)
        await p.alerts.tick()  # the incident pages: to "ops" (its route) and "broken", not to "lead"
        [inc] = await p.store.list_incidents()
        await eventually(lambda: len(receiver.requests) == 1, "the page on the ops webhook")
        headers, body = receiver.requests[0]
        page = json.loads(body)
        assert receiver.verified == [True] and headers["idempotency-key"] == f"{inc.id}:asset:page"
        assert (page["incident"], page["assets"], page["route"]) == (inc.id, ["pump-1"], "urgent")
        assert page["contributions"] == {"temp": 1.0} and "pump-1" in page["recommended_action"]

        async def undelivered() -> list[Any]:  # no reader in the platform: replayed by hand from the table
            return await p.store.driver.fetch("SELECT incident, channel, tenant, record FROM notification_dead_letters")

        deadline = time.monotonic() + 15
        while not await undelivered():
            assert time.monotonic() < deadline, "the failed delivery was not recorded"
            await asyncio.sleep(0.05)
        [dead] = await undelivered()
        record = json.loads(dead["record"])
        assert (dead["incident"], dead["channel"], dead["tenant"], record["attempts"]) == (inc.id, "broken", "acme", 2)
        assert json.loads(record["payload"])["incident"] == inc.id  # the exact payload, to replay by hand

        clock.advance(600_000)  # nobody acknowledged: level 1 escalates to "lead" only
        await p.alerts.tick()
        await eventually(lambda: len(receiver.requests) == 2, "the escalation on the lead webhook")
        esc_headers, _ = receiver.requests[1]
        assert esc_headers["idempotency-key"] == f"{inc.id}:asset:page:esc1"
        await p.alerts.aclose()  # let the notifications finish writing
        timeline = [(e.kind, e.detail) for e in await p.store.incident_timeline(inc.id)]
        kinds = [k for k, _ in timeline]
        assert kinds.count("notified") == 2 and kinds.count("notify-failed") == 1 and "escalated" in kinds
        assert "paged" in kinds and "not-paged" not in kinds and p.alerts.page_channels("urgent") == ["ops", "broken"]
        assert any("escalation level 1 sent to lead" in d for _, d in timeline)


def test_alerting_settings_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("channels:\n  - {type: pager, name: x}\n")
    with pytest.raises(ConfigError, match=r"alerting.yaml, line 2 \(channels\[0\]"):
        load_settings(path)
    path.write_text("channels:\n  - {type: webhook, name: a, url: 'http://x', secret: s}\n"
                    "lifecycle:\n  levels: [{after_s: 60, notify: [nobody]}]\n")
    with pytest.raises(ConfigError, match="escalation names nobody, which are not channels"):
        load_settings(path)
    path.write_text("lifecycle:\n  levels: [{after_s: 600, notify: [a]}, {after_s: 60, notify: [b]}]\n")
    with pytest.raises(ConfigError, match="must be later than the previous level"):
        load_settings(path)
