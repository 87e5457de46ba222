"""The uplink: journal -> MQTT QoS 1 -> broker acknowledgement -> out of the journal.

One MQTT connection per device (its own certificate under mutual TLS, as the ACL requires;
its retained ``status`` and last will, as presence expects). For each connected device:

* **live first**: messages journaled since the connection came up are sent at once;
* **backfill**: older messages (an outage's backlog) are replayed oldest first, at most
  ``backfill_per_s`` messages per second across all devices, beside the live stream;
* at most ``max_inflight`` unacknowledged publishes per device. A PUBACK removes the message
  from the journal; a lost connection makes every unacknowledged one eligible again (the
  platform's (device, seq) dedup absorbs the repeats).

Events in the journal's outbox (gaps, fail-safe actions, overrides, anomalies, configuration
changes) go out on the device's ``event`` topic and leave the outbox when acknowledged.

The gateway itself has a link too: its heartbeat goes out on its ``health`` topic, and it
subscribes to its ``config`` and ``model`` topics, handing each configuration push to ``on_config`` and each
model push to ``on_model``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.agent.config import UplinkSection
from edgeloop.agent.journal import Journal, OutEvent, Pending
from edgeloop.agent.refusals import RefusalLog, connack_cause, error_cause, identity_cause
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import TopicKind, topic

log = logging.getLogger(__name__)
T = TypeVar("T")
RunInJournal = Callable[[Callable[[Journal], T]], Awaitable[T]]


@dataclass
class UplinkStats:
    sent: int = 0
    acked: int = 0
    resent_after_reconnect: int = 0
    connects: int = 0
    disconnects: int = 0
    bytes_sent: int = 0
    bytes_acked: int = 0
    backfill_sent: int = 0
    events_sent: int = 0
    sync_lag_s: float | None = None  # sample time -> broker acknowledgement, for the last acknowledged message


@dataclass
class _Attempt:
    """One device's current connection attempt, as paho's threads see it."""

    up: bool = False  # a successful CONNACK came
    refused: bool = False  # a failed CONNACK came (already reported)
    error: str = ""  # the last error paho logged (a TLS alert from the broker arrives this way)


@dataclass
class _Link:
    device: str
    client: mqtt.Client
    connected: bool = False
    live_floor: int = 0  # journal ids above this arrived after the connection came up
    backlog_cursor: int = 0  # the last backlog id sent on this connection
    inflight: dict[int, tuple[str, int, int, int]] = field(default_factory=dict)  # mid -> (msg|event, id, bytes, ts)


class Uplink:
    def __init__(self, cfg: UplinkSection, *, tenant: str, gateway: str, journal: RunInJournal[Any],
                 keepalive_s: int = 10, on_config: Callable[[bytes], None] | None = None,
                 on_model: Callable[[bytes], None] | None = None,
                 on_command: Callable[[str, bytes], None] | None = None) -> None:
        self.cfg = cfg
        self.tenant = tenant
        self.gateway = gateway
        self.on_config = on_config
        self.on_model = on_model
        self.on_command = on_command
        self.journal = journal
        self.keepalive_s = keepalive_s
        self.stats = UplinkStats()
        self._links: dict[str, _Link] = {}
        self._events: collections.deque[tuple[str, str, int]] = collections.deque()  # (device, what, mid)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._lock = threading.Lock()
        self.refusals = RefusalLog()

    # -- paho threads -> loop -------------------------------------------------------------------
    def _signal(self, device: str, what: str, mid: int = 0) -> None:
        self._events.append((device, what, mid))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _link(self, device: str) -> _Link:
        link = self._links.get(device)
        if link is not None:
            return link
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, clean_session=True)
        status = topic(self.tenant, device, TopicKind.STATUS)
        client.will_set(status, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.max_inflight_messages_set(self.cfg.max_inflight)
        identity = TlsIdentity.from_dir(Path(self.cfg.tls), device) if self.cfg.tls else None
        if identity is not None:
            identity.apply(client)

        where = f"{self.cfg.host}:{self.cfg.port}"
        state = _Attempt()

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                state.refused = True
                self.refusals.refused(device, *connack_cause(reason))
                return
            state.up, state.error = True, ""
            self.refusals.connected(device)
            c.publish(status, b"online", qos=1, retain=True)
            if device == self.gateway:
                c.subscribe([(topic(self.tenant, device, TopicKind.CONFIG), 1),
                             (topic(self.tenant, device, TopicKind.MODEL), 1)])
            if self.on_command is not None:  # every device: a command names the machine it acts on
                c.subscribe(topic(self.tenant, device, TopicKind.CMD), 1)
            self._signal(device, "up")

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            if self._loop is None:
                return
            if msg.topic.endswith(f"/{TopicKind.CMD.value}"):
                if self.on_command is not None:
                    self._loop.call_soon_threadsafe(self.on_command, device, bytes(msg.payload))
                return
            handler = self.on_model if msg.topic.endswith(f"/{TopicKind.MODEL.value}") else self.on_config
            if handler is not None:
                self._loop.call_soon_threadsafe(handler, bytes(msg.payload))

        def on_connect_fail(_c: mqtt.Client, _u: Any) -> None:
            self.refusals.refused(device, *error_cause(sys.exc_info()[1], where))  # paho calls it in its except

        def on_log(_c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
            if level == mqtt.MQTT_LOG_ERR:
                state.error = buf

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not state.up and not state.refused:  # closed before any CONNACK: the broker refused the handshake
                self.refusals.refused(device, *(error_cause(state.error, where) if state.error
                                                else identity_cause(identity, where)))
            state.up, state.refused, state.error = False, False, ""
            self._signal(device, "down")

        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        client.on_log = on_log
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.on_publish = lambda _c, _u, mid, _rc, _p: self._signal(device, "ack", mid)
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.keepalive_s)
        client.loop_start()
        link = _Link(device, client)
        self._links[device] = link
        return link

    # -- the loop -------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    @property
    def connected(self) -> dict[str, bool]:
        return {d: link.connected for d, link in self._links.items()}

    def inflight(self) -> int:
        return sum(len(link.inflight) for link in self._links.values())

    def publish_health(self, payload: bytes) -> bool:
        """Send a heartbeat on the gateway's ``health`` topic; False when the gateway is not connected."""
        link = self._links.get(self.gateway)
        if link is None or not link.connected:
            return False
        info = link.client.publish(topic(self.tenant, self.gateway, TopicKind.HEALTH), payload, qos=1)
        return bool(info.rc == mqtt.MQTT_ERR_SUCCESS)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._link(self.gateway)
        try:
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
                # arrives as its timeout fires, and this loop would then never stop (seen in tests).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._wake.wait()
                self._wake.clear()
                await self._handle_events()
                for device in await self.journal(lambda j: j.devices()):
                    self._link(device)
                connected = {d for d, link in self._links.items() if link.connected}
                events = await self.journal(lambda j, c=connected: j.unsent_events(take_for=c))  # type: ignore[misc]
                for event in events:
                    self._link(event.device)
                await self._send(events)
        finally:
            self.close()

    async def _handle_events(self) -> None:
        acked: list[int] = []
        events_acked: list[int] = []
        while self._events:
            device, what, mid = self._events.popleft()
            link = self._links[device]
            if what == "ack":
                done = link.inflight.pop(mid, None)
                if done is None:
                    continue
                if done[0] == "msg":
                    acked.append(done[1])
                    self.stats.bytes_acked += done[2]
                    self.stats.sync_lag_s = max(0.0, time.time() - done[3] / 1000)
                else:
                    events_acked.append(done[1])
            elif what == "up":
                log.info("%s connected (%d unacknowledged resent as backlog)", device, len(link.inflight))
                link.connected = True
                link.live_floor = await self.journal(lambda j: j.max_id())
                link.backlog_cursor = 0
                self.stats.connects += 1
            elif what == "down":
                log.info("%s disconnected", device)
                if link.connected:
                    self.stats.disconnects += 1
                    self.stats.resent_after_reconnect += len(link.inflight)
                link.connected = False
                link.inflight.clear()
        if acked:
            self.stats.acked += len(acked)
            await self.journal(lambda j: j.ack(acked))
        if events_acked:
            self.stats.events_sent += len(events_acked)
            await self.journal(lambda j: j.events_sent(events_acked))

    def _take_tokens(self, want: int) -> int:
        now = time.monotonic()
        rate = self.cfg.backfill_per_s
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)  # at most 1 s of burst
        self._tokens_at = now
        got = min(want, int(self._tokens))
        self._tokens -= got
        return got

    async def _send(self, events: list[OutEvent]) -> None:
        for link in self._links.values():
            if not link.connected:
                continue
            sent_events = {what_id for what, what_id, *_ in link.inflight.values() if what == "event"}
            for event in events:
                if event.device == link.device and event.id not in sent_events:
                    self._publish_event(link, event)
            free = self.cfg.max_inflight - len(link.inflight)
            if free <= 0:
                continue
            busy = {i for what, i, *_ in link.inflight.values() if what == "msg"}
            live = await self.journal(lambda j, lk=link, b=busy, n=free: j.take(  # type: ignore[misc]
                lk.device, after_id=lk.live_floor, limit=n, exclude=b))
            for msg in live:
                self._publish(link, msg)
            free -= len(live)
            if free <= 0 or link.backlog_cursor >= link.live_floor:
                continue
            budget = self._take_tokens(free)
            if budget <= 0:
                continue
            backlog = await self.journal(lambda j, lk=link, b=busy, n=budget: j.take(  # type: ignore[misc]
                lk.device, after_id=lk.backlog_cursor, upto_id=lk.live_floor, limit=n, exclude=b))
            if not backlog:
                link.backlog_cursor = link.live_floor
                self._tokens += budget
                continue
            for msg in backlog:
                self._publish(link, msg)
                link.backlog_cursor = msg.id
            self.stats.backfill_sent += len(backlog)
            self._tokens += budget - len(backlog)

    def _publish(self, link: _Link, msg: Pending) -> None:
        info = link.client.publish(topic(self.tenant, link.device, TopicKind.TELEMETRY), msg.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return  # not connected after all; it stays in the journal
        link.inflight[info.mid] = ("msg", msg.id, len(msg.payload), msg.last_ts)
        self.stats.sent += 1
        self.stats.bytes_sent += len(msg.payload)

    def _publish_event(self, link: _Link, event: OutEvent) -> None:
        info = link.client.publish(topic(self.tenant, link.device, TopicKind.EVENT), event.payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            link.inflight[info.mid] = ("event", event.id, len(event.payload), 0)

    def close(self) -> None:
        for link in self._links.values():
            if link.connected:
                info = link.client.publish(topic(self.tenant, link.device, TopicKind.STATUS), b"offline", qos=1,
                                           retain=True)
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(1)
            link.client.disconnect()
            link.client.loop_stop()
        self._links.clear()
