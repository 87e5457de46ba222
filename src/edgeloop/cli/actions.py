"""``edgeloop policies|decisions|holds ...``: closed-loop actions under human control (see ``docs/actions.md``)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api, request
from edgeloop.cli.durations import parse_duration
from edgeloop.cli.output import Json, fail, out, print_json, show, ts

__all__ = ["decisions_app", "holds_app", "policies_app"]

policies_app = typer.Typer(help="Action policies: what the platform may do to machines, when, and with whose approval.")
decisions_app = typer.Typer(help="Decisions the policies made, their approvals, and their hash-chained record.")
holds_app = typer.Typer(help="Holds on automation: a manual override of an asset, a stop of a policy.")
Tenant = Annotated[str | None, typer.Option("--tenant", help="The tenant (platform administrators).")]


def _q(**params: Any) -> str:
    found = {k: v for k, v in params.items() if v is not None}
    return f"?{urlencode(found)}" if found else ""


@policies_app.command("show")
def policies_show(tenant: Tenant = None, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """The policies in force, as written."""
    doc = api("GET", url, f"/api/v1/policies{_q(tenant=tenant)}")
    if as_json:
        print_json(doc)
        return
    out.print(f"# policies of {doc['tenant']}, version {doc['version']}")
    out.print(doc["text"] or "# none yet")


@policies_app.command("set")
def policies_set(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)], tenant: Tenant = None,
                 url: Url = DEFAULT_URL) -> None:
    """Replace the policies (administrators); they are checked first: an error names the line and nothing changes."""
    doc = request("PUT", url, f"/api/v1/policies{_q(tenant=tenant)}", content=file.read_bytes(),
                  content_type="application/yaml").json()
    out.print(f"policies version {doc['version']} of {doc['tenant']} in force ({doc['policies']} policies)")


@policies_app.command("run")
def policies_run(policy: Annotated[str, typer.Argument(help="A policy triggered by a person.")],
                 asset: Annotated[str, typer.Option("--asset", help="The asset to act on.")], tenant: Tenant = None,
                 url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Run a person-triggered policy on an asset now (operators): its checks, approvals and mode apply."""
    doc = api("POST", url, f"/api/v1/policies/{quote(policy)}/run{_q(tenant=tenant)}", {"asset": asset})
    if as_json:
        print_json(doc)
        return
    out.print(f"{doc['id']}: {doc['action']} on {doc['asset']}: {doc['state']}")


def _when(text: str, option: str) -> int:
    """``7d`` (that long ago) or an ISO-8601 time (UTC unless it says otherwise), as ms."""
    text = text.strip()
    if text and text[0].isdigit() and text[-1] in "smhd" and "-" not in text:
        return int((time.time() - parse_duration(text, option)) * 1000)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r}: a duration ago (7d, 12h) or an ISO-8601 time (2026-12-01T08:00)") from None
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


@policies_app.command("replay")
def policies_replay(policy: Annotated[str, typer.Argument(help="The policy's name.")],
                    start: Annotated[str, typer.Option("--from", help="7d (ago) or an ISO-8601 time.")] = "7d",
                    end: Annotated[str, typer.Option("--to", help="0s (now) or an ISO-8601 time.")] = "0s",
                    file: Annotated[Path | None, typer.Option(
                        "--file", exists=True, dir_okay=False,
                        help="A policy document holding a new version of the policy, not yet in force.")] = None,
                    tenant: Tenant = None, url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """What a policy (or a new version of it) would have done on stored history, before it is turned on: each
    trigger, the outcome, the checks that held it, what the version in force would have done, what really
    happened. Nothing is sent or recorded (operators)."""
    payload: dict[str, Any] = {"from_ms": _when(start, "--from"), "to_ms": _when(end, "--to")}
    if file is not None:
        payload["text"] = file.read_text()
    doc = api("POST", url, f"/api/v1/policies/{quote(policy)}/replay{_q(tenant=tenant)}", payload)
    if as_json:
        print_json(doc)
        return

    def row(r: dict[str, Any]) -> tuple[str, ...]:
        return (ts(r["ts"]), r["asset"], r["cause"], r["outcome"], r["in_force"] or "-", r["actual"] or "-",
                r["detail"][:70])

    show(doc["rows"], as_json=False, title=f"{doc['policy']} ({doc['version']}) replayed", row=row,
         columns=("at", "asset", "cause", "would", "in force", "actually", "what / why held"))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(doc["counts"].items())) or "no trigger"
    out.print(f"{len(doc['rows'])} triggers: {counts}" + (f"; differs from the version in force on {doc['differs']}"
                                                           if file is not None else ""))


