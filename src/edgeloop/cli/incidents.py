"""``edgeloop incidents ...``: the incident inbox of a running platform, its lifecycle, "why was I not paged?",
feedback labels. Everything goes through the REST API with the token in EDGELOOP_TOKEN (``edgeloop login``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeloop.cli.client import DEFAULT_URL, Url, api, request
from edgeloop.cli.output import Json, fail, out, print_json, show, ts

__all__ = ["incidents_app"]

incidents_app = typer.Typer(help="Incidents of a running platform: the inbox, its lifecycle and feedback.")


ShowAll = Annotated[bool, typer.Option("--all", help="Also resolved and closed ones (newest first).")]


@incidents_app.callback(invoke_without_command=True)
def incidents_inbox(ctx: typer.Context, url: Url = DEFAULT_URL, show_all: ShowAll = False,
                    as_json: Json = False) -> None:
    """The inbox: incidents still being worked on, highest priority first (also ``incidents list``)."""
    if ctx.invoked_subcommand is None:
        incidents_list(url, show_all, as_json)


def _paged(i: dict[str, Any]) -> str:
    """When the incident paged, or why no one was: no channel carries its route's pages."""
    if not i["paged_at"]:
        return "-"
    return ts(i["paged_at"]) if i.get("page_channels") else "not paged: no channel configured"


@incidents_app.command("list")
def incidents_list(url: Url = DEFAULT_URL, show_all: ShowAll = False, as_json: Json = False) -> None:
    """The inbox: incidents still being worked on, highest priority first."""
    found = api("GET", url, "/api/v1/incidents" + ("?limit=500" if show_all else "?inbox=true"))

    def row(i: dict[str, Any]) -> tuple[str, ...]:
        assets = ", ".join(i["assets"][:3]) + (f" +{len(i['assets']) - 3}" if len(i["assets"]) > 3 else "")
        return (str(i["id"]), f"{i['priority']:g} {i['route']}", i["status"], i["title"], assets,
                ts(i["opened_at"]), _paged(i), i["assignee"] or "-")

    show(found, as_json=as_json, title="incidents" if show_all else "inbox",
          columns=("id", "priority", "status", "title", "assets", "opened", "paged", "assignee"), row=row)


