"""The API by construction: built from its services over a store and fakes (no broker, no platform), every route
enumerated from the app: authenticated unless it is one of the declared public ones, a body over its route's limit
refused before it is read, an answer documented, and alert state written by the alert service only."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from edgeloop.alerts.service import AlertService
from edgeloop.api import MAX_BODY, PUBLIC_PAGES, PUBLIC_ROUTES, Services, create_app
from edgeloop.api.limits import route_limits
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.clock import ManualClock
from edgeloop.errors import BrokerError
from edgeloop.identity.access import AccessService
from edgeloop.ingest.validate import Validator
from edgeloop.registry import Registry, RegistryService
from edgeloop.store import Store, open_store
from edgeloop.store.base import GatewayConfig, TelemetryChunk
from tests.support import HOT_RULES

T0 = 1_767_225_600_000
ADMIN_PASSWORD = "correct horse battery staple"


class FakeIngest:
    """Ingest as the API sees it, without a broker: nothing online, nothing received."""

    mqtt_connected = False

    def online(self, device: str) -> bool:
        return False

    def last_seen_ms(self, device: str) -> int | None:
        return None

    def dead_letters(self, device: str) -> int:
        return 0

    async def stats(self, tenant: str | None) -> dict[str, Any]:
        return {"now_ms": T0, "devices_total": 1}


@dataclass
class FakeGateways:
    """The broker-side control plane, refusing: no broker here."""

    pushed: list[str] = field(default_factory=list)

    async def push_gateway_config(self, gateway: str, text: str, *, by: str, source: str = "") -> GatewayConfig:
        self.pushed.append(gateway)
        raise BrokerError("no broker in this test")

    async def revoke_device(self, device_id: str, *, by: str, source: str = "") -> Any:
        raise BrokerError("no broker in this test")


def registry() -> Registry:
    reg = Registry()
    reg.tenants["acme"] = Tenant(id="acme")
    reg.sites["s1"] = Site(id="s1", tenant="acme")
    reg.lines["l1"] = Line(id="l1", site="s1")
    reg.profiles["p"] = DeviceProfile(name="p", channels=[ChannelSpec(name="temp", unit="C")])
    reg.assets["a0"] = Asset(id="a0", line="l1", criticality=4)
    reg.devices["d0"] = Device(id="d0", tenant="acme", asset="a0", profile="p")
    return reg


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    alerts: AlertService
    store: Store
    clock: ManualClock


async def services(store: Store, clock: ManualClock, *, auth: bool) -> tuple[Services, AlertService]:
    reg = registry()
    alerts = AlertService(store=store, registry=reg, clock=clock)
    await alerts.start()
    await alerts.replace_rules(HOT_RULES, by="ops")
    access = AccessService(store=store, clock=clock)
    if auth:
        await access.bootstrap_admin(ADMIN_PASSWORD)
    return Services(store=store, registry=RegistryService(store=store, registry=reg, validator=Validator(registry=reg)),
                    access=access, alerts=alerts, ingest=FakeIngest(), gateways=FakeGateways(), clock=clock,
                    auth=auth), alerts


async def make_api(tmp_path: Path, *, auth: bool, **kw: Any) -> AsyncIterator[Api]:
    clock = ManualClock(T0)
    async with open_store(f"sqlite:///{tmp_path / 'edgeloop.db'}") as store:
        svc, alerts = await services(store, clock, auth=auth)
        app = create_app(svc, **kw)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            yield Api(app, client, alerts, store, clock)


@pytest.fixture
async def open_api(tmp_path: Path) -> AsyncIterator[Api]:
    async for api in make_api(tmp_path, auth=False):
        yield api


@pytest.fixture
async def guarded_api(tmp_path: Path) -> AsyncIterator[Api]:
    async for api in make_api(tmp_path, auth=True):
        yield api


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every API route the app has."""
    return sorted((m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)  # "1" is a valid value of every path parameter (ids and names)


async def raise_hot(api: Api, seq: int, at: int, temps: list[float]) -> None:
    ts = np.array([at + k * 1000 for k in range(len(temps))], dtype=np.int64)
    api.alerts.observe_run(TelemetryChunk(device="d0", seq=seq, channels=("temp",), ts=ts, tenant="acme", asset="a0",
                                          values=np.array(temps, dtype=np.float64).reshape(-1, 1)))
    await api.alerts.flush()


# -- the API without a broker ----------------------------------------------------------------------------------


async def test_the_api_runs_over_its_services_without_a_broker(open_api: Api) -> None:
    health = (await open_api.client.get("/api/v1/health")).json()
    assert (health["status"], health["store"], health["mqtt_connected"], health["auth"]) == (
        "ok", "sqlite", False, False)
    [asset] = (await open_api.client.get("/api/v1/assets")).json()
    assert (asset["id"], asset["site"], asset["tenant"], asset["status"]) == ("a0", "s1", "acme", "no_data")
    device = (await open_api.client.get("/api/v1/devices/d0")).json()
    assert (device["online"], device["last_seen_ms"], device["channels"][0]["name"]) == (False, None, "temp")
    assert (await open_api.client.get("/api/v1/stats")).json() == {"now_ms": T0, "devices_total": 1}


# -- one writer of alert state ---------------------------------------------------------------------------------


async def test_an_acknowledged_alert_acknowledges_its_incident(open_api: Api) -> None:
    api = open_api
    t = T0 + 3 * 60_000
    api.clock.advance(t - T0)
    await raise_hot(api, 1, t, [85, 86])
    [alert] = (await api.client.get("/api/v1/alerts")).json()
    resp = await api.client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"by": "alice"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["acknowledged_by"]) == ("acknowledged", "alice")
    incident = (await api.client.get(f"/api/v1/incidents/{alert['incident']}")).json()
    assert (incident["status"], incident["acknowledged_by"]) == ("acknowledged", "alice")
    said = [(e["kind"], e["actor"]) for e in incident["timeline"]]
    assert ("status", "alice") in said, said
    # the incident's own acknowledgement stops its escalation: a second one is a conflict, as for the alert
    again = await api.client.post(f"/api/v1/incidents/{alert['incident']}/acknowledge", json={"by": "bob"})
    assert again.status_code == 409


