"""Tenant isolation by construction: every write route of the API, tried across tenants as every role, is refused
and changes nothing; entries never change tenant except by the platform administrator (audited with before and
after); rules, stats and dead letters are each tenant's own.

The route table below must name every write route (POST, PUT, PATCH, DELETE) the app has: a new one fails
``test_every_write_route_has_a_cross_tenant_case`` until its cross-tenant case is written here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.store import Store
from tests.support import HOT_RULES
from tests.test_api import publish_all
from tests.test_model_registry import tiny_onnx

API = "/api/v1"
T0 = 1_795_000_000_000
ADMIN_PASSWORD = "tenancy-admin-password"
ROLES = ("viewer", "technician", "operator", "admin")
#: globex's action policy: a person runs it; it needs an operator's approval (so a decision waits for one).
GLOBEX_POLICY = """\
policies:
  - {name: cool-down, mode: "on", trigger: {kind: person}, approval: one,
     action: {kind: setpoint, actuator: fan, value: 1, device: globex-dev}}
"""
TUNED_RULES = HOT_RULES + "    tune: {mode: propose, after_false_alarms: 1, period_s: 3600, max_step: 5, max: 95}\n"


@dataclass
class Env:
    platform: Platform
    client: httpx.AsyncClient
    clock: ManualClock
    headers: dict[str, dict[str, str]]
    ids: dict[str, Any]  # globex's objects the attacks aim at

    async def call(self, method: str, path: str, who: str = "admin", status: int = 200, **kw: Any) -> Any:
        resp = await self.client.request(method, f"{API}{path}", headers=self.headers[who], **kw)
        assert resp.status_code == status, (method, path, who, resp.status_code, resp.text)
        return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp

    async def telemetry(self, device: str, tenant: str, value: float, seq: int) -> None:
        sample = Sample(ts=self.clock.now_ms(), values={"temp": value})
        await publish_all(self.platform, [(topic(tenant, device, TopicKind.TELEMETRY),
                                           encode(Telemetry(device, seq, [sample])))])
        assert await self.platform.idle(30)


async def _login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    resp = await client.post(f"{API}/auth/token", data={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """Tenants acme (the attacker's) and globex (the victim's), each with site, line, asset and device; globex
    has an alert in an incident, a tuning proposal, a silence, a maintenance window, a work order, an API key
    and a rule document of its own. Users: the platform admin and one acme user per role."""
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path / "p", mqtt_port=free_port(), http_port=None, auth=True,
                         admin_password=ADMIN_PASSWORD, pki_dir=tmp_path / "pki", create_pki=True)
    async with Platform(cfg, clock=clock) as platform:
        reg = platform.registry
        await reg.put_profile(DeviceProfile(name="pump", channels=[ChannelSpec(name="temp", unit="C")]))
        for t in ("acme", "globex"):
            await reg.put_tenant(Tenant(id=t, name=t.title()))
            await reg.put_site(Site(id=f"{t}-site", tenant=t))
            await reg.put_line(Line(id=f"{t}-line", site=f"{t}-site"))
            await reg.put_asset(Asset(id=f"{t}-asset", line=f"{t}-line"))
            await reg.put_device(Device(id=f"{t}-dev", tenant=t, asset=f"{t}-asset", profile="pump"))
        transport = httpx.ASGITransport(app=create_app(platform.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            e = Env(platform, client, clock, {"admin": await _login(client, "admin", ADMIN_PASSWORD)}, {})
            for role in ROLES:
                name = f"acme-{role}"
                await e.call("POST", "/users", status=201, json={"username": name, "password": f"{name}-password",
                                                                 "role": role, "tenant": "acme"})
                e.headers[name] = await _login(client, name, f"{name}-password")
            await e.call("PUT", "/alert-rules", content=TUNED_RULES)  # the platform's default
            clock.advance(150_000)
            await e.telemetry("globex-dev", "globex", 90.0, 1)
            [alert] = await e.call("GET", "/alerts")
            e.ids["alert"], e.ids["incident"] = alert["id"], alert["incident"]
            await e.call("POST", f"/alerts/{alert['id']}/feedback", status=201,
                         json={"verdict": "false_alarm", "reason": "sensor next to the heater"})
            [proposal] = await e.call("GET", "/tuning/proposals")
            e.ids["proposal"] = proposal["id"]
            target = {"scope": "asset", "target": "globex-asset", "reason": "planned"}
            silence = await e.call("POST", "/silences", status=201, json={**target, "duration_s": 3600})
            e.ids["silence"] = silence["id"]
            await e.call("POST", "/maintenance-windows", status=201, json={**target, "duration_s": 3600})
            e.ids["work_order"] = (await e.call("POST", "/work-orders", status=201,
                                                json={"asset": "globex-asset"}))["id"]
            e.ids["api_key"] = (await e.call("POST", "/api-keys", status=201, json={
                "name": "globex-historian", "role": "viewer", "tenant": "globex"}))["id"]
            await e.call("POST", "/users", status=201, json={"username": "globex-viewer", "role": "viewer",
                                                             "password": "globex-viewer-password", "tenant": "globex"})
            e.headers["globex-viewer"] = await _login(client, "globex-viewer", "globex-viewer-password")
            await e.call("PUT", "/policies?tenant=globex", content=GLOBEX_POLICY)
            decision = await e.call("POST", "/policies/cool-down/run?tenant=globex", status=201,
                                    json={"asset": "globex-asset"})
            assert decision["state"] == "awaiting_approval", decision  # an approval by acme would send it
            e.ids["decision"] = decision["id"]
            e.ids["hold"] = (await e.call("POST", "/holds", status=201, json={
                "target": "globex-asset", "duration_s": 3600, "reason": "globex's own override"}))["id"]
            await e.call("PUT", "/alert-rules?tenant=globex", content=HOT_RULES)
            await e.call("PUT", "/alert-rules", "acme-operator", content=HOT_RULES)
            # Neither tenant's rule change dropped the pending proposal.
            assert [p["id"] for p in await e.call("GET", "/tuning/proposals")] == [proposal["id"]]
            yield e


# -- every write route, across tenants ---------------------------------------------------------------------

Attempt = tuple[str, dict[str, Any]]  # (concrete path, request keyword arguments)
# 409: an id that exists (POST never overwrites), or a parent that does not exist as far as the caller can tell
REFUSED = {403, 404, 409}
SITE_MOVE = {"id": "acme-site", "tenant": "globex"}
PROFILE = {"name": "pump", "channels": [{"name": "temp"}, {"name": "stolen"}]}


def cases(ids: dict[str, Any]) -> dict[tuple[str, str], list[Attempt]]:
    """For each write route: the cross-tenant requests an acme user could try against globex."""
    alert, incident = ids["alert"], ids["incident"]
    action = {"json": {"note": "not yours"}}
    on_globex = {"scope": "asset", "target": "globex-asset", "reason": "sabotage", "duration_s": 3600}
    return {
        ("POST", "/api/v1/users"): [("/users", {"json": {"username": "mole", "password": "mole-password-1",
                                                         "role": "viewer", "tenant": "globex"}}),
                                    ("/users", {"json": {"username": "mole", "password": "mole-password-1",
                                                         "role": "viewer", "tenant": None}})],
        ("POST", "/api/v1/api-keys"): [("/api-keys", {"json": {"name": "k", "role": "viewer", "tenant": "globex"}})],
        ("DELETE", "/api/v1/api-keys/{key_id}"): [(f"/api-keys/{ids['api_key']}", {})],
        **{("POST", f"/api/v1/users/{{username}}/{verb}"): [(f"/users/globex-viewer/{verb}", {})]
           for verb in ("disable", "enable", "revoke-tokens")},
        ("POST", "/api/v1/users/{username}/password"): [("/users/globex-viewer/password", {}),
                                                         ("/users/globex-viewer/password",
                                                          {"json": {"password": "taken-over-password"}})],
        ("DELETE", "/api/v1/users/{username}"): [("/users/globex-viewer", {})],
        ("POST", "/api/v1/tenants"): [("/tenants", {"json": {"id": "globex", "name": "stolen"}}),
                                      ("/tenants", {"json": {"id": "initech"}})],
        ("PUT", "/api/v1/tenants/{tenant_id}"): [("/tenants/globex", {"json": {"id": "globex", "name": "stolen"}})],
        ("POST", "/api/v1/sites"): [("/sites", {"json": {"id": "globex-site", "tenant": "acme"}}),
                                    ("/sites", {"json": {"id": "new-site", "tenant": "globex"}})],
        ("PUT", "/api/v1/sites/{site_id}"): [("/sites/globex-site", {"json": {"id": "globex-site", "tenant": "acme"}}),
                                             ("/sites/acme-site", {"json": SITE_MOVE})],
        ("POST", "/api/v1/lines"): [("/lines", {"json": {"id": "globex-line", "site": "acme-site"}}),
                                    ("/lines", {"json": {"id": "new-line", "site": "globex-site"}})],
        ("PUT", "/api/v1/lines/{line_id}"): [
            ("/lines/globex-line", {"json": {"id": "globex-line", "site": "acme-site"}}),
            ("/lines/acme-line", {"json": {"id": "acme-line", "site": "globex-site"}})],
        ("POST", "/api/v1/assets"): [("/assets", {"json": {"id": "globex-asset", "line": "acme-line"}}),
                                     ("/assets", {"json": {"id": "new-asset", "line": "globex-line"}})],
        ("PUT", "/api/v1/assets/{asset_id}"): [
            ("/assets/globex-asset", {"json": {"id": "globex-asset", "line": "acme-line"}}),
            ("/assets/acme-asset", {"json": {"id": "acme-asset", "line": "globex-line"}})],
        ("POST", "/api/v1/devices"): [
            ("/devices", {"json": {"id": "globex-dev", "tenant": "acme", "asset": "acme-asset", "profile": "pump"}}),
            ("/devices", {"json": {"id": "new-dev", "tenant": "globex", "asset": "globex-asset", "profile": "pump"}})],
        ("PUT", "/api/v1/devices/{device_id}"): [
            ("/devices/globex-dev", {"json": {"id": "globex-dev", "tenant": "acme", "asset": "acme-asset",
                                              "profile": "pump"}}),
            ("/devices/acme-dev", {"json": {"id": "acme-dev", "tenant": "globex", "asset": "globex-asset",
                                            "profile": "pump"}}),
            ("/devices/acme-dev", {"json": {"id": "acme-dev", "tenant": "acme", "asset": "globex-asset",
                                            "profile": "pump"}})],
        # Profiles are shared by every tenant: only the platform may change them.
        ("POST", "/api/v1/profiles"): [("/profiles", {"json": PROFILE})],
        ("PUT", "/api/v1/profiles/{profile_name}"): [("/profiles/pump", {"json": PROFILE})],
        ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): [(f"/alerts/{alert}/acknowledge", {})],
        ("POST", "/api/v1/alerts/{alert_id}/resolve"): [(f"/alerts/{alert}/resolve", {})],
        **{("POST", f"/api/v1/incidents/{{incident_id}}/{verb}"): [(f"/incidents/{incident}/{verb}", action)]
           for verb in ("acknowledge", "start", "resolve", "close", "reopen")},
        ("POST", "/api/v1/incidents/{incident_id}/assign"): [(f"/incidents/{incident}/assign", {"json": {"to": "x"}})],
        ("POST", "/api/v1/incidents/{incident_id}/comments"): [(f"/incidents/{incident}/comments",
                                                                {"json": {"text": "x"}})],
        ("POST", "/api/v1/alerts/{alert_id}/feedback"): [(f"/alerts/{alert}/feedback", {"json": {
            "verdict": "false_alarm", "reason": "x"}})],
        ("POST", "/api/v1/incidents/{incident_id}/feedback"): [(f"/incidents/{incident}/feedback", {"json": {
            "verdict": "false_alarm", "reason": "x"}})],
        ("POST", "/api/v1/tuning/proposals/{proposal_id}/approve"): [(f"/tuning/proposals/{ids['proposal']}/approve",
                                                                      {})],
        ("POST", "/api/v1/tuning/proposals/{proposal_id}/reject"): [(f"/tuning/proposals/{ids['proposal']}/reject",
                                                                     {})],
        ("POST", "/api/v1/work-orders"): [("/work-orders", {"json": {"asset": "globex-asset"}})],
        ("POST", "/api/v1/work-orders/{order_id}/close"): [(f"/work-orders/{ids['work_order']}/close", {})],
        ("PUT", "/api/v1/alert-rules"): [("/alert-rules?tenant=globex", {"content": "version: 1\nrules: []\n"})],
        ("POST", "/api/v1/maintenance-windows"): [("/maintenance-windows", {"json": on_globex}),
                                                  ("/maintenance-windows", {"json": {**on_globex, "scope": "site",
                                                                                     "target": "globex-site"}})],
        ("POST", "/api/v1/silences"): [("/silences", {"json": on_globex}),
                                       ("/silences", {"json": {**on_globex, "scope": "line",
                                                               "target": "globex-line"}})],
        ("DELETE", "/api/v1/silences/{silence_id}"): [(f"/silences/{ids['silence']}", {})],
        ("PUT", "/api/v1/gateways/{gateway_id}/config"): [("/gateways/globex-dev/config", {"json": {
            "config": "agent: {gateway: globex-dev, tenant: globex}\n"}})],
        ("POST", "/api/v1/enrollments"): [("/enrollments", {"json": {"group": "g", "tenant": "globex",
                                                                     "line": "globex-line", "profile": "pump"}}),
                                          ("/enrollments", {"json": {"group": "g", "tenant": "acme",
                                                                     "line": "globex-line", "profile": "pump"}}),
                                          ("/enrollments", {"json": {"group": "g", "tenant": "acme",
                                                                     "line": "acme-line", "profile": "pump",
                                                                     "asset": "globex-asset"}})],
        ("POST", "/api/v1/devices/{device_id}/revoke"): [("/devices/globex-dev/revoke", {})],
        # Models are shared by every tenant (a detector model serves a profile): only the platform changes them.
        ("POST", "/api/v1/models/import"): [("/models/import?kind=edge&name=edge.stolen", {"content": tiny_onnx()})],
        ("POST", "/api/v1/models/{name}/promote"): [("/models/detector.pump/promote", {"json": {
            "version": 0, "reason": "sabotage"}})],
        ("POST", "/api/v1/models/{name}/rollback"): [("/models/detector.pump/rollback", {"json": {
            "reason": "sabotage"}})],
        ("POST", "/api/v1/training-jobs"): [("/training-jobs", {"json": {"profile": "pump"}})],
        ("POST", "/api/v1/campaigns"): [("/campaigns", {"json": {"model": "detector.pump@1"}})],
        ("POST", "/api/v1/campaigns/{campaign_id}/approve"): [("/campaigns/c-pump-1/approve", {})],
        ("POST", "/api/v1/campaigns/{campaign_id}/abort"): [("/campaigns/c-pump-1/abort", {"json": {
            "reason": "sabotage"}})],
        ("PUT", "/api/v1/policies"): [("/policies?tenant=globex", {"content": GLOBEX_POLICY})],
        ("POST", "/api/v1/policies/{name}/run"): [
            ("/policies/cool-down/run?tenant=globex", {"json": {"asset": "globex-asset"}}),
            ("/policies/cool-down/run", {"json": {"asset": "globex-asset"}})],
        ("POST", "/api/v1/policies/{name}/replay"): [
            ("/policies/cool-down/replay?tenant=globex", {"json": {"from_ms": 0, "to_ms": 1}}),
            ("/policies/cool-down/replay", {"json": {"from_ms": 0, "to_ms": 1}})],
        ("POST", "/api/v1/decisions/{decision_id}/approve"): [(f"/decisions/{ids['decision']}/approve", {"json": {}})],
        ("POST", "/api/v1/decisions/{decision_id}/reject"): [(f"/decisions/{ids['decision']}/reject", {"json": {}})],
        ("POST", "/api/v1/holds"): [
            ("/holds", {"json": {"target": "globex-asset", "duration_s": 60, "reason": "sabotage"}}),
            ("/holds?tenant=globex", {"json": {"target": "policy:cool-down", "duration_s": 60, "reason": "x"}})],
        ("POST", "/api/v1/holds/{hold_id}/release"): [(f"/holds/{ids['hold']}/release", {})],
    }


#: Write routes without a cross-tenant variant, and why.
NOT_TENANT_SCOPED = {
    ("POST", "/api/v1/auth/token"): "logging in: acts on no tenant's data",
    ("POST", "/api/v1/auth/logout"): "ends the caller's own token only",
    ("POST", "/api/v1/provision"): "a device's claim decides its tenant (tests/test_provisioning.py)",
    ("POST", "/api/v1/renew"): "a device's current certificate decides its identity (tests/test_provisioning.py)",
}


def write_routes(app: Any) -> set[tuple[str, str]]:
    return {(m, r.path) for r in app.routes if isinstance(r, APIRoute)
            for m in r.methods & {"POST", "PUT", "PATCH", "DELETE"}}


async def test_every_write_route_has_a_cross_tenant_case(env: Env) -> None:
    known = set(cases(env.ids)) | set(NOT_TENANT_SCOPED)
    routes = write_routes(create_app(env.platform.services))
    assert routes - known == set(), "write routes without a cross-tenant case in tests/test_tenancy.py"
    assert known - routes == set(), "cases for routes the app no longer has"


async def state(env: Env) -> dict[str, Any]:
    """Everything an attack could change, as the platform administrator sees it."""
    out: dict[str, Any] = {}
    for path in ("/tenants", "/sites", "/lines", "/assets", "/devices", "/profiles", "/alerts", "/incidents",
                 f"/incidents/{env.ids['incident']}", "/silences", "/maintenance-windows", "/work-orders", "/users",
                 "/labels", "/tuning/proposals", "/alert-rules", "/alert-rules?tenant=globex",
                 "/alert-rules?tenant=acme", "/gateways/globex-dev/config", "/dead-letters", "/models",
                 "/policies?tenant=globex", "/decisions", f"/decisions/{env.ids['decision']}", "/holds",
                 "/commands"):
        out[path] = await env.call("GET", path)
    out["globex api key"] = await env.platform.store.get_credential(env.ids["api_key"])
    out["globex user"] = await env.platform.store.get_user("globex-viewer")  # its password hash too
    me = await env.client.get(f"{API}/auth/me", headers=env.headers["globex-viewer"])  # its session still works
    out["globex session"] = (me.status_code, me.json())
    out["enrollment g"] = await env.platform.store.get_enrollment("g")
    out["overrides"] = await env.platform.store.list_overrides()
    return out


@pytest.mark.parametrize("role", ROLES)
async def test_cross_tenant_writes_are_refused_and_change_nothing(env: Env, role: str) -> None:
    who = f"acme-{role}"
    before = await state(env)
    for (method, _), attempts in cases(env.ids).items():
        for path, kw in attempts:
            resp = await env.client.request(method, f"{API}{path}", headers=env.headers[who], **kw)
            assert resp.status_code in REFUSED, (who, method, path, resp.status_code, resp.text)
            assert await state(env) == before, (who, method, path, "changed something")


# -- the takeover of the issue, and what only the platform may do ------------------------------------------


async def test_an_operator_cannot_take_over_another_tenants_device_or_site(env: Env) -> None:
    op = "acme-operator"
    device = {"id": "globex-dev", "tenant": "acme", "asset": "acme-asset", "profile": "pump"}
    assert (await env.client.post(f"{API}/devices", json=device, headers=env.headers[op])).status_code == 409
    assert (await env.client.put(f"{API}/devices/globex-dev", json=device, headers=env.headers[op])).status_code == 404
    site = {"id": "globex-site", "tenant": "acme"}
    assert (await env.client.post(f"{API}/sites", json=site, headers=env.headers[op])).status_code == 409
    assert (await env.client.put(f"{API}/sites/globex-site", json=site, headers=env.headers[op])).status_code == 404
    # Another tenant's asset answers like one that does not exist (no probing ids across tenants).
    under = {"id": "acme-dev-2", "tenant": "acme", "profile": "pump"}
    foreign = await env.client.post(f"{API}/devices", json={**under, "asset": "globex-asset"}, headers=env.headers[op])
    unknown = await env.client.post(f"{API}/devices", json={**under, "asset": "no-asset"}, headers=env.headers[op])
    assert (foreign.status_code, unknown.status_code) == (409, 409)
    assert foreign.json()["detail"] == unknown.json()["detail"].replace("no-asset", "globex-asset")
    reg = env.platform.registry.registry
    assert (reg.devices["globex-dev"].tenant, reg.sites["globex-site"].tenant) == ("globex", "globex")
    # Globex's data still arrives as globex's (no wrong_tenant dead letters), and globex still sees its asset.
    await env.telemetry("globex-dev", "globex", 20.0, 2)
    assert await env.call("GET", "/dead-letters") == []
    assert [a["id"] for a in await env.call("GET", "/assets?") if a["tenant"] == "globex"] == ["globex-asset"]
    # Within its own tenant the operator replaces freely; the audit log keeps before and after.
    renamed = {"id": "acme-site", "tenant": "acme", "name": "Plant 1"}
    await env.call("PUT", "/sites/acme-site", op, json=renamed)
    [entry] = await env.call("GET", "/audit?action=sites.replace")
    assert (entry["actor"], entry["target"], entry["outcome"]) == (op, "acme-site", "ok")
    assert json.loads(entry["detail"]) == {"before": {"id": "acme-site", "tenant": "acme", "name": ""},
                                           "after": renamed}


async def test_only_the_platform_admin_moves_an_entry_to_another_tenant(env: Env) -> None:
    acme_admin = "acme-admin"
    move = {"id": "acme-site", "tenant": "globex"}
    assert (await env.client.put(f"{API}/sites/acme-site", json=move,
                                 headers=env.headers[acme_admin])).status_code == 403
    assert env.platform.registry.registry.sites["acme-site"].tenant == "acme"
    refused = await env.call("GET", "/audit?action=sites.replace")
    assert [(x["actor"], x["outcome"]) for x in refused] == [(acme_admin, "refused")]
    await env.call("PUT", "/sites/acme-site", json=move)
    assert env.platform.registry.registry.sites["acme-site"].tenant == "globex"
    moved = (await env.call("GET", "/audit?action=sites.replace"))[0]
    assert (moved["actor"], moved["outcome"]) == ("admin", "ok")
    assert json.loads(moved["detail"]) == {"before": {"id": "acme-site", "tenant": "acme", "name": ""},
                                           "after": {"id": "acme-site", "tenant": "globex", "name": ""}}


# -- rules, stats and dead letters are each tenant's own ---------------------------------------------------


async def test_a_tenants_rule_change_leaves_other_tenants_rules_alone(env: Env) -> None:
    """The issue's attack: acme's operator uploads an empty rule list. Only acme's rules are gone."""
    await env.call("PUT", "/alert-rules", "acme-operator", content="version: 1\nrules: []\n")
    mine = await env.call("GET", "/alert-rules", "acme-viewer")
    assert (mine["tenant"], mine["own"], mine["rules"]) == ("acme", True, [])
    default = await env.call("GET", "/alert-rules")
    assert (default["own"], [r["name"] for r in default["rules"]]) == (False, ["hot"])
    globex = await env.call("GET", "/alert-rules?tenant=globex")
    assert (globex["own"], [r["name"] for r in globex["rules"]]) == (True, ["hot"])
    await env.call("PUT", "/alert-rules", "acme-operator", status=404, content=HOT_RULES,
                   params={"tenant": "globex"})
    # The platform default is the platform administrator's.
    await env.call("PUT", "/alert-rules", "acme-operator", content=HOT_RULES)  # their own tenant's, again
    # And the engine follows: a hot acme pump stays quiet under acme's empty rules, a hot globex pump alerts.
    await env.call("PUT", "/alert-rules", "acme-operator", content="version: 1\nrules: []\n")
    reg = env.platform.registry
    await reg.put_asset(Asset(id="globex-asset-2", line="globex-line"))
    await reg.put_device(Device(id="globex-dev-2", tenant="globex", asset="globex-asset-2", profile="pump"))
    before = {a["id"] for a in await env.call("GET", "/alerts")}
    env.clock.advance(1000)
    await env.telemetry("acme-dev", "acme", 95.0, 1)
    await env.telemetry("globex-dev-2", "globex", 95.0, 1)
    await env.platform.alerts.tick()
    new = [a for a in await env.call("GET", "/alerts") if a["id"] not in before]
    assert [(a["tenant"], a["kind"]) for a in new] == [("globex", "hot")]