@incidents_app.command("show")
def incidents_show(incident: int, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """One incident: its alerts with their explanations, and its timeline."""
    doc = api("GET", url, f"/api/v1/incidents/{incident}")
    if as_json:
        print_json(doc)
        return
    out.print(f"[bold]#{doc['id']} {doc['title']}[/bold]  {doc['status']}  priority {doc['priority']:g} "
              f"({doc['route']})  assignee {doc['assignee'] or '-'}")
    for a in doc["alerts"]:
        why = ", ".join(f"{c} {s:.0%}" for c, s in sorted(a["explanation"].items(), key=lambda kv: -kv[1])[:3])
        out.print(f"  alert {a['id']} {a['severity']} {a['asset']}/{a['kind']} x{a['count']} {a['status']}: "
                  f"{a['message']}" + (f"  [{why}]" if why else ""))
    table = Table(title="timeline (data time: when it happened in the data; recorded: the platform's clock)")
    for col in ("data time", "recorded", "who", "what", "detail"):
        table.add_column(col)
    for e in doc["timeline"]:
        table.add_row(ts(e["ts"]), ts(e["recorded_at"]) if e.get("recorded_at") else "-", e["actor"], e["kind"],
                      e["detail"])
    out.print(table)


def _act(incident: int, action: str, url: str, body: dict[str, Any]) -> None:
    doc = api("POST", url, f"/api/v1/incidents/{incident}/{action}", body)
    out.print(f"incident {doc['id']}: {doc['status']}" + (f", assigned to {doc['assignee']}" if doc["assignee"]
                                                          else ""))


def _action(action: str, help_text: str) -> None:
    def command(incident: int, note: Annotated[str, typer.Option(help="A note for the timeline.")] = "",
                url: Url = DEFAULT_URL) -> None:
        _act(incident, action, url, {"note": note})

    command.__doc__ = help_text
    incidents_app.command(action)(command)


for _name, _help in (("acknowledge", "Acknowledge: I am on it (stops the escalation)."),
                     ("start", "Start work on it (in progress)."), ("resolve", "Resolve: the cause is fixed."),
                     ("close", "Close a resolved incident whose condition has cleared."),
                     ("reopen", "Reopen a resolved incident.")):
    _action(_name, _help)


@incidents_app.command("assign")
def incidents_assign(incident: int, to: Annotated[str | None, typer.Option(help="Who (omit to unassign).")] = None,
                     url: Url = DEFAULT_URL) -> None:
    """Assign the incident to a person."""
    _act(incident, "assign", url, {"to": to})


@incidents_app.command("comment")
def incidents_comment(incident: int, text: str, url: Url = DEFAULT_URL) -> None:
    """Add a comment to the incident's timeline."""
    doc = api("POST", url, f"/api/v1/incidents/{incident}/comments", {"text": text})
    out.print(f"incident {doc['id']}: comment added")


@incidents_app.command("feedback")
def incidents_feedback(
    incident: int,
    verdict: Annotated[str, typer.Option(help="confirmed, false_alarm or relabel.")],
    fault_type: Annotated[str, typer.Option(help="The fault found (confirmed, relabel), e.g. bearing_wear.")] = "",
    reason: Annotated[str, typer.Option(help="Why it was a false alarm.")] = "",
    url: Url = DEFAULT_URL,
) -> None:
    """Your verdict on every alert of the incident: stored as training labels; repeated false alarms may tune
    a rule within its bounds."""
    done = api("POST", url, f"/api/v1/incidents/{incident}/feedback",
                {"verdict": verdict, "fault_type": fault_type, "reason": reason})
    for d in done:
        lb = d["label"]
        line = f"alert {lb['alert']}: {lb['verdict']}" + (f" ({lb['fault_type']})" if lb["fault_type"] else "")
        if d["tuning"]:
            t = d["tuning"]
            line += f"; rule tuning {t['action']}: {t['old']:g} -> {t['new']:g} ({t['why']})"
        out.print(line)


@incidents_app.command("why")
def incidents_why(
    asset: Annotated[str | None, typer.Option(help="Only this asset.")] = None,
    hours: Annotated[float, typer.Option(help="Look back this many hours.")] = 24.0,
    url: Url = DEFAULT_URL, as_json: Json = False,
) -> None:
    """Why was I not paged? Every signal that did not page, with its reason and who/why/until when."""

    since = int((time.time() - hours * 3600) * 1000)
    query = f"?since={since}&limit=1000" + (f"&asset={asset}" if asset else "")
    show(api("GET", url, f"/api/v1/suppressions{query}"), as_json=as_json,
          title=f"not paged in the last {hours:g} h", columns=("time", "asset", "rule", "reason", "incident", "detail"),
          row=lambda s: (ts(s["ts"]), s["asset"], s["rule"], s["reason"], str(s["incident"] or "-"), s["detail"]))


@incidents_app.command("labels")
def incidents_labels(
    output: Annotated[Path, typer.Option("--out", help="File to write (.csv or .parquet).")],
    asset: Annotated[str | None, typer.Option(help="Only this asset.")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Export technician feedback as training labels (CSV or Parquet, by the file's extension)."""
    fmt = {".csv": "csv", ".parquet": "parquet"}.get(output.suffix.lower())
    if fmt is None:
        raise fail(f"{output}: the file must end in .csv or .parquet")
    resp = request("GET", url, f"/api/v1/labels?format={fmt}" + (f"&asset={asset}" if asset else ""))
    output.write_bytes(resp.content)
    out.print(f"wrote {output} ({len(resp.content)} bytes)")