@decisions_app.command("list")
def decisions_list(asset: Annotated[str | None, typer.Option("--asset")] = None,
                   state: Annotated[str | None, typer.Option("--state", help="e.g. awaiting_approval, held, "
                                                                           "applied")] = None,
                   limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
                   url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Decisions, newest first: which policy, on which asset, what it did and why."""

    def row(d: dict[str, Any]) -> tuple[str, ...]:
        return (d["id"], ts(d["created_ms"]), d["asset"], f"{d['policy']} v{d['policy_version']}", d["action"],
                d["state"], d["cause"], f"{d['approvals']}/{d['needed']}" if d["needed"] else "-")

    show(api("GET", url, f"/api/v1/decisions{_q(asset=asset, state=state, limit=limit)}"), as_json=as_json,
         title="decisions", row=row, columns=("decision", "at", "asset", "policy", "action", "state", "cause",
                                              "approvals"))


@decisions_app.command("show")
def decisions_show(decision: Annotated[str, typer.Argument(help="The decision id.")], url: Url = DEFAULT_URL,
                   as_json: Json = False) -> None:
    """One decision and its whole record: why, each check with its value, approvals, command, answer, effect."""
    doc = api("GET", url, f"/api/v1/decisions/{quote(decision)}")
    if as_json:
        print_json(doc)
        return
    d = doc["decision"]
    out.print(f"{d['id']}: {d['policy']} v{d['policy_version']} ({d['mode']}) on {d['asset']}: {d['action']} -> "
              f"{d['state']}; cause {d['cause']}; trace {d['trace']}")
    for e in doc["entries"]:
        out.print(f"  {ts(e['ts'])}  {e['kind']:<17} {e['actor']}: {json.dumps(e['body'], sort_keys=True)[:300]}")


def _decide(decision: str, verb: str, note: str, url: str) -> None:
    doc = api("POST", url, f"/api/v1/decisions/{quote(decision)}/{verb}", {"note": note})
    out.print(f"{doc['id']}: {doc['state']} ({doc['approvals']}/{doc['needed']} approvals)")


@decisions_app.command("approve")
def decisions_approve(decision: Annotated[str, typer.Argument(help="The decision id.")],
                      note: Annotated[str, typer.Option("--note")] = "", url: Url = DEFAULT_URL) -> None:
    """Approve a decision awaiting approval (operators; a second approval must be another person's)."""
    _decide(decision, "approve", note, url)


@decisions_app.command("reject")
def decisions_reject(decision: Annotated[str, typer.Argument(help="The decision id.")],
                     note: Annotated[str, typer.Option("--note")] = "", url: Url = DEFAULT_URL) -> None:
    """Reject a decision awaiting approval: nothing is sent."""
    _decide(decision, "reject", note, url)


@decisions_app.command("verify")
def decisions_verify(url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Walk the hash-chained decision log (administrators); exit 1 if a record was altered or removed."""
    doc = api("GET", url, "/api/v1/decision-log/verify")
    if as_json:
        print_json(doc)
    else:
        out.print(f"{doc['records']} records; head {doc['head']} (keep it: a record cut off the end shows only "
                  "against it)")
        for problem in doc["problems"]:
            out.print(f"  BROKEN: {problem}")
        out.print("the chain holds" if doc["ok"] else "the chain is BROKEN")
    if not doc["ok"]:
        raise typer.Exit(1)


@holds_app.command("list")
def holds_list(everything: Annotated[bool, typer.Option("--all", help="Also those over.")] = False,
               url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Holds on automation, newest first."""

    def row(h: dict[str, Any]) -> tuple[str, ...]:
        return (h["id"], h["target"], h["held_by"], ts(h["created_ms"]), ts(h["until_ms"]),
                ts(h["ended_ms"]) if h["ended_ms"] else "-", h["reason"])

    show(api("GET", url, f"/api/v1/holds{_q(active='false' if everything else None)}"), as_json=as_json,
         title="holds", row=row, columns=("hold", "target", "by", "from", "until", "ended", "reason"))


@holds_app.command("add")
def holds_add(target: Annotated[str, typer.Argument(help="An asset id, or policy:NAME to stop a policy.")],
              minutes: Annotated[float, typer.Option("--minutes", min=0.1, max=30 * 1440)] = 60.0,
              reason: Annotated[str, typer.Option("--reason")] = "manual override", tenant: Tenant = None,
              url: Url = DEFAULT_URL) -> None:
    """Hold automation on an asset (technicians) or stop a policy (operators) for a time."""
    doc = api("POST", url, f"/api/v1/holds{_q(tenant=tenant)}", {"target": target, "duration_s": minutes * 60,
                                                                  "reason": reason})
    out.print(f"{doc['id']}: automation held on {doc['target']} until {ts(doc['until_ms'])}")


@holds_app.command("release")
def holds_release(hold: Annotated[str, typer.Argument(help="The hold id.")], url: Url = DEFAULT_URL) -> None:
    """End a hold before its time."""
    doc = api("POST", url, f"/api/v1/holds/{quote(hold)}/release")
    out.print(f"{doc['id']}: released; automation on {doc['target']} resumes")