async def test_the_default_rules_are_the_platform_admins(env: Env) -> None:
    resp = await env.client.put(f"{API}/alert-rules", content=HOT_RULES, headers=env.headers["acme-admin"])
    assert resp.status_code == 200 and resp.json()["tenant"] == "acme", "a tenant's admin sets their tenant's"
    platform_operator = "platform-operator"
    await env.call("POST", "/users", status=201, json={"username": platform_operator, "role": "operator",
                                                       "password": "platform-op-password", "tenant": None})
    env.headers[platform_operator] = await _login(env.client, platform_operator, "platform-op-password")
    await env.call("PUT", "/alert-rules", platform_operator, status=403, content="version: 1\nrules: []\n")
    assert [r["name"] for r in (await env.call("GET", "/alert-rules"))["rules"]] == ["hot"]


async def test_stats_show_only_the_callers_tenant(env: Env) -> None:
    await env.platform.registry.put_device(Device(id="globex-dev-2", tenant="globex", asset="globex-asset",
                                                  profile="pump"))
    mine = await env.call("GET", "/stats", "acme-viewer")
    assert (mine["tenant"], mine["devices_total"], mine["alerts_open"]) == ("acme", 1, 0)
    assert "readings_per_s" not in mine and set(mine["ingest"]) == {"dead_letters"}
    everything = await env.call("GET", "/stats")
    assert (everything["devices_total"], everything["alerts_open"]) == (3, 1)
    # a globex device whose clock runs 4 min ahead (accepted: within the skew) moves no one's "now"
    ahead = env.clock.now_ms() + 4 * 60_000
    await publish_all(env.platform, [(topic("globex", "globex-dev", TopicKind.TELEMETRY),
                                      encode(Telemetry("globex-dev", 2, [Sample(ts=ahead, values={"temp": 20.0})])))])
    assert await env.platform.idle(30) and env.platform.scoring.latest_ms == ahead
    assert (await env.call("GET", "/stats", "acme-viewer"))["now_ms"] == env.clock.now_ms()
    assert (await env.call("GET", "/stats"))["now_ms"] == env.clock.now_ms()


