"""``edgeloop bench edge``: the edge agent against the ThingsBoard IoT Gateway, one workload, one run.

The workload (both rows): ``devices`` machines, 8 channels each, one reading every ``1/hz`` s, so
``devices * hz`` samples/s of live load. Values come from EdgeLoop's fleet simulator (same seed, healthy
pumps and motors). Per row, in order:

1. **Backlog replay.** A backlog of ``backlog_minutes`` of the live rate, older than any live sample, waits
   in the gateway's durable store when its uplink comes up; it is replayed while live data keeps flowing.
   * EdgeLoop: the backlog is written through the agent's own ``Journal.append``, one transaction per
     ``commit_ms`` of data as the running agent commits it (so the messages are exactly as small as an
     outage's), into the journal the agent then opens. Timing those appends is the *journal throughput*.
   * ThingsBoard: the gateway runs with its uplink black-holed while a publisher pushes the backlog into
     broker 1 (its MQTT connector reads it, its SQLite storage keeps it); the bench watches the storage
     fill (*storage throughput*), then restores the link.
2. **Outage.** ``outage_s`` of black-holed uplink under live load (a TCP proxy between the gateway and
   the broker it forwards to), then the link comes back (stale connections reset, as a router does).
3. **kill -9.** ``kills`` times: the gateway process is killed with SIGKILL mid-stream and restarted 1 s later.
4. **Drain and count.** Live load stops; everything delivered is counted.

Counting: a separate process subscribes (QoS 1) on the broker the gateway forwards to and records every
sample (device, timestamp) and how many complete copies of it arrived. For EdgeLoop it also records each
message's (device, seq): a resend of the same (device, seq) is absorbed by the platform's dedup and reported
as *re-sent*, while the same sample under two different seqs would be stored twice and is a *duplicate*.
ThingsBoard's messages carry no identity, so every extra copy of a sample is a duplicate.

Expected: ThingsBoard, every sample broker 1 acknowledged to the publisher (its connector keeps a persistent
session, so nothing published while it is down is lost upstream). EdgeLoop, every sample its journal
accepted (the journal's per-device counters), and for the backlog and outage windows every reading the
simulator produced (the agent runs throughout them). A polled machine keeps no queue: readings due while an
agent process is dead are never taken, and readings taken in the last ``commit_ms`` before a kill -9 were
never accepted. Both are reported, separately from loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform as pyplatform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from edgeloop.agent.journal import Journal
from edgeloop.bench.harness import CHECKOUT, FaultProxy, cpu_model, mosquitto_version, peak_rss_mb, publish_report
from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_mosquitto_async
from edgeloop.messages import Telemetry
from edgeloop.sim.fleet import CHANNELS, Fleet

TB_VENV = CHECKOUT / ".venv-tb"
TB_RUNNER = CHECKOUT / "bench" / "thingsboard" / "run_gateway.py"
TENANT = "bench"
GATEWAY_ID = "gw-bench"
TB_TOPIC = "bench/{device}/data"  # what the "machines" publish to broker 1 for the ThingsBoard gateway
TB_TELEMETRY = "v1/gateway/telemetry"  # what the ThingsBoard gateway forwards (its gateway API)
TB_RPC_REQUEST = "v1/devices/me/rpc/request/"
TB_RPC_RESPONSE = "v1/devices/me/rpc/response/"
# What a ThingsBoard server with no rate limits configured answers to getSessionLimits.
TB_SESSION_LIMITS = {"rateLimits": {}, "gatewayRateLimits": {}, "maxInflightMessages": 100, "maxPayloadSize": 65536}
CH = len(CHANNELS)
ROWS = ("edgeloop", "thingsboard")


@dataclass(frozen=True)
class Settings:
    devices: int = 20
    hz: float = 10.0
    backlog_minutes: float = 10.0
    outage_s: float = 30.0
    kills: int = 3
    rows: tuple[str, ...] = ROWS
    commit_ms: int = 200  # the agent's default
    backfill_per_s: float = 100_000.0  # agent messages/s of replay: the config's ceiling, i.e. as fast as it can
    seed: int = 7
    settle_timeout_s: float = 120.0

    @property
    def period_ms(self) -> int:
        return round(1000 / self.hz)

    @property
    def live_rate(self) -> float:
        return self.devices * 1000 / self.period_ms

    @property
    def backlog_ms(self) -> int:
        return int(self.backlog_minutes * 60_000) // self.period_ms * self.period_ms


    def chosen(self, *, quick: bool = False, backlog_minutes: float | None = None, outage_s: float | None = None,
               kills: int | None = None) -> Settings:
        """These settings, made quick (1-minute backlog, 10 s outage, one kill) and/or with explicit choices."""
        s = replace(self, backlog_minutes=1.0, outage_s=10.0, kills=1) if quick else self
        return replace(s, backlog_minutes=s.backlog_minutes if backlog_minutes is None else backlog_minutes,
                       outage_s=s.outage_s if outage_s is None else outage_s, kills=s.kills if kills is None else kills)


def check_settings(s: Settings) -> None:
    if not 10 <= s.period_ms <= 60_000 or abs(1000 / s.hz - s.period_ms) > 1e-6:
        raise ValueError(f"--hz {s.hz:g}: the period must be a whole number of ms between 10 and 60000")
    if not 1 <= s.devices <= 1000:
        raise ValueError("--devices must be 1..1000")
    if s.backlog_ms < s.period_ms or s.outage_s < 0 or s.kills < 0:
        raise ValueError("--backlog-minutes must cover one reading; --outage-s and --kills must be >= 0")
    unknown = set(s.rows) - set(ROWS)
    if unknown or not s.rows:
        raise ValueError(f"--rows: use {' and/or '.join(ROWS)}")


def tb_python() -> Path:
    """The ThingsBoard gateway's interpreter; a clear error if it is not installed."""
    py = TB_VENV / "bin" / "python"
    if not py.exists():
        raise FileNotFoundError(
            f"the ThingsBoard IoT Gateway is not installed ({py} is missing): run `make bench-deps` "
            "(scripts/bootstrap.sh bench) once, or run only our row with --rows edgeloop")
    return py


