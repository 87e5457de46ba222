"""The HTTP API against a real in-process platform (SQLite store, embedded broker, real MQTT publishes)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop import __version__
from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.messages import ID_PATTERN, Alert, Sample, Severity, Telemetry, TopicKind, encode, topic
from tests.support import free_port, open_alert

API = "/api/v1"
TENANT, SITE, LINE, ASSET, PROFILE, DEVICE = "acme", "plant-1", "line-a", "pump-7", "vib3", "dev-7"
CHANNELS = ("vib_x", "temp")
ENTITIES: list[tuple[str, dict[str, Any]]] = [  # parents before children
    ("tenants", {"id": TENANT, "name": "Acme Corp"}),
    ("sites", {"id": SITE, "tenant": TENANT, "name": "Plant 1"}),
    ("lines", {"id": LINE, "site": SITE, "name": "Line A"}),
    ("assets", {"id": ASSET, "line": LINE, "name": "Pump 7", "kind": "pump", "criticality": 4}),
    ("profiles", {"name": PROFILE, "sample_rate_hz": 1.0,
                  "channels": [{"name": "vib_x", "unit": "mm/s", "min": 0.0, "max": 50.0}, {"name": "temp"}]}),
    ("devices", {"id": DEVICE, "tenant": TENANT, "asset": ASSET, "profile": PROFILE, "name": "Sensor 7"}),
]


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    cfg = PlatformConfig(data_dir=tmp_path, embedded_broker=True, mqtt_port=free_port(), http_port=None)
    async with Platform(cfg) as p:
        yield p


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform.services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def seed(client: httpx.AsyncClient) -> None:
    for kind, body in ENTITIES:
        resp = await client.post(f"{API}/{kind}", json=body)
        assert resp.status_code == 201, resp.text


def _publish_blocking(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pytest-device", clean_session=True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for name, payload in messages:  # in order, each acknowledged by the broker (QoS 1)
            client.publish(name, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


async def publish_all(platform: Platform, messages: list[tuple[str, bytes]]) -> None:
    """Publish with a real MQTT client in a thread: the embedded broker runs on this test's event loop."""
    await asyncio.to_thread(_publish_blocking, platform.config.mqtt_port, messages)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- platform ----------------------------------------------------------------------------------------------


async def test_health(platform: Platform, client: httpx.AsyncClient) -> None:
    resp = await client.get(f"{API}/health")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["store"] == platform.store.backend == "sqlite"
    assert body["mqtt_connected"] is True  # the ingest client is subscribed to the embedded broker


