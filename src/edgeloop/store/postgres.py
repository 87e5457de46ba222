"""PostgreSQL storage (production): asyncpg pool, batched ``unnest`` inserts, same contract as SQLite.

A whole ingest batch is one statement per table inside one transaction:
``INSERT ... SELECT FROM unnest($1::text[], ...) ON CONFLICT DO NOTHING RETURNING``
tells which (device, seq) were new, and the rollups of exactly those are
merged with ``ON CONFLICT DO UPDATE``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError, StoreError, StoreRejected
from edgeloop.messages import Alert, AlertStatus
from edgeloop.store import alerting as al

if TYPE_CHECKING:
    from edgeloop.store.alerting import Label
from edgeloop.registry import Registry
from edgeloop.store.alerting import pg
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS sites (id text PRIMARY KEY, tenant text NOT NULL REFERENCES tenants(id), name text NOT NULL);
CREATE TABLE IF NOT EXISTS lines (id text PRIMARY KEY, site text NOT NULL REFERENCES sites(id), name text NOT NULL);
CREATE TABLE IF NOT EXISTS assets (id text PRIMARY KEY, line text NOT NULL REFERENCES lines(id), name text NOT NULL,
    kind text NOT NULL, criticality int NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (name text PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE IF NOT EXISTS devices (id text PRIMARY KEY, tenant text NOT NULL REFERENCES tenants(id),
    asset text NOT NULL REFERENCES assets(id), profile text NOT NULL REFERENCES profiles(name), name text NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (device text NOT NULL, seq bigint NOT NULL, t0 bigint NOT NULL, t1 bigint NOT NULL,
    n int NOT NULL, channels text NOT NULL, data bytea NOT NULL, received bigint NOT NULL,
    PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS chunks_time ON chunks (device, t0);
CREATE TABLE IF NOT EXISTS rollup_1m (device text NOT NULL, channel text NOT NULL, bucket bigint NOT NULL,
    n bigint NOT NULL, vmin double precision NOT NULL, vmax double precision NOT NULL,
    vsum double precision NOT NULL, PRIMARY KEY (device, channel, bucket));
CREATE TABLE IF NOT EXISTS dead_letters (id bigserial PRIMARY KEY, received bigint NOT NULL, topic text NOT NULL,
    device text, tenant text, code text NOT NULL, detail text NOT NULL, size int NOT NULL, raw bytea NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device, id);
CREATE TABLE IF NOT EXISTS device_events (id bigserial PRIMARY KEY, device text NOT NULL, tenant text NOT NULL,
    ts bigint NOT NULL, kind text NOT NULL, severity text NOT NULL, message text NOT NULL, data text NOT NULL,
    received bigint NOT NULL, UNIQUE (device, kind, ts, message));
CREATE TABLE IF NOT EXISTS alerts (id bigserial PRIMARY KEY, tenant text NOT NULL, asset text NOT NULL,
    device text NOT NULL, kind text NOT NULL, severity text NOT NULL, status text NOT NULL,
    first_seen bigint NOT NULL, last_seen bigint NOT NULL, count int NOT NULL, score double precision NOT NULL,
    message text NOT NULL, explanation text NOT NULL, detector text NOT NULL, acknowledged_by text,
    acknowledged_at bigint, resolved_by text, resolved_at bigint);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (asset, kind) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (last_seen);
CREATE TABLE IF NOT EXISTS enrollments (id text PRIMARY KEY, tenant text NOT NULL, line text NOT NULL,
    profile text NOT NULL, claim_hash text NOT NULL, expires_ms bigint NOT NULL, created_ms bigint NOT NULL,
    created_by text NOT NULL, asset text, serials text, max_devices bigint);
CREATE TABLE IF NOT EXISTS provisioned (enrollment text NOT NULL, serial text NOT NULL, device text NOT NULL,
    at_ms bigint NOT NULL, PRIMARY KEY (enrollment, serial));
CREATE TABLE IF NOT EXISTS users (username text PRIMARY KEY, role text NOT NULL, tenant text,
    password_hash text NOT NULL, created_ms bigint NOT NULL, disabled boolean NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (id text PRIMARY KEY, kind text NOT NULL, subject text NOT NULL,
    role text NOT NULL, tenant text, created_ms bigint NOT NULL, expires_ms bigint, secret_hash text NOT NULL,
    revoked_ms bigint);
CREATE INDEX IF NOT EXISTS credentials_subject ON credentials (kind, subject, created_ms);
CREATE INDEX IF NOT EXISTS credentials_expiry ON credentials (kind, expires_ms);
CREATE TABLE IF NOT EXISTS audit (id bigserial PRIMARY KEY, ts_ms bigint NOT NULL, actor text NOT NULL,
    action text NOT NULL, target text NOT NULL, outcome text NOT NULL, detail text NOT NULL, source text NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (id text PRIMARY KEY, tenant text NOT NULL, heartbeat text NOT NULL,
    ts bigint NOT NULL, received bigint NOT NULL, dropped bigint NOT NULL, dropped_at bigint, status text,
    status_ms bigint);
CREATE INDEX IF NOT EXISTS gateways_tenant ON gateways (tenant, id);
CREATE TABLE IF NOT EXISTS gateway_devices (gateway text NOT NULL, device text NOT NULL, PRIMARY KEY (gateway, device));
CREATE INDEX IF NOT EXISTS gateway_devices_device ON gateway_devices (device);
CREATE TABLE IF NOT EXISTS gateway_configs (gateway text NOT NULL, tenant text NOT NULL, version int NOT NULL,
    config text NOT NULL, created_ms bigint NOT NULL, created_by text NOT NULL, status text NOT NULL,
    status_ms bigint, error text NOT NULL, PRIMARY KEY (gateway, version));
"""
SCHEMA = SCHEMA + al.DDL.format(**al.PG_TYPES) + "".join(
    f"ALTER TABLE alerts ADD COLUMN IF NOT EXISTS {name} {kind.format(**al.PG_TYPES)};\n"
    for name, kind in al.ALERT_V2_COLUMNS) + "".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind.format(**al.PG_TYPES)};\n"
    for table, name, kind in al.V3_COLUMNS)
