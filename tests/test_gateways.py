"""Edge gateways on the platform: heartbeats, honest state, remote configuration.

A real in-process platform (embedded broker, or a real Mosquitto) and real paho clients playing the gateway:
they publish heartbeats on the gateway's ``health`` topic, announce their status with a last will, and
subscribe to the gateway's ``config`` topic exactly as an agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.cli import app as cli_app
from edgeloop.clock import ManualClock
from edgeloop.identity.pki import ensure_identity
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import (
    ConfigPush,
    DeviceEvent,
    Heartbeat,
    SourceHealth,
    TopicKind,
    decode_config_push,
    encode,
    topic,
)
from tests.support import start_mosquitto

ADMIN_PASSWORD = "gateway-admin-password"
T0 = 1_795_000_000_000
API = "/api/v1"
GW, PUMPS = "acme-gw", ("acme-pump-1", "acme-pump-2")
CONFIG = """\
agent:
  tenant: {tenant}
  gateway: acme-gw
  data_dir: ./agent-data
sources:
  - name: fleet
    kind: simulator
    devices: 2
"""
BAD_CONFIG = """\
agent:
  tenant: acme
  gateway: acme-gw
sources:
  - name: press-plc
    kind: modbus
    host: 10.0.0.7
    port: seventy
    device: press-1
    points:
      - {channel: force, address: 0}
