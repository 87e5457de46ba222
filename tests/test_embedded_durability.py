"""Embedded mode keeps what it acknowledges: its broker sends a device's PUBACK only after ingest committed the
message, so a ``kill -9`` of ``edgeloop up`` in the middle of a flood loses nothing a device was told is safe."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.bench.embedded_kill import Settings, run
from edgeloop.broker import embedded as embedded_broker
from edgeloop.broker import free_port
from edgeloop.broker.embedded import EmbeddedBroker
from edgeloop.ingest.handoff import HandoffSource
from edgeloop.messages import TopicKind, topic


def test_kill_9_in_a_flood_loses_nothing_acknowledged_and_stores_nothing_twice(tmp_path: Path) -> None:
    settings = Settings(devices=3, seconds=2.0, window=50, samples_per_message=10, min_acked=1500)
    r = run(settings, tmp_path, progress=lambda _m: None)
    assert r["acked_before_kill"] >= 1500, r  # a real flood was acknowledged before the kill
    assert r["acked_but_lost"] == 0, r
    assert r["acked_total_not_stored"] == 0, r
    assert r["acked_total"] == r["published"], r  # every message got through after the restart
    assert r["stored"] == r["published"], r
    assert r["stored_twice"] == 0 and r["stored_never_published"] == 0, r
    # what was waiting at the kill was only what the devices' own windows hold
    assert r["unacked_at_kill"] <= settings.devices * settings.window, r
    assert r["exit_code_after_restart"] == 0, r


class _Device:
    """A plain paho client publishing QoS 1 telemetry on its own topic."""

    def __init__(self, port: int, device: str = "d1", window: int = 20) -> None:
        self.topic = topic("t1", device, TopicKind.TELEMETRY)
        self.gone = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(window)
        self.client.on_disconnect = lambda *_a: self.gone.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def publish(self, payload: bytes, where: str | None = None) -> mqtt.MQTTMessageInfo:
        return self.client.publish(where or self.topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Bounded polling of broker state that has no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_puback_waits_for_the_commit_and_other_topics_are_acknowledged_on_receipt() -> None:
    port = free_port()
    handoff = HandoffSource()
    async with EmbeddedBroker(port=port, handoff=handoff):
        device = await asyncio.to_thread(_Device, port)
        try:
            other = device.publish(b"x", where="somewhere/else")  # nothing of the platform's: acknowledged at once
            await asyncio.to_thread(other.wait_for_publish, 10)
            assert other.is_published()
            first = device.publish(b"one")
            await _until(lambda: handoff.depth == 1)
            second = device.publish(b"two")
            await _until(lambda: handoff.depth == 2)
            batch = await handoff.batch(10)
            assert [m.payload for m in batch] == [b"one", b"two"]
            assert not first.is_published() and not second.is_published()  # handed over, not committed
            assert handoff.unacknowledged == 2
            handoff.ack(batch[:1])  # the first is committed
            await asyncio.to_thread(first.wait_for_publish, 10)
            assert first.is_published() and not second.is_published()
            handoff.ack(batch[1:])
            await asyncio.to_thread(second.wait_for_publish, 10)
            assert handoff.unacknowledged == 0
        finally:
            await asyncio.to_thread(device.close)


async def test_a_client_ignoring_any_window_is_disconnected_unacknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_broker, "MAX_UNACKNOWLEDGED", 5)
    port = free_port()
    handoff = HandoffSource()
    async with EmbeddedBroker(port=port, handoff=handoff):
        device = await asyncio.to_thread(_Device, port, window=100)
        try:
            infos = [device.publish(b"%d" % i) for i in range(20)]
            await asyncio.to_thread(device.gone.wait, 10)
            assert device.gone.is_set()
            await _until(lambda: handoff.depth == 5)
            handoff.ack(await handoff.batch(10))  # committed after the client was gone: nobody to tell
            assert not any(i.is_published() for i in infos)
        finally:
            await asyncio.to_thread(device.close)
