"""``edgeloop list`` and ``edgeloop create``: the registry (tenants, sites, lines, assets, profiles, devices) of a
running platform."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.output import Json, fail, print_json, show_objects

__all__ = ["REGISTRY_KINDS", "app"]

app = typer.Typer()
REGISTRY_KINDS = ("tenants", "sites", "lines", "assets", "profiles", "devices")


@app.command("list")
def list_cmd(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(REGISTRY_KINDS)}")],
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """List tenants, sites, lines, assets, profiles or devices."""
    if kind not in REGISTRY_KINDS:
        raise fail(f"unknown kind {kind!r}; one of {', '.join(REGISTRY_KINDS)}")
    show_objects(api("GET", url, f"/api/v1/{kind}"), as_json=as_json, title=kind)


@app.command("create")
def create_cmd(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(REGISTRY_KINDS)}")],
    body: Annotated[str, typer.Argument(help="JSON object, or @file.json")],
    url: Url = DEFAULT_URL,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the existing entry with this id.")] = False,
) -> None:
    """Create a registry entry, e.g. ``edgeloop create sites '{"id":"s2","tenant":"demo"}'``; with ``--replace``,
    replace an existing one of your tenant."""
    if kind not in REGISTRY_KINDS:
        raise fail(f"unknown kind {kind!r}; one of {', '.join(REGISTRY_KINDS)}")
    text = Path(body[1:]).read_text() if body.startswith("@") else body
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"the body is not JSON: {exc}") from None
    if not replace:
        print_json(api("POST", url, f"/api/v1/{kind}", doc))
        return
    key = doc.get("name" if kind == "profiles" else "id") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        raise fail(f"--replace needs the entry's {'name' if kind == 'profiles' else 'id'} in the body")
    print_json(api("PUT", url, f"/api/v1/{kind}/{urllib.parse.quote(key, safe='')}", doc))