"""


def beat(gateway: str = GW, *, ts: int, interval_s: float = 10.0, **changes: Any) -> Heartbeat:
    """A healthy heartbeat; ``changes`` override fields."""
    hb = Heartbeat(gateway=gateway, ts=ts, interval_s=interval_s, devices=list(PUMPS), journal_messages=3,
                   journal_bytes=4096, journal_samples=150, oldest_unsent_age_s=1.5, sync_lag_s=0.42,
                   dropped_samples=0, accepted_samples=12_000, uplink_connected=2, uplink_links=2, bytes_sent=50_000,
                   bytes_raw=200_000, cpu_percent=3.5,
                   rss_bytes=61_000_000, sources={"plc": SourceHealth(kind="modbus", state="ok", last_ok_ms=ts)},
                   config_version=1, agent_version="0.test")
    return msgspec.structs.replace(hb, **changes)


class Gateway:
    """A paho client with the gateway's identity: status with a last will, heartbeats, its config topic."""

    def __init__(self, port: int, gateway: str = GW, tenant: str = "acme", *, tls: TlsIdentity | None = None,
                 will: bool = True) -> None:
        self.gateway, self.tenant = gateway, tenant
        self.pushes: queue.Queue[tuple[ConfigPush, bool]] = queue.Queue()
        self.received: queue.Queue[str] = queue.Queue()  # the topic of every message this client receives
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway, clean_session=True)
        if tls is not None:
            tls.apply(self.client)
        if will:
            self.client.will_set(topic(tenant, gateway, TopicKind.STATUS), b"offline", qos=1, retain=True)
        self.client.on_message = self._on_message
        connected = queue.Queue[bool]()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(not reason.is_failure)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert connected.get(timeout=10), "the broker refused the gateway"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received.put(msg.topic)
        if msg.topic == topic(self.tenant, self.gateway, TopicKind.CONFIG):
            self.pushes.put((decode_config_push(bytes(msg.payload)), msg.retain))

    def publish(self, kind: TopicKind, payload: bytes, *, retain: bool = False, on: str | None = None) -> None:
        name = topic(self.tenant, on or self.gateway, kind)
        self.client.publish(name, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def heartbeat(self, hb: Heartbeat) -> None:
        self.publish(TopicKind.HEALTH, encode(hb))

    def online(self) -> None:
        self.publish(TopicKind.STATUS, b"online", retain=True)

    def subscribe_config(self) -> None:
        done = queue.Queue[bool]()
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: done.put(not codes[0].is_failure)
        self.client.subscribe(topic(self.tenant, self.gateway, TopicKind.CONFIG), qos=1)
        assert done.get(timeout=10), "subscription to the config topic refused"

    def next_push(self, timeout_s: float = 10.0) -> tuple[ConfigPush, bool]:
        return self.pushes.get(timeout=timeout_s)

    def vanish(self) -> None:
        """The network cable is pulled: the connection ends without DISCONNECT, so the broker sends the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # No reference cycle back to this object: paho closes its internal socket pair only when the client is
        # deleted, which then happens at once instead of in a late garbage collection.
        self.client.on_message = self.client.on_connect = self.client.on_subscribe = None


class Env:
    def __init__(self, platform: Platform, client: httpx.AsyncClient, clock: ManualClock | None) -> None:
        self.platform, self.client, self.clock = platform, client, clock
        self.gateways: list[Gateway] = []
        self.admin: dict[str, str] = {}

    @property
    def now(self) -> int:
        return self.platform.clock.now_ms()

    async def login(self, username: str, password: str) -> dict[str, str]:
        resp = await self.client.post(f"{API}/auth/token", data={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    async def user(self, username: str, role: str, tenant: str | None) -> dict[str, str]:
        resp = await self.client.post(f"{API}/users", headers=self.admin, json={
            "username": username, "password": f"{username}-password-123", "role": role, "tenant": tenant})
        assert resp.status_code == 201, resp.text
        return await self.login(username, f"{username}-password-123")

    async def gateway(self, gateway: str = GW, tenant: str = "acme", **kw: Any) -> Gateway:
        gw = await asyncio.to_thread(Gateway, self.platform.config.mqtt_port, gateway, tenant, **kw)
        self.gateways.append(gw)
        return gw

    async def send(self, action: Callable[[], None], handled: int = 1) -> None:
        """Run a blocking MQTT action and wait until the pipeline has handled ``handled`` more messages."""
        target = self.platform.pipeline.handled() + handled
        await asyncio.to_thread(action)
        await asyncio.wait_for(self.platform.pipeline.wait_handled(target), 10)

    async def get(self, path: str, headers: dict[str, str] | None = None, status: int = 200) -> Any:
        resp = await self.client.get(f"{API}{path}", headers=self.admin if headers is None else headers)
        assert resp.status_code == status, (path, resp.status_code, resp.text)
        return resp.json()

    async def push(self, text: str, gateway: str = GW, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.put(f"{API}/gateways/{gateway}/config", json={"config": text},
                                     headers=self.admin if headers is None else headers)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Bounded polling for what has no event to wait on (a last will travelling through the broker)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def seed(platform: Platform) -> None:
    reg = platform.registry
    await reg.put_profile(DeviceProfile(name="p", channels=[ChannelSpec(name="x")]))
    for t in ("acme", "globex"):
        await reg.put_tenant(Tenant(id=t))
        await reg.put_site(Site(id=f"{t}-site", tenant=t))
        await reg.put_line(Line(id=f"{t}-line", site=f"{t}-site"))
        await reg.put_asset(Asset(id=f"{t}-asset", line=f"{t}-line"))
        for dev in (f"{t}-gw", f"{t}-pump-1", f"{t}-pump-2"):
            await reg.put_device(Device(id=dev, tenant=t, asset=f"{t}-asset", profile="p"))


@pytest.fixture
async def env_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    """Start a platform (auth on, registry seeded) with the given config overrides; closed at the end."""
    stack: list[tuple[Platform, httpx.AsyncClient, Env]] = []

    async def start(*, manual_clock: bool = True, **overrides: Any) -> Env:
        clock = ManualClock(start_ms=T0) if manual_clock else None
        cfg = PlatformConfig(**{"data_dir": tmp_path / f"p{len(stack)}", "mqtt_port": free_port(),
                                "http_port": None, "auth": True, "admin_password": ADMIN_PASSWORD, **overrides})
        platform = await Platform(cfg, clock=clock).__aenter__()
        await seed(platform)
        client = await httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(platform.services)),
                                         base_url="http://test").__aenter__()
        env = Env(platform, client, clock)
        env.admin = await env.login("admin", ADMIN_PASSWORD)
        stack.append((platform, client, env))
        return env

    try:
        yield start
    finally:
        for platform, client, env in reversed(stack):
            for gw in env.gateways:
                await asyncio.to_thread(gw.close)
            await client.__aexit__(None, None, None)
            await platform.__aexit__(None, None, None)


@pytest.fixture
async def env(env_factory: Callable[..., Awaitable[Env]]) -> Env:
    return await env_factory()


@pytest.fixture
def mosquitto_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with start_mosquitto(port=port, workdir=tmp_path / "mosquitto"):
        yield port


# -- heartbeats and state ---------------------------------------------------------------------------------


async def test_heartbeat_shows_the_gateway_online_with_its_numbers(env: Env) -> None:
    gw = await env.gateway()
    sent = beat(ts=env.now, devices=[*PUMPS, "globex-pump-1", "not-registered-yet"])
    await asyncio.to_thread(gw.online)

    async def announced() -> bool:
        return env.platform.presence.online.get(GW) is True

    await until(announced, "the gateway's online status")
    assert env.clock is not None
    env.clock.advance(1000)
    await env.send(lambda: gw.heartbeat(sent))

    [listed] = await env.get("/gateways")
    assert (listed["id"], listed["tenant"], listed["state"], listed["connected"], listed["reasons"]) == (
        GW, "acme", "online", True, [])
    assert listed["backlog"] == {"messages": 3, "samples": 150, "bytes": 4096, "oldest_unsent_age_s": 1.5}
    assert (listed["sync_lag_s"], listed["dropped_samples"], listed["cpu_percent"], listed["rss_bytes"]) == (
        0.42, 0, 3.5, 61_000_000)
    assert listed["uplink"] == {"connected": 2, "links": 2}
    assert listed["sources"] == [{"name": "plc", "kind": "modbus", "state": "ok", "failures": 0,
                                  "last_ok_ms": sent.ts, "error": ""}]
    assert listed["config"] == {"running_version": 1, "status": "applied", "message": ""}
    # Topology: the devices behind it, never another tenant's (a device not registered yet is kept).
    assert listed["devices"] == ["acme-pump-1", "acme-pump-2", "not-registered-yet"]
    assert [g.id for g in await env.platform.store.list_gateways() if "acme-pump-2" in g.devices] == [GW]
    assert [g.id for g in await env.platform.store.list_gateways() if "globex-pump-1" in g.devices] == []

    detail = await env.get(f"/gateways/{GW}")
    assert detail["heartbeat"] == msgspec.json.decode(encode(sent)), "the full heartbeat is kept as received"
    assert (detail["status"], detail["received_ms"], detail["last_heartbeat_ms"]) == ("online", env.now, sent.ts)
    assert detail["status_ms"] < detail["received_ms"]
    assert "latest" not in detail["config"]  # nothing pushed yet
    # A device that never sent a heartbeat is not a gateway.
    assert (await env.get("/gateways/acme-pump-1", status=404))["detail"] == "gateway 'acme-pump-1' not found"


async def test_degraded_says_why(env: Env) -> None:
    assert env.clock is not None
    gw = await env.gateway()
    troubled = beat(ts=env.now, journal_messages=420, journal_samples=25_000, oldest_unsent_age_s=95.0,
                    dropped_samples=300, uplink_connected=1, uplink_links=3,
                    sources={"plc": SourceHealth(kind="modbus", state="failing", failures=7,
                                                 error="connection refused"),
                             "oven": SourceHealth(kind="opcua", state="ok")})
    await env.send(lambda: gw.heartbeat(troubled))
    [g] = await env.get("/gateways")
    assert (g["state"], g["connected"]) == ("degraded", True)
    reasons = " | ".join(g["reasons"])
    assert len(g["reasons"]) == 4, reasons
    assert "backlog: 420 messages (25000 samples) waiting, the oldest for 95 s" in reasons
    assert "source plc (modbus) failing after 7 attempts: connection refused" in reasons
    assert "samples dropped by the disk budget: 300" in reasons
    assert "uplink: 1 of 3 device connections up" in reasons

    # Recovered, but the drop stays visible for a while (the counter is cumulative; only an increase counts).
    env.clock.advance(10_000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, dropped_samples=300)))
    [g] = await env.get("/gateways")
    assert g["state"] == "degraded"
    assert [r for r in g["reasons"] if "dropped" in r] == g["reasons"]
    env.clock.advance(16 * 60_000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, dropped_samples=300)))
    [g] = await env.get("/gateways")
    assert (g["state"], g["reasons"]) == ("online", [])
    # A backlog younger than two intervals is normal operation, not degradation.
    env.clock.advance(10_000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, oldest_unsent_age_s=19.0, journal_messages=50)))
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online"


async def test_silent_gateway_is_offline_after_three_intervals(env: Env) -> None:
    assert env.clock is not None
    gw = await env.gateway()
    await asyncio.to_thread(gw.online)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, interval_s=10.0)))
    env.clock.advance(29_000)
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online"
    env.clock.advance(2_000)
    g = await env.get(f"/gateways/{GW}")
    assert (g["state"], g["connected"], g["heartbeat_age_s"]) == ("offline", False, 31.0)
    assert g["reasons"] == ["no heartbeat for 31 s (expected every 10 s; offline after 30 s)"]
    assert g["backlog"]["messages"] == 3, "the last known numbers stay visible, with their age"
    # Its retained status still says online: that alone never makes it connected.
    assert g["status"] == "online"
    await env.send(lambda: gw.heartbeat(beat(ts=env.now)))
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online"


async def test_last_will_marks_the_gateway_offline_at_once(env: Env) -> None:
    gw = await env.gateway()
    await asyncio.to_thread(gw.online)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now)))
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online"

    await asyncio.to_thread(gw.vanish)

    async def offline() -> bool:
        return bool((await env.get(f"/gateways/{GW}"))["state"] == "offline")

    await until(offline, "the last will to mark the gateway offline")
    g = await env.get(f"/gateways/{GW}")
    assert g["connected"] is False
    assert g["status"] == "offline"
    assert g["reasons"] == ["its connection is closed (status offline: last will or disconnect)"]
    # It comes back: a new connection announces itself and sends a heartbeat.
    back = await env.gateway()
    await asyncio.to_thread(back.online)
    await env.send(lambda: back.heartbeat(beat(ts=env.now)))
    g = await env.get(f"/gateways/{GW}")
    assert (g["state"], g["status"]) == ("online", "online")


async def test_a_heartbeat_after_the_offline_status_proves_the_gateway_is_back(env: Env) -> None:
    gw = await env.gateway(will=False)
    await asyncio.to_thread(gw.publish, TopicKind.STATUS, b"offline", retain=True)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now)))
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online", "first heartbeat after the status"
    await asyncio.to_thread(gw.publish, TopicKind.STATUS, b"offline", retain=True)

    async def offline() -> bool:
        return bool((await env.get(f"/gateways/{GW}"))["state"] == "offline")

    await until(offline, "the offline status to be stored")


async def test_bad_heartbeats_are_dead_lettered_and_nothing_stops(env: Env) -> None:
    gw = await env.gateway()
    good = beat(ts=env.now)
    cases = [
        (TopicKind.HEALTH, GW, b"{not json", "not_json"),
        (TopicKind.HEALTH, GW, b'{"gateway": "acme-gw", "ts": 1}', "bad_schema"),
        (TopicKind.HEALTH, GW, encode(beat("acme-pump-1", ts=env.now)), "topic_mismatch"),
        (TopicKind.HEALTH, "ghost-gw", encode(beat("ghost-gw", ts=env.now)), "unknown_device"),
        (TopicKind.HEALTH, GW, encode(msgspec.structs.replace(good, v=2)), "unsupported_version"),
        (TopicKind.HEALTH, GW, encode(beat(ts=env.now + 3_600_000)), "ts_future"),
    ]

    def publish_all() -> None:
        for kind, on, payload, _ in cases:
            gw.publish(kind, payload, on=on)
        # Right gateway, wrong tenant in the topic.
        gw.client.publish(topic("globex", GW, TopicKind.HEALTH), encode(good), qos=1).wait_for_publish(10)

    await env.send(publish_all, handled=len(cases) + 1)
    letters = await env.get("/dead-letters")
    assert sorted(d["code"] for d in letters) == sorted([c[3] for c in cases] + ["wrong_tenant"])
    mismatch = next(d for d in letters if d["code"] == "topic_mismatch")
    assert "payload gateway 'acme-pump-1' published on 'acme-gw'" in mismatch["detail"]
    assert next(d for d in letters if d["code"] == "unknown_device")["detail"] == "gateway 'ghost-gw' is not registered"
    assert next(d for d in letters if d["code"] == "not_json")["raw_text"] == "{not json"
    assert await env.get("/gateways") == []
    assert env.platform.alive
    await env.send(lambda: gw.heartbeat(good))
    assert [g["id"] for g in await env.get("/gateways")] == [GW]


# -- remote configuration ------------------------------------------------------------------------------------


async def _push_and_receive(env: Env) -> None:
    bad = await env.push(BAD_CONFIG)
    assert bad.status_code == 422, bad.text
    assert "line 8" in bad.json()["detail"] and "port" in bad.json()["detail"], bad.json()
    not_yaml = await env.push("agent: [unclosed\n")
    assert not_yaml.status_code == 422
    assert "line 2" in not_yaml.json()["detail"]
    other_tenant = await env.push(CONFIG.format(tenant="globex"))
    assert other_tenant.status_code == 422
    assert "belongs to tenant 'acme'" in other_tenant.json()["detail"]
    assert await env.get(f"/gateways/{GW}/config") == [], "nothing invalid is stored"

    first = await env.push(CONFIG.format(tenant="acme") + "version: 41\n")
    assert first.status_code == 201, first.text
    assert (first.json()["version"], first.json()["status"], first.json()["created_by"]) == (1, "pending", "admin")

    gw = await env.gateway()
    await asyncio.to_thread(gw.subscribe_config)
    push, retained = await asyncio.to_thread(gw.next_push)
    assert (push.version, retained, push.issued_by) == (1, True, "admin"), "retained for a gateway that connects later"
    assert push.config == CONFIG.format(tenant="acme") + "version: 41\n"

    second = await env.push(CONFIG.format(tenant="acme").replace("devices: 2", "devices: 3"))
    assert second.json()["version"] == 2
    push, retained = await asyncio.to_thread(gw.next_push)
    assert (push.version, retained) == (2, False)
    assert "devices: 3" in push.config

    versions = await env.get(f"/gateways/{GW}/config")
    assert [(c["version"], c["status"]) for c in versions] == [(2, "pending"), (1, "pending")]
    one = await env.get(f"/gateways/{GW}/config/1")
    assert one["config"].endswith("version: 41\n")
    await env.get(f"/gateways/{GW}/config/3", status=404)
    audit = await env.platform.store.list_audit(action="gateway.config")
    assert [(a.actor, a.target, a.outcome) for a in audit] == [("admin", GW, "ok")] * 2
    assert audit[0].detail.startswith("version 2")


async def test_config_push_is_validated_and_retained(env: Env) -> None:
    await _push_and_receive(env)


@pytest.mark.mosquitto
async def test_config_push_through_mosquitto(env_factory: Callable[..., Awaitable[Env]],
                                             mosquitto_port: int) -> None:
    env = await env_factory(embedded_broker=False, mqtt_port=mosquitto_port)
    await _push_and_receive(env)


async def _tls_env(env_factory: Callable[..., Awaitable[Env]], tmp_path: Path) -> tuple[Env, Path]:
    env = await env_factory(manual_clock=False, pki_dir=tmp_path / "pki", create_pki=True, embedded_tls=True)
    ca = env.platform.ca
    assert ca is not None
    ids = tmp_path / "ids"
    for name in (GW, "acme-pump-1"):
        await asyncio.to_thread(ensure_identity, ca, ids, name, kind="device")
    return env, ids


async def test_config_push_over_mutual_tls(env_factory: Callable[..., Awaitable[Env]], tmp_path: Path) -> None:
    """The ACL the brokers enforce lets ingest write a gateway's config topic and the gateway read it."""
    env, ids = await _tls_env(env_factory, tmp_path)
    gw = await env.gateway(tls=TlsIdentity.from_dir(ids, GW))
    await asyncio.to_thread(gw.subscribe_config)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now)))
    assert (await env.push(CONFIG.format(tenant="acme"))).status_code == 201
    push, _ = await asyncio.to_thread(gw.next_push)
    assert push.version == 2  # above the version 1 its heartbeat says it runs
    assert (await env.get(f"/gateways/{GW}"))["state"] == "online"


