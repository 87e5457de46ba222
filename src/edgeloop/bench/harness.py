"""Pieces the ingest benchmark is built from: a Mosquitto process, a pool of publisher processes, CPU accounting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from edgeloop.bench.publisher import PublisherSpec, RunCommand, RunReport, publisher_main
from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import mosquitto_binary, run_mosquitto_async
from edgeloop.errors import BrokerError

CHECKOUT = Path(__file__).resolve().parents[3]
"""The source checkout this package is installed from (editable): its ``bench/`` holds the results and the
ThingsBoard gateway's launcher and pins (``make bench-deps``)."""
RESULTS_DIR = CHECKOUT / "bench" / "results"
"""Where every benchmark writes its JSON report (gitignored)."""


def results_file(name: str) -> Path:
    """A new ``RESULTS_DIR/NAME-<UTC time>.json`` path (the directory is created)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), or "unknown"."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def pin_one_core() -> int | None:
    """Pin this process to one CPU (single-core figures); the CPU, or None where that is not possible."""
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def mosquitto_version() -> str:
    try:
        out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, BrokerError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].strip() if first else "unknown"


@contextlib.asynccontextmanager
async def mosquitto(workdir: Path) -> AsyncIterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real Mosquitto with EdgeLoop's generated production config, on a free port; yields (port, process)."""
    port = free_port()
    async with run_mosquitto_async(workdir, port=port) as proc:
        yield port, proc


def publish_report(report: dict[str, Any], name: str, *, as_json: bool, console: Console, out: Console,
                   render: Callable[[dict[str, Any], Console], None]) -> dict[str, Any]:
    """Write ``report`` to bench/results/NAME-<UTC time>.json, then print it as JSON or as ``render`` draws it."""
    path = results_file(name)
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["results_file"] = str(path)
    console.print(f"done in {report['elapsed_seconds']:.0f} s; results written to {path}")
    if as_json:
        out.print(json.dumps(report, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        render(report, out)
    return report


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    path = f"/proc/{pid or os.getpid()}/status"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class PublisherPool:
    """Publisher processes (spawned, so they share nothing with us), driven phase by phase."""

    def __init__(self, ctx: SpawnContext, specs: list[PublisherSpec], finished: Any) -> None:
        self.ctx = ctx
        self.specs = specs
        self.finished = finished
        self.procs: list[SpawnProcess] = []
        self.conns: list[Connection] = []

    async def start(self) -> None:
        for spec in self.specs:
            mine, theirs = self.ctx.Pipe()
            proc = self.ctx.Process(target=publisher_main, args=(spec, theirs, self.finished),
                                    name=f"bench-publisher-{spec.index}", daemon=True)
            proc.start()
            theirs.close()
            self.procs.append(proc)
            self.conns.append(mine)
        for conn, proc in zip(self.conns, self.procs, strict=True):
            ready = await asyncio.to_thread(self._recv, conn, proc, 60.0)
            if not (isinstance(ready, tuple) and ready[:1] == ("ready",)):
                raise RuntimeError(f"publisher {proc.name} did not start: {ready!r}")

    @staticmethod
    def _recv(conn: Connection, proc: SpawnProcess, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not conn.poll(0.2):
            if not proc.is_alive():
                raise RuntimeError(f"publisher {proc.name} died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"publisher {proc.name} did not answer within {timeout:.0f} s")
        return conn.recv()

    def run(self, cmd: RunCommand) -> None:
        for conn in self.conns:
            conn.send(cmd)

    async def collect(self, limit_s: float = 600.0) -> list[RunReport]:
        reports = await asyncio.gather(*(asyncio.to_thread(self._recv, c, p, limit_s)
                                         for c, p in zip(self.conns, self.procs, strict=True)))
        for r in reports:
            if not isinstance(r, RunReport):
                raise RuntimeError(f"unexpected answer from a publisher: {r!r}")
        return list(reports)

    async def stop(self) -> list[RunReport]:
        for conn in self.conns:
            conn.send("stop")
        return await self.collect(limit_s=120.0)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send("quit")
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
        for conn in self.conns:
            conn.close()


@dataclass(slots=True)
class CpuSample:
    at: float
    own: float
    threads: dict[str, float]
    broker: float
    publishers: float
    postgres: float
    system_busy: float
    system_total: float


class CpuMeter:
    """CPU seconds used by the platform process (per thread), the broker, the publishers and PostgreSQL."""

    def __init__(self, *, broker_pid: int, publisher_pids: list[int], postgres: bool) -> None:
        self.me = psutil.Process()
        self.broker = psutil.Process(broker_pid)
        self.publishers = [psutil.Process(p) for p in publisher_pids]
        self.postgres = postgres

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _pg(self) -> float:
        if not self.postgres:
            return 0.0
        procs = []
        for p in psutil.process_iter(["name"]):
            if p.info["name"] in {"postgres", "postmaster"}:
                procs.append(p)
        return self._cpu(procs)

    def sample(self) -> CpuSample:
        names = {t.native_id: t.name for t in threading.enumerate()}
        threads: dict[str, float] = {}
        for t in self.me.threads():
            name = names.get(t.id, "other")
            threads[name] = threads.get(name, 0.0) + t.user_time + t.system_time
        sys_t = psutil.cpu_times()
        idle = sys_t.idle + getattr(sys_t, "iowait", 0.0)
        total = sum(sys_t)
        own = self.me.cpu_times()
        return CpuSample(at=time.monotonic(), own=own.user + own.system, threads=threads,
                         broker=self._cpu([self.broker]), publishers=self._cpu(self.publishers), postgres=self._pg(),
                         system_busy=total - idle, system_total=total)

    @staticmethod
    def usage(a: CpuSample, b: CpuSample) -> dict[str, Any]:
        """Percent of one core used by each part between two samples (200 % = both cores of a 2-core box)."""
        dt = max(b.at - a.at, 1e-9)

        def pct(x: float) -> float:
            return round(100.0 * x / dt, 1)

        threads = {k: pct(v - a.threads.get(k, 0.0)) for k, v in b.threads.items()}
        busy = b.system_busy - a.system_busy
        machine = round(100.0 * busy / max(b.system_total - a.system_total, 1e-9) * (os.cpu_count() or 1), 1)
        parts = {
            "platform_process": pct(b.own - a.own),
            "broker": pct(b.broker - a.broker),
            "publishers": pct(b.publishers - a.publishers),
            "postgres": pct(b.postgres - a.postgres),
        }
        return {
            **parts,
            "platform_threads": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.5},
            "machine_busy": machine,
            "other_processes": round(max(0.0, machine - sum(parts.values())), 1),
        }


class FaultProxy:
    """A TCP proxy on a free port in front of ``upstream_port``: passes traffic, black-holes it (connections stay
    open, nothing flows: ``flowing.clear()``), or resets every connection (``reset()``).

    The same behaviour as the one in ``tests/test_agent_faults.py``, for the edge benchmark.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def reset(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                await self.flowing.wait()  # black-holed: bytes neither arrive nor fail
                dst.write(data)
                await dst.drain()
        dst.transport.abort()
