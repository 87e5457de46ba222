"""Shared fixtures: real PostgreSQL databases, real Mosquitto brokers, free ports."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from edgeloop.store import Store, open_store
from tests.support import free_port, start_mosquitto

# The tests stop the platforms and agents they start with Ctrl-C (SIGINT), as a person would. A test run started
# in the background of a script (`make test &`, nohup) inherits SIGINT *ignored*, and an ignored signal stays
# ignored in every child: those platforms would never stop. Handling it here gives the children the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PG_ADMIN_DSN = os.environ.get("EDGELOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_admin(sql: str) -> None:
    con = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"edgeloop_test_{secrets.token_hex(6)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each storage backend in turn: the same contract tests run against both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'edgeloop.db'}"
        async with open_store(url) as s:
            yield s
    else:
        name = f"edgeloop_test_{secrets.token_hex(6)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            async with open_store(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}") as s:
                yield s
        finally:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A real Mosquitto broker on a free port, configured as EdgeLoop's generated config would; yields the port."""
    port = free_port()
    with start_mosquitto(port=port, workdir=tmp_path / "mosquitto"):
        yield port


ADMIN_PASSWORD = "live-platform-admin-password"


@dataclass
class LivePlatform:
    """``edgeloop up`` running as a real process, exactly as a user starts it."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    mqtt_port: int = 0
    admin_user: str = "admin"
    admin_password: str = ADMIN_PASSWORD

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=10) as resp:
            return json.load(resp)

    def wait_for_alert(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.get("/api/v1/alerts?status=open"):
                return
            time.sleep(0.5)
        raise AssertionError(f"no open alert within {timeout_s} s")


def start_up_process(
    data_dir: Path, *, devices: int = 6, faulty: int = 2, seed: int = 3, auth: bool = False
) -> LivePlatform:
    port, mqtt_port = free_port(), free_port()
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop", "up", "--devices", str(devices), "--faulty", str(faulty), "--seed",
             str(seed), "--data-dir", str(data_dir), "--port", str(port), "--mqtt-port", str(mqtt_port),
             "--auth" if auth else "--no-auth"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "EDGELOOP_ADMIN_PASSWORD": ADMIN_PASSWORD})
    live = LivePlatform(base_url=f"http://127.0.0.1:{port}", data_dir=data_dir, process=proc, mqtt_port=mqtt_port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"edgeloop up exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if live.get("/api/v1/health")["status"] == "ok":
                return live
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("edgeloop up did not serve its API within 60 s")


def stop_up_process(live: LivePlatform) -> int:
    """Ctrl-C, as a user would; returns the exit code."""
    live.process.send_signal(signal.SIGINT)
    try:
        return live.process.wait(30)
    except subprocess.TimeoutExpired:
        live.process.kill()
        live.process.wait()
        raise


@pytest.fixture(scope="session")
def live_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    live = start_up_process(tmp_path_factory.mktemp("live") / "data", auth=True)
    try:
        yield live
    finally:
        stop_up_process(live)


# --- an HTTP receiver for notifications (webhooks, work orders) ---------------------------------------------

SECRET = "s3cret-shared-with-the-receiver"


@dataclass
class Receiver:
    """Answers POSTs with the scripted statuses in turn (the last one repeats) and records each request."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    verified: list[bool] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 that checks each request's signature against ``SECRET`` (Standard
    Webhooks; the replay window is checked by the tests of ``verify_signature``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edgeloop.alerts.notify import TIMESTAMP_HEADER, verify_signature

    rec = Receiver(statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            n = len(rec.requests)
            rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            stamp = self.headers.get(TIMESTAMP_HEADER, "")  # the senders' clocks are the tests' own
            rec.verified.append(verify_signature(SECRET, body, self.headers,
                                                 now_s=int(stamp) if stamp.isdigit() else 0))
            status = rec.statuses[min(n, len(rec.statuses) - 1)]
            reply = b"ok" if status < 300 else b"boom" if status >= 500 else b"bad request"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
