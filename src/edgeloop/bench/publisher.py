"""Benchmark publishers: separate processes that publish canonical telemetry at QoS 1, as fast or as paced as asked.

Each publisher process owns one MQTT connection (like an edge gateway) and a
fixed set of devices, and drives paho-mqtt's loop itself in its one thread
(no network thread, so no GIL ping-pong inside the publisher). Flow control:

* the QoS 1 in-flight window of the connection (``window`` unacknowledged
  PUBLISHes; a PUBACK from the broker frees a slot), and
* an end-to-end backlog cap: the consumer under test (the platform, or the
  bare subscriber) counts what it has finished per publisher in a shared
  array; a publisher waits while ``published - finished > backlog_cap``. The
  broker acknowledges a publisher on receipt, so without this cap a publisher
  faster than the consumer would only grow the broker's queue (and take CPU
  the consumer needs on a small machine) instead of measuring anything.

Payloads are byte-for-byte what ``edgeloop.messages.encode(Telemetry(...))``
produces (checked at start-up), built from pre-encoded sample values so that
building a message costs next to nothing. Values come from the fleet
simulator (healthy pumps and motors at 1 Hz); timestamps advance 1 s per sample
from ``base_ts_ms``, so a device's data looks like a 1 Hz backfill.
The publisher records ``time.time()`` just before each PUBLISH, per (device, seq).
"""

from __future__ import annotations

import array
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.sim.fleet import CHANNELS, Fleet

SAMPLE_PERIOD_MS = 1000
_POOL_SAMPLES = 3600  # realistic rows per device, replayed forwards then backwards (no jumps)


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    index: int
    host: str
    port: int
    tenant: str
    devices: tuple[str, ...]  # ids, in the fleet's order
    fleet_devices: int  # size of the simulated fleet the ids come from
    fleet_seed: int
    samples_per_message: int
    base_ts_ms: int
    window: int  # QoS 1 in-flight PUBLISHes on this connection
    backlog_cap: int  # messages published but not yet finished by the consumer


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Publish until told to stop (or until every device reached ``limit_per_device`` messages)."""

    rate_msgs_s: float | None  # None: as fast as flow control allows
    limit_per_device: int | None = None


@dataclass(frozen=True, slots=True)
class RunReport:
    index: int
    first_seq: dict[str, int]  # device -> first seq published in this run
    publish_times: dict[str, bytes]  # device -> float64 time.time() per seq of this run
    messages: int
    samples: int
    seconds: float
    cpu_s: float  # this process's CPU time during the run


class Payloads:
    """Canonical Telemetry JSON for (device, seq), from pre-encoded realistic sample values."""

    def __init__(self, spec: PublisherSpec) -> None:
        self.spm = spec.samples_per_message
        self.base_ts = spec.base_ts_ms
        fleet = Fleet(devices=spec.fleet_devices, faulty=0, seed=spec.fleet_seed, start_ms=0,
                      duration_ms=_POOL_SAMPLES * SAMPLE_PERIOD_MS)
        chunks = {c.device_id: c for c in fleet.advance(_POOL_SAMPLES * SAMPLE_PERIOD_MS)}
        self.rows: dict[str, list[bytes]] = {}
        self.raw_rows: dict[str, list[dict[str, float | None]]] = {}
        for device in spec.devices:
            values = chunks[device].values.tolist()
            dicts = [{name: (None if math.isnan(v) else round(v, 4)) for name, v in zip(CHANNELS, row, strict=True)}
                     for row in values]
            self.raw_rows[device] = dicts
            self.rows[device] = [msgspec.json.encode(d) for d in dicts]
        self.period = 2 * _POOL_SAMPLES - 2

    def _row(self, k: int) -> int:
        r = k % self.period
        return r if r < _POOL_SAMPLES else self.period - r

    def build(self, device: str, seq: int) -> bytes:
        rows = self.rows[device]
        k0 = (seq - 1) * self.spm
        samples = b",".join(b'{"ts":%d,"values":%b}' % (self.base_ts + k * SAMPLE_PERIOD_MS, rows[self._row(k)])
                            for k in range(k0, k0 + self.spm))
        return b'{"device":"%b","seq":%d,"samples":[%b],"v":1}' % (device.encode(), seq, samples)

    def canonical(self, device: str, seq: int) -> bytes:
        """The same message through the schema's own encoder (slow; for the start-up check)."""
        k0 = (seq - 1) * self.spm
        samples = [Sample(ts=self.base_ts + k * SAMPLE_PERIOD_MS, values=self.raw_rows[device][self._row(k)])
                   for k in range(k0, k0 + self.spm)]
        return encode(Telemetry(device=device, seq=seq, samples=samples))


