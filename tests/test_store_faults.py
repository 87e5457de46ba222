"""The store-fault contract, on both backends, for real: the database goes away under a running platform.

PostgreSQL: the store's connection is terminated mid-call (``pg_terminate_backend``) and new connections are
refused for a while. SQLite: a second process holds the file's write lock (``BEGIN EXCLUSIVE``). In both, store
calls raise ``StoreError`` (never a driver's own error), the platform's background loops (ingest, alerting,
scoring) keep running, a reading accepted during the outage is stored once the database is back, and a
redelivered reading is not stored twice; a device event and a gateway heartbeat of the outage arrive too (a
write that failed on a busy SQLite left no transaction open behind it).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE

import asyncpg
import pytest

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.broker import free_port
from edgeloop.errors import StoreError
from edgeloop.messages import TopicKind, topic
from edgeloop.store import Store
from edgeloop.store.base import AuditRecord
from tests.conftest import PG_ADMIN_DSN
from tests.support import HOT_RULES, register_device
from tests.test_poison_messages import EVT, GATEWAY, HEALTH, _now_event, _publish, heartbeat

TENANT, ASSET, DEVICE = "acme", "pump-1", "d1"
TEL = topic(TENANT, DEVICE, TopicKind.TELEMETRY)
BEFORE, DURING = range(1, 21), range(21, 41)  # message sequence numbers published before and during the outage
T0 = int(time.time() * 1000) - 60_000


def tel(seq: int) -> bytes:
    """One reading; those published during the outage run hot (over the rule's 80), so alerting has to write."""
    temp = 95.0 if seq in DURING else 20.0
    return json.dumps({"v": 1, "device": DEVICE, "seq": seq,
                       "samples": [{"ts": T0 + seq * 1000, "values": {"temp": temp}}]}).encode()


async def _stored(store: Store, n: int) -> bool:
    return (await store.telemetry_counts(DEVICE))[0] == n


async def _contract(platform: Platform, port: int, outage: Callable[[], Awaitable[None]],
                    back: Callable[[], Awaitable[None]]) -> None:
    """Readings before, during and after ``outage()`` .. ``back()``: all stored once, every loop alive."""
    profile = DeviceProfile(name="p", channels=[ChannelSpec(name="temp")])
    await register_device(platform, tenant=TENANT, asset=ASSET, device=DEVICE, profile=profile)
    await register_device(platform, tenant=TENANT, asset="edge-box", device=GATEWAY, profile=profile)
    await platform.alerts.replace_rules(HOT_RULES, by="test")
    await _publish(port, [(TEL, tel(s)) for s in BEFORE])
    await _until(lambda: _stored(platform.store, len(BEFORE)), "the first readings stored")

    await outage()
    try:
        with pytest.raises(StoreError):  # a write, and a read, while the database is away
            await platform.store.audit(AuditRecord(ts_ms=T0, actor="test", action="probe", target="", outcome="ok"))
        # Published now, acknowledged to the device once stored (so this finishes after the outage).
        publishing = asyncio.create_task(_publish(port, [(TEL, tel(s)) for s in DURING] + [
            (HEALTH, heartbeat("during-the-outage", ts=T0 + 60_000, devices=[DEVICE])), (EVT, _now_event("restart"))]))
        await _until(lambda: platform.pipeline.stats.store_retries > 0, "ingest meeting the outage")
        await asyncio.sleep(2.5)  # alert ticks (every second) meet it too
        assert platform.alive, "every background loop survives the outage"
    finally:
        await back()
    await publishing

    total = len(BEFORE) + len(DURING)
    await _until(lambda: _stored(platform.store, total), "the readings of the outage stored", timeout_s=60)
    await _until(lambda: platform.store.list_alerts(asset=ASSET), "the hot alert stored", timeout_s=30)
    assert [e.kind for e in await platform.store.list_events(device=DEVICE)] == ["restart"]
    [gateway] = await platform.store.list_gateways()  # the heartbeat of the outage, watched by alerting's tick
    assert json.loads(gateway.heartbeat)["agent_version"] == "during-the-outage" and gateway.devices == (DEVICE,)
    duplicates = platform.pipeline.stats.duplicates
    await _publish(port, [(TEL, tel(s)) for s in DURING[:5]])  # a redelivery
    await _until(lambda: platform.pipeline.stats.duplicates == duplicates + 5, "the redelivery handled")
    assert await platform.store.telemetry_counts(DEVICE) == (total, total), "nothing lost, nothing stored twice"
    assert platform.alive


async def _until(check: Callable[[], Awaitable[object] | object], what: str, timeout_s: float = 30.0) -> None:
    """Bounded polling (data travels through a broker and a retrying writer: there is no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if await found if inspect.isawaitable(found) else found:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def _platform(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Platform, int]]:
    port = free_port()
    async with Platform(PlatformConfig(data_dir=tmp_path / "data", store_url=store_url, mqtt_port=port,
                                       http_port=None)) as platform:
        yield platform, port


async def test_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "edgeloop.db"
    locker: list[asyncio.subprocess.Process] = []
    holder = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
              "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()")

    async def outage() -> None:  # a second process holds the write lock until told to stop
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", holder, str(path),
                                                    stdin=PIPE, stdout=PIPE)
        locker.append(proc)
        assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"locked"

    async def back() -> None:
        await asyncio.wait_for(locker.pop().communicate(b"\n"), 10)

    async with _platform(tmp_path, f"sqlite:///{path}") as (platform, port):
        await _contract(platform, port, outage, back)


@pytest.mark.postgres
async def test_postgres_connection_terminated_and_refused(tmp_path: Path, pg_dsn: str) -> None:
    name = pg_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        async with _platform(tmp_path, pg_dsn) as (platform, port):
            async def outage() -> None:
                # The store's connection dies mid-call; new connections are refused until ``back``.
                sleeping = asyncio.create_task(platform.store.driver.fetch("SELECT pg_sleep(30)"))
                await _until(lambda: admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%'",
                    name), "the call under way")
                await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
                with pytest.raises(StoreError):
                    await sleeping

            async def back() -> None:
                await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')

            await _contract(platform, port, outage, back)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