async def test_openapi_document_has_routes_and_msgspec_schemas(client: httpx.AsyncClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "EdgeLoop"
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/health", "get"), ("/api/v1/stats", "get"), ("/api/v1/assets", "get"), ("/api/v1/assets", "post"),
        ("/api/v1/devices", "post"), ("/api/v1/devices/{device_id}", "get"), ("/api/v1/devices/{device_id}", "put"),
        ("/api/v1/devices/{device_id}/telemetry", "get"), ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/{alert_id}/acknowledge", "post"), ("/api/v1/alerts/{alert_id}/resolve", "post"),
        ("/api/v1/dead-letters", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from the OpenAPI document"
    assert "/" not in paths  # the dashboard page is not part of the API

    schemas = doc["components"]["schemas"]
    for name in ("Tenant", "Site", "Line", "Asset", "DeviceProfile", "Device", "ChannelSpec", "ActorBody"):
        assert name in schemas, f"schema {name} missing"
    device = schemas["Device"]
    assert set(device["required"]) == {"id", "tenant", "asset", "profile"}
    assert device["properties"]["id"]["pattern"] == ID_PATTERN
    assert schemas["Asset"]["properties"]["criticality"]["minimum"] == 1
    assert schemas["Asset"]["properties"]["criticality"]["maximum"] == 5

    body_ref = paths["/api/v1/devices"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/Device"
    ack = paths["/api/v1/alerts/{alert_id}/acknowledge"]["post"]["requestBody"]["content"]["application/json"]
    assert ack["schema"]["$ref"] == "#/components/schemas/ActorBody"

    def refs(node: Any) -> list[str]:
        found: list[str] = []
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                found.append(node["$ref"])
            children = list(node.values())
        else:
            children = list(node) if isinstance(node, list) else []
        for child in children:
            found += refs(child)
        return found

    all_refs = refs(doc)
    assert "#/components/schemas/Device" in all_refs
    dangling = {r for r in all_refs if r.removeprefix("#/components/schemas/") not in schemas}
    assert not dangling, f"$refs that /docs cannot resolve: {dangling}"


# -- registry ------------------------------------------------------------------------------------------------


async def test_create_hierarchy_then_list_it(platform: Platform, client: httpx.AsyncClient) -> None:
    for kind, body in ENTITIES:
        resp = await client.post(f"{API}/{kind}", json=body)
        assert resp.status_code == 201, resp.text
        echoed = resp.json()
        assert {k: echoed[k] for k in body if k != "channels"} == {k: v for k, v in body.items() if k != "channels"}

    for kind, body in ENTITIES:
        resp = await client.get(f"{API}/{kind}")
        assert resp.status_code == 200
        key = "name" if kind == "profiles" else "id"
        listed = {item[key]: item for item in resp.json()}
        assert body[key] in listed, f"{kind}: {listed}"

    assets = (await client.get(f"{API}/assets")).json()
    assert len(assets) == 1
    a = assets[0]
    assert (a["id"], a["line"], a["site"], a["tenant"], a["kind"], a["criticality"]) == (
        ASSET, LINE, SITE, TENANT, "pump", 4)
    assert a["devices"] == [DEVICE]
    # a device that has never sent a sample: "no data yet", neither offline nor in alert
    assert (a["status"], a["online"], a["open_alerts"], a["last_seen_ms"]) == ("no_data", False, 0, None)

    profile = (await client.get(f"{API}/profiles")).json()[0]
    assert [c["name"] for c in profile["channels"]] == list(CHANNELS)
    assert profile["channels"][0]["unit"] == "mm/s"

    device = (await client.get(f"{API}/devices/{DEVICE}")).json()
    assert (device["id"], device["tenant"], device["asset"], device["profile"]) == (DEVICE, TENANT, ASSET, PROFILE)
    assert device["online"] is False
    assert device["last_seen_ms"] is None
    assert device["dead_letters"] == 0
    assert (device["stored_messages"], device["stored_samples"]) == (0, 0)
    assert device["sample_rate_hz"] == 1.0
    assert [c["name"] for c in device["channels"]] == list(CHANNELS)

    # Persisted, not only in memory: a fresh load of the store sees the same registry.
    reg = await platform.store.load_registry()
    assert set(reg.devices) == {DEVICE}
    assert reg.tenant_of("asset", ASSET) == TENANT


async def test_post_creates_and_put_replaces(client: httpx.AsyncClient) -> None:
    await seed(client)
    changed = {"id": ASSET, "line": LINE, "name": "Pump 7b", "criticality": 5}
    again = await client.post(f"{API}/assets", json=changed)
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    assert [a["name"] for a in (await client.get(f"{API}/assets")).json()] == ["Pump 7"]
    resp = await client.put(f"{API}/assets/{ASSET}", json=changed)
    assert resp.status_code == 200
    assets = (await client.get(f"{API}/assets")).json()
    assert [(a["id"], a["name"], a["criticality"]) for a in assets] == [(ASSET, "Pump 7b", 5)]
    # PUT replaces only what exists, under the id in its path.
    assert (await client.put(f"{API}/assets/pump-8", json={**changed, "id": "pump-8"})).status_code == 404
    assert (await client.put(f"{API}/assets/pump-8", json=changed)).status_code == 422


@pytest.mark.parametrize(("kind", "body", "missing"), [
    ("sites", {"id": "s9", "tenant": "nobody"}, "tenant 'nobody'"),
    ("lines", {"id": "l9", "site": "nowhere"}, "site 'nowhere'"),
    ("assets", {"id": "a9", "line": "no-line"}, "line 'no-line'"),
    ("devices", {"id": "d9", "tenant": TENANT, "asset": "no-asset", "profile": PROFILE}, "asset 'no-asset'"),
    ("devices", {"id": "d9", "tenant": TENANT, "asset": ASSET, "profile": "no-profile"}, "profile 'no-profile'"),
    ("devices", {"id": "d9", "tenant": "ghost-co", "asset": ASSET, "profile": PROFILE}, "tenant 'ghost-co'"),
])
async def test_unknown_parent_is_409(client: httpx.AsyncClient, kind: str, body: dict[str, Any], missing: str) -> None:
    await seed(client)
    resp = await client.post(f"{API}/{kind}", json=body)
    assert resp.status_code == 409, resp.text
    assert missing in resp.json()["detail"]
    assert "does not exist" in resp.json()["detail"]
    listed = (await client.get(f"{API}/{kind}")).json()
    assert body["id"] not in {item["id"] for item in listed}  # nothing half-created


async def test_device_under_another_tenants_asset_is_409(client: httpx.AsyncClient) -> None:
    await seed(client)
    assert (await client.post(f"{API}/tenants", json={"id": "globex"})).status_code == 201
    resp = await client.post(f"{API}/devices", json={"id": "d9", "tenant": "globex", "asset": ASSET,
                                                      "profile": PROFILE})
    assert resp.status_code == 409
    assert "does not belong to tenant 'globex'" in resp.json()["detail"]
    assert (await client.get(f"{API}/devices/d9")).status_code == 404


@pytest.mark.parametrize(("kind", "body", "needle"), [
    ("tenants", {"id": "Bad Id!"}, "$.id"),
    ("tenants", {"id": "-leading-dash"}, "$.id"),
    ("tenants", {"name": "no id"}, "missing required field `id`"),
    ("sites", {"id": "s1"}, "missing required field `tenant`"),
    ("tenants", {"id": "t1", "colour": "red"}, "unknown field `colour`"),
    ("tenants", {"id": 7}, "Expected `str`, got `int`"),
    ("assets", {"id": "a1", "line": LINE, "criticality": 9}, "$.criticality"),
    ("devices", {"id": "d1", "tenant": "t", "asset": "a", "profile": "p", "rollout_group": "north wing"},
     "$.rollout_group"),
    ("profiles", {"name": "p1", "channels": []}, "$.channels"),
    ("profiles", {"name": "p1", "channels": [{"name": "Bad-Channel"}]}, "$.channels[0].name"),
    ("devices", ["not", "an", "object"], "Expected `object`, got `array`"),
])
async def test_schema_violation_is_422(client: httpx.AsyncClient, kind: str, body: Any, needle: str) -> None:
    await seed(client)
    resp = await client.post(f"{API}/{kind}", json=body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str)
    assert needle in detail
    assert detail.startswith("invalid ")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"id": "t1"'])
async def test_non_json_body_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    resp = await client.post(f"{API}/tenants", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"].startswith("body is not valid JSON")
    assert (await client.get(f"{API}/tenants")).json() == []


async def test_a_device_joins_a_rollout_group_and_leaves_it(client: httpx.AsyncClient,
                                                             platform: Platform) -> None:
    """A device's rollout group (the model aliases of scope group:NAME it follows) is set and cleared by a PUT,
    and the platform's deployment sees it at once."""
    await seed(client)
    device = (await client.get(f"{API}/devices/{DEVICE}")).json()
    body = {k: device[k] for k in ("id", "tenant", "asset", "profile", "name")}
    assert (await client.put(f"{API}/devices/{DEVICE}", json={**body, "rollout_group": "north"})).status_code == 200
    assert (await client.get(f"{API}/devices/{DEVICE}")).json()["rollout_group"] == "north"
    assert platform.deployment.scope_of(DEVICE) == "group:north"
    assert (await client.put(f"{API}/devices/{DEVICE}", json=body)).status_code == 200
    assert platform.deployment.scope_of(DEVICE) == "*"


async def test_unknown_device_is_404(client: httpx.AsyncClient) -> None:
    await seed(client)
    resp = await client.get(f"{API}/devices/nope")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "device 'nope' not found"}
    resp = await client.get(f"{API}/devices/nope/telemetry", params={"start": 0, "end": 1000})
    assert resp.status_code == 404


# -- telemetry -----------------------------------------------------------------------------------------------


async def test_telemetry_published_over_mqtt_is_queryable(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    base = (platform.clock.now_ms() // 60_000 - 10) * 60_000  # a whole minute, 10 minutes ago
    # 60 samples at 1 Hz in 3 messages, sent newest message first; vib_x = i, temp = 2 i but null when i % 10 == 0.
    messages = []
    for seq in (3, 2, 1):
        samples = [Sample(ts=base + i * 1000, values={"vib_x": float(i), "temp": None if i % 10 == 0 else 2.0 * i})
                   for i in range((seq - 1) * 20, seq * 20)]
        messages.append((topic(TENANT, DEVICE, TopicKind.TELEMETRY), encode(Telemetry(DEVICE, seq, samples))))
    await publish_all(platform, messages)
    await wait_until(lambda: platform.pipeline.stats.stored_messages >= 3)
    assert platform.pipeline.stats.stored_samples == 60

    resp = await client.get(f"{API}/devices/{DEVICE}/telemetry",
                            params={"start": base, "end": base + 60_000, "points": 6})
    assert resp.status_code == 200, resp.text
    q = resp.json()
    assert (q["device"], q["start"], q["end"], q["bucket_ms"], q["source"]) == (
        DEVICE, base, base + 60_000, 10_000, "raw")
    assert set(q["series"]) == set(CHANNELS)
    vib = q["series"]["vib_x"]
    assert vib["ts"] == [base + k * 10_000 for k in range(6)]
    assert vib["min"] == [10.0 * k for k in range(6)]
    assert vib["max"] == [10.0 * k + 9 for k in range(6)]
    assert vib["avg"] == pytest.approx([10.0 * k + 4.5 for k in range(6)])
    temp = q["series"]["temp"]  # null readings are missing, not zero
    assert temp["min"] == [2.0 * (10 * k + 1) for k in range(6)]
    assert temp["max"] == [2.0 * (10 * k + 9) for k in range(6)]
    assert temp["avg"] == pytest.approx([2.0 * (10 * k + 5) for k in range(6)])

    # One channel, half the minute: only the buckets inside [start, end).
    resp = await client.get(f"{API}/devices/{DEVICE}/telemetry",
                            params={"start": base + 15_000, "end": base + 35_000, "points": 2, "channels": "vib_x"})
    q = resp.json()
    assert list(q["series"]) == ["vib_x"]
    assert q["series"]["vib_x"]["min"] == [15.0, 25.0]
    assert q["series"]["vib_x"]["max"] == [24.0, 34.0]

    # A long range is answered from the one-minute rollups, with the same numbers.
    resp = await client.get(f"{API}/devices/{DEVICE}/telemetry",
                            params={"start": base - 600_000, "end": base + 3_000_000, "points": 1})
    q = resp.json()
    assert q["source"] == "rollup"
    assert q["bucket_ms"] % 60_000 == 0
    assert q["series"]["vib_x"]["min"] == [0.0]
    assert q["series"]["vib_x"]["max"] == [59.0]
    assert q["series"]["vib_x"]["avg"] == pytest.approx([29.5])
    assert q["series"]["temp"]["avg"] == pytest.approx([2.0 * sum(i for i in range(60) if i % 10) / 54])

    device = (await client.get(f"{API}/devices/{DEVICE}")).json()
    assert device["last_seen_ms"] == base + 59_000
    assert (device["stored_messages"], device["stored_samples"]) == (3, 60)
    assets = (await client.get(f"{API}/assets")).json()
    assert assets[0]["last_seen_ms"] == base + 59_000


async def test_resent_message_is_stored_once(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    now = platform.clock.now_ms()
    msg = encode(Telemetry(DEVICE, 1, [Sample(ts=now - 1000, values={"vib_x": 5.0})]))
    t = topic(TENANT, DEVICE, TopicKind.TELEMETRY)
    await publish_all(platform, [(t, msg), (t, msg)])
    await wait_until(lambda: platform.pipeline.handled() >= 2)
    assert platform.pipeline.stats.stored_messages == 1
    assert platform.pipeline.stats.duplicates == 1
    q = (await client.get(f"{API}/devices/{DEVICE}/telemetry", params={"start": now - 10_000, "end": now})).json()
    assert q["series"]["vib_x"]["avg"] == [5.0]


async def test_telemetry_query_errors(client: httpx.AsyncClient) -> None:
    await seed(client)
    url = f"{API}/devices/{DEVICE}/telemetry"
    resp = await client.get(url, params={"start": 0, "end": 1000, "channels": "vib_x,rpm"})
    assert resp.status_code == 422
    assert "rpm" in resp.json()["detail"]
    assert "vib_x, temp" in resp.json()["detail"]  # names the channels the device does have
    resp = await client.get(url, params={"start": 1000, "end": 1000})
    assert resp.status_code == 422
    assert resp.json()["detail"] == "end must be after start"
    for params in ({"start": 0}, {"start": 0, "end": 10, "points": 0}, {"start": 0, "end": 10, "points": 10_001},
                   {"start": "yesterday", "end": 10}):
        assert (await client.get(url, params=params)).status_code == 422, params
    empty = (await client.get(url, params={"start": 0, "end": 1000})).json()
    assert empty["series"] == {c: {"ts": [], "avg": [], "min": [], "max": []} for c in CHANNELS}


# -- alerts --------------------------------------------------------------------------------------------------


def alert(asset: str, kind: str, first_seen: int, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(tenant=TENANT, asset=asset, device=DEVICE, kind=kind, severity=severity, first_seen=first_seen,
                 last_seen=first_seen + 1000, score=7.5, message=f"{kind} on {asset}",
                 explanation={"vib_x": 0.8}, detector="pytest")


async def test_an_asset_that_never_sent_data_is_no_data_yet_not_in_alert(
    platform: Platform, client: httpx.AsyncClient,
) -> None:
    """A new device (a gateway's, say) silent since it was registered: its "device-silent" alert is open, but the
    asset says "no data yet", with last seen never; an alert about its data would say "alert"."""
    await seed(client)
    t0 = platform.clock.now_ms() - 600_000
    await open_alert(platform.store, alert(ASSET, "device-silent", t0))  # the default "missing data" rule
    a = next(x for x in (await client.get(f"{API}/assets")).json() if x["id"] == ASSET)
    assert (a["status"], a["open_alerts"], a["last_seen_ms"]) == ("no_data", 1, None)
    await open_alert(platform.store, alert(ASSET, "vibration", t0))
    a = next(x for x in (await client.get(f"{API}/assets")).json() if x["id"] == ASSET)
    assert (a["status"], a["open_alerts"]) == ("alert", 2)


async def test_alert_lifecycle(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    assert (await client.post(f"{API}/assets", json={"id": "fan-2", "line": LINE})).status_code == 201
    t0 = platform.clock.now_ms() - 600_000
    vib = await open_alert(platform.store, alert(ASSET, "vibration", t0, Severity.CRITICAL))
    fan = await open_alert(platform.store, alert("fan-2", "temperature", t0 + 5000))

    everything = (await client.get(f"{API}/alerts")).json()
    assert [a["id"] for a in everything] == [fan.id, vib.id]  # most recently seen first
    first = next(a for a in everything if a["id"] == vib.id)
    assert (first["status"], first["severity"], first["kind"], first["asset"], first["tenant"]) == (
        "open", "critical", "vibration", ASSET, TENANT)
    assert first["explanation"] == {"vib_x": 0.8}
    assert [a["id"] for a in (await client.get(f"{API}/alerts", params={"asset": ASSET})).json()] == [vib.id]
    assert [a["id"] for a in (await client.get(f"{API}/alerts", params={"status": "open"})).json()] == [
        fan.id, vib.id]
    assert (await client.get(f"{API}/alerts", params={"status": "bogus"})).status_code == 422
    by_asset = {a["id"]: a for a in (await client.get(f"{API}/assets")).json()}
    assert (by_asset[ASSET]["status"], by_asset[ASSET]["open_alerts"]) == ("alert", 1)

    resp = await client.post(f"{API}/alerts/{vib.id}/acknowledge", json={"by": "alice"})
    assert resp.status_code == 200, resp.text
    acked = resp.json()
    assert (acked["id"], acked["status"], acked["acknowledged_by"]) == (vib.id, "acknowledged", "alice")
    assert acked["acknowledged_at"] is not None
    assert abs(acked["acknowledged_at"] - platform.clock.now_ms()) < 60_000
    assert (await client.get(f"{API}/alerts/{vib.id}")).json()["acknowledged_by"] == "alice"
    assert [a["id"] for a in (await client.get(f"{API}/alerts", params={"status": "open"})).json()] == [fan.id]
    assert [a["id"] for a in (await client.get(f"{API}/alerts", params={"status": "acknowledged"})).json()] == [
        vib.id]
    stats = (await client.get(f"{API}/stats")).json()
    assert (stats["alerts_open"], stats["alerts_acknowledged"]) == (1, 1)  # acknowledged is not "all quiet"
    twice = await client.post(f"{API}/alerts/{vib.id}/acknowledge", json={"by": "dave"})
    assert twice.status_code == 409
    assert (await client.get(f"{API}/alerts/{vib.id}")).json()["acknowledged_by"] == "alice"

    resp = await client.post(f"{API}/alerts/{vib.id}/resolve", json={"by": "bob"})
    assert resp.status_code == 200
    assert (await client.get(f"{API}/stats")).json()["alerts_acknowledged"] == 0
    assert (resp.json()["status"], resp.json()["resolved_by"]) == ("resolved", "bob")
    assert resp.json()["acknowledged_by"] == "alice"  # history is kept

    again = await client.post(f"{API}/alerts/{vib.id}/acknowledge", json={"by": "carol"})
    assert again.status_code == 409
    assert "resolved" in again.json()["detail"]
    assert (await client.post(f"{API}/alerts/{vib.id}/resolve", json={"by": "carol"})).status_code == 409
    assert (await client.get(f"{API}/alerts/{vib.id}")).json()["acknowledged_by"] == "alice"

    # Open -> resolved directly is allowed too.
    assert (await client.post(f"{API}/alerts/{fan.id}/resolve", json={"by": "bob"})).status_code == 200
    assert (await client.get(f"{API}/alerts", params={"status": "open"})).json() == []


async def test_alert_errors(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    for path in (f"{API}/alerts/424242/acknowledge", f"{API}/alerts/424242/resolve"):
        resp = await client.post(path, json={"by": "alice"})
        assert resp.status_code == 404
        assert resp.json() == {"detail": "alert 424242 not found"}
    assert (await client.get(f"{API}/alerts/424242")).status_code == 404

    a = await open_alert(platform.store, alert(ASSET, "vibration", platform.clock.now_ms()))
    for body in ({}, {"by": ""}, {"by": "x" * 101}, {"by": "alice", "extra": 1}):
        resp = await client.post(f"{API}/alerts/{a.id}/acknowledge", json=body)
        assert resp.status_code == 422, body
    assert (await client.post(f"{API}/alerts/{a.id}/acknowledge", content=b"nope")).status_code == 400
    assert (await client.get(f"{API}/alerts/{a.id}")).json()["status"] == "open"


# -- dead letters and stats ----------------------------------------------------------------------------------


async def test_malformed_payload_shows_up_as_dead_letter(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    bad = b'{"device": "dev-7", "seq": 1, "samples": [{"ts": oops}]}'
    await publish_all(platform, [(topic(TENANT, DEVICE, TopicKind.TELEMETRY), bad),
                                 (topic(TENANT, "stranger", TopicKind.TELEMETRY),
                                  encode(Telemetry("stranger", 1, [Sample(ts=1, values={"a": 1.0})])))])
    await wait_until(lambda: platform.pipeline.stats.dead_letters >= 2)

    letters = (await client.get(f"{API}/dead-letters")).json()
    assert len(letters) == 2
    mine = next(d for d in letters if d["device"] == DEVICE)
    assert mine["code"] == "not_json"
    assert mine["raw_text"] == bad.decode()
    assert base64.b64decode(mine["raw_base64"]) == bad
    assert mine["size"] == len(bad)
    assert mine["topic"] == topic(TENANT, DEVICE, TopicKind.TELEMETRY)
    assert mine["tenant"] == TENANT
    assert mine["detail"]
    stranger = next(d for d in letters if d["device"] != DEVICE)
    assert (stranger["code"], stranger["device"]) == ("unknown_device", None)

    only = (await client.get(f"{API}/dead-letters", params={"device": DEVICE})).json()
    assert [d["id"] for d in only] == [mine["id"]]
    assert len((await client.get(f"{API}/dead-letters", params={"limit": 1})).json()) == 1
    assert (await client.get(f"{API}/devices/{DEVICE}")).json()["dead_letters"] == 1
    stats = (await client.get(f"{API}/stats")).json()
    assert stats["ingest"]["dead_letters"] == 2
    assert stats["ingest"]["dead_letters_by_code"] == {"not_json": 1, "unknown_device": 1}


async def test_deeply_nested_payload_is_a_bad_schema_dead_letter(platform: Platform, client: httpx.AsyncClient) -> None:
    """5 KB of brackets, far below the size limit: an ordinary refusal, not an internal error."""
    await seed(client)
    nested = b"[" * 2500 + b"]" * 2500
    await publish_all(platform, [(topic(TENANT, DEVICE, TopicKind.TELEMETRY), nested)])
    await wait_until(lambda: platform.pipeline.stats.dead_letters >= 1)
    [letter] = (await client.get(f"{API}/dead-letters")).json()
    assert (letter["code"], letter["device"], letter["size"]) == ("bad_schema", DEVICE, len(nested)), letter["detail"]
    stats = (await client.get(f"{API}/stats")).json()
    assert stats["ingest"]["dead_letters_by_code"] == {"bad_schema": 1}


async def test_stats_has_what_the_dashboard_reads(platform: Platform, client: httpx.AsyncClient) -> None:
    await seed(client)
    now = platform.clock.now_ms()
    await publish_all(platform, [(topic(TENANT, DEVICE, TopicKind.STATUS), b"online"),
                                 (topic(TENANT, DEVICE, TopicKind.TELEMETRY), encode(Telemetry(DEVICE, 1, [
                                     Sample(ts=now - 2000 + i * 100, values={"vib_x": 1.0}) for i in range(10)])))])
    await wait_until(lambda: platform.pipeline.stats.stored_messages >= 1 and platform.presence.count() == 1)

    resp = await client.get(f"{API}/stats")
    assert resp.status_code == 200
    s = resp.json()
    for key in ("now_ms", "devices_total", "devices_online", "readings_per_s", "messages_per_s", "alerts_open",
                "uptime_s", "ingest", "scoring"):
        assert key in s, key
    for key in ("received", "stored_messages", "stored_samples", "duplicates", "dead_letters",
                "dead_letters_by_code", "store_retries", "batches", "queue_depth", "queue_capacity",
                "mqtt_connected", "mqtt_connects"):
        assert key in s["ingest"], key
    for key in ("scored_messages", "scored_samples", "findings", "alerts_raised", "queue_depth", "queue_capacity"):
        assert key in s["scoring"], key
    assert abs(s["now_ms"] - now) < 60_000
    assert (s["devices_total"], s["devices_online"], s["alerts_open"]) == (1, 1, 0)
    assert s["readings_per_s"] == pytest.approx(1.0)  # 10 samples over the 10 s window
    assert (s["ingest"]["stored_messages"], s["ingest"]["stored_samples"]) == (1, 10)
    assert s["ingest"]["dead_letters"] == 0
    assert s["ingest"]["queue_depth"] == 0
    assert s["ingest"]["mqtt_connected"] is True

    device = (await client.get(f"{API}/devices/{DEVICE}")).json()
    assert device["online"] is True
    assets = (await client.get(f"{API}/assets")).json()
    assert (assets[0]["status"], assets[0]["online"]) == ("ok", True)


async def test_totals_survive_a_restart_and_counters_say_since_start(tmp_path: Path) -> None:
    """Counters restart at zero with the process; ``totals`` are what the store holds, so a restart never reads
    like data loss (it read "439,747 → 4,460 samples stored")."""
    cfg = PlatformConfig(data_dir=tmp_path, embedded_broker=True, mqtt_port=free_port(), http_port=None)
    now = int(time.time() * 1000)
    batch = [(topic(TENANT, DEVICE, TopicKind.TELEMETRY), encode(Telemetry(DEVICE, 1, [
        Sample(ts=now - 2000 + i * 100, values={"vib_x": 1.0}) for i in range(10)]))),
        (topic(TENANT, DEVICE, TopicKind.TELEMETRY), b"not json")]
    async with Platform(cfg) as first, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(first.services)), base_url="http://test") as client:
        await seed(client)
        await publish_all(first, batch)
        await wait_until(lambda: first.pipeline.handled() >= 2)
        totals = (await client.get(f"{API}/stats")).json()["totals"]
        assert totals == {"stored_messages": 1, "stored_samples": 10, "dead_letters": 1}
    cfg = PlatformConfig(data_dir=tmp_path, embedded_broker=True, mqtt_port=free_port(), http_port=None)
    async with Platform(cfg) as second, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(second.services)), base_url="http://test") as client:
        s = (await client.get(f"{API}/stats")).json()
        assert (s["ingest"]["stored_samples"], s["ingest"]["dead_letters"]) == (0, 0)  # since this start
        assert s["totals"] == {"stored_messages": 1, "stored_samples": 10, "dead_letters": 1}
        await publish_all(second, [(topic(TENANT, DEVICE, TopicKind.TELEMETRY), encode(Telemetry(DEVICE, 2, [
            Sample(ts=now + i * 100, values={"vib_x": 2.0}) for i in range(5)])))])
        await wait_until(lambda: second.pipeline.stats.stored_messages >= 1)
        s = (await client.get(f"{API}/stats")).json()
        assert s["totals"]["stored_samples"] == 15 == (await second.store.telemetry_counts())[1]


async def test_an_unregistered_id_saying_online_is_not_a_device_online(platform: Platform,
                                                                       client: httpx.AsyncClient) -> None:
    """Without authentication anyone may publish a status under any id: the header counts registered devices
    only (it read "3 / 1 devices online"), and what presence remembers is bounded."""
    await seed(client)
    await publish_all(platform, [(topic(TENANT, DEVICE, TopicKind.STATUS), b"online")]
                      + [(topic(TENANT, f"ghost-{i}", TopicKind.STATUS), b"online") for i in range(2)])
    await wait_until(lambda: len(platform.presence.online) == 3)
    s = (await client.get(f"{API}/stats")).json()
    assert (s["devices_online"], s["devices_total"]) == (1, 1)


def test_presence_is_bounded_and_forgets_the_least_recently_heard() -> None:
    from edgeloop.ingest.pipeline import Presence

    p = Presence(max_devices=3)
    for d in ("a", "b", "c"):
        p.update(d, b"online")
    p.update("a", b"offline")  # heard again: now the most recent
    p.update("d", b"online")  # over the bound: "b" goes
    assert list(p.online) == ["c", "a", "d"] and set(p.since_ms) == {"a", "c", "d"}
    assert (p.count(), p.count(["a", "b", "c"])) == (2, 1)
