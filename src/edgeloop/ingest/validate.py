"""Decode and validate one inbound payload: a telemetry chunk (an event, a heartbeat), or a dead letter saying why not.

Pure code: the registry and the time are passed in. Every refusal has a
stable ``code`` (for counting and alerting) and a human ``detail``.

Codes: ``oversized``, ``bad_topic``, ``not_json``, ``not_utf8``, ``bad_schema``,
``unsupported_version``, ``unknown_device``, ``wrong_tenant``,
``topic_mismatch``, ``unknown_channel``, ``non_finite``, ``duplicate_timestamp``,
``ts_future``, ``ts_past``, ``bad_text``, ``out_of_range`` (the last two, and the bounds
of events and heartbeats, are in ``edgeloop.ingest.bounds``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from edgeloop.assets import Device
from edgeloop.ingest.bounds import Limits, event_problem, heartbeat_problem
from edgeloop.messages import (
    SCHEMA_VERSION,
    DeviceEvent,
    Heartbeat,
    Telemetry,
    TopicKind,
    decode_event,
    decode_heartbeat,
    decode_telemetry,
    parse_topic,
)
from edgeloop.registry import Registry
from edgeloop.store.base import DeadLetter, GatewayHeartbeat, StoredEvent, TelemetryChunk

_Message = Telemetry | DeviceEvent | Heartbeat
_DECODERS: dict[TopicKind, Callable[[bytes], _Message]] = {
    TopicKind.TELEMETRY: decode_telemetry, TopicKind.EVENT: decode_event, TopicKind.HEALTH: decode_heartbeat,
}

_Reject = Callable[[str, str, str | None, str | None], DeadLetter]




@dataclass(frozen=True, slots=True)
class CheckedHeartbeat:
    """An accepted heartbeat: what the store keeps, and the message itself."""

    record: GatewayHeartbeat
    message: Heartbeat


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What ingest needs to know about a registered device."""

    tenant: str
    asset: str
    channels: tuple[str, ...]
    index: dict[str, int]


def _view(dev: Device, registry: Registry) -> DeviceView | None:
    profile = registry.profiles.get(dev.profile)
    if profile is None:
        return None
    names = profile.channel_names()
    return DeviceView(dev.tenant, dev.asset, names, {n: i for i, n in enumerate(names)})