# -- the counting process (and ThingsBoard's session-limits responder) -------------------------------
def _counter_main(port: int, kind: str, backlog_end_ms: int, conn: Connection) -> None:
    """Subscribe where the gateway forwards to; count every sample's complete copies and first arrival."""
    lock = threading.Lock()
    samples: dict[tuple[str, int], list[float]] = {}  # (device, ts) -> [datapoints, first arrival, re-sent]
    seqs: set[tuple[str, int]] = set()
    st: dict[str, float] = {"messages": 0, "complete": 0, "backlog": 0, "resent_messages": 0, "rpc": 0,
                            "last_arrival": 0.0}
    decode = msgspec.json.Decoder(Telemetry).decode

    def add(device: str, ts: int, points: int, now: float) -> None:
        e = samples.get((device, ts))
        if e is None:
            e = samples[(device, ts)] = [0, now, 0]
        before = e[0]
        e[0] += points
        if before < CH <= e[0]:
            st["complete"] += 1
            if ts < backlog_end_ms:
                st["backlog"] += 1

    def on_message(c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        if m.topic.startswith(TB_RPC_REQUEST):
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(m.payload).get("method") == "getSessionLimits":
                    c.publish(TB_RPC_RESPONSE + m.topic.rsplit("/", 1)[1], json.dumps(TB_SESSION_LIMITS), qos=1)
                    st["rpc"] += 1
            return
        with lock:
            st["messages"] += 1
            st["last_arrival"] = now
            if kind == "edgeloop":
                msg = decode(m.payload)
                if (msg.device, msg.seq) in seqs:
                    st["resent_messages"] += 1
                    for s in msg.samples:
                        e = samples.get((msg.device, s.ts))
                        if e is not None:
                            e[2] += 1
                    return
                seqs.add((msg.device, msg.seq))
                for s in msg.samples:
                    add(msg.device, s.ts, len(s.values), now)
            else:
                for device, entries in json.loads(m.payload).items():
                    for entry in entries:
                        add(device, int(entry["ts"]), len(entry.get("values", {})), now)

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{kind}", clean_session=False)
    topics = ([(f"edgeloop/v1/{TENANT}/+/telemetry", 1)] if kind == "edgeloop"
              else [(TB_TELEMETRY, 1), (TB_RPC_REQUEST + "+", 1)])
    client.on_connect = lambda c, *_a: c.subscribe(topics)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(20):
        conn.send(("error", "the counter could not subscribe"))
        return
    conn.send(("ready",))
    try:
        while True:
            cmd = conn.recv()
            if cmd[0] == "progress":
                with lock:
                    conn.send(dict(st))
            elif cmd[0] == "window":  # complete samples with cmd[1] <= ts < cmd[2]
                with lock:
                    conn.send(sum(1 for (_d, ts), e in samples.items() if cmd[1] <= ts < cmd[2] and e[0] >= CH))
            elif cmd[0] == "dump":
                with lock:
                    conn.send((dict(st), [(d, ts, int(e[0]), e[1], int(e[2])) for (d, ts), e in samples.items()]))
            else:
                break
    finally:
        client.loop_stop()
        client.disconnect()


# -- ThingsBoard's "machines": a publisher into broker 1 ---------------------------------------------
def _tb_payload(ts: int, row: Iterable[float]) -> bytes:
    return json.dumps({"ts": ts, **dict(zip(CHANNELS, row, strict=True))}).encode()


def _publisher_main(port: int, devices: int, period_ms: int, seed: int, conn: Connection) -> None:
    """Publishes the workload's samples to broker 1 at QoS 1: live on the wall-clock grid, the backlog at once."""
    clients = []
    for name in ("live", "backlog"):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{name}", clean_session=True)
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        clients.append(c)
    live_client, backlog_client = clients
    sent: list[tuple[str, int, mqtt.MQTTMessageInfo]] = []
    stop = threading.Event()

    def publish(client: mqtt.Client, fleet: Fleet, until_ms: int, window: int = 0) -> int:
        """Publish every sample up to ``until_ms``; with ``window``, at most that many unacknowledged at a time
        (paho's own queue is not relied on for a burst of 100,000 messages)."""
        n = 0
        pending: list[mqtt.MQTTMessageInfo] = []
        for chunk in fleet.advance(until_ms):
            for ts, row in zip(chunk.ts.tolist(), chunk.values.tolist(), strict=True):
                info = client.publish(TB_TOPIC.format(device=chunk.device_id), _tb_payload(ts, row), qos=1)
                sent.append((chunk.device_id, ts, info))
                n += 1
                if window:
                    pending.append(info)
                    if len(pending) >= window:
                        for i in pending[: window // 2]:
                            i.wait_for_publish(30)
                        pending = pending[window // 2:]
        return n

    def live(t0: int) -> None:
        fleet = Fleet(devices=devices, faulty=0, seed=seed, start_ms=t0 - period_ms, duration_ms=86_400_000,
                      period_ms=period_ms)
        while not stop.is_set():
            publish(live_client, fleet, int(time.time() * 1000))
            stop.wait(period_ms / 1000)

    thread: threading.Thread | None = None
    conn.send(("ready",))
    while True:
        cmd = conn.recv()
        if cmd[0] == "live":
            thread = threading.Thread(target=live, args=(cmd[1],), daemon=True)
            thread.start()
            conn.send("ok")
        elif cmd[0] == "backlog":  # samples with cmd[1] <= ts < cmd[2]
            lo, hi = cmd[1], cmd[2]
            fleet = Fleet(devices=devices, faulty=0, seed=seed, start_ms=lo - period_ms, duration_ms=hi - lo,
                          period_ms=period_ms)
            conn.send(publish(backlog_client, fleet, hi, window=500))
        elif cmd[0] == "stop_live":
            stop.set()
            if thread is not None:
                thread.join()
            conn.send("ok")
        elif cmd[0] == "unacked":
            conn.send(sum(1 for *_x, i in sent[-5000:] if not i.is_published()))
        elif cmd[0] == "acked":  # (acknowledged by broker 1, not yet); waits up to cmd[1] s for stragglers
            deadline = time.monotonic() + cmd[1]
            while time.monotonic() < deadline and not all(i.is_published() for *_, i in sent[-1000:]):
                time.sleep(0.1)
            acked = [(d, ts) for d, ts, i in sent if i.is_published()]
            conn.send((acked, len(sent) - len(acked)))
        else:
            break
    for c in clients:
        c.disconnect()
        c.loop_stop()


class Child:
    """A spawned helper process and its pipe."""

    def __init__(self, target: Callable[..., None], *args: Any, name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(target=target, args=(*args, theirs), name=name, daemon=True)
        self.proc.start()
        theirs.close()

    async def call(self, *cmd: Any, limit_s: float = 120.0) -> Any:
        if cmd:
            self.conn.send(cmd)
        return await asyncio.to_thread(self._recv, limit_s)

    def _recv(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                raise RuntimeError(f"{self.proc.name} died (exit code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.proc.name} did not answer within {timeout:.0f} s")
        return self.conn.recv()

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("quit",))
        await asyncio.to_thread(self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.terminate()
            await asyncio.to_thread(self.proc.join, 5)
        self.conn.close()


# -- the gateway under test --------------------------------------------------------------------------
@dataclass
class Gateway:
    """One gateway (agent or ThingsBoard) as a subprocess that can be killed and restarted; CPU and RSS metered."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_mb: float = 0.0
    cpu_s_done: float = 0.0  # CPU seconds of the processes already gone
    _cpu_last: float = 0.0
    starts: int = 0
    meter: list[tuple[float, float, float]] = field(default_factory=list)  # (wall, total CPU s, RSS MiB)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd)
        self._cpu_last = 0.0
        self.starts += 1

    def sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(self.proc.pid)
            t = p.cpu_times()
            self._cpu_last = t.user + t.system
            rss = p.memory_info().rss / 2**20
            self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(self.proc.pid), rss)
            self.meter.append((time.time(), self.cpu_s_done + self._cpu_last, rss))

    async def kill9(self) -> None:
        assert self.proc is not None
        self.sample()
        os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)
        self.cpu_s_done += self._cpu_last
        self.proc = None

    async def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None:
            return
        self.sample()
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self.cpu_s_done += self._cpu_last
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_pct(self, t0: float, t1: float) -> float | None:
        """Average CPU (% of one core) between two wall times, from the meter's samples."""
        inside = [(t, c) for t, c, _ in self.meter if t0 <= t <= t1]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
            return None
        return round(100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1)


async def _meter(gw: Gateway) -> None:
    while True:
        gw.sample()
        await asyncio.sleep(0.5)


def _grid(lo_ms: int, hi_ms: int, period_ms: int) -> int:
    """Readings of one device on the period grid with lo <= ts < hi."""
    first = -(-lo_ms // period_ms) * period_ms
    return 0 if hi_ms <= first else (hi_ms - 1 - first) // period_ms + 1


def _now_ms() -> int:
    return int(time.time() * 1000)


class Row:
    """What both rows share: the timeline, the counter, waiting with progress lines."""

    def __init__(self, kind: str, s: Settings, console: Console, work: Path, started: float) -> None:
        self.kind = kind
        self.s = s
        self.console = console
        self.work = work
        self.started = started
        self.counter: Child | None = None
        self.gw: Gateway | None = None
        self.proxy: FaultProxy | None = None
        self.marks: dict[str, float] = {}  # wall-clock times of the timeline
        self.kill_times: list[float] = []
        self.notes: list[str] = []
        self.backlog_end_ms = 0
        self.live_start_ms = 0

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.0f} s[/dim]  [bold]{self.kind}[/bold]  {text}")

    def mark(self, name: str) -> float:
        self.marks[name] = time.time()
        return self.marks[name]

    async def progress(self) -> dict[str, float]:
        assert self.counter is not None
        result: dict[str, float] = await self.counter.call("progress")
        return result

    async def wait_for(self, what: str, done: Callable[[], Any], timeout_s: float, every_s: float = 5.0,
                       stall_s: float = 30.0) -> bool:
        """Poll the async predicate ``done`` (returns (ok, progress text)) until ok, timeout, or no progress for
        ``stall_s``; print progress."""
        deadline = time.monotonic() + timeout_s
        last_print = changed = time.monotonic()
        previous = ""
        while True:
            ok, text = await done()
            if ok:
                self.say(f"{what}: {text}")
                return True
            if text != previous:
                previous, changed = text, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - changed > stall_s:
                why = (f"within {timeout_s:.0f} s" if time.monotonic() > deadline
                       else f"(no progress for {stall_s:.0f} s)")
                self.say(f"[yellow]{what}: not finished {why}[/yellow] ({text})")
                self.notes.append(f"{what}: not finished {why}: {text}")
                return False
            if time.monotonic() - last_print >= every_s:
                self.say(f"{what}: {text}")
                last_print = time.monotonic()
            await asyncio.sleep(0.5)

    async def caught_up(self, lo_ms: int, hi_ms: int, what: str) -> bool:
        """Wait until every live reading with lo <= ts < hi has arrived (the gateway ran throughout)."""
        assert self.counter is not None
        want = self.s.devices * _grid(lo_ms, hi_ms, self.s.period_ms)

        async def done() -> tuple[bool, str]:
            assert self.counter is not None
            got = await self.counter.call("window", lo_ms, hi_ms)
            return got >= want, f"{got:,} of {want:,} readings of the window delivered"

        return await self.wait_for(what, done, self.s.settle_timeout_s)

    async def outage_and_kills(self) -> None:
        """Phases 2 and 3, the same for both rows."""
        assert self.proxy is not None and self.gw is not None
        s = self.s
        await asyncio.sleep(3)
        if s.outage_s > 0:
            self.say(f"outage: uplink black-holed for {s.outage_s:g} s under live load")
            t0 = self.mark("outage_start")
            self.proxy.flowing.clear()
            await asyncio.sleep(s.outage_s)
            self.proxy.flowing.set()
            self.proxy.reset()  # the stale connections die, as when a router comes back
            t1 = self.mark("outage_end")
            await self.caught_up(int(t0 * 1000) - 2000, int(t1 * 1000), "after the outage")
            await asyncio.sleep(2)
            self.mark("outage_settled")
        self.mark("kills_start")
        for i in range(s.kills):
            await asyncio.sleep(4)
            self.say(f"kill -9 #{i + 1} of {s.kills}, restart 1 s later")
            self.kill_times.append(time.time())
            await self.gw.kill9()
            await asyncio.sleep(1)
            self.gw.start()
        if s.kills:
            await asyncio.sleep(6)
        self.mark("kills_end")

    async def dump(self) -> tuple[dict[str, float], list[tuple[str, int, int, float, int]]]:
        assert self.counter is not None
        result: tuple[dict[str, float], list[tuple[str, int, int, float, int]]] = await self.counter.call("dump")
        return result


# -- EdgeLoop's row ------------------------------------------------------------------------------------
def agent_config(path: Path, *, s: Settings, mqtt_port: int, data_dir: Path) -> Path:
    """The agent's YAML for the workload (simulator source, defaults elsewhere except the replay rate)."""
    path.write_text(f"""\
agent:
  tenant: {TENANT}
  gateway: {GATEWAY_ID}
  data_dir: {data_dir}
  fsync: commit
  commit_ms: {s.commit_ms}
  budget_mb: 4096
uplink:
  mqtt: 127.0.0.1:{mqtt_port}
  backfill_per_s: {s.backfill_per_s:g}
sources:
  - {{name: machines, kind: simulator, devices: {s.devices}, seed: {s.seed}, poll_ms: {s.period_ms}}}
""")
    return path


def prefill_journal(path: Path, s: Settings, end_ms: int) -> dict[str, Any]:
    """The backlog, written through ``Journal.append`` one ``commit_ms`` of data per transaction, as the running
    agent commits; returns the samples written and the journal's throughput (appends only, fsync per commit)."""
    start = end_ms - s.backlog_ms
    fleet = Fleet(devices=s.devices, faulty=0, seed=s.seed, start_ms=start - s.period_ms,
                  duration_ms=s.backlog_ms, period_ms=s.period_ms)
    journal = Journal(path, fsync="commit", budget_bytes=4096 * 2**20)
    spent = 0.0
    samples = commits = 0
    try:
        for t in range(start, end_ms + s.commit_ms, s.commit_ms):
            batch = {c.device_id: c.samples(CHANNELS) for c in fleet.advance(min(t, end_ms - 1))}
            batch = {d: v for d, v in batch.items() if v}
            if not batch:
                continue
            t0 = time.perf_counter()
            journal.append(batch)
            spent += time.perf_counter() - t0
            samples += sum(len(v) for v in batch.values())
            commits += 1
        messages = journal.stats().messages
    finally:
        journal.close()
    return {"samples": samples, "messages": messages, "commits": commits, "seconds": round(spent, 3),
            "samples_per_s": round(samples / spent) if spent else None,
            "samples_per_commit": round(samples / max(commits, 1), 1)}


def journal_totals(path: Path) -> tuple[int, int, int]:
    """(samples accepted over the journal's life, messages still unsent, samples in them)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        accepted = int(db.execute("SELECT COALESCE(SUM(accepted), 0) FROM devices").fetchone()[0])
        unsent, unsent_samples = db.execute("SELECT COUNT(*), COALESCE(SUM(samples), 0) FROM messages").fetchone()
    return accepted, int(unsent), int(unsent_samples)


async def run_edgeloop(s: Settings, console: Console, work: Path, started: float) -> dict[str, Any]:
    row = Row("edgeloop", s, console, work, started)
    data = work / "agent"
    journal = data / "journal.db"
    port = free_port()
    async with run_mosquitto_async(work / "broker", port=port), FaultProxy(port) as proxy:
        row.proxy = proxy
        row.backlog_end_ms = end = _now_ms() // s.period_ms * s.period_ms
        row.counter = Child(_counter_main, port, "edgeloop", end, name="bench-counter")
        await row.counter.call(limit_s=30)
        row.say(f"writing a {s.backlog_minutes:g}-minute backlog ({s.devices} devices x {s.hz:g} Hz) "
                "through Journal.append")
        journal_fill = await asyncio.to_thread(prefill_journal, journal, s, end)
        row.say(f"journal: {journal_fill['samples']:,} samples in {journal_fill['messages']:,} messages, "
                f"{journal_fill['samples_per_s']:,} samples/s ({journal_fill['samples_per_commit']:g} per commit, "
                "fsync per commit)")
        config = agent_config(work / "agent.yaml", s=s, mqtt_port=proxy.port, data_dir=data)
        row.gw = gw = Gateway("edgeloop agent", [sys.executable, "-m", "edgeloop", "agent", "--config", str(config)],
                              work / "agent.log", work)
        meter = asyncio.create_task(_meter(gw))
        try:
            row.mark("link_up")
            gw.start()
            row.live_start_ms = _now_ms()
            row.say("agent started; replaying the backlog while live data continues")
            want = journal_fill["samples"]

            async def replayed() -> tuple[bool, str]:
                p = await row.progress()
                return p["backlog"] >= want, f"{int(p['backlog']):,} of {want:,} backlog samples delivered"

            await row.wait_for("replay", replayed, max(s.settle_timeout_s, want / 500), every_s=3)
            row.mark("replay_done")
            await row.outage_and_kills()
            row.say("stopping the agent (a clean stop delivers what is pending)")
            row.mark("stop")
            await gw.stop()
            accepted, unsent, unsent_samples = journal_totals(journal)
            await asyncio.sleep(1)
            stats, samples = await row.dump()
        finally:
            meter.cancel()
            if gw.alive():
                await gw.stop()
            await row.counter.close()
    return analyse_edgeloop(row, s, journal_fill, (accepted, unsent, unsent_samples), stats, samples)


# -- ThingsBoard's row ---------------------------------------------------------------------------------
def tb_config(folder: Path, *, s: Settings, source_port: int, uplink_port: int) -> Path:
    """tb_gateway.json (SQLite storage, nothing remote), logs.json and the MQTT connector's mqtt.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "storage").mkdir(exist_ok=True)
    (folder / "logs.json").write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(folder / "logs" / "gateway.log"),
                              "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["file"]},
    }, indent=2))
    (folder / "tb_gateway.json").write_text(json.dumps({
        "thingsboard": {
            "host": "127.0.0.1", "port": uplink_port, "remoteShell": False, "remoteConfiguration": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600, "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False}, "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500, "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench-gateway-token"}, "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {"type": "sqlite", "data_file_path": str(folder / "storage") + "/", "messages_ttl_check_in_hours": 1,
                    "messages_ttl_in_days": 7, "max_read_records_count": 1000, "writing_batch_size": 1000,
                    "size_limit": 1024, "max_db_amount": 10},
        "grpc": {"enabled": False},
        "connectors": [{"type": "mqtt", "name": "machines", "configuration": "mqtt.json"}],
    }, indent=2))
    (folder / "mqtt.json").write_text(json.dumps({
        "broker": {"host": "127.0.0.1", "port": source_port, "clientId": "tb-gateway-bench", "version": 4,
                   "cleanSession": False,  # a persistent session: broker 1 keeps what arrives while it is down
                   "maxMessageNumberPerWorker": 10, "maxNumberOfWorkers": 100, "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": TB_TOPIC.format(device="+"), "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic",
                               "deviceNameExpression": "(?<=bench/)(.*?)(?=/data)",
                               "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "default"},
                "sendDataOnlyOnChange": False, "timeout": 60000, "attributes": [],
                "timeseries": [{"type": "double", "key": c, "value": "${" + c + "}"} for c in CHANNELS],
            },
        }],
    }, indent=2))
    return folder