async def test_another_device_never_receives_a_gateways_config(env_factory: Callable[..., Awaitable[Env]],
                                                                tmp_path: Path) -> None:
    env, ids = await _tls_env(env_factory, tmp_path)
    gw = await env.gateway(tls=TlsIdentity.from_dir(ids, GW))
    await asyncio.to_thread(gw.subscribe_config)
    assert (await env.push(CONFIG.format(tenant="acme"))).status_code == 201
    await asyncio.to_thread(gw.next_push)
    nosy = await env.gateway("acme-pump-1", tls=TlsIdentity.from_dir(ids, "acme-pump-1"))
    await asyncio.to_thread(nosy.client.subscribe, topic("acme", GW, TopicKind.CONFIG), 1)
    with pytest.raises(queue.Empty):  # nothing may arrive: a bounded quiet period, there is no event to await
        await asyncio.to_thread(nosy.received.get, True, 1.0)


async def test_agent_reports_update_the_config_status(env: Env) -> None:
    assert env.clock is not None
    gw = await env.gateway()
    for n in (1, 2):
        assert (await env.push(CONFIG.format(tenant="acme") + f"# {n}\n")).status_code == 201

    def event(version: int, status: str, error: str = "") -> Callable[[], None]:
        ev = DeviceEvent(device=GW, ts=env.now, kind="config", message=f"config v{version} {status}",
                         data={"version": version, "status": status, "error": error})
        return lambda: gw.publish(TopicKind.EVENT, encode(ev))

    async def statuses() -> list[tuple[int, str, str]]:
        return [(c["version"], c["status"], c["error"]) for c in await env.get(f"/gateways/{GW}/config")]

    # The agent tried v2, its sources failed, and it went back to what it ran before.
    await env.send(event(2, "rolled_back", "source fleet failing: timeout"))
    assert await statuses() == [(2, "rolled_back", "source fleet failing: timeout"), (1, "pending", "")]
    # Its heartbeat runs v1: v1 is applied.
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=1, config_status="rolled_back",
                                             config_message="source fleet failing: timeout")))
    assert await statuses() == [(2, "rolled_back", "source fleet failing: timeout"), (1, "applied", "")]
    g = await env.get(f"/gateways/{GW}")
    assert g["config"]["status"] == "rolled_back" and g["config"]["running_version"] == 1
    assert g["config"]["latest"]["version"] == 2 and g["config"]["latest"]["status"] == "rolled_back"

    # v3 is pushed; a heartbeat sent before the agent saw it must not be read as v3's outcome.
    assert (await env.push(CONFIG.format(tenant="acme") + "# 3\n")).json()["version"] == 3
    env.clock.advance(1000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=1, config_status="rolled_back")))
    assert (await statuses())[0] == (3, "pending", "")
    # v3 applied, reported by its heartbeat alone (the event may be lost).
    env.clock.advance(1000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=3, config_status="applied")))
    assert [s[:2] for s in await statuses()] == [(3, "applied"), (2, "rolled_back"), (1, "applied")]

    # v4 rejected: the only newer pending version, so the heartbeat alone is unambiguous.
    assert (await env.push(CONFIG.format(tenant="acme") + "# 4\n")).json()["version"] == 4
    env.clock.advance(1000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=3, config_status="rejected",
                                             config_message="unknown source kind")))
    assert (await statuses())[0] == (4, "rejected", "unknown source kind")
    # An ill-formed config event is stored as an event and changes nothing.
    await env.send(event(0, "applied"))
    assert (await statuses())[0] == (4, "rejected", "unknown source kind")

    # Two newer versions pending: a heartbeat that names the version it reports on (config_pushed) settles it.
    for n in (5, 6):
        assert (await env.push(CONFIG.format(tenant="acme") + f"# {n}\n")).json()["version"] == n
    env.clock.advance(1000)
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=3, config_status="rolled_back",
                                             config_message="source plc failing", config_pushed=5)))
    assert [s[:2] for s in (await statuses())[:2]] == [(6, "pending"), (5, "rolled_back")]


