"""The platform's MQTT subscription: a persistent session whose messages are acknowledged only after commit.

paho-mqtt runs its network loop in its own thread and appends each message to a
bounded buffer; the asyncio side takes batches. Messages are QoS 1 and
``manual_ack=True``: the broker keeps a message until the pipeline has stored
it (or dead-lettered it) and calls :meth:`MqttSource.ack`. If the process dies
first, the broker redelivers to the same persistent session on reconnect, and
(device, seq) deduplication in the store makes the redelivery harmless.

With the embedded broker, ingest does not subscribe (``topics=()``): the broker
hands the platform's messages over in process and acknowledges them to devices
after commit (``edgeloop.ingest.handoff``); this connection only publishes
(gateway configuration, commands).

When the buffer is full the network thread waits, the socket stops being read,
and the broker queues for us: backpressure instead of loss.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import BrokerError
from edgeloop.identity.tls import TlsIdentity

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int


@dataclass(slots=True)
class SourceStats:
    received: int = 0
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    depth: int = 0
    capacity: int = 0


class MqttSource:
    """An async context manager yielding batches of inbound messages from ``topics``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: Sequence[str],
        client_id: str = "edgeloop-ingest",
        capacity: int = 50_000,
        clock: Clock | None = None,
        connect_timeout_s: float = 10.0,
        tls: TlsIdentity | None = None,
    ) -> None:
        self.host, self.port, self.topics = host, port, tuple(topics)
        self.client_id = client_id
        self.capacity = capacity
        self.clock = clock or SystemClock()
        self.connect_timeout_s = connect_timeout_s
        self.stats = SourceStats(capacity=capacity)
        self._buf: collections.deque[Inbound] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._waiting = False
        self._connected = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        if tls is not None:
            tls.apply(self._client)

    # -- paho thread ----------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s:%s refused: %s", self.host, self.port, reason)
            return
        self.stats.connected = True
        self.stats.connects += 1
        if self.topics:
            client.subscribe([(t, 1) for t in self.topics])
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.stats.connected = False
        self.stats.disconnects += 1
        if not self._closing:
            log.warning("MQTT connection to %s:%s lost (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            name = msg.topic
        except UnicodeDecodeError:  # raised here it would end paho's network thread: becomes a dead letter
            name = bytes(msg._topic).decode("utf-8", "backslashreplace")
        item = Inbound(name, bytes(msg.payload), msg.mid, msg.qos, self.clock.now_ms())
        with self._cond:
            while len(self._buf) >= self.capacity and not self._closing:
                self._cond.wait(0.5)
            self._buf.append(item)
            self.stats.received += 1
            wake = self._waiting
            self._waiting = False
        if wake and self._loop is not None:
            self._loop.call_soon_threadsafe(self._ready.set)

    # -- asyncio side ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        try:  # off the loop: a TLS handshake with a broker in this process needs the loop to answer
            await asyncio.to_thread(self._client.connect, self.host, self.port, keepalive=30)
        except OSError as exc:  # includes ssl.SSLError: refused certificate, wrong CA
            raise BrokerError(f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not await asyncio.to_thread(self._connected.wait, self.connect_timeout_s):
            self._client.loop_stop()
            raise BrokerError(f"the MQTT broker at {self.host}:{self.port} did not accept {self.client_id!r}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def batch(self, max_items: int = 5000, linger_s: float = 0.0) -> list[Inbound]:
        """Up to ``max_items`` waiting messages, oldest first; waits for the first.

        ``linger_s``: once the first message is there, wait this long for more (unless the batch is
        already full). A few milliseconds of latency buys much larger batches, and per-batch costs
        (commit, detector calls) are paid once per batch instead of once per message.
        """
        if linger_s > 0:
            await self._wait_any()
            if len(self._buf) < max_items:
                await asyncio.sleep(linger_s)
        while True:
            with self._cond:
                if self._buf:
                    n = min(max_items, len(self._buf))
                    out = [self._buf.popleft() for _ in range(n)]
                    self._cond.notify_all()
                    return out
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    async def _wait_any(self) -> None:
        while True:
            with self._cond:
                if self._buf:
                    return
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()

    def ack(self, items: Sequence[Inbound]) -> None:
        """Tell the broker these messages are safely handled; it will not send them again."""
        for item in items:
            if item.qos > 0:
                self._client.ack(item.mid, item.qos)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      timeout_s: float = 10.0) -> None:
        """Publish on the platform's own connection (configuration for a gateway, commands) and wait for the
        broker's acknowledgement (QoS 1); ``BrokerError`` if the broker is not connected or does not confirm."""
        if not self.stats.connected:
            raise BrokerError(f"not connected to the MQTT broker at {self.host}:{self.port}")

        def send() -> None:  # off the loop: the embedded broker answering the PUBACK runs on it
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerError(f"publishing on {topic} failed: {mqtt.error_string(info.rc)}")
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise BrokerError(f"the MQTT broker did not acknowledge the message on {topic} within {timeout_s:g} s")

        await asyncio.to_thread(send)

    @property
    def depth(self) -> int:
        return len(self._buf)
