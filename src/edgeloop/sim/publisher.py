"""Publishes a simulated fleet over MQTT, one client per device, exactly as real devices would.

Each device connects with its own client id, announces itself on its retained
``status`` topic (with a last will of ``offline``) and publishes telemetry at
QoS 1 on its own topic. Sequence numbers are derived from sample time
(``first sample ts // period``), so they increase across restarts and a
resent message keeps its (device, seq).

Simulated time is decoupled from the wall clock: ``run_until`` publishes as
fast as the broker accepts (accelerated replay), ``run_realtime`` keeps pace
with the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import BrokerError
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.sim.fleet import CHANNELS, DeviceChunk, Fleet

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublishStats:
    messages: int = 0
    samples: int = 0
    sim_ms: int = 0


class _DeviceClient:
    """One device's MQTT connection with a bounded number of unacknowledged publishes."""

    def __init__(
        self, *, device: str, tenant: str, host: str, port: int, max_unacked: int, tls: TlsIdentity | None = None
    ) -> None:
        self.device = device
        self.topic = topic(tenant, device, TopicKind.TELEMETRY)
        self.status_topic = topic(tenant, device, TopicKind.STATUS)
        self.host, self.port = host, port
        self.max_unacked = max_unacked
        self._window = threading.BoundedSemaphore(max_unacked)
        self._connected = threading.Event()
        self._uncounted: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{device}", clean_session=True)
        self.client.max_inflight_messages_set(max_unacked)
        self.client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        if tls is not None:
            tls.apply(self.client)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self._uncounted.add(client.publish(self.status_topic, b"online", qos=1, retain=True).mid)
            self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        if mid in self._uncounted:  # a status message: not part of the telemetry window
            self._uncounted.discard(mid)
        else:
            with contextlib.suppress(ValueError):  # never more releases than slots, even at shutdown
                self._window.release()

    def start(self, timeout_s: float) -> None:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:  # includes ssl.SSLError
            raise BrokerError(f"simulated device {self.device} cannot reach {self.host}:{self.port}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            raise BrokerError(f"simulated device {self.device} was not accepted by {self.host}:{self.port}")

    async def publish(self, payload: bytes) -> None:
        """Publish at QoS 1, waiting (off the event loop) while ``max_unacked`` publishes await their ack."""
        if not self._window.acquire(blocking=False):
            await asyncio.to_thread(self._window.acquire)
        self.client.publish(self.topic, payload, qos=1)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every publish has been acknowledged."""
        acquired = 0
        ok = True
        for _ in range(self.max_unacked):
            if not self._window.acquire(timeout=timeout_s):
                ok = False
                break
            acquired += 1
        for _ in range(acquired):
            self._window.release()
        return ok

    def stop(self, *, graceful: bool) -> None:
        if graceful:
            self.client.publish(self.status_topic, b"offline", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        # paho's network thread may end by itself between loop_stop's check and its join (AttributeError)
        with contextlib.suppress(AttributeError):
            self.client.loop_stop()


def chunk_messages(chunk: DeviceChunk, samples_per_message: int, period_ms: int) -> list[Telemetry]:
    """Split a device's samples into telemetry messages; NaN becomes null (no valid reading)."""
    out: list[Telemetry] = []
    names = CHANNELS
    rows = chunk.values.tolist()
    ts = chunk.ts.tolist()
    for start in range(0, len(ts), samples_per_message):
        samples = [
            Sample(ts=ts[i], values={n: (None if math.isnan(v) else round(v, 4)) for n, v in zip(names, rows[i],
                                                                                                 strict=True)})
            for i in range(start, min(start + samples_per_message, len(ts)))
        ]
        out.append(Telemetry(device=chunk.device_id, seq=ts[start] // period_ms, samples=samples))
    return out


class FleetPublisher:
    """``async with FleetPublisher(...) as pub: await pub.run_until(t)``."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        host: str,
        port: int,
        tenant: str,
        samples_per_message: int = 1,
        period_ms: int = 1000,
        max_unacked: int = 200,
        clock: Clock | None = None,
        wait_handled: Callable[[int], Awaitable[None]] | None = None,
        max_ahead: int = 2000,
        tls_for: Callable[[str], TlsIdentity] | None = None,
    ) -> None:
        self.fleet = fleet
        self.tenant = tenant
        self.samples_per_message = samples_per_message
        self.period_ms = period_ms
        self.clock = clock or SystemClock()
        self.stats = PublishStats()
        self.wait_handled = wait_handled
        self.max_ahead = max_ahead
        self.published_by_device: dict[str, int] = {d.device_id: 0 for d in fleet.devices}
        self._clients = {
            d.device_id: _DeviceClient(device=d.device_id, tenant=tenant, host=host, port=port,
                                       max_unacked=max_unacked, tls=tls_for(d.device_id) if tls_for else None)
            for d in fleet.devices
        }

    async def __aenter__(self) -> Self:
        await asyncio.gather(*(asyncio.to_thread(c.start, 10.0) for c in self._clients.values()))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(asyncio.to_thread(c.stop, graceful=exc_type is None)
                               for c in self._clients.values()))

    def skip_to(self, sim_ms: int) -> None:
        """Advance simulated time without publishing (resume after a restart)."""
        if sim_ms > self.fleet.now_ms:
            self.fleet.advance(sim_ms)

    async def _pace(self) -> None:
        """In accelerated replay, stay at most ``max_ahead`` messages ahead of what the platform has handled."""
        if self.wait_handled is not None and self.stats.messages > self.max_ahead:
            await self.wait_handled(self.stats.messages - self.max_ahead)

    async def publish_chunks(self, chunks: Sequence[DeviceChunk]) -> None:
        for chunk in chunks:
            await self._pace()
            client = self._clients[chunk.device_id]
            messages = chunk_messages(chunk, self.samples_per_message, self.period_ms)
            for message in messages:
                await client.publish(encode(message))
                self.stats.messages += 1
                self.stats.samples += len(message.samples)
                self.published_by_device[chunk.device_id] += len(message.samples)
        await asyncio.sleep(0)

    async def run_until(self, until_ms: int, *, step_ms: int = 60_000) -> None:
        """Publish simulated time up to ``until_ms`` as fast as the broker takes it."""
        while self.fleet.now_ms < until_ms:
            target = min(until_ms, self.fleet.now_ms + step_ms)
            await self.publish_chunks(self.fleet.advance(target))
            self.stats.sim_ms = self.fleet.now_ms

    async def run_realtime(self, *, tick_s: float = 1.0) -> None:
        """Keep simulated time equal to the wall clock, publishing every ``tick_s``; runs until cancelled."""
        while True:
            now = self.clock.now_ms()
            if now > self.fleet.now_ms:
                await self.publish_chunks(self.fleet.advance(now))
                self.stats.sim_ms = self.fleet.now_ms
            await asyncio.sleep(tick_s)

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until the broker has acknowledged every publish."""
        results = await asyncio.gather(*(asyncio.to_thread(c.drain, timeout_s) for c in self._clients.values()))
        return all(results)