async def test_a_tenant_sees_only_its_own_commands(env: Env) -> None:
    """globex's command (nobody is connected: it waits unanswered) is not acme's to list or read."""
    cmd = await env.platform.commands.issue(device="globex-dev", action="speed", value=5, key="globex:1", ttl_s=60,
                                            issued_by="admin")
    assert await env.call("GET", "/commands", "acme-viewer") == []
    await env.call("GET", f"/commands/{cmd.id}", "acme-viewer", status=404)
    await env.call("GET", "/commands?device=globex-dev", "acme-viewer", status=404)
    assert [c["id"] for c in await env.call("GET", "/commands", "globex-viewer")] == [cmd.id]


async def test_a_device_cannot_write_into_another_tenants_dead_letters(env: Env) -> None:
    """acme's device publishes bad payloads under globex's tenant segment, naming globex's device: the letters
    are acme's (its own topic's device), never globex's."""
    bad = [(topic("globex", "acme-dev", TopicKind.TELEMETRY), b'{"not": "telemetry"}'),
           (topic("globex", "acme-dev", TopicKind.TELEMETRY),
            encode(Telemetry("globex-dev", 1, [Sample(ts=env.clock.now_ms(), values={"temp": 1.0})])))]
    await publish_all(env.platform, bad)
    assert await env.platform.idle(30)
    assert await env.call("GET", "/dead-letters", "globex-viewer") == []
    acme = await env.call("GET", "/dead-letters", "acme-viewer")
    assert sorted((d["code"], d["device"], d["tenant"]) for d in acme) == [
        ("bad_schema", "acme-dev", "acme"), ("topic_mismatch", "acme-dev", "acme")]



