"""SQLite storage (the embedded default): one connection, WAL, driven from a single worker thread.

Every call runs on one dedicated thread so the event loop never blocks on disk
and SQLite sees one writer. ``synchronous`` defaults to FULL: a batch the
platform acknowledges to the broker is on disk even across power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError, StoreError, StoreRejected
from edgeloop.messages import Alert, AlertStatus
from edgeloop.sqlite_files import prepare_database
from edgeloop.store import alerting as al

if TYPE_CHECKING:
    from edgeloop.store.alerting import Label
from edgeloop.registry import Registry
from edgeloop.store.base import (
    ALERT_COLUMNS,
    ALERT_TRANSITIONS,
    FIRST_SAMPLE_SQL,
    GATEWAY_COLUMNS,
    GATEWAY_CONFIG_COLUMNS,
    LATEST_GATEWAY_CONFIGS_SQL,
    LATEST_SAMPLE_SQL,
    AuditRecord,
    Credential,
    DeadLetter,
    Enrollment,
    GatewayConfig,
    GatewayHeartbeat,
    GatewayRecord,
    Store,
    StoredEvent,
    TelemetryChunk,
    User,
    first_occurrences,
    rollup_rows,
)
from edgeloop.store.rows import (
    AUDIT_COLUMNS,
    CREDENTIAL_COLUMNS,
    ENROLLMENT_COLUMNS,
    EXPIRED_TOKENS_DELETE,
    TOKENS_TRIM,
    USER_COLUMNS,
    alert_from_row,
    alert_params,
    alert_query,
    audit_from_row,
    audit_params,
    credential_from_row,
    credential_params,
    enrollment_from_row,
    enrollment_params,
    gateway_config_from_row,
    gateway_from_row,
    user_from_row,
    user_params,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines (id TEXT PRIMARY KEY, site TEXT NOT NULL REFERENCES sites(id), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (id TEXT PRIMARY KEY, line TEXT NOT NULL REFERENCES lines(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, criticality INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (name TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id),
    asset TEXT NOT NULL REFERENCES assets(id), profile TEXT NOT NULL REFERENCES profiles(name), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (device TEXT NOT NULL, seq INTEGER NOT NULL, t0 INTEGER NOT NULL,
    t1 INTEGER NOT NULL, n INTEGER NOT NULL, channels TEXT NOT NULL, data BLOB NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS chunks_time ON chunks (device, t0);
CREATE TABLE IF NOT EXISTS rollup_1m (device TEXT NOT NULL, channel TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, vmin REAL NOT NULL, vmax REAL NOT NULL, vsum REAL NOT NULL,
    PRIMARY KEY (device, channel, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY, received INTEGER NOT NULL, topic TEXT NOT NULL,
    device TEXT, tenant TEXT, code TEXT NOT NULL, detail TEXT NOT NULL, size INTEGER NOT NULL, raw BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device, id);
CREATE TABLE IF NOT EXISTS device_events (id INTEGER PRIMARY KEY, device TEXT NOT NULL, tenant TEXT NOT NULL,
    ts INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,
    received INTEGER NOT NULL, UNIQUE (device, kind, ts, message));
CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, asset TEXT NOT NULL,
    device TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL,
    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, count INTEGER NOT NULL, score REAL NOT NULL,
    message TEXT NOT NULL, explanation TEXT NOT NULL, detector TEXT NOT NULL, acknowledged_by TEXT,
    acknowledged_at INTEGER, resolved_by TEXT, resolved_at INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (asset, kind) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (last_seen);
CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, line TEXT NOT NULL,
    profile TEXT NOT NULL, claim_hash TEXT NOT NULL, expires_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL, asset TEXT, serials TEXT, max_devices INTEGER);
CREATE TABLE IF NOT EXISTS provisioned (enrollment TEXT NOT NULL, serial TEXT NOT NULL, device TEXT NOT NULL,
    at_ms INTEGER NOT NULL, PRIMARY KEY (enrollment, serial));
CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, role TEXT NOT NULL, tenant TEXT,
    password_hash TEXT NOT NULL, created_ms INTEGER NOT NULL, disabled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
    role TEXT NOT NULL, tenant TEXT, created_ms INTEGER NOT NULL, expires_ms INTEGER, secret_hash TEXT NOT NULL,
    revoked_ms INTEGER);
CREATE INDEX IF NOT EXISTS credentials_subject ON credentials (kind, subject, created_ms);
CREATE INDEX IF NOT EXISTS credentials_expiry ON credentials (kind, expires_ms);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, heartbeat TEXT NOT NULL,
    ts INTEGER NOT NULL, received INTEGER NOT NULL, dropped INTEGER NOT NULL, dropped_at INTEGER, status TEXT,
    status_ms INTEGER);
CREATE INDEX IF NOT EXISTS gateways_tenant ON gateways (tenant, id);
CREATE TABLE IF NOT EXISTS gateway_devices (gateway TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (gateway, device));
CREATE INDEX IF NOT EXISTS gateway_devices_device ON gateway_devices (device);
CREATE TABLE IF NOT EXISTS gateway_configs (gateway TEXT NOT NULL, tenant TEXT NOT NULL, version INTEGER NOT NULL,
    config TEXT NOT NULL, created_ms INTEGER NOT NULL, created_by TEXT NOT NULL, status TEXT NOT NULL,
    status_ms INTEGER, error TEXT NOT NULL, PRIMARY KEY (gateway, version));
"""

