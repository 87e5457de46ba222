"""CLI for alerting on a running platform: the incident inbox and its lifecycle, "why was I not paged?",
rules, maintenance windows, silences, feedback labels and KPIs. Everything goes through the REST API with the
token in EDGELOOP_TOKEN (``edgeloop login``); ``edgeloop rules check`` works offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeloop.cli import URL_OPTION, _api, _fail, _request, _show, _ts, out
from edgeloop.errors import ConfigError

__all__ = ["incidents_app", "maintenance_app", "rules_app", "silences_app"]

DEFAULT_URL = "http://127.0.0.1:8000"
Url = Annotated[str, URL_OPTION]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]

incidents_app = typer.Typer(help="Incidents of a running platform: the inbox, its lifecycle and feedback.")
rules_app = typer.Typer(no_args_is_help=True, help="Alert rules (YAML/JSON documents) of a running platform.")
maintenance_app = typer.Typer(help="Maintenance windows: planned work during which raises do not page.")
silences_app = typer.Typer(help="Manual silences: who silenced what, why, and until when.")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?$")


def duration_s(text: str) -> float:
    """``90`` (seconds), ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise _fail(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 1d)")
    scale = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}[m.group(2) or "s"]
    return float(m.group(1)) * scale


# -- incidents ---------------------------------------------------------------------------------------------


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
    return _ts(i["paged_at"]) if i.get("page_channels") else "not paged: no channel configured"


@incidents_app.command("list")
def incidents_list(url: Url = DEFAULT_URL, show_all: ShowAll = False, as_json: Json = False) -> None:
    """The inbox: incidents still being worked on, highest priority first."""
    found = _api("GET", url, "/api/v1/incidents" + ("?limit=500" if show_all else "?inbox=true"))

    def row(i: dict[str, Any]) -> tuple[str, ...]:
        assets = ", ".join(i["assets"][:3]) + (f" +{len(i['assets']) - 3}" if len(i["assets"]) > 3 else "")
        return (str(i["id"]), f"{i['priority']:g} {i['route']}", i["status"], i["title"], assets,
                _ts(i["opened_at"]), _paged(i), i["assignee"] or "-")

    _show(found, as_json=as_json, title="incidents" if show_all else "inbox",
          columns=("id", "priority", "status", "title", "assets", "opened", "paged", "assignee"), row=row)


