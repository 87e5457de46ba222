"""The one schema (both dialects) and its numbered migrations, applied at open in one transaction.

``DDL`` is the current schema; its type placeholders (``{big}`` ...) are filled per dialect by the driver's
``types``. Opening a database creates what is missing (``IF NOT EXISTS``), then brings the columns of an older
database up to date with each migration newer than its recorded ``schema_version``, then records the version:
all in one transaction, so a failed upgrade leaves the database as it was. A new column is one more entry in
``MIGRATIONS`` (and in ``DDL``, for new databases); a new table needs ``DDL`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from edgeloop.errors import StoreError
from edgeloop.store.driver import Driver

SQLITE_TYPES: Final = {"big": "INTEGER", "real": "REAL", "blob": "BLOB", "bool": "INTEGER",
                       "serial": "INTEGER PRIMARY KEY", "norowid": " WITHOUT ROWID"}
PG_TYPES: Final = {"big": "bigint", "real": "double precision", "blob": "bytea", "bool": "boolean",
                   "serial": "bigserial PRIMARY KEY", "norowid": ""}

DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sites (id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines (id TEXT PRIMARY KEY, site TEXT NOT NULL REFERENCES sites(id), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assets (id TEXT PRIMARY KEY, line TEXT NOT NULL REFERENCES lines(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, criticality INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (name TEXT PRIMARY KEY, body {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id), asset TEXT NOT
    NULL REFERENCES assets(id), profile TEXT NOT NULL REFERENCES profiles(name), name TEXT NOT NULL, rollout_group TEXT
    NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS chunks (device TEXT NOT NULL, seq {big} NOT NULL, t0 {big} NOT NULL, t1 {big} NOT NULL, n
    INTEGER NOT NULL, channels TEXT NOT NULL, data {blob} NOT NULL, received {big} NOT NULL, PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS chunks_time ON chunks (device, t0);
CREATE TABLE IF NOT EXISTS rollup_1m (device TEXT NOT NULL, channel TEXT NOT NULL, bucket {big} NOT NULL, n {big} NOT
    NULL, vmin {real} NOT NULL, vmax {real} NOT NULL, vsum {real} NOT NULL, PRIMARY KEY (device, channel,
    bucket)){norowid};
CREATE TABLE IF NOT EXISTS dead_letters (id {serial}, received {big} NOT NULL, topic TEXT NOT NULL, device TEXT, tenant
    TEXT, code TEXT NOT NULL, detail TEXT NOT NULL, size INTEGER NOT NULL, raw {blob} NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device, id);
CREATE TABLE IF NOT EXISTS device_events (id {serial}, device TEXT NOT NULL, tenant TEXT NOT NULL, ts {big} NOT NULL,
    kind TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL, received {big} NOT NULL,
    UNIQUE (device, kind, ts, message));
CREATE TABLE IF NOT EXISTS alerts (id {serial}, tenant TEXT NOT NULL, asset TEXT NOT NULL, device TEXT NOT NULL, kind
    TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL, first_seen {big} NOT NULL, last_seen {big} NOT NULL,
    count INTEGER NOT NULL, score {real} NOT NULL, message TEXT NOT NULL, explanation TEXT NOT NULL, detector TEXT NOT
    NULL, acknowledged_by TEXT, acknowledged_at {big}, resolved_by TEXT, resolved_at {big}, incident {big}, priority
    {real} NOT NULL DEFAULT 0, confidence {real} NOT NULL DEFAULT 1, suppressed TEXT, cleared_at {big}, model TEXT NOT
    NULL DEFAULT '');
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (asset, kind) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (last_seen);
CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, line TEXT NOT NULL, profile TEXT NOT
    NULL, claim_hash TEXT NOT NULL, expires_ms {big} NOT NULL, created_ms {big} NOT NULL, created_by TEXT NOT NULL,
    asset TEXT, serials TEXT, max_devices {big});
CREATE TABLE IF NOT EXISTS provisioned (enrollment TEXT NOT NULL, serial TEXT NOT NULL, device TEXT NOT NULL, at_ms
    {big} NOT NULL, PRIMARY KEY (enrollment, serial));
CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, role TEXT NOT NULL, tenant TEXT, password_hash TEXT NOT
    NULL, created_ms {big} NOT NULL, disabled {bool} NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, role TEXT NOT
    NULL, tenant TEXT, created_ms {big} NOT NULL, expires_ms {big}, secret_hash TEXT NOT NULL, revoked_ms {big});
CREATE INDEX IF NOT EXISTS credentials_subject ON credentials (kind, subject, created_ms);
CREATE INDEX IF NOT EXISTS credentials_expiry ON credentials (kind, expires_ms);
CREATE TABLE IF NOT EXISTS audit (id {serial}, ts_ms {big} NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target
    TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, heartbeat TEXT NOT NULL, ts {big} NOT
    NULL, received {big} NOT NULL, dropped {big} NOT NULL, dropped_at {big}, status TEXT, status_ms {big});
CREATE INDEX IF NOT EXISTS gateways_tenant ON gateways (tenant, id);
CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, device TEXT NOT NULL, action TEXT NOT
    NULL, value {real} NOT NULL, key TEXT NOT NULL UNIQUE, seq {big} NOT NULL, ts {big} NOT NULL, expires {big} NOT
    NULL, trace TEXT NOT NULL, issued_by TEXT NOT NULL, decision TEXT NOT NULL, status TEXT NOT NULL, status_ms {big}
    NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, value_before {real}, read_back {real}, sends INTEGER NOT NULL,
    sent_ms {big}, UNIQUE (device, seq));
CREATE INDEX IF NOT EXISTS commands_open ON commands (status, expires);
CREATE TABLE IF NOT EXISTS policy_documents (tenant TEXT NOT NULL, version INTEGER NOT NULL, text TEXT NOT NULL,
    created_ms {big} NOT NULL, created_by TEXT NOT NULL, PRIMARY KEY (tenant, version));
CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, asset TEXT NOT NULL, device TEXT NOT
    NULL, policy TEXT NOT NULL, policy_version INTEGER NOT NULL, mode TEXT NOT NULL, state TEXT NOT NULL, created_ms
    {big} NOT NULL, updated_ms {big} NOT NULL, expires_ms {big} NOT NULL, command TEXT NOT NULL, trace TEXT NOT NULL,
    cause TEXT NOT NULL, action TEXT NOT NULL, approvals INTEGER NOT NULL, needed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_by_asset ON decisions (tenant, asset, created_ms);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (state, expires_ms);
CREATE TABLE IF NOT EXISTS decision_log (id {serial}, decision TEXT NOT NULL, tenant TEXT NOT NULL, asset TEXT NOT
    NULL, ts {big} NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL, hash
    TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS decision_log_by_decision ON decision_log (decision, id);
CREATE TABLE IF NOT EXISTS automation_holds (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, target TEXT NOT NULL, held_by
    TEXT NOT NULL, reason TEXT NOT NULL, created_ms {big} NOT NULL, until_ms {big} NOT NULL, ended_ms {big}, ended_by
    TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS automation_holds_by_target ON automation_holds (target, until_ms);
CREATE INDEX IF NOT EXISTS commands_by_time ON commands (tenant, ts);
CREATE TABLE IF NOT EXISTS gateway_devices (gateway TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (gateway, device));
CREATE INDEX IF NOT EXISTS gateway_devices_device ON gateway_devices (device);
CREATE TABLE IF NOT EXISTS gateway_configs (gateway TEXT NOT NULL, tenant TEXT NOT NULL, version INTEGER NOT NULL,
    config TEXT NOT NULL, created_ms {big} NOT NULL, created_by TEXT NOT NULL, status TEXT NOT NULL, status_ms {big},
    error TEXT NOT NULL, PRIMARY KEY (gateway, version));
CREATE TABLE IF NOT EXISTS incidents (id {big} PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, scope TEXT NOT
    NULL, rule TEXT NOT NULL, title TEXT NOT NULL, status TEXT NOT NULL, priority {real} NOT NULL, route TEXT NOT NULL,
    opened_at {big} NOT NULL, last_raise {big} NOT NULL, page_due {big} NOT NULL, paged_at {big}, resolved_at {big},
    merged_into {big}, assets TEXT NOT NULL, updated_at {big} NOT NULL, assignee TEXT, acknowledged_by TEXT,
    acknowledged_at {big}, closed_at {big}, escalation_level INTEGER NOT NULL, lifecycle TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (status, priority);
CREATE INDEX IF NOT EXISTS incidents_recent ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS incident_timeline (id {serial}, incident {big} NOT NULL, ts {big} NOT NULL, kind TEXT NOT
    NULL, actor TEXT NOT NULL, detail TEXT NOT NULL, data TEXT NOT NULL, recorded_at {big});
CREATE INDEX IF NOT EXISTS incident_timeline_incident ON incident_timeline (incident, id);
CREATE TABLE IF NOT EXISTS suppressions (id {serial}, ts {big} NOT NULL, tenant TEXT NOT NULL, asset TEXT NOT NULL, rule
    TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, incident {big});
CREATE INDEX IF NOT EXISTS suppressions_asset ON suppressions (asset, ts);
CREATE INDEX IF NOT EXISTS suppressions_ts ON suppressions (ts);
CREATE TABLE IF NOT EXISTS maintenance_windows (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, scope TEXT NOT NULL, target
    TEXT NOT NULL, start_ms {big} NOT NULL, end_ms {big} NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL,
    created_ms {big} NOT NULL);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT
    NULL, rule TEXT NOT NULL, start_ms {big} NOT NULL, until_ms {big} NOT NULL, created_by TEXT NOT NULL, reason TEXT
    NOT NULL, created_ms {big} NOT NULL, ended_ms {big});
CREATE TABLE IF NOT EXISTS alert_rules (version INTEGER PRIMARY KEY, text TEXT NOT NULL, created_ms {big} NOT NULL,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenant_alert_rules (tenant TEXT NOT NULL, version INTEGER NOT NULL, text TEXT NOT NULL,
    created_ms {big} NOT NULL, created_by TEXT NOT NULL, PRIMARY KEY (tenant, version));
CREATE TABLE IF NOT EXISTS id_blocks (name TEXT PRIMARY KEY, next {big} NOT NULL);
CREATE TABLE IF NOT EXISTS labels (id {serial}, alert {big} NOT NULL, incident {big}, tenant TEXT NOT NULL, asset TEXT
    NOT NULL, device TEXT NOT NULL, rule TEXT NOT NULL, verdict TEXT NOT NULL, fault_type TEXT NOT NULL, reason TEXT NOT
    NULL, start_ms {big} NOT NULL, end_ms {big} NOT NULL, first_seen {big} NOT NULL, last_seen {big} NOT NULL, peak
    {real}, model_version TEXT NOT NULL, by_person TEXT NOT NULL, ts {big} NOT NULL);
CREATE INDEX IF NOT EXISTS labels_alert ON labels (alert);
CREATE INDEX IF NOT EXISTS labels_ts ON labels (ts);
CREATE TABLE IF NOT EXISTS notification_dead_letters (id {serial}, ts {big} NOT NULL, tenant TEXT NOT NULL, incident
    {big} NOT NULL, channel TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notification_dead_letters_ts ON notification_dead_letters (ts);
CREATE TABLE IF NOT EXISTS work_orders (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, asset TEXT NOT NULL, incident {big},
    alert {big}, opened_ms {big} NOT NULL, downtime_start {big}, closed_ms {big}, downtime_end {big}, opened_by TEXT NOT
    NULL, closed_by TEXT, note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS work_orders_opened ON work_orders (opened_ms);
CREATE TABLE IF NOT EXISTS rule_overrides (asset TEXT NOT NULL, rule TEXT NOT NULL, levels TEXT NOT NULL, set_ms {big}
    NOT NULL, set_by TEXT NOT NULL, PRIMARY KEY (asset, rule));
CREATE TABLE IF NOT EXISTS model_findings (id {serial}, model TEXT NOT NULL, live {bool} NOT NULL, tenant TEXT NOT NULL,
    asset TEXT NOT NULL, device TEXT NOT NULL, ts {big} NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, score
    {real} NOT NULL, explanation TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS model_findings_model ON model_findings (model, ts);
CREATE TABLE IF NOT EXISTS drift_events (id {serial}, tenant TEXT NOT NULL, device TEXT NOT NULL, asset TEXT, profile
    TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, since_ms {big} NOT NULL, detected_ms {big} NOT NULL, figure
    {real} NOT NULL, threshold {real} NOT NULL, channels TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS drift_events_device ON drift_events (device, detected_ms);
CREATE TABLE IF NOT EXISTS model_versions (name TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL, profile
    TEXT, format TEXT NOT NULL, sha256 TEXT NOT NULL, size {big} NOT NULL, manifest TEXT NOT NULL, signature {blob} NOT
    NULL, signer TEXT NOT NULL, created_ms {big} NOT NULL, created_by TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS model_aliases (name TEXT NOT NULL, alias TEXT NOT NULL, scope TEXT NOT NULL, version INTEGER
    NOT NULL, set_ms {big} NOT NULL, set_by TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (name, alias, scope));
CREATE TABLE IF NOT EXISTS model_alias_events (id {serial}, name TEXT NOT NULL, alias TEXT NOT NULL, scope TEXT NOT
    NULL, action TEXT NOT NULL, version INTEGER, previous INTEGER, ts {big} NOT NULL, set_by TEXT NOT NULL, reason TEXT
    NOT NULL);
CREATE INDEX IF NOT EXISTS model_alias_events_alias ON model_alias_events (name, alias, scope, id);
CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, payload TEXT NOT NULL, subject TEXT NOT NULL, spec TEXT
    NOT NULL, state TEXT NOT NULL, phase TEXT NOT NULL, active {bool} NOT NULL, created_ms {big} NOT NULL, updated_ms
    {big} NOT NULL);
CREATE INDEX IF NOT EXISTS campaigns_subject ON campaigns (subject, active);
"""

