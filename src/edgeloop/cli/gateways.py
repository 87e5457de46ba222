"""``edgeloop gateways ...``: edge gateways of a running platform (state, backlog, remote configuration) and
``gateways add``, which connects a real gateway (see ``agent/gateway_kit.py``)."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from edgeloop.agent.gateway_kit import SIM_PROFILE, agent_yaml, gateway_id, sim_profile, sim_serials
from edgeloop.cli.client import DEFAULT_URL, Url, api, sign_in
from edgeloop.cli.durations import parse_duration
from edgeloop.cli.output import Json, console, fail, out, show

__all__ = ["gateways_app"]

gateways_app = typer.Typer(help="Edge gateways of a running platform: state, backlog, remote configuration.")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@gateways_app.callback(invoke_without_command=True)
def gateways_list(
    ctx: typer.Context,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Gateways: state and why, backlog, lag, drops, sources, devices behind each, configuration."""
    if ctx.invoked_subcommand is not None:
        return
    colour = {"online": "green", "degraded": "yellow", "offline": "red"}

    def row(g: dict[str, Any]) -> tuple[str, ...]:
        backlog = g.get("backlog") or {}
        sources = ", ".join(f"{s['name']}: {s['state']}" for s in g.get("sources", [])) or "-"
        cfg = g["config"]
        latest = cfg.get("latest")
        config = f"v{cfg['running_version']} {cfg['status']}" + (
            f" (pushed v{latest['version']}: {latest['status']})" if latest else "")
        lag = g.get("sync_lag_s")
        return (g["id"], f"[{colour.get(g['state'], 'white')}]{g['state']}[/]",
                f"{backlog.get('messages', '-')} / {_age(backlog.get('oldest_unsent_age_s'))}",
                "-" if lag is None else f"{lag:.1f} s", str(g.get("dropped_samples", "-")), sources,
                str(len(g["devices"])), config, f"{_age(g['heartbeat_age_s'])} ago", "; ".join(g["reasons"]))

    show(api("GET", url, "/api/v1/gateways"), as_json=as_json, title="gateways", row=row,
         columns=("gateway", "state", "backlog (msgs / oldest)", "lag", "dropped", "sources", "devices", "config",
                  "heartbeat", "why"))


@gateways_app.command("push-config")
def gateways_push_config(
    gateway: Annotated[str, typer.Argument(help="The gateway (its device id).")],
    file: Annotated[Path, typer.Argument(help="The agent configuration (agent.yaml).", exists=True, dir_okay=False)],
    url: Url = DEFAULT_URL,
) -> None:
    """Validate and push a new agent configuration (operator); the agent applies it or rolls back and says so."""
    doc = api("PUT", url, f"/api/v1/gateways/{gateway}/config", {"config": file.read_text()})
    out.print(f"pushed version {doc['version']} to {gateway} (status {doc['status']}); follow it with "
              f"`edgeloop gateways`")


@gateways_app.command("add")
def gateways_add(
    name: Annotated[str, typer.Argument(help="The gateway's name: its devices become NAME-gw, NAME-pump-0001 ...")],
    tenant: Annotated[str, typer.Option(help="Tenant the gateway and its machines belong to.")] = "demo",
    line: Annotated[str | None, typer.Option(help="Line for the machines' assets (default: a site and a line "
                                             "named NAME, created if missing).")] = None,
    devices: Annotated[int, typer.Option(help="Simulated machines in the agent's simulator source.", min=1,
                                         max=100)] = 3,
    seed: Annotated[int, typer.Option(help="Simulator seed of the agent's machines.")] = 1,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where agent.yaml goes (default: ./NAME).")] = None,
    mqtt: Annotated[str | None, typer.Option(help="HOST:PORT of the broker as the gateway reaches it (default: "
                                             "the platform's own broker address).")] = None,
    expires: Annotated[str, typer.Option(help="How long the claim is valid: 30m, 24h, 7d.")] = "24h",
    username: Annotated[str, typer.Option(help="Who signs in when EDGELOOP_TOKEN is not set (the password is "
                                          "asked, or read from standard input).")] = "admin",
    url: Url = DEFAULT_URL,
) -> None:
    """Register a gateway with the platform and write its ready agent.yaml (enrollment, claim, broker, CA)."""
    expires_s = int(parse_duration(expires, "--expires"))
    target = out_dir or Path(name)
    config = target / "agent.yaml"
    if config.exists():
        raise fail(f"{config} exists; a gateway is added once (remove the folder to start over)")
    if not os.environ.get("EDGELOOP_TOKEN") and api("GET", url, "/api/v1/health").get("auth", True):
        os.environ["EDGELOOP_TOKEN"] = sign_in(url, username, _password(username))
    profiles = {p["name"] for p in api("GET", url, "/api/v1/profiles")}
    if SIM_PROFILE not in profiles:
        api("POST", url, "/api/v1/profiles", msgspec.to_builtins(sim_profile()))
    if line is None:
        line = name
        if name not in {x["id"] for x in api("GET", url, "/api/v1/lines")}:
            if name not in {s["id"] for s in api("GET", url, "/api/v1/sites")}:
                api("POST", url, "/api/v1/sites", {"id": name, "tenant": tenant, "name": f"gateway {name}"})
            api("POST", url, "/api/v1/lines", {"id": name, "site": name, "name": f"gateway {name}"})
    serials = ["gw", *sim_serials(devices, seed)]
    doc = api("POST", url, "/api/v1/enrollments", {
        "group": name, "tenant": tenant, "line": line, "profile": SIM_PROFILE, "serials": serials,
        "expires_in_s": expires_s})
    broker = mqtt or _reachable(doc["mqtt"], url)
    https_ca = os.environ.get("EDGELOOP_CA") if url.startswith("https:") else None  # travels with the folder
    text = agent_yaml(name=name, tenant=tenant, mqtt=broker, url=url, claim=doc["claim"], devices=devices,
                      seed=seed, ca="./platform-ca.pem" if https_ca else None)
    target.mkdir(parents=True, exist_ok=True)
    if https_ca:
        shutil.copyfile(https_ca, target / "platform-ca.pem")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the claim
    with os.fdopen(fd, "w") as f:
        f.write(text)
    out.print(f"gateway {gateway_id(name)} enrolled in tenant {tenant!r}, line {line!r}: {len(serials)} devices "
              f"({', '.join(f'{name}-{s}' for s in serials)}); the claim is valid for {expires}.")
    out.print(f"wrote {config}; start the gateway with:")
    out.print(f"  edgeloop agent --config {config}", highlight=False, soft_wrap=True)


def _password(username: str) -> str:
    """The password of ``username``: from the terminal, or one line of standard input."""
    if sys.stdin.isatty():
        return str(typer.prompt(f"password of {username}", hide_input=True, err=True))
    return sys.stdin.readline().rstrip("\r\n")


def _reachable(mqtt: str, url: str) -> str:
    """The broker address as a gateway dials it: a wildcard bind address becomes the API's host."""
    host, _, port = mqtt.rpartition(":")
    if host in ("0.0.0.0", "::", ""):
        host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
        console.print(f"the gateway will connect to the broker at {host}:{port} (--mqtt to change)")
    return f"{host}:{port}"