async def test_a_yaml_alias_bomb_is_refused_quickly(env: Env) -> None:
    """Nine levels of ten aliases each: 10^9 nodes once expanded (walking it would hang the API, so this test
    would never end). Refused before anything walks it."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    resp = await env.push("\n".join(levels) + "\n")
    assert resp.status_code == 422
    assert "aliases expand to more than 100000 YAML nodes" in resp.json()["detail"]
    assert (await env.push("agent: &a [*a]\n")).status_code == 422, "a recursive alias never ends"


async def test_next_version_is_above_the_one_the_agent_runs(env: Env) -> None:
    """An agent applies only a version greater than its own: a local configuration with ``version: 7``."""
    gw = await env.gateway()
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=7)))
    resp = await env.push(CONFIG.format(tenant="acme"))
    assert resp.json()["version"] == 8


async def test_push_to_an_unreachable_broker_is_a_clear_error(env: Env) -> None:
    env.platform.source.stats.connected = False  # as paho reports a lost connection
    try:
        resp = await env.push(CONFIG.format(tenant="acme"))
    finally:
        env.platform.source.stats.connected = True
    assert resp.status_code == 503
    assert resp.json()["detail"].startswith("stored but not delivered: not connected to the MQTT broker")
    assert [(c["version"], c["status"]) for c in await env.get(f"/gateways/{GW}/config")] == [(1, "failed")]
    [record] = await env.platform.store.list_audit(action="gateway.config")
    assert record.outcome == "failed"


# -- access -------------------------------------------------------------------------------------------------


async def test_tenants_see_only_their_gateways_and_only_operators_push(env: Env) -> None:
    acme_gw, globex_gw = await env.gateway(), await env.gateway("globex-gw", "globex")
    await env.send(lambda: acme_gw.heartbeat(beat(ts=env.now)))
    await env.send(lambda: globex_gw.heartbeat(beat("globex-gw", ts=env.now, devices=["globex-pump-1"])))
    assert [g["id"] for g in await env.get("/gateways")] == ["acme-gw", "globex-gw"]

    viewer = await env.user("vic", "viewer", "acme")
    tech = await env.user("tess", "technician", "acme")
    operator = await env.user("otto", "operator", "acme")
    rival = await env.user("gina", "admin", "globex")
    assert [g["id"] for g in await env.get("/gateways", viewer)] == [GW]
    assert [g["id"] for g in await env.get("/gateways", rival)] == ["globex-gw"]
    for path in (f"/gateways/{GW}", f"/gateways/{GW}/config", f"/gateways/{GW}/config/1"):
        await env.get(path, rival, status=404)
    assert (await env.push(CONFIG.format(tenant="acme"), headers=rival)).status_code == 404
    assert (await env.push(CONFIG.format(tenant="acme"), headers=viewer)).status_code == 403
    assert (await env.push(CONFIG.format(tenant="acme"), headers=tech)).status_code == 403
    assert (await env.push(CONFIG.format(tenant="acme"), headers={})).status_code == 401
    await env.get("/gateways", {}, status=401)
    done = await env.push(CONFIG.format(tenant="acme"), headers=operator)
    assert done.status_code == 201
    assert done.json()["created_by"] == "otto"
    # Version 2: the heartbeat says the agent runs version 1, and an agent applies only newer versions.
    assert [c["version"] for c in await env.get(f"/gateways/{GW}/config", viewer)] == [2]


# -- CLI and PostgreSQL -----------------------------------------------------------------------------------


async def test_cli_lists_gateways_and_pushes_a_config(env_factory: Callable[..., Awaitable[Env]],
                                                      tmp_path: Path) -> None:
    port = free_port()
    env = await env_factory(manual_clock=False, http_port=port)
    gw = await env.gateway()
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, journal_messages=420, oldest_unsent_age_s=95.0)))
    token = env.admin["Authorization"].removeprefix("Bearer ")
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(cli_app, [*args, "--url", url], env={**os.environ, "EDGELOOP_TOKEN": token})

    listed = await asyncio.to_thread(cli, "gateways")
    assert listed.exit_code == 0, listed.output
    assert GW in listed.output and "degraded" in listed.output and "420" in listed.output
    config = tmp_path / "agent.yaml"
    config.write_text(BAD_CONFIG)
    refused = await asyncio.to_thread(cli, "gateways", "push-config", GW, str(config))
    assert refused.exit_code == 1
    assert "422" in refused.output and "line 8" in " ".join(refused.output.split())
    config.write_text(CONFIG.format(tenant="acme"))
    pushed = await asyncio.to_thread(cli, "gateways", "push-config", GW, str(config))
    assert pushed.exit_code == 0, pushed.output
    assert f"pushed version 2 to {GW}" in pushed.output  # above the version 1 the agent runs
    as_json = await asyncio.to_thread(cli, "gateways", "--json")
    assert msgspec.json.decode(as_json.output)[0]["config"]["latest"]["status"] == "pending"


@pytest.mark.postgres
async def test_gateways_on_postgresql(env_factory: Callable[..., Awaitable[Env]], pg_dsn: str) -> None:
    env = await env_factory(store_url=pg_dsn)
    gw = await env.gateway()
    await env.send(lambda: gw.heartbeat(beat(ts=env.now)))
    assert (await env.push(CONFIG.format(tenant="acme"))).json()["version"] == 2
    await env.send(lambda: gw.heartbeat(beat(ts=env.now, config_version=2)))
    g = await env.get(f"/gateways/{GW}")
    assert (g["state"], g["devices"], g["config"]["latest"]["status"]) == ("online", list(PUMPS), "applied")
    assert [g.id for g in await env.platform.store.list_gateways() if "acme-pump-1" in g.devices] == [GW]


# -- the real agent -----------------------------------------------------------------------------------------


async def test_a_real_agent_reports_its_health_and_takes_a_pushed_configuration(
        env_factory: Callable[..., Awaitable[Env]], tmp_path: Path) -> None:
    """``edgeloop agent`` (in-process) against the platform: heartbeats make it a gateway, a push through the API
    is applied and reported, and stopping it marks it offline at once."""
    from edgeloop.agent.remote import load_effective_config
    from edgeloop.agent.runner import Agent

    env = await env_factory(manual_clock=False)
    text = f"""\
