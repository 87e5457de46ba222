"""``edgeloop bench ingest``: MQTT -> validated -> stored -> scored, against a bare-subscriber ceiling.

Every configuration (ceiling or platform; SQLite or PostgreSQL; 1 or 50
samples per message) runs in a fresh process, so each gets its own peak RSS
and nothing leaks from one into the next. In that process:

1. a real Mosquitto starts on a free port with EdgeLoop's generated production
   config (``edgeloop.broker.mosquitto``);
2. for the platform: ``Platform(PlatformConfig(embedded_broker=False, ...))``
   with a temporary SQLite file or a throw-away PostgreSQL database, i.e. the
   production path (persistent session, QoS 1, ack after commit), and a
   20-device fleet registered through ``platform.registry``; for the ceiling:
   a bare paho-mqtt subscriber (QoS 1) that only JSON-decodes each payload;
3. publisher processes (``edgeloop.bench.publisher``) push canonical telemetry at QoS 1.

Platform phases: *prime* (every device's detector past its warm-up, so the
measured state is steady scoring), *max* (publishers as fast as flow control
allows; warm-up, then ``seconds`` of measurement), *half* (publishers paced at
half the measured maximum; latency), then a zero-loss check against the store.
Throughput counts what ``on_scored`` saw inside the window; latency is the
wall time at ``on_scored`` minus the publisher's ``time.time()`` just before
PUBLISH, per (device, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import platform as pyplatform
import queue
import secrets
import signal
import sqlite3
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from edgeloop.bench.harness import (
    CpuMeter,
    PublisherPool,
    cpu_model,
    mosquitto,
    mosquitto_version,
    peak_rss_mb,
    publish_report,
)
from edgeloop.bench.publisher import PublisherSpec, RunCommand, RunReport

DEVICES = 20
PUBLISHERS = 2  # processes (one MQTT connection each, DEVICES / PUBLISHERS devices per connection)
WINDOW = 100  # QoS 1 in-flight PUBLISHes per publisher connection
SAMPLES_PER_MESSAGE = (1, 50)
PRIME_SAMPLES = 1300  # per device: past the detector's 1200-sample warm-up
BACKLOG_SAMPLES = 100_000  # end-to-end cap on published-but-not-finished, all publishers together
BACKLOG_MESSAGES = 10_000
TENANT = "bench"
FLEET_SEED = 11
BASE_AGE_MS = 20 * 86_400_000  # first sample 20 days ago: 1 Hz "backfill" stays inside the 30-day window
DRAIN_TIMEOUT_S = 180.0
PG_ADMIN_DSN = os.environ.get("EDGELOOP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

TARGET_SAMPLES_50 = 50_000
TARGET_RATIO_1 = 0.60
TARGET_P99_MS = 100.0
BUSY_WARN_PCT = 15.0  # CPU (% of one core) used by other processes before a run that makes its figures suspect

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Case:
    kind: str  # "ceiling", "sqlite" or "postgres"
    spm: int  # samples per message
    seconds: float
    warmup: float

    @property
    def label(self) -> str:
        what = "bare subscriber (ceiling)" if self.kind == "ceiling" else self.kind
        return f"{what}, {self.spm} sample{'s' if self.spm > 1 else ''}/msg"


class Counts(Protocol):
    messages: int
    samples: int


# -- what the consumers under test record ------------------------------------------------------
class ScoredRecorder:
    """The platform's ``on_scored`` hook: counts, (time, device, seq) per chunk, and per-publisher progress."""

    def __init__(self, pub_of: dict[str, int], finished: Any) -> None:
        self.pub_of = pub_of
        self.finished = finished
        self.per_pub = [0] * len(finished)
        self.messages = 0
        self.samples = 0
        self.events: list[tuple[float, str, int]] = []

    def __call__(self, chunks: Sequence[Any]) -> None:
        t = time.time()
        add = self.events.append
        per_pub, pub_of = self.per_pub, self.pub_of
        samples = 0
        for c in chunks:
            add((t, c.device, c.seq))
            samples += len(c.ts)
            per_pub[pub_of[c.device]] += 1
        self.messages += len(chunks)
        self.samples += samples
        for i, v in enumerate(per_pub):
            self.finished[i] = v


