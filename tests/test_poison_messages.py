"""No message can stop ingest: poison messages through the real pipeline, on SQLite and on PostgreSQL.

NUL characters, invalid UTF-8, lone surrogates and oversized fields in every string of every message kind
(telemetry, events, heartbeats, statuses), interleaved with good messages in one batch: the good ones are
stored exactly once, the bad ones are dead letters with a reason, every message is acknowledged (nothing is
redelivered forever) and the ingest task keeps running. What validation lets through but the store itself
refuses costs that one message (``store_rejected``), never the batch; an unavailable store still delays the
batch without acknowledging it. The last tests run the whole platform over a real MQTT broker on PostgreSQL,
where one NUL character in an event used to end the process at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.errors import StoreError
from edgeloop.ingest import validate
from edgeloop.ingest.mqtt import Inbound
from edgeloop.ingest.pipeline import IngestPipeline
from edgeloop.ingest.validate import CheckedHeartbeat, Validator
from edgeloop.messages import TopicKind, topic
from edgeloop.store import DeadLetter, Store, TelemetryChunk
from edgeloop.store.base import RAW_DEAD_LETTER_BYTES, StoredEvent

NOW = 1_767_225_600_000
TENANT, DEVICE, GATEWAY = "acme", "d1", "gw"
TEL = topic(TENANT, DEVICE, TopicKind.TELEMETRY)
EVT = topic(TENANT, DEVICE, TopicKind.EVENT)
HEALTH = topic(TENANT, GATEWAY, TopicKind.HEALTH)
STATUS = topic(TENANT, GATEWAY, TopicKind.STATUS)
BAD_UTF8 = b"\xc3\x28"  # a two-byte sequence whose second byte is not a continuation byte


def tel(seq: int, values: dict[str, Any] | None = None, device: str = DEVICE) -> bytes:
    samples = [{"ts": NOW - 2000 + k, "values": values or {"temp": 20.0 + k, "flow": float(seq)}} for k in range(2)]
    return json.dumps({"v": 1, "device": device, "seq": seq, "samples": samples}).encode()


def event(kind: str, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "device": DEVICE, "ts": NOW - 1000, "kind": kind, **fields}).encode()


def heartbeat(tag: str, **changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "v": 1, "gateway": GATEWAY, "ts": NOW - 500, "interval_s": 10.0, "devices": [DEVICE], "journal_messages": 0,
        "journal_bytes": 0, "journal_samples": 0, "oldest_unsent_age_s": None, "sync_lag_s": 0.25,
        "dropped_samples": 0, "accepted_samples": 10, "uplink_connected": 1, "uplink_links": 1, "bytes_sent": 100,
        "bytes_raw": 200, "cpu_percent": 3.5, "rss_bytes": 50_000_000,
        "sources": {"plc": {"kind": "modbus", "state": "ok"}}, "config_version": 1, "agent_version": tag}
    doc.update(changes)
    return json.dumps(doc).encode()


def utf8_broken(payload: bytes) -> bytes:
    """``payload`` with its ``@@`` marker replaced by invalid UTF-8."""
    assert b"@@" in payload
    return payload.replace(b"@@", BAD_UTF8)


# (what, topic, payload, the dead letter's code)
BAD: list[tuple[str, str, bytes, str]] = [
    # telemetry: the device, the channel names, the topic, the size
    ("telemetry device with NUL", TEL, tel(1, device="d1\x00"), "bad_schema"),
    ("telemetry channel with NUL", TEL, tel(2, {"te\x00mp": 1.0}), "unknown_channel"),
    ("telemetry channel not UTF-8", TEL, utf8_broken(tel(3, {"@@": 1.0})), "not_utf8"),
    ("telemetry channel lone surrogate", TEL, tel(4, {"\ud800": 1.0}), "not_json"),
    ("telemetry channel too long", TEL, tel(5, {"t" * 5000: 1.0}), "bad_schema"),
    ("telemetry too large", TEL, tel(6)[:-1] + b" " * 300_000 + b"}", "oversized"),
    ("telemetry topic with NUL", topic(TENANT, "d1\x00", TopicKind.TELEMETRY), tel(7), "topic_mismatch"),
    ("telemetry topic lone surrogate", topic("acme\udc80", DEVICE, TopicKind.TELEMETRY), tel(8), "wrong_tenant"),
    # events: kind, message, data keys and values, the topic, the sizes
    ("event kind with NUL", EVT, event("re\x00start"), "bad_text"),
    ("event message with NUL", EVT, event("e1", message="pump\x00 tripped"), "bad_text"),
    ("event data key with NUL", EVT, event("e2", data={"co\x00de": 7}), "bad_text"),
    ("event data value with NUL", EVT, event("e3", data={"code": "E\x007"}), "bad_text"),
    ("event kind not UTF-8", EVT, utf8_broken(event("@@")), "not_utf8"),
    ("event message not UTF-8", EVT, utf8_broken(event("e4", message="@@")), "not_utf8"),
    ("event data key not UTF-8", EVT, utf8_broken(event("e5", data={"@@": 1})), "not_utf8"),
    ("event data value not UTF-8", EVT, utf8_broken(event("e6", data={"code": "@@"})), "not_utf8"),
    ("event message lone surrogate", EVT, event("e7", message="\udfff"), "not_json"),
    ("event kind too long", EVT, event("k" * 65), "bad_schema"),
    ("event data too many keys", EVT, event("e8", data={f"k{i}": i for i in range(65)}), "oversized"),
    ("event data key too long", EVT, event("e9", data={"k" * 65: 1}), "oversized"),
    ("event data too large", EVT, event("e10", data={"text": "x" * 9000}), "oversized"),
    ("event data nested", EVT, event("e11", data={"deep": {"deeper": [1]}}), "bad_schema"),
    ("event data infinite", EVT, event("e12", data={"x": "@INF@"}).replace(b'"@INF@"', b"1e999"), "bad_schema"),
    ("event topic with NUL", topic(TENANT, "d1\x00", TopicKind.EVENT), event("e13"), "topic_mismatch"),
    # heartbeats: every text, the counters, the gauges, the sizes
    ("heartbeat config message with NUL", HEALTH, heartbeat("h1", config_message="bad\x00"), "bad_text"),
    ("heartbeat agent version not UTF-8", HEALTH, utf8_broken(heartbeat("@@")), "not_utf8"),
    ("heartbeat source name with NUL", HEALTH, heartbeat("h2", sources={"p\x00lc": {"kind": "m", "state": "ok"}}),
     "bad_text"),
    ("heartbeat source error with NUL", HEALTH,
     heartbeat("h3", sources={"plc": {"kind": "modbus", "state": "failing", "error": "timeout\x00"}}), "bad_text"),
    ("heartbeat source state not UTF-8", HEALTH,
     utf8_broken(heartbeat("h4", sources={"plc": {"kind": "modbus", "state": "@@"}})), "not_utf8"),
    ("heartbeat config status with NUL", HEALTH, heartbeat("h5", config_status="applied\x00"), "bad_text"),
    ("heartbeat config message too long", HEALTH, heartbeat("h6", config_message="m" * 2000), "oversized"),
    ("heartbeat too many sources", HEALTH,
     heartbeat("h7", sources={f"s{i}": {"kind": "m", "state": "ok"} for i in range(300)}), "oversized"),
    ("heartbeat negative count", HEALTH, heartbeat("h8", journal_messages=-1), "out_of_range"),
    ("heartbeat absurd count", HEALTH, heartbeat("h9", dropped_samples=2**60), "out_of_range"),
    ("heartbeat count beyond 64 bits", HEALTH, heartbeat("h10", dropped_samples=2**70), "out_of_range"),
    ("heartbeat infinite CPU", HEALTH, heartbeat("h11", cpu_percent="@INF@").replace(b'"@INF@"', b"1e999"),
     "bad_schema"),
    ("heartbeat CPU beyond every core", HEALTH, heartbeat("h12", cpu_percent=1e6), "out_of_range"),
    ("heartbeat huge RSS", HEALTH, heartbeat("h13", rss_bytes=2**50), "out_of_range"),
    ("heartbeat negative lag", HEALTH, heartbeat("h14", sync_lag_s=-1.0), "out_of_range"),
]
GOOD: list[tuple[str, bytes]] = [
    (TEL, tel(100)), (EVT, event("restart", message="pump restarted", data={"code": "E7", "count": 2})),
    (HEALTH, heartbeat("good")), (TEL, tel(101)),
]
# A gateway's status payload is never stored as text: NUL or invalid UTF-8 there only means "not online".
STATUSES = [(STATUS, b"online\x00"), (STATUS, BAD_UTF8), (topic(TENANT, "gw\x00", TopicKind.STATUS), b"online")]


class QueueSource:
    """An inbound source fed by the test, recording what the pipeline acknowledges."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Inbound]] = asyncio.Queue()
        self.acked: list[Inbound] = []

    async def batch(self, max_items: int = 5000, linger_s: float = 0.0) -> list[Inbound]:
        return await self.queue.get()

    def ack(self, items: Sequence[Inbound]) -> None:
        self.acked.extend(items)

    @property
    def depth(self) -> int:
        return self.queue.qsize()