class Validator:
    """Turns (topic, payload) into a ``TelemetryChunk`` in the profile's channel order, or a ``DeadLetter``."""

    def __init__(self, *, registry: Registry, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._devices: dict[str, DeviceView] = {}
        self.refresh(registry)

    def refresh(self, registry: Registry) -> None:
        """Rebuild the device lookup after the registry changed."""
        views: dict[str, DeviceView] = {}
        for dev in registry.devices.values():
            view = _view(dev, registry)
            if view is not None:
                views[dev.id] = view
        self._devices = views

    def put_device(self, device: Device, registry: Registry) -> None:
        """Add or update one device's lookup (O(1): provisioning registers devices one at a time)."""
        view = _view(device, registry)
        if view is None:
            self._devices.pop(device.id, None)
        else:
            self._devices[device.id] = view

    def device(self, device_id: str) -> DeviceView | None:
        return self._devices.get(device_id)

    def check(self, topic: str, payload: bytes, now_ms: int) -> TelemetryChunk | DeadLetter:
        got = self._envelope(topic, payload, now_ms, TopicKind.TELEMETRY)
        if isinstance(got, DeadLetter):
            return got
        msg, view, reject = got
        assert isinstance(msg, Telemetry)
        return self._columns(msg, view, now_ms, reject)

    def check_event(self, topic: str, payload: bytes, now_ms: int) -> StoredEvent | DeadLetter:
        """A device event (a fault code, a restart, an agent's ``gap``), checked like telemetry."""
        got = self._envelope(topic, payload, now_ms, TopicKind.EVENT)
        if isinstance(got, DeadLetter):
            return got
        msg, view, reject = got
        assert isinstance(msg, DeviceEvent)
        problem = event_problem(msg, self.limits)
        if problem is not None:
            return reject(*problem, msg.device, view.tenant)
        if msg.ts > now_ms + self.limits.max_future_ms:
            return reject("ts_future", f"event at {msg.ts} is ahead of the platform clock", msg.device, view.tenant)
        if msg.ts < now_ms - self.limits.max_past_ms:
            return reject("ts_past", f"event at {msg.ts} is older than the limit", msg.device, view.tenant)
        return StoredEvent(device=msg.device, tenant=view.tenant, ts_ms=msg.ts, kind=msg.kind,
                           severity=msg.severity.value, message=msg.message[:1000], data=dict(msg.data),
                           received_ms=now_ms)

    def check_heartbeat(self, topic: str, payload: bytes, now_ms: int) -> CheckedHeartbeat | DeadLetter:
        """A gateway's heartbeat: the gateway must be a registered device of the topic's tenant, publishing on
        its own ``health`` topic. Devices it lists that belong to another tenant are left out of its topology."""
        got = self._envelope(topic, payload, now_ms, TopicKind.HEALTH)
        if isinstance(got, DeadLetter):
            return got
        msg, view, reject = got
        assert isinstance(msg, Heartbeat)
        problem = heartbeat_problem(msg, self.limits)
        if problem is not None:
            return reject(*problem, msg.gateway, view.tenant)
        if msg.ts > now_ms + self.limits.max_future_ms:
            return reject("ts_future", f"heartbeat at {msg.ts} is ahead of the platform clock", msg.gateway,
                          view.tenant)
        devices = tuple(d for d in dict.fromkeys(msg.devices)
                        if (other := self._devices.get(d)) is None or other.tenant == view.tenant)
        record = GatewayHeartbeat(gateway=msg.gateway, tenant=view.tenant, ts_ms=msg.ts, received_ms=now_ms,
                                  heartbeat=payload.decode(), devices=devices, dropped_samples=msg.dropped_samples)
        return CheckedHeartbeat(record=record, message=msg)

    def _envelope(
        self, topic: str, payload: bytes, now_ms: int, expect: TopicKind,
    ) -> tuple[_Message, DeviceView, _Reject] | DeadLetter:
        """Topic, size, schema, version, device and tenant checks shared by telemetry, events and heartbeats."""

        def reject(code: str, detail: str, device: str | None, tenant: str | None) -> DeadLetter:
            return DeadLetter.of(received_ms=now_ms, topic=topic[:256], code=code, detail=detail, raw=payload,
                                 device=device, tenant=tenant)

        parsed = parse_topic(topic)
        if parsed is None or parsed[2] != expect:
            return reject("bad_topic", f"not a {expect.value} topic: {topic[:200]!r}", None, None)
        topic_tenant, topic_device, _ = parsed
        known = topic_device if topic_device in self._devices else None
        # A refusal belongs to the tenant of the device whose topic it came on (the broker authenticated that
        # device), never to the tenant the topic or the payload names: a device cannot write into another
        # tenant's dead letters. An unregistered sender's letters are the platform administrator's (no tenant).
        tenant = self._devices[topic_device].tenant if known else None
        if len(payload) > self.limits.max_payload_bytes:
            return reject("oversized", f"{len(payload)} bytes > limit {self.limits.max_payload_bytes}",
                          known, tenant)
        try:
            msg = _DECODERS[expect](payload)
        except msgspec.ValidationError as exc:
            return reject(_schema_or_version(payload, exc), str(exc), known, tenant)
        except msgspec.DecodeError as exc:
            return reject("not_json", str(exc), known, tenant)
        except UnicodeDecodeError as exc:  # msgspec raises it for invalid UTF-8 inside a string
            return reject("not_utf8", f"a string in the payload is not valid UTF-8 ({exc.reason})", known, tenant)
        if msg.v != SCHEMA_VERSION:
            return reject("unsupported_version", f"schema v{msg.v}; this platform speaks v{SCHEMA_VERSION}",
                          known, tenant)
        sender, role = (msg.gateway, "gateway") if isinstance(msg, Heartbeat) else (msg.device, "device")
        if sender != topic_device:
            return reject("topic_mismatch", f"payload {role} {sender!r} published on {topic_device!r}'s topic",
                          known, tenant)
        view = self._devices.get(sender)
        if view is None:
            return reject("unknown_device", f"{role} {sender!r} is not registered", None, tenant)
        if view.tenant != topic_tenant:
            return reject("wrong_tenant", f"{role} {sender!r} published under tenant {topic_tenant[:64]!r}", sender,
                          view.tenant)
        return msg, view, reject

    def _columns(self, msg: Telemetry, view: DeviceView, now_ms: int, reject: _Reject) -> TelemetryChunk | DeadLetter:
        names = view.channels
        allowed = view.index.keys()
        flat: list[float | None] = []
        for sample in msg.samples:
            vals = sample.values
            if not vals.keys() <= allowed:
                extra = sorted(vals.keys() - allowed)
                return reject("unknown_channel", f"channel {extra[0]!r} is not in the device profile "
                              f"({', '.join(names)})", msg.device, view.tenant)
            flat.extend([vals.get(name) for name in names])
        n = len(msg.samples)
        values = np.array(flat, dtype=np.float64).reshape(n, len(names))  # None (no valid reading) -> NaN
        ts = np.fromiter((sample.ts for sample in msg.samples), dtype=np.int64, count=n)
        if np.isinf(values).any():
            return reject("non_finite", "a value is infinite", msg.device, view.tenant)
        if n > 1:
            order = np.argsort(ts, kind="stable")
            ts, values = ts[order], values[order]
            if (np.diff(ts) == 0).any():
                return reject("duplicate_timestamp", "two samples in one message share a timestamp",
                              msg.device, view.tenant)
        if int(ts[-1]) > now_ms + self.limits.max_future_ms:
            return reject("ts_future", f"sample at {int(ts[-1])} is {(int(ts[-1]) - now_ms) / 1000:.0f} s ahead "
                          "of the platform clock", msg.device, view.tenant)
        if int(ts[0]) < now_ms - self.limits.max_past_ms:
            return reject("ts_past", f"sample at {int(ts[0])} is older than the "
                          f"{self.limits.max_past_ms // 86_400_000}-day limit", msg.device, view.tenant)
        return TelemetryChunk(device=msg.device, seq=msg.seq, channels=view.channels, ts=ts, values=values,
                              received_ms=now_ms, tenant=view.tenant, asset=view.asset)


def _schema_or_version(payload: bytes, exc: msgspec.ValidationError) -> str:
    """A schema error may really be a message from a newer schema version; say so when it is."""
    try:
        doc = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # nested too deep to inspect: still just a bad message
        return "bad_schema"
    if isinstance(doc, dict) and doc.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        return "unsupported_version"
    return "bad_schema"
