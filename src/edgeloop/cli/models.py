"""``edgeloop models ...``: the model registry of a running platform: versions, lineage, import and export of signed
model files (``.elm``), promotion and rollback of the champion (see ``docs/models.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api, request
from edgeloop.cli.output import Json, fail, out, print_json, show, ts
from edgeloop.models.manifest import ModelRef

__all__ = ["models_app"]

models_app = typer.Typer(help="The model registry: signed model versions, lineage, champion and challenger.")

Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the alias history and the audit log).")]
Scope = Annotated[str, typer.Option("--scope", help="* (the whole profile) or group:NAME (a gateway group).")]


def _ref(text: str) -> ModelRef:
    try:
        return ModelRef.parse(text)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _metrics(metrics: dict[str, float], limit: int = 3) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in list(metrics.items())[:limit]) or "-"


@models_app.command("list")
def models_list(url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Models: kind, profile, the champion (0: the built-in detector), versions and aliases."""

    def row(m: dict[str, Any]) -> tuple[str, ...]:
        newest = m["versions"][0] if m["versions"] else None
        aliases = ", ".join(f"{a['alias']}{'' if a['scope'] == '*' else '@' + a['scope']}=v{a['version']}"
                            for a in m["aliases"]) or "-"
        return (m["name"], m["kind"], m["profile"] or "-", "-" if m["champion"] is None else f"v{m['champion']}",
                str(len(m["versions"])), "-" if newest is None else f"v{newest['version']} {ts(newest['created_ms'])}",
                aliases)

    show(api("GET", url, "/api/v1/models"), as_json=as_json, title="models", row=row,
         columns=("model", "kind", "profile", "champion", "versions", "newest", "aliases"))


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="A version (NAME@VERSION), e.g. detector.pump@3.")],
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """One version: where it came from (trigger, parent, data window, labels, code), its model card headline and
    the aliases pointing at it."""
    parsed = _ref(ref)
    doc = api("GET", url, f"/api/v1/models/{parsed.name}/versions/{parsed.version}")
    if as_json:
        print_json(doc)
        return
    m = doc["manifest"]
    trigger = m["trigger"]
    data = m.get("data")
    lines = [
        ("version", f"{doc['ref']} ({m['kind']}, {m['format']})"),
        ("aliases", ", ".join(doc["aliases"]) or "-"),
        ("created", f"{ts(m['created_ms'])} by {m['created_by']}"),
        ("trigger", f"{trigger['kind']} by {trigger['by']}" + (f" ({trigger['ref']})" if trigger["ref"] else "")),
        ("parent", m.get("parent") or "-"),
        ("profile", m.get("profile") or "-"),
        ("data", "-" if not data else f"{ts(data['window_start_ms'])} .. {ts(data['window_end_ms'])}, "
                                      f"{len(data['devices'])} devices, {data['rows']:,} rows"),
        ("labels", str(len(m.get("label_ids", [])))),
        ("code", m["code_version"]),
        ("artifact", f"{m['artifact_size']:,} bytes, sha256 {m['artifact_sha256']}"),
        ("metrics", _metrics(m.get("metrics", {}), limit=20)),
    ]
    for key, value in lines:
        out.print(f"[bold]{key:9}[/bold] {value}", highlight=False, soft_wrap=True)