async def test_a_tenants_silence_and_window_do_not_follow_a_site_moved_to_another_tenant(env: Env) -> None:
    """The issue's aftermath: a silence (and a maintenance window) of the site's former tenant kept suppressing
    the new owner's alerts, invisible to it and not removable by it."""
    reg = env.platform.registry
    await reg.put_asset(Asset(id="globex-press", line="globex-line"))
    await reg.put_device(Device(id="globex-press-dev", tenant="globex", asset="globex-press", profile="pump"))
    on_site = {"scope": "site", "target": "globex-site", "reason": "globex's own work", "duration_s": 3600}
    await env.call("POST", "/silences", status=201, json=on_site)
    await env.call("POST", "/maintenance-windows", status=201, json={**on_site, "scope": "line",
                                                                     "target": "globex-line"})
    await env.call("PUT", "/sites/globex-site", json={"id": "globex-site", "tenant": "acme"})  # platform admin
    await env.call("PUT", "/devices/globex-press-dev", json={"id": "globex-press-dev", "tenant": "acme",
                                                             "asset": "globex-press", "profile": "pump"})
    env.clock.advance(1000)
    await env.platform.alerts.tick()  # the alert service learns the new topology
    await env.telemetry("globex-press-dev", "acme", 95.0, 1)
    [alert] = [a for a in await env.call("GET", "/alerts", "acme-viewer") if a["asset"] == "globex-press"]
    assert (alert["tenant"], alert["suppressed"]) == ("acme", None)