class BareSubscriber:
    """The ceiling: paho-mqtt in its own network thread, QoS 1, JSON-decodes each payload and nothing else."""

    def __init__(self, port: int, pub_of: dict[str, int], finished: Any) -> None:
        self.port = port
        self.pub_of = pub_of
        self.finished = finished
        self.per_pub = [0] * len(finished)
        self.messages = 0
        self.samples = 0
        self._subscribed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._decode = msgspec.json.Decoder().decode
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgeloop-bench-bare", clean_session=True,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        from edgeloop.messages import TopicKind, subscription

        client.subscribe(subscription(TopicKind.TELEMETRY), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._subscribed.set)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = self._decode(msg.payload)
        self.messages += 1
        self.samples += len(doc["samples"])
        k = self.pub_of[doc["device"]]
        self.per_pub[k] += 1
        self.finished[k] = self.per_pub[k]

    async def __aenter__(self) -> BareSubscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=60)
        self.client.loop_start()
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


# -- phases ------------------------------------------------------------------------------------
@dataclass(slots=True)
class Window:
    t0: float  # time.time() at the start of the measuring window
    t1: float
    messages: int
    samples: int
    cpu: dict[str, Any]

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    def rates(self) -> dict[str, float]:
        return {"messages_per_s": round(self.messages / self.seconds, 1),
                "samples_per_s": round(self.samples / self.seconds, 1), "seconds": round(self.seconds, 2)}


async def timed_phase(
    pool: PublisherPool, counts: Counts, cmd: RunCommand, case: Case, meter: CpuMeter, progress: Progress, name: str,
) -> tuple[Window, list[RunReport]]:
    pool.run(cmd)
    await asyncio.sleep(case.warmup)
    m0, s0, t0, c0 = counts.messages, counts.samples, time.time(), meter.sample()
    end = t0 + case.seconds
    while (left := end - time.time()) > 0:
        await asyncio.sleep(min(2.0, left))
        el = time.time() - t0
        progress(f"{name}: {el:4.1f}/{case.seconds:g} s, {(counts.samples - s0) / max(el, 1e-9):,.0f} samples/s")
    m1, s1, t1, c1 = counts.messages, counts.samples, time.time(), meter.sample()
    reports = await pool.stop()
    return Window(t0, t1, m1 - m0, s1 - s0, CpuMeter.usage(c0, c1)), reports