@models_app.command("lineage")
def models_lineage(
    ref: Annotated[str, typer.Argument(help="A version (NAME@VERSION).")],
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Where a version came from: itself, then its parents to the root, each with its trigger, training data,
    labels, code version and whether its signature checks out."""
    parsed = _ref(ref)
    doc = api("GET", url, f"/api/v1/models/{parsed.name}/versions/{parsed.version}/lineage")
    if as_json:
        print_json(doc)
        return

    def row(e: dict[str, Any]) -> tuple[str, ...]:
        if e["builtin"]:
            return (e["ref"], "built-in detector", "-", "-", "-", "-", "yes")
        if not e["found"]:
            return (e["ref"], "not stored here", "-", "-", "-", "-", "no")
        t, data = e["trigger"], e["data"]
        return (e["ref"], f"{t['kind']} by {t['by']}" + (f" ({t['ref']})" if t["ref"] else ""),
                "-" if not data else f"{ts(data['window_start_ms'])} .. {ts(data['window_end_ms'])} "
                                     f"({data['rows']:,} rows)",
                str(len(e["label_ids"])), e["code_version"] or "-", _metrics(e["metrics"]),
                "yes" if e["verified"] else f"no: {e['problem']}")

    show(doc["entries"], as_json=False, row=row,
         title=f"lineage of {doc['ref']} ({'complete' if doc['complete'] else 'INCOMPLETE'})",
         columns=("version", "trigger", "data", "labels", "code", "metrics", "signed"))


@models_app.command("import")
def models_import(
    file: Annotated[Path, typer.Argument(help="A signed model file (.elm), or a raw ONNX model with --kind and "
                                         "--name.", exists=True, dir_okay=False)],
    kind: Annotated[str | None, typer.Option(help="For a raw ONNX model: edge or rul.")] = None,
    name: Annotated[str | None, typer.Option(help="For a raw ONNX model: the model's name, e.g. edge.pump.")] = None,
    parent: Annotated[str | None, typer.Option(help="For a raw ONNX model: the version it replaces.")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Upload a model (platform administrator): a signed .elm is kept as signed; a raw ONNX model is registered
    as the name's next version and signed by the platform."""
    if (kind is None) != (name is None):
        raise fail("a raw ONNX model needs both --kind and --name; a signed model file (.elm) neither")
    params = "" if kind is None else f"?kind={kind}&name={name}" + (f"&parent={parent}" if parent else "")
    doc = request("POST", url, f"/api/v1/models/import{params}", content=file.read_bytes(),
                  content_type="application/octet-stream").json()
    out.print(f"imported {doc['name']}@{doc['version']} ({doc['kind']}, {doc['artifact_size']:,} bytes)")


@models_app.command("export")
def models_export(
    ref: Annotated[str, typer.Argument(help="A version (NAME@VERSION).")],
    dest: Annotated[Path, typer.Option("--out", help="Where the signed model file goes (F.elm).", dir_okay=False)],
    url: Url = DEFAULT_URL,
) -> None:
    """Write a version as a signed model file (.elm: manifest, signature, signer, artifact), verified by the
    platform first; what the agent loads (platform administrator)."""
    parsed = _ref(ref)
    blob = request("GET", url, f"/api/v1/models/{parsed.name}/versions/{parsed.version}/artifact").content
    dest.write_bytes(blob)
    out.print(f"wrote {dest} ({len(blob):,} bytes)")


@models_app.command("promote")
def models_promote(
    ref: Annotated[str, typer.Argument(help="The version to make champion (NAME@VERSION).")],
    reason: Reason,
    scope: Scope = "*",
    url: Url = DEFAULT_URL,
) -> None:
    """Make a version the champion (platform administrator); the platform verifies it first."""
    parsed = _ref(ref)
    doc = api("POST", url, f"/api/v1/models/{parsed.name}/promote",
              {"version": parsed.version, "reason": reason, "scope": scope})
    out.print(f"{doc['name']} champion [{doc['scope']}]: {_was(doc['previous'])} -> v{doc['version']}")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="The model, e.g. detector.pump.")],
    reason: Reason,
    scope: Scope = "*",
    url: Url = DEFAULT_URL,
) -> None:
    """Make the previous champion champion again (platform administrator)."""
    doc = api("POST", url, f"/api/v1/models/{name}/rollback", {"reason": reason, "scope": scope})
    out.print(f"{doc['name']} champion [{doc['scope']}] rolled back: {_was(doc['previous'])} -> v{doc['version']}")


def _was(version: int | None) -> str:
    return "unset" if version is None else f"v{version}"


@models_app.command("train")
def models_train(
    profile: Annotated[str, typer.Option("--profile", help="The device profile whose detector is trained.")],
    hours: Annotated[float, typer.Option("--hours", min=0.1, help="Train on this many hours before the devices' "
                                         "newest sample.")] = 24.0,
    device: Annotated[list[str] | None, typer.Option("--device", help="Only these devices (repeat).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")] = True,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Train a candidate detector for a profile from its stored data and the technicians' labels (platform
    administrator). The candidate is registered as the model's next version with its model card (compared with
    the champion on the same held-out data); roll it out with `edgeloop campaigns start`."""
    job = api("POST", url, "/api/v1/training-jobs", {"profile": profile, "hours": hours, "devices": device or None})
    if wait:
        job = _follow(url, job, quiet=as_json)
    if as_json:
        print_json(job)
        return
    if job["state"] == "failed":
        raise fail(f"training job {job['id']} failed: {job['error']}")
    if job["state"] == "done":
        out.print(f"{job['version']}: verdict {job['verdict']}"
                  + (f" ({'; '.join(job['reasons'])})" if job["reasons"] else ""))
    else:
        out.print(f"training job {job['id']} started; follow it with: edgeloop models jobs")


def _follow(url: str, job: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Poll a training job until it ends, showing its stage and progress."""
    import time

    last = ""
    while job["state"] == "running":
        line = f"{job['stage']} {job['done']}/{job['total']}" if job["total"] else job["stage"]
        if line != last and not quiet:
            out.print(f"  {line}")
            last = line
        time.sleep(0.5)
        job = api("GET", url, f"/api/v1/training-jobs/{job['id']}")
    return job


@models_app.command("jobs")
def models_jobs(url: Url = DEFAULT_URL, as_json: Json = False) -> None:
    """Recent training jobs: state, progress, the candidate and its verdict against the champion."""

    def row(j: dict[str, Any]) -> tuple[str, ...]:
        progress = f"{j['stage']} {j['done']}/{j['total']}" if j["state"] == "running" else j["state"]
        return (j["id"], j["model"], progress, j["version"] or "-", j["verdict"] or j["error"][:60] or "-",
                ts(j["started_ms"]))

    show(api("GET", url, "/api/v1/training-jobs"), as_json=as_json, title="training jobs", row=row,
         columns=("job", "model", "state", "candidate", "verdict", "started"))
