"""The agent's promise, tested for real: a running ``edgeloop agent`` process, a fault proxy between it
and a real Mosquitto, and the platform storing behind the broker (ack after commit). A 30 s network
outage and a ``kill -9`` of the agent end with every accepted sample stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeloop.app import Platform, PlatformConfig
from edgeloop.bench.harness import FaultProxy
from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_mosquitto_async
from edgeloop.sim.fleet import Fleet
from edgeloop.sim.register import register_fleet

pytestmark = pytest.mark.mosquitto
DEVICES = 2


def write_config(path: Path, *, mqtt_port: int, data_dir: Path, budget_mb: float = 256) -> Path:
    path.write_text(f"""\
agent: {{tenant: demo, gateway: gw-1, data_dir: {data_dir}, commit_ms: 100, budget_mb: {budget_mb}}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}, backfill_per_s: 200, keepalive_s: 2}}
sources:
  - {{name: fleet, kind: simulator, devices: {DEVICES}, seed: 3, poll_ms: 100}}
""")
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "edgeloop", "agent", "--config", str(config), "-v"],
                                stdout=out, stderr=subprocess.STDOUT)


def stop_agent(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def journal_gaps(data_dir: Path) -> list[tuple[str, int, int, int, int]]:
    """(device, first_ts, last_ts, samples, sent) of every gap the journal recorded."""
    with contextlib.closing(sqlite3.connect(data_dir / "journal.db")) as db:
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in db.execute("SELECT device, first_ts, last_ts, samples, sent FROM gaps ORDER BY id")]


def journal_state(data_dir: Path) -> tuple[dict[str, int], int]:
    """(samples accepted per device over the journal's life, messages still unsent)."""
    with contextlib.closing(sqlite3.connect(data_dir / "journal.db")) as db:
        accepted = {str(d): int(n) for d, n in db.execute("SELECT device, accepted FROM devices")}
        unsent = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    return accepted, unsent


@contextlib.asynccontextmanager
async def platform_behind_mosquitto(tmp_path: Path) -> AsyncIterator[tuple[Platform, int]]:
    port = free_port()
    async with run_mosquitto_async(tmp_path / "mosquitto", port=port):
        cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=port, embedded_broker=False, http_port=None,
                             ingest_client_id=f"ingest-{port}")
        async with Platform(cfg) as platform:
            fleet = Fleet(devices=DEVICES, faulty=0, seed=3, start_ms=0, duration_ms=3_600_000)
            await register_fleet(platform.registry, fleet, tenant="demo")
            yield platform, port


async def stored(platform: Platform) -> dict[str, int]:
    out = {}
    for device in platform.registry.registry.devices:
        _, samples = await platform.store.telemetry_counts(device)
        out[device] = samples
    return out


