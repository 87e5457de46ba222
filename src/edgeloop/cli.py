"""The ``edgeloop`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeloop import __version__
from edgeloop.errors import EdgeLoopError
from edgeloop.log_limit import configure_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help="EdgeLoop: the open AIoT platform.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (code in bench/).")
app.add_typer(bench_app, name="bench")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts of a running platform.")
app.add_typer(alerts_app, name="alerts")
pki_app = typer.Typer(no_args_is_help=True, help="EdgeLoop's own certificate authority.")
app.add_typer(pki_app, name="pki")
broker_app = typer.Typer(no_args_is_help=True, help="MQTT broker configuration.")
app.add_typer(broker_app, name="broker")
broker_config_app = typer.Typer(no_args_is_help=True, help="Generate a broker's configuration.")
broker_app.add_typer(broker_config_app, name="config")
enroll_app = typer.Typer(no_args_is_help=True, help="Enrollments for zero-touch device provisioning.")
app.add_typer(enroll_app, name="enroll")
devices_app = typer.Typer(no_args_is_help=True, help="Devices of a running platform: revocation.")
app.add_typer(devices_app, name="devices")
console = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=140)  # logs and pipes get whole tables

URL_OPTION = typer.Option("--url", envvar="EDGELOOP_URL", help="Base URL of a running platform's API.")
TRUSTED_PROXY_OPTION = typer.Option("--trusted-proxy", metavar="ADDRESS",
                                    help="A reverse proxy (IP address or network) whose X-Forwarded-For names "
                                    "the client; repeatable. Default: none, the connecting address is the client's.")
REGISTRY_KINDS = ("tenants", "sites", "lines", "assets", "profiles", "devices")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


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
        raise _fail(str(exc)) from None


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
        raise _fail(str(exc)) from None

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
        raise _fail(str(exc)) from None


@app.command("edge-model")
def edge_model(
    csv: Annotated[Path, typer.Option("--csv", help="Healthy operation of one machine: a CSV with a header "
                                      "'ts,CHANNEL,...' (ts in ms), one row per reading.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the ONNX model.")],
    window_s: Annotated[float, typer.Option(help="Feature window (seconds).")] = 10.0,
    every_s: Annotated[float, typer.Option(help="Score every N seconds.")] = 1.0,
) -> None:
    """Fit the agent's local anomaly model (a Gaussian over feature windows) and export it to ONNX."""
    import numpy as np

    from edgeloop.agent.inference import train_edge_model

    try:
        with csv.open() as f:
            header = f.readline().strip().split(",")
        data = np.genfromtxt(csv, delimiter=",", skip_header=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {csv}: {exc}") from None
    if len(header) < 2 or header[0] != "ts" or data.shape[1] != len(header):
        raise _fail(f"{csv}: expected a header 'ts,CHANNEL,...' and that many columns per row")
    order = np.argsort(data[:, 0], kind="stable")
    console.print(f"training on {len(data)} readings of {', '.join(header[1:])} ...")
    try:
        blob = train_edge_model(data[order, 0].astype(np.int64), data[order, 1:], header[1:],
                                window_s=window_s, every_s=every_s)
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.write_bytes(blob)
    console.print(f"wrote {out} ({len(blob) / 1e6:.1f} MB); use it under 'models:' in agent.yaml")


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
        raise _fail("production mode needs mutual TLS to the broker (--mqtt-tls DIR) and HTTPS on the API "
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
        raise _fail(str(exc)) from None


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
    with _progress_reporter() as progress:
        try:
            result = asyncio.run(run_scenario(cfg, progress=progress))
        except EdgeLoopError as exc:
            raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(result))
        return
    _print_scenario(result)


@contextlib.contextmanager
def _progress_reporter() -> Iterator[Callable[[str, float, dict[str, Any]], None]]:
    """A progress bar on a terminal; elsewhere (CI logs, pipes) a plain line per phase and every 2 s."""

    def describe(figures: dict[str, Any]) -> str:
        return " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in figures.items())

    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("starting", total=1.0, info="")
            yield lambda phase, fraction, figures: bar.update(
                task, completed=min(fraction, 1.0), description=phase, info=describe(figures))
        return
    started = time.monotonic()
    last_phase, last_at = "", 0.0

    def line(phase: str, fraction: float, figures: dict[str, Any]) -> None:
        nonlocal last_phase, last_at
        now = time.monotonic()
        if phase != last_phase or now - last_at >= 2.0:
            console.print(f"[{now - started:6.1f} s] {phase:8} {fraction:6.1%} {describe(figures)}", highlight=False)
            last_phase, last_at = phase, now

    yield line


def _print_scenario(r: dict[str, Any]) -> None:
    table = Table(title=f"{r['devices']} devices, {r['faulty']} faulty, seed {r['seed']}, {r['sim_hours']} "
                        f"simulated hours ({r['backend']}, {r['broker']} broker) in {r['wall_seconds']} s")
    for col in ("device", "fault", "onset", "alerted", "delay (min)", "open at end", "false alerts", "published",
                "stored"):
        table.add_column(col)
    for d in r["per_device"]:
        if not d["faulty"] and not d["false_alerts"]:
            continue
        onset = _ts(d["fault_onset_ms"]) if d["fault_onset_ms"] else "-"
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


def _ts(ms: int) -> str:
    """A time for a table: ISO-8601 in UTC, to the second (``2026-01-01T08:30:00Z``)."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(key: str, value: Any) -> str:
    """A table cell of an API object: times (``*_ms``, ``ts``) as :func:`_ts`, the rest as text."""
    if (key == "ts" or key.endswith("_ms")) and isinstance(value, int) and not isinstance(value, bool):
        return _ts(value)
    return "-" if value is None else str(value)


def _show(found: list[Any], *, as_json: bool, title: str, columns: tuple[str, ...],
          row: Callable[[Any], tuple[str, ...]]) -> None:
    """Print what an API list returned: as JSON, or as a table with one ``row(item)`` per item."""
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for item in found:
        table.add_row(*row(item))
    out.print(table)


@bench_app.command("ingest")
def bench_ingest(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seconds: Annotated[float, typer.Option(help="Measuring time per configuration.")] = 10.0,
    backends: Annotated[str, typer.Option(help="Comma-separated: sqlite,postgres")] = "sqlite,postgres",
) -> None:
    """MQTT -> validated -> stored -> scored throughput and latency, against a bare-subscriber ceiling."""
    _bench_path()
    from bench.ingest import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    bench_main(as_json=as_json, seconds=seconds, backends=backends.split(","), console=console, out=out)


@bench_app.command("pki")
def bench_pki(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[int, typer.Option(help="Devices to provision per store.", min=1)] = 10_000,
    connections: Annotated[int, typer.Option(help="Mutual-TLS MQTT sessions per broker.", min=1)] = 2_000,
    concurrency: Annotated[int, typer.Option(help="Requests / sessions in flight.", min=1, max=256)] = 16,
    backends: Annotated[str, typer.Option(help="Comma-separated: sqlite,postgres")] = "sqlite,postgres",
) -> None:
    """Provisioning throughput (CSR -> certificate, devices/s) and mutual-TLS connection rate per broker."""
    _bench_path()
    from bench.pki import Settings
    from bench.pki import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    if not chosen or set(chosen) - {"sqlite", "postgres"}:
        raise _fail(f"--backends {backends!r}: use sqlite and/or postgres")
    bench_main(as_json=as_json, settings=Settings(devices=devices, concurrency=concurrency, connections=connections,
                                                  backends=chosen), console=console, out=out)


@bench_app.command("detect")
def bench_detect(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    rows: Annotated[int, typer.Option(help="Rows scored in the batched path.", min=1000)] = 200_000,
    batch: Annotated[int, typer.Option(help="Rows per call in the batched path.", min=1)] = 1_000,
    detector: Annotated[list[str] | None, typer.Option(help="Registered detector(s) to measure (default: "
                                                       "all).")] = None,
) -> None:
    """Detector speed on one core: the platform's detector (batched rows/s, one-row latency) and each registered one."""
    _bench_path()
    from bench.detect import Settings
    from bench.detect import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    bench_main(as_json=as_json, settings=Settings(rows=rows, batch=batch, detectors=tuple(detector or ())),
               console=console, out=out)


@bench_app.command("alerts")
def bench_alerts(
    json_path: Annotated[str | None, typer.Option("--json", metavar="PATH", help="Write the JSON report here ('-': "
                                                  "print it instead of the tables; default bench/results/).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="240 machines for 2 simulated hours (same storm).")] = False,
    devices: Annotated[int | None, typer.Option(help="Machines (default 400; 200 are behind the gateway that goes "
                                                "down).", min=240)] = None,
    hours: Annotated[float | None, typer.Option(help="Simulated hours (default 3).", min=1.0)] = None,
    seed: Annotated[int, typer.Option(help="Simulator and storm seed.")] = 7,
    backfill: Annotated[bool, typer.Option("--backfill", help="The gateway's journal replays the outage's readings "
                                           "when it returns (an uplink outage), instead of losing them.")] = False,
) -> None:
    """An alert storm through the rule and incident engines: raw signals per page, fault recall, false pages, and
    rule-engine throughput on one core."""
    import dataclasses

    _bench_path()
    from bench.alerts import Settings
    from bench.alerts import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    settings = Settings.quick() if quick else Settings()
    changes: dict[str, Any] = {"seed": seed, "backfill": backfill}
    if devices is not None:
        changes["devices"] = devices
    if hours is not None:
        changes["hours"] = hours
    settings = dataclasses.replace(settings, **changes)
    try:
        settings.check()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    bench_main(settings=settings, json_path=json_path, console=console, out=out)


@bench_app.command("embedded-kill")
def bench_embedded_kill(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    devices: Annotated[int, typer.Option(help="Devices flooding QoS 1 (one MQTT client each).", min=1,
                                         max=200)] = 4,
    seconds: Annotated[float, typer.Option(help="Flooding time before kill -9.", min=0.5)] = 15.0,
    window: Annotated[int, typer.Option(help="Unacknowledged PUBLISHes per device.", min=1, max=10_000)] = 100,
    samples: Annotated[int, typer.Option(help="Samples per message.", min=1, max=1000)] = 10,
) -> None:
    """Flood `edgeloop up` (a real process) at QoS 1, kill -9 it, restart it: acknowledged messages lost?"""
    _bench_path()
    from bench.embedded_kill import Settings
    from bench.embedded_kill import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    bench_main(as_json=as_json, settings=Settings(devices=devices, seconds=seconds, window=window,
                                                  samples_per_message=samples), console=console, out=out)


@bench_app.command("edge")
def bench_edge(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="1-minute backlog, 10 s outage, one kill -9.")] = False,
    rows: Annotated[str, typer.Option(help="Comma-separated: edgeloop,thingsboard")] = "edgeloop,thingsboard",
    devices: Annotated[int, typer.Option(help="Machines (8 channels each).", min=1, max=1000)] = 20,
    hz: Annotated[float, typer.Option(help="Readings per second per machine.")] = 10.0,
    backlog_minutes: Annotated[float | None, typer.Option(help="Outage backlog to replay (default 10).")] = None,
    outage_s: Annotated[float | None, typer.Option(help="Black-holed uplink, seconds (default 30).")] = None,
    kills: Annotated[int | None, typer.Option(help="kill -9 + restart of each gateway (default 3).", min=0)] = None,
) -> None:
    """The edge agent beside the ThingsBoard IoT Gateway: storage throughput, backlog replay with live load,
    loss and duplicates after an outage and kill -9, RSS (ThingsBoard: `make bench-deps`)."""
    _bench_path()
    from bench.edge import Settings
    from bench.edge import main as bench_main  # type: ignore[import-not-found,unused-ignore]

    settings = Settings(devices=devices, hz=hz, rows=tuple(r.strip() for r in rows.split(",") if r.strip()))
    settings = settings.chosen(quick=quick, backlog_minutes=backlog_minutes, outage_s=outage_s, kills=kills)
    try:
        bench_main(as_json=as_json, settings=settings, console=console, out=out)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def _bench_path() -> None:
    bench_dir = Path(__file__).resolve().parents[2] / "bench"
    if not (bench_dir / "pki.py").exists():
        raise _fail(f"benchmark code not found in {bench_dir}: run from a source checkout of EdgeLoop")
    if str(bench_dir.parent) not in sys.path:
        sys.path.insert(0, str(bench_dir.parent))


# -- evaluation on public benchmarks ----------------------------------------------------------------------
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate the detectors: public benchmarks (NAB, SKAB, C-MAPSS) "
                       "and the simulator's ground truth.")
