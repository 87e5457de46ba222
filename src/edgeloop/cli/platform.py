"""Running EdgeLoop: ``up`` (the embedded platform), ``serve`` (the production process), ``agent``
(an edge gateway) and ``scenario`` (a simulated fleet at accelerated time, compared with ground truth)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeloop.cli.output import console, fail, out, print_json, progress_reporter, ts
from edgeloop.errors import EdgeLoopError
from edgeloop.log_limit import configure_logging

__all__ = ["TRUSTED_PROXY_OPTION", "app"]

app = typer.Typer()

TRUSTED_PROXY_OPTION = typer.Option("--trusted-proxy", metavar="ADDRESS",
                                    help="A reverse proxy (IP address or network) whose X-Forwarded-For names "
                                    "the client; repeatable. Default: none, the connecting address is the client's.")


@app.command()
def up(
    devices: Annotated[int, typer.Option(help="Simulated machines (0 for none).", min=0, max=2000)] = 20,
    faulty: Annotated[int, typer.Option(help="How many of them develop a fault.", min=0)] = 3,
    seed: Annotated[int, typer.Option(help="Simulator seed: the same seed gives the same fleet.")] = 1,
    data_dir: Annotated[Path, typer.Option(help="Where data, alerts and settings are kept.")] = Path("data"),
    port: Annotated[int, typer.Option(help="HTTP port of the API and dashboard.")] = 8000,
    host: Annotated[str, typer.Option(help="Address the API and broker listen on.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="Port of the embedded MQTT broker.")] = 11883,
    store: Annotated[str | None, typer.Option(help="Store URL (default: SQLite in the data dir).")] = None,
    auth: Annotated[bool, typer.Option("--auth/--no-auth", help="Require login on the API and dashboard; the "
                                       "first start creates 'admin' and shows its password once (or takes "
                                       "EDGELOOP_ADMIN_PASSWORD).")] = True,
    mqtt_tls: Annotated[bool, typer.Option("--mqtt-tls/--no-mqtt-tls", help="The embedded broker accepts only "
                                           "mutual TLS with certificates from the platform's PKI (in "
                                           "DATA_DIR/pki); --no-mqtt-tls: plain MQTT, for development.")] = True,
    trusted_proxy: Annotated[list[str] | None, TRUSTED_PROXY_OPTION] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the embedded platform: broker, ingest, storage, scoring, API, dashboard and a simulated fleet."""
    from edgeloop.app import PlatformConfig
    from edgeloop.embedded import SimSettings, run_embedded

    configure_logging(verbose)
    cfg = PlatformConfig(data_dir=data_dir, store_url=store, mqtt_host=host, mqtt_port=mqtt_port,
                         http_host=host, http_port=port, pki_dir=data_dir / "pki", create_pki=True, auth=auth,
                         admin_password=os.environ.get("EDGELOOP_ADMIN_PASSWORD") or None, embedded_tls=mqtt_tls,
                         trusted_proxies=tuple(trusted_proxy or ()))
    sim = SimSettings(devices=devices, faulty=min(faulty, devices), seed=seed)
    try:
        asyncio.run(run_embedded(cfg, sim, console=console))
    except KeyboardInterrupt:
        console.print("\nstopped; data is kept in", str(data_dir.resolve()))
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None