async def wait_until_stored(platform: Platform, accepted: dict[str, int], timeout_s: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        await platform.idle(5)
        got = await stored(platform)
        if got == accepted or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def test_a_30_s_outage_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    async with platform_behind_mosquitto(tmp_path) as (platform, broker_port), FaultProxy(broker_port) as proxy:
        config = write_config(tmp_path / "agent.yaml", mqtt_port=proxy.port, data_dir=tmp_path / "agent")
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            await asyncio.sleep(4)
            before = sum((await stored(platform)).values())
            assert before > 0, (tmp_path / "agent.log").read_text()[-2000:]
            proxy.flowing.clear()
            await asyncio.sleep(30)
            during = sum((await stored(platform)).values())
            proxy.flowing.set()
            proxy.reset()  # what a router does when the link returns: the stale connections die
            await asyncio.sleep(6)
        finally:
            await asyncio.to_thread(stop_agent, agent)  # the proxy and the platform run on this loop
        accepted, unsent = journal_state(tmp_path / "agent")
        got = await wait_until_stored(platform, accepted)
    assert unsent == 0, "the agent drained its journal"
    assert sum(accepted.values()) > before + DEVICES * 10 * 30 * 0.9, "it kept accepting during the outage"
    assert during - before < DEVICES * 10 * 5, "the outage was real: little got through while black-holed"
    assert got == accepted, "every accepted sample stored exactly once"


async def test_kill_9_of_the_agent_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    async with platform_behind_mosquitto(tmp_path) as (platform, broker_port):
        config = write_config(tmp_path / "agent.yaml", mqtt_port=broker_port, data_dir=tmp_path / "agent")
        for _ in range(3):  # three hard kills mid-stream
            agent = start_agent(config, tmp_path / "agent.log")
            await asyncio.sleep(2.5)
            os.kill(agent.pid, signal.SIGKILL)
            await asyncio.to_thread(agent.wait)
        agent = start_agent(config, tmp_path / "agent.log")
        await asyncio.sleep(3)
        await asyncio.to_thread(stop_agent, agent)
        accepted, unsent = journal_state(tmp_path / "agent")
        got = await wait_until_stored(platform, accepted)
    assert unsent == 0
    assert sum(accepted.values()) > 0
    assert got == accepted, "every sample accepted before each kill was stored, and none twice"


async def test_an_exhausted_disk_budget_drops_the_oldest_and_the_platform_shows_the_gaps(tmp_path: Path) -> None:
    """A 12 s outage against a 12 KB journal: the oldest readings are dropped, each drop is a gap event the
    platform serves through its API, and everything not dropped is stored exactly once."""
    import httpx

    from edgeloop.api import create_app

    async with platform_behind_mosquitto(tmp_path) as (platform, broker_port), FaultProxy(broker_port) as proxy:
        config = write_config(tmp_path / "agent.yaml", mqtt_port=proxy.port, data_dir=tmp_path / "agent",
                              budget_mb=0.012)
        agent = start_agent(config, tmp_path / "agent.log")
        try:
            await asyncio.sleep(3)
            proxy.flowing.clear()
            await asyncio.sleep(12)
            proxy.flowing.set()
            proxy.reset()
            await asyncio.sleep(8)
        finally:
            await asyncio.to_thread(stop_agent, agent)
        accepted, unsent = journal_state(tmp_path / "agent")
        gaps = journal_gaps(tmp_path / "agent")
        dropped: dict[str, int] = {}
        for device, _, _, samples, _ in gaps:
            dropped[device] = dropped.get(device, 0) + samples
        got = await wait_until_stored(platform, {d: n - dropped.get(d, 0) for d, n in accepted.items()}, timeout_s=5)
        transport = httpx.ASGITransport(app=create_app(platform.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as api:
            served = {d: (await api.get(f"/api/v1/devices/{d}/events", params={"kind": "gap"})).json()
                      for d in accepted}
        newest = {d: (await platform.store.latest_sample_ms()).get(d, 0) for d in accepted}
    assert unsent == 0
    assert gaps and all(sent for *_, sent in gaps), "every gap was reported and acknowledged"
    for device, n in accepted.items():
        # Everything not dropped is stored. A dropped message may still have arrived: it was in flight when
        # the link died, and the network delivered it late; the store never holds more than was accepted.
        assert n - dropped.get(device, 0) <= got[device] <= n, (device, n, dropped.get(device), got[device])
    for device, events in served.items():
        assert sum(e["data"]["samples"] for e in events) == dropped.get(device, 0)
        assert all(e["data"]["reason"] == "disk budget exhausted" for e in events)
        assert all(e["data"]["last_ts"] < newest[device] for e in events), "the oldest went, not the newest"


async def test_a_broker_restart_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    """Mosquitto (persistent) stops mid-stream and comes back on the same port: the agent journals through
    the gap and delivers; the platform's persistent session gets what the broker had already accepted."""
    port = free_port()
    broker = contextlib.AsyncExitStack()
    await broker.enter_async_context(run_mosquitto_async(tmp_path / "mosquitto", port=port))
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=port, embedded_broker=False, http_port=None,
                         ingest_client_id=f"ingest-{port}")
    try:
        async with Platform(cfg) as platform:
            await register_fleet(platform.registry, Fleet(devices=DEVICES, faulty=0, seed=3, start_ms=0,
                                                          duration_ms=3_600_000), tenant="demo")
            config = write_config(tmp_path / "agent.yaml", mqtt_port=port, data_dir=tmp_path / "agent")
            agent = start_agent(config, tmp_path / "agent.log")
            try:
                await asyncio.sleep(3)
                await broker.aclose()  # SIGTERM: Mosquitto saves its persistent state
                await asyncio.sleep(5)
                await broker.enter_async_context(run_mosquitto_async(tmp_path / "mosquitto", port=port))
                await asyncio.sleep(8)
            finally:
                await asyncio.to_thread(stop_agent, agent)
            accepted, unsent = journal_state(tmp_path / "agent")
            got = await wait_until_stored(platform, accepted)
    finally:
        await broker.aclose()
    assert unsent == 0
    assert sum(accepted.values()) > DEVICES * 10 * 12, "it kept accepting while the broker was down"
    assert got == accepted, "every accepted sample stored exactly once across the broker restart"