def tb_storage_rows(folder: Path) -> tuple[int, int]:
    """(events waiting in the ThingsBoard gateway's SQLite storage, events ever written to it)."""
    total = written = 0
    for db_file in sorted((folder / "storage").glob("*.db")):
        with contextlib.suppress(sqlite3.Error), \
                contextlib.closing(sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=1)) as db:
            n, top = db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM messages").fetchone()
            total, written = total + int(n), written + int(top)
    return total, written


async def run_thingsboard(s: Settings, console: Console, work: Path, started: float) -> dict[str, Any]:
    py = tb_python()
    row = Row("thingsboard", s, console, work, started)
    source_port, uplink_port = free_port(), free_port()
    async with run_mosquitto_async(work / "broker1", port=source_port), \
            run_mosquitto_async(work / "broker2", port=uplink_port), FaultProxy(uplink_port) as proxy:
        row.proxy = proxy
        row.backlog_end_ms = row.live_start_ms = live0 = (_now_ms() // s.period_ms + 1) * s.period_ms
        row.counter = Child(_counter_main, uplink_port, "thingsboard", live0, name="bench-counter")
        await row.counter.call(limit_s=30)
        publisher = Child(_publisher_main, source_port, s.devices, s.period_ms, s.seed, name="bench-publisher")
        await publisher.call(limit_s=30)
        folder = tb_config(work / "tb", s=s, source_port=source_port, uplink_port=proxy.port)
        row.gw = gw = Gateway("thingsboard-gateway", [str(py), str(TB_RUNNER), str(folder)],
                              work / "tb-gateway.out", folder)
        meter = asyncio.create_task(_meter(gw))
        ingest: dict[str, Any] = {}
        try:
            gw.start()

            async def connected() -> tuple[bool, str]:
                p = await row.progress()
                return p["rpc"] >= 1, "session limits answered" if p["rpc"] else "waiting for its session-limits RPC"

            if not await row.wait_for("gateway up", connected, 60):
                raise RuntimeError(f"the ThingsBoard gateway did not connect; see {folder / 'logs'}")
            await asyncio.sleep(max(0.0, live0 / 1000 - time.time()))
            await publisher.call("live", live0)
            row.say(f"live load on: {s.devices} devices x {s.hz:g} Hz into broker 1")
            await asyncio.sleep(5)
            row.say(f"uplink black-holed; pushing a {s.backlog_minutes:g}-minute backlog into broker 1")
            row.mark("backlog_outage_start")
            proxy.flowing.clear()
            (_, rows0), t0 = tb_storage_rows(folder), time.time()

            def live_rows(t: float) -> float:  # live events stored meanwhile
                return s.live_rate * (t - t0)

            backlog_n = await publisher.call("backlog", live0 - s.backlog_ms, live0, limit_s=600)
            history: list[tuple[float, int]] = [(t0, rows0)]

            async def stored() -> tuple[bool, str]:
                waiting, n = await asyncio.to_thread(tb_storage_rows, folder)
                history.append((time.time(), n))
                recent = [h for h in history if h[0] >= history[-1][0] - 3]
                slope = (recent[-1][1] - recent[0][1]) / max(recent[-1][0] - recent[0][0], 1e-9)
                at_broker = await publisher.call("unacked")
                done = n - rows0 >= backlog_n and at_broker == 0 and len(recent) > 3 and slope < 2 * s.live_rate
                return done, (f"{n - rows0:,} events written to its SQLite storage ({slope:,.0f}/s), {waiting:,} "
                              f"waiting there, {at_broker:,} not yet acknowledged by broker 1")

            await row.wait_for("storage filling", stored, max(s.settle_timeout_s, backlog_n / 500))
            # the rate while the backlog streams in (from its first 1,000 events on; the live events written
            # meanwhile taken out), not counting the publisher's own start
            filled = next(((t, n) for t, n in history if n - rows0 >= backlog_n + live_rows(t)), history[-1])
            begun = next(((t, n) for t, n in history if n - rows0 - live_rows(t) >= 1000), history[0])
            span = max(filled[0] - begun[0], 1e-9)
            ingest = {"samples": backlog_n, "seconds_from_outage_start": round(filled[0] - t0, 2),
                      "samples_per_s": round((filled[1] - begun[1] - s.live_rate * span) / span),
                      "storage_written": history[-1][1] - rows0}
            row.say(f"storage: {backlog_n:,} backlog samples stored, {ingest['samples_per_s']:,} samples/s "
                    "(MQTT in -> converter -> SQLite, uplink down)")
            proxy.flowing.set()
            proxy.reset()
            row.mark("link_up")
            row.say("uplink restored; replaying while live data continues")

            async def replayed() -> tuple[bool, str]:
                p = await row.progress()
                return p["backlog"] >= backlog_n, f"{int(p['backlog']):,} of {backlog_n:,} backlog samples delivered"

            await row.wait_for("replay", replayed, max(s.settle_timeout_s, backlog_n / 200))
            row.mark("replay_done")
            await row.caught_up(live0, int(row.marks["replay_done"] * 1000) - 1000, "live data after the replay")
            await row.outage_and_kills()
            await publisher.call("stop_live")
            row.mark("stop")
            acked, unacked = await publisher.call("acked", 10.0)
            want = len(acked)

            async def drained() -> tuple[bool, str]:
                p = await row.progress()
                return p["complete"] >= want, f"{int(p['complete']):,} of {want:,} acknowledged samples delivered"

            await row.wait_for("drain", drained, s.settle_timeout_s)
            await asyncio.sleep(2)
            stats, samples = await row.dump()
            await gw.stop()
            still_stored = tb_storage_rows(folder)[0]  # one event per sample here: not lost, it goes next time
        finally:
            meter.cancel()
            if gw.alive():
                await gw.stop()
            await publisher.close()
            await row.counter.close()
    log_text = ""
    with contextlib.suppress(OSError):
        log_text = (folder / "logs" / "gateway.log").read_text(errors="replace")
    limits_ok = log_text.count("Service configuration was successfully retrieved")
    if limits_ok < gw.starts:
        row.notes.append(f"session limits applied {limits_ok} times for {gw.starts} starts (see {folder / 'logs'})")
    return analyse_thingsboard(row, s, ingest, (acked, unacked, still_stored), stats, samples)


# -- analysis --------------------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _phases(row: Row) -> dict[str, tuple[int, int]]:
    """Timestamp windows (ms) of the fault phases."""
    m = {k: int(v * 1000) for k, v in row.marks.items()}
    out = {"replay": (0, row.backlog_end_ms)}
    if "outage_start" in m:
        out["outage"] = (m["outage_start"] - 2000, m["outage_settled"])
    if row.kill_times:
        out["kill -9"] = (m["kills_start"], m["stop"])
    return out


def _replay(row: Row, samples: list[tuple[str, int, int, float, int]]) -> dict[str, Any]:
    """Replay rate of the backlog (first to last arrival), time from link-up, live lag meanwhile, CPU."""
    arrivals = sorted(first for _d, ts, dp, first, _r in samples if ts < row.backlog_end_ms and dp >= CH)
    if len(arrivals) < 2:
        return {"samples": len(arrivals), "samples_per_s": None}
    t0, t1 = arrivals[0], arrivals[-1]
    # live readings taken after the replay began (earlier ones waited in the store: they are backlog too)
    lags = [first - ts / 1000 for _d, ts, dp, first, _r in samples
            if max(row.live_start_ms, t0 * 1000) <= ts <= t1 * 1000 and dp >= CH]
    assert row.gw is not None
    return {
        "samples": len(arrivals), "seconds": round(t1 - t0, 2), "samples_per_s": round(len(arrivals) / (t1 - t0)),
        "from_link_up_s": round(t1 - row.marks["link_up"], 1),
        "live_lag_s": {"p50": _round(_pct(lags, 0.5)), "p99": _round(_pct(lags, 0.99)),
                       "max": _round(max(lags, default=None))},
        "gateway_cpu_pct": row.gw.cpu_pct(t0, t1),
    }


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def _window_counts(samples: list[tuple[str, int, int, float, int]], lo: int, hi: int) -> dict[str, int]:
    inside = [(dp, r) for _d, ts, dp, _f, r in samples if lo <= ts < hi]
    return {"delivered": sum(1 for dp, _ in inside if dp >= CH),
            "duplicates": sum(dp // CH - 1 for dp, _ in inside if dp >= 2 * CH),
            "partial": sum(1 for dp, _ in inside if 0 < dp < CH or dp % CH),
            "resent": sum(r for _, r in inside)}


def _common(row: Row, s: Settings, stats: dict[str, float]) -> dict[str, Any]:
    assert row.gw is not None
    return {"gateway": row.kind, "process": row.gw.name, "peak_rss_mb": round(row.gw.peak_rss_mb, 1),
            "starts": row.gw.starts, "messages_received": int(stats["messages"]),
            "resent_messages": int(stats["resent_messages"]),
            "timeline": {k: round(v, 3) for k, v in row.marks.items()},
            "kill_times": [round(k, 3) for k in row.kill_times], "notes": row.notes}


def analyse_edgeloop(row: Row, s: Settings, journal_fill: dict[str, Any], journal_end: tuple[int, int, int],
                     stats: dict[str, float], samples: list[tuple[str, int, int, float, int]]) -> dict[str, Any]:
    accepted, unsent, unsent_samples = journal_end
    everything = _window_counts(samples, 0, 2**62)
    delivered = everything["delivered"]
    lost_total = accepted - delivered - unsent_samples  # what is still journaled is not lost: it goes next time
    phases: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in _phases(row).items():
        counts = _window_counts(samples, lo, hi)
        if name == "replay":
            expected = journal_fill["samples"]
        elif name == "outage":
            expected = s.devices * _grid(lo, hi, s.period_ms)
        else:
            expected = None
        phases[name] = {"expected": expected, **counts,
                        "lost": None if expected is None else max(0, expected - counts["delivered"])}
    if "kill -9" in phases:
        other = sum(p["lost"] or 0 for n, p in phases.items() if n != "kill -9")
        k = phases["kill -9"]
        k["lost"] = max(0, lost_total - other)
        k["not_accepted_at_kill"] = _unaccepted_at_kills(row, s, samples)
        k["not_read_while_down"] = _unread_while_down(row, s, samples)
    return {
        **_common(row, s, stats),
        "journal_throughput": journal_fill,
        "replay": _replay(row, samples),
        "phases": phases,
        "total": {"expected": accepted, "delivered": delivered, "lost": max(0, lost_total),
                  "still_in_journal": {"messages": unsent, "samples": unsent_samples},
                  "duplicates": everything["duplicates"], "partial": everything["partial"],
                  "resent_samples": everything["resent"]},
    }


def _last_before(samples: list[tuple[str, int, int, float, int]], when_ms: int) -> dict[str, int]:
    last: dict[str, int] = {}
    for d, ts, dp, _f, _r in samples:
        if dp >= CH and ts <= when_ms and ts > last.get(d, 0):
            last[d] = ts
    return last


def _unaccepted_at_kills(row: Row, s: Settings, samples: list[tuple[str, int, int, float, int]]) -> int:
    """Readings due before each kill -9 after the last one that reached the broker: read, never committed."""
    total = 0
    for k in row.kill_times:
        k_ms = int(k * 1000)
        for last in _last_before(samples, k_ms).values():
            total += _grid(last + 1, k_ms + 1, s.period_ms)
    return total


def _unread_while_down(row: Row, s: Settings, samples: list[tuple[str, int, int, float, int]]) -> int:
    """Readings due while no agent process was running (a polled machine keeps no queue)."""
    total = 0
    firsts: dict[str, list[int]] = {}
    for d, ts, dp, _f, _r in samples:
        if dp >= CH:
            firsts.setdefault(d, []).append(ts)
    for values in firsts.values():
        values.sort()
    for k in row.kill_times:
        k_ms = int(k * 1000)
        for values in firsts.values():
            after = next((t for t in values if t > k_ms), None)
            if after is not None:
                total += _grid(k_ms + 1, after, s.period_ms)
    return total


def analyse_thingsboard(row: Row, s: Settings, ingest: dict[str, Any],
                        published: tuple[list[tuple[str, int]], int, int], stats: dict[str, float],
                        samples: list[tuple[str, int, int, float, int]]) -> dict[str, Any]:
    acked, unacked, still_stored = published
    got = {(d, ts): dp for d, ts, dp, _f, _r in samples}
    phases: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in _phases(row).items():
        counts = _window_counts(samples, lo, hi)
        expected = [(d, ts) for d, ts in acked if lo <= ts < hi]
        lost = sum(1 for key in expected if got.get(key, 0) < CH)
        phases[name] = {"expected": len(expected), **counts, "lost": lost}
    lost_keys = sorted((ts, d) for d, ts in acked if got.get((d, ts), 0) < CH)
    lost_total = len(lost_keys)
    counts = _window_counts(samples, 0, 2**62)
    return {
        **_common(row, s, stats),
        "storage_throughput": ingest,
        "replay": _replay(row, samples),
        "phases": phases,
        "total": {"expected": len(acked), "delivered": counts["delivered"], "lost": max(0, lost_total - still_stored),
                  "still_in_storage": still_stored,
                  "duplicates": counts["duplicates"], "partial": counts["partial"],
                  "unacknowledged_by_broker1": unacked},
        "lost_examples": [{"device": d, "ts": ts, "at_s": round(ts / 1000 - row.marks.get("link_up", 0), 1)}
                          for ts, d in lost_keys[:40]],
    }


# -- report --------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    model = cpu_model()
    tb = "not installed"
    with contextlib.suppress(FileNotFoundError, subprocess.SubprocessError):
        tb = subprocess.run([str(tb_python()), "-c", "from importlib.metadata import version as v;"
                             "print(v('thingsboard-gateway'))"], capture_output=True, text=True, timeout=30,
                            check=True).stdout.strip()
    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": pyplatform.python_version(),
            "platform": pyplatform.platform(), "mosquitto": mosquitto_version(), "sqlite": sqlite3.sqlite_version,
            "paho_mqtt": dist_version("paho-mqtt"), "edgeloop": dist_version("edgeloop"),
            "thingsboard_gateway": tb}


def evaluate(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ours, theirs = rows.get("edgeloop"), rows.get("thingsboard")
    if ours and "error" not in ours:
        rate = ours["replay"].get("samples_per_s") or 0
        out.append({"target": ">= 5,000 samples/s replay with live load continuing", "measured": f"{rate:,}",
                    "met": rate >= 5000})
        faults = {n: p for n, p in ours["phases"].items()}
        bad = {n: (p["lost"], p["duplicates"]) for n, p in faults.items() if p["lost"] or p["duplicates"]}
        total = ours["total"]
        out.append({"target": "zero loss and zero duplicates in every fault",
                    "measured": ", ".join(f"{n}: {lo} lost / {du} dup" for n, (lo, du) in bad.items())
                    or f"none lost, none duplicated ({total['delivered']:,} of {total['expected']:,} delivered)",
                    "met": not bad and not total["lost"] and not total["duplicates"]})
        if theirs and "error" not in theirs:
            a, b = ours["replay"].get("samples_per_s"), theirs["replay"].get("samples_per_s")
            if a and b:
                out.append({"target": ">= 5x the ThingsBoard gateway's throughput (replay through storage)",
                            "measured": f"{a / b:.1f}x ({a:,} vs {b:,} samples/s)", "met": a >= 5 * b})
            a, b = ours["journal_throughput"].get("samples_per_s"), theirs["storage_throughput"].get("samples_per_s")
            if a and b:
                out.append({"target": ">= 5x into durable storage (journal vs its SQLite storage)",
                            "measured": f"{a / b:.1f}x ({a:,} vs {b:,} samples/s)", "met": a >= 5 * b})
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _fault_cell(p: dict[str, Any] | None) -> str:
    if p is None:
        return "–"
    lost = "?" if p["lost"] is None else f"{p['lost']:,}"
    return f"{lost} / {p['duplicates']:,}"


def render(report: dict[str, Any], out: Console) -> None:
    s = report["settings"]
    table = Table(title=f"edgeloop bench edge, {report['date']}, {report['machine']['cpu_count']} cores: "
                        f"{s['devices']} devices x {s['hz']:g} Hz x 8 channels, {s['backlog_minutes']:g}-minute "
                        f"backlog, {s['outage_s']:g} s outage, {s['kills']} x kill -9",
                  title_justify="left", caption_justify="left",
                  caption="into storage: journal appends (ours) / MQTT in -> SQLite with the uplink down "
                          "(ThingsBoard); replay: backlog samples/s while live continues; lag: live data during "
                          "the replay; faults: lost / duplicated samples")
    for col in ("gateway", "into storage smp/s", "replay smp/s", "live lag p99 (s)", "replay CPU %",
                "replay: lost/dup", "outage: lost/dup", "kill -9: lost/dup", "re-sent", "peak RSS MiB"):
        table.add_column(col, justify="left" if col == "gateway" else "right", no_wrap=False)
    for name in ROWS:
        r = report["rows"].get(name)
        if r is None:
            continue
        if "error" in r:
            table.add_row(name, f"[red]{r['error']}[/red]")
            continue
        into = r.get("journal_throughput") or r.get("storage_throughput") or {}
        rep = r["replay"]
        table.add_row(
            name, f"{into.get('samples_per_s') or 0:,}", f"{rep.get('samples_per_s') or 0:,}",
            _fmt((rep.get("live_lag_s") or {}).get("p99"), ",.2f"), _fmt(rep.get("gateway_cpu_pct"), ".0f"),
            _fault_cell(r["phases"].get("replay")), _fault_cell(r["phases"].get("outage")),
            _fault_cell(r["phases"].get("kill -9")), f"{r['total'].get('resent_samples', 0):,}",
            f"{r['peak_rss_mb']:.0f}")
    out.print(table)
    for name in ROWS:
        r = report["rows"].get(name)
        if not r or "error" in r:
            continue
        t = r["total"]
        line = f"{name}: {t['delivered']:,} of {t['expected']:,} expected samples delivered, {t['lost']:,} lost, " \
               f"{t['duplicates']:,} duplicated"
        kill = r["phases"].get("kill -9") or {}
        if "not_accepted_at_kill" in kill:
            line += (f"; at kill -9: {kill['not_accepted_at_kill']:,} readings taken but not yet committed "
                     f"(<= commit_ms), {kill['not_read_while_down']:,} due while no agent ran")
        out.print(line)
        for note in r.get("notes", []):
            out.print(f"[yellow]note ({name}):[/yellow] {note}")
    if report["targets"]:
        targets = Table(title="targets", title_justify="left")
        targets.add_column("target")
        targets.add_column("measured")
        targets.add_column("met", justify="center")
        for t in report["targets"]:
            targets.add_row(t["target"], t["measured"], "[green]met[/green]" if t["met"] else "[red]missed[/red]")
        out.print(targets)
    if report.get("results_file"):
        out.print(f"[dim]full results: {report['results_file']}[/dim]")


async def _run(s: Settings, console: Console, started: float) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for name in s.rows:
        with tempfile.TemporaryDirectory(prefix=f"edgeloop-bench-edge-{name}-") as tmp:
            runner = run_edgeloop if name == "edgeloop" else run_thingsboard
            try:
                rows[name] = await runner(s, console, Path(tmp), started)
            except (RuntimeError, OSError) as exc:
                console.print(f"[red]{name} failed:[/red] {exc}")
                rows[name] = {"gateway": name, "error": str(exc)}
    return rows


def main(*, as_json: bool, settings: Settings, console: Console, out: Console) -> dict[str, Any]:
    """Run both rows, print the table (or one JSON object), save the JSON under bench/results/."""
    check_settings(settings)
    if "thingsboard" in settings.rows:
        tb_python()
    started = time.monotonic()
    s = settings
    console.print(f"[bold]edgeloop bench edge[/bold]: {', '.join(s.rows)}; {s.devices} devices x {s.hz:g} Hz "
                  f"({s.live_rate:,.0f} samples/s live), {s.backlog_minutes:g}-minute backlog "
                  f"({s.live_rate * s.backlog_ms / 1000:,.0f} samples), {s.outage_s:g} s outage, {s.kills} x kill -9")
    rows = asyncio.run(_run(s, console, started))
    report: dict[str, Any] = {
        "benchmark": "edge", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "settings": {**asdict(s), "rows": list(s.rows), "period_ms": s.period_ms, "live_samples_per_s": s.live_rate},
        "machine": machine_info(), "rows": rows,
    }
    report["targets"] = evaluate(rows)
    return publish_report(report, "edge", as_json=as_json, console=console, out=out, render=render)


if __name__ == "__main__":  # python -m edgeloop.bench.edge [--quick] [--json]
    main(as_json="--json" in sys.argv, settings=Settings().chosen(quick="--quick" in sys.argv),
         console=Console(stderr=True), out=Console())
