"""Alerting through the running platform: telemetry over MQTT -> rules -> incidents, worked over the REST API
with authentication (the technician's inbox, lifecycle, feedback as labels, "why was I not paged?", rules,
maintenance windows, silences) and a gateway storm that pages once."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pyarrow.parquet as pq
import pytest

from edgeloop.alerts.feedback import read_labels_csv
from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.store.base import GatewayHeartbeat
from tests.support import HOT_RULES
from tests.test_api import publish_all
from tests.test_gateways import beat

API = "/api/v1"
T0 = 1_795_000_000_000
ADMIN_PASSWORD = "incidents-admin-password"
RULES = HOT_RULES
SILENT = RULES + """\
  - name: device-silent
    kind: missing
    after_s: 300
"""


class Env:
    def __init__(self, platform: Platform, client: httpx.AsyncClient | None, clock: ManualClock) -> None:
        self.platform, self.client, self.clock = platform, client, clock
        self.seq: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}

    async def login(self, username: str, password: str) -> dict[str, str]:
        assert self.client is not None
        resp = await self.client.post(f"{API}/auth/token", data={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    async def user(self, username: str, role: str, tenant: str | None) -> None:
        assert self.client is not None
        resp = await self.client.post(f"{API}/users", headers=self.headers["admin"], json={
            "username": username, "password": f"{username}-password-1", "role": role, "tenant": tenant})
        assert resp.status_code == 201, resp.text
        self.headers[username] = await self.login(username, f"{username}-password-1")

    async def call(self, method: str, path: str, who: str = "admin", status: int = 200, **kw: Any) -> Any:
        assert self.client is not None
        resp = await self.client.request(method, f"{API}{path}", headers=self.headers[who], **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        ctype = resp.headers.get("content-type", "")
        return resp.json() if ctype.startswith("application/json") else resp

    async def telemetry(self, device: str, tenant: str, *values: float) -> None:
        """One message of ``values`` (one per second, ending now) from ``device``, through the broker."""
        now = self.clock.now_ms()
        self.seq[device] = self.seq.get(device, 0) + 1
        samples = [Sample(ts=now - (len(values) - 1 - k) * 1000, values={"temp": v}) for k, v in enumerate(values)]
        await publish_all(self.platform, [(topic(tenant, device, TopicKind.TELEMETRY),
                                           encode(Telemetry(device, self.seq[device], samples)))])
        assert await self.platform.idle(30)

    async def at(self, ms: int) -> None:
        """Move the clock to ``ms`` and let the alert service's time pass."""
        self.clock.advance(ms - self.clock.now_ms())
        await self.platform.alerts.tick()


