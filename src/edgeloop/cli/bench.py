"""``edgeloop bench ...``: the benchmarks of :mod:`edgeloop.bench` (see docs/benchmarks.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgeloop.cli.output import console, fail, out

__all__ = ["bench_app"]

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (code in edgeloop/bench/; see docs/benchmarks.md).")


@bench_app.command("ingest")
def bench_ingest(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seconds: Annotated[float, typer.Option(help="Measuring time per configuration.")] = 10.0,
    backends: Annotated[str, typer.Option(help="Comma-separated: sqlite,postgres")] = "sqlite,postgres",
) -> None:
    """MQTT -> validated -> stored -> scored throughput and latency, against a bare-subscriber ceiling."""
    from edgeloop.bench.ingest import main as bench_main

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
    from edgeloop.bench.pki import Settings
    from edgeloop.bench.pki import main as bench_main

    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    if not chosen or set(chosen) - {"sqlite", "postgres"}:
        raise fail(f"--backends {backends!r}: use sqlite and/or postgres")
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
    from edgeloop.bench.detect import Settings
    from edgeloop.bench.detect import main as bench_main

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

    from edgeloop.bench.alerts import Settings
    from edgeloop.bench.alerts import main as bench_main

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
        raise fail(str(exc)) from None
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
    from edgeloop.bench.embedded_kill import Settings
    from edgeloop.bench.embedded_kill import main as bench_main

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
    from edgeloop.bench.edge import Settings
    from edgeloop.bench.edge import main as bench_main

    settings = Settings(devices=devices, hz=hz, rows=tuple(r.strip() for r in rows.split(",") if r.strip()))
    settings = settings.chosen(quick=quick, backlog_minutes=backlog_minutes, outage_s=outage_s, kills=kills)
    try:
        bench_main(as_json=as_json, settings=settings, console=console, out=out)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None