@app.command()
def agent(
    config: Annotated[Path, typer.Option("--config", help="The agent's configuration (agent.yaml).")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the edge agent: read machines, journal every sample durably, forward it to the platform."""
    from edgeloop.agent.remote import load_effective_config
    from edgeloop.agent.runner import Agent

    configure_logging(verbose)
    try:
        cfg = load_effective_config(config)
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None

    async def main() -> None:
        from edgeloop.agent.self_provision import missing, provision_missing

        if cfg.provision is not None and missing(cfg):
            console.print(f"provisioning {len(missing(cfg))} device(s) at {cfg.provision.url} "
                          f"(keys made here; certificates to {cfg.uplink.tls}) ...")
            done = await provision_missing(cfg)
            console.print(f"provisioned {', '.join(done)}")
        runner = Agent(cfg, base=config.parent)
        if cfg.version > 1:
            console.print(f"running configuration version {cfg.version}")
        console.print(f"[bold green]EdgeLoop agent[/bold green] gateway {cfg.agent.gateway}  "
                      f"{len(cfg.sources)} source(s), {len(cfg.rules)} fail-safe rule(s), {len(cfg.models)} "
                      f"model(s), bandwidth {cfg.bandwidth.mode} -> "
                      f"mqtt {cfg.uplink.mqtt}{' (mutual TLS)' if cfg.uplink.tls else ''}  journal "
                      f"{cfg.agent.data_dir}/journal.db (fsync={cfg.agent.fsync}, budget {cfg.agent.budget_mb:g} MB)")
        status = asyncio.create_task(_agent_status(runner))
        try:
            await runner.run()
        finally:
            status.cancel()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print("\nagent stopped; unsent data stays in the journal")
    except EdgeLoopError as exc:  # e.g. a device without its certificate in uplink.tls
        raise fail(str(exc)) from None


async def _agent_status(runner: Any) -> None:
    while True:
        await asyncio.sleep(10)
        h = await runner.health()
        up = sum(h["uplink"]["connected"].values())
        failing = [n for n, s in h["sources"].items() if s["state"] == "failing"]
        console.print(f"{h['accepted_samples']} samples accepted · journal {h['journal']['messages']} messages "
                      f"(oldest {h['journal']['oldest_unsent_age_s'] or 0} s) · {up}/{len(h['uplink']['connected'])} "
                      f"devices connected · acked {h['uplink']['acked']} · dropped {h['journal']['dropped_samples']}"
                      + (f" · failing: {', '.join(failing)}" if failing else ""))


@app.command()
def serve(
    store: Annotated[str, typer.Option(help="Store URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB.")],
    mqtt: Annotated[str, typer.Option(help="HOST:PORT of the MQTT broker (e.g. Mosquitto).")] = "127.0.0.1:1883",
    port: Annotated[int, typer.Option(help="HTTP port of the API and dashboard.")] = 8000,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Working directory for local state.")] = Path("data"),
    client_id: Annotated[str, typer.Option(help="MQTT client id of the persistent ingest session.")] = (
        "edgeloop-ingest"),
    pki: Annotated[Path | None, typer.Option(help="PKI directory (`edgeloop pki init`): enables provisioning.")] = (
        None),
    mqtt_tls: Annotated[Path | None, typer.Option(help="Directory with edgeloop-ingest.crt/.key and ca.crt: "
                                                  "connect with mutual TLS (`edgeloop pki issue --service "
                                                  "edgeloop-ingest`).")] = None,
    https: Annotated[Path | None, typer.Option(help="Directory with edgeloop-api.crt/.key: serve the API over "
                                               "HTTPS (`edgeloop pki issue --service edgeloop-api --hostname "
                                               "...`).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow plain MQTT and HTTP (development and tests "
                                           "only).")] = False,
    trusted_proxy: Annotated[list[str] | None, TRUSTED_PROXY_OPTION] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the platform against an external broker, no simulator: the production process.

    Production mode: API authentication is always on, and it refuses to start without mutual
    TLS to the broker, HTTPS on the API and an administrator (on first start, from the
    EDGELOOP_ADMIN_PASSWORD environment variable) unless --insecure is given.
    Messages are acknowledged to the broker only after they are stored, on a persistent
    session: a crash or kill -9 loses nothing, the broker redelivers.
    """
    from edgeloop.app import PlatformConfig
    from edgeloop.embedded import run_platform
    from edgeloop.identity.tls import TlsIdentity

    configure_logging(verbose)
    mhost, _, mport = mqtt.rpartition(":")
    if not insecure and (mqtt_tls is None or https is None):
        raise fail("production mode needs mutual TLS to the broker (--mqtt-tls DIR) and HTTPS on the API "
                    "(--https DIR); see docs/security.md. For development only: --insecure")
    try:
        cfg = PlatformConfig(
            data_dir=data_dir, store_url=store, mqtt_host=mhost or "127.0.0.1", mqtt_port=int(mport),
            embedded_broker=False, http_host=host, http_port=port, ingest_client_id=client_id, pki_dir=pki,
            mqtt_tls=TlsIdentity.from_dir(mqtt_tls, "edgeloop-ingest") if mqtt_tls else None,
            https=TlsIdentity.from_dir(https, "edgeloop-api") if https else None,
            auth=True, admin_password=os.environ.get("EDGELOOP_ADMIN_PASSWORD") or None, require_admin=True,
            trusted_proxies=tuple(trusted_proxy or ()))
        asyncio.run(run_platform(cfg, console=console))
    except KeyboardInterrupt:
        console.print("\nstopped")
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None


@app.command()
def scenario(
    devices: Annotated[int, typer.Option(min=1, max=2000)] = 20,
    faulty: Annotated[int, typer.Option(min=0)] = 3,
    seed: Annotated[int, typer.Option()] = 7,
    sim_hours: Annotated[float, typer.Option(min=0.5, max=24 * 30, help="Simulated hours of fleet life.")] = 2.0,
    backend: Annotated[str, typer.Option(help="sqlite or postgres")] = "sqlite",
    pg_url: Annotated[str, typer.Option(help="PostgreSQL server (a throwaway database is created on it).")] = (
        "postgresql://postgres@127.0.0.1:5432/postgres"),
    mqtt: Annotated[str | None, typer.Option(help="HOST:PORT of an external broker (default: embedded).")] = None,
    pki: Annotated[Path | None, typer.Option(help="PKI directory: devices and ingest use mutual TLS (the "
                                             "embedded broker then requires it; with --mqtt, point at a TLS "
                                             "listener).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object.")] = False,
) -> None:
    """Run a simulated fleet through the platform at accelerated time and compare with ground truth."""
    from edgeloop.scenario import ScenarioConfig, run_scenario

    host, mport, external = "127.0.0.1", None, False
    if mqtt:
        host, _, p = mqtt.rpartition(":")
        mport, external = int(p), True
    cfg = ScenarioConfig(devices=devices, faulty=faulty, seed=seed, sim_hours=sim_hours, backend=backend,
                         pg_url=pg_url, mqtt_host=host or "127.0.0.1", mqtt_port=mport, external_broker=external,
                         pki_dir=pki)
    with progress_reporter() as progress:
        try:
            result = asyncio.run(run_scenario(cfg, progress=progress))
        except EdgeLoopError as exc:
            raise fail(str(exc)) from None
    if as_json:
        print_json(result)
        return
    _print_scenario(result)


def _print_scenario(r: dict[str, Any]) -> None:
    table = Table(title=f"{r['devices']} devices, {r['faulty']} faulty, seed {r['seed']}, {r['sim_hours']} "
                        f"simulated hours ({r['backend']}, {r['broker']} broker) in {r['wall_seconds']} s")
    for col in ("device", "fault", "onset", "alerted", "delay (min)", "open at end", "false alerts", "published",
                "stored"):
        table.add_column(col)
    for d in r["per_device"]:
        if not d["faulty"] and not d["false_alerts"]:
            continue
        onset = ts(d["fault_onset_ms"]) if d["fault_onset_ms"] else "-"
        held = ", ".join(d["open_alerts_at_end"]) or ("[red]none[/red]" if d["fault_active_at_end"] else "-")
        table.add_row(d["device"], d["fault"] or "healthy", onset, "yes" if d["alerted"] else "[red]no[/red]",
                      str(d["detection_delay_min"] or "-"), held, str(d["false_alerts"]),
                      f"{d['published_samples']:,}", f"{d['stored_samples']:,}")
    out.print(table)
    out.print(f"samples published {r['samples_published']:,}, stored {r['samples_stored']:,}, "
              f"lost {r['samples_lost']}, stored twice {r['stored_twice']}, duplicates dropped {r['duplicates']}, "
              f"dead letters {r['dead_letters']}")
    out.print(f"faulty alerted {r['faulty_alerted']}/{r['faulty']}, missed {r['faulty_missed']}, "
              f"healthy alerted {r['healthy_alerted']}/{r['devices'] - r['faulty']}, "
              f"median detection delay {r['median_detection_delay_min']} min")
    out.print(f"faults still active at the end {r['faulty_active_at_end']}, of them without an open alert "
              f"{r['faulty_without_open_alert_at_end']}")