SCHEMA = SCHEMA + al.DDL.format(**al.SQLITE_TYPES)
SCHEMA_VERSION = "3"  # 2: incidents, suppressions, silences, maintenance, rule sets; alerts gain incident columns
# 3: incident timeline entries carry the time they were recorded (recorded_at) beside their data time (ts)
# A gateway's heartbeat replaces the stored one unless it is older (a redelivery); the retained status is kept
# when the heartbeat does not carry one; ``dropped_at`` moves when the agent reports more drops than before.
HEARTBEAT_UPSERT = (
    "INSERT INTO gateways (id, tenant, heartbeat, ts, received, dropped, dropped_at, status, status_ms) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET tenant=excluded.tenant, heartbeat=excluded.heartbeat, "
    "ts=excluded.ts, received=excluded.received, dropped=excluded.dropped, "
    "dropped_at=CASE WHEN excluded.dropped > gateways.dropped THEN excluded.received ELSE gateways.dropped_at END, "
    "status=coalesce(excluded.status, gateways.status), status_ms=coalesce(excluded.status_ms, gateways.status_ms) "
    "WHERE excluded.ts >= gateways.ts RETURNING id"
)
_ROWS_PER_INSERT = 100  # 8 parameters each, well under SQLite's variable limit
#: What SQLite (or the sqlite3 module, binding a parameter) refuses as data: a violated constraint, a lone
#: surrogate (not encodable as UTF-8), an integer beyond 64 bits. The same data can never be stored.
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, UnicodeError, OverflowError)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error: a refused row must not leave a transaction open (every later
    BEGIN would fail)."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SQLiteStore(Store):
    backend = "sqlite"

    def __init__(self, *, path: Path | str, synchronous: Literal["OFF", "NORMAL", "FULL"] = "FULL",
                 recover_corrupt: bool = False) -> None:
        self.path = str(path)
        self.recover_corrupt = recover_corrupt
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise StoreError("SQLite store is not open")
        db = self._db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)
        except _REFUSED as exc:  # this data can never be stored; the store itself is fine
            raise StoreRejected(f"SQLite ({self.path}) refused the data: {type(exc).__name__}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite ({self.path}): {exc}") from exc

    async def open(self) -> None:
        """Open the database; a missing file is created (atomically, 0600), a corrupt one moved aside with a
        loud message, an empty or foreign one refused (see ``sqlite_files.prepare_database``)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def build(path: str, *, existing: bool) -> sqlite3.Connection:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                if existing and db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
                    raise StoreError(f"{path} is a SQLite database without EdgeLoop's tables: refusing to start a new "
                                     "platform in it; give an EdgeLoop database, or a path where none exists yet")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self.synchronous}")
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(SCHEMA)
                have = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
                for name, kind in al.ALERT_V2_COLUMNS:  # version 1 -> 2 (and a fresh database)
                    if name not in have:
                        db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind.format(**al.SQLITE_TYPES)}")
                for table, name, kind in al.V3_COLUMNS:  # version 2 -> 3
                    if name not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind.format(**al.SQLITE_TYPES)}")
                found = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if found is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                elif found[0] in ("1", "2"):
                    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,))
                elif found[0] != SCHEMA_VERSION:
                    raise StoreError(f"{path} has schema version {found[0]}, this EdgeLoop needs {SCHEMA_VERSION}")
            except BaseException:
                db.close()
                raise
            return db

        def connect() -> sqlite3.Connection:
            if self.path == ":memory:":
                return build(self.path, existing=False)
            prepare_database(Path(self.path), lambda fresh: build(str(fresh), existing=False).close(),
                             recover_corrupt=self.recover_corrupt)
            return build(self.path, existing=True)

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except (sqlite3.Error, OSError, StoreError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None and self._executor is not None:
            db = self._db
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._db = None
        self._executor = None

    async def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(sql, params)

        await self._run(run)

    # -- registry -------------------------------------------------------------------------------
    async def put_tenant(self, tenant: Tenant) -> None:
        await self._exec("INSERT INTO tenants VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET name=excluded.name",
                         (tenant.id, tenant.name))

    async def put_site(self, site: Site) -> None:
        await self._exec(
            "INSERT INTO sites VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET tenant=excluded.tenant, "
            "name=excluded.name",
            (site.id, site.tenant, site.name))

    async def put_line(self, line: Line) -> None:
        await self._exec(
            "INSERT INTO lines VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET site=excluded.site, name=excluded.name",
            (line.id, line.site, line.name))

    async def put_asset(self, asset: Asset) -> None:
        await self._exec(
            "INSERT INTO assets VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET line=excluded.line, "
            "name=excluded.name, kind=excluded.kind, criticality=excluded.criticality",
            (asset.id, asset.line, asset.name, asset.kind, asset.criticality))

    async def put_profile(self, profile: DeviceProfile) -> None:
        await self._exec("INSERT INTO profiles VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET body=excluded.body",
                         (profile.name, msgspec.json.encode(profile)))

    async def put_device(self, device: Device) -> None:
        await self._exec(
            "INSERT INTO devices VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET tenant=excluded.tenant, "
            "asset=excluded.asset, profile=excluded.profile, name=excluded.name",
            (device.id, device.tenant, device.asset, device.profile, device.name))

    async def load_registry(self) -> Registry:
        def load(db: sqlite3.Connection) -> Registry:
            reg = Registry()
            for r in db.execute("SELECT id, name FROM tenants"):
                reg.tenants[r[0]] = Tenant(id=r[0], name=r[1])
            for r in db.execute("SELECT id, tenant, name FROM sites"):
                reg.sites[r[0]] = Site(id=r[0], tenant=r[1], name=r[2])
            for r in db.execute("SELECT id, site, name FROM lines"):
                reg.lines[r[0]] = Line(id=r[0], site=r[1], name=r[2])
            for r in db.execute("SELECT id, line, name, kind, criticality FROM assets"):
                reg.assets[r[0]] = Asset(id=r[0], line=r[1], name=r[2], kind=r[3], criticality=r[4])
            for r in db.execute("SELECT name, body FROM profiles"):
                reg.profiles[r[0]] = msgspec.json.decode(r[1], type=DeviceProfile)
            for r in db.execute("SELECT id, tenant, asset, profile, name FROM devices"):
                reg.devices[r[0]] = Device(id=r[0], tenant=r[1], asset=r[2], profile=r[3], name=r[4])
            return reg

        return await self._run(load)

    # -- telemetry ------------------------------------------------------------------------------
    async def write_chunks(self, chunks: Sequence[TelemetryChunk]) -> list[bool]:
        if not chunks:
            return []

        def write(db: sqlite3.Connection) -> list[bool]:
            inserted: set[tuple[str, int]] = set()
            db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(chunks), _ROWS_PER_INSERT):
                    part = chunks[i : i + _ROWS_PER_INSERT]
                    sql = (
                        "INSERT INTO chunks (device, seq, t0, t1, n, channels, data, received) VALUES "
                        + ",".join(["(?,?,?,?,?,?,?,?)"] * len(part))
                        + " ON CONFLICT(device, seq) DO NOTHING RETURNING device, seq"
                    )
                    params: list[Any] = []
                    for c in part:
                        params += (c.device, c.seq, c.t0, c.t1, len(c.ts), ",".join(c.channels), c.encode(),
                                   c.received_ms)
                    inserted.update(db.execute(sql, params).fetchall())
                new = first_occurrences(chunks, inserted)
                db.executemany(
                    "INSERT INTO rollup_1m VALUES (?,?,?,?,?,?,?) ON CONFLICT(device, channel, bucket) DO UPDATE SET "
                    "n=n+excluded.n, vmin=min(vmin, excluded.vmin), vmax=max(vmax, excluded.vmax), "
                    "vsum=vsum+excluded.vsum",
                    rollup_rows(c for c, ok in zip(chunks, new, strict=True) if ok),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return new

        return await self._run(write)

    async def read_chunks(self, device: str, start: int, end: int) -> list[TelemetryChunk]:
        def read(db: sqlite3.Connection) -> list[TelemetryChunk]:
            rows = db.execute(
                "SELECT seq, channels, n, data FROM chunks WHERE device=? AND t0 < ? AND t1 >= ? ORDER BY t0",
                (device, end, start),
            ).fetchall()
            return [TelemetryChunk.decode(device, r[0], r[1], r[2], r[3]) for r in rows]

        return await self._run(read)

    async def read_rollups(
        self, device: str, channels: Sequence[str], start: int, end: int, bucket_ms: int
    ) -> list[tuple[str, int, int, float, float, float]]:
        def read(db: sqlite3.Connection) -> list[tuple[str, int, int, float, float, float]]:
            marks = ",".join("?" * len(channels))
            return db.execute(
                f"SELECT channel, (bucket - ?) / ? AS b, sum(n), min(vmin), max(vmax), sum(vsum) FROM rollup_1m "
                f"WHERE device=? AND channel IN ({marks}) AND bucket >= ? AND bucket < ? "
                "GROUP BY channel, b ORDER BY channel, b",
                (start, bucket_ms, device, *channels, start - (start % 60_000), end),
            ).fetchall()

        return await self._run(read)

    async def telemetry_counts(self, device: str | None = None) -> tuple[int, int]:
        def count(db: sqlite3.Connection) -> tuple[int, int]:
            if device is None:
                row = db.execute("SELECT count(*), coalesce(sum(n), 0) FROM chunks").fetchone()
            else:
                row = db.execute("SELECT count(*), coalesce(sum(n), 0) FROM chunks WHERE device=?",
                                 (device,)).fetchone()
            return int(row[0]), int(row[1])

        return await self._run(count)

    async def latest_sample_ms(self) -> dict[str, int]:
        def latest(db: sqlite3.Connection) -> dict[str, int]:
            return {r[0]: int(r[1]) for r in db.execute(LATEST_SAMPLE_SQL) if r[1] is not None}

        return await self._run(latest)

    async def first_sample_ms(self) -> dict[str, int]:
        def first(db: sqlite3.Connection) -> dict[str, int]:
            return {r[0]: int(r[1]) for r in db.execute(FIRST_SAMPLE_SQL) if r[1] is not None}

        return await self._run(first)

    # -- dead letters ---------------------------------------------------------------------------
    async def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return

        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    "INSERT INTO dead_letters (received, topic, device, tenant, code, detail, size, raw) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    [(d.received_ms, d.topic, d.device, d.tenant, d.code, d.detail, d.size, d.raw) for d in letters],
                )

        await self._run(write)

    async def list_dead_letters(
        self, device: str | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[DeadLetter]:
        def read(db: sqlite3.Connection) -> list[DeadLetter]:
            sql = "SELECT id, received, topic, device, tenant, code, detail, size, raw FROM dead_letters"
            where, params = [], []
            for col, val in (("device", device), ("tenant", tenant)):
                if val is not None:
                    where.append(f"{col}=?")
                    params.append(val)
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
            return [DeadLetter(id=r[0], received_ms=r[1], topic=r[2], device=r[3], tenant=r[4], code=r[5],
                               detail=r[6], size=r[7], raw=bytes(r[8])) for r in rows]

        return await self._run(read)

    async def write_events(self, events: Sequence[StoredEvent]) -> int:
        if not events:
            return 0

        def write(db: sqlite3.Connection) -> int:
            with _transaction(db):
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO device_events (device, tenant, ts, kind, severity, message, data, received) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    [(e.device, e.tenant, e.ts_ms, e.kind, e.severity, e.message, json.dumps(e.data), e.received_ms)
                     for e in events])
                return db.total_changes - before

        return await self._run(write)

    async def list_events(self, *, device: str | None = None, kind: str | None = None, limit: int = 100,
                          tenant: str | None = None) -> list[StoredEvent]:
        def read(db: sqlite3.Connection) -> list[StoredEvent]:
            where, params = [], []
            for col, val in (("device", device), ("kind", kind), ("tenant", tenant)):
                if val is not None:
                    where.append(f"{col}=?")
                    params.append(val)
            sql = "SELECT id, device, tenant, ts, kind, severity, message, data, received FROM device_events"
            if where:
                sql += " WHERE " + " AND ".join(where)
            rows = db.execute(sql + " ORDER BY ts DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
            return [StoredEvent(id=r[0], device=r[1], tenant=r[2], ts_ms=r[3], kind=r[4], severity=r[5],
                                message=r[6], data=json.loads(r[7]), received_ms=r[8]) for r in rows]

        return await self._run(read)

    async def dead_letter_counts(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute("SELECT coalesce(device, ''), count(*) FROM dead_letters GROUP BY 1")
            return {r[0]: int(r[1]) for r in rows}

        return await self._run(count)

    # -- gateways -------------------------------------------------------------------------------
    async def write_heartbeats(self, beats: Sequence[GatewayHeartbeat]) -> None:
        if not beats:
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for b in beats:
                    applied = db.execute(HEARTBEAT_UPSERT, (
                        b.gateway, b.tenant, b.heartbeat, b.ts_ms, b.received_ms, b.dropped_samples,
                        b.received_ms if b.dropped_samples > 0 else None, b.status,
                        b.status_ms if b.status is not None else None)).fetchone()
                    if applied is None:  # an older heartbeat than the stored one (a redelivery): ignored
                        continue
                    db.execute("DELETE FROM gateway_devices WHERE gateway=?", (b.gateway,))
                    db.executemany("INSERT OR IGNORE INTO gateway_devices VALUES (?, ?)",
                                   [(b.gateway, d) for d in b.devices])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(write)

    async def write_gateway_status(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        if not updates:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE gateways SET status=?, status_ms=? WHERE id=?",
                           [("online" if online else "offline", at, gw) for gw, online, at in updates])

        await self._run(write)

    async def list_gateways(self, *, tenant: str | None = None) -> list[GatewayRecord]:
        def read(db: sqlite3.Connection) -> list[GatewayRecord]:
            sql = f"SELECT {GATEWAY_COLUMNS} FROM gateways"
            rows = (db.execute(sql + " WHERE tenant=? ORDER BY id", (tenant,)) if tenant is not None
                    else db.execute(sql + " ORDER BY id")).fetchall()
            devices: dict[str, list[str]] = {}
            for gw, dev in db.execute("SELECT gateway, device FROM gateway_devices ORDER BY gateway, device"):
                devices.setdefault(gw, []).append(dev)
            return [gateway_from_row(r, devices.get(r[0], [])) for r in rows]

        return await self._run(read)

    async def get_gateway(self, gateway: str) -> GatewayRecord | None:
        def read(db: sqlite3.Connection) -> GatewayRecord | None:
            row = db.execute(f"SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id=?", (gateway,)).fetchone()
            if row is None:
                return None
            devices = [r[0] for r in db.execute("SELECT device FROM gateway_devices WHERE gateway=? ORDER BY device",
                                                (gateway,))]
            return gateway_from_row(row, devices)

        return await self._run(read)

    async def gateway_of(self, device: str) -> list[str]:
        def read(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT gateway FROM gateway_devices WHERE device=? ORDER BY gateway",
                                             (device,))]

        return await self._run(read)

    async def add_gateway_config(self, *, gateway: str, tenant: str, config: str, created_ms: int,
                                 created_by: str, after: int = 0) -> GatewayConfig:
        def insert(db: sqlite3.Connection) -> GatewayConfig:
            row = db.execute(
                "INSERT INTO gateway_configs (gateway, tenant, version, config, created_ms, created_by, status, error) "
                "SELECT ?, ?, max(coalesce(max(version), 0), ?) + 1, ?, ?, ?, 'pending', '' FROM gateway_configs "
                f"WHERE gateway=? RETURNING {GATEWAY_CONFIG_COLUMNS.format(text='config')}",
                (gateway, tenant, after, config, created_ms, created_by, gateway)).fetchone()
            return gateway_config_from_row(row)

        return await self._run(insert)

    async def list_gateway_configs(self, gateway: str, *, with_text: bool = False) -> list[GatewayConfig]:
        cols = GATEWAY_CONFIG_COLUMNS.format(text="config" if with_text else "''")

        def read(db: sqlite3.Connection) -> list[GatewayConfig]:
            return [gateway_config_from_row(r) for r in db.execute(
                f"SELECT {cols} FROM gateway_configs WHERE gateway=? ORDER BY version DESC", (gateway,))]

        return await self._run(read)

    async def get_gateway_config(self, gateway: str, version: int) -> GatewayConfig | None:
        def read(db: sqlite3.Connection) -> GatewayConfig | None:
            row = db.execute(f"SELECT {GATEWAY_CONFIG_COLUMNS.format(text='config')} FROM gateway_configs "
                             "WHERE gateway=? AND version=?", (gateway, version)).fetchone()
            return gateway_config_from_row(row) if row else None

        return await self._run(read)

    async def latest_gateway_configs(self, *, tenant: str | None = None) -> dict[str, GatewayConfig]:
        def read(db: sqlite3.Connection) -> dict[str, GatewayConfig]:
            rows = (db.execute(LATEST_GATEWAY_CONFIGS_SQL + " AND tenant=?", (tenant,)) if tenant is not None
                    else db.execute(LATEST_GATEWAY_CONFIGS_SQL))
            return {r[0]: gateway_config_from_row(r) for r in rows}

        return await self._run(read)

    async def set_gateway_config_status(self, gateway: str, version: int, status: str, error: str,
                                        at_ms: int) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE gateway_configs SET status=?, error=?, status_ms=? WHERE gateway=? AND version=?",
                             (status, error[:1000], at_ms, gateway, version))
            return cur.rowcount == 1

        return await self._run(update)

    # -- provisioning and audit -----------------------------------------------------------------
    async def put_enrollment(self, enrollment: Enrollment) -> None:
        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute("INSERT INTO enrollments VALUES (?,?,?,?,?,?,?,?,?,?,?)", enrollment_params(enrollment))
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"enrollment {enrollment.id!r} already exists") from exc

        await self._run(insert)

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        def read(db: sqlite3.Connection) -> Enrollment | None:
            row = db.execute(f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id=?", (enrollment_id,)).fetchone()
            return enrollment_from_row(row) if row else None

        return await self._run(read)

    async def claim_serial(self, enrollment_id: str, serial: str, device: str, at_ms: int) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            cur = db.execute("INSERT INTO provisioned VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                             (enrollment_id, serial, device, at_ms))
            return cur.rowcount == 1

        return await self._run(insert)

    async def provisioned_count(self, enrollment_id: str) -> int:
        def count(db: sqlite3.Connection) -> int:
            return int(db.execute("SELECT count(*) FROM provisioned WHERE enrollment=?",
                                  (enrollment_id,)).fetchone()[0])

        return await self._run(count)

    async def audit(self, record: AuditRecord) -> None:
        await self._exec("INSERT INTO audit (ts_ms, actor, action, target, outcome, detail, source) "
                         "VALUES (?,?,?,?,?,?,?)", audit_params(record))

    async def put_user(self, user: User) -> None:
        await self._exec("INSERT INTO users VALUES (?,?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET "
                         "role=excluded.role, tenant=excluded.tenant, password_hash=excluded.password_hash, "
                         "disabled=excluded.disabled", user_params(user))

    async def get_user(self, username: str) -> User | None:
        def read(db: sqlite3.Connection) -> User | None:
            row = db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE username=?", (username,)).fetchone()
            return user_from_row(row) if row else None

        return await self._run(read)

    async def list_users(self) -> list[User]:
        def read(db: sqlite3.Connection) -> list[User]:
            return [user_from_row(r) for r in db.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY username")]

        return await self._run(read)

    async def put_credential(self, credential: Credential) -> None:
        await self._exec("INSERT INTO credentials VALUES (?,?,?,?,?,?,?,?,?)", credential_params(credential))

    async def get_credential(self, credential_id: str) -> Credential | None:
        def read(db: sqlite3.Connection) -> Credential | None:
            row = db.execute(f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id=?", (credential_id,)).fetchone()
            return credential_from_row(row) if row else None

        return await self._run(read)

    async def revoke_credential(self, credential_id: str, at_ms: int) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE credentials SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL",
                             (at_ms, credential_id))
            return cur.rowcount == 1

        return await self._run(update)

    async def delete_user(self, username: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM users WHERE username=?", (username,)).rowcount == 1

        return await self._run(delete)

    async def revoke_tokens(self, username: str, at_ms: int) -> int:
        def update(db: sqlite3.Connection) -> int:
            return int(db.execute("UPDATE credentials SET revoked_ms=? WHERE kind='token' AND subject=? AND "
                                  "revoked_ms IS NULL", (at_ms, username)).rowcount)

        return await self._run(update)

    async def delete_expired_tokens(self, now_ms: int, *, limit: int) -> int:
        def delete(db: sqlite3.Connection) -> int:
            return int(db.execute(EXPIRED_TOKENS_DELETE, (now_ms, limit)).rowcount)

        return await self._run(delete)

    async def trim_tokens(self, username: str, *, keep: int) -> int:
        def delete(db: sqlite3.Connection) -> int:
            return int(db.execute(TOKENS_TRIM, (username, username, keep)).rowcount)

        return await self._run(delete)

    async def list_audit(self, *, limit: int = 200, action: str | None = None) -> list[AuditRecord]:
        def read(db: sqlite3.Connection) -> list[AuditRecord]:
            sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
            params: tuple[Any, ...] = (limit,)
            if action is not None:
                sql += " WHERE action=?"
                params = (action, limit)
            return [audit_from_row(r) for r in db.execute(sql + " ORDER BY id DESC LIMIT ?", params)]

        return await self._run(read)

    # -- alerts ---------------------------------------------------------------------------------
    async def raise_alert(self, alert: Alert) -> Alert:
        block = al.id_block_sql("alerts")

        def upsert(db: sqlite3.Connection) -> Alert:
            db.execute("BEGIN IMMEDIATE")
            try:
                new_id = int(db.execute(block, (1, 1, 1, 1)).fetchone()[0]) - 1
                alert_row = insert(db, new_id)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return alert_row

        def insert(db: sqlite3.Connection, new_id: int) -> Alert:
            row = db.execute(
                f"INSERT INTO alerts ({','.join(ALERT_COLUMNS)}) VALUES ({','.join('?' * len(ALERT_COLUMNS))}) "
                "ON CONFLICT(asset, kind) WHERE status <> 'resolved' DO UPDATE SET "
                "count=count+excluded.count, last_seen=max(last_seen, excluded.last_seen), "
                "first_seen=min(first_seen, excluded.first_seen), score=max(score, excluded.score), "
                "severity=CASE WHEN excluded.severity='critical' THEN 'critical' ELSE severity END "
                f"RETURNING {','.join(ALERT_COLUMNS)}",
                (new_id, *alert_params(alert)),
            ).fetchone()
            return alert_from_row(row)

        return await self._run(upsert)

    async def list_alerts(
        self, *, status: AlertStatus | None = None, asset: str | None = None, tenant: str | None = None,
        limit: int = 200, incident: int | None = None, unresolved: bool = False, since_ms: int | None = None,
    ) -> list[Alert]:
        sql, params = alert_query(status=status, asset=asset, tenant=tenant, limit=limit, incident=incident,
                                  unresolved=unresolved, since_ms=since_ms)

        def read(db: sqlite3.Connection) -> list[Alert]:
            return [alert_from_row(r) for r in db.execute(sql, params)]

        return await self._run(read)

    async def get_alert(self, alert_id: int) -> Alert:
        def read(db: sqlite3.Connection) -> Alert:
            row = db.execute(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts WHERE id=?", (alert_id,)).fetchone()
            if row is None:
                raise NotFoundError("alert", alert_id)
            return alert_from_row(row)

        return await self._run(read)

    async def set_alert_status(self, alert_id: int, status: AlertStatus, *, by: str, at_ms: int) -> Alert:
        who, when = ("acknowledged_by", "acknowledged_at") if status == AlertStatus.ACKNOWLEDGED else (
            "resolved_by", "resolved_at")

        def update(db: sqlite3.Connection) -> Alert:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT status FROM alerts WHERE id=?", (alert_id,)).fetchone()
                if row is None:
                    raise NotFoundError("alert", alert_id)
                current = AlertStatus(row[0])
                if status not in ALERT_TRANSITIONS[current]:
                    raise ConflictError(f"alert {alert_id} is {current.value}; it cannot become {status.value}")
                out = db.execute(
                    f"UPDATE alerts SET status=?, {who}=?, {when}=? WHERE id=? RETURNING {','.join(ALERT_COLUMNS)}",
                    (status.value, by, at_ms, alert_id),
                ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return alert_from_row(out)

        return await self._run(update)


    # -- incidents ------------------------------------------------------------------------------
    async def reserve_ids(self, name: str, n: int) -> range:
        sql = al.id_block_sql(name)

        def run(db: sqlite3.Connection) -> range:
            end = int(db.execute(sql, (n, n, n, n)).fetchone()[0])
            return range(end - n, end)

        return await self._run(run)

    async def write_alert_changes(self, changes: al.AlertChanges) -> dict[int, int]:
        def write(db: sqlite3.Connection) -> dict[int, int]:
            remap: dict[int, int] = {}
            db.execute("BEGIN IMMEDIATE")
            try:
                existing, new = al.updates_around_opens(changes)
                db.executemany(al.ALERT_UPDATE_SQL, [al.alert_update_params(a) for a in existing])
                for a in sorted(changes.opened, key=lambda o: o.id):
                    got = int(db.execute(al.ALERT_OPEN_SQL, al.alert_open_params(a)).fetchone()[0])
                    if got != a.id:
                        remap[a.id] = got
                    if a.id in new:
                        db.execute(al.ALERT_UPDATE_SQL, al.alert_update_params(al.remapped(new[a.id], remap)))
                db.executemany(al.INCIDENT_UPSERT_SQL, [al.incident_params(r) for r in changes.incidents])
                db.executemany(al.TIMELINE_INSERT_SQL, [al.timeline_params(e) for e in changes.timeline])
                db.executemany(al.SUPPRESSION_INSERT_SQL, [al.suppression_params(x) for x in changes.suppressions])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return remap

        return await self._run(write)

    async def list_incidents(self, *, statuses: Sequence[str] | None = None, tenant: str | None = None,
                             asset: str | None = None, limit: int = 200,
                             opened_from: int | None = None) -> list[al.IncidentRecord]:
        sql, params = al.incident_query(statuses=statuses, tenant=tenant, asset=asset, limit=limit,
                                        opened_from=opened_from)
        return await self._run(lambda db: [al.incident_from_row(r) for r in db.execute(sql, params)])

    async def get_incident(self, incident_id: int) -> al.IncidentRecord:
        def read(db: sqlite3.Connection) -> al.IncidentRecord:
            row = db.execute(f"SELECT {al.INCIDENT_COLUMNS} FROM incidents WHERE id=?", (incident_id,)).fetchone()
            if row is None:
                raise NotFoundError("incident", incident_id)
            return al.incident_from_row(row)

        return await self._run(read)

    async def incident_timeline(self, incident_id: int) -> list[al.TimelineEntry]:
        return await self._run(lambda db: [al.timeline_from_row(r)
                                           for r in db.execute(al.TIMELINE_SELECT_SQL, (incident_id,))])

    async def list_suppressions(self, *, asset: str | None = None, rule: str | None = None,
                                since_ms: int | None = None, until_ms: int | None = None,
                                tenant: str | None = None, reason: str | None = None,
                                limit: int = 200) -> list[al.SuppressionRecord]:
        sql, params = al.suppression_query(asset=asset, rule=rule, since_ms=since_ms, until_ms=until_ms,
                                           tenant=tenant, reason=reason, limit=limit)
        return await self._run(lambda db: [al.suppression_from_row(r) for r in db.execute(sql, params)])

    async def _insert_unique(self, sql: str, params: Sequence[Any], what: str, ident: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            try:
                db.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"{what} {ident!r} already exists") from exc

        await self._run(run)

    async def put_maintenance(self, window: al.MaintenanceRecord) -> None:
        await self._insert_unique(al.MAINTENANCE_INSERT_SQL, al.maintenance_params(window), "maintenance window",
                                  window.id)

    async def list_maintenance(self, *, tenant: str | None = None, ending_after: int | None = None
                               ) -> list[al.MaintenanceRecord]:
        sql, params = al.window_query(al.MAINTENANCE_SELECT, tenant, "end_ms", ending_after, "start_ms")
        return await self._run(lambda db: [al.maintenance_from_row(r) for r in db.execute(sql, params)])

    async def put_silence(self, silence: al.SilenceRecord) -> None:
        await self._insert_unique(al.SILENCE_INSERT_SQL, al.silence_params(silence), "silence", silence.id)

    async def end_silence(self, silence_id: str, at_ms: int) -> al.SilenceRecord:
        def run(db: sqlite3.Connection) -> al.SilenceRecord:
            row = db.execute(al.SILENCE_END_SQL, al.silence_end_params(silence_id, at_ms)).fetchone()
            if row is None:
                raise NotFoundError("running silence", silence_id)
            return al.silence_from_row(row)

        return await self._run(run)

    async def list_silences(self, *, tenant: str | None = None, active_at: int | None = None
                            ) -> list[al.SilenceRecord]:
        sql, params = al.silence_query(tenant, active_at)
        return await self._run(lambda db: [al.silence_from_row(r) for r in db.execute(sql, params)])

    async def put_rules(self, text: str, *, by: str, at_ms: int, tenant: str | None = None) -> int:
        sql, params = al.rules_insert(text, by, at_ms, tenant)
        return await self._run(lambda db: int(db.execute(sql, params).fetchone()[0]))

    async def latest_rules(self) -> al.RuleSetRecord | None:
        def read(db: sqlite3.Connection) -> al.RuleSetRecord | None:
            row = db.execute(al.RULES_LATEST_SQL).fetchone()
            return None if row is None else al.rules_from_row(row)

        return await self._run(read)

    async def tenant_rules(self) -> list[al.RuleSetRecord]:
        return await self._run(lambda db: [al.rules_from_row(r) for r in db.execute(al.TENANT_RULES_LATEST_SQL)])

    async def put_labels(self, labels: Sequence[Label]) -> None:
        rows = [al.label_params(x) for x in labels]
        await self._run(lambda db: db.executemany(al.LABEL_INSERT_SQL, rows))

    async def list_labels(self, *, tenant: str | None = None, asset: str | None = None, alert: int | None = None,
                          since_ms: int | None = None, limit: int = 1_000_000) -> list[Label]:
        sql, params = al.label_query(tenant=tenant, asset=asset, alert=alert, since_ms=since_ms, limit=limit)
        return await self._run(lambda db: [al.label_from_row(r) for r in db.execute(sql, params)])

    async def put_override(self, override: al.OverrideRecord) -> None:
        await self._exec(al.OVERRIDE_UPSERT_SQL, al.override_params(override))

    async def list_overrides(self) -> list[al.OverrideRecord]:
        return await self._run(lambda db: [al.override_from_row(r) for r in db.execute(al.OVERRIDE_SELECT_SQL)])

    async def put_undelivered(self, records: Sequence[al.UndeliveredRecord]) -> None:
        rows = [al.undelivered_params(u) for u in records]
        await self._run(lambda db: db.executemany(al.UNDELIVERED_INSERT_SQL, rows))

    async def list_undelivered(self, *, tenant: str | None = None, limit: int = 200) -> list[al.UndeliveredRecord]:
        sql, params = al.undelivered_query(tenant, limit)
        return await self._run(lambda db: [al.undelivered_from_row(r) for r in db.execute(sql, params)])

    async def put_work_order(self, order: al.WorkOrderRecord) -> None:
        await self._insert_unique(al.WORK_ORDER_INSERT_SQL, al.work_order_params(order), "work order", order.id)

    async def close_work_order(self, order_id: str, *, at_ms: int, downtime_end: int | None,
                               by: str) -> al.WorkOrderRecord:
        def run(db: sqlite3.Connection) -> al.WorkOrderRecord:
            row = db.execute(al.WORK_ORDER_CLOSE_SQL, (at_ms, downtime_end, by, order_id)).fetchone()
            if row is None:
                raise NotFoundError("open work order", order_id)
            return al.work_order_from_row(row)

        return await self._run(run)

    async def list_work_orders(self, *, tenant: str | None = None, since_ms: int | None = None,
                               limit: int = 100_000) -> list[al.WorkOrderRecord]:
        sql, params = al.work_order_query(tenant, since_ms, limit)
        return await self._run(lambda db: [al.work_order_from_row(r) for r in db.execute(sql, params)])
