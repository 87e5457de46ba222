"""Managing users: disable, enable, delete, reset a password, end sessions; token housekeeping; login hashing
off the event loop. Through the API (as in production, auth on) and on both stores."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Tenant
from edgeloop.broker import free_port
from edgeloop.cli import app as cli_app
from edgeloop.identity import access as access_module
from edgeloop.identity.access import AuthError
from edgeloop.identity.auth import TOKEN_TTL_MS, sha256
from edgeloop.store import Store, open_store
from edgeloop.store.base import Credential, User
from tests.test_auth import ADMIN_PASSWORD, T0, Env, auth_env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with auth_env(tmp_path) as e:
        yield e


async def _ann(env: Env, admin: dict[str, str], role: str = "technician", tenant: str | None = "acme",
               name: str = "ann") -> dict[str, str]:
    return await env.user(admin, name, role, tenant)


def _bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def _login_status(env: Env, username: str, password: str) -> int:
    resp = await env.client.post("/api/v1/auth/token", data={"username": username, "password": password})
    return resp.status_code


async def test_a_disabled_user_cannot_log_in_and_its_tokens_stop_at_once(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    ann = await _ann(env, admin)
    assert (await env.client.get("/api/v1/auth/me", headers=ann)).status_code == 200
    resp = await env.client.post("/api/v1/users/ann/disable", headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["disabled"] is True
    assert (await env.client.get("/api/v1/auth/me", headers=ann)).status_code == 401
    assert await _login_status(env, "ann", "ann-password-123") == 401
    listed = {u["username"]: u for u in (await env.client.get("/api/v1/users", headers=admin)).json()}
    assert listed["ann"]["disabled"] is True
    assert (await env.client.post("/api/v1/users/ann/enable", headers=admin)).status_code == 200
    assert (await env.client.get("/api/v1/auth/me", headers=ann)).status_code == 401, "enabling revives no token"
    assert await _login_status(env, "ann", "ann-password-123") == 200
    actions = [(r.action, r.target, r.actor) for r in await env.platform.store.list_audit() if
               r.action.startswith("user.")]
    assert ("user.disable", "ann", "admin") in actions and ("user.enable", "ann", "admin") in actions


async def test_a_deleted_users_tokens_never_return_with_a_new_user_of_that_name(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    old = await _ann(env, admin, role="operator")
    assert (await env.client.delete("/api/v1/users/ann", headers=admin)).status_code == 204
    assert (await env.client.get("/api/v1/auth/me", headers=old)).status_code == 401
    assert "ann" not in {u["username"] for u in (await env.client.get("/api/v1/users", headers=admin)).json()}
    await _ann(env, admin, role="viewer")
    assert (await env.client.get("/api/v1/auth/me", headers=old)).status_code == 401, \
        "the old operator session does not come back as the new viewer"
    assert (await env.client.delete("/api/v1/users/ghost", headers=admin)).status_code == 404
    [record] = await env.platform.store.list_audit(action="user.delete")
    assert (record.target, record.outcome) == ("ann", "ok")


async def test_reset_password_generated_once_or_given(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    ann = await _ann(env, admin)
    resp = await env.client.post("/api/v1/users/ann/password", headers=admin)
    assert resp.status_code == 200, resp.text
    generated = resp.json()["password"]
    assert generated and len(generated) >= 16
    assert (await env.client.get("/api/v1/auth/me", headers=ann)).status_code == 401, "old sessions end"
    assert await _login_status(env, "ann", "ann-password-123") == 401
    assert await _login_status(env, "ann", generated) == 200
    given = await env.client.post("/api/v1/users/ann/password", headers=admin, json={"password": "a-new-long-one-42"})
    assert (given.status_code, given.json()["password"]) == (200, None), "a given password is not echoed"
    assert await _login_status(env, "ann", "a-new-long-one-42") == 200
    short = await env.client.post("/api/v1/users/ann/password", headers=admin, json={"password": "short"})
    assert short.status_code == 422
    log = await env.platform.store.list_audit(action="user.reset_password")
    assert len(log) == 2 and generated not in repr(log)


async def test_revoke_tokens_ends_every_session(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    first = await _ann(env, admin)
    second = await env.login("ann", "ann-password-123")
    resp = await env.client.post("/api/v1/users/ann/revoke-tokens", headers=admin)
    assert resp.json() == {"username": "ann", "revoked": 2}
    for session in (first, second):
        assert (await env.client.get("/api/v1/auth/me", headers=session)).status_code == 401
    assert await _login_status(env, "ann", "ann-password-123") == 200, "the user itself is not disabled"


async def test_tenant_admins_manage_only_their_own_tenants_users(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    ada = await _ann(env, admin, role="admin", name="ada")
    await _ann(env, admin, name="ann")
    await _ann(env, admin, tenant="globex", name="gus")
    listed = {u["username"] for u in (await env.client.get("/api/v1/users", headers=ada)).json()}
    assert listed == {"ada", "ann"}
    assert (await env.client.post("/api/v1/users/ann/disable", headers=ada)).status_code == 200
    for other in ("gus", "admin"):  # another tenant's user and the platform administrator: as if absent
        for method, path in (("POST", f"/api/v1/users/{other}/disable"), ("DELETE", f"/api/v1/users/{other}"),
                             ("POST", f"/api/v1/users/{other}/password"),
                             ("POST", f"/api/v1/users/{other}/revoke-tokens")):
            resp = await env.client.request(method, path, headers=ada)
            assert resp.status_code == 404, (method, path, resp.text)
    assert await _login_status(env, "admin", ADMIN_PASSWORD) == 200
    assert await _login_status(env, "gus", "gus-password-123") == 200
    tom = await _ann(env, admin, name="tom")  # a technician manages nobody
    assert (await env.client.post("/api/v1/users/ann/enable", headers=tom)).status_code == 403


async def test_nobody_disables_or_deletes_themselves(env: Env) -> None:
    admin = await env.login("admin", ADMIN_PASSWORD)
    for method, path in (("POST", "/api/v1/users/admin/disable"), ("DELETE", "/api/v1/users/admin")):
        resp = await env.client.request(method, path, headers=admin)
        assert resp.status_code == 409, (method, path, resp.text)
    assert (await env.client.get("/api/v1/auth/me", headers=admin)).status_code == 200


async def test_login_hashing_never_runs_on_the_event_loop(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop: list[bool] = []
    real_verify, real_hash = access_module.verify_password, access_module.hash_password

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def verify(password: str, stored: str) -> bool:
        on_loop.append(running_loop())
        return real_verify(password, stored)

    def hash_(password: str) -> str:
        on_loop.append(running_loop())
        return real_hash(password)

    monkeypatch.setattr(access_module, "verify_password", verify)
    monkeypatch.setattr(access_module, "hash_password", hash_)
    admin = await env.login("admin", ADMIN_PASSWORD)
    await _ann(env, admin)
    assert await _login_status(env, "nobody", "wrong-password") == 401
    await env.client.post("/api/v1/users/ann/password", headers=admin)
    assert len(on_loop) >= 5 and not any(on_loop), on_loop


async def test_concurrent_guesses_cannot_slip_past_the_lockout(env: Env) -> None:
    guesses = await asyncio.gather(*(_login_status(env, "admin", f"guess-{i}") for i in range(20)))
    assert guesses.count(401) <= 5, guesses
    assert set(guesses) == {401, 429}


async def test_a_right_login_does_not_count_against_its_address(env: Env) -> None:
    for _ in range(40):
        assert await _login_status(env, "admin", ADMIN_PASSWORD) == 200


async def test_expired_tokens_are_deleted_at_login(env: Env) -> None:
    first = _bearer(await env.login("admin", ADMIN_PASSWORD))
    assert await env.platform.store.get_credential(sha256(first)) is not None
    env.clock.advance(TOKEN_TTL_MS + 1)
    await env.login("admin", ADMIN_PASSWORD)
    assert await env.platform.store.get_credential(sha256(first)) is None


async def test_a_user_keeps_a_bounded_number_of_sessions(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_module, "MAX_TOKENS_PER_USER", 3)
    sessions = []
    for _ in range(5):
        sessions.append(await env.login("admin", ADMIN_PASSWORD))
        env.clock.advance(1)
    alive = [(await env.client.get("/api/v1/auth/me", headers=s)).status_code == 200 for s in sessions]
    assert alive == [False, False, True, True, True], "the newest sessions stay"


async def test_token_housekeeping_on_both_stores(store: Store) -> None:
    await store.put_user(User(username="u", role="viewer", tenant=None, password_hash="x", created_ms=T0))
    for i in range(6):
        await store.put_credential(Credential(id=f"t{i}", kind="token", subject="u", role="viewer", tenant=None,
                                              created_ms=T0 + i, expires_ms=T0 + 100 + i))
    await store.put_credential(Credential(id="k", kind="api_key", subject="u", role="viewer", tenant=None,
                                          created_ms=T0, secret_hash="h"))
    assert await store.delete_expired_tokens(T0 + 101, limit=1) == 1, "bounded per call"
    assert await store.delete_expired_tokens(T0 + 101, limit=10) == 1
    assert await store.get_credential("t1") is None and await store.get_credential("t2") is not None
    assert await store.trim_tokens("u", keep=2) == 2
    assert [await store.get_credential(f"t{i}") is not None for i in range(2, 6)] == [False, False, True, True]
    assert await store.revoke_tokens("u", T0 + 1) == 2
    assert await store.revoke_tokens("u", T0 + 2) == 0
    key = await store.get_credential("k")
    assert key is not None and key.revoked_ms is None, "API keys are not a user's tokens"
    assert await store.delete_user("u") is True
    assert await store.delete_user("u") is False
    assert await store.get_user("u") is None



# -- the CLI: `edgeloop users` against a served platform, `edgeloop admin reset-password` on its store -----------


def _cli(*args: str, **env_vars: str) -> Result:
    return CliRunner().invoke(cli_app, list(args), env=env_vars, catch_exceptions=False)


async def test_users_commands_against_a_running_platform(tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=free_port(), auth=True,
                         admin_password=ADMIN_PASSWORD)
    async with Platform(cfg) as platform:
        await platform.registry.put_tenant(Tenant(id="acme"))
        token, _ = await platform.access.login("admin", ADMIN_PASSWORD, source="test")
        url = str(platform.http_url)

        async def run(*args: str, **env_vars: str) -> Result:  # the CLI blocks on HTTP; the server runs here
            return await asyncio.to_thread(_cli, *args, "--url", url, EDGELOOP_TOKEN=token, **env_vars)

        added = await run("users", "add", "ann", "--role", "operator", "--tenant", "acme",
                          EDGELOOP_USER_PASSWORD="ann-password-123")
        assert added.exit_code == 0, added.stderr
        ann_token, _ = await platform.access.login("ann", "ann-password-123", source="test")
        listed = json.loads((await run("users", "--json")).stdout)
        assert {(u["username"], u["role"], u["tenant"], u["disabled"]) for u in listed} == {
            ("admin", "admin", None, False), ("ann", "operator", "acme", False)}
        assert (await run("users", "disable", "ann")).exit_code == 0
        assert await platform.access.authenticate(ann_token) is None, "its session ended at once"
        assert (await run("users", "enable", "ann")).exit_code == 0
        reset = await run("users", "reset-password", "ann")
        assert reset.exit_code == 0, reset.stderr
        new_password = reset.stdout.strip().splitlines()[-1]
        ann_token, _ = await platform.access.login("ann", new_password, source="test")
        revoked = await run("users", "revoke-tokens", "ann")
        assert "revoked 1 tokens" in revoked.stdout
        assert await platform.access.authenticate(ann_token) is None
        assert (await run("users", "delete", "ann", "--yes")).exit_code == 0
        assert await platform.store.get_user("ann") is None
        missing = await run("users", "disable", "ann")
        assert missing.exit_code == 1 and "404" in missing.stderr


async def _admin_is(data_dir: Path, password: str) -> bool:
    cfg = PlatformConfig(data_dir=data_dir, mqtt_port=free_port(), http_port=None, auth=True)
    async with Platform(cfg) as platform:
        try:
            await platform.access.login("admin", password, source="test")
        except AuthError:
            return False
        return True


async def test_a_lost_admin_password_is_reset_on_the_stopped_platforms_store(tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, auth=True)
    async with Platform(cfg) as platform:
        lost = platform.generated_admin_password
        assert lost is not None
        await platform.store.put_user(dataclasses.replace(await platform.store.get_user("admin"), disabled=True))
    # The platform is stopped; the owner has a shell on its host.
    done = await asyncio.to_thread(_cli, "admin", "reset-password", "admin", "--data-dir", str(tmp_path))
    assert done.exit_code == 0, done.stderr
    generated = done.stdout.strip().splitlines()[-1]
    assert "shown once" in done.stdout and len(generated) >= 16
    assert await _admin_is(tmp_path, generated), "the new password works, and the admin is enabled again"
    assert not await _admin_is(tmp_path, lost)
    given = await asyncio.to_thread(_cli, "admin", "reset-password", "admin", "--data-dir", str(tmp_path),
                                    EDGELOOP_ADMIN_PASSWORD="the-owners-own-choice")
    assert given.exit_code == 0 and "the-owners-own-choice" not in given.stdout
    assert await _admin_is(tmp_path, "the-owners-own-choice")
    store = open_store(PlatformConfig(data_dir=tmp_path).resolved_store_url)
    async with store:
        log = await store.list_audit(action="user.reset_password")
    assert len(log) == 2 and all(r.actor.startswith("local:") and r.source == "local" for r in log)
    assert generated not in repr(log)


def test_admin_reset_password_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    nowhere = _cli("admin", "reset-password", "admin", "--data-dir", str(tmp_path / "nothing"))
    assert nowhere.exit_code == 1 and "no platform database" in nowhere.stderr
    assert not (tmp_path / "nothing").exists(), "no empty database is created"
    asyncio.run(_admin_is(tmp_path, "x"))  # a platform database with its first admin
    unknown = _cli("admin", "reset-password", "ghost", "--data-dir", str(tmp_path))
    assert unknown.exit_code == 1 and "not found" in unknown.stderr
    short = _cli("admin", "reset-password", "admin", "--data-dir", str(tmp_path), EDGELOOP_ADMIN_PASSWORD="short")
    assert short.exit_code == 1 and "at least 12" in short.stderr
