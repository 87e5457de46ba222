"""The store: what the platform needs from storage, written once over a driver (SQLite or PostgreSQL).

Every statement is written here (or in ``store/alerting.py``) once, with ``?`` placeholders; rows are read by
column name. A driver error of any kind arrives as ``StoreError`` (``StoreRejected`` for data the database
refuses), and every transaction rolls back on any error (see ``store/driver.py``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import msgspec
import numpy as np

from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, DuplicateKey, NotFoundError
from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.registry import Registry
from edgeloop.store import alerting as al
from edgeloop.store.actions import (
    ANSWERED,
    COMMANDS,
    DECISION_LOG,
    DECISIONS,
    GENESIS,
    HOLDS,
    POLICY_DOCUMENTS,
    CommandAnswer,
    CommandRecord,
    DecisionEntry,
    DecisionRecord,
    HoldRecord,
    PolicyDocument,
    chain,
)
from edgeloop.store.alerting import Label
from edgeloop.store.driver import Connection, Driver, Row, insert_sql, record, select_where, values
from edgeloop.store.records import (
    F64,
    I64,
    RAW_DEAD_LETTER_BYTES,
    ROLLUP_MS,
    AuditRecord,
    CampaignRecord,
    Credential,
    DeadLetter,
    DriftRecord,
    Enrollment,
    GatewayConfig,
    GatewayHeartbeat,
    GatewayRecord,
    ModelAlias,
    ModelAliasEvent,
    ModelFinding,
    ModelVersionRecord,
    Series,
    StoredEvent,
    TelemetryChunk,
    TelemetryQuery,
    User,
    choose_bucket,
    downsample_raw,
    first_occurrences,
    rollup_rows,
    series_from_rollups,
)
from edgeloop.store.schema import migrate

__all__ = [
    "RAW_DEAD_LETTER_BYTES",
    "AuditRecord",
    "CampaignRecord",
    "Credential",
    "DeadLetter",
    "DriftRecord",
    "Enrollment",
    "GatewayConfig",
    "GatewayHeartbeat",
    "GatewayRecord",
    "ModelAlias",
    "ModelAliasEvent",
    "ModelFinding",
    "ModelVersionRecord",
    "Series",
    "Store",
    "StoredEvent",
    "TelemetryChunk",
    "TelemetryQuery",
    "User",
]

T = TypeVar("T")

ALERTS: Final = ("id, tenant, asset, device, kind, severity, status, first_seen, last_seen, count, score, message, "
                  "explanation, detector, acknowledged_by, acknowledged_at, resolved_by, resolved_at, incident, "
                  "priority, confidence, suppressed, cleared_at, model")
SAMPLE_EDGE_SQL: Final = (  # one index probe per registered device, not a scan of every chunk
    "SELECT id, (SELECT {col} FROM chunks c WHERE c.device = d.id ORDER BY t0 {order} LIMIT 1) AS t FROM devices d"
)
CHUNK_COLUMNS: Final = {"device": "text", "seq": "big", "t0": "big", "t1": "big", "n": "int", "channels": "text",
                        "data": "blob", "received": "big"}
ROLLUP_COLUMNS: Final = {"device": "text", "channel": "text", "bucket": "big", "n": "big", "vmin": "real",
                         "vmax": "real", "vsum": "real"}
ROLLUP_MERGE: Final = (
    "ON CONFLICT (device, channel, bucket) DO UPDATE SET n=rollup_1m.n+excluded.n, "
    "vmin=CASE WHEN excluded.vmin < rollup_1m.vmin THEN excluded.vmin ELSE rollup_1m.vmin END, "
    "vmax=CASE WHEN excluded.vmax > rollup_1m.vmax THEN excluded.vmax ELSE rollup_1m.vmax END, "
    "vsum=rollup_1m.vsum+excluded.vsum"
)
DEAD_LETTER_COLUMNS: Final = {"received": "big", "topic": "text", "device": "text", "tenant": "text", "code": "text",
                              "detail": "text", "size": "int", "raw": "blob"}
EVENT_COLUMNS: Final = {"device": "text", "tenant": "text", "ts": "big", "kind": "text", "severity": "text",
                        "message": "text", "data": "text", "received": "big"}
# A gateway's heartbeat replaces the stored one unless it is older (a redelivery); the retained status is kept
# when the heartbeat does not carry one; ``dropped_at`` moves when the agent reports more drops than before.
HEARTBEAT_UPSERT: Final = (
    "INSERT INTO gateways (id, tenant, heartbeat, ts, received, dropped, dropped_at, status, status_ms) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET tenant=excluded.tenant, heartbeat=excluded.heartbeat, "
    "ts=excluded.ts, received=excluded.received, dropped=excluded.dropped, "
    "dropped_at=CASE WHEN excluded.dropped > gateways.dropped THEN excluded.received ELSE gateways.dropped_at END, "
    "status=coalesce(excluded.status, gateways.status), status_ms=coalesce(excluded.status_ms, gateways.status_ms) "
    "WHERE excluded.ts >= gateways.ts RETURNING id"
)
GATEWAYS: Final = ("SELECT id, tenant, heartbeat, received AS received_ms, status, status_ms, "
                   "dropped_at AS dropped_at_ms FROM gateways")
GATEWAY_CONFIGS: Final = "gateway, tenant, version, {text} AS config, created_ms, created_by, status, status_ms, error"
ENROLLMENTS: Final = ("id, tenant, line, profile, claim_hash, expires_ms, created_ms, created_by, asset, serials, "
                      "max_devices")
USERS: Final = "username, role, tenant, password_hash, created_ms, disabled"
LATEST_GATEWAY_CONFIGS: Final = (  # one index probe per gateway (primary key (gateway, version))
    "SELECT " + GATEWAY_CONFIGS.format(text="''") + " FROM gateway_configs c "
    "WHERE version = (SELECT max(version) FROM gateway_configs m WHERE m.gateway = c.gateway)"
)
CREDENTIALS: Final = "id, kind, subject, role, tenant, created_ms, expires_ms, secret_hash, revoked_ms"
MODEL_VERSIONS: Final = ("name, version, kind, profile, format, sha256, size, manifest, signature, signer, created_ms, "
                         "created_by")
MODEL_ALIASES: Final = "name, alias, scope, version, set_ms, set_by, reason"
MODEL_ALIAS_EVENTS: Final = "name, alias, scope, action, version, previous, ts, set_by, reason"
ANY: Final = object()  # ``set_model_alias(expect=ANY)``: whatever the alias points at now


def _version_text(version: object) -> str:
    return "unset" if version is None else f"version {version}"


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _model_version(row: Row) -> ModelVersionRecord:
    return record(ModelVersionRecord, row, signature=bytes(row["signature"]))


def _user(row: Row) -> User:
    return record(User, row, disabled=bool(row["disabled"]))


DRIFT_EVENTS: Final = ("id, tenant, device, asset, profile, model, kind, since_ms, detected_ms, figure, threshold, "
                       "channels, message")
MODEL_FINDINGS: Final = ("id, model, live, tenant, asset, device, ts, kind, severity, score, explanation, message")


def _model_finding(row: Row) -> ModelFinding:
    return record(ModelFinding, row, live=bool(row["live"]),
                  explanation=msgspec.json.decode(row["explanation"], type=dict[str, float]))


def _drift(row: Row) -> DriftRecord:
    return record(DriftRecord, row, channels=msgspec.json.decode(row["channels"], type=dict[str, float]))


CAMPAIGNS: Final = "id, payload, subject, spec, state, phase, active, created_ms, updated_ms"


def _campaign(row: Row) -> CampaignRecord:
    return record(CampaignRecord, row, active=bool(row["active"]))


def _alert(row: Row) -> Alert:
    return record(Alert, row, severity=Severity(row["severity"]), status=AlertStatus(row["status"]),
                  explanation=msgspec.json.decode(row["explanation"], type=dict[str, float]))


class Store:
    """What the platform needs from storage; ``driver`` is SQLite (embedded) or PostgreSQL (production)."""

    def __init__(self, driver: Driver, *, where: str) -> None:
        self.driver = driver
        self.backend = driver.backend
        self._where = where  # the database, for messages

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and create or migrate the schema (``store/schema.py``)."""
        await self.driver.open()
        try:
            await migrate(self.driver, self._where)
        except BaseException:
            await self.driver.close()
            raise

    async def close(self) -> None:
        await self.driver.close()

    async def _create(self, table: str, columns: str, obj: object, what: str, ident: str, **given: Any) -> None:
        """Insert one row from ``obj``'s fields; ConflictError if its key exists."""
        try:
            await self.driver.execute(insert_sql(table, columns), values(obj, columns, **given))
        except DuplicateKey as exc:
            raise ConflictError(f"{what} {ident!r} already exists") from exc

    @staticmethod
    async def _add(con: Connection, table: str, columns: str, rows: Sequence[Any],
                   given: Callable[[Any], dict[str, Any]] = lambda _: {}, *, sql: str = "") -> None:
        """Insert ``rows`` (records) by their fields named as ``columns``, ``given`` overriding some."""
        await con.executemany(sql or insert_sql(table, columns), [values(r, columns, **given(r)) for r in rows])

    async def _list(self, make: Callable[[Row], T], select: str, conds: Sequence[tuple[str, Any]], order: str = "",
                    limit: int | None = None) -> list[T]:
        """``select`` of the rows meeting every condition that applies (``select_where``), in ``order``."""
        sql, params = select_where(select, conds)
        sql += f" ORDER BY {order}" if order else ""
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        return [make(r) for r in await self.driver.fetch(sql, params)]

    async def _one(self, make: Callable[[Row], T], select: str, conds: Sequence[tuple[str, Any]]) -> T | None:
        return next(iter(await self._list(make, select, conds, limit=1)), None)

    # -- registry -------------------------------------------------------------------------------
    async def _upsert(self, table: str, key: str, columns: str, obj: object, **given: Any) -> None:
        """Insert or replace one row from ``obj``'s fields."""
        await self.driver.execute(insert_sql(table, columns, key=key), values(obj, columns, **given))

    async def put_tenant(self, tenant: Tenant) -> None:
        await self._upsert("tenants", "id", "id, name", tenant)

    async def put_site(self, site: Site) -> None:
        await self._upsert("sites", "id", "id, tenant, name", site)

    async def put_line(self, line: Line) -> None:
        await self._upsert("lines", "id", "id, site, name", line)

    async def put_asset(self, asset: Asset) -> None:
        await self._upsert("assets", "id", "id, line, name, kind, criticality", asset)

    async def put_profile(self, profile: DeviceProfile) -> None:
        await self._upsert("profiles", "name", "name, body", profile, body=msgspec.json.encode(profile))

    async def put_device(self, device: Device) -> None:
        await self._upsert("devices", "id", "id, tenant, asset, profile, name, rollout_group", device)

    async def load_registry(self) -> Registry:
        reg = Registry()
        tables: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
            ("tenants", Tenant, reg.tenants), ("sites", Site, reg.sites), ("lines", Line, reg.lines),
            ("assets", Asset, reg.assets), ("devices", Device, reg.devices)]
        for table, kind, into in tables:
            for r in await self.driver.fetch(f"SELECT * FROM {table}"):
                into[r["id"]] = record(kind, r)
        for r in await self.driver.fetch("SELECT name, body FROM profiles"):
            reg.profiles[r["name"]] = msgspec.json.decode(r["body"], type=DeviceProfile)
        return reg

    # -- telemetry ------------------------------------------------------------------------------
    async def write_chunks(self, chunks: Sequence[TelemetryChunk]) -> list[bool]:
        """Store chunks not stored before, with their rollups, in one transaction.

        Returns, for each input chunk, True if it was new and is now stored, False if
        (device, seq) was already stored (or appears earlier in the same batch).
        """
        if not chunks:
            return []
        async with self.driver.transaction() as tx:
            rows = await tx.insert_many("chunks", CHUNK_COLUMNS, [
                (c.device, c.seq, c.t0, c.t1, len(c.ts), ",".join(c.channels), c.encode(), c.received_ms)
                for c in chunks], "ON CONFLICT (device, seq) DO NOTHING RETURNING device, seq")
            new = first_occurrences(chunks, {(r["device"], r["seq"]) for r in rows})
            agg = rollup_rows(c for c, ok in zip(chunks, new, strict=True) if ok)
            if agg:
                await tx.insert_many("rollup_1m", ROLLUP_COLUMNS, agg, ROLLUP_MERGE)
        return new

    async def read_samples(self, device: str, start: int, end: int,
                           channels: tuple[str, ...] | None = None) -> tuple[I64, F64, tuple[str, ...]] | None:
        """A device's stored samples with ``start <= ts <= end``, in time order, each time once (resent messages
        overlap), as ``(ts, values, channels)``; only chunks with ``channels`` (default: the device's most common
        channel set). None: nothing stored there."""
        chunks = await self.read_chunks(device, start, end + 1)
        if channels is None and chunks:
            channels = max((c.channels for c in chunks), key=lambda ch: sum(c.channels == ch for c in chunks))
        chunks = [c for c in chunks if c.channels == channels]
        if not chunks or channels is None:
            return None
        ts = np.concatenate([c.ts for c in chunks])
        values = np.concatenate([c.values for c in chunks])
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        keep = np.concatenate([[True], np.diff(ts) > 0]) & (ts >= start) & (ts <= end)
        return ts[keep], values[keep], channels

    async def read_chunks(self, device: str, start: int, end: int) -> list[TelemetryChunk]:
        """Chunks of ``device`` overlapping [start, end), in time order."""
        rows = await self.driver.fetch("SELECT seq, channels, n, data FROM chunks WHERE device=? AND t0 < ? AND "
                                       "t1 >= ? ORDER BY t0", (device, end, start))
        return [TelemetryChunk.decode(device, r["seq"], r["channels"], r["n"], r["data"]) for r in rows]

    async def query_telemetry(
        self, device: str, channels: Sequence[str], start: int, end: int, points: int = 500
    ) -> TelemetryQuery:
        """Downsampled min/avg/max per channel over [start, end) in at most ``points`` buckets."""
        bucket = choose_bucket(start, end, points)
        if bucket < ROLLUP_MS:
            chunks = await self.read_chunks(device, start, end)
            return TelemetryQuery(device, start, end, bucket, downsample_raw(chunks, channels, start, end, bucket),
                                  "raw")
        rows = await self.driver.fetch(
            "SELECT channel, (bucket - ?) / ? AS b, sum(n) AS n, min(vmin) AS lo, max(vmax) AS hi, sum(vsum) AS total "
            f"FROM rollup_1m WHERE device=? AND channel IN ({_marks(len(channels))}) AND bucket >= ? AND bucket < ? "
            "GROUP BY channel, b ORDER BY channel, b",
            (start, bucket, device, *channels, start - (start % ROLLUP_MS), end)) if channels else []
        series = series_from_rollups([(r["channel"], int(r["b"]), int(r["n"]), r["lo"], r["hi"], r["total"])
                                      for r in rows], channels, start, bucket)
        return TelemetryQuery(device, start, end, bucket, series, "rollup")

    async def telemetry_counts(self, device: str | None = None) -> tuple[int, int]:
        """(messages, samples) stored, for one device or all."""
        [counts] = await self._list(lambda r: (int(r["m"]), int(r["s"])), "SELECT count(*) AS m, "
                                    "coalesce(sum(n), 0) AS s FROM chunks", [("device = ?", device)])
        return counts

    async def latest_sample_ms(self) -> dict[str, int]:
        """Newest stored sample time per registered device that has data."""
        rows = await self.driver.fetch(SAMPLE_EDGE_SQL.format(col="t1", order="DESC"))
        return {r["id"]: int(r["t"]) for r in rows if r["t"] is not None}

    async def first_sample_ms(self) -> dict[str, int]:
        """Oldest stored sample time per registered device that has data (when its data began)."""
        rows = await self.driver.fetch(SAMPLE_EDGE_SQL.format(col="t0", order="ASC"))
        return {r["id"]: int(r["t"]) for r in rows if r["t"] is not None}

    # -- dead letters and device events ---------------------------------------------------------
    async def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        await self.driver.insert_many("dead_letters", DEAD_LETTER_COLUMNS, [
            (d.received_ms, d.topic, d.device, d.tenant, d.code, d.detail, d.size, d.raw) for d in letters])

    async def list_dead_letters(
        self, device: str | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[DeadLetter]:
        return await self._list(lambda r: record(DeadLetter, r, raw=bytes(r["raw"])),
                                "SELECT id, received AS received_ms, topic, device, tenant, code, detail, size, raw "
                                "FROM dead_letters", [("device = ?", device), ("tenant = ?", tenant)], "id DESC", limit)

    async def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per device ('' for those whose device is unknown)."""
        rows = await self.driver.fetch("SELECT coalesce(device, '') AS d, count(*) AS n FROM dead_letters GROUP BY "
                                       "coalesce(device, '')")
        return {r["d"]: int(r["n"]) for r in rows}

    async def write_events(self, events: Sequence[StoredEvent]) -> int:
        """Store device events; one already stored (same device, kind, time and message) is skipped.
        Returns how many were new."""
        return len(await self.driver.insert_many("device_events", EVENT_COLUMNS, [
            (e.device, e.tenant, e.ts_ms, e.kind, e.severity, e.message, json.dumps(e.data), e.received_ms)
            for e in events], "ON CONFLICT DO NOTHING RETURNING id"))

    async def list_events(self, *, device: str | None = None, kind: str | None = None, limit: int = 100,
                          tenant: str | None = None) -> list[StoredEvent]:
        """Newest first."""
        return await self._list(
            lambda r: record(StoredEvent, r, data=json.loads(r["data"])),
            "SELECT id, device, tenant, ts AS ts_ms, kind, severity, message, data, received AS received_ms "
            "FROM device_events", [("device = ?", device), ("kind = ?", kind), ("tenant = ?", tenant)],
            "ts DESC, id DESC", limit)

    # -- gateways -------------------------------------------------------------------------------
    async def write_heartbeats(self, beats: Sequence[GatewayHeartbeat]) -> None:
        """Store each gateway's latest heartbeat and its device list (replacing the previous one)."""
        if not beats:
            return
        async with self.driver.transaction() as tx:
            for b in beats:
                applied = await tx.fetchone(HEARTBEAT_UPSERT, (
                    b.gateway, b.tenant, b.heartbeat, b.ts_ms, b.received_ms, b.dropped_samples,
                    b.received_ms if b.dropped_samples > 0 else None, b.status,
                    b.status_ms if b.status is not None else None))
                if applied is None:  # an older heartbeat than the stored one (a redelivery): ignored
                    continue
                await tx.execute("DELETE FROM gateway_devices WHERE gateway=?", (b.gateway,))
                await tx.executemany("INSERT INTO gateway_devices VALUES (?, ?) ON CONFLICT DO NOTHING",
                                     [(b.gateway, d) for d in b.devices])

    async def write_gateway_status(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        """(gateway, online, at_ms): the retained status of gateways that are stored; others are skipped."""
        await self.driver.executemany("UPDATE gateways SET status=?, status_ms=? WHERE id=?",
                                      [("online" if online else "offline", at, gw) for gw, online, at in updates])

    async def list_gateways(self, *, tenant: str | None = None) -> list[GatewayRecord]:
        """Every gateway (a device that sent a heartbeat), by id."""
        sql, params = select_where(GATEWAYS, [("tenant = ?", tenant)])
        rows = await self.driver.fetch(sql + " ORDER BY id", params)
        devices: dict[str, list[str]] = {}
        for r in await self.driver.fetch("SELECT gateway, device FROM gateway_devices ORDER BY gateway, device"):
            devices.setdefault(r["gateway"], []).append(r["device"])
        return [record(GatewayRecord, r, devices=tuple(devices.get(r["id"], ()))) for r in rows]

    async def get_gateway(self, gateway: str) -> GatewayRecord | None:
        row = await self.driver.fetchone(GATEWAYS + " WHERE id=?", (gateway,))
        devices = await self.driver.fetch("SELECT device FROM gateway_devices WHERE gateway=? ORDER BY device",
                                          (gateway,))
        return None if row is None else record(GatewayRecord, row, devices=tuple(r["device"] for r in devices))

    async def add_gateway_config(self, *, gateway: str, tenant: str, config: str, created_ms: int,
                                 created_by: str, after: int = 0) -> GatewayConfig:
        """Store a configuration under the gateway's next version (atomically), status pending.

        The version is one more than both the highest stored one and ``after`` (the version the agent says it
        runs: an agent only applies a version greater than its own)."""
        async with self.driver.transaction() as tx:
            await tx.lock(f"gateway-config:{gateway}")  # two pushes at once must not pick the same version
            row = await tx.fetchone(
                "INSERT INTO gateway_configs (gateway, tenant, version, config, created_ms, created_by, status, error) "
                "SELECT CAST(? AS TEXT), CAST(? AS TEXT), CASE WHEN coalesce(max(version), 0) > ? THEN "
                "coalesce(max(version), 0) ELSE ? END + 1, CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), "
                f"'pending', '' FROM gateway_configs WHERE gateway=? RETURNING {GATEWAY_CONFIGS.format(text='config')}",
                (gateway, tenant, after, after, config, created_ms, created_by, gateway))
        assert row is not None  # INSERT ... SELECT of an aggregate: always one row
        return record(GatewayConfig, row)

    # -- model findings (live and shadow onsets, with their version) ----------------------------------
    async def add_model_findings(self, findings: Sequence[ModelFinding]) -> None:
        if findings:
            await self._add(self.driver, "model_findings", MODEL_FINDINGS.removeprefix("id, "), findings,
                            lambda f: {"explanation": msgspec.json.encode(f.explanation).decode()})

    async def list_model_findings(self, *, models: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                                  since: int | None = None, until: int | None = None,
                                  limit: int = 10_000) -> list[ModelFinding]:
        """Onset findings in time order, of the given versions and devices, with ``since <= ts < until``."""
        return await self._list(_model_finding, f"SELECT {MODEL_FINDINGS} FROM model_findings", [
            (f"model IN ({','.join('?' * len(models or ()))})", tuple(models) if models else None),
            (f"device IN ({','.join('?' * len(devices or ()))})", tuple(devices) if devices else None),
            ("ts >= ?", since), ("ts < ?", until)], "ts, id", limit)

    # -- drift events --------------------------------------------------------------------------------------
    async def add_drift_event(self, event: DriftRecord) -> int:
        """Record one drift event; its id."""
        row = await self.driver.fetchone(
            f"INSERT INTO drift_events ({DRIFT_EVENTS.removeprefix('id, ')}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "RETURNING id", values(event, DRIFT_EVENTS.removeprefix("id, "),
                                   channels=msgspec.json.encode(event.channels).decode()))
        assert row is not None
        return int(row["id"])

    async def list_drift_events(self, *, tenant: str | None = None, device: str | None = None,
                                asset: str | None = None, since: int | None = None,
                                limit: int = 1000) -> list[DriftRecord]:
        """Newest first."""
        return await self._list(_drift, f"SELECT {DRIFT_EVENTS} FROM drift_events", [
            ("tenant = ?", tenant), ("device = ?", device), ("asset = ?", asset), ("detected_ms >= ?", since)],
            "detected_ms DESC, id DESC", limit)

    async def list_gateway_configs(self, gateway: str, *, with_text: bool = False) -> list[GatewayConfig]:
        """Newest version first; ``config`` is "" unless ``with_text``."""
        return await self._list(lambda r: record(GatewayConfig, r), "SELECT " + GATEWAY_CONFIGS.format(
            text="config" if with_text else "''") + " FROM gateway_configs", [("gateway = ?", gateway)], "version DESC")

    async def get_gateway_config(self, gateway: str, version: int) -> GatewayConfig | None:
        return await self._one(lambda r: record(GatewayConfig, r), "SELECT " + GATEWAY_CONFIGS.format(
            text="config") + " FROM gateway_configs", [("gateway = ?", gateway), ("version = ?", version)])

    async def latest_gateway_configs(self, *, tenant: str | None = None) -> dict[str, GatewayConfig]:
        """Each gateway's newest pushed configuration (without its text)."""
        sql, params = LATEST_GATEWAY_CONFIGS, []
        if tenant is not None:
            sql, params = sql + " AND tenant = ?", [tenant]
        return {r["gateway"]: record(GatewayConfig, r) for r in await self.driver.fetch(sql, params)}

    async def set_gateway_config_status(self, gateway: str, version: int, status: str, error: str,
                                        at_ms: int) -> bool:
        """False if there is no such version."""
        return await self.driver.execute(
            "UPDATE gateway_configs SET status=?, error=?, status_ms=? WHERE gateway=? AND version=?",
            (status, error[:1000], at_ms, gateway, version)) == 1

    # -- commands to machines ---------------------------------------------------------------------------------
    async def add_command(self, build: Callable[[int], CommandRecord]) -> tuple[CommandRecord, bool]:
        """Store ``build(seq)`` with its device's next sequence number (chosen in the insert's transaction).
        ``(record, True)``; or, if a command with the same idempotency key exists, ``(that one, False)``."""
        probe = build(0)
        async with self.driver.transaction() as tx:
            await tx.lock(f"commands:{probe.device}")
            found = await tx.fetchone(f"SELECT {COMMANDS} FROM commands WHERE key=?", (probe.key,))
            if found is not None:
                return record(CommandRecord, found), False
            row = await tx.fetchone("SELECT coalesce(max(seq), 0) AS seq FROM commands WHERE device=?",
                                    (probe.device,))
            cmd = build(int(row["seq"]) + 1 if row is not None else 1)
            await tx.execute(insert_sql("commands", COMMANDS), values(cmd, COMMANDS))
        return cmd, True

    async def mark_command_sent(self, command_id: str, at_ms: int) -> None:
        """It was published (again): a pending command becomes ``sent``."""
        await self.driver.execute("UPDATE commands SET sends=sends+1, sent_ms=?, status=CASE WHEN status='pending' "
                                  "THEN 'sent' ELSE status END, status_ms=CASE WHEN status='pending' THEN ? ELSE "
                                  "status_ms END WHERE id=?", (at_ms, at_ms, command_id))

    async def answer_commands(self, answers: Sequence[CommandAnswer]) -> list[str]:
        """Record gateways' answers; the first answer of a command is final (a repeat changes nothing). Returns
        the ids whose status changed."""
        changed: list[str] = []
        answered = ", ".join(f"'{s}'" for s in ANSWERED)
        async with self.driver.transaction() as tx:
            for a in answers:
                row = await tx.fetchone(
                    f"UPDATE commands SET status=?, status_ms=?, code=?, reason=?, value_before=?, read_back=? "
                    f"WHERE id=? AND device=? AND status NOT IN ({answered}) RETURNING id",
                    (a.status, a.at_ms, a.code[:64], a.reason[:1000], a.value_before, a.read_back, a.id, a.device))
                if row is not None:
                    changed.append(str(row["id"]))
        return changed

    async def open_commands(self, *, limit: int = 1000) -> list[CommandRecord]:
        """Commands still waiting for an answer (``pending`` or ``sent``), oldest first."""
        return await self._list(lambda r: record(CommandRecord, r), f"SELECT {COMMANDS} FROM commands",
                                [("status IN ('pending', 'sent')", True)], "ts, id", limit)

    async def expire_commands(self, now_ms: int) -> list[str]:
        """Unanswered commands whose time ran out become ``expired``; their ids."""
        rows = await self.driver.fetch("UPDATE commands SET status='expired', status_ms=? WHERE status IN "
                                       "('pending', 'sent') AND expires <= ? RETURNING id", (now_ms, now_ms))
        return [str(r["id"]) for r in rows]

    async def get_command(self, command_id: str) -> CommandRecord | None:
        return await self._one(lambda r: record(CommandRecord, r), f"SELECT {COMMANDS} FROM commands",
                               [("id = ?", command_id)])

    async def list_commands(self, *, tenant: str | None = None, device: str | None = None, status: str | None = None,
                            since: int | None = None, until: int | None = None,
                            limit: int = 1000) -> list[CommandRecord]:
        """Newest first."""
        return await self._list(lambda r: record(CommandRecord, r), f"SELECT {COMMANDS} FROM commands", [
            ("tenant = ?", tenant), ("device = ?", device), ("status = ?", status), ("ts >= ?", since),
            ("ts < ?", until)], "ts DESC, id DESC", limit)

    # -- action policies, decisions and their chained log, automation holds ----------------------------------
    async def put_policies(self, tenant: str, text: str, *, by: str, at_ms: int) -> PolicyDocument:
        """Store ``tenant``'s policy document as its next version."""
        async with self.driver.transaction() as tx:
            await tx.lock(f"policies:{tenant}")
            row = await tx.fetchone("SELECT coalesce(max(version), 0) AS v FROM policy_documents WHERE tenant=?",
                                    (tenant,))
            doc = PolicyDocument(tenant=tenant, version=(int(row["v"]) if row else 0) + 1, text=text, created_ms=at_ms,
                                 created_by=by)
            await tx.execute(insert_sql("policy_documents", POLICY_DOCUMENTS), values(doc, POLICY_DOCUMENTS))
        return doc

    async def latest_policies(self, tenant: str | None = None) -> list[PolicyDocument]:
        """Each tenant's policy document in force (or only ``tenant``'s)."""
        return await self._list(lambda r: record(PolicyDocument, r), f"SELECT {POLICY_DOCUMENTS} FROM "
                                "policy_documents p", [("tenant = ?", tenant), (
                                    "version = (SELECT max(version) FROM policy_documents q WHERE q.tenant = p.tenant)",
                                    True)], "tenant")

    async def get_policies(self, tenant: str, version: int) -> PolicyDocument | None:
        return await self._one(lambda r: record(PolicyDocument, r), f"SELECT {POLICY_DOCUMENTS} FROM policy_documents",
                               [("tenant = ?", tenant), ("version = ?", version)])

    async def record_decision(self, decision: DecisionRecord, entries: Sequence[DecisionEntry], *,
                              expect_state: str | None = None, new: bool = False) -> bool:
        """Insert (``new``) or update ``decision`` and append ``entries`` to the decision log, chained, in one
        transaction. ``expect_state``: the update happens only if the stored state is still that one (False: it
        changed meanwhile, nothing written)."""
        async with self.driver.transaction() as tx:
            await tx.lock("decision-log")  # one chain: appends are serial
            if new:
                await tx.execute(insert_sql("decisions", DECISIONS), values(decision, DECISIONS))
            else:
                sets = ", ".join(f"{c}=?" for c in DECISIONS.split(", ")[1:])
                sql = f"UPDATE decisions SET {sets} WHERE id=?" + (" AND state=?" if expect_state is not None else "")
                params = [*values(decision, DECISIONS)[1:], decision.id,
                          *([expect_state] if expect_state is not None else [])]
                if await tx.execute(sql, params) != 1:
                    return False
            row = await tx.fetchone("SELECT hash FROM decision_log ORDER BY id DESC LIMIT 1")
            prev = str(row["hash"]) if row is not None else GENESIS
            for entry in entries:
                chained = chain(entry, prev)
                await tx.execute(insert_sql("decision_log", DECISION_LOG), values(chained, DECISION_LOG))
                prev = chained.hash
        return True

    async def get_decision(self, decision_id: str) -> DecisionRecord | None:
        return await self._one(lambda r: record(DecisionRecord, r), f"SELECT {DECISIONS} FROM decisions",
                               [("id = ?", decision_id)])

    async def list_decisions(self, *, tenant: str | None = None, asset: str | None = None, state: str | None = None,
                             command: str | None = None, since: int | None = None, until: int | None = None,
                             limit: int = 1000) -> list[DecisionRecord]:
        """Newest first."""
        return await self._list(lambda r: record(DecisionRecord, r), f"SELECT {DECISIONS} FROM decisions", [
            ("tenant = ?", tenant), ("asset = ?", asset), ("state = ?", state), ("command = ?", command),
            ("created_ms >= ?", since), ("created_ms < ?", until)], "created_ms DESC, id DESC", limit)

    async def decision_entries(self, decision_id: str) -> list[DecisionEntry]:
        """The decision's records, oldest first."""
        return await self._list(lambda r: record(DecisionEntry, r), f"SELECT id, {DECISION_LOG} FROM decision_log",
                                [("decision = ?", decision_id)], "id")

    async def decision_log(self, *, after_id: int = 0, limit: int = 5000) -> list[DecisionEntry]:
        """The whole log in order, a page at a time (``verify`` walks it)."""
        return await self._list(lambda r: record(DecisionEntry, r), f"SELECT id, {DECISION_LOG} FROM decision_log",
                                [("id > ?", after_id)], "id", limit)

    async def add_hold(self, hold: HoldRecord) -> None:
        await self.driver.execute(insert_sql("automation_holds", HOLDS), values(hold, HOLDS))

    async def get_hold(self, hold_id: str) -> HoldRecord | None:
        return await self._one(lambda r: record(HoldRecord, r), f"SELECT {HOLDS} FROM automation_holds",
                               [("id = ?", hold_id)])

    async def end_hold(self, hold_id: str, *, by: str, at_ms: int, tenant: str | None = None) -> HoldRecord | None:
        """End a hold early (of ``tenant``, if given); None if there is no such hold still running."""
        mine = "" if tenant is None else " AND tenant = ?"
        row = await self.driver.fetchone(
            f"UPDATE automation_holds SET ended_ms=?, ended_by=? WHERE id=? AND ended_ms IS NULL AND until_ms > ?"
            f"{mine} RETURNING {HOLDS}", (at_ms, by, hold_id, at_ms, *(() if tenant is None else (tenant,))))
        return None if row is None else record(HoldRecord, row)

    async def list_holds(self, *, tenant: str | None = None, target: str | None = None, active_at: int | None = None,
                         limit: int = 1000) -> list[HoldRecord]:
        """Newest first; ``active_at``: only those running then."""
        return await self._list(lambda r: record(HoldRecord, r), f"SELECT {HOLDS} FROM automation_holds", [
            ("tenant = ?", tenant), ("target = ?", target), ("until_ms > ?", active_at),
            ("ended_ms IS NULL", active_at is not None)], "created_ms DESC, id DESC", limit)

    # -- model registry (versions are immutable: there is no update or delete of them) ----------------------
    async def add_model_version(self, name: str, build: Callable[[int], ModelVersionRecord]) -> ModelVersionRecord:
        """Store ``build(version)`` under ``name``'s next version (one more than the highest stored), the number
        chosen inside the insert's transaction: two registrations at once get different versions. ``build`` runs
        inside the transaction (it signs the manifest, which names the version): keep it short."""
        async with self.driver.transaction() as tx:
            await tx.lock(f"model-version:{name}")
            row = await tx.fetchone("SELECT coalesce(max(version), 0) AS v FROM model_versions WHERE name=?", (name,))
            rec = build(int(row["v"]) + 1 if row is not None else 1)
            if rec.name != name:
                raise ValueError(f"built a version of {rec.name!r} while registering {name!r}")
            await tx.execute(insert_sql("model_versions", MODEL_VERSIONS), values(rec, MODEL_VERSIONS))
        return rec

    async def put_model_version(self, rec: ModelVersionRecord) -> None:
        """Store a version whose number is given (an imported signed model); ConflictError if it exists."""
        await self._create("model_versions", MODEL_VERSIONS, rec, "model version", f"{rec.name}@{rec.version}")

    async def get_model_version(self, name: str, version: int) -> ModelVersionRecord | None:
        return await self._one(_model_version, f"SELECT {MODEL_VERSIONS} FROM model_versions",
                               [("name = ?", name), ("version = ?", version)])

    async def list_model_versions(self, *, name: str | None = None, kind: str | None = None
                                  ) -> list[ModelVersionRecord]:
        """By name, then version."""
        return await self._list(_model_version, f"SELECT {MODEL_VERSIONS} FROM model_versions",
                                [("name = ?", name), ("kind = ?", kind)], "name, version")

    async def set_model_alias(self, *, name: str, alias: str, scope: str, version: int | None, at_ms: int, by: str,
                              reason: str, action: str = "set", expect: object = ANY
                              ) -> ModelAliasEvent:
        """Point ``alias`` of ``name`` in ``scope`` at ``version`` (None: remove it) and record the change in the
        alias history, in one transaction. ``expect``: the version the alias must point at now (None: unset),
        else ConflictError (a decision taken on what was read, e.g. a rollback, is not applied twice)."""
        async with self.driver.transaction() as tx:
            await tx.lock(f"model-alias:{name}")
            row = await tx.fetchone("SELECT version FROM model_aliases WHERE name=? AND alias=? AND scope=?",
                                    (name, alias, scope))
            previous = None if row is None else int(row["version"])
            if expect is not ANY and expect != previous:
                raise ConflictError(f"{alias} of {name} ({scope}) is {_version_text(previous)} now, not "
                                    f"{_version_text(expect)}: it changed meanwhile")
            event = ModelAliasEvent(name=name, alias=alias, scope=scope, action=action, version=version,
                                    previous=previous, ts=at_ms, set_by=by, reason=reason[:1000])
            if version is None:
                await tx.execute("DELETE FROM model_aliases WHERE name=? AND alias=? AND scope=?",
                                 (name, alias, scope))
            else:
                await tx.execute(insert_sql("model_aliases", MODEL_ALIASES, key="name, alias, scope"), (
                    name, alias, scope, version, at_ms, by, event.reason))
            got = await tx.fetchone(insert_sql("model_alias_events", MODEL_ALIAS_EVENTS) + " RETURNING id",
                                    values(event, MODEL_ALIAS_EVENTS))
        assert got is not None
        return dataclasses.replace(event, id=int(got["id"]))

    async def list_model_aliases(self, *, name: str | None = None) -> list[ModelAlias]:
        """By name, alias and scope."""
        return await self._list(lambda r: record(ModelAlias, r), f"SELECT {MODEL_ALIASES} FROM model_aliases",
                                [("name = ?", name)], "name, alias, scope")

    async def model_alias_history(self, name: str, *, alias: str | None = None, scope: str | None = None
                                  ) -> list[ModelAliasEvent]:
        """Oldest first."""
        return await self._list(lambda r: record(ModelAliasEvent, r), f"SELECT id, {MODEL_ALIAS_EVENTS} FROM "
                                "model_alias_events", [("name = ?", name), ("alias = ?", alias), ("scope = ?", scope)],
                                "id")

    # -- provisioning, users, credentials and audit ---------------------------------------------
    async def put_enrollment(self, e: Enrollment) -> None:
        """Create an enrollment; ConflictError if its id exists."""
        serials = None if e.serials is None else msgspec.json.encode(list(e.serials)).decode()
        await self._create("enrollments", ENROLLMENTS, e, "enrollment", e.id, serials=serials)

    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None:
        return await self._one(lambda r: record(Enrollment, r, serials=None if r["serials"] is None else tuple(
            json.loads(r["serials"]))), f"SELECT {ENROLLMENTS} FROM enrollments", [("id = ?", enrollment_id)])

    async def claim_serial(self, enrollment_id: str, serial: str, device: str, at_ms: int) -> bool:
        """Record that ``serial`` provisioned as ``device``; False if the serial was already used (atomic)."""
        return await self.driver.execute("INSERT INTO provisioned VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                                         (enrollment_id, serial, device, at_ms)) == 1

    async def provisioned_count(self, enrollment_id: str) -> int:
        row = await self.driver.fetchone("SELECT count(*) AS n FROM provisioned WHERE enrollment=?", (enrollment_id,))
        return int(row["n"]) if row else 0

    async def audit(self, r: AuditRecord) -> None:
        await self._add(self.driver, "audit", "ts_ms, actor, action, target, outcome, detail, source", [r], lambda r: {
            "target": r.target[:200], "detail": r.detail[:1000], "source": r.source[:100]})

    async def list_audit(self, *, limit: int = 200, action: str | None = None) -> list[AuditRecord]:
        """Newest first."""
        return await self._list(lambda r: record(AuditRecord, r), "SELECT id, ts_ms, actor, action, target, outcome, "
                                "detail, source FROM audit", [("action = ?", action)], "id DESC", limit)

    async def put_user(self, u: User) -> None:
        """Create or replace a user."""
        await self._upsert("users", "username", USERS, u)

    async def get_user(self, username: str) -> User | None:
        return await self._one(_user, f"SELECT {USERS} FROM users", [("username = ?", username)])

    async def list_users(self) -> list[User]:
        return await self._list(_user, f"SELECT {USERS} FROM users", [], "username")

    async def delete_user(self, username: str) -> bool:
        """False if there was no such user. Its tokens stay until ``revoke_tokens`` (callers do both)."""
        return await self.driver.execute("DELETE FROM users WHERE username=?", (username,)) == 1

    async def put_credential(self, c: Credential) -> None:
        await self.driver.execute(insert_sql("credentials", CREDENTIALS), values(c, CREDENTIALS))

    async def get_credential(self, credential_id: str) -> Credential | None:
        return await self._one(lambda r: record(Credential, r), f"SELECT {CREDENTIALS} FROM credentials",
                               [("id = ?", credential_id)])

    async def revoke_credential(self, credential_id: str, at_ms: int) -> bool:
        """False if there was no such unrevoked credential."""
        return await self.driver.execute("UPDATE credentials SET revoked_ms=? WHERE id=? AND revoked_ms IS NULL",
                                         (at_ms, credential_id)) == 1

    async def revoke_tokens(self, username: str, at_ms: int) -> int:
        """Revoke every unrevoked bearer token of ``username``; how many."""
        return await self.driver.execute("UPDATE credentials SET revoked_ms=? WHERE kind='token' AND subject=? AND "
                                         "revoked_ms IS NULL", (at_ms, username))

    async def delete_expired_tokens(self, now_ms: int, *, limit: int) -> int:
        """Delete at most ``limit`` bearer tokens that expired by ``now_ms``; how many."""
        return await self.driver.execute("DELETE FROM credentials WHERE id IN (SELECT id FROM credentials WHERE "
                                         "kind='token' AND expires_ms <= ? LIMIT ?)", (now_ms, limit))

    async def trim_tokens(self, username: str, *, keep: int) -> int:
        """Delete all but the ``keep`` newest bearer tokens of ``username``; how many were deleted."""
        return await self.driver.execute(
            "DELETE FROM credentials WHERE kind='token' AND subject=? AND id NOT IN (SELECT id FROM credentials "
            "WHERE kind='token' AND subject=? ORDER BY created_ms DESC, id LIMIT ?)", (username, username, keep))

    # -- alerts ---------------------------------------------------------------------------------
    async def list_alerts(
        self, *, status: AlertStatus | None = None, asset: str | None = None, tenant: str | None = None,
        limit: int = 200, incident: int | None = None, unresolved: bool = False, since_ms: int | None = None,
    ) -> list[Alert]:
        """Newest first; ``unresolved``: open or acknowledged (any status but resolved); ``since_ms``: first seen
        then or later."""
        return await self._list(_alert, f"SELECT {ALERTS} FROM alerts", [
            ("first_seen >= ?", since_ms), ("status = ?", None if status is None else status.value),
            ("asset = ?", asset), ("tenant = ?", tenant), ("incident = ?", incident),
            ("status <> 'resolved'", unresolved)], "last_seen DESC, id DESC", limit)

    async def get_alert(self, alert_id: int) -> Alert:
        """Raises NotFoundError."""
        row = await self.driver.fetchone(f"SELECT {ALERTS} FROM alerts WHERE id=?", (alert_id,))
        if row is None:
            raise NotFoundError("alert", alert_id)
        return _alert(row)

    # -- incidents (written by the alert service, the one writer; see store/alerting.py) -------------------
    async def reserve_ids(self, name: str, n: int) -> range:
        """Reserve ``n`` ids of ``alerts`` or ``incidents`` for this process (unique across processes)."""
        row = await self.driver.fetchone(al.id_block_sql(name), (n, n, n, n))
        assert row is not None
        return range(int(row["next"]) - n, int(row["next"]))

    async def write_alert_changes(self, changes: al.AlertChanges) -> dict[int, int]:
        """Write one batch of alert-service output in one transaction. Returns {the engine's alert id: the
        stored id} for new alerts that merged into an already open alert of the same (asset, kind)."""
        remap: dict[int, int] = {}
        async with self.driver.transaction() as tx:
            existing, new = al.updates_around_opens(changes)
            await tx.executemany(al.ALERT_UPDATE_SQL, [al.alert_update_params(a) for a in existing])
            for a in sorted(changes.opened, key=lambda o: o.id):
                got = await tx.fetchone(al.ALERT_OPEN_SQL, al.alert_open_params(a))
                assert got is not None
                if int(got["id"]) != a.id:
                    remap[a.id] = int(got["id"])
                if a.id in new:
                    await tx.execute(al.ALERT_UPDATE_SQL, al.alert_update_params(al.remapped(new[a.id], remap)))
            await self._add(tx, "incidents", al.INCIDENT_COLUMNS, changes.incidents, lambda r: {
                "assets": ",".join(r.assets)}, sql=al.INCIDENT_UPSERT_SQL)
            await self._add(tx, "incident_timeline", al.TIMELINE_COLUMNS, changes.timeline, lambda e: {
                "detail": e.detail[:2000], "data": msgspec.json.encode(e.data).decode()})
            await self._add(tx, "suppressions", al.SUPPRESSION_COLUMNS, changes.suppressions, lambda x: {
                "detail": x.detail[:1000]})
        return remap

    async def list_incidents(self, *, statuses: Sequence[str] | None = None, tenant: str | None = None,
                             asset: str | None = None, limit: int = 200,
                             opened_from: int | None = None) -> list[al.IncidentRecord]:
        """Newest first."""
        return await self._list(al.incident_from_row, f"SELECT {al.INCIDENT_COLUMNS} FROM incidents", [
            ("opened_at >= ?", opened_from), ("tenant = ?", tenant),
            ("id IN (SELECT incident FROM alerts WHERE asset = ?)", asset),  # incidents holding an alert of it
            (f"status IN ({_marks(len(statuses or ()))})", tuple(statuses) if statuses else None)],
            "opened_at DESC, id DESC", limit)

    async def get_incident(self, incident_id: int) -> al.IncidentRecord:
        """Raises NotFoundError."""
        found = await self._one(al.incident_from_row, f"SELECT {al.INCIDENT_COLUMNS} FROM incidents",
                                [("id = ?", incident_id)])
        if found is None:
            raise NotFoundError("incident", incident_id)
        return found

    async def incident_timeline(self, incident_id: int) -> list[al.TimelineEntry]:
        """Oldest first."""
        return [al.timeline_from_row(r) for r in await self.driver.fetch(al.TIMELINE_SELECT_SQL, (incident_id,))]

    async def list_suppressions(self, *, asset: str | None = None, rule: str | None = None,
                                since_ms: int | None = None, until_ms: int | None = None,
                                tenant: str | None = None, reason: str | None = None,
                                limit: int = 200) -> list[al.SuppressionRecord]:
        """Newest first."""
        return await self._list(lambda r: record(al.SuppressionRecord, r),
                                f"SELECT id, {al.SUPPRESSION_COLUMNS} FROM suppressions", [
                                    ("asset = ?", asset), ("rule = ?", rule), ("ts >= ?", since_ms),
                                    ("ts < ?", until_ms), ("tenant = ?", tenant), ("reason = ?", reason)],
                                "ts DESC, id DESC", limit)

    async def put_maintenance(self, window: al.MaintenanceRecord) -> None:
        """ConflictError if its id exists."""
        await self._create("maintenance_windows", al.MAINTENANCE_COLUMNS, window, "maintenance window", window.id,
                           created_by=window.by)

    async def list_maintenance(self, *, tenant: str | None = None, ending_after: int | None = None
                               ) -> list[al.MaintenanceRecord]:
        return await self._list(lambda r: record(al.MaintenanceRecord, r), al.MAINTENANCE_SELECT,
                                [("tenant = ?", tenant), ("end_ms > ?", ending_after)], "start_ms, id")

    async def put_silence(self, silence: al.SilenceRecord) -> None:
        """ConflictError if its id exists."""
        await self._create("silences", al.SILENCE_COLUMNS, silence, "silence", silence.id, created_by=silence.by)

    async def end_silence(self, silence_id: str, at_ms: int) -> al.SilenceRecord:
        """NotFoundError if there is no such silence still running."""
        row = await self.driver.fetchone(al.SILENCE_END_SQL, al.silence_end_params(silence_id, at_ms))
        if row is None:
            raise NotFoundError("running silence", silence_id)
        return record(al.SilenceRecord, row)

    async def list_silences(self, *, tenant: str | None = None, active_at: int | None = None
                            ) -> list[al.SilenceRecord]:
        return await self._list(lambda r: record(al.SilenceRecord, r), al.SILENCE_SELECT, [
            ("tenant = ?", tenant), ("until_ms > ?", active_at), ("ended_ms IS NULL", active_at is not None)],
            "start_ms, id")

    async def put_rules(self, text: str, *, by: str, at_ms: int, tenant: str | None = None) -> int:
        """Store a rule document as the next version of ``tenant``'s (None: the platform's default); returns the
        version."""
        row = await self.driver.fetchone(*al.rules_insert(text, by, at_ms, tenant))
        assert row is not None
        return int(row["version"])

    async def latest_rules(self) -> al.RuleSetRecord | None:
        """The platform's default rule document in force."""
        row = await self.driver.fetchone(al.RULES_LATEST_SQL)
        return None if row is None else record(al.RuleSetRecord, row)

    async def tenant_rules(self) -> list[al.RuleSetRecord]:
        """Each tenant's own rule document in force (tenants without one use the default)."""
        return [record(al.RuleSetRecord, r) for r in await self.driver.fetch(al.TENANT_RULES_LATEST_SQL)]

    async def put_labels(self, labels: Sequence[Label]) -> None:
        """Store technician feedback (one row per label; a later label on an alert does not replace one)."""
        await self._add(self.driver, "labels", al.LABEL_COLUMNS, labels, lambda x: {
            "verdict": x.verdict.value, "by_person": x.by})

    async def list_labels(self, *, tenant: str | None = None, asset: str | None = None, alert: int | None = None,
                          since_ms: int | None = None, limit: int = 1_000_000) -> list[Label]:
        """Oldest first."""
        return await self._list(al.label_from_row, f"SELECT {al.LABEL_COLUMNS.replace('by_person', 'by_person AS by')}"
                                " FROM labels", [("tenant = ?", tenant), ("asset = ?", asset), ("alert = ?", alert),
                                                 ("ts >= ?", since_ms)], "ts, id", limit)  # training's order

    async def put_override(self, override: al.OverrideRecord) -> None:
        await self.driver.execute(al.OVERRIDE_UPSERT_SQL, al.override_params(override))

    async def list_overrides(self) -> list[al.OverrideRecord]:
        return [al.override_from_row(r) for r in await self.driver.fetch(al.OVERRIDE_SELECT_SQL)]

    async def put_work_order(self, order: al.WorkOrderRecord) -> None:
        """ConflictError if its id exists."""
        await self._create("work_orders", al.WORK_ORDER_COLUMNS, order, "work order", order.id)

    async def close_work_order(self, order_id: str, *, at_ms: int, downtime_end: int | None,
                               by: str) -> al.WorkOrderRecord:
        """NotFoundError if there is no such open work order."""
        row = await self.driver.fetchone(al.WORK_ORDER_CLOSE_SQL, (at_ms, downtime_end, by, order_id))
        if row is None:
            raise NotFoundError("open work order", order_id)
        return record(al.WorkOrderRecord, row)

    async def list_work_orders(self, *, tenant: str | None = None, since_ms: int | None = None,
                               limit: int = 100_000) -> list[al.WorkOrderRecord]:
        """Oldest first: the open ones and those closed since ``since_ms``."""
        return await self._list(lambda r: record(al.WorkOrderRecord, r), f"SELECT {al.WORK_ORDER_COLUMNS} FROM "
                                "work_orders", [("tenant = ?", tenant), ("(closed_ms IS NULL OR closed_ms >= ?)",
                                                                         since_ms)], "opened_ms, id", limit)

    async def put_undelivered(self, records: Sequence[al.UndeliveredRecord]) -> None:
        await self._add(self.driver, "notification_dead_letters", al.UNDELIVERED_COLUMNS, records)

    # -- campaigns (rollouts of model versions; their service is edgeloop.campaigns.service) -----------
    async def add_campaign(self, c: CampaignRecord) -> None:
        """Create a campaign; ConflictError if its id exists or an active campaign already rolls out the same
        subject (checked and inserted in one transaction, under a lock per subject)."""
        try:
            async with self.driver.transaction() as tx:
                await tx.lock(f"campaign-subject:{c.subject}")
                busy = await tx.fetchone("SELECT id FROM campaigns WHERE subject=? AND active=?", (c.subject, True))
                if busy is not None:
                    raise ConflictError(f"campaign {busy['id']!r} is still rolling out {c.subject!r}")
                await tx.execute(insert_sql("campaigns", CAMPAIGNS), values(c, CAMPAIGNS))
        except DuplicateKey as exc:
            raise ConflictError(f"campaign {c.id!r} already exists") from exc

    async def put_campaign(self, c: CampaignRecord) -> None:
        """Store a campaign's new state (its spec never changes); NotFoundError if there is no such campaign."""
        if await self.driver.execute("UPDATE campaigns SET state=?, phase=?, active=?, updated_ms=? WHERE id=?",
                                     (c.state, c.phase, c.active, c.updated_ms, c.id)) != 1:
            raise NotFoundError("campaign", c.id)

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        return await self._one(_campaign, f"SELECT {CAMPAIGNS} FROM campaigns", [("id = ?", campaign_id)])

    async def list_campaigns(self, *, running_only: bool = False, subject: str | None = None,
                             limit: int = 1000) -> list[CampaignRecord]:
        """Newest first; ``running_only``: the active ones (running, or finished with actions still to apply)."""
        return await self._list(_campaign, f"SELECT {CAMPAIGNS} FROM campaigns", [
            ("active = ?", True if running_only else None), ("subject = ?", subject)], "created_ms DESC, id", limit)

    async def list_campaign_audit(self, campaign_id: str, *, limit: int = 10_000) -> list[AuditRecord]:
        """The audit records of a campaign's log entries (``campaign.*`` on it), oldest first."""
        return await self._list(lambda r: record(AuditRecord, r), "SELECT id, ts_ms, actor, action, target, outcome, "
                                "detail, source FROM audit", [("target = ?", campaign_id),
                                                              ("action LIKE 'campaign.%'", True)], "id", limit)

    async def list_model_onsets(self, *, models: Sequence[str], kind: str, since: int, until: int,
                                limit: int = 100_000) -> list[tuple[str, str, int]]:
        """(model, device, ts) of the onset findings of ``models`` of one ``kind`` with ``since <= ts < until``, in
        time order: what the campaign gates count, without the findings' detail (several times cheaper to read)."""
        rows = await self.driver.fetch(
            f"SELECT model, device, ts FROM model_findings WHERE model IN ({_marks(len(models))}) AND kind = ? AND "
            "ts >= ? AND ts < ? ORDER BY ts, id LIMIT ?", (*models, kind, since, until, limit)) if models else []
        return [(r["model"], r["device"], int(r["ts"])) for r in rows]
