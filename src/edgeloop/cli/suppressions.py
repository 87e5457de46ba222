"""``edgeloop maintenance`` and ``edgeloop silences``: when raises do not page, and who said so, why and until
when."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.durations import parse_duration
from edgeloop.cli.output import Json, out, show, ts

__all__ = ["maintenance_app", "silences_app"]

maintenance_app = typer.Typer(help="Maintenance windows: planned work during which raises do not page.")
silences_app = typer.Typer(help="Manual silences: who silenced what, why, and until when.")

Scope = Annotated[str, typer.Option(help="asset, line or site.")]
Target = Annotated[str, typer.Option(help="The asset, line or site id.")]
Reason = Annotated[str, typer.Option(help="Why (shown in every suppression it causes).")]


@maintenance_app.callback(invoke_without_command=True)
def maintenance_list(ctx: typer.Context, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Maintenance windows not over yet."""
    if ctx.invoked_subcommand is not None:
        return
    show(api("GET", url, "/api/v1/maintenance-windows?active=true"), as_json=as_json, title="maintenance windows",
          columns=("id", "scope", "target", "from", "until", "by", "reason"),
          row=lambda m: (m["id"], m["scope"], m["target"], ts(m["start_ms"]), ts(m["end_ms"]), m["by"],
                         m["reason"]))


@maintenance_app.command("add")
def maintenance_add(scope: Scope, target: Target, duration: Annotated[str, typer.Option(
        help="How long, from now: 90m, 2h, 1d.")], reason: Reason, url: Url = DEFAULT_URL) -> None:
    """Plan maintenance from now (operator): raises on the target do not page, and say why."""
    doc = api("POST", url, "/api/v1/maintenance-windows", {"scope": scope, "target": target, "reason": reason,
                                                            "duration_s": parse_duration(duration, "--duration")})
    out.print(f"maintenance window {doc['id']} on {scope} {target} until {ts(doc['end_ms'])}")


@silences_app.callback(invoke_without_command=True)
def silences_list(ctx: typer.Context, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Silences still running."""
    if ctx.invoked_subcommand is not None:
        return
    show(api("GET", url, "/api/v1/silences?active=true"), as_json=as_json, title="silences",
          columns=("id", "scope", "target", "rule", "until", "by", "reason"),
          row=lambda s: (s["id"], s["scope"], s["target"], s["rule"] or "all", ts(s["until_ms"]), s["by"],
                         s["reason"]))


@silences_app.command("add")
def silences_add(scope: Scope, target: Target, duration: Annotated[str, typer.Option(
        help="How long, from now: 30m, 2h.")], reason: Reason,
        rule: Annotated[str, typer.Option(help="Only this rule (default: every rule).")] = "",
        url: Url = DEFAULT_URL) -> None:
    """Silence raises on an asset, line or site for a while (technician)."""
    doc = api("POST", url, "/api/v1/silences", {"scope": scope, "target": target, "reason": reason, "rule": rule,
                                                 "duration_s": parse_duration(duration, "--duration")})
    out.print(f"silence {doc['id']} on {scope} {target} until {ts(doc['until_ms'])}")


@silences_app.command("end")
def silences_end(silence: str, url: Url = DEFAULT_URL) -> None:
    """End a silence now."""
    api("DELETE", url, f"/api/v1/silences/{silence}")
    out.print(f"silence {silence} ended")
