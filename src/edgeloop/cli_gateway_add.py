"""``edgeloop gateways add NAME``: connect a real gateway to a running platform (see ``agent/gateway_kit.py``)."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import typer

from edgeloop.agent.gateway_kit import SIM_PROFILE, agent_yaml, gateway_id, sim_profile, sim_serials
from edgeloop.cli import URL_OPTION, _api, _duration_s, _fail, _verify, console, out


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
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
) -> None:
    """Register a gateway with the platform and write its ready agent.yaml (enrollment, claim, broker, CA)."""
    target = out_dir or Path(name)
    config = target / "agent.yaml"
    if config.exists():
        raise _fail(f"{config} exists; a gateway is added once (remove the folder to start over)")
    if not os.environ.get("EDGELOOP_TOKEN") and _api("GET", url, "/api/v1/health").get("auth", True):
        os.environ["EDGELOOP_TOKEN"] = _sign_in(url, username)
    profiles = {p["name"] for p in _api("GET", url, "/api/v1/profiles")}
    if SIM_PROFILE not in profiles:
        _api("POST", url, "/api/v1/profiles", msgspec.to_builtins(sim_profile()))
    if line is None:
        line = name
        if name not in {x["id"] for x in _api("GET", url, "/api/v1/lines")}:
            if name not in {s["id"] for s in _api("GET", url, "/api/v1/sites")}:
                _api("POST", url, "/api/v1/sites", {"id": name, "tenant": tenant, "name": f"gateway {name}"})
            _api("POST", url, "/api/v1/lines", {"id": name, "site": name, "name": f"gateway {name}"})
    serials = ["gw", *sim_serials(devices, seed)]
    doc = _api("POST", url, "/api/v1/enrollments", {
        "group": name, "tenant": tenant, "line": line, "profile": SIM_PROFILE, "serials": serials,
        "expires_in_s": _duration_s(expires)})
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


def _sign_in(url: str, username: str) -> str:
    """A bearer token for ``username``; the password from the terminal, or one line of standard input."""
    if sys.stdin.isatty():
        password = typer.prompt(f"password of {username}", hide_input=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        resp = httpx.post(url.rstrip("/") + "/api/v1/auth/token", data={"username": username, "password": password},
                          timeout=30, verify=_verify())
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the platform at {url}: {exc}") from None
    if resp.status_code != 200:
        raise _fail(f"signing in as {username}: {resp.status_code} {_detail(resp)}")
    token: str = resp.json()["access_token"]
    return token


def _detail(resp: httpx.Response) -> Any:
    try:
        return resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text


def _reachable(mqtt: str, url: str) -> str:
    """The broker address as a gateway dials it: a wildcard bind address becomes the API's host."""
    host, _, port = mqtt.rpartition(":")
    if host in ("0.0.0.0", "::", ""):
        host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
        console.print(f"the gateway will connect to the broker at {host}:{port} (--mqtt to change)")
    return f"{host}:{port}"


__all__ = ["gateways_add"]
