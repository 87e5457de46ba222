"""CLI for people's accounts: ``edgeloop users`` (list, add, disable, enable, delete, reset-password,
revoke-tokens) through the REST API with an administrator's token in EDGELOOP_TOKEN, and ``edgeloop admin
reset-password``: the way back in for an owner who lost the administrator's password, run on the platform's
host directly on its store (the platform may be stopped), audited like the API's."""

from __future__ import annotations

import asyncio
import getpass
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api, request
from edgeloop.cli.output import Json, fail, out, show, ts
from edgeloop.errors import EdgeLoopError

__all__ = ["admin_app", "users_app"]

PASSWORD_ENV = "EDGELOOP_USER_PASSWORD"
Username = Annotated[str, typer.Argument(help="The user's name.")]

users_app = typer.Typer(help="Users of a running platform (administrators; a tenant's administrators manage their "
                             "tenant's users).")
admin_app = typer.Typer(no_args_is_help=True, help="Recovery on the platform's host, directly on its store.")


def _given_password() -> str | None:
    return os.environ.get(PASSWORD_ENV) or None


def _list(url: str, as_json: bool) -> None:
    found = api("GET", url, "/api/v1/users")

    def row(u: dict[str, Any]) -> tuple[str, ...]:
        return (u["username"], u["role"], u["tenant"] or "* (every tenant)", "disabled" if u["disabled"] else "yes",
                ts(u["created_ms"]))

    show(found, as_json=as_json, title="users", columns=("user", "role", "tenant", "enabled", "created"), row=row)


@users_app.callback(invoke_without_command=True)
def users_overview(ctx: typer.Context, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """The users you manage, with their role, tenant and whether they are enabled."""
    if ctx.invoked_subcommand is None:
        _list(url, as_json)


@users_app.command("list")
def users_list(url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """The users you manage (as ``edgeloop users``)."""
    _list(url, as_json)


@users_app.command("add")
def users_add(
    username: Username,
    role: Annotated[str, typer.Option(help="viewer, technician, operator or admin.")],
    tenant: Annotated[str | None, typer.Option(help="The user's tenant (omit: every tenant; platform "
                                               "administrators only).")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Add a user; the password comes from EDGELOOP_USER_PASSWORD or is asked (at least 12 characters)."""
    password = _given_password() or typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
    doc = api("POST", url, "/api/v1/users", {"username": username, "password": password, "role": role,
                                              "tenant": tenant})
    out.print(f"added {doc['username']} ({doc['role']}, tenant {doc['tenant'] or '*'})")


@users_app.command("disable")
def users_disable(username: Username, url: Url = DEFAULT_URL) -> None:
    """The user can no longer log in; its sessions end at once."""
    api("POST", url, f"/api/v1/users/{username}/disable")
    out.print(f"disabled {username}; its sessions have ended")


@users_app.command("enable")
def users_enable(username: Username, url: Url = DEFAULT_URL) -> None:
    """Let a disabled user log in again."""
    api("POST", url, f"/api/v1/users/{username}/enable")
    out.print(f"enabled {username}")


@users_app.command("delete")
def users_delete(username: Username, url: Url = DEFAULT_URL,
                 yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Delete a user (its sessions end; the audit log keeps what it did)."""
    if not yes:
        typer.confirm(f"delete user {username}?", abort=True, err=True)
    request("DELETE", url, f"/api/v1/users/{username}")
    out.print(f"deleted {username}")


@users_app.command("reset-password")
def users_reset_password(username: Username, url: Url = DEFAULT_URL) -> None:
    """A new password: from EDGELOOP_USER_PASSWORD, or generated and printed once. The user's sessions end."""
    password = _given_password()
    doc = api("POST", url, f"/api/v1/users/{username}/password", {"password": password} if password else None)
    if doc["password"]:
        out.print(f"new password of {username} (shown once):")
        out.print(doc["password"], highlight=False, soft_wrap=True)
    else:
        out.print(f"password of {username} set; its sessions have ended")


@users_app.command("revoke-tokens")
def users_revoke_tokens(username: Username, url: Url = DEFAULT_URL) -> None:
    """End every session of a user (it may log in again)."""
    doc = api("POST", url, f"/api/v1/users/{username}/revoke-tokens")
    out.print(f"revoked {doc['revoked']} tokens of {username}")


@admin_app.command("reset-password")
def admin_reset_password(
    username: Username,
    data_dir: Annotated[Path, typer.Option(help="The platform's data directory.")] = Path("data"),
    store: Annotated[str | None, typer.Option(help="Store URL, if not SQLite in the data dir (e.g. the "
                                              "postgresql://... that `serve --store` uses).")] = None,
) -> None:
    """Set a user's password directly on the store (the platform may be stopped) and enable it again: the
    password comes from EDGELOOP_ADMIN_PASSWORD, or is generated and printed once. Its sessions end; audited."""
    from edgeloop.app import PlatformConfig

    url = PlatformConfig(data_dir=data_dir, store_url=store).resolved_store_url
    if store is None and not (data_dir / "edgeloop.db").is_file():
        raise fail(f"no platform database in {data_dir.resolve()}: name the data directory (--data-dir) or the "
                    "store (--store)")
    try:
        generated = asyncio.run(_reset_on_store(url, username, os.environ.get("EDGELOOP_ADMIN_PASSWORD") or None))
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    if generated is None:
        out.print(f"password of {username} set from EDGELOOP_ADMIN_PASSWORD; {username} is enabled and its "
                  "sessions have ended")
        return
    out.print(f"new password of {username} (shown once; {username} is enabled and its sessions have ended):")
    out.print(generated, highlight=False, soft_wrap=True)


async def _reset_on_store(url: str, username: str, password: str | None) -> str | None:
    from edgeloop.clock import SystemClock
    from edgeloop.identity.access import AccessService
    from edgeloop.identity.auth import Principal, Role
    from edgeloop.store import open_store

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        who = f"uid {os.getuid()}"
    local = Principal(name=f"local:{who}", role=Role.ADMIN, tenant=None, kind="local")
    async with open_store(url) as st:
        access = AccessService(store=st, clock=SystemClock())
        return await access.reset_password(username, password, by=local, source="local", enable=True)

