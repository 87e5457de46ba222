"""API authentication and authorisation, with auth enabled as in production."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeloop.api import PUBLIC_ROUTES, create_app
from edgeloop.app import Platform, PlatformConfig, trusted_proxies
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError
from edgeloop.messages import Alert, Severity
from edgeloop.store import DeadLetter
from tests.support import open_alert

ADMIN_PASSWORD = "correct horse battery staple"
T0 = 1_795_000_000_000


class Env:
    def __init__(self, platform: Platform, client: httpx.AsyncClient, clock: ManualClock) -> None:
        self.platform, self.client, self.clock = platform, client, clock

    async def login(self, username: str, password: str) -> dict[str, str]:
        resp = await self.client.post("/api/v1/auth/token", data={"username": username, "password": password,
                                                                  "grant_type": "password"})
        assert resp.status_code == 200, resp.text
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    async def user(self, admin: dict[str, str], username: str, role: str, tenant: str | None) -> dict[str, str]:
        resp = await self.client.post("/api/v1/users", headers=admin, json={
            "username": username, "password": f"{username}-password-123", "role": role, "tenant": tenant})
        assert resp.status_code == 201, resp.text
        return await self.login(username, f"{username}-password-123")


@contextlib.asynccontextmanager
async def auth_env(tmp_path: Path) -> AsyncIterator[Env]:
    """A platform with auth on (admin: ADMIN_PASSWORD) and two tenants, acme and globex, each with a device,
    an alert and a dead letter; a client of its API."""
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, auth=True,
                         admin_password=ADMIN_PASSWORD, pki_dir=tmp_path / "pki", create_pki=True)
    async with Platform(cfg, clock=clock) as platform:
        reg = platform.registry
        await reg.put_profile(DeviceProfile(name="p", channels=[ChannelSpec(name="x")]))
        for t in ("acme", "globex"):
            await reg.put_tenant(Tenant(id=t))
            await reg.put_site(Site(id=f"{t}-site", tenant=t))
            await reg.put_line(Line(id=f"{t}-line", site=f"{t}-site"))
            await reg.put_asset(Asset(id=f"{t}-asset", line=f"{t}-line"))
            await reg.put_device(Device(id=f"{t}-dev", tenant=t, asset=f"{t}-asset", profile="p"))
            await open_alert(platform.store, Alert(tenant=t, asset=f"{t}-asset", device=f"{t}-dev", kind="anomaly",
                                                   severity=Severity.WARNING, first_seen=T0, last_seen=T0))
            await platform.store.write_dead_letters([DeadLetter.of(received_ms=T0, topic="t", code="bad_schema",
                                                                   detail="d", raw=b"{}", device=f"{t}-dev",
                                                                   tenant=t)])
        transport = httpx.ASGITransport(app=create_app(platform.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Env(platform, client, clock)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with auth_env(tmp_path) as e:
        yield e


async def every_route(env: Env) -> list[tuple[str, str]]:
    doc = (await env.client.get("/openapi.json")).json()
    out = []
    for path, ops in doc["paths"].items():
        for method in ops:
            concrete = (path.replace("{device_id}", "acme-dev").replace("{alert_id}", "1")
                        .replace("{key_id}", "nope").replace("{username}", "nope"))
            out.append((method.upper(), path, concrete))
    # Logout last: it revokes the token the loop is using.
    return sorted(((m, c) for m, p, c in out if (m, p) not in PUBLIC_ROUTES), key=lambda mc: "logout" in mc[1])


async def test_every_route_refuses_anonymous_and_too_low_roles(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    viewer = await env.user(admin, "vera", "viewer", "acme")
    protected = await every_route(env)
    assert len(protected) >= 20, "the test must see the whole API"
    for method, path in protected:
        anonymous = await env.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert anonymous.headers.get("www-authenticate") == "Bearer"
        bad = await env.client.request(method, path, json={}, headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401, (method, path)
        as_viewer = await env.client.request(method, path, json={}, headers=viewer)
        if method != "GET" and path != "/api/v1/auth/logout":
            assert as_viewer.status_code == 403, (method, path, as_viewer.status_code, as_viewer.text)
        elif path not in ("/api/v1/audit", "/api/v1/users", "/api/v1/models/{name}/versions/{version}/artifact",
                          "/api/v1/decision-log/verify"):
            assert as_viewer.status_code not in (401, 403), (method, path, as_viewer.text)
    # The public routes answer without credentials.
    assert (await env.client.get("/api/v1/health")).status_code == 200


async def test_tenant_isolation(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    acme = await env.user(admin, "ann", "technician", "acme")
    get = env.client.get
    assert [a["id"] for a in (await get("/api/v1/assets", headers=acme)).json()] == ["acme-asset"]
    assert [d["id"] for d in (await get("/api/v1/devices", headers=acme)).json()] == ["acme-dev"]
    assert [t["id"] for t in (await get("/api/v1/tenants", headers=acme)).json()] == ["acme"]
    assert {a["tenant"] for a in (await get("/api/v1/alerts", headers=acme)).json()} == {"acme"}
    assert {d["tenant"] for d in (await get("/api/v1/dead-letters", headers=acme)).json()} == {"acme"}
    # Guessing another tenant's ids finds nothing (404, as for ids that do not exist).
    assert (await get("/api/v1/devices/globex-dev", headers=acme)).status_code == 404
    assert (await get("/api/v1/devices/globex-dev/telemetry?start=0&end=1", headers=acme)).status_code == 404
    globex_alert = next(a for a in (await get("/api/v1/alerts", headers=admin)).json() if a["tenant"] == "globex")
    assert (await get(f"/api/v1/alerts/{globex_alert['id']}", headers=acme)).status_code == 404
    ack = await env.client.post(f"/api/v1/alerts/{globex_alert['id']}/acknowledge", headers=acme)
    assert ack.status_code == 404
    # Nor can they create things in another tenant.
    forged = await env.client.post("/api/v1/sites", headers=await env.user(admin, "oscar", "operator", "acme"),
                                   json={"id": "evil", "tenant": "globex"})
    assert forged.status_code == 403


async def test_acknowledge_is_recorded_as_the_user(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    tech = await env.user(admin, "tim", "technician", "acme")
    alert = (await env.client.get("/api/v1/alerts", headers=tech)).json()[0]
    resp = await env.client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=tech,
                                 json={"by": "someone-else"})
    assert resp.status_code == 200
    assert resp.json()["acknowledged_by"] == "tim"


async def test_login_failures_are_rate_limited_and_audited(env: Env) -> None:
    for _ in range(5):
        bad = await env.client.post("/api/v1/auth/token", data={"username": "admin", "password": "guess"})
        assert bad.status_code == 401
    limited = await env.client.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert limited.status_code == 429, "even the right password waits once the limit is reached"
    assert int(limited.headers["retry-after"]) > 0
    env.clock.advance(301_000)
    assert (await env.client.post("/api/v1/auth/token", data={"username": "admin",
                                                              "password": ADMIN_PASSWORD})).status_code == 200
    log = await env.platform.store.list_audit(action="login")
    outcomes = [r.outcome for r in reversed(log)]
    assert outcomes == ["refused"] * 6 + ["ok"]
    assert log[-1].source, "the audit records where the attempt came from"


async def test_tokens_expire_and_logout_revokes(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    assert (await env.client.get("/api/v1/auth/me", headers=admin)).json()["role"] == "admin"
    assert (await env.client.post("/api/v1/auth/logout", headers=admin)).status_code == 204
    assert (await env.client.get("/api/v1/auth/me", headers=admin)).status_code == 401
    again = await env.login("admin", ADMIN_PASSWORD)
    env.clock.advance(12 * 3_600_000 + 1)
    assert (await env.client.get("/api/v1/auth/me", headers=again)).status_code == 401


async def test_api_keys(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    resp = await env.client.post("/api/v1/api-keys", headers=admin,
                                 json={"name": "historian", "role": "viewer", "tenant": "acme"})
    assert resp.status_code == 201
    key = {"Authorization": f"Bearer {resp.json()['key']}"}
    me = (await env.client.get("/api/v1/auth/me", headers=key)).json()
    assert me == {"username": "historian", "role": "viewer", "tenant": "acme", "kind": "api_key"}
    assert [d["id"] for d in (await env.client.get("/api/v1/devices", headers=key)).json()] == ["acme-dev"]
    assert (await env.client.post("/api/v1/sites", headers=key, json={"id": "s", "tenant": "acme"})).status_code == 403
    wrong = resp.json()["key"][:-3] + "abc"
    assert (await env.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
    assert (await env.client.delete(f"/api/v1/api-keys/{resp.json()['id']}", headers=admin)).status_code == 204
    assert (await env.client.get("/api/v1/auth/me", headers=key)).status_code == 401
    stored = await env.platform.store.get_credential(resp.json()["id"])
    assert stored is not None
    assert resp.json()["key"] not in repr(stored), "only a hash of the key is stored"


async def test_nobody_grants_more_than_they_have(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    acme_admin = await env.user(admin, "ada", "admin", "acme")
    other = await env.client.post("/api/v1/users", headers=acme_admin, json={
        "username": "gus", "password": "long-enough-password", "role": "viewer", "tenant": "globex"})
    assert other.status_code == 403
    platform_wide = await env.client.post("/api/v1/users", headers=acme_admin, json={
        "username": "gus", "password": "long-enough-password", "role": "viewer", "tenant": None})
    assert platform_wide.status_code == 403
    assert (await env.client.get("/api/v1/audit", headers=acme_admin)).status_code == 403
    short = await env.client.post("/api/v1/users", headers=admin, json={
        "username": "sam", "password": "short", "role": "viewer", "tenant": "acme"})
    assert short.status_code == 422


async def test_first_start_generates_the_admin_password_once(tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, auth=True)
    async with Platform(cfg) as first:
        password = first.generated_admin_password
        assert password and len(password) >= 16
        assert await first.access.login("admin", password, source="test")
    async with Platform(PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, auth=True)) as again:
        assert again.generated_admin_password is None, "shown once: never again"



async def _served(tmp_path: Path, **kw: Any) -> Platform:
    return Platform(PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=free_port(), auth=True,
                                   admin_password=ADMIN_PASSWORD, pki_dir=tmp_path / "pki", create_pki=True,
                                   provision_rate_per_s=0.001, provision_burst=3, **kw))


async def test_forwarded_for_from_localhost_is_not_believed_by_default(tmp_path: Path) -> None:
    """A client on the same host cannot pick its address: not to dodge the login lockout or the provisioning
    rate limit, nor to forge the audit log's addresses."""
    async with await _served(tmp_path) as platform, httpx.AsyncClient(base_url=str(platform.http_url)) as client:
        for i in range(5):
            bad = await client.post("/api/v1/auth/token", data={"username": "admin", "password": "guess"},
                                    headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert bad.status_code == 401
        locked = await client.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD},
                                   headers={"X-Forwarded-For": "203.0.113.99"})
        assert locked.status_code == 429, "a new X-Forwarded-For is not a new address"
        assert {r.source for r in await platform.store.list_audit(action="login")} == {"127.0.0.1"}
        codes = [(await client.post("/api/v1/provision", headers={"X-Forwarded-For": f"198.51.100.{i}"},
                                    json={"claim": "x", "serial": "y", "csr": "z"})).status_code for i in range(5)]
        assert codes[-1] == 429, codes


async def test_forwarded_for_is_believed_from_a_configured_proxy(tmp_path: Path) -> None:
    async with await _served(tmp_path, trusted_proxies=("127.0.0.0/8",)) as platform, \
            httpx.AsyncClient(base_url=str(platform.http_url)) as client:
        for i in range(5):
            bad = await client.post("/api/v1/auth/token", data={"username": "admin", "password": "guess"},
                                    headers={"X-Forwarded-For": "203.0.113.7"})
            assert bad.status_code == 401, i
        other = await client.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD},
                                  headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.status_code == 200, "the lockout is per real client, which the proxy names"
        assert {r.source for r in await platform.store.list_audit(action="login")} == {"203.0.113.7", "203.0.113.8"}


def test_a_trusted_proxy_must_be_an_address_or_network() -> None:
    with pytest.raises(ConfigError, match="trusted proxy"):
        trusted_proxies(("proxy.example",))
    assert trusted_proxies(("10.0.0.1", "fd00::/8")) == ["10.0.0.1", "fd00::/8"]