def publisher_main(spec: PublisherSpec, ctl: Connection, finished: Any) -> None:
    """Process entry point. ``finished`` is a shared int64 array: messages the consumer finished, per publisher."""
    payloads = Payloads(spec)
    for device in spec.devices:
        for seq in (1, 7200 // spec.samples_per_message + 3):
            if payloads.build(device, seq) != payloads.canonical(device, seq):
                raise AssertionError(f"bench payload for {device}/{seq} is not the canonical encoding")
    topics = {d: topic(spec.tenant, d, TopicKind.TELEMETRY) for d in spec.devices}
    next_seq = dict.fromkeys(spec.devices, 1)
    times = {d: array.array("d") for d in spec.devices}
    inflight = [0]

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        inflight[0] -= 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgeloop-bench-pub-{spec.index}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(spec.window)
    client.on_publish = on_publish
    client.connect(spec.host, spec.port, keepalive=60)
    while not client.is_connected():
        client.loop(timeout=0.05)
    ctl.send(("ready", spec.index))
    published_total = 0
    while True:
        cmd = ctl.recv()
        if not isinstance(cmd, RunCommand):
            break
        started, cpu0 = time.time(), time.process_time()
        first = dict(next_seq)
        marks = {d: len(times[d]) for d in spec.devices}
        n = _run(client, cmd, spec, ctl, finished, payloads, topics, next_seq, times, inflight, published_total)
        published_total += n
        while inflight[0] > 0:  # every message of this run acknowledged by the broker
            client.loop(timeout=0.01)
        ctl.send(RunReport(
            index=spec.index, first_seq=first,
            publish_times={d: times[d][marks[d]:].tobytes() for d in spec.devices},
            messages=n, samples=n * spec.samples_per_message, seconds=time.time() - started,
            cpu_s=time.process_time() - cpu0,
        ))
    client.disconnect()
    client.loop(timeout=0.1)


def _run(
    client: mqtt.Client, cmd: RunCommand, spec: PublisherSpec, ctl: Connection, finished: Any, payloads: Payloads,
    topics: dict[str, str], next_seq: dict[str, int], times: dict[str, array.array[float]], inflight: list[int],
    published_before: int,
) -> int:
    devices: Sequence[str] = spec.devices
    window, cap, me = spec.window, spec.backlog_cap, spec.index
    limit = cmd.limit_per_device
    interval = 1.0 / cmd.rate_msgs_s if cmd.rate_msgs_s else 0.0
    t0 = time.time()
    n = 0
    i = 0
    while True:
        if n % 64 == 0:
            if ctl.poll():
                ctl.recv()  # "stop"
                return n
            client.loop(timeout=0)  # take the PUBACKs that arrived
        if inflight[0] >= window or published_before + n - finished[me] > cap:
            client.loop(timeout=0.001)
            continue
        if interval:
            wait = t0 + n * interval - time.time()
            if wait > 0:
                client.loop(timeout=min(wait, 0.005))
                continue
        device = devices[i]
        i = (i + 1) % len(devices)
        seq = next_seq[device]
        if limit is not None and seq > limit:
            if all(next_seq[d] > limit for d in devices):
                return n
            continue
        payload = payloads.build(device, seq)
        times[device].append(time.time())
        client.publish(topics[device], payload, qos=1)
        inflight[0] += 1
        next_seq[device] = seq + 1
        n += 1
