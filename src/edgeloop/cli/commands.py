"""``edgeloop commands ...``: the commands sent to machines and what their gateways answered (see
``docs/actions.md``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.output import Json, out, print_json, show, ts

__all__ = ["commands_app"]

commands_app = typer.Typer(help="Commands to machines: what was sent, and what each gateway did with it.")


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


@commands_app.command("list")
def commands_list(device: Annotated[str | None, typer.Option("--device", help="Only this device's.")] = None,
                  status: Annotated[str | None, typer.Option(
                      "--status", help="pending, sent, applied, refused, failed or expired.")] = None,
                  limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
                  url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Commands, newest first: the action and value, its status and the value read back from the machine."""

    def row(c: dict[str, Any]) -> tuple[str, ...]:
        why = f"{c['code']}: {c['reason']}" if c["code"] else c["reason"]
        return (c["id"], ts(c["ts"]), c["device"], f"{c['action']} -> {c['value']:g}", c["status"],
                _value(c["read_back"]), why[:60], c["issued_by"])

    query = {k: v for k, v in (("device", device), ("status", status), ("limit", limit)) if v is not None}
    show(api("GET", url, f"/api/v1/commands?{urlencode(query)}"), as_json=as_json, title="commands", row=row,
         columns=("command", "issued", "device", "action", "status", "read back", "why", "by"))


@commands_app.command("show")
def commands_show(command: Annotated[str, typer.Argument(help="The command id.")], url: Url = DEFAULT_URL,
                  as_json: Json = False) -> None:
    """One command: what was asked, of which machine, until when, and what its gateway answered."""
    c = api("GET", url, f"/api/v1/commands/{command}")
    if as_json:
        print_json(c)
        return
    out.print(f"{c['id']}: {c['action']} of {c['device']} -> {c['value']:g} (seq {c['seq']}, key {c['key']})")
    out.print(f"  issued {ts(c['ts'])} by {c['issued_by']}, expires {ts(c['expires'])}, trace {c['trace']}"
              + (f", decision {c['decision']}" if c["decision"] else ""))
    out.print(f"  {c['status']} at {ts(c['status_ms'])}"
              + (f": {c['code']}: {c['reason']}" if c["code"] else (f": {c['reason']}" if c["reason"] else ""))
              + f"; before {_value(c['value_before'])}, read back {_value(c['read_back'])}; sent {c['sends']} time(s)")
