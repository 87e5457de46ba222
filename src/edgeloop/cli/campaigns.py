"""``edgeloop campaigns ...``: rollouts of detector versions through shadow and canary waves, gated on quality
(see ``docs/models.md``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.output import Json, out, print_json, show, ts

__all__ = ["campaigns_app"]

campaigns_app = typer.Typer(help="Rollout campaigns: shadow, canary waves, promotion or automatic rollback.")


def _phase(c: dict[str, Any]) -> str:
    """"wave 2/3: 50 % of 20 devices on the candidate; gates: false_alarms continue, missed_faults pass"."""
    p = c["progress"]
    where = {"shadow": "shadow", "wave": f"wave {p['wave']}/{p['waves']}",
             "awaiting_approval": f"awaiting approval for wave {p['wave']}/{p['waves']}"}.get(p["phase"], p["phase"])
    gates = ", ".join(f"{g} {d}" for g, d in p["gates"].items())
    return (f"{where}: {p['on_candidate']} of {p['targets']} devices on the candidate"
            + (f"; gates: {gates}" if gates else "") + (f"; {p['outcome']}" if p["outcome"] else ""))


@campaigns_app.command("list")
def campaigns_list(running: Annotated[bool, typer.Option("--running", help="Only those still going.")] = False,
                   url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Campaigns, newest first: the version rolled out, from which, where it is."""

    def row(c: dict[str, Any]) -> tuple[str, ...]:
        spec = c["spec"]
        return (spec["id"], f"{spec['from_ref']} -> {spec['to_ref']}", _phase(c), str(len(spec["targets"])),
                ts(spec["created_ms"]), spec["created_by"])

    show(api("GET", url, "/api/v1/campaigns" + ("?running=true" if running else "")), as_json=as_json,
         title="campaigns", row=row, columns=("campaign", "rollout", "phase", "targets", "started", "by"))


@campaigns_app.command("show")
def campaigns_show(campaign: Annotated[str, typer.Argument(help="The campaign id.")], url: Url = DEFAULT_URL,
                   as_json: Json = False) -> None:
    """One campaign: its phase, its gates' decisions with their figures, its log."""
    doc = api("GET", url, f"/api/v1/campaigns/{campaign}")
    if as_json:
        print_json(doc)
        return
    spec = doc["spec"]
    what = "gateways" if spec["payload"] == "edge_model" else "devices"
    scope = spec.get("scope", "*")
    where = f" of rollout group {scope.removeprefix('group:')}" if scope != "*" else ""
    out.print(f"{spec['id']}: {spec['from_ref']} -> {spec['to_ref']} on {len(spec['targets'])} {what}{where}; "
              f"{_phase(doc)}")
    for e in doc["events"]:
        figures = ", ".join(f"{k}={v:.3g}" for k, v in e["figures"].items())
        out.print(f"  {ts(e['ts_ms'])}  {e['kind']:<16} {e['by']}: {e['message']}" + (f" [{figures}]" if figures
                                                                                       else ""))


@campaigns_app.command("start")
def campaigns_start(
    ref: Annotated[str, typer.Argument(help="The detector or edge version to roll out (NAME@VERSION).")],
    waves: Annotated[str, typer.Option("--waves", help="Cumulative shares of the targets, e.g. 0.1,0.5,1.")] = \
        "0.1,0.5,1",
    shadow_h: Annotated[float, typer.Option("--shadow-hours", min=0, help="Detectors only (an edge model has "
                                                                         "no shadow phase).")] = 24.0,
    soak_h: Annotated[float, typer.Option("--soak-hours", min=0.01)] = 24.0,
    approve_waves: Annotated[bool, typer.Option("--approve-waves", help="Each wave waits for an operator.")] = False,
    score_shift: Annotated[float | None, typer.Option(
        "--score-shift", min=0.01, max=1.0, help="Detectors: also gate on the live scores' KS distance to the model "
                                                "card's held-out scores, at most this (off by default).")] = None,
    group: Annotated[str, typer.Option("--group", help="Only this rollout group's devices (gateways); the "
                                                      "promotion sets the group's champion (scope group:NAME).")] = "",
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Roll a version out, replacing the champion (platform administrator): a detector version to its profile's
    devices, an edge version to the gateways that run the model (with --group, those of one rollout group)."""
    try:
        shares = [float(w) for w in waves.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--waves {waves!r}: comma-separated numbers, e.g. 0.1,0.5,1") from None
    plan = {"waves": shares, "shadow_h": shadow_h, "soak_h": soak_h,
            "approvals": [approve_waves] * len(shares) if approve_waves else [],
            **({"score_shift_max": score_shift} if score_shift is not None else {}),
            **({"group": group} if group else {})}
    doc = api("POST", url, "/api/v1/campaigns", {"model": ref, "plan": plan})
    if as_json:
        print_json(doc)
        return
    out.print(f"campaign {doc['spec']['id']} started: {doc['spec']['from_ref']} -> {doc['spec']['to_ref']}, "
              f"{_phase(doc)}")


@campaigns_app.command("approve")
def campaigns_approve(campaign: Annotated[str, typer.Argument(help="The campaign id.")],
                      url: Url = DEFAULT_URL) -> None:
    """Let a campaign waiting for approval enter its next wave."""
    out.print(f"{campaign}: {_phase(api('POST', url, f'/api/v1/campaigns/{campaign}/approve'))}")


@campaigns_app.command("abort")
def campaigns_abort(campaign: Annotated[str, typer.Argument(help="The campaign id.")],
                    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the log and the audit).")],
                    url: Url = DEFAULT_URL) -> None:
    """Stop a campaign: every device that ran the candidate goes back to the champion."""
    doc = api("POST", url, f"/api/v1/campaigns/{campaign}/abort", {"reason": reason})
    out.print(f"{campaign}: {_phase(doc)}")