agent: {{tenant: acme, gateway: {GW}, data_dir: {tmp_path / 'agent'}, commit_ms: 50, heartbeat_s: 0.5,
         config_verify_s: 1}}
uplink: {{mqtt: 127.0.0.1:{env.platform.config.mqtt_port}}}
sources:
  - {{name: fleet, kind: simulator, devices: 1, seed: 3, poll_ms: 200}}
"""
    local = tmp_path / "agent.yaml"
    local.write_text(text)
    agent = Agent(load_effective_config(local), base=tmp_path)
    task = asyncio.create_task(agent.run(drain_s=0.5))

    async def gateway(check: Callable[[dict[str, Any]], bool]) -> bool:
        found = [g for g in await env.get("/gateways") if g["id"] == GW]
        return bool(found) and check(found[0])

    try:
        await until(lambda: gateway(lambda g: g["state"] != "offline" and g["sources"][0]["state"] == "ok"),
                    "the agent's heartbeat with its source up")
        g = await env.get(f"/gateways/{GW}")
        assert (g["config"]["running_version"], g["interval_s"], len(g["devices"])) == (1, 0.5, 1)
        assert g["rss_bytes"] > 10_000_000 and g["uplink"]["links"] == 1

        pushed = await env.push(text.replace("devices: 1", "devices: 2"))
        assert pushed.json()["version"] == 2, pushed.text
        await until(lambda: gateway(lambda g: g["config"]["latest"]["status"] == "applied"),
                    "version 2 applied, as the agent reports", timeout_s=20)
        await until(lambda: gateway(lambda g: g["config"]["running_version"] == 2 and len(g["devices"]) == 2),
                    "the heartbeat of version 2")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await until(lambda: gateway(lambda g: g["state"] == "offline"), "the stopped agent shown offline")