SCHEMA_VERSION = "3"  # 2: incidents, suppressions, silences, maintenance, rule sets; alerts gain incident columns
# 3: incident timeline entries carry the time they were recorded (recorded_at) beside their data time (ts)
# As in SQLite: an older heartbeat (a redelivery) is ignored, a missing status keeps the stored one.
HEARTBEAT_UPSERT = (
    "INSERT INTO gateways (id, tenant, heartbeat, ts, received, dropped, dropped_at, status, status_ms) "
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (id) DO UPDATE SET tenant=excluded.tenant, "
    "heartbeat=excluded.heartbeat, ts=excluded.ts, received=excluded.received, dropped=excluded.dropped, "
    "dropped_at=CASE WHEN excluded.dropped > gateways.dropped THEN excluded.received ELSE gateways.dropped_at END, "
    "status=coalesce(excluded.status, gateways.status), status_ms=coalesce(excluded.status_ms, gateways.status_ms) "
    "WHERE excluded.ts >= gateways.ts RETURNING id"
)
_LOCK_ID = 0x6564676C  # advisory lock so concurrent starters do not race on CREATE TABLE


class PostgresStore(Store):
    backend = "postgres"

    def __init__(self, *, dsn: str, min_connections: int = 1, max_connections: int = 8) -> None:
        self.dsn = dsn
        self._min = min_connections
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("PostgreSQL store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max)
            async with self.pool.acquire() as con, con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                await con.execute(SCHEMA)
                found = await con.fetchval("SELECT value FROM meta WHERE key='schema_version'")
                if found is None:
                    await con.execute("INSERT INTO meta VALUES ('schema_version', $1)", SCHEMA_VERSION)
                elif found in ("1", "2"):  # the ALTERs above added version 2's and 3's columns
                    await con.execute("UPDATE meta SET value=$1 WHERE key='schema_version'", SCHEMA_VERSION)
                elif found != SCHEMA_VERSION:
                    raise StoreError(f"database has schema version {found}, this EdgeLoop needs {SCHEMA_VERSION}")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            # OSError covers TLS failures (ssl.SSLError: untrusted server certificate, wrong host name).
            await self.close()
            raise StoreError(f"cannot open PostgreSQL ({_redact(self.dsn)}): {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def _exec(self, sql: str, *args: Any) -> None:
        with _translated():
            await self.pool.execute(sql, *args)

    # -- registry -------------------------------------------------------------------------------
    async def put_tenant(self, tenant: Tenant) -> None:
        await self._exec("INSERT INTO tenants VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name=excluded.name",
                         tenant.id, tenant.name)

    async def put_site(self, site: Site) -> None:
        await self._exec("INSERT INTO sites VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET "
                         "tenant=excluded.tenant, name=excluded.name", site.id, site.tenant, site.name)

    async def put_line(self, line: Line) -> None:
        await self._exec("INSERT INTO lines VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET "
                         "site=excluded.site, name=excluded.name", line.id, line.site, line.name)

    async def put_asset(self, asset: Asset) -> None:
        await self._exec(
            "INSERT INTO assets VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET line=excluded.line, "
            "name=excluded.name, kind=excluded.kind, criticality=excluded.criticality",
            asset.id, asset.line, asset.name, asset.kind, asset.criticality)

    async def put_profile(self, profile: DeviceProfile) -> None:
        await self._exec("INSERT INTO profiles VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body=excluded.body",
                         profile.name, msgspec.json.encode(profile))

    async def put_device(self, device: Device) -> None:
        await self._exec(
            "INSERT INTO devices VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET tenant=excluded.tenant, "
            "asset=excluded.asset, profile=excluded.profile, name=excluded.name",
            device.id, device.tenant, device.asset, device.profile, device.name)

    async def load_registry(self) -> Registry:
        reg = Registry()
        async with self.pool.acquire() as con:
            for r in await con.fetch("SELECT id, name FROM tenants"):
                reg.tenants[r[0]] = Tenant(id=r[0], name=r[1])
            for r in await con.fetch("SELECT id, tenant, name FROM sites"):
                reg.sites[r[0]] = Site(id=r[0], tenant=r[1], name=r[2])
            for r in await con.fetch("SELECT id, site, name FROM lines"):
                reg.lines[r[0]] = Line(id=r[0], site=r[1], name=r[2])
            for r in await con.fetch("SELECT id, line, name, kind, criticality FROM assets"):
                reg.assets[r[0]] = Asset(id=r[0], line=r[1], name=r[2], kind=r[3], criticality=r[4])
            for r in await con.fetch("SELECT name, body FROM profiles"):
                reg.profiles[r[0]] = msgspec.json.decode(r[1], type=DeviceProfile)
            for r in await con.fetch("SELECT id, tenant, asset, profile, name FROM devices"):
                reg.devices[r[0]] = Device(id=r[0], tenant=r[1], asset=r[2], profile=r[3], name=r[4])
        return reg

    # -- telemetry ------------------------------------------------------------------------------
    async def write_chunks(self, chunks: Sequence[TelemetryChunk]) -> list[bool]:
        if not chunks:
            return []
        with _translated():
            async with self.pool.acquire() as con, con.transaction():
                rows = await con.fetch(
                    "INSERT INTO chunks (device, seq, t0, t1, n, channels, data, received) "
                    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], "
                    "$6::text[], $7::bytea[], $8::bigint[]) ON CONFLICT (device, seq) DO NOTHING RETURNING device, seq",
                    [c.device for c in chunks], [c.seq for c in chunks], [c.t0 for c in chunks],
                    [c.t1 for c in chunks], [len(c.ts) for c in chunks], [",".join(c.channels) for c in chunks],
                    [c.encode() for c in chunks], [c.received_ms for c in chunks],
                )
                new = first_occurrences(chunks, {(r[0], r[1]) for r in rows})
                agg = rollup_rows(c for c, ok in zip(chunks, new, strict=True) if ok)
                if agg:
                    cols = list(zip(*agg, strict=True))
                    await con.execute(
                        "INSERT INTO rollup_1m SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], "
                        "$4::bigint[], $5::float8[], $6::float8[], $7::float8[]) "
                        "ON CONFLICT (device, channel, bucket) DO UPDATE SET n=rollup_1m.n+excluded.n, "
                        "vmin=least(rollup_1m.vmin, excluded.vmin), vmax=greatest(rollup_1m.vmax, excluded.vmax), "
                        "vsum=rollup_1m.vsum+excluded.vsum",
                        *[list(c) for c in cols],
                    )
        return new

    async def read_chunks(self, device: str, start: int, end: int) -> list[TelemetryChunk]:
        rows = await self.pool.fetch(
            "SELECT seq, channels, n, data FROM chunks WHERE device=$1 AND t0 < $2 AND t1 >= $3 ORDER BY t0",
            device, end, start)
        return [TelemetryChunk.decode(device, r[0], r[1], r[2], r[3]) for r in rows]

    async def read_rollups(
        self, device: str, channels: Sequence[str], start: int, end: int, bucket_ms: int
    ) -> list[tuple[str, int, int, float, float, float]]:
        rows = await self.pool.fetch(
            "SELECT channel, (bucket - $1) / $2 AS b, sum(n), min(vmin), max(vmax), sum(vsum) FROM rollup_1m "
            "WHERE device=$3 AND channel = ANY($4::text[]) AND bucket >= $5 AND bucket < $6 "
            "GROUP BY channel, b ORDER BY channel, b",
            start, bucket_ms, device, list(channels), start - (start % 60_000), end)
        return [(r[0], int(r[1]), int(r[2]), r[3], r[4], r[5]) for r in rows]

    async def telemetry_counts(self, device: str | None = None) -> tuple[int, int]:
        if device is None:
            row = await self.pool.fetchrow("SELECT count(*), coalesce(sum(n), 0) FROM chunks")
        else:
            row = await self.pool.fetchrow("SELECT count(*), coalesce(sum(n), 0) FROM chunks WHERE device=$1",
                                           device)
        return int(row[0]), int(row[1])

    async def latest_sample_ms(self) -> dict[str, int]:
        rows = await self.pool.fetch(LATEST_SAMPLE_SQL)
        return {r[0]: int(r[1]) for r in rows if r[1] is not None}

    async def first_sample_ms(self) -> dict[str, int]:
        rows = await self.pool.fetch(FIRST_SAMPLE_SQL)
        return {r[0]: int(r[1]) for r in rows if r[1] is not None}

    # -- dead letters ---------------------------------------------------------------------------
    async def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        await self._exec(
            "INSERT INTO dead_letters (received, topic, device, tenant, code, detail, size, raw) "
            "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
            "$7::int[], $8::bytea[])",
            [d.received_ms for d in letters], [d.topic for d in letters], [d.device for d in letters],
            [d.tenant for d in letters], [d.code for d in letters], [d.detail for d in letters],
            [d.size for d in letters], [d.raw for d in letters])

    async def list_dead_letters(
        self, device: str | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[DeadLetter]:
        sql = "SELECT id, received, topic, device, tenant, code, detail, size, raw FROM dead_letters"
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("device", device), ("tenant", tenant)):
            if val is not None:
                params.append(val)
                where.append(f"{col}=${len(params)}")
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        rows = await self.pool.fetch(sql + f" ORDER BY id DESC LIMIT ${len(params)}", *params)
        return [DeadLetter(id=r[0], received_ms=r[1], topic=r[2], device=r[3], tenant=r[4], code=r[5], detail=r[6],
                           size=r[7], raw=bytes(r[8])) for r in rows]

    async def write_events(self, events: Sequence[StoredEvent]) -> int:
        if not events:
            return 0
        with _translated():
            rows = await self.pool.fetch(
                "INSERT INTO device_events (device, tenant, ts, kind, severity, message, data, received) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], "
                "$7::text[], $8::bigint[]) ON CONFLICT DO NOTHING RETURNING id",
                [e.device for e in events], [e.tenant for e in events], [e.ts_ms for e in events],
                [e.kind for e in events], [e.severity for e in events], [e.message for e in events],
                [json.dumps(e.data) for e in events], [e.received_ms for e in events])
        return len(rows)

    async def list_events(self, *, device: str | None = None, kind: str | None = None, limit: int = 100,
                          tenant: str | None = None) -> list[StoredEvent]:
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("device", device), ("kind", kind), ("tenant", tenant)):
            if val is not None:
                params.append(val)
                where.append(f"{col}=${len(params)}")
        sql = "SELECT id, device, tenant, ts, kind, severity, message, data, received FROM device_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        rows = await self.pool.fetch(sql + f" ORDER BY ts DESC, id DESC LIMIT ${len(params)}", *params)
        return [StoredEvent(id=r[0], device=r[1], tenant=r[2], ts_ms=r[3], kind=r[4], severity=r[5], message=r[6],
                            data=json.loads(r[7]), received_ms=r[8]) for r in rows]

    async def dead_letter_counts(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT coalesce(device, ''), count(*) FROM dead_letters GROUP BY 1")
        return {r[0]: int(r[1]) for r in rows}

    # -- gateways -------------------------------------------------------------------------------
    async def write_heartbeats(self, beats: Sequence[GatewayHeartbeat]) -> None:
        if not beats:
            return
        with _translated():
            async with self.pool.acquire() as con, con.transaction():
                for b in beats:
                    applied = await con.fetchval(
                        HEARTBEAT_UPSERT, b.gateway, b.tenant, b.heartbeat, b.ts_ms, b.received_ms, b.dropped_samples,
                        b.received_ms if b.dropped_samples > 0 else None, b.status,
                        b.status_ms if b.status is not None else None)
                    if applied is None:  # an older heartbeat than the stored one (a redelivery): ignored
                        continue
                    await con.execute("DELETE FROM gateway_devices WHERE gateway=$1", b.gateway)
                    await con.execute("INSERT INTO gateway_devices SELECT $1, d FROM unnest($2::text[]) AS d "
                                      "ON CONFLICT DO NOTHING", b.gateway, list(b.devices))

    async def write_gateway_status(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        if not updates:
            return
        await self._exec(
            "UPDATE gateways g SET status=u.status, status_ms=u.at FROM unnest($1::text[], $2::text[], $3::bigint[]) "
            "AS u(id, status, at) WHERE g.id = u.id",
            [u[0] for u in updates], ["online" if u[1] else "offline" for u in updates], [u[2] for u in updates])

    async def list_gateways(self, *, tenant: str | None = None) -> list[GatewayRecord]:
        sql = f"SELECT {GATEWAY_COLUMNS} FROM gateways"
        async with self.pool.acquire() as con:
            rows = (await con.fetch(sql + " WHERE tenant=$1 ORDER BY id", tenant) if tenant is not None
                    else await con.fetch(sql + " ORDER BY id"))
            devices: dict[str, list[str]] = {}
            for r in await con.fetch("SELECT gateway, device FROM gateway_devices ORDER BY gateway, device"):
                devices.setdefault(r[0], []).append(r[1])
        return [gateway_from_row(tuple(r), devices.get(r[0], [])) for r in rows]

    async def get_gateway(self, gateway: str) -> GatewayRecord | None:
        async with self.pool.acquire() as con:
            row = await con.fetchrow(f"SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id=$1", gateway)
            if row is None:
                return None
            devices = [r[0] for r in await con.fetch(
                "SELECT device FROM gateway_devices WHERE gateway=$1 ORDER BY device", gateway)]
        return gateway_from_row(tuple(row), devices)

    async def gateway_of(self, device: str) -> list[str]:
        rows = await self.pool.fetch("SELECT gateway FROM gateway_devices WHERE device=$1 ORDER BY gateway", device)
        return [r[0] for r in rows]

    async def add_gateway_config(self, *, gateway: str, tenant: str, config: str, created_ms: int,
                                 created_by: str, after: int = 0) -> GatewayConfig:
        async with self.pool.acquire() as con, con.transaction():
            # Two pushes at once must not pick the same version: serialise per gateway.
            await con.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_ID, gateway)
            row = await con.fetchrow(
                "INSERT INTO gateway_configs (gateway, tenant, version, config, created_ms, created_by, status, error) "
                "SELECT $1, $2, greatest(coalesce(max(version), 0), $6) + 1, $3, $4, $5, 'pending', '' "
                f"FROM gateway_configs WHERE gateway=$1 RETURNING {GATEWAY_CONFIG_COLUMNS.format(text='config')}",
                gateway, tenant, config, created_ms, created_by, after)
        return gateway_config_from_row(tuple(row))

    async def list_gateway_configs(self, gateway: str, *, with_text: bool = False) -> list[GatewayConfig]:
        cols = GATEWAY_CONFIG_COLUMNS.format(text="config" if with_text else "''")
        with _translated():
            rows = await self.pool.fetch(
                f"SELECT {cols} FROM gateway_configs WHERE gateway=$1 ORDER BY version DESC", gateway)
        return [gateway_config_from_row(tuple(r)) for r in rows]

    async def get_gateway_config(self, gateway: str, version: int) -> GatewayConfig | None:
        row = await self.pool.fetchrow(f"SELECT {GATEWAY_CONFIG_COLUMNS.format(text='config')} FROM gateway_configs "
                                       "WHERE gateway=$1 AND version=$2", gateway, version)
        return gateway_config_from_row(tuple(row)) if row else None

    async def latest_gateway_configs(self, *, tenant: str | None = None) -> dict[str, GatewayConfig]:
        rows = (await self.pool.fetch(LATEST_GATEWAY_CONFIGS_SQL + " AND tenant=$1", tenant) if tenant is not None
                else await self.pool.fetch(LATEST_GATEWAY_CONFIGS_SQL))
        return {r[0]: gateway_config_from_row(tuple(r)) for r in rows}

    async def set_gateway_config_status(self, gateway: str, version: int, status: str, error: str,
                                        at_ms: int) -> bool:
        with _translated():
            done = await self.pool.fetchval(
                "UPDATE gateway_configs SET status=$1, error=$2, status_ms=$3 WHERE gateway=$4 AND version=$5 "
                "RETURNING 1", status, error[:1000], at_ms, gateway, version)
        return bool(done == 1)

    # -- provisioning and audit -----------------------------------------------------------------
    async def put_enrollment(self, enrollment: Enrollment) -> None:
        try:
            await self.pool.execute("INSERT INTO enrollments VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                                    *enrollment_params(enrollment))
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(f"enrollment {enrollment.id!r} already exists") from exc

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        row = await self.pool.fetchrow(f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id=$1", enrollment_id)
        return enrollment_from_row(tuple(row)) if row else None

    async def claim_serial(self, enrollment_id: str, serial: str, device: str, at_ms: int) -> bool:
        done = await self.pool.fetchval(
            "INSERT INTO provisioned VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING RETURNING 1",
            enrollment_id, serial, device, at_ms)
        return bool(done == 1)

    async def provisioned_count(self, enrollment_id: str) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM provisioned WHERE enrollment=$1", enrollment_id))

    async def audit(self, record: AuditRecord) -> None:
        await self._exec("INSERT INTO audit (ts_ms, actor, action, target, outcome, detail, source) "
                         "VALUES ($1,$2,$3,$4,$5,$6,$7)", *audit_params(record))

    async def put_user(self, user: User) -> None:
        await self._exec("INSERT INTO users VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (username) DO UPDATE SET "
                         "role=excluded.role, tenant=excluded.tenant, password_hash=excluded.password_hash, "
                         "disabled=excluded.disabled", *user_params(user, as_bool=True))

    async def get_user(self, username: str) -> User | None:
        row = await self.pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE username=$1", username)
        return user_from_row(tuple(row)) if row else None

    async def list_users(self) -> list[User]:
        return [user_from_row(tuple(r)) for r in await self.pool.fetch(
            f"SELECT {USER_COLUMNS} FROM users ORDER BY username")]

    async def put_credential(self, credential: Credential) -> None:
        await self._exec("INSERT INTO credentials VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                         *credential_params(credential))

    async def get_credential(self, credential_id: str) -> Credential | None:
        row = await self.pool.fetchrow(f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id=$1", credential_id)
        return credential_from_row(tuple(row)) if row else None

    async def revoke_credential(self, credential_id: str, at_ms: int) -> bool:
        done = await self.pool.fetchval(
            "UPDATE credentials SET revoked_ms=$1 WHERE id=$2 AND revoked_ms IS NULL RETURNING 1", at_ms,
            credential_id)
        return bool(done == 1)

    async def delete_user(self, username: str) -> bool:
        return bool(await self.pool.fetchval("DELETE FROM users WHERE username=$1 RETURNING 1", username) == 1)

    async def revoke_tokens(self, username: str, at_ms: int) -> int:
        status = await self.pool.execute("UPDATE credentials SET revoked_ms=$1 WHERE kind='token' AND subject=$2 "
                                         "AND revoked_ms IS NULL", at_ms, username)
        return int(status.rsplit(" ", 1)[-1])

    async def delete_expired_tokens(self, now_ms: int, *, limit: int) -> int:
        return int((await self.pool.execute(pg(EXPIRED_TOKENS_DELETE), now_ms, limit)).rsplit(" ", 1)[-1])

    async def trim_tokens(self, username: str, *, keep: int) -> int:
        return int((await self.pool.execute(pg(TOKENS_TRIM), username, username, keep)).rsplit(" ", 1)[-1])

    async def list_audit(self, *, limit: int = 200, action: str | None = None) -> list[AuditRecord]:
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit"
        if action is None:
            rows = await self.pool.fetch(sql + " ORDER BY id DESC LIMIT $1", limit)
        else:
            rows = await self.pool.fetch(sql + " WHERE action=$1 ORDER BY id DESC LIMIT $2", action, limit)
        return [audit_from_row(tuple(r)) for r in rows]

    # -- alerts ---------------------------------------------------------------------------------
    async def raise_alert(self, alert: Alert) -> Alert:
        marks = ",".join(f"${i}" for i in range(1, len(ALERT_COLUMNS) + 1))
        async with self.pool.acquire() as con, con.transaction():
            new_id = int(await con.fetchval(pg(al.id_block_sql("alerts")), 1, 1, 1, 1)) - 1
            row = await con.fetchrow(
                f"INSERT INTO alerts ({','.join(ALERT_COLUMNS)}) VALUES ({marks}) "
                "ON CONFLICT (asset, kind) WHERE status <> 'resolved' DO UPDATE SET "
                "count=alerts.count+excluded.count, last_seen=greatest(alerts.last_seen, excluded.last_seen), "
                "first_seen=least(alerts.first_seen, excluded.first_seen), "
                "score=greatest(alerts.score, excluded.score), "
                "severity=CASE WHEN excluded.severity='critical' THEN 'critical' ELSE alerts.severity END "
                f"RETURNING {','.join(ALERT_COLUMNS)}",
                new_id, *alert_params(alert))
        return alert_from_row(tuple(row))

    async def list_alerts(
        self, *, status: AlertStatus | None = None, asset: str | None = None, tenant: str | None = None,
        limit: int = 200, incident: int | None = None, unresolved: bool = False, since_ms: int | None = None,
    ) -> list[Alert]:
        sql, params = alert_query(status=status, asset=asset, tenant=tenant, limit=limit, incident=incident,
                                  unresolved=unresolved, since_ms=since_ms)
        return [alert_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def get_alert(self, alert_id: int) -> Alert:
        row = await self.pool.fetchrow(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts WHERE id=$1", alert_id)
        if row is None:
            raise NotFoundError("alert", alert_id)
        return alert_from_row(tuple(row))

    async def set_alert_status(self, alert_id: int, status: AlertStatus, *, by: str, at_ms: int) -> Alert:
        who, when = ("acknowledged_by", "acknowledged_at") if status == AlertStatus.ACKNOWLEDGED else (
            "resolved_by", "resolved_at")
        async with self.pool.acquire() as con, con.transaction():
            current = await con.fetchval("SELECT status FROM alerts WHERE id=$1 FOR UPDATE", alert_id)
            if current is None:
                raise NotFoundError("alert", alert_id)
            if status not in ALERT_TRANSITIONS[AlertStatus(current)]:
                raise ConflictError(f"alert {alert_id} is {current}; it cannot become {status.value}")
            row = await con.fetchrow(
                f"UPDATE alerts SET status=$1, {who}=$2, {when}=$3 WHERE id=$4 RETURNING {','.join(ALERT_COLUMNS)}",
                status.value, by, at_ms, alert_id)
        return alert_from_row(tuple(row))


    # -- incidents ------------------------------------------------------------------------------
    async def reserve_ids(self, name: str, n: int) -> range:
        end = int(await self.pool.fetchval(pg(al.id_block_sql(name)), n, n, n, n))
        return range(end - n, end)

    async def write_alert_changes(self, changes: al.AlertChanges) -> dict[int, int]:
        remap: dict[int, int] = {}
        async with self.pool.acquire() as con, con.transaction():
            existing, new = al.updates_around_opens(changes)
            if existing:
                await con.executemany(pg(al.ALERT_UPDATE_SQL), [al.alert_update_params(a) for a in existing])
            for a in sorted(changes.opened, key=lambda o: o.id):
                got = int(await con.fetchval(pg(al.ALERT_OPEN_SQL), *al.alert_open_params(a)))
                if got != a.id:
                    remap[a.id] = got
                if a.id in new:
                    await con.execute(pg(al.ALERT_UPDATE_SQL), *al.alert_update_params(al.remapped(new[a.id], remap)))
            for sql, rows in (
                (al.INCIDENT_UPSERT_SQL, [al.incident_params(r) for r in changes.incidents]),
                (al.TIMELINE_INSERT_SQL, [al.timeline_params(e) for e in changes.timeline]),
                (al.SUPPRESSION_INSERT_SQL, [al.suppression_params(x) for x in changes.suppressions]),
            ):
                if rows:
                    await con.executemany(pg(sql), rows)
        return remap

    async def list_incidents(self, *, statuses: Sequence[str] | None = None, tenant: str | None = None,
                             asset: str | None = None, limit: int = 200,
                             opened_from: int | None = None) -> list[al.IncidentRecord]:
        sql, params = al.incident_query(statuses=statuses, tenant=tenant, asset=asset, limit=limit,
                                        opened_from=opened_from)
        return [al.incident_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def get_incident(self, incident_id: int) -> al.IncidentRecord:
        row = await self.pool.fetchrow(f"SELECT {al.INCIDENT_COLUMNS} FROM incidents WHERE id=$1", incident_id)
        if row is None:
            raise NotFoundError("incident", incident_id)
        return al.incident_from_row(tuple(row))

    async def incident_timeline(self, incident_id: int) -> list[al.TimelineEntry]:
        rows = await self.pool.fetch(pg(al.TIMELINE_SELECT_SQL), incident_id)
        return [al.timeline_from_row(tuple(r)) for r in rows]

    async def list_suppressions(self, *, asset: str | None = None, rule: str | None = None,
                                since_ms: int | None = None, until_ms: int | None = None,
                                tenant: str | None = None, reason: str | None = None,
                                limit: int = 200) -> list[al.SuppressionRecord]:
        sql, params = al.suppression_query(asset=asset, rule=rule, since_ms=since_ms, until_ms=until_ms,
                                           tenant=tenant, reason=reason, limit=limit)
        return [al.suppression_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def _insert_unique(self, sql: str, params: Sequence[Any], what: str, ident: str) -> None:
        try:
            await self.pool.execute(pg(sql), *params)
        except asyncpg.UniqueViolationError as exc:
            raise ConflictError(f"{what} {ident!r} already exists") from exc

    async def put_maintenance(self, window: al.MaintenanceRecord) -> None:
        await self._insert_unique(al.MAINTENANCE_INSERT_SQL, al.maintenance_params(window), "maintenance window",
                                  window.id)

    async def list_maintenance(self, *, tenant: str | None = None, ending_after: int | None = None
                               ) -> list[al.MaintenanceRecord]:
        sql, params = al.window_query(al.MAINTENANCE_SELECT, tenant, "end_ms", ending_after, "start_ms")
        return [al.maintenance_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def put_silence(self, silence: al.SilenceRecord) -> None:
        await self._insert_unique(al.SILENCE_INSERT_SQL, al.silence_params(silence), "silence", silence.id)

    async def end_silence(self, silence_id: str, at_ms: int) -> al.SilenceRecord:
        row = await self.pool.fetchrow(pg(al.SILENCE_END_SQL), *al.silence_end_params(silence_id, at_ms))
        if row is None:
            raise NotFoundError("running silence", silence_id)
        return al.silence_from_row(tuple(row))

    async def list_silences(self, *, tenant: str | None = None, active_at: int | None = None
                            ) -> list[al.SilenceRecord]:
        sql, params = al.silence_query(tenant, active_at)
        return [al.silence_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def put_rules(self, text: str, *, by: str, at_ms: int, tenant: str | None = None) -> int:
        sql, params = al.rules_insert(text, by, at_ms, tenant)
        return int(await self.pool.fetchval(pg(sql), *params))

    async def latest_rules(self) -> al.RuleSetRecord | None:
        row = await self.pool.fetchrow(al.RULES_LATEST_SQL)
        return None if row is None else al.rules_from_row(tuple(row))

    async def tenant_rules(self) -> list[al.RuleSetRecord]:
        return [al.rules_from_row(tuple(r)) for r in await self.pool.fetch(al.TENANT_RULES_LATEST_SQL)]

    async def put_labels(self, labels: Sequence[Label]) -> None:
        if labels:
            await self.pool.executemany(pg(al.LABEL_INSERT_SQL), [al.label_params(x) for x in labels])

    async def list_labels(self, *, tenant: str | None = None, asset: str | None = None, alert: int | None = None,
                          since_ms: int | None = None, limit: int = 1_000_000) -> list[Label]:
        sql, params = al.label_query(tenant=tenant, asset=asset, alert=alert, since_ms=since_ms, limit=limit)
        return [al.label_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def put_override(self, override: al.OverrideRecord) -> None:
        await self.pool.execute(pg(al.OVERRIDE_UPSERT_SQL), *al.override_params(override))

    async def list_overrides(self) -> list[al.OverrideRecord]:
        return [al.override_from_row(tuple(r)) for r in await self.pool.fetch(al.OVERRIDE_SELECT_SQL)]

    async def put_undelivered(self, records: Sequence[al.UndeliveredRecord]) -> None:
        if records:
            await self.pool.executemany(pg(al.UNDELIVERED_INSERT_SQL), [al.undelivered_params(u) for u in records])

    async def list_undelivered(self, *, tenant: str | None = None, limit: int = 200) -> list[al.UndeliveredRecord]:
        sql, params = al.undelivered_query(tenant, limit)
        return [al.undelivered_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]

    async def put_work_order(self, order: al.WorkOrderRecord) -> None:
        await self._insert_unique(al.WORK_ORDER_INSERT_SQL, al.work_order_params(order), "work order", order.id)

    async def close_work_order(self, order_id: str, *, at_ms: int, downtime_end: int | None,
                               by: str) -> al.WorkOrderRecord:
        row = await self.pool.fetchrow(pg(al.WORK_ORDER_CLOSE_SQL), at_ms, downtime_end, by, order_id)
        if row is None:
            raise NotFoundError("open work order", order_id)
        return al.work_order_from_row(tuple(row))

    async def list_work_orders(self, *, tenant: str | None = None, since_ms: int | None = None,
                               limit: int = 100_000) -> list[al.WorkOrderRecord]:
        sql, params = al.work_order_query(tenant, since_ms, limit)
        return [al.work_order_from_row(tuple(r)) for r in await self.pool.fetch(pg(sql), *params)]


#: What PostgreSQL (or asyncpg, encoding a parameter) refuses as data: SQLSTATE class 22 (a NUL character, a
#: lone surrogate, a number out of range) and class 23 (a violated constraint). The same data can never be stored.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
#: The database failed or could not be reached (connection lost, shutting down, disk full): retrying can succeed.
_UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Driver errors become ours: ``StoreRejected`` for refused data, ``StoreError`` for an unavailable store."""
    try:
        yield
    except _REFUSED as exc:
        raise StoreRejected(f"PostgreSQL refused the data: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise StoreError(f"PostgreSQL: {exc}") from exc


def _redact(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else dsn