async def test_the_simulators_registration_never_writes_into_another_tenant(env: Env) -> None:
    from edgeloop.errors import ConflictError
    from edgeloop.sim.fleet import Fleet
    from edgeloop.sim.register import register_fleet

    fleet = Fleet(devices=2, faulty=0, seed=3, start_ms=0, duration_ms=3_600_000)
    reg = env.platform.registry
    await reg.put_site(Site(id="site-1", tenant="globex"))  # the fleet's site id, taken by globex
    before = (set(reg.registry.lines), set(reg.registry.assets), set(reg.registry.devices))
    with pytest.raises(ConflictError, match="site 'site-1' exists in tenant 'globex'"):
        await register_fleet(reg, fleet, tenant="acme")
    assert (set(reg.registry.lines), set(reg.registry.assets), set(reg.registry.devices)) == before
    await register_fleet(reg, fleet, tenant="globex")  # its owner registers it, twice (idempotent)
    await register_fleet(reg, fleet, tenant="globex")
    assert {reg.registry.devices[d.device_id].tenant for d in fleet.devices} == {"globex"}


async def test_rule_documents_are_stored_per_tenant(store: Store) -> None:
    assert await store.put_rules("default v1", by="admin", at_ms=1) == 1
    assert await store.put_rules("acme v1", by="ann", at_ms=2, tenant="acme") == 1
    assert await store.put_rules("acme v2", by="ann", at_ms=3, tenant="acme") == 2
    assert await store.put_rules("globex v1", by="gus", at_ms=4, tenant="globex") == 1
    assert await store.put_rules("default v2", by="admin", at_ms=5) == 2
    latest = await store.latest_rules()
    assert latest is not None and (latest.version, latest.text, latest.tenant) == (2, "default v2", None)
    assert [(r.tenant, r.version, r.text, r.created_by) for r in await store.tenant_rules()] == [
        ("acme", 2, "acme v2", "ann"), ("globex", 1, "globex v1", "gus")]


async def test_a_tenants_rules_survive_a_restart(tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None)
    for _ in range(2):
        async with Platform(cfg) as platform:
            if not await platform.store.tenant_rules():
                await platform.alerts.replace_rules(HOT_RULES, by="ann", tenant="acme")
            doc = platform.alerts.rules_of("acme")
            assert (doc.tenant, doc.version, [r.name for r in doc.ruleset.rules]) == ("acme", 1, ["hot"])
            assert platform.alerts.rules_of("globex") is platform.alerts.documents.default