#: (version, the columns it adds to tables that existed before it: (table, column, type)). A table a version
#: introduced is created whole by ``DDL``.
MIGRATIONS: Final[tuple[tuple[int, tuple[tuple[str, str, str], ...]], ...]] = (
    # 2: incidents, suppressions, silences, maintenance, rule sets; alerts gain incident columns
    (2, (("alerts", "incident", "{big}"), ("alerts", "priority", "{real} NOT NULL DEFAULT 0"),
         ("alerts", "confidence", "{real} NOT NULL DEFAULT 1"), ("alerts", "suppressed", "TEXT"),
         ("alerts", "cleared_at", "{big}"))),
    # 3: incident timeline entries carry the time they were recorded (recorded_at) beside their data time (ts)
    (3, (("incident_timeline", "recorded_at", "{big}"),)),
    # 4: provenance: an alert records the model version (or rule version) that raised it
    (4, (("alerts", "model", "TEXT NOT NULL DEFAULT ''"),)),
    # 5: a device's rollout group (the model aliases of scope group:NAME it follows)
    (5, (("devices", "rollout_group", "TEXT NOT NULL DEFAULT ''"),)),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]


def statements(types: Mapping[str, str]) -> list[str]:
    """``DDL`` as single statements in the dialect of ``types``."""
    return [s.strip() for s in DDL.format(**types).split(";") if s.strip()]


async def migrate(driver: Driver, where: str) -> None:
    """Create or upgrade the schema to ``SCHEMA_VERSION`` in one transaction (``where`` names the database)."""
    async with driver.transaction() as tx:
        await tx.lock("schema")  # concurrent starters do not race on CREATE TABLE
        for sql in statements(driver.types):
            await tx.execute(sql)
        found = await tx.fetchone("SELECT value FROM meta WHERE key='schema_version'")
        version = 1 if found is None else int(found["value"])  # None: new (each step below finds its column)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where} has schema version {version}, this EdgeLoop needs {SCHEMA_VERSION}")
        for number, columns in MIGRATIONS:
            for table, column, kind in columns if number > version else ():
                if column not in {r["name"] for r in await tx.fetch(driver.columns_sql, (table,))}:
                    await tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind.format(**driver.types)}")
        await tx.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET "
                         "value=excluded.value", (str(SCHEMA_VERSION),))