@dataclasses.dataclass
class Ingest:
    store: Store
    source: QueueSource
    pipeline: IngestPipeline
    task: asyncio.Task[None]

    async def send(self, messages: Sequence[tuple[str, bytes]]) -> list[Inbound]:
        """One batch through the running pipeline; returns once every message in it is handled."""
        batch = [Inbound(t, p, mid, 1, NOW) for mid, (t, p) in enumerate(messages, start=1)]
        counted = sum(1 for t, _ in messages if not t.endswith("/status"))
        target = self.pipeline.handled() + counted
        acked = len(self.source.acked)
        await self.source.queue.put(batch)
        await asyncio.wait_for(self.pipeline.wait_handled(target), 30)
        while len(self.source.acked) < acked + len(batch):  # acknowledged just after being handled
            assert not self.task.done(), self.task
            await asyncio.sleep(0)
        assert not self.task.done(), "the ingest task keeps running"
        return batch


async def seed(store: Store) -> None:
    await store.put_tenant(Tenant(id=TENANT))
    await store.put_site(Site(id="s", tenant=TENANT))
    await store.put_line(Line(id="l", site="s"))
    await store.put_asset(Asset(id="a", line="l"))
    await store.put_profile(DeviceProfile(name="p", channels=[ChannelSpec(name="temp"), ChannelSpec(name="flow")]))
    for dev in (DEVICE, GATEWAY):
        await store.put_device(Device(id=dev, tenant=TENANT, asset="a", profile="p"))