async def test_a_resolved_alert_is_closed_in_the_engine_and_a_new_raise_is_a_new_alert(open_api: Api) -> None:
    api = open_api
    t = T0 + 3 * 60_000
    api.clock.advance(t - T0)
    await raise_hot(api, 1, t, [85, 86])
    [alert] = (await api.client.get("/api/v1/alerts")).json()
    resp = await api.client.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"by": "bob"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["resolved_by"]) == ("resolved", "bob")
    assert api.alerts.engine.open_alert("a0", "hot") is None, "the engine no longer holds it open"
    api.clock.advance(60_000)  # a short fault still pages (once its page is due); then its incident resolves
    await api.alerts.tick()
    incident = (await api.client.get(f"/api/v1/incidents/{alert['incident']}")).json()
    assert incident["status"] == "resolved", "its only alert is resolved"

    await raise_hot(api, 2, t + 10_000, [70])  # the condition clears ...
    await raise_hot(api, 3, t + 20_000, [90])  # ... and returns: a new alert, not a repeat of the resolved one
    rows = {a["id"]: a for a in (await api.client.get("/api/v1/alerts")).json()}
    assert (rows[alert["id"]]["status"], rows[alert["id"]]["resolved_by"]) == ("resolved", "bob")
    assert rows[alert["id"]]["count"] == alert["count"], "nothing merged into the resolved alert"
    [new] = [a for a in rows.values() if a["id"] != alert["id"]]
    assert (new["status"], new["first_seen"]) == ("open", t + 20_000)
    assert (await api.client.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"by": "bob"})).status_code == 409


# -- every route, enumerated from the app ----------------------------------------------------------------------


async def test_every_route_but_the_public_ones_answers_401_anonymously(guarded_api: Api) -> None:
    app, client = guarded_api.app, guarded_api.client
    protected = [(m, p) for m, p in operations(app) if (m, p) not in PUBLIC_ROUTES]
    assert len(protected) >= 60, "the test must see the whole API"
    for method, path in protected:
        if not path.startswith("/api/"):
            assert path in PUBLIC_PAGES, f"{method} {path}: a page outside the API must be declared public"
            continue
        resp = await client.request(method, concrete(path), json={})
        assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
        assert resp.headers.get("www-authenticate") == "Bearer"
    for route in app.routes:  # the documentation pages and static files: declared public, nothing else
        if isinstance(route, Mount | Route) and not isinstance(route, APIRoute):
            assert route.path in PUBLIC_PAGES, route.path
    assert (await client.get("/api/v1/health")).status_code == 200
    assert (await client.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
            ).status_code == 200
    assert (await client.post("/api/v1/provision", json={"claim": "c", "serial": "s", "csr": "x"})).status_code == 503