@incidents_app.command("show")
def incidents_show(incident: int, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """One incident: its alerts with their explanations, and its timeline."""
    doc = _api("GET", url, f"/api/v1/incidents/{incident}")
    if as_json:
        out.print_json(json.dumps(doc))
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
        table.add_row(_ts(e["ts"]), _ts(e["recorded_at"]) if e.get("recorded_at") else "-", e["actor"], e["kind"],
                      e["detail"])
    out.print(table)


def _act(incident: int, action: str, url: str, body: dict[str, Any]) -> None:
    doc = _api("POST", url, f"/api/v1/incidents/{incident}/{action}", body)
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
    doc = _api("POST", url, f"/api/v1/incidents/{incident}/comments", {"text": text})
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
    done = _api("POST", url, f"/api/v1/incidents/{incident}/feedback",
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
    import time

    since = int((time.time() - hours * 3600) * 1000)
    query = f"?since={since}&limit=1000" + (f"&asset={asset}" if asset else "")
    _show(_api("GET", url, f"/api/v1/suppressions{query}"), as_json=as_json,
          title=f"not paged in the last {hours:g} h", columns=("time", "asset", "rule", "reason", "incident", "detail"),
          row=lambda s: (_ts(s["ts"]), s["asset"], s["rule"], s["reason"], str(s["incident"] or "-"), s["detail"]))


@incidents_app.command("labels")
def incidents_labels(
    output: Annotated[Path, typer.Option("--out", help="File to write (.csv or .parquet).")],
    asset: Annotated[str | None, typer.Option(help="Only this asset.")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Export technician feedback as training labels (CSV or Parquet, by the file's extension)."""
    fmt = {".csv": "csv", ".parquet": "parquet"}.get(output.suffix.lower())
    if fmt is None:
        raise _fail(f"{output}: the file must end in .csv or .parquet")
    resp = _request("GET", url, f"/api/v1/labels?format={fmt}" + (f"&asset={asset}" if asset else ""))
    output.write_bytes(resp.content)
    out.print(f"wrote {output} ({len(resp.content)} bytes)")


# -- rules -------------------------------------------------------------------------------------------------


@rules_app.command("show")
def rules_show(url: Url = DEFAULT_URL) -> None:
    """The rule document in force, as given."""
    doc = _api("GET", url, "/api/v1/alert-rules")
    out.print(f"# version {doc['version']} ({len(doc['rules'])} rules)")
    out.print(doc["text"], markup=False, highlight=False)


@rules_app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Check a rule document offline: the first problem with its line, or a summary."""
    from edgeloop.alerts.rule_config import load_rules

    try:
        ruleset = load_rules(file)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    kinds: dict[str, int] = {}
    for r in ruleset.rules:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    out.print(f"{file}: {len(ruleset.rules)} rules OK ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")


@rules_app.command("set")
def rules_set(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)], url: Url = DEFAULT_URL) -> None:
    """Replace the rules of a running platform (operator); it checks them first and changes nothing on error."""
    resp = _request("PUT", url, "/api/v1/alert-rules", content=file.read_bytes(), content_type="application/yaml")
    doc = resp.json()
    out.print(f"rules version {doc['version']} in force ({doc['rules']} rules)")


# -- maintenance windows and silences ----------------------------------------------------------------------

Scope = Annotated[str, typer.Option(help="asset, line or site.")]
Target = Annotated[str, typer.Option(help="The asset, line or site id.")]
Reason = Annotated[str, typer.Option(help="Why (shown in every suppression it causes).")]


@maintenance_app.callback(invoke_without_command=True)
def maintenance_list(ctx: typer.Context, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Maintenance windows not over yet."""
    if ctx.invoked_subcommand is not None:
        return
    _show(_api("GET", url, "/api/v1/maintenance-windows?active=true"), as_json=as_json, title="maintenance windows",
          columns=("id", "scope", "target", "from", "until", "by", "reason"),
          row=lambda m: (m["id"], m["scope"], m["target"], _ts(m["start_ms"]), _ts(m["end_ms"]), m["by"],
                         m["reason"]))


@maintenance_app.command("add")
def maintenance_add(scope: Scope, target: Target, duration: Annotated[str, typer.Option(
        help="How long, from now: 90m, 2h, 1d.")], reason: Reason, url: Url = DEFAULT_URL) -> None:
    """Plan maintenance from now (operator): raises on the target do not page, and say why."""
    doc = _api("POST", url, "/api/v1/maintenance-windows", {"scope": scope, "target": target, "reason": reason,
                                                            "duration_s": duration_s(duration)})
    out.print(f"maintenance window {doc['id']} on {scope} {target} until {_ts(doc['end_ms'])}")


@silences_app.callback(invoke_without_command=True)
def silences_list(ctx: typer.Context, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Silences still running."""
    if ctx.invoked_subcommand is not None:
        return
    _show(_api("GET", url, "/api/v1/silences?active=true"), as_json=as_json, title="silences",
          columns=("id", "scope", "target", "rule", "until", "by", "reason"),
          row=lambda s: (s["id"], s["scope"], s["target"], s["rule"] or "all", _ts(s["until_ms"]), s["by"],
                         s["reason"]))


@silences_app.command("add")
def silences_add(scope: Scope, target: Target, duration: Annotated[str, typer.Option(
        help="How long, from now: 30m, 2h.")], reason: Reason,
        rule: Annotated[str, typer.Option(help="Only this rule (default: every rule).")] = "",
        url: Url = DEFAULT_URL) -> None:
    """Silence raises on an asset, line or site for a while (technician)."""
    doc = _api("POST", url, "/api/v1/silences", {"scope": scope, "target": target, "reason": reason, "rule": rule,
                                                 "duration_s": duration_s(duration)})
    out.print(f"silence {doc['id']} on {scope} {target} until {_ts(doc['until_ms'])}")


@silences_app.command("end")
def silences_end(silence: str, url: Url = DEFAULT_URL) -> None:
    """End a silence now."""
    _api("DELETE", url, f"/api/v1/silences/{silence}")
    out.print(f"silence {silence} ended")