@contextlib.asynccontextmanager
async def running(store: Store, validator_type: type[Validator] = Validator) -> AsyncIterator[Ingest]:
    await seed(store)
    source = QueueSource()
    validator = validator_type(registry=await store.load_registry())
    pipeline = IngestPipeline(source=source, store=store, validator=validator, clock=ManualClock(NOW))
    task = asyncio.create_task(pipeline.run(), name="ingest")
    try:
        yield Ingest(store, source, pipeline, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def letters_by_raw(store: Store) -> dict[bytes, DeadLetter]:
    letters = await store.list_dead_letters(limit=10_000)
    by_raw = {d.raw: d for d in letters}
    assert len(by_raw) == len(letters), "one dead letter per refused message"
    return by_raw


async def test_poison_in_every_field_of_every_kind_costs_only_itself(store: Store) -> None:
    prefixes = {p[:RAW_DEAD_LETTER_BYTES] for _, _, p, _ in BAD}
    assert len(prefixes) == len(BAD), "each bad payload is recognisable by its dead letter"
    messages: list[tuple[str, bytes]] = []
    for i, (_, t, p, _) in enumerate(BAD):  # good ones between bad ones, statuses among them
        messages.append((t, p))
        if i % 10 == 0:
            messages.append(GOOD[i // 10])
        if i % 13 == 0:
            messages.append(STATUSES[i // 13])
    async with running(store) as ingest:
        batch = await ingest.send(messages)

        assert ingest.source.acked == batch, "every message is acknowledged: none is redelivered"
        assert await store.telemetry_counts(DEVICE) == (2, 4), "the good telemetry is stored, once"
        events = await store.list_events(device=DEVICE)
        assert [(e.kind, e.message, e.data) for e in events] == [("restart", "pump restarted", {"code": "E7",
                                                                                                  "count": 2})]
        gateway = await store.get_gateway(GATEWAY)
        assert gateway is not None and json.loads(gateway.heartbeat)["agent_version"] == "good"
        by_raw = await letters_by_raw(store)
        assert len(by_raw) == len(BAD)
        for what, _, payload, code in BAD:
            letter = by_raw[payload[:RAW_DEAD_LETTER_BYTES]]
            assert (what, letter.code) == (what, code), letter.detail
            assert letter.detail, what
            assert letter.size == len(payload)
        mine = [d for d in by_raw.values() if d.device is not None]
        assert mine and all(d.tenant == TENANT for d in mine), "a refusal belongs to the sender's tenant"
        s = ingest.pipeline.stats
        assert s.dead_letters == len(BAD) and s.dead_by_code["internal_error"] == 0

        # The pipeline goes on: the same poison again (a redelivery) costs the same, good data still flows.
        await ingest.send([(TEL, tel(102)), *[(t, p) for _, t, p, _ in BAD[:5]], (TEL, tel(103))])
        assert await store.telemetry_counts(DEVICE) == (4, 8)


async def test_a_dead_letter_quoting_poison_is_still_stored(store: Store) -> None:
    """A dead letter's topic and detail may quote what was refused: they are made storable (U+FFFD)."""
    poisoned = topic(TENANT, "d\x00\udc80", TopicKind.EVENT)
    async with running(store) as ingest:
        await ingest.send([(poisoned, event("e")), (TEL, tel(1))])
        [letter] = await store.list_dead_letters()
        assert letter.topic == topic(TENANT, "d\ufffd\ufffd", TopicKind.EVENT)
        assert letter.code == "topic_mismatch"
        assert await store.telemetry_counts(DEVICE) == (1, 2)


POISON = "POISON"


class LaxValidator(Validator):
    """Lets through, in a message marked ``POISON``, what only the store itself refuses: a lone surrogate in
    an event's kind or in a device id, a count beyond 64 bits in a heartbeat (both backends refuse all three)."""

    def check(self, topic: str, payload: bytes, now_ms: int) -> TelemetryChunk | DeadLetter:
        got = super().check(topic, payload, now_ms)
        if isinstance(got, TelemetryChunk) and got.seq == 666:
            return dataclasses.replace(got, device="d1\ud800")
        return got

    def check_event(self, topic: str, payload: bytes, now_ms: int) -> StoredEvent | DeadLetter:
        got = super().check_event(topic, payload, now_ms)
        if isinstance(got, StoredEvent) and got.kind == POISON:
            return dataclasses.replace(got, kind="kind\ud800")
        return got

    def check_heartbeat(self, topic: str, payload: bytes, now_ms: int) -> CheckedHeartbeat | DeadLetter:
        got = super().check_heartbeat(topic, payload, now_ms)
        if isinstance(got, CheckedHeartbeat) and got.message.agent_version == POISON:
            return dataclasses.replace(got, record=dataclasses.replace(got.record, dropped_samples=2**70))
        return got


async def test_what_the_store_refuses_is_isolated_per_message(store: Store) -> None:
    refused = [(TEL, tel(666)), (EVT, event(POISON)), (HEALTH, heartbeat(POISON))]
    messages = [(TEL, tel(1)), refused[0], (EVT, event("ok-1")), refused[1], (HEALTH, heartbeat("fine")),
                refused[2], (EVT, event("ok-2")), (TEL, tel(2))]
    async with running(store, LaxValidator) as ingest:
        batch = await ingest.send(messages)

        assert ingest.source.acked == batch, "refused messages are acknowledged too: never redelivered"
        assert await store.telemetry_counts(DEVICE) == (2, 4)
        assert sorted(e.kind for e in await store.list_events(device=DEVICE)) == ["ok-1", "ok-2"]
        gateway = await store.get_gateway(GATEWAY)
        assert gateway is not None and json.loads(gateway.heartbeat)["agent_version"] == "fine"
        by_raw = await letters_by_raw(store)
        assert set(by_raw) == {p for _, p in refused}
        for letter in by_raw.values():
            assert letter.code == "store_rejected"
            assert letter.detail.startswith("the store refused this ")
            assert letter.tenant == TENANT
        assert {d.device for d in by_raw.values()} == {"d1\ufffd", DEVICE, GATEWAY}
        s = ingest.pipeline.stats
        assert s.dead_by_code["store_rejected"] == 3
        assert (s.stored_messages, s.events, s.heartbeats) == (2, 2, 1)

        await ingest.send([(TEL, tel(3)), (EVT, event(POISON)), (TEL, tel(4))])  # and again, later
        assert await store.telemetry_counts(DEVICE) == (4, 8)


async def test_an_error_the_backend_does_not_translate_costs_one_message(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A driver error that escapes translation (a bug) is isolated like a refusal, logged once with its
    traceback, and ingest goes on."""
    write_events = store.write_events

    async def buggy(events: Sequence[StoredEvent]) -> int:
        if any(e.kind == POISON for e in events):
            raise RuntimeError("driver bug")
        return await write_events(events)

    monkeypatch.setattr(store, "write_events", buggy)
    async with running(store) as ingest:
        await ingest.send([(EVT, event("ok-1")), (EVT, event(POISON)), (EVT, event("ok-2")), (TEL, tel(1))])
        await ingest.send([(EVT, event(POISON, message="again")), (EVT, event("ok-3"))])

    assert sorted(e.kind for e in await store.list_events(device=DEVICE)) == ["ok-1", "ok-2", "ok-3"]
    letters = await store.list_dead_letters()
    assert [(d.code, "RuntimeError: driver bug" in d.detail) for d in letters] == [("store_rejected", True)] * 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "the first occurrence with its traceback, the repeat rate-limited"


async def test_an_unavailable_store_delays_the_batch_without_acknowledging_it(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transient failure is not the data's fault: nothing is dead-lettered, nothing acknowledged until
    stored, and the retry stores each message once."""
    write_chunks = store.write_chunks
    outage = asyncio.Event()
    failures = 0

    async def down_once(chunks: Sequence[TelemetryChunk]) -> list[bool]:
        nonlocal failures
        if failures == 0:
            failures += 1
            outage.set()
            raise StoreError("connection lost")
        return await write_chunks(chunks)

    monkeypatch.setattr(store, "write_chunks", down_once)
    async with running(store) as ingest:
        sending = asyncio.create_task(ingest.send([(TEL, tel(1)), (EVT, event("e")), (TEL, tel(2))]))
        await outage.wait()
        assert ingest.source.acked == [], "not acknowledged while the store is unavailable"
        batch = await sending
        assert ingest.source.acked == batch
        assert ingest.pipeline.stats.store_retries == 1
    assert await store.telemetry_counts(DEVICE) == (2, 4)
    assert [e.kind for e in await store.list_events(device=DEVICE)] == ["e"]
    assert await store.list_dead_letters() == []


# -- the whole platform over a real MQTT broker -------------------------------------------------------------


async def _publish(port: int, messages: Sequence[tuple[str, bytes]]) -> None:
    def run() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="poisoner")
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            for info in [client.publish(t, p, qos=1) for t, p in messages]:
                info.wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

    await asyncio.to_thread(run)


async def _register(platform: Platform) -> None:
    reg = platform.registry
    await reg.put_tenant(Tenant(id=TENANT))
    await reg.put_site(Site(id="s", tenant=TENANT))
    await reg.put_line(Line(id="l", site="s"))
    await reg.put_asset(Asset(id="a", line="l"))
    await reg.put_profile(DeviceProfile(name="p", channels=[ChannelSpec(name="temp"), ChannelSpec(name="flow")]))
    await reg.put_device(Device(id=DEVICE, tenant=TENANT, asset="a", profile="p"))


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    """Bounded polling for data travelling through a broker (no event to wait on across the process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _now_tel(seq: int) -> bytes:
    samples = [{"ts": _wall_ms(), "values": {"temp": 1.0}}]
    return json.dumps({"v": 1, "device": DEVICE, "seq": seq, "samples": samples}).encode()


def _now_event(kind: str) -> bytes:
    return json.dumps({"v": 1, "device": DEVICE, "ts": _wall_ms(), "kind": kind, "message": "m"}).encode()


@pytest.mark.postgres
async def test_a_nul_event_over_mqtt_on_postgres_does_not_stop_the_platform(tmp_path: Path, pg_dsn: str) -> None:
    """The reproduced finding: a device event whose kind and message hold a NUL character, published through
    the embedded broker to a platform on PostgreSQL. It becomes a dead letter; the platform keeps ingesting."""
    port = free_port()
    async with Platform(PlatformConfig(data_dir=tmp_path / "data", store_url=pg_dsn, mqtt_port=port,
                                       http_port=None)) as platform:
        await _register(platform)
        await _publish(port, [(EVT, _now_event("fault\x00")), (TEL, _now_tel(1)),
                              (EVT, json.dumps({"v": 1, "device": DEVICE, "ts": _wall_ms(), "kind": "k",
                                                "message": "\x00"}).encode()), (TEL, _now_tel(2))])
        await asyncio.wait_for(platform.pipeline.wait_handled(4), 30)
        assert platform.alive, "the platform keeps running"
        assert await platform.store.telemetry_counts(DEVICE) == (2, 2)
        assert [d.code for d in await platform.store.list_dead_letters()] == ["bad_text", "bad_text"]

        await _publish(port, [(TEL, _now_tel(3)), (EVT, _now_event("restart"))])
        await asyncio.wait_for(platform.pipeline.wait_handled(6), 30)
        assert await platform.store.telemetry_counts(DEVICE) == (3, 3), "and afterwards"
        assert [e.kind for e in await platform.store.list_events(device=DEVICE)] == ["restart"]
        assert platform.alive


@pytest.mark.postgres
@pytest.mark.mosquitto
async def test_a_nul_event_the_store_refuses_is_acknowledged_and_never_redelivered(
    tmp_path: Path, pg_dsn: str, mosquitto: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Mosquitto (acknowledged after commit) and validation of text switched off, the NUL reaches
    PostgreSQL, which refuses it: that message is dead-lettered and acknowledged, so a restart does not get
    it again (before, the process died at every start on the redelivered message)."""
    monkeypatch.setattr(validate, "event_problem", lambda msg, limits: None)
    config = PlatformConfig(data_dir=tmp_path / "data", store_url=pg_dsn, mqtt_port=mosquitto,
                            embedded_broker=False, http_port=None)
    async with Platform(config) as platform:
        await _register(platform)
        await _publish(mosquitto, [(EVT, _now_event("fault\x00")), (TEL, _now_tel(1))])
        await asyncio.wait_for(platform.pipeline.wait_handled(2), 30)
        assert platform.alive
        [letter] = await platform.store.list_dead_letters()
        assert letter.code == "store_rejected" and "PostgreSQL refused" in letter.detail

    async with Platform(config) as again:  # the same persistent session: a redelivery would come first
        await _publish(mosquitto, [(TEL, _now_tel(2))])

        async def stored() -> bool:
            return (await again.store.telemetry_counts(DEVICE))[0] == 2

        await _until(stored, "the new message stored")
        assert again.alive
        assert len(await again.store.list_dead_letters()) == 1, "the refused event was not redelivered"
        assert again.pipeline.stats.dead_letters == 0


async def test_backends_translate_what_they_refuse_and_stay_usable(store: Store) -> None:
    """``StoreRejected`` for data the store refuses (on both backends: a lone surrogate, a count beyond 64 bits),
    and the store takes the next write (SQLite used to leave the refused write's transaction open)."""
    from edgeloop.errors import StoreRejected
    from edgeloop.store.base import GatewayHeartbeat

    await seed(store)
    bad_event = StoredEvent(device=DEVICE, tenant=TENANT, ts_ms=NOW, kind="k\ud800", severity="info", message="",
                            data={}, received_ms=NOW)
    with pytest.raises(StoreRejected):
        await store.write_events([bad_event])
    beat = GatewayHeartbeat(gateway=GATEWAY, tenant=TENANT, ts_ms=NOW, received_ms=NOW, heartbeat="{}", devices=(),
                            dropped_samples=2**70)
    with pytest.raises(StoreRejected):
        await store.write_heartbeats([beat])
    with pytest.raises(StoreRejected):
        await store.write_dead_letters([dataclasses.replace(
            DeadLetter.of(received_ms=NOW, topic="t", code="c", detail="d", raw=b""), detail="\ud800")])
    assert await store.write_events([dataclasses.replace(bad_event, kind="k")]) == 1
    await store.write_heartbeats([dataclasses.replace(beat, dropped_samples=1)])
    assert await store.get_gateway(GATEWAY) is not None


async def test_finding_the_refused_message_takes_a_few_writes_not_one_per_message(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each write is a commit (an fsync on SQLite): a refused message in a batch of 500 is found by halving,
    and the other 499 are stored in a handful of writes."""
    from edgeloop.errors import StoreRejected

    write_chunks = store.write_chunks
    calls: list[int] = []

    async def refusing(chunks: Sequence[TelemetryChunk]) -> list[bool]:
        calls.append(len(chunks))
        if any(c.seq == 666 for c in chunks):
            raise StoreRejected("refused: seq 666")
        return await write_chunks(chunks)

    monkeypatch.setattr(store, "write_chunks", refusing)
    seqs = [s for s in range(1000, 1500) if s != 1250] + [666]
    seqs.insert(250, seqs.pop())
    async with running(store) as ingest:
        await ingest.send([(TEL, tel(seq)) for seq in seqs])
    assert await store.telemetry_counts(DEVICE) == (499, 998)
    assert [d.code for d in await store.list_dead_letters()] == ["store_rejected"]
    assert len(calls) <= 2 * 9 + 2, calls  # about two writes per halving of 500


@pytest.mark.parametrize(("raised", "refused"), [
    ("CharacterNotInRepertoireError", True),  # a NUL character in text
    ("UntranslatableCharacterError", True),  # \u0000 in json(b)
    ("NumericValueOutOfRangeError", True),
    ("NotNullViolationError", True),
    ("ConnectionDoesNotExistError", False),  # the connection was lost: retry later
    ("AdminShutdownError", False),
    ("DiskFullError", False),
    ("DeadlockDetectedError", False),
    ("InterfaceError", False),  # e.g. the pool is closing
])
def test_postgres_errors_are_refusals_or_outages_by_their_class(raised: str, refused: bool) -> None:
    """Data errors (SQLSTATE classes 22, 23) are refusals of that data; everything else is the store's state."""
    import asyncpg

    from edgeloop.errors import StoreRejected
    from edgeloop.store.postgres import _translated

    with pytest.raises(StoreError) as caught, _translated():
        raise getattr(asyncpg, raised)("boom")
    assert isinstance(caught.value, StoreRejected) is refused
    with pytest.raises(StoreError) as lost, _translated():
        raise ConnectionResetError("reset by peer")
    assert not isinstance(lost.value, StoreRejected)


@pytest.mark.parametrize(("raised", "refused"), [
    (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), True),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
    (OverflowError("Python int too large to convert to SQLite INTEGER"), True),
    (sqlite3.OperationalError("database is locked"), False),
    (sqlite3.OperationalError("disk I/O error"), False),
])
async def test_sqlite_errors_are_refusals_or_outages_by_their_kind(tmp_path: Path, raised: Exception,
                                                                   refused: bool) -> None:
    from edgeloop.errors import StoreRejected
    from edgeloop.store.sqlite import SQLiteDriver

    def fail(_db: sqlite3.Connection) -> None:
        raise raised

    sqlite = SQLiteDriver(path=tmp_path / "x.db")
    await sqlite.open()
    try:
        with pytest.raises(StoreError) as caught:
            await sqlite._run(fail)
    finally:
        await sqlite.close()
    assert isinstance(caught.value, StoreRejected) is refused


def test_a_topic_that_is_not_utf8_becomes_a_message_not_the_end_of_the_network_thread() -> None:
    """paho raises UnicodeDecodeError reading such a topic; raised in the callback it would end the thread that
    reads the broker, and ingest would silently receive nothing more."""
    from edgeloop.ingest.mqtt import MqttSource

    source = MqttSource(host="127.0.0.1", port=1, topics=["edgeloop/v1/+/+/telemetry"])
    msg = mqtt.MQTTMessage(mid=7, topic=b"edgeloop/v1/acme/d\xff1/telemetry")
    msg.payload = tel(1)
    msg.qos = 1
    source._on_message(source._client, None, msg)
    [item] = list(source._buf)
    assert item.topic == "edgeloop/v1/acme/d\\xff1/telemetry" and item.payload == tel(1)