async def test_every_body_route_refuses_a_body_over_its_limit_before_reading_it(open_api: Api) -> None:
    """Declared too large: 413 before the route runs. Streamed without a length: never read past the limit (by
    more than the chunk in flight), and 413 once it is passed."""
    app, client = open_api.app, open_api.client
    limits = {(m, p): n for m, p, n in route_limits(app.routes)}
    writes = [(m, p) for m, p in operations(app) if m in ("POST", "PUT", "PATCH")]
    assert set(limits) <= set(writes) and len(limits) >= 35, "each route that reads a body declares its limit"
    assert len(set(limits.values())) >= 4, "limits are per route"
    chunk = 64 * 1024
    for method, path in writes:
        limit = limits.get((method, path), MAX_BODY)
        declared = await client.request(method, concrete(path), content=b"x" * (limit + 1))
        assert declared.status_code == 413, (method, path, declared.status_code)
        assert "limit" in declared.json()["detail"]
        sent: list[int] = []

        async def chunks(n: int = limit + 1, sent: list[int] = sent) -> AsyncIterator[bytes]:
            while n > 0:
                part = min(n, chunk)
                sent.append(part)
                n -= part
                yield b"x" * part

        streamed = await client.request(method, concrete(path), content=chunks())
        assert sum(sent) <= limit + chunk, (method, path, sum(sent))
        if sum(sent) > limit:
            assert streamed.status_code == 413, (method, path, streamed.status_code)


async def test_the_public_routes_are_rate_limited_before_they_read_anything(tmp_path: Path) -> None:
    async for api in make_api(tmp_path, auth=True, public_rate=(0.001, 2)):
        read: list[bytes] = []

        async def body(read: list[bytes] = read) -> AsyncIterator[bytes]:
            read.append(b"username=admin&password=wrong")
            yield read[-1]

        for _ in range(2):
            assert (await api.client.post("/api/v1/auth/token", content=body(), headers={
                "content-type": "application/x-www-form-urlencoded"})).status_code == 401
        assert len(read) == 2
        limited = await api.client.post("/api/v1/auth/token", content=body())
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert len(read) == 2, "refused before its body was read"
        assert (await api.client.get("/api/v1/health")).status_code == 429, "every public route counts"
        assert (await api.client.get("/api/v1/assets")).status_code == 401, "the others are not limited here"


async def test_every_route_documents_what_it_answers(open_api: Api) -> None:
    doc = (await open_api.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    undocumented = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            if list(ok) == ["204"]:
                continue
            schema = next(iter(ok.values())).get("content", {}).get("application/json", {}).get("schema", {})
            ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
            if ref is None or ref.rsplit("/", 1)[1] not in schemas:
                undocumented.append(f"{method.upper()} {path}")
    assert not undocumented, f"routes without a documented answer: {undocumented}"
    assert doc["paths"]["/api/v1/alerts"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/Alert"}}
    assert "acknowledged_by" in schemas["Alert"]["properties"]


async def test_a_text_no_store_can_keep_is_refused_at_the_door_and_the_incident_lives_on(open_api: Api) -> None:
    """A NUL in a comment would be refused by PostgreSQL in every later write of its incident; the API refuses it
    (422 naming the field) before any service takes it in, on every body route."""
    api = open_api
    t = T0 + 3 * 60_000
    api.clock.advance(t - T0)
    await raise_hot(api, 1, t, [85, 86])
    [alert] = (await api.client.get("/api/v1/alerts")).json()
    path = f"/api/v1/incidents/{alert['incident']}/comments"
    refused = await api.client.post(path, content=b'{"text": "valve\\u0000 stuck"}',
                                    headers={"Content-Type": "application/json"})
    assert refused.status_code == 422, refused.text
    assert "$.text holds a NUL character" in refused.json()["detail"]
    kept = await api.client.post(path, json={"text": "valve \\u0000 stuck, C:\\\\u0000 is a path"})
    assert kept.status_code == 201, kept.text
    again = await api.client.post(path, json={"text": "checked"})
    assert again.status_code == 201, again.text
    timeline = (await api.client.get(f"/api/v1/incidents/{alert['incident']}")).json()["timeline"]
    said = [str(e) for e in timeline]
    assert any("checked" in e for e in said) and not any("\x00" in e for e in said), said
