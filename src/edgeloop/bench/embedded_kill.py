"""``edgeloop bench embedded-kill``: does ``edgeloop up`` keep what its broker acknowledged, across ``kill -9``?

1. A fleet of ``devices`` machines (the simulator's ids and profiles) is registered in a fresh SQLite database
   in a temporary data directory, then ``edgeloop up --devices 0 --no-auth --no-mqtt-tls`` starts on it as a
   real process (the embedded broker on a free port).
2. Each device is its own paho-mqtt client (``clean_session=False``, auto-reconnect) and floods canonical
   telemetry at QoS 1 with at most ``window`` unacknowledged PUBLISHes; every PUBACK is recorded per
   (device, seq).
3. After ``seconds`` the platform is killed with SIGKILL; the devices stop making new messages but keep what
   is unacknowledged (paho resends it after reconnecting, as any MQTT 3.1.1 client does).
4. ``edgeloop up`` restarts on the same data directory and port; once every device has its last message
   acknowledged and the platform is idle, it is stopped (Ctrl-C) and the ``chunks`` table is read.

Counted: messages acknowledged before the kill; of those, how many are not stored (**acknowledged but lost**);
all acknowledged messages not stored at the end; stored rows that were never published or stored twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from edgeloop.bench.harness import cpu_model, publish_report
from edgeloop.bench.publisher import Payloads, PublisherSpec
from edgeloop.broker import free_port
from edgeloop.messages import TopicKind, topic

TENANT = "bench"
FLEET_SEED = 11
BASE_AGE_MS = 20 * 86_400_000  # first sample 20 days ago (inside the platform's accepted window)
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Settings:
    devices: int = 4
    seconds: float = 15.0  # flooding time before kill -9
    window: int = 100  # QoS 1 in-flight PUBLISHes per device (the edge agent's default)
    samples_per_message: int = 10
    kill: bool = True  # False: stop with Ctrl-C instead (a control run)
    min_acked: int = 0  # keep flooding past ``seconds`` until this many messages are acknowledged (slow machines)


class FloodDevice:
    """One device: publishes (device, 1), (device, 2), ... at QoS 1 as fast as its in-flight window allows."""

    def __init__(self, device: str, *, port: int, window: int, payloads: Payloads) -> None:
        self.device = device
        self.topic = topic(TENANT, device, TopicKind.TELEMETRY)
        self.payloads = payloads
        self.port = port
        self.published = 0  # highest seq handed to paho
        self.acked: set[int] = set()
        self.disconnects = 0
        self._pending: dict[int, int] = {}  # mid -> seq, published and not acknowledged
        self._early: set[int] = set()  # mids acknowledged before publish() returned their mid to us
        self._lock = threading.Lock()  # never held while calling into paho (its callbacks run under its own locks)
        self._slots = threading.Semaphore(window)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{device}", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(window)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_disconnect = self._on_disconnect
        self._thread = threading.Thread(target=self._flood, name=f"flood-{device}", daemon=True)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            seq = self._pending.pop(mid, None)
            if seq is None:
                self._early.add(mid)
            else:
                self.acked.add(seq)
        self._slots.release()

    def _on_disconnect(self, *_a: Any) -> None:
        with self._lock:
            self.disconnects += 1
        self._connected.clear()

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError(f"{self.device} was not accepted by the embedded broker")
        self._thread.start()

    def _flood(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            seq = self.published + 1
            info = self.client.publish(self.topic, self.payloads.build(self.device, seq), qos=1)
            self.published = seq
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(seq)
                else:
                    self._pending[info.mid] = seq

    def stop_publishing(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def unacked(self) -> int:
        with self._lock:
            return len(self._pending)

    def snapshot(self) -> set[int]:
        with self._lock:
            return set(self.acked)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def register(data_dir: Path, devices: int) -> list[str]:
    """The simulator's fleet of ``devices`` machines, registered in the data directory's SQLite database."""
    from edgeloop.ingest.validate import Validator
    from edgeloop.registry import RegistryService
    from edgeloop.sim.fleet import Fleet
    from edgeloop.sim.register import register_fleet
    from edgeloop.store import open_store

    fleet = Fleet(devices=devices, faulty=0, seed=FLEET_SEED, start_ms=0, duration_ms=3_600_000)
    url = f"sqlite:///{data_dir.resolve() / 'edgeloop.db'}"

    async def main() -> None:
        async with open_store(url) as store:
            registry = await store.load_registry()
            service = RegistryService(store=store, registry=registry, validator=Validator(registry=registry))
            await register_fleet(service, fleet, tenant=TENANT)

    asyncio.run(main())
    return [d.device_id for d in fleet.devices]


@dataclass
class UpProcess:
    """``edgeloop up`` as a user starts it, on fixed ports so devices find it again after a restart."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.data_dir.parent / "up.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeloop", "up", "--devices", "0", "--no-auth", "--no-mqtt-tls",
                 "--data-dir", str(self.data_dir), "--port", str(self.port), "--mqtt-port", str(self.mqtt_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgeloop up exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.get("/api/v1/health")["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"edgeloop up did not serve its API within {START_TIMEOUT_S:.0f} s")

    def log_tail(self) -> str:
        return (self.data_dir.parent / "up.log").read_text(errors="replace")[-2000:]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return json.load(resp)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def stored_rows(data_dir: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(f"file:{data_dir / 'edgeloop.db'}?mode=ro", uri=True)
    try:
        return [(str(d), int(s)) for d, s in con.execute("SELECT device, seq FROM chunks")]
    finally:
        con.close()


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_idle(up: UpProcess) -> None:
    """Until the platform's ingest queue is empty and its handled count stops moving for a second."""
    last, since = -1, time.monotonic()
    deadline = since + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        ing = up.get("/api/v1/stats")["ingest"]
        handled = ing["stored_messages"] + ing["duplicates"] + ing["dead_letters"]
        if ing["queue_depth"] or handled != last:
            last, since = handled, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return
        time.sleep(0.1)
    raise RuntimeError("the platform did not become idle")


def run(settings: Settings, workdir: Path, progress: Any = print) -> dict[str, Any]:
    s = settings
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    ids = register(data_dir, s.devices)
    payloads = Payloads(PublisherSpec(
        index=0, host="127.0.0.1", port=0, tenant=TENANT, devices=tuple(ids), fleet_devices=s.devices,
        fleet_seed=FLEET_SEED, samples_per_message=s.samples_per_message,
        base_ts_ms=int(time.time() * 1000) - BASE_AGE_MS, window=s.window, backlog_cap=0))
    up = UpProcess(data_dir)
    up.start()
    devices = [FloodDevice(d, port=up.mqtt_port, window=s.window, payloads=payloads) for d in ids]
    for dev in devices:
        dev.start()
    progress(f"{s.devices} devices flooding for {s.seconds:g} s")
    time.sleep(s.seconds)  # the flood's length, not synchronisation
    wait_until(lambda: sum(len(dev.snapshot()) for dev in devices) >= s.min_acked, DRAIN_TIMEOUT_S,
               f"{s.min_acked} acknowledged messages")
    for dev in devices:
        dev.stop_publishing()
    if s.kill:
        up.kill()
    else:
        up.stop()
    wait_until(lambda: all(not dev.client.is_connected() for dev in devices), 30, "devices to see the platform gone")
    published = sum(dev.published for dev in devices)
    acked_before = {dev.device: dev.snapshot() for dev in devices}
    unacked_at_kill = sum(dev.unacked() for dev in devices)
    progress(f"{'killed' if s.kill else 'stopped'}: {published:,} published, "
             f"{sum(map(len, acked_before.values())):,} acknowledged, {unacked_at_kill:,} unacknowledged")
    before_restart = stored_rows(data_dir)
    up.start()
    wait_until(lambda: all(dev.unacked() == 0 and dev.published == len(dev.snapshot()) for dev in devices),
               DRAIN_TIMEOUT_S, "every device's messages to be acknowledged after the restart")
    wait_idle(up)
    stats = up.get("/api/v1/stats")["ingest"]
    for dev in devices:
        dev.close()
    code = up.stop()
    rows = stored_rows(data_dir)
    stored = {(d, q) for d, q in rows}
    acked_kill = {(d, q) for d, seqs in acked_before.items() for q in seqs}
    acked_all = {(dev.device, q) for dev in devices for q in dev.snapshot()}
    in_published = {(dev.device, q) for dev in devices for q in range(1, dev.published + 1)}
    lost = acked_kill - stored
    return {
        "published": published,
        "acked_before_kill": len(acked_kill),
        "unacked_at_kill": unacked_at_kill,
        "stored_at_kill": len(before_restart),
        "acked_but_lost": len(lost),
        "acked_but_lost_pct": round(100 * len(lost) / max(len(acked_kill), 1), 2),
        "acked_total": len(acked_all),
        "acked_total_not_stored": len(acked_all - stored),
        "stored": len(rows),
        "stored_twice": len(rows) - len(stored),
        "stored_never_published": len(stored - in_published),
        "duplicates_absorbed": stats["duplicates"],
        "messages_per_s_before_kill": round(len(acked_kill) / s.seconds, 1),
        "exit_code_after_restart": code,
    }


def render(report: dict[str, Any], out: Console) -> None:
    r = report["result"]
    table = Table(title=f"edgeloop up, {report['settings']['devices']} devices flooding QoS 1, "
                        f"kill -9 at {report['settings']['seconds']:g} s")
    table.add_column("what")
    table.add_column("messages", justify="right")
    for label, key in [("published", "published"), ("acknowledged before the kill", "acked_before_kill"),
                       ("unacknowledged (in the devices' windows) at the kill", "unacked_at_kill"),
                       ("stored when killed", "stored_at_kill"),
                       ("acknowledged but lost", "acked_but_lost"),
                       ("acknowledged in all, not stored at the end", "acked_total_not_stored"),
                       ("stored twice", "stored_twice"), ("stored, never published", "stored_never_published"),
                       ("resends absorbed by dedup", "duplicates_absorbed")]:
        table.add_row(label, f"{r[key]:,}")
    out.print(table)
    out.print(f"acknowledged but lost: {r['acked_but_lost_pct']} % of what was acknowledged before the kill; "
              f"{r['messages_per_s_before_kill']:,.0f} messages/s acknowledged during the flood")


def main(*, as_json: bool, settings: Settings, console: Console, out: Console) -> dict[str, Any]:
    started = time.monotonic()
    console.print(f"[bold]edgeloop bench embedded-kill[/bold]: {settings.devices} devices, window {settings.window}, "
                  f"{settings.samples_per_message} samples/message, kill -9 after {settings.seconds:g} s")
    with tempfile.TemporaryDirectory(prefix="edgeloop-kill-") as tmp:
        result = run(settings, Path(tmp), progress=console.print)
    report: dict[str, Any] = {
        "benchmark": "embedded-kill", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_seconds": round(time.monotonic() - started, 1), "settings": asdict(settings),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
        "result": result,
    }
    return publish_report(report, "embedded-kill", as_json=as_json, console=console, out=out, render=render)


if __name__ == "__main__":  # python -m edgeloop.bench.embedded_kill [--json]
    main(as_json="--json" in sys.argv, settings=Settings(), console=Console(stderr=True), out=Console())