app.add_typer(eval_app, name="eval")
DEFAULT_NAB_DETECTOR = "ensemble"  # the detector `eval nab` runs when neither --detector nor --scores is given


@eval_app.command("nab")
def eval_nab(
    detector: Annotated[str | None, typer.Option("--detector", help="Run this registered detector over every NAB "
                                                 "file in streaming order (default: "
                                                 f"{DEFAULT_NAB_DETECTOR}, with its univariate preset) and "
                                                 "optimise one threshold per profile, as NAB does.")] = None,
    scores: Annotated[Path | None, typer.Option("--scores", help="Instead of running a detector: a detector's "
                                                "scores in NAB's results layout, CATEGORY/[DETECTOR_]NAME.csv with "
                                                "timestamp and anomaly_score.")] = None,
    thresholds: Annotated[Path | None, typer.Option("--thresholds", help="With --scores: NAB's thresholds.json "
                                                    "(per detector and profile; the detector is the scores "
                                                    "directory's name). Without it the thresholds are optimised.")
                          ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="The data directory holding nab/ (default: "
                                              "$EDGELOOP_DATA or ../shared/data beside the project).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes running files in parallel "
                                         "(0: one per CPU).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a detector on NAB with our scorer: the three profiles, normalised 0 (null) to 100.

    With --detector (the default) the detector runs over the corpus (progress on stderr); with --scores,
    precomputed anomaly scores are read instead.
    """
    from edgeloop.detect.nab import PROFILES, score_corpus
    from edgeloop.detect.nab_data import (
        NabDataError,
        default_data_dir,
        load_corpus,
        load_profiles,
        load_scored_corpus,
        load_thresholds,
        nab_dir,
    )
    from edgeloop.detect.nab_run import UNIVARIATE_PARAMS, default_workers, optimise_thresholds, run_corpus

    if scores is not None and detector is not None:
        raise _fail("give --detector or --scores, not both")
    if thresholds is not None and scores is None:
        raise _fail("--thresholds goes with --scores (a detector's thresholds are optimised)")
    data_dir = data if data is not None else default_data_dir()
    if not data_dir.is_dir():
        raise _fail(f"data directory {data_dir} not found: give --data DIR or set EDGELOOP_DATA")
    name = scores.name if scores is not None else (detector or DEFAULT_NAB_DETECTOR)
    started = time.perf_counter()
    try:
        nab = nab_dir(data_dir)
        profiles = load_profiles(nab)
        if scores is not None:
            files = load_scored_corpus(nab, scores)
        else:
            series = load_corpus(nab)
            tty = sys.stderr.isatty()

            def progress(done: int, total: int) -> None:
                if tty:
                    typer.echo(f"\r{name}: {done}/{total} files", err=True, nl=done == total)
                elif done == total or done % max(1, total // 10) == 0:  # a log gets about ten lines
                    typer.echo(f"{name}: {done}/{total} files", err=True)

            files = run_corpus(series, name, UNIVARIATE_PARAMS.get(name), workers=workers or default_workers(),
                               progress=progress)
        chosen = (load_thresholds(thresholds, name) if thresholds is not None
                  else optimise_thresholds(files, profiles))
        results = score_corpus(files, chosen, profiles)
    except (NabDataError, ValueError) as exc:
        raise _fail(str(exc)) from None
    seconds = time.perf_counter() - started
    if as_json:
        report: dict[str, object] = {p: round(results[p].normalized, 4) for p in PROFILES}
        if thresholds is None:  # optimised thresholds are reported (published ones: the three scores, as before)
            report.update(detector=name, files=len(files), windows=sum(len(f.windows) for f in files),
                          thresholds={p: chosen[p] for p in PROFILES}, seconds=round(seconds, 2))
        out.print_json(data=report)
        return
    how = "published" if thresholds is not None else "optimised"
    table = Table(title=f"NAB: {name} on {len(files)} files, {sum(len(f.windows) for f in files)} windows "
                        f"({how} thresholds, {seconds:.1f} s)")
    for column in ("profile", "score", "threshold", "raw", "null", "perfect"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for p in PROFILES:
        r = results[p]
        table.add_row(p, f"{r.normalized:.2f}", f"{chosen[p]:.6g}", f"{r.raw:.3f}", f"{r.null:.1f}",
                      f"{r.perfect:.1f}")
    out.print(table)


@eval_app.command("skab")
def eval_skab(
    data: Annotated[Path | None, typer.Option("--data", help="A folder of SKAB-format runs (searched recursively; "
                                              "other CSVs are skipped and listed), or the data directory holding "
                                              "skab/ (default: $EDGELOOP_DATA or ../shared/data beside the "
                                              "project).")] = None,
    detector: Annotated[str, typer.Option("--detector", help="Registered detector scoring the features.")] = (
        "mahalanobis"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: f1, far and mar (fractions "
                                          "0..1, the anomaly alarm), nab_standard, nab_low_fp, nab_low_fn (the "
                                          "change alarm; 0 = detect nothing, 100 = perfect), nab_anomaly_alarm "
                                          "(the same three for the anomaly alarm's switches), tp/fp/tn/fn, runs, "
                                          "windows, skipped, detector.")] = False,
) -> None:
    """Detect anomalies and changes on SKAB water-pump runs (first 400 rows of each run train, the rest is scored).

    Point F1, false-alarm rate (FAR) and missed-alarm rate (MAR; % in the table, fractions in JSON) of the anomaly
    alarm over all test rows, and SKAB's NAB score on change points (30 s windows centred on each labelled change
    point) of the change alarm's switches -- and, for comparison, of the anomaly alarm's switches.
    """
    from edgeloop.detect.nab_data import default_data_dir
    from edgeloop.detect.registry import available
    from edgeloop.detect.skab import SkabConfig, evaluate
    from edgeloop.detect.skab_data import SkabDataError, load_runs, skab_dir

    if detector not in available():
        raise _fail(f"unknown detector {detector!r}; available: {', '.join(available())}")
    try:
        folder = skab_dir(data if data is not None else default_data_dir())
        runs, skipped = load_runs(folder)
    except SkabDataError as exc:
        raise _fail(str(exc)) from None
    for s in skipped:
        console.print(f"[yellow]skipped[/yellow] {s.name}: {s.reason}", highlight=False)
    started = time.monotonic()
    done = {"n": 0}

    def progress(name: str) -> None:
        done["n"] += 1
        console.print(f"[dim]{done['n']}/{len(runs)} {name}[/dim]", highlight=False)

    try:
        report = evaluate(runs, SkabConfig(detector=detector), progress=None if as_json else progress)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    c = report.counts
    profiles = (("standard", "standard"), ("low_fp", "reward_low_FP_rate"), ("low_fn", "reward_low_FN_rate"))
    nab = {f"nab_{key}": report.nab_score(profile) for key, profile in profiles}
    nab_alarm = {key: report.nab_score(profile, "anomaly") for key, profile in profiles}
    if as_json:
        out.print_json(data={"f1": round(c.f1, 4), "far": round(c.far, 4), "mar": round(c.mar, 4),
                             **{k: round(v, 2) for k, v in nab.items()},
                             "nab_anomaly_alarm": {k: round(v, 2) for k, v in nab_alarm.items()},
                             "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn, "runs": report.runs,
                             "windows": report.windows, "skipped": len(skipped), "detector": detector})
        return
    table = Table(title=f"SKAB: {detector} on {report.runs} runs in {folder} ({time.monotonic() - started:.1f} s)")
    for column in ("metric", "value", "published best"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    table.add_row("F1 (points)", f"{c.f1:.3f}", "0.78 (Conv-AE)")
    table.add_row("FAR", f"{100 * c.far:.1f} %", "13.6 %")
    table.add_row("MAR", f"{100 * c.mar:.1f} %", "28.0 %")
    table.add_row("NAB standard (change alarm)", f"{nab['nab_standard']:.1f}", "32.4 (MSCRED)")
    table.add_row("NAB low FP (change alarm)", f"{nab['nab_low_fp']:.1f}", "")
    table.add_row("NAB low FN (change alarm)", f"{nab['nab_low_fn']:.1f}", "")
    table.add_row("NAB std / low FP / low FN (anomaly alarm's switches)",
                  f"{nab_alarm['standard']:.1f} / {nab_alarm['low_fp']:.1f} / {nab_alarm['low_fn']:.1f}", "")
    out.print(table)
    out.print(f"test points: TP {c.tp}, FP {c.fp}, TN {c.tn}, FN {c.fn}; change-point windows: {report.windows}",
              highlight=False)


@eval_app.command("sim")
def eval_sim(
    devices: Annotated[int, typer.Option(min=1, help="Simulated machines.")] = 60,
    faulty: Annotated[int | None, typer.Option(min=0, help="How many of them get a fault (default: a third; "
                                               "the six fault types in turn).")] = None,
    sim_hours: Annotated[float, typer.Option(min=0.5, help="Simulated hours per machine.")] = 48.0,
    seed: Annotated[int, typer.Option(help="Fleet seed: the same seed gives the same fleet and faults.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run the platform's detector over a simulated fleet and score it against the simulator's ground truth."""
    from edgeloop.detect.sim_eval import evaluate, run_fleet
    from edgeloop.sim import Fleet

    n_faulty = faulty if faulty is not None else devices // 3
    if n_faulty > devices:
        raise _fail(f"--faulty {n_faulty} is more than --devices {devices}")
    fleet = Fleet(devices=devices, faulty=n_faulty, seed=seed, start_ms=1_767_225_600_000,
                  duration_ms=int(sim_hours * 3_600_000))
    started = time.monotonic()
    with _progress_reporter() as progress:
        result = evaluate(run_fleet(fleet, step_ms=600_000, progress=lambda done, total: progress(
            "scoring", done / total, {"sim_hours": round(done / 3_600_000, 1)})))
    wall = round(time.monotonic() - started, 1)
    if as_json:
        out.print_json(data={**result.as_dict(), "seed": seed, "sim_hours": sim_hours, "wall_seconds": wall})
        return
    table = Table(title=f"{devices} machines ({n_faulty} faulty), {sim_hours:g} simulated hours, seed {seed}: "
                        f"{result.machine_days:.0f} machine-days in {wall} s")
    for column in ("fault", "machines", "detected", "recall", "median delay (min)"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for kind, r in sorted(result.per_fault.items()):
        table.add_row(kind, str(r.faulty), str(r.detected), f"{r.recall:.0%}",
                      "-" if r.median_delay_min is None else f"{r.median_delay_min:.1f}")
    table.add_row("all", str(result.faulty), str(result.detected), f"{result.recall:.0%}",
                  "-" if result.median_delay_min is None else f"{result.median_delay_min:.1f}")
    out.print(table)
    out.print(f"false alerts: {result.false_alerts} "
              f"({result.false_alerts_per_100_machine_days:.2f} per 100 machine-days)")
    for line in result.false_alert_detail[:20]:
        out.print(f"  {line}", highlight=False)


RUL_TRAIN = typer.Option("--train", help="Engines run to failure in C-MAPSS format (e.g. train_FD001.txt).")
RUL_TREES = typer.Option("--trees", min=1, help="Boosting rounds of the gradient-boosted trees (default 300).")
RUL_STRIDE = typer.Option("--stride", min=1, help="Train on every n-th cycle of each engine (default 2).")
RUL_CAP = typer.Option("--cap", min=1, help="RUL cap (cycles) of the target.")
RUL_RATE = typer.Option("--learning-rate", min=0.001, max=1.0, help="Boosting learning rate (default 0.05).")


def _rul_params(trees: int | None, stride: int | None, cap: float, rate: float | None) -> Any:
    from dataclasses import replace

    from edgeloop.detect.rul import RulParams

    p = RulParams(cap=cap)
    return replace(p, n_estimators=trees or p.n_estimators, stride=stride or p.stride,
                   learning_rate=rate or p.learning_rate)


@eval_app.command("rul")
def eval_rul(
    train: Annotated[Path, RUL_TRAIN],
    test: Annotated[Path | None, typer.Option("--test", help="Truncated test engines (test_FD001.txt); needs "
                                              "--truth.")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="True RUL at each test engine's last cycle, one "
                                               "per line (RUL_FD001.txt).")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Without --test: cross-validation folds (by "
                                       "engine).")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation engines' cut points.")] = 0,
    trees: Annotated[int | None, RUL_TREES] = None,
    stride: Annotated[int | None, RUL_STRIDE] = None,
    cap: Annotated[float, RUL_CAP] = 125.0,
    rate: Annotated[float | None, RUL_RATE] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The RUL model at each engine's last observed cycle: RMSE, PHM08 score and interval coverage.

    Only --train: cross-validation by engine, each validation engine cut at a random cycle.
    With --test and --truth: train on --train, score the test engines at their last cycle."""
    from edgeloop.detect.cmapss_data import CmapssDataError, load_runs, load_test
    from edgeloop.detect.rul_eval import cross_validate, evaluate_test

    if (test is None) != (truth is None):
        raise _fail("give both --test and --truth, or neither (cross-validation)")
    params = _rul_params(trees, stride, cap, rate)
    started = time.monotonic()

    def progress(message: str) -> None:
        console.print(f"[{time.monotonic() - started:6.1f} s] {message}", highlight=False)

    try:
        engines = load_runs(train)
        if test is not None and truth is not None:
            test_engines, lives = load_test(test, truth)
            result = evaluate_test(engines, test_engines, lives, params, progress=progress)
        else:
            result = cross_validate(engines, folds, params, seed=seed, progress=progress)
    except (CmapssDataError, ValueError) as exc:
        raise _fail(str(exc)) from None
    doc = result.to_json()
    if as_json:
        out.print_json(data=doc)
        return
    what = (f"{folds}-fold cross-validation by engine on {train.name}, cut at random cycles (seed {seed})"
            if test is None else f"trained on {train.name}, tested on {test.name}")
    table = Table(title=f"RUL: {what}; {doc['engines']} engines, cap {cap:g}")
    for column in ("figure", "value"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    table.add_row("RMSE at the last observed cycle", f"{doc['rmse']:.2f}")
    table.add_row("PHM08 score", f"{doc['phm08']:.1f}")
    table.add_row(f"interval coverage (nominal {params.coverage:.0%})", f"{doc['coverage']:.1%}")
    table.add_row("RMSE against the uncapped truth", f"{doc['rmse_uncapped']:.2f}")
    if doc["rows_rmse"] is not None:
        table.add_row("RMSE over every cycle", f"{doc['rows_rmse']:.2f}")
        table.add_row("interval coverage over every cycle", f"{doc['rows_coverage']:.1%}")
    table.add_row("seconds", f"{doc['seconds']:.0f}")
    out.print(table)


@app.command("rul-model")
def rul_model(
    train: Annotated[Path, RUL_TRAIN],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the ONNX model.")],
    trees: Annotated[int | None, RUL_TREES] = None,
    stride: Annotated[int | None, RUL_STRIDE] = None,
    cap: Annotated[float, RUL_CAP] = 125.0,
    rate: Annotated[float | None, RUL_RATE] = None,
) -> None:
    """Train the remaining-useful-life model on engines run to failure; write the ONNX model the platform runs."""
    from edgeloop.detect.cmapss_data import CmapssDataError, load_runs
    from edgeloop.detect.rul import train_rul

    try:
        engines = load_runs(train)
        trained = train_rul(engines, _rul_params(trees, stride, cap, rate), progress=console.print)
    except (CmapssDataError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out_path.write_bytes(trained.onnx)
    console.print(f"wrote {out_path} ({len(trained.onnx) / 1e6:.2f} MB): {len(trained.spec.names)} features of "
                  f"{', '.join(trained.spec.kept)} and age; {trained.interval.coverage:.0%} interval from "
                  "cross-validation residuals")


# -- PKI ----------------------------------------------------------------------------------------
PKI_DIR = typer.Option("--dir", help="The PKI directory (created by `edgeloop pki init`).")


@pki_app.command("init")
def pki_init(directory: Annotated[Path, PKI_DIR]) -> None:
    """Create a root CA and an issuing CA (ECDSA P-256); private keys are written 0600."""
    from edgeloop.identity.pki import CertificateAuthority

    try:
        ca = CertificateAuthority.init(directory)
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.print(f"PKI created in {directory}: root CA and issuing CA; devices and brokers trust "
              f"{ca.dir / 'ca-chain.pem'}")
    out.print("Keep root.key offline once the issuing CA exists: only issuing.key is needed day to day.")


@pki_app.command("issue")
def pki_issue(
    directory: Annotated[Path, PKI_DIR],
    out_dir: Annotated[Path, typer.Option("--out", help="Where NAME.key, NAME.crt and ca.crt are written.")],
    device: Annotated[str | None, typer.Option(help="Issue a device certificate for this device id.")] = None,
    service: Annotated[str | None, typer.Option(help="Issue a service certificate (e.g. edgeloop-ingest).")] = None,
    days: Annotated[int, typer.Option(min=1, max=3650)] = 365,
    hostname: Annotated[list[str] | None, typer.Option(help="DNS name(s) a service answers on (HTTPS).")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="IP address(es) a service answers on (HTTPS).")] = None,
) -> None:
    """Issue a certificate directly (for operators; devices normally provision themselves with a CSR)."""
    from edgeloop.identity.pki import CertificateAuthority, new_private_key, write_identity

    if (device is None) == (service is None):
        raise _fail("give exactly one of --device ID or --service NAME")
    name = device or service or ""
    try:
        ca = CertificateAuthority.open(directory)
        key = new_private_key()
        cert = ca.issue(key.public_key(), name, kind="device" if device else "service", days=days,
                        dns_names=hostname or (), ip_addresses=ip or ())
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    write_identity(out_dir, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
    out.print(f"issued {name} (serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}) "
              f"into {out_dir}: {name}.key (0600), {name}.crt, ca.crt")


@pki_app.command("revoke")
def pki_revoke(directory: Annotated[Path, PKI_DIR], name: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Revoke every certificate of a device or service and rewrite the CRL."""
    from edgeloop.identity.pki import CertificateAuthority

    try:
        serials = CertificateAuthority.open(directory).revoke(name)
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.print(f"revoked {len(serials)} certificate(s) of {name}; CRL {directory / 'crl.pem'} updated. "
              "Mosquitto: reload it (kill -HUP) to refuse new connections.")


@pki_app.command("crl")
def pki_crl(directory: Annotated[Path, PKI_DIR]) -> None:
    """Re-sign the CRL; run at least every 30 days (e.g. daily from cron), or brokers refuse every client."""
    from edgeloop.identity.pki import CRL_VALID_DAYS, CertificateAuthority

    try:
        CertificateAuthority.open(directory).write_crl()
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.print(f"CRL {directory / 'crl.pem'} re-signed; valid for {CRL_VALID_DAYS} days")


@broker_config_app.command("mosquitto")
def broker_config_mosquitto(
    pki: Annotated[Path, typer.Option("--pki", help="The PKI directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where mosquitto.conf and tls/ are written.")],
    port: Annotated[int, typer.Option(help="TLS listener port.")] = 8883,
    bind: Annotated[str, typer.Option(help="Listen address.")] = "0.0.0.0",
    hostname: Annotated[list[str] | None, typer.Option(help="Broker DNS name(s) for its certificate.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Broker IP address(es) for its certificate.")] = None,
    user: Annotated[str | None, typer.Option(help="Account Mosquitto runs as; it must own OUT (default: the "
                                              "current one when run as root).")] = None,
) -> None:
    """Write a complete mutual-TLS Mosquitto configuration: run it with ``mosquitto -c OUT/mosquitto.conf``."""
    from edgeloop.broker.mosquitto import run_as, write_mosquitto_tls_config
    from edgeloop.identity.pki import CertificateAuthority

    try:
        ca = CertificateAuthority.open(pki)
        conf = write_mosquitto_tls_config(ca, out_dir, port=port, bind=bind,
                                          hostnames=hostname or ["localhost"], ip_addresses=ip or ["127.0.0.1"],
                                          user=user or run_as())
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.print(f"wrote {conf}; run: mosquitto -c {conf}")


# -- provisioning -------------------------------------------------------------------------------
@enroll_app.command("create")
def enroll_create(
    group: Annotated[str, typer.Option(help="Enrollment name; devices become GROUP-SERIAL.")],
    profile: Annotated[str, typer.Option(help="Device profile of the batch.")],
    tenant: Annotated[str, typer.Option(help="Tenant the devices belong to.")],
    line: Annotated[str, typer.Option(help="Line the devices' assets are placed on.")],
    asset: Annotated[str | None, typer.Option(help="Put every device under this asset (default: one each).")] = None,
    serials: Annotated[Path | None, typer.Option(help="File with the allowed serial numbers, one per line.")] = None,
    max_devices: Annotated[int | None, typer.Option(help="Without --serials: at most this many devices.")] = None,
    expires: Annotated[str, typer.Option(help="How long the claim is valid: 30m, 24h, 7d.")] = "24h",
    by: Annotated[str, typer.Option(help="Who creates it (audit log).")] = "operator",
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
) -> None:
    """Create an enrollment and print its claim credential (shown once; give it to the devices' installer)."""
    listed = None
    if serials is not None:
        if not serials.exists():
            raise _fail(f"serials file {serials} does not exist")
        listed = [ln.strip() for ln in serials.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    body = {"group": group, "tenant": tenant, "line": line, "profile": profile, "asset": asset,
            "serials": listed, "max_devices": max_devices, "expires_in_s": _duration_s(expires), "by": by}
    doc = _api("POST", url, "/api/v1/enrollments", body)
    out.print(f"enrollment {doc['group']}: {doc['serials'] if doc['serials'] is not None else 'any'} serials, "
              f"expires {_ts(doc['expires_ms'])} UTC")
    out.print("claim (shown once, store it safely):")
    out.print(doc["claim"], highlight=False, soft_wrap=True)


def _duration_s(text: str, option: str = "--expires") -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    try:
        return int(float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise _fail(f"{option} {text!r}: use a number and s, m, h or d (e.g. 24h)") from None


@app.command()
def provision(
    url: Annotated[str, typer.Option(help="The platform's base URL.")],
    claim: Annotated[str, typer.Option(help="The enrollment's claim credential.")],
    serial: Annotated[str, typer.Option(help="This device's serial number.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where DEVICE.key (0600), DEVICE.crt and ca.crt go.")],
) -> None:
    """Device side of zero-touch provisioning: make a key here, send a CSR, store the certificate."""
    from edgeloop.identity.client import provision_device

    try:
        ident = provision_device(url=url, claim=claim, serial=serial, out_dir=out_dir, verify=_verify())
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    out.print(f"provisioned as {ident.cert.stem}: {ident.key} (private key, never sent), {ident.cert}, {ident.ca}")


@app.command()
def renew(
    url: Annotated[str, typer.Option(help="The platform's base URL.")],
    identity_dir: Annotated[Path, typer.Option("--dir", help="The device's identity folder (from `provision`).")],
    device: Annotated[str | None, typer.Option(help="Device id (default: the only certificate in --dir).")] = None,
    if_expires_within: Annotated[str | None, typer.Option(help="Renew only if the certificate expires within "
                                                          "this long (30d, 12h); for a daily timer.")] = None,
) -> None:
    """Device side of renewal: a new key, proven with the current certificate; swapped in without downtime."""
    import datetime as dt

    from cryptography import x509

    from edgeloop.identity.client import renew_device
    from edgeloop.identity.tls import TlsIdentity

    if device is None:
        found = sorted(p.stem for p in identity_dir.glob("*.crt") if p.name != "ca.crt")
        if len(found) != 1:
            raise _fail(f"{identity_dir} holds {len(found)} device certificates; name one with --device")
        device = found[0]
    try:
        ident = TlsIdentity.from_dir(identity_dir, device)
        expires = x509.load_pem_x509_certificate(ident.cert.read_bytes()).not_valid_after_utc
        if if_expires_within is not None:
            left = expires - dt.datetime.now(dt.UTC)
            if left > dt.timedelta(seconds=_duration_s(if_expires_within, "--if-expires-within")):
                out.print(f"{device}: certificate valid until {expires:%Y-%m-%d}; not due for renewal")
                return
        ident = renew_device(url=url, identity=ident, verify=_verify())
    except EdgeLoopError as exc:
        raise _fail(str(exc)) from None
    new_expiry = x509.load_pem_x509_certificate(ident.cert.read_bytes()).not_valid_after_utc
    out.print(f"renewed {device}: new key and certificate in {identity_dir}, valid until {new_expiry:%Y-%m-%d}; "
              "the old certificate stays valid until it expires")


# -- API client commands -------------------------------------------------------------------------
def _api(method: str, url: str, path: str, body: Any = None) -> Any:
    """Call the platform's API with the token or API key in EDGELOOP_TOKEN (see `edgeloop login`)."""
    return _request(method, url, path, json_body=body).json()


def _request(method: str, url: str, path: str, *, json_body: Any = None, content: bytes | None = None,
             content_type: str = "") -> httpx.Response:
    """One API call (a JSON body, or raw ``content``); an HTTP error ends the command with the API's detail."""
    token = os.environ.get("EDGELOOP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=json_body, content=content, timeout=60,
                             headers=headers, verify=_verify())
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the platform at {url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        if resp.status_code == 401:
            detail += " (log in: export EDGELOOP_TOKEN=$(edgeloop login --url URL --username NAME))"
        raise _fail(f"{resp.status_code}: {detail}")
    return resp


def _verify() -> bool | ssl.SSLContext:
    """Which CA to trust for HTTPS: EDGELOOP_CA (our chain, e.g. PKI/ca-chain.pem), else the system's."""
    ca = os.environ.get("EDGELOOP_CA")
    return ssl.create_default_context(cafile=ca) if ca else True


@app.command()
def login(
    username: Annotated[str, typer.Option(help="Your user name.")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
) -> None:
    """Log in (password asked on the terminal) and print a bearer token for EDGELOOP_TOKEN."""
    password = typer.prompt("password", hide_input=True, err=True)
    verify = _verify()
    try:
        resp = httpx.post(url.rstrip("/") + "/api/v1/auth/token", data={"username": username, "password": password},
                          timeout=30, verify=verify)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the platform at {url}: {exc}") from None
    if resp.status_code != 200:
        raise _fail(f"{resp.status_code}: {resp.json().get('detail', resp.text)}")
    out.print(resp.json()["access_token"], highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(REGISTRY_KINDS)}")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tenants, sites, lines, assets, profiles or devices."""
    if kind not in REGISTRY_KINDS:
        raise _fail(f"unknown kind {kind!r}; one of {', '.join(REGISTRY_KINDS)}")
    items = _api("GET", url, f"/api/v1/{kind}")
    if as_json:
        out.print_json(json.dumps(items))
        return
    table = Table(title=kind)
    keys = [k for k in (items[0].keys() if items else []) if not isinstance(items[0][k], list | dict)]
    for k in keys:
        table.add_column(k)
    for item in items:
        table.add_row(*(_cell(k, item[k]) for k in keys))
    out.print(table)


@app.command("create")
def create_cmd(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(REGISTRY_KINDS)}")],
    body: Annotated[str, typer.Argument(help="JSON object, or @file.json")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    replace: Annotated[bool, typer.Option("--replace", help="Replace the existing entry with this id.")] = False,
) -> None:
    """Create a registry entry, e.g. ``edgeloop create sites '{"id":"s2","tenant":"demo"}'``; with ``--replace``,
    replace an existing one of your tenant."""
    if kind not in REGISTRY_KINDS:
        raise _fail(f"unknown kind {kind!r}; one of {', '.join(REGISTRY_KINDS)}")
    text = Path(body[1:]).read_text() if body.startswith("@") else body
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"the body is not JSON: {exc}") from None
    if not replace:
        out.print_json(json.dumps(_api("POST", url, f"/api/v1/{kind}", doc)))
        return
    key = doc.get("name" if kind == "profiles" else "id") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        raise _fail(f"--replace needs the entry's {'name' if kind == 'profiles' else 'id'} in the body")
    out.print_json(json.dumps(_api("PUT", url, f"/api/v1/{kind}/{urllib.parse.quote(key, safe='')}", doc)))


@devices_app.command("revoke")
def devices_revoke(
    device_id: Annotated[str, typer.Argument(help="The device to revoke.")],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
) -> None:
    """Revoke a device's certificates through the API (admin): CRL rewritten, embedded broker drops it at once."""
    doc = _api("POST", url, f"/api/v1/devices/{device_id}/revoke")
    closed = " and its live MQTT session closed" if doc["sessions_closed"] else ""
    out.print(f"revoked {device_id} (certificate serials {', '.join(doc['revoked_serials'])}){closed}. "
              "With Mosquitto, reload it (kill -HUP) to apply the new CRL.")


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alerts, most recent first."""
    alerts = _api("GET", url, "/api/v1/alerts" + (f"?status={status}" if status else ""))
    _show(alerts, as_json=as_json, title="alerts",
          columns=("id", "severity", "status", "asset", "kind", "first seen", "count", "message"),
          row=lambda a: (str(a["id"]), a["severity"], a["status"], a["asset"], a["kind"], _ts(a["first_seen"]),
                         str(a["count"]), a["message"]))


By = Annotated[str | None, typer.Option(help="Who, on a platform without authentication (with it, the platform "
                                           "records the user of EDGELOOP_TOKEN).")]


@alerts_app.command("ack")
def alerts_ack(alert_id: int, by: By = None, url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000") -> None:
    """Acknowledge an alert (recorded as the signed-in user)."""
    out.print_json(json.dumps(_api("POST", url, f"/api/v1/alerts/{alert_id}/acknowledge", _actor(by))))


@alerts_app.command("resolve")
def alerts_resolve(alert_id: int, by: By = None, url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000") -> None:
    """Resolve an alert (recorded as the signed-in user)."""
    out.print_json(json.dumps(_api("POST", url, f"/api/v1/alerts/{alert_id}/resolve", _actor(by))))


def _actor(by: str | None) -> dict[str, str] | None:
    return {"by": by} if by is not None else None  # an authenticated platform records its own user instead


# -- gateways (edge agents) --------------------------------------------------------------------------------------
gateways_app = typer.Typer(help="Edge gateways of a running platform: state, backlog, remote configuration.")
app.add_typer(gateways_app, name="gateways")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@gateways_app.callback(invoke_without_command=True)
def gateways_list(
    ctx: typer.Context,
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Gateways: state and why, backlog, lag, drops, sources, devices behind each, configuration."""
    if ctx.invoked_subcommand is not None:
        return
    gateways = _api("GET", url, "/api/v1/gateways")
    if as_json:
        out.print_json(json.dumps(gateways))
        return
    table = Table(title="gateways")
    for col in ("gateway", "state", "backlog (msgs / oldest)", "lag", "dropped", "sources", "devices", "config",
                "heartbeat", "why"):
        table.add_column(col)
    colour = {"online": "green", "degraded": "yellow", "offline": "red"}
    for g in gateways:
        backlog = g.get("backlog") or {}
        sources = ", ".join(f"{s['name']}: {s['state']}" for s in g.get("sources", [])) or "-"
        cfg = g["config"]
        latest = cfg.get("latest")
        config = f"v{cfg['running_version']} {cfg['status']}" + (
            f" (pushed v{latest['version']}: {latest['status']})" if latest else "")
        lag = g.get("sync_lag_s")
        table.add_row(g["id"], f"[{colour.get(g['state'], 'white')}]{g['state']}[/]",
                      f"{backlog.get('messages', '-')} / {_age(backlog.get('oldest_unsent_age_s'))}",
                      "-" if lag is None else f"{lag:.1f} s", str(g.get("dropped_samples", "-")), sources,
                      str(len(g["devices"])), config, f"{_age(g['heartbeat_age_s'])} ago", "; ".join(g["reasons"]))
    out.print(table)


@gateways_app.command("push-config")
def gateways_push_config(
    gateway: Annotated[str, typer.Argument(help="The gateway (its device id).")],
    file: Annotated[Path, typer.Argument(help="The agent configuration (agent.yaml).", exists=True, dir_okay=False)],
    url: Annotated[str, URL_OPTION] = "http://127.0.0.1:8000",
) -> None:
    """Validate and push a new agent configuration (operator); the agent applies it or rolls back and says so."""
    doc = _api("PUT", url, f"/api/v1/gateways/{gateway}/config", {"config": file.read_text()})
    out.print(f"pushed version {doc['version']} to {gateway} (status {doc['status']}); follow it with "
              f"`edgeloop gateways`")

# -- connecting a real gateway: `gateways add` (in cli_gateway_add) ------------------------------------------------
from edgeloop.cli_gateway_add import gateways_add  # noqa: E402

gateways_app.command("add")(gateways_add)

# -- alerting: incidents, rules, maintenance, silences (in cli_incidents; it uses the helpers above) ----------
from edgeloop.cli_incidents import incidents_app, maintenance_app, rules_app, silences_app  # noqa: E402

app.add_typer(incidents_app, name="incidents")
app.add_typer(rules_app, name="rules")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(silences_app, name="silences")

# -- people: users over the API, and the local recovery of a lost administrator password (in cli_users) --------
from edgeloop.cli_users import admin_app, users_app  # noqa: E402

app.add_typer(users_app, name="users")
app.add_typer(admin_app, name="admin")


def main() -> None:
    app()