async def drain(counts: Counts, expected_messages: int, limit_s: float = DRAIN_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + limit_s
    while counts.messages < expected_messages:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def latency_ms(events: list[tuple[float, str, int]], reports: list[RunReport], t0: float, t1: float) -> dict[str, Any]:
    """Publish -> stored-and-scored latency of the messages scored inside [t0, t1)."""
    pub: dict[str, tuple[int, np.ndarray]] = {}
    for r in reports:
        for device, first in r.first_seq.items():
            pub[device] = (first, np.frombuffer(r.publish_times[device], dtype=np.float64))
    lat: list[float] = []
    for t, device, seq in events:
        if not t0 <= t < t1:
            continue
        first, times = pub[device]
        i = seq - first
        if 0 <= i < times.size:
            lat.append(t - float(times[i]))
    if not lat:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(lat) * 1000.0
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def _specs(port: int, devices: list[str], spm: int) -> list[PublisherSpec]:
    base = (int(time.time() * 1000) - BASE_AGE_MS) // 1000 * 1000
    cap = min(BACKLOG_MESSAGES, BACKLOG_SAMPLES // spm) // PUBLISHERS
    return [PublisherSpec(index=k, host="127.0.0.1", port=port, tenant=TENANT,
                          devices=tuple(d for i, d in enumerate(devices) if i % PUBLISHERS == k),
                          fleet_devices=len(devices), fleet_seed=FLEET_SEED, samples_per_message=spm,
                          base_ts_ms=base, window=WINDOW, backlog_cap=cap)
            for k in range(PUBLISHERS)]


def _fleet_devices() -> tuple[Any, list[str]]:
    from edgeloop.sim.fleet import Fleet

    fleet = Fleet(devices=DEVICES, faulty=0, seed=FLEET_SEED, start_ms=0, duration_ms=3_600_000)
    return fleet, [d.device_id for d in fleet.devices]


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A throw-away PostgreSQL database, dropped afterwards; yields its URL."""
    import asyncpg

    name = f"edgeloop_bench_{secrets.token_hex(6)}"
    con = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        con = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()


async def run_ceiling(case: Case, ctx: SpawnContext, progress: Progress) -> dict[str, Any]:
    _, devices = _fleet_devices()
    pub_of = {d: i % PUBLISHERS for i, d in enumerate(devices)}
    finished = ctx.Array("q", PUBLISHERS, lock=False)
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            port, broker = await stack.enter_async_context(mosquitto(Path(tmp) / "mosquitto"))
            sub = await stack.enter_async_context(BareSubscriber(port, pub_of, finished))
            pool = PublisherPool(ctx, _specs(port, devices, case.spm), finished)
            stack.push_async_callback(pool.close)
            progress("starting publishers")
            await pool.start()
            meter = CpuMeter(broker_pid=broker.pid, publisher_pids=pool.pids(), postgres=False)
            win, reports = await timed_phase(pool, sub, RunCommand(rate_msgs_s=None), case, meter, progress, "max")
            published = sum(r.messages for r in reports)
            drained = await drain(sub, published)
            return {
                "kind": "ceiling", "samples_per_message": case.spm, **win.rates(), "cpu": win.cpu,
                "published_messages": published, "received_messages": sub.messages, "complete": drained,
                "publisher_cpu_s_per_1k_msgs": round(1000 * sum(r.cpu_s for r in reports) / max(published, 1), 3),
                "peak_rss_mb": round(peak_rss_mb(), 1), "broker_peak_rss_mb": round(peak_rss_mb(broker.pid), 1),
            }


async def run_platform(case: Case, ctx: SpawnContext, progress: Progress) -> dict[str, Any]:
    from edgeloop.app import Platform, PlatformConfig
    from edgeloop.sim.register import register_fleet

    fleet, devices = _fleet_devices()
    pub_of = {d: i % PUBLISHERS for i, d in enumerate(devices)}
    finished = ctx.Array("q", PUBLISHERS, lock=False)
    rec = ScoredRecorder(pub_of, finished)
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            port, broker = await stack.enter_async_context(mosquitto(Path(tmp) / "mosquitto"))
            if case.kind == "postgres":
                url = await stack.enter_async_context(pg_database())
            else:
                url = f"sqlite:///{Path(tmp) / 'edgeloop.db'}"
            config = PlatformConfig(data_dir=Path(tmp) / "data", store_url=url, embedded_broker=False,
                                    mqtt_port=port, http_port=None, ingest_client_id="edgeloop-ingest")
            plat = await stack.enter_async_context(Platform(config, on_scored=rec))
            await register_fleet(plat.registry, fleet, tenant=TENANT)
            pool = PublisherPool(ctx, _specs(port, devices, case.spm), finished)
            stack.push_async_callback(pool.close)
            progress("starting publishers")
            await pool.start()
            meter = CpuMeter(broker_pid=broker.pid, publisher_pids=pool.pids(), postgres=case.kind == "postgres")
            published_msgs = published_samples = 0

            prime = math.ceil(PRIME_SAMPLES / case.spm)
            progress(f"priming detectors ({prime * DEVICES:,} messages)")
            pool.run(RunCommand(rate_msgs_s=None, limit_per_device=prime))
            reports = await pool.collect()
            published_msgs += sum(r.messages for r in reports)
            published_samples += sum(r.samples for r in reports)
            if not await drain(rec, published_msgs):
                raise RuntimeError("the platform did not finish the priming messages")

            rec.events.clear()
            win_max, reports = await timed_phase(pool, rec, RunCommand(rate_msgs_s=None), case, meter, progress,
                                                 "max rate")
            published_msgs += sum(r.messages for r in reports)
            published_samples += sum(r.samples for r in reports)
            lat_max = latency_ms(rec.events, reports, win_max.t0, win_max.t1)
            progress("draining")
            await drain(rec, published_msgs)

            rec.events.clear()
            half_samples = win_max.samples / win_max.seconds / 2
            per_pub = half_samples / case.spm / PUBLISHERS
            win_half, reports = await timed_phase(pool, rec, RunCommand(rate_msgs_s=per_pub), case, meter, progress,
                                                  "half rate")
            published_msgs += sum(r.messages for r in reports)
            published_samples += sum(r.samples for r in reports)
            lat_half = latency_ms(rec.events, reports, win_half.t0, win_half.t1)
            drained = await drain(rec, published_msgs)
            await plat.idle(30)
            rec.events.clear()

            stored_msgs, stored_samples = await plat.store.telemetry_counts()
            ing, sc = plat.pipeline.stats, plat.scoring.stats
            zero_loss = (drained and stored_msgs == published_msgs and stored_samples == published_samples
                         and rec.messages == published_msgs and ing.dead_letters == 0)
            return {
                "kind": case.kind, "samples_per_message": case.spm,
                "max_rate": {**win_max.rates(), "latency_ms": lat_max, "cpu": win_max.cpu},
                "half_rate": {"target_samples_per_s": round(half_samples, 1), **win_half.rates(),
                              "latency_ms": lat_half, "cpu": win_half.cpu},
                "loss": {"published_messages": published_msgs, "published_samples": published_samples,
                         "stored_messages": stored_msgs, "stored_samples": stored_samples,
                         "scored_messages": rec.messages, "duplicates": ing.duplicates,
                         "dead_letters": ing.dead_letters, "zero_loss": zero_loss},
                "pipeline": {"batches": ing.batches,
                             "mean_batch_messages": round(ing.received / max(ing.batches, 1), 1),
                             "store_retries": ing.store_retries, "late_messages": sc.late_messages,
                             "findings": sc.findings, "alerts_raised": plat.alerts.stats.alerts_opened},
                "peak_rss_mb": round(peak_rss_mb(), 1), "broker_peak_rss_mb": round(peak_rss_mb(broker.pid), 1),
            }


def _case_process(case: Case, out: Any) -> None:
    """Entry point of the fresh process that runs one configuration."""
    def on_term(_sig: int, _frame: Any) -> None:
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, on_term)
    ctx = multiprocessing.get_context("spawn")

    def progress(text: str) -> None:
        out.put(("progress", text))

    if os.environ.get("EDGELOOP_BENCH_PAUSE"):  # time to attach a profiler: py-spy record --pid ...
        progress(f"pid {os.getpid()}; waiting {os.environ['EDGELOOP_BENCH_PAUSE']} s")
        time.sleep(float(os.environ["EDGELOOP_BENCH_PAUSE"]))
    try:
        runner = run_ceiling if case.kind == "ceiling" else run_platform
        out.put(("result", asyncio.run(runner(case, ctx, progress))))
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent, which goes on with the next configuration
        out.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def run_case(case: Case, console: Console, started: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    q: Any = ctx.Queue()
    proc = ctx.Process(target=_case_process, args=(case, q), name=f"bench-{case.kind}-{case.spm}")
    proc.start()
    deadline = time.monotonic() + 20 * case.seconds + 300
    result: dict[str, Any] | None = None
    try:
        while result is None:
            try:
                msg = q.get(timeout=0.5)
            except queue.Empty:
                if not proc.is_alive():
                    result = {"kind": case.kind, "samples_per_message": case.spm,
                              "error": f"benchmark process exited with code {proc.exitcode}"}
                elif time.monotonic() > deadline:
                    result = {"kind": case.kind, "samples_per_message": case.spm, "error": "timed out"}
                continue
            el = time.monotonic() - started
            if msg[0] == "progress":
                console.print(f"[dim]{el:6.1f} s[/dim]  [bold]{case.label}[/bold]: {msg[1]}", highlight=False)
            elif msg[0] == "result":
                result = msg[1]
            else:
                console.print(f"[red]{case.label} failed:[/red] {msg[1]}", highlight=False)
                console.print(msg[2], markup=False, highlight=False)
                result = {"kind": case.kind, "samples_per_message": case.spm, "error": msg[1]}
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
    return result


# -- report ------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    model = cpu_model()
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "cpu_physical": psutil.cpu_count(logical=False), "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": pyplatform.python_version(),
        "platform": pyplatform.platform(), "mosquitto": mosquitto_version(), "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": dist_version("paho-mqtt"), "msgspec": dist_version("msgspec"),
        "edgeloop": dist_version("edgeloop"),
    }
    return info


async def _pg_version() -> str:
    import asyncpg

    con = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        return str(await con.fetchval("SHOW server_version"))
    finally:
        await con.close()


def evaluate(rows: list[dict[str, Any]], ceiling: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, one verdict per (target, backend)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if "error" in row:
            continue
        spm, kind = row["samples_per_message"], row["kind"]
        mx, half, loss = row["max_rate"], row["half_rate"], row["loss"]
        if spm == 50:
            ok = mx["samples_per_s"] >= TARGET_SAMPLES_50 and loss["zero_loss"]
            out.append({"target": f"{kind}: >= {TARGET_SAMPLES_50:,} samples/s at 50 samples/msg, zero loss",
                        "measured": f"{mx['samples_per_s']:,.0f} samples/s, zero loss: {loss['zero_loss']}",
                        "met": ok})
        if spm == 1 and 1 in ceiling and "error" not in ceiling[1]:
            ratio = row.get("ratio_to_ceiling")
            out.append({"target": f"{kind}: >= {TARGET_RATIO_1:.0%} of the bare-subscriber ceiling at 1 sample/msg",
                        "measured": f"{ratio:.1%}" if ratio is not None else "n/a",
                        "met": ratio is not None and ratio >= TARGET_RATIO_1})
        p99 = half["latency_ms"]["p99"]
        out.append({"target": f"{kind}, {spm} samples/msg: p99 < {TARGET_P99_MS:g} ms at half the max rate",
                    "measured": f"p99 {p99} ms at {half['samples_per_s']:,.0f} samples/s",
                    "met": p99 is not None and p99 < TARGET_P99_MS})
    return out


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "–" if x is None else format(x, spec)


def render(report: dict[str, Any], out: Console) -> None:
    table = Table(title=f"edgeloop bench ingest, {report['date']}, {report['machine']['cpu_count']} cores, "
                        f"{report['seconds']:g} s per configuration", title_justify="left",
                  caption="latency: publish -> stored and scored, ms; RSS: peak of the process under test, MiB",
                  caption_justify="left")
    for col, justify in (("run", "left"), ("smp/msg", "right"), ("msgs/s", "right"), ("samples/s", "right"),
                         ("÷ceil", "right"), ("p50/p99 @max", "right"), ("½ rate smp/s", "right"),
                         ("p50/p99 @½", "right"), ("loss", "center"), ("RSS", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for c in report["ceiling"]:
        if "error" in c:
            table.add_row("ceiling", str(c["samples_per_message"]), f"[red]{c['error']}[/red]")
            continue
        table.add_row("ceiling", str(c["samples_per_message"]), _fmt(c["messages_per_s"]),
                      _fmt(c["samples_per_s"]), "1.00", "", "", "", "", f"{c['peak_rss_mb']:.0f}")
    for r in report["results"]:
        if "error" in r:
            table.add_row(r["kind"], str(r["samples_per_message"]), f"[red]{r['error']}[/red]")
            continue
        mx, half = r["max_rate"], r["half_rate"]
        ratio = r.get("ratio_to_ceiling")
        table.add_row(
            r["kind"], str(r["samples_per_message"]), _fmt(mx["messages_per_s"]),
            _fmt(mx["samples_per_s"]), "–" if ratio is None else f"{ratio:.2f}",
            f"{_fmt(mx['latency_ms']['p50'], ',.0f')}/{_fmt(mx['latency_ms']['p99'], ',.0f')}",
            _fmt(half["samples_per_s"]),
            f"{_fmt(half['latency_ms']['p50'], '.0f')}/{_fmt(half['latency_ms']['p99'], '.0f')}",
            "[green]none[/green]" if r["loss"]["zero_loss"] else "[red]LOSS[/red]", f"{r['peak_rss_mb']:.0f}",
        )
    out.print(table)
    busy = [(row.get("kind"), row.get("samples_per_message"), row.get("background_busy_pct", 0.0))
            for row in [*report["ceiling"], *report["results"]]]
    noisy = [f"{k}/{s}: {b:.0f} %" for k, s, b in busy if b > BUSY_WARN_PCT]
    if noisy:
        out.print(f"[yellow]warning:[/yellow] other processes were using CPU before some runs ({', '.join(noisy)} "
                  "of one core); their figures are low.")
    targets = Table(title="targets", title_justify="left")
    targets.add_column("target")
    targets.add_column("measured")
    targets.add_column("met", justify="center")
    for t in report["targets"]:
        targets.add_row(t["target"], t["measured"], "[green]met[/green]" if t["met"] else "[red]missed[/red]")
    out.print(targets)
    if report.get("results_file"):
        out.print(f"[dim]full results: {report['results_file']}[/dim]")


def main(
    *, as_json: bool, seconds: float, backends: Sequence[str], console: Console, out: Console,
) -> dict[str, Any]:
    """Run every configuration, print the table (or one JSON object), save the JSON under bench/results/."""
    backends = [b.strip() for b in backends if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        raise ValueError(f"unknown backend(s): {', '.join(sorted(unknown))}; use sqlite and/or postgres")
    if seconds <= 0:
        raise ValueError("--seconds must be > 0")
    warmup = min(5.0, max(2.0, 0.2 * seconds))
    machine = machine_info()
    if "postgres" in backends:
        try:
            machine["postgres"] = asyncio.run(_pg_version())
        except Exception as exc:  # noqa: BLE001 -- reported, and each PostgreSQL row reports its own error
            console.print(f"[yellow]PostgreSQL at {PG_ADMIN_DSN} unavailable:[/yellow] {exc}")
    cases = [Case("ceiling", spm, seconds, warmup) for spm in SAMPLES_PER_MESSAGE]
    cases += [Case(b, spm, seconds, warmup) for b in backends for spm in SAMPLES_PER_MESSAGE]
    started = time.monotonic()
    console.print(f"[bold]edgeloop bench ingest[/bold]: {len(cases)} configurations, {seconds:g} s each "
                  f"(+{warmup:g} s warm-up), {DEVICES} devices, {PUBLISHERS} publisher processes, QoS 1")
    ceiling: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for case in cases:
        background = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1)
        if background > BUSY_WARN_PCT:
            console.print(f"[yellow]other processes are using {background:.0f} % CPU (of one core); "
                          f"{case.label} will measure less than this machine can do[/yellow]")
        result = run_case(case, console, started)
        result["background_busy_pct"] = round(background, 1)
        if case.kind == "ceiling":
            ceiling[case.spm] = result
            continue
        c = ceiling.get(case.spm)
        if "error" not in result and c is not None and "error" not in c and c["messages_per_s"]:
            result["ratio_to_ceiling"] = round(result["max_rate"]["messages_per_s"] / c["messages_per_s"], 3)
        rows.append(result)
    report: dict[str, Any] = {
        "benchmark": "ingest", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "seconds": seconds,
        "warmup_seconds": warmup, "elapsed_seconds": round(time.monotonic() - started, 1),
        "setup": {"devices": DEVICES, "publishers": PUBLISHERS, "qos": 1, "inflight_window": WINDOW,
                  "channels_per_sample": 8, "prime_samples_per_device": PRIME_SAMPLES,
                  "backlog_cap_messages": {str(s): min(BACKLOG_MESSAGES, BACKLOG_SAMPLES // s)
                                           for s in SAMPLES_PER_MESSAGE}},
        "machine": machine,
        "ceiling": [ceiling[s] for s in SAMPLES_PER_MESSAGE if s in ceiling],
        "results": rows,
    }
    report["targets"] = evaluate(rows, ceiling)
    return publish_report(report, "ingest", as_json=as_json, console=console, out=out, render=render)


if __name__ == "__main__":  # python -m edgeloop.bench.ingest [seconds]
    import sys

    main(as_json="--json" in sys.argv, seconds=float(next((a for a in sys.argv[1:] if a[0].isdigit()), "10")),
         backends=["sqlite", "postgres"], console=Console(stderr=True), out=Console())

