"""Faults for real: kill -9 of the platform mid-stream must lose nothing and store nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import free_port

pytestmark = pytest.mark.mosquitto

TENANT = "plant"
ADMIN_PASSWORD = "kill-nine-admin-password"
DEVICES = [f"dev-{i}" for i in range(4)]
MESSAGES_PER_DEVICE = 2000
SAMPLES_PER_MESSAGE = 5


class Serve:
    """``edgeloop serve`` as a real process against an external broker."""

    def __init__(self, *, store: str, mqtt_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = workdir / "serve.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeloop", "serve", "--store", store, "--mqtt", f"127.0.0.1:{mqtt_port}",
                 "--port", str(self.port), "--data-dir", str(workdir / "data"), "--client-id", "ingest-under-test",
                 "--insecure"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "EDGELOOP_ADMIN_PASSWORD": ADMIN_PASSWORD})
        self.token = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                self.call("GET", "/api/v1/health")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("edgeloop serve did not start")
        form = urllib.parse.urlencode({"username": "admin", "password": ADMIN_PASSWORD}).encode()
        with urllib.request.urlopen(self.url + "/api/v1/auth/token", data=form, timeout=10) as resp:
            self.token = json.load(resp)["access_token"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json", "authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def stored(self) -> tuple[int, int]:
        counts = [self.call("GET", f"/api/v1/devices/{d}") for d in DEVICES]
        return sum(c["stored_messages"] for c in counts), sum(c["stored_samples"] for c in counts)


def register(serve: Serve) -> None:
    serve.call("POST", "/api/v1/tenants", {"id": TENANT})
    serve.call("POST", "/api/v1/sites", {"id": "site-a", "tenant": TENANT})
    serve.call("POST", "/api/v1/lines", {"id": "line-a", "site": "site-a"})
    serve.call("POST", "/api/v1/assets", {"id": "press-1", "line": "line-a", "kind": "press"})
    serve.call("POST", "/api/v1/profiles", {"name": "press-v1", "channels": [
        {"name": "force", "unit": "kN"}, {"name": "temp", "unit": "degC"}]})
    for d in DEVICES:
        serve.call("POST", "/api/v1/devices", {"id": d, "tenant": TENANT, "asset": "press-1", "profile": "press-v1"})


def publish_all(port: int, done: threading.Event) -> None:
    """Every device publishes its messages at QoS 1; returns when the broker has acknowledged all."""
    clients = []
    infos = []
    t0 = int(time.time() * 1000) - MESSAGES_PER_DEVICE * SAMPLES_PER_MESSAGE * 10
    for d in DEVICES:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{d}")
        c.max_inflight_messages_set(100)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    for seq in range(MESSAGES_PER_DEVICE):
        for d, c in zip(DEVICES, clients, strict=True):
            base = t0 + seq * SAMPLES_PER_MESSAGE * 10
            msg = Telemetry(device=d, seq=seq, samples=[
                Sample(ts=base + 10 * k, values={"force": float(seq), "temp": 20.0 + k}) for k in range(
                    SAMPLES_PER_MESSAGE)])
            infos.append(c.publish(topic(TENANT, d, TopicKind.TELEMETRY), encode(msg), qos=1))
        time.sleep(0.003)  # a steady stream over several seconds rather than one burst
    for info in infos:
        info.wait_for_publish(60)
    for c in clients:
        c.disconnect()
        c.loop_stop()
    done.set()


def test_kill_9_mid_stream_loses_nothing_and_stores_nothing_twice(mosquitto: int, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'edgeloop.db'}"
    first = Serve(store=store, mqtt_port=mosquitto, workdir=tmp_path)
    register(first)
    done = threading.Event()
    publisher = threading.Thread(target=publish_all, args=(mosquitto, done), daemon=True)
    publisher.start()

    deadline = time.monotonic() + 30
    while first.stored()[0] < 300:  # mid-stream: some stored, most still to come
        assert time.monotonic() < deadline, "nothing was stored"
        time.sleep(0.05)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    stored_at_kill = _count_rows(tmp_path / "edgeloop.db")
    total = len(DEVICES) * MESSAGES_PER_DEVICE
    assert 0 < stored_at_kill < total, "the kill must land mid-stream"

    assert done.wait(60), "the broker must keep accepting while the platform is down"
    second = Serve(store=store, mqtt_port=mosquitto, workdir=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while second.stored()[0] < total and time.monotonic() < deadline:
            time.sleep(0.2)
        messages, samples = second.stored()
        assert messages == total, f"lost {total - messages} messages"
        assert samples == total * SAMPLES_PER_MESSAGE
        time.sleep(0.5)  # a late redelivery would show up now
        assert second.stored() == (total, total * SAMPLES_PER_MESSAGE), "a message was stored twice"
        stats = second.call("GET", "/api/v1/stats")["ingest"]
        assert stats["dead_letters"] == 0
    finally:
        second.proc.send_signal(signal.SIGINT)
        second.proc.wait(30)


def _count_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM chunks").fetchone()[0])