async def seed(platform: Platform, *, pumps: int = 2, tenants: tuple[str, ...] = ("acme", "globex")) -> None:
    reg = platform.registry
    await reg.put_profile(DeviceProfile(name="pump", channels=[ChannelSpec(name="temp", unit="C")]))
    for t in tenants:
        await reg.put_tenant(Tenant(id=t))
        await reg.put_site(Site(id=f"{t}-site", tenant=t))
        await reg.put_line(Line(id=f"{t}-line", site=f"{t}-site"))
        for i in range(1, pumps + 1):
            await reg.put_asset(Asset(id=f"{t}-pump-{i}", line=f"{t}-line", criticality=4))
            await reg.put_device(Device(id=f"{t}-pump-{i}", tenant=t, asset=f"{t}-pump-{i}", profile="pump"))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path / "p", mqtt_port=free_port(), http_port=None, auth=True,
                         admin_password=ADMIN_PASSWORD)
    async with Platform(cfg, clock=clock) as platform:
        await seed(platform)
        transport = httpx.ASGITransport(app=create_app(platform.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            e = Env(platform, client, clock)
            e.headers["admin"] = await e.login("admin", ADMIN_PASSWORD)
            await e.user("tina", "technician", "acme")
            await e.user("otto", "operator", "acme")
            await e.user("gus", "viewer", "globex")
            resp = await client.put(f"{API}/alert-rules", content=RULES, headers=e.headers["otto"])
            assert resp.status_code == 200, resp.text
            clock.advance(150_000)  # past the startup grace
            yield e


async def test_a_technician_works_an_incident_from_page_to_resolution(env: Env) -> None:
    t = env.clock.now_ms()
    await env.telemetry("acme-pump-1", "acme", 70, 84, 86)
    [inc] = await env.call("GET", "/incidents?inbox=true", "tina")
    assert (inc["status"], inc["assets"], inc["paged_at"], inc["route"]) == ("open", ["acme-pump-1"], None, "urgent")
    await env.at(t + 30_000)
    inc = await env.call("GET", f"/incidents/{inc['id']}", "tina")
    assert inc["paged_at"] == t - 1000 + 30_000  # 30 s after it opened, at its first sample over 80
    assert inc["page_channels"] == []  # this platform has no channel: the page reached no one, and says so
    [alert] = inc["alerts"]
    assert (alert["kind"], alert["first_seen"], alert["status"]) == ("hot", t - 1000, "open")
    assert alert["explanation"] == {"temp": 1.0} and alert["message"] == "temp 84 C above 80 C"  # value, limit, unit
    iid = inc["id"]
    done = await env.call("POST", f"/incidents/{iid}/acknowledge", "tina", json={"note": "on it"})
    assert (done["status"], done["acknowledged_by"]) == ("acknowledged", "tina")
    await env.call("POST", f"/incidents/{iid}/acknowledge", "tina", status=409)
    await env.call("POST", f"/incidents/{iid}/assign", "tina", json={"to": "tina"})
    await env.call("POST", f"/incidents/{iid}/start", "tina")
    await env.call("POST", f"/incidents/{iid}/comments", "tina", status=201, json={"text": "cooling fan dead"})
    fb = await env.call("POST", f"/incidents/{iid}/feedback", "tina", status=201,
                        json={"verdict": "confirmed", "fault_type": "fan_failure"})
    assert fb[0]["label"]["verdict"] == "confirmed" and fb[0]["label"]["by"] == "tina"
    await env.call("POST", f"/incidents/{iid}/feedback", "tina", status=422, json={"verdict": "false_alarm"})
    await env.call("POST", f"/incidents/{iid}/resolve", "tina", json={"note": "fan replaced"})
    await env.telemetry("acme-pump-1", "acme", 70)  # the condition clears; the incident closes by itself later
    await env.at(t + 30_000 + 300_000)
    rec = await env.call("GET", f"/incidents/{iid}", "tina")
    assert rec["status"] == "resolved" and rec["resolved_at"] is not None and rec["assignee"] == "tina"
    assert [a["status"] for a in rec["alerts"]] == ["resolved"]
    await env.call("POST", f"/incidents/{iid}/close", "tina")
    rec = await env.call("GET", f"/incidents/{iid}", "tina")
    people = [(e["kind"], e["actor"]) for e in rec["timeline"] if e["actor"] != "system"]
    assert people == [("status", "tina"), ("assigned", "tina"), ("status", "tina"), ("comment", "tina"),
                      ("verdict", "tina"), ("status", "tina"), ("status", "tina")]
    assert "acme-pump-1/hot: confirmed (fan_failure)" in [e["detail"] for e in rec["timeline"]]
    assert rec["status"] == "closed" and await env.call("GET", "/incidents?inbox=true", "tina") == []
    # the verdict is a training label with its data window and the rule's version, exportable
    csv = await env.call("GET", "/labels?format=csv", "tina")
    [label] = read_labels_csv(io.StringIO(csv.text))
    assert (label.asset, label.rule, label.fault_type, label.model_version) == (
        "acme-pump-1", "hot", "fan_failure", "rules:hot@1")
    assert label.start_ms == t - 1000 - 600_000 and label.end_ms >= t - 1000
    parquet = await env.call("GET", "/labels?format=parquet", "tina")
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.column("fault_type").to_pylist() == ["fan_failure"]
    # another tenant's people see none of it
    assert await env.call("GET", "/incidents", "gus") == [] and await env.call("GET", "/labels", "gus") == []
    await env.call("GET", f"/incidents/{iid}", "gus", status=404)
    await env.call("POST", f"/incidents/{iid}/close", "gus", status=403)  # a viewer may not act at all


async def test_why_was_i_not_paged(env: Env) -> None:
    t = env.clock.now_ms()
    mw = await env.call("POST", "/maintenance-windows", "otto", status=201, json={
        "scope": "asset", "target": "acme-pump-1", "duration_s": 3600, "reason": "seal replacement"})
    si = await env.call("POST", "/silences", "tina", status=201, json={
        "scope": "asset", "target": "acme-pump-2", "rule": "hot", "duration_s": 600, "reason": "sensor being fixed"})
    await env.call("POST", "/silences", "tina", status=404, json={
        "scope": "asset", "target": "globex-pump-1", "duration_s": 600, "reason": "not mine"})
    await env.telemetry("acme-pump-1", "acme", 90)
    await env.telemetry("acme-pump-2", "acme", 90)
    await env.at(t + 60_000)
    why = {w["asset"]: w for w in await env.call("GET", "/suppressions", "tina")}
    assert why["acme-pump-1"]["reason"] == "maintenance" and mw["id"] in why["acme-pump-1"]["detail"]
    assert "otto" in why["acme-pump-1"]["detail"] and "seal replacement" in why["acme-pump-1"]["detail"]
    assert why["acme-pump-2"]["reason"] == "silenced" and "tina" in why["acme-pump-2"]["detail"]
    assert all(i["paged_at"] is None for i in await env.call("GET", "/incidents", "tina"))
    assert await env.call("GET", "/suppressions", "gus") == []
    active = await env.call("GET", "/silences?active=true", "tina")
    assert [s["id"] for s in active] == [si["id"]]
    await env.call("DELETE", f"/silences/{si['id']}", "tina")
    assert await env.call("GET", "/silences?active=true", "tina") == []
    audit = [r["action"] for r in await env.call("GET", "/audit?limit=50")]
    assert {"alert.maintenance", "alert.silence", "alert.silence.end", "alert.rules"} <= set(audit)


async def test_the_rules_api_checks_documents_and_swaps_them(env: Env) -> None:
    bad = RULES.replace("kind: threshold", "kind: treshold")
    assert env.client is not None
    resp = await env.client.put(f"{API}/alert-rules", content=bad, headers=env.headers["otto"])
    assert resp.status_code == 422 and "line 4" in resp.json()["detail"] and "hot" in resp.json()["detail"]
    resp = await env.client.put(f"{API}/alert-rules", content=RULES, headers=env.headers["tina"])
    assert resp.status_code == 403, "a technician may not change the rules"
    cur = await env.call("GET", "/alert-rules", "tina")
    assert cur["version"] == 1 and [r["name"] for r in cur["rules"]] == ["hot"]
    colder = RULES.replace("above: 80", "above: 95")
    resp = await env.client.put(f"{API}/alert-rules", content=colder, headers=env.headers["otto"])
    assert resp.status_code == 200 and resp.json()["version"] == 2
    await env.telemetry("acme-pump-1", "acme", 90)  # over 80, under 95: no alert under version 2
    assert await env.call("GET", "/incidents", "tina") == []


async def test_a_gateway_outage_pages_once_for_two_hundred_silent_devices(tmp_path: Path) -> None:
    """200 devices behind a gateway fall silent when it goes offline, while another asset is noisy: one
    notification for the gateway with the 200 silences linked under it, one for the noisy asset, nothing else;
    when the gateway returns and data flows, the incident resolves."""
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path / "p", mqtt_port=free_port(), http_port=None)
    async with Platform(cfg, clock=clock) as p:
        await seed(p, pumps=201, tenants=("acme",))
        await p.registry.put_device(Device(id="acme-gw", tenant="acme", asset="acme-pump-201", profile="pump"))
        env = Env(p, None, clock)
        behind = [f"acme-pump-{i}" for i in range(1, 201)]
        resp = await p.alerts.replace_rules(SILENT, by="test")
        assert resp == 1

        async def heartbeat() -> None:
            hb = msgspec.structs.replace(beat("acme-gw", ts=clock.now_ms()), devices=behind)
            await p.store.write_heartbeats([GatewayHeartbeat(
                gateway="acme-gw", tenant="acme", ts_ms=hb.ts, received_ms=clock.now_ms(),
                heartbeat=encode(hb).decode(), devices=tuple(behind), dropped_samples=0)])

        async def all_report() -> None:
            msgs = []
            for dev in behind:
                env.seq[dev] = env.seq.get(dev, 0) + 1
                msgs.append((topic("acme", dev, TopicKind.TELEMETRY), encode(Telemetry(
                    dev, env.seq[dev], [Sample(ts=clock.now_ms(), values={"temp": 60.0})]))))
            await publish_all(p, msgs)
            assert await p.idle(60)

        for _ in range(3):  # all is well for a while
            clock.advance(60_000)
            await heartbeat()
            await all_report()
            await env.telemetry("acme-pump-201", "acme", 60)
            await p.alerts.tick()
        assert await p.store.list_incidents() == []
        outage = clock.now_ms()
        for k in range(1, 16):  # the gateway is gone for 15 minutes; pump 201 (not behind it) runs hot
            clock.advance(60_000)
            await env.telemetry("acme-pump-201", "acme", 90 if k % 4 == 1 else 70)
            await p.alerts.tick()
        pages = [e for i in await p.store.list_incidents() for e in await p.store.incident_timeline(i.id)
                 if e.kind in ("paged", "not-paged")]  # no channel configured here
        incidents = {i.kind: i for i in await p.store.list_incidents() if i.paged_at is not None}
        assert len(pages) == 2 and set(incidents) == {"gateway", "asset"}, pages
        gw = incidents["gateway"]
        assert gw.scope == "acme-gw" and gw.paged_at is not None and gw.paged_at > outage
        linked = await p.store.list_alerts(incident=gw.id, limit=1000)
        assert sorted(a.asset for a in linked if a.kind == "device-silent") == sorted(behind)
        assert incidents["asset"].assets == ("acme-pump-201",)
        why = await p.store.list_suppressions(reason="correlated", limit=1000)
        assert {w.asset for w in why} >= set(behind)
        # the gateway returns and its devices send again: every linked alert resolves, and the incident
        clock.advance(60_000)
        await heartbeat()
        await all_report()
        await p.alerts.tick()
        clock.advance(130_000)
        await heartbeat()
        await p.alerts.tick()
        rec = await p.store.get_incident(gw.id)
        assert rec.status == "resolved" and rec.resolved_at is not None
        assert not [a for a in await p.store.list_alerts(incident=gw.id, limit=1000) if a.status != "resolved"]


async def test_kpis_follow_the_lifecycle_a_technician_drives(env: Env) -> None:
    """Two alerts on two pumps: one acknowledged after 2 min, confirmed, repaired with 30 min of downtime; one a
    false alarm. The fleet's KPIs over the day match what the timeline says by hand."""
    t = env.clock.now_ms()
    await env.telemetry("acme-pump-1", "acme", 90)  # alert 1 opens at t
    await env.at(t + 30_000)  # it pages
    [inc1] = await env.call("GET", "/incidents?inbox=true", "tina")
    await env.at(t + 120_000)
    await env.call("POST", f"/incidents/{inc1['id']}/acknowledge", "tina")  # MTTA 120 s
    await env.call("POST", f"/incidents/{inc1['id']}/feedback", "tina", status=201,
                   json={"verdict": "confirmed", "fault_type": "overheating"})
    wo = await env.call("POST", "/work-orders", "tina", status=201, json={
        "asset": "acme-pump-1", "incident": inc1["id"], "downtime_start_ms": t + 180_000, "note": "fan"})
    await env.at(t + 20 * 60_000)
    await env.telemetry("acme-pump-2", "acme", 95)  # alert 2 opens at t + 20 min, in an incident of its own
    await env.at(t + 20 * 60_000 + 30_000)
    inc2 = next(i for i in await env.call("GET", "/incidents?inbox=true", "tina") if i["id"] != inc1["id"])
    await env.call("POST", f"/incidents/{inc2['id']}/feedback", "tina", status=201,
                   json={"verdict": "false_alarm", "reason": "sensor cleaned"})
    await env.at(t + 33 * 60_000)
    await env.call("POST", f"/work-orders/{wo['id']}/close", "tina", json={"downtime_end_ms": t + 33 * 60_000})
    assert await env.call("GET", "/work-orders", "gus") == []
    [fleet] = await env.call("GET", f"/kpis?group=fleet&days=1&end={t + 60 * 60_000}", "tina")
    assert (fleet["alerts"], fleet["acknowledged"], fleet["unacknowledged"]) == (2, 1, 1)
    assert fleet["mtta_ms"] == 120_000
    assert (fleet["confirmed"], fleet["false_alarms"], fleet["precision"]) == (1, 1, 0.5)
    assert (fleet["repairs"], fleet["mttr_repair_ms"], fleet["downtime_ms"]) == (1, 30 * 60_000, 30 * 60_000)
    # the data began at t, an hour before the period's end: too little to state availability or MTBF
    assert (fleet["observed_ms"], fleet["enough_data"], fleet["availability"], fleet["mtbf_ms"]) == (
        3_600_000, False, None, None)
    [later] = await env.call("GET", f"/kpis?group=fleet&days=2&end={t + 25 * 3_600_000}", "tina")
    assert (later["observed_ms"], later["enough_data"]) == (25 * 3_600_000, True)  # from t, not from the period start
    assert later["availability"] == pytest.approx(1 - 30 * 60_000 / (2 * 25 * 3_600_000))  # acme has 2 pumps
    assert later["mtbf_ms"] == pytest.approx(2 * 25 * 3_600_000 - 30 * 60_000)  # one failure
    assert (fleet["notifications"], fleet["raw_signals"], fleet["raw_per_notification"]) == (2, 2, 1.0)
    per_asset = {k["group"]: k for k in await env.call("GET", f"/kpis?group=asset&days=1&end={t + 3_600_000}",
                                                         "tina")}
    assert per_asset["acme-pump-1"]["failures"] == 1 and per_asset["acme-pump-2"]["mtbf_ms"] is None
    assert "globex-pump-1" not in per_asset
    daily = await env.call("GET", "/kpis/daily?days=3", "tina")
    assert len(daily) == 3 and sum(d["groups"]["fleet"]["alerts"] for d in daily) == 2


async def test_a_gateways_own_asset_is_not_alerted_as_silent_after_a_restart(tmp_path: Path) -> None:
    """A gateway reports by heartbeat, never by samples: the missing-data rules watch the machines behind it,
    not its own asset (it opened a device-silent incident on every gateway 5 min after a restart)."""
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path / "p", mqtt_port=free_port(), http_port=None)
    async with Platform(cfg, clock=clock) as p:
        await seed(p, pumps=1, tenants=("acme",))
        await p.registry.put_asset(Asset(id="acme-gw", line="acme-line"))
        await p.registry.put_device(Device(id="acme-gw", tenant="acme", asset="acme-gw", profile="pump"))
        await p.alerts.replace_rules(SILENT, by="test")

        async def heartbeat(platform: Platform) -> None:
            hb = beat("acme-gw", ts=clock.now_ms(), devices=["acme-pump-1"])
            await platform.store.write_heartbeats([GatewayHeartbeat(
                gateway="acme-gw", tenant="acme", ts_ms=hb.ts, received_ms=clock.now_ms(),
                heartbeat=encode(hb).decode(), devices=("acme-pump-1",), dropped_samples=0)])

        await heartbeat(p)  # the gateway has been running
    clock.advance(60_000)
    async with Platform(cfg, clock=clock) as p:  # a restart: every registered asset is watched from now
        for _ in range(10):  # the gateway beats for 10 minutes; its pump stays silent
            await heartbeat(p)
            clock.advance(60_000)
            await p.alerts.tick()
        silent = {a.asset for a in await p.store.list_alerts() if a.kind == "device-silent"}
        assert silent == {"acme-pump-1"}
