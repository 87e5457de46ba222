"""The storage contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import msgspec
import numpy as np
import pytest

from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.errors import ConflictError, NotFoundError
from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.store import DeadLetter, Store, TelemetryChunk, open_store
from edgeloop.store.alerting import AlertChanges, TimelineEntry
from edgeloop.store.base import DriftRecord, GatewayHeartbeat, ModelFinding
from edgeloop.store.schema import PG_TYPES, SCHEMA_VERSION, SQLITE_TYPES
from tests.support import open_alert

T0 = 1_767_225_600_000


def chunk(device: str, seq: int, start: int, n: int, channels: tuple[str, ...] = ("a", "b"),
          period: int = 1000) -> TelemetryChunk:
    ts = start + np.arange(n, dtype=np.int64) * period
    values = np.column_stack([np.arange(n, dtype=np.float64) + 10 * j for j in range(len(channels))])
    return TelemetryChunk(device=device, seq=seq, channels=channels, ts=ts, values=values, received_ms=start)


async def seed_registry(store: Store) -> None:
    await store.put_tenant(Tenant(id="acme", name="Acme"))
    await store.put_site(Site(id="s1", tenant="acme"))
    await store.put_line(Line(id="l1", site="s1"))
    await store.put_asset(Asset(id="a1", line="l1", kind="pump"))
    await store.put_profile(DeviceProfile(name="p1", channels=[ChannelSpec(name="a", unit="mm/s", min=0, max=50)]))
    await store.put_device(Device(id="d1", tenant="acme", asset="a1", profile="p1"))


async def test_registry_round_trip(store: Store) -> None:
    await seed_registry(store)
    await store.put_asset(Asset(id="a1", line="l1", kind="motor", criticality=5))  # upsert
    reg = await store.load_registry()
    assert reg.devices["d1"].asset == "a1"
    assert reg.assets["a1"].kind == "motor"
    assert reg.assets["a1"].criticality == 5
    assert reg.profiles["p1"].channels[0].unit == "mm/s"
    assert reg.tenant_of("asset", "a1") == "acme"


async def test_duplicate_messages_are_stored_once(store: Store) -> None:
    first = await store.write_chunks([chunk("d1", 1, T0, 5), chunk("d1", 2, T0 + 5000, 5)])
    assert first == [True, True]
    again = await store.write_chunks([chunk("d1", 2, T0 + 5000, 5), chunk("d1", 3, T0 + 10000, 5),
                                      chunk("d1", 3, T0 + 10000, 5)])
    assert again == [False, True, False]
    assert await store.telemetry_counts("d1") == (3, 15)
    assert await store.telemetry_counts() == (3, 15)
    # Rollups counted each sample exactly once despite the resends.
    q = await store.query_telemetry("d1", ["a"], T0 - 60_000 * 10, T0 + 60_000 * 100, points=10)
    assert q.source == "rollup"
    assert sum(1 for _ in q.series["a"].ts) >= 1
    total_avg_weighted = sum(q.series["a"].avg[i] or 0 for i in range(len(q.series["a"].ts)))
    assert total_avg_weighted == pytest.approx(2.0)  # 15 samples in one bucket: values 0..4 thrice -> mean 2


async def test_same_seq_on_other_device_is_not_a_duplicate(store: Store) -> None:
    assert await store.write_chunks([chunk("d1", 1, T0, 2), chunk("d2", 1, T0, 2)]) == [True, True]


async def test_raw_query_buckets_min_avg_max(store: Store) -> None:
    await store.write_chunks([chunk("d1", 1, T0, 10)])
    q = await store.query_telemetry("d1", ["a", "b"], T0, T0 + 10_000, points=5)
    assert q.source == "raw"
    assert q.bucket_ms == 2000
    assert q.series["a"].ts == [T0 + i * 2000 for i in range(5)]
    assert q.series["a"].min == [0, 2, 4, 6, 8]
    assert q.series["a"].max == [1, 3, 5, 7, 9]
    assert q.series["b"].avg == [10.5, 12.5, 14.5, 16.5, 18.5]


async def test_missing_values_are_not_zero(store: Store) -> None:
    c = chunk("d1", 1, T0, 4)
    c.values[1, 0] = np.nan
    c.values[2, 0] = np.nan
    await store.write_chunks([c])
    q = await store.query_telemetry("d1", ["a"], T0, T0 + 4000, points=1)
    assert q.series["a"].min == [0.0]
    assert q.series["a"].avg == [1.5]  # (0 + 3) / 2, NaN skipped


async def test_month_of_data_from_rollups(store: Store) -> None:
    # 30 days at one sample per minute, in day-long messages.
    day = 24 * 60
    chunks = [chunk("d1", i, T0 + i * day * 60_000, day, channels=("a",), period=60_000) for i in range(30)]
    await store.write_chunks(chunks)
    q = await store.query_telemetry("d1", ["a"], T0, T0 + 30 * day * 60_000, points=300)
    assert q.source == "rollup"
    assert 250 <= len(q.series["a"].ts) <= 300
    assert q.series["a"].min[0] == 0
    assert max(v for v in q.series["a"].max if v is not None) == day - 1


async def test_query_reads_only_the_range(store: Store) -> None:
    await seed_registry(store)
    await store.write_chunks([chunk("d1", 1, T0, 10), chunk("d1", 2, T0 + 100_000, 10)])
    q = await store.query_telemetry("d1", ["a"], T0 + 100_000, T0 + 110_000, points=10)
    assert q.series["a"].ts[0] == T0 + 100_000
    assert len(q.series["a"].ts) == 10
    assert (await store.latest_sample_ms()) == {"d1": T0 + 109_000}
    assert (await store.first_sample_ms()) == {"d1": T0}  # when its data began (the KPIs count from there)


async def test_dead_letters(store: Store) -> None:
    big = b"x" * 10_000
    await store.write_dead_letters([
        DeadLetter.of(received_ms=T0, topic="t", code="not_json", detail="bad", raw=big, device="d1"),
        DeadLetter.of(received_ms=T0, topic="t", code="unknown_device", detail="who", raw=b"{}"),
    ])
    letters = await store.list_dead_letters()
    assert [d.code for d in letters] == ["unknown_device", "not_json"]
    assert letters[1].size == 10_000
    assert len(letters[1].raw) == 4096
    assert await store.dead_letter_counts() == {"d1": 1, "": 1}
    assert [d.code for d in await store.list_dead_letters(device="d1")] == ["not_json"]


def make_alert(**kw: object) -> Alert:
    base: dict[str, object] = dict(tenant="acme", asset="a1", device="d1", kind="anomaly",
                                   severity=Severity.WARNING, first_seen=T0, last_seen=T0, score=2.0,
                                   explanation={"a": 0.7, "b": 0.3}, detector="test-v1", message="m")
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


async def test_one_open_alert_per_asset_and_kind(store: Store) -> None:
    a = await open_alert(store, make_alert())
    b = await open_alert(store, make_alert(last_seen=T0 + 5000, score=3.0, severity=Severity.CRITICAL))
    assert a.id == b.id  # merged: the engine updates severity and score of the alert it now knows the id of
    assert b.count == 2
    assert b.last_seen == T0 + 5000
    assert b.first_seen == T0
    assert b.explanation == {"a": 0.7, "b": 0.3}
    other = await open_alert(store, make_alert(kind="data_gap"))
    assert other.id != a.id
    assert len(await store.list_alerts(status=AlertStatus.OPEN)) == 2


async def test_alert_lifecycle(store: Store) -> None:
    """The alert service writes a person's moves as updated rows: status only moves forward, who and when are kept
    from the first, and an engine update that carries neither leaves them (it never reopens an alert)."""
    a = await open_alert(store, make_alert())

    async def update(row: Alert) -> Alert:
        await store.write_alert_changes(AlertChanges(updated=[row]))
        return await store.get_alert(a.id)

    acked = await update(msgspec.structs.replace(a, status=AlertStatus.ACKNOWLEDGED, acknowledged_by="ana",
                                                 acknowledged_at=T0 + 1))
    assert (acked.status, acked.acknowledged_by, acked.acknowledged_at) == (AlertStatus.ACKNOWLEDGED, "ana", T0 + 1)
    engine = await update(msgspec.structs.replace(a, status=AlertStatus.OPEN, last_seen=T0 + 8, count=3))
    assert (engine.status, engine.acknowledged_by, engine.count) == (AlertStatus.ACKNOWLEDGED, "ana", 3)
    # Still not resolved, so a repeat merges into it.
    assert (await open_alert(store, make_alert(last_seen=T0 + 9))).id == a.id
    resolved = await update(msgspec.structs.replace(a, status=AlertStatus.RESOLVED, resolved_by="bo",
                                                    resolved_at=T0 + 2))
    assert (resolved.status, resolved.resolved_by) == (AlertStatus.RESOLVED, "bo")
    late = await update(msgspec.structs.replace(a, status=AlertStatus.ACKNOWLEDGED, acknowledged_by="x",
                                                acknowledged_at=T0 + 3))
    assert (late.status, late.acknowledged_by) == (AlertStatus.RESOLVED, "ana")
    with pytest.raises(NotFoundError):
        await store.get_alert(99999)
    # Once resolved, the same condition opens a new alert.
    fresh = await open_alert(store, make_alert(first_seen=T0 + 100, last_seen=T0 + 100))
    assert fresh.id != a.id
    assert [x.id for x in await store.list_alerts(asset="a1")] == [fresh.id, a.id]
    assert (await store.get_alert(a.id)).resolved_by == "bo"


async def test_enrollment_serial_used_once_and_audit(store: Store) -> None:
    from edgeloop.store.base import AuditRecord, Enrollment

    e = Enrollment(id="batch-1", tenant="acme", line="l1", profile="p1", claim_hash="h" * 64,
                   expires_ms=T0 + 86_400_000, created_ms=T0, created_by="ana", serials=("SN1", "SN2"))
    await store.put_enrollment(e)
    with pytest.raises(ConflictError):
        await store.put_enrollment(e)
    assert await store.get_enrollment("batch-1") == e
    assert await store.get_enrollment("nope") is None
    assert await store.claim_serial("batch-1", "SN1", "batch-1-sn1", T0) is True
    assert await store.claim_serial("batch-1", "SN1", "batch-1-sn1", T0 + 1) is False, "one use per serial"
    assert await store.claim_serial("batch-2", "SN1", "batch-2-sn1", T0) is True, "serials are per enrollment"
    assert await store.provisioned_count("batch-1") == 1
    await store.audit(AuditRecord(ts_ms=T0, actor="device:batch-1-sn1", action="provision", target="SN1",
                                  outcome="ok", source="10.0.0.7"))
    await store.audit(AuditRecord(ts_ms=T0 + 1, actor="anonymous", action="provision", target="SN9",
                                  outcome="refused", detail="serial not in the enrollment"))
    log = await store.list_audit()
    assert [(r.outcome, r.target) for r in log] == [("refused", "SN9"), ("ok", "SN1")]
    assert log[1].source == "10.0.0.7"
    assert [r.target for r in await store.list_audit(action="provision", limit=1)] == ["SN9"]


async def test_users_and_credentials(store: Store) -> None:
    from edgeloop.store.base import Credential, User

    ana = User(username="ana", role="operator", tenant="acme", password_hash="scrypt$x", created_ms=T0)
    await store.put_user(ana)
    assert await store.get_user("ana") == ana
    await store.put_user(User(username="ana", role="viewer", tenant="acme", password_hash="scrypt$y",
                              created_ms=T0, disabled=True))
    got = await store.get_user("ana")
    assert got is not None
    assert (got.role, got.disabled, got.password_hash) == ("viewer", True, "scrypt$y")
    await store.put_user(User(username="root", role="admin", tenant=None, password_hash="h", created_ms=T0))
    assert [u.username for u in await store.list_users()] == ["ana", "root"]
    assert await store.get_user("nobody") is None

    token = Credential(id="t" * 64, kind="token", subject="ana", role="viewer", tenant="acme", created_ms=T0,
                       expires_ms=T0 + 1000)
    await store.put_credential(token)
    assert await store.get_credential("t" * 64) == token
    assert await store.revoke_credential("t" * 64, T0 + 5) is True
    assert await store.revoke_credential("t" * 64, T0 + 6) is False
    revoked = await store.get_credential("t" * 64)
    assert revoked is not None
    assert revoked.revoked_ms == T0 + 5


async def test_dead_letters_by_tenant(store: Store) -> None:
    await store.write_dead_letters([
        DeadLetter.of(received_ms=T0, topic="t", code="bad_schema", detail="x", raw=b"{}", device="d1", tenant="a"),
        DeadLetter.of(received_ms=T0, topic="t", code="bad_schema", detail="y", raw=b"{}", device="d2", tenant="b"),
    ])
    assert [d.device for d in await store.list_dead_letters(tenant="a")] == ["d1"]
    assert [d.device for d in await store.list_dead_letters(tenant="b", device="d1")] == []


async def test_device_events_are_stored_once_and_filtered(store: Store) -> None:
    from edgeloop.store.base import StoredEvent

    gap = StoredEvent(device="d1", tenant="a", ts_ms=T0 + 900, kind="gap", severity="warning",
                      message="10 samples dropped by the agent: disk budget exhausted",
                      data={"first_ts": T0, "last_ts": T0 + 900, "samples": 10, "reason": "disk budget exhausted"},
                      received_ms=T0 + 5000)
    restart = StoredEvent(device="d1", tenant="a", ts_ms=T0 + 2000, kind="restart", severity="info", message="",
                          data={}, received_ms=T0 + 5000)
    other = StoredEvent(device="d2", tenant="b", ts_ms=T0, kind="gap", severity="warning", message="x",
                        data={}, received_ms=T0)
    assert await store.write_events([gap, restart, other]) == 3
    assert await store.write_events([gap]) == 0, "a resent event (same device, kind, time, message) is kept once"
    assert [e.kind for e in await store.list_events(device="d1")] == ["restart", "gap"], "newest first"
    (found,) = await store.list_events(device="d1", kind="gap")
    assert found.data == gap.data and found.message == gap.message and found.severity == "warning"
    assert [e.device for e in await store.list_events(tenant="b")] == ["d2"]


def heartbeat(gateway: str, ts: int, *, devices: tuple[str, ...] = ("d1", "d2"), dropped: int = 0,
              tenant: str = "acme", status: str | None = None) -> GatewayHeartbeat:
    return GatewayHeartbeat(gateway=gateway, tenant=tenant, ts_ms=ts, received_ms=ts + 50,
                            heartbeat=f'{{"gateway": "{gateway}", "ts": {ts}}}', devices=devices,
                            dropped_samples=dropped, status=status, status_ms=None if status is None else ts)


async def test_gateway_heartbeats_status_and_topology(store: Store) -> None:
    await store.write_heartbeats([heartbeat("gw1", T0, status="online"), heartbeat("gw2", T0, devices=("d9",),
                                                                                   tenant="other")])
    gw = await store.get_gateway("gw1")
    assert gw is not None
    assert (gw.tenant, gw.received_ms, gw.devices, gw.status, gw.status_ms) == (
        "acme", T0 + 50, ("d1", "d2"), "online", T0)
    assert gw.heartbeat == f'{{"gateway": "gw1", "ts": {T0}}}'
    assert gw.dropped_at_ms is None
    # A newer heartbeat replaces the device list and keeps the status it does not carry; drops are timed.
    await store.write_heartbeats([heartbeat("gw1", T0 + 10_000, devices=("d2", "d3"), dropped=5)])
    gw = await store.get_gateway("gw1")
    assert gw is not None
    assert (gw.devices, gw.status, gw.received_ms, gw.dropped_at_ms) == (("d2", "d3"), "online", T0 + 10_050,
                                                                          T0 + 10_050)
    # An older one (a redelivery) changes nothing; the same drop count does not move dropped_at.
    await store.write_heartbeats([heartbeat("gw1", T0 + 5_000, devices=("zz",), dropped=9)])
    await store.write_heartbeats([heartbeat("gw1", T0 + 20_000, devices=("d2", "d3"), dropped=5)])
    gw = await store.get_gateway("gw1")
    assert gw is not None
    assert (gw.devices, gw.received_ms, gw.dropped_at_ms) == (("d2", "d3"), T0 + 20_050, T0 + 10_050)
    # The last will: status of stored gateways only.
    await store.write_gateway_status([("gw1", False, T0 + 21_000), ("not-a-gateway", True, T0)])
    gw = await store.get_gateway("gw1")
    assert gw is not None
    assert (gw.status, gw.status_ms) == ("offline", T0 + 21_000)
    assert await store.get_gateway("not-a-gateway") is None
    assert [g.id for g in await store.list_gateways()] == ["gw1", "gw2"]
    assert [g.id for g in await store.list_gateways(tenant="other")] == ["gw2"]
    assert (await store.list_gateways(tenant="other"))[0].devices == ("d9",)
    assert [g.id for g in await store.list_gateways() if "d3" in g.devices] == ["gw1"]
    assert [g.id for g in await store.list_gateways() if "d1" in g.devices] == []


async def test_gateway_config_versions(store: Store) -> None:
    first = await store.add_gateway_config(gateway="gw1", tenant="acme", config="a: 1\n", created_ms=T0,
                                           created_by="ana")
    second = await store.add_gateway_config(gateway="gw1", tenant="acme", config="a: 2\n", created_ms=T0 + 1,
                                            created_by="bo")
    other = await store.add_gateway_config(gateway="gw2", tenant="acme", config="b\n", created_ms=T0,
                                           created_by="ana")
    assert (first.version, second.version, other.version) == (1, 2, 1), "versions count per gateway"
    assert (second.status, second.created_by, second.config, second.error) == ("pending", "bo", "a: 2\n", "")
    listed = await store.list_gateway_configs("gw1")
    assert [(c.version, c.config) for c in listed] == [(2, ""), (1, "")]
    assert [c.config for c in await store.list_gateway_configs("gw1", with_text=True)] == ["a: 2\n", "a: 1\n"]
    assert await store.set_gateway_config_status("gw1", 2, "rolled_back", "source plc failing", T0 + 9) is True
    assert await store.set_gateway_config_status("gw1", 7, "applied", "", T0 + 9) is False
    got = await store.get_gateway_config("gw1", 2)
    assert got is not None
    assert (got.status, got.error, got.status_ms, got.config) == ("rolled_back", "source plc failing", T0 + 9,
                                                                  "a: 2\n")
    assert await store.get_gateway_config("gw1", 3) is None
    # The next version is above the one the agent says it runs (an agent applies only newer ones).
    third = await store.add_gateway_config(gateway="gw1", tenant="acme", config="a: 3\n", created_ms=T0 + 2,
                                           created_by="ana", after=7)
    assert third.version == 8
    latest = await store.latest_gateway_configs()
    assert {gw: (c.version, c.config) for gw, c in latest.items()} == {"gw1": (8, ""), "gw2": (1, "")}
    assert set(await store.latest_gateway_configs(tenant="other")) == set()


# A database as a schema-2 platform left it (the tables the upgrade touches, with rows in them): alerts with the
# incident columns, an incident timeline without ``recorded_at`` (schema 3 adds it), devices without a rollout group
# (schema 5 adds it). The other tables are missing and must be created.
SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL);
INSERT INTO tenants VALUES ('acme', 'Acme');
CREATE TABLE devices (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, asset TEXT NOT NULL, profile TEXT NOT NULL,
    name TEXT NOT NULL);
INSERT INTO devices VALUES ('d1', 'acme', 'a1', 'pump', 'Pump 1');
CREATE TABLE alerts (id {serial}, tenant TEXT NOT NULL, asset TEXT NOT NULL, device TEXT NOT NULL,
    kind TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL, first_seen {big} NOT NULL,
    last_seen {big} NOT NULL, count INTEGER NOT NULL, score {real} NOT NULL, message TEXT NOT NULL,
    explanation TEXT NOT NULL, detector TEXT NOT NULL, acknowledged_by TEXT, acknowledged_at {big},
    resolved_by TEXT, resolved_at {big}, incident {big}, priority {real} NOT NULL DEFAULT 0,
    confidence {real} NOT NULL DEFAULT 1, suppressed TEXT, cleared_at {big});
CREATE UNIQUE INDEX alerts_one_open ON alerts (asset, kind) WHERE status <> 'resolved';
INSERT INTO alerts VALUES (41, 'acme', 'a1', 'd1', 'anomaly', 'warning', 'open', 1, 2, 1, 1.5, 'm', '{{}}', 'x',
    NULL, NULL, NULL, NULL, 7, 0.5, 1, NULL, NULL);
CREATE TABLE incident_timeline (id {serial}, incident {big} NOT NULL, ts {big} NOT NULL, kind TEXT NOT NULL,
    actor TEXT NOT NULL, detail TEXT NOT NULL, data TEXT NOT NULL);
INSERT INTO incident_timeline (incident, ts, kind, actor, detail, data) VALUES (7, 5, 'opened', 'system', 'd', '{{}}');
"""


async def test_a_schema_2_sqlite_database_upgrades_in_place_keeping_its_data(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "v2.db") as db:
        db.executescript(SCHEMA_2.format(**SQLITE_TYPES))
    db.close()
    await upgrades_in_place(f"sqlite:///{tmp_path / 'v2.db'}")


@pytest.mark.postgres
async def test_a_schema_2_postgres_database_upgrades_in_place_keeping_its_data(pg_dsn: str) -> None:
    con = await asyncpg.connect(pg_dsn)
    await con.execute(SCHEMA_2.format(**PG_TYPES))
    await con.close()
    await upgrades_in_place(pg_dsn)


async def upgrades_in_place(url: str) -> None:
    async with open_store(url) as store:
        registry = await store.load_registry()
        assert list(registry.tenants) == ["acme"]
        assert (registry.devices["d1"].name, registry.devices["d1"].scope) == ("Pump 1", "*"), "schema 5: no group"
        [old] = await store.list_alerts()
        assert (old.id, old.incident, old.priority, old.status) == (41, 7, 0.5, AlertStatus.OPEN)
        assert old.model == ""  # schema 4: alerts raised before provenance have no model version
        [entry] = await store.incident_timeline(7)
        assert (entry.ts, entry.kind, entry.recorded_at) == (5, "opened", None)
        await store.write_alert_changes(AlertChanges(timeline=[TimelineEntry(
            incident=7, ts=6, kind="paged", actor="system", detail="d", recorded_at=9)]))
        assert [(e.ts, e.recorded_at) for e in await store.incident_timeline(7)] == [(5, None), (6, 9)]
        await seed_registry(store)  # the tables schema 2 did not have here were created
        assert (await store.get_user("nobody")) is None
        version = await store.driver.fetchone("SELECT value FROM meta WHERE key='schema_version'")
        assert version is not None and version["value"] == str(SCHEMA_VERSION) == "5"
    async with open_store(url) as again:  # opening an up-to-date database changes nothing
        assert len(await again.incident_timeline(7)) == 2


async def test_model_findings_keep_their_version_and_role(store: Store) -> None:
    """Live and shadow onsets of two versions, read back per version, device and time span (the campaign gates
    compare the two versions on the same devices and time)."""
    def finding(model: str, live: bool, device: str, ts: int) -> ModelFinding:
        return ModelFinding(model=model, live=live, tenant="acme", asset=f"a-{device}", device=device, ts=ts,
                            kind="anomaly", severity="warning", score=1.5, explanation={"vib_x": 0.75, "temp": 0.25},
                            message="vibration above normal")

    v1, v2 = "detector.pump@1", "detector.pump@2"
    await store.add_model_findings([finding(v1, True, "d1", 10), finding(v2, False, "d1", 12),
                                    finding(v2, False, "d2", 30), finding(v1, True, "d2", 5)])
    await store.add_model_findings([])
    shadow = await store.list_model_findings(models=["detector.pump@2"])
    assert [(f.device, f.ts, f.live) for f in shadow] == [("d1", 12, False), ("d2", 30, False)]
    assert shadow[0].explanation == {"vib_x": 0.75, "temp": 0.25} and shadow[0].asset == "a-d1"
    both = await store.list_model_findings(devices=["d1"], since=11, until=31)
    assert [(f.model, f.ts) for f in both] == [("detector.pump@2", 12)]
    assert [f.ts for f in await store.list_model_findings()] == [5, 10, 12, 30]


async def test_drift_events_are_kept_with_their_explanation(store: Store) -> None:
    def event(device: str, at: int) -> DriftRecord:
        return DriftRecord(tenant="acme", device=device, asset=f"a-{device}", profile="pump", model="detector.pump@0",
                           kind="input", since_ms=at - 900_000, detected_ms=at, figure=1.8, threshold=1.0,
                           channels={"bearing_temp": 1.8, "speed": 0.9}, message="bearing_temp, speed drifted")

    first = await store.add_drift_event(event("d1", 10_000_000))
    second = await store.add_drift_event(event("d2", 20_000_000))
    assert second > first
    [got] = await store.list_drift_events(device="d1")
    assert got.id == first and got.channels == {"bearing_temp": 1.8, "speed": 0.9} and got.asset == "a-d1"
    assert [e.device for e in await store.list_drift_events(tenant="acme")] == ["d2", "d1"]  # newest first
    assert [e.device for e in await store.list_drift_events(since=15_000_000)] == ["d2"]


async def test_read_samples_gives_each_time_once_in_order_within_the_window(store: Store) -> None:
    """Stored chunks as one series: a resent message overlapping another counts once, times outside the window
    and chunks of another channel set are left out."""
    def chunk(seq: int, start: int, channels: tuple[str, ...] = ("a",)) -> TelemetryChunk:
        ts = np.arange(start, start + 5, dtype=np.int64) * 1000
        return TelemetryChunk(device="d1", seq=seq, channels=channels, ts=ts,
                              values=np.full((5, len(channels)), float(seq)))

    await store.write_chunks([chunk(2, 5), chunk(1, 0), chunk(3, 3), chunk(4, 10, ("a", "b"))])
    found = await store.read_samples("d1", 1000, 8000)
    assert found is not None
    ts, values, channels = found
    assert channels == ("a",) and ts.tolist() == [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]
    assert values.shape == (8, 1)
    assert await store.read_samples("d1", 1000, 8000, ("x",)) is None


async def test_commands_holds_and_policy_documents_on_both_backends(store: Store) -> None:
    """The actions tables: a command per idempotency key with its device's next seq, the first answer final,
    expiry of the unanswered; a hold ended early only by its own tenant; policy documents numbered per tenant."""
    import dataclasses
    from collections.abc import Callable

    from edgeloop.store.actions import CommandAnswer, CommandRecord, HoldRecord

    def command(cid: str, key: str, expires: int = 2_000) -> Callable[[int], CommandRecord]:
        return lambda seq: CommandRecord(id=cid, tenant="acme", device="d1", action="speed", value=5.0, key=key,
                                         seq=seq, ts=1_000, expires=expires, trace="ab" * 16, issued_by="ana",
                                         decision="", status_ms=1_000)

    first, new = await store.add_command(command("c1", "k1"))
    again, repeated = await store.add_command(command("c2", "k1"))
    second, _ = await store.add_command(command("c3", "k3", expires=1_500))
    assert (first.seq, new, again.id, repeated, second.seq) == (1, True, "c1", False, 2)
    await store.mark_command_sent("c1", 1_100)
    answer = CommandAnswer(id="c1", device="d1", status="applied", at_ms=1_200, read_back=5.0)
    assert await store.answer_commands([answer]) == ["c1"]
    assert await store.answer_commands([dataclasses.replace(answer, status="failed")]) == [], "the first is final"
    assert await store.expire_commands(1_600) == ["c3"]
    got = {c.id: (c.status, c.sends, c.read_back) for c in await store.list_commands(tenant="acme")}
    assert got == {"c1": ("applied", 1, 5.0), "c3": ("expired", 0, None)}

    await store.add_hold(HoldRecord(id="h1", tenant="acme", target="a1", held_by="tina", reason="belts",
                                    created_ms=1_000, until_ms=5_000))
    assert await store.end_hold("h1", by="x", at_ms=2_000, tenant="globex") is None, "not another tenant's"
    assert [h.id for h in await store.list_holds(target="a1", active_at=2_000)] == ["h1"]
    ended = await store.end_hold("h1", by="tina", at_ms=2_000, tenant="acme")
    stored = await store.get_hold("h1")
    assert ended is not None and stored is not None and (ended.ended_ms, stored.ended_by) == (2_000, "tina")
    assert await store.list_holds(target="a1", active_at=2_500) == []

    assert [(await store.put_policies(t, "policies: []", by="ana", at_ms=1)).version
            for t in ("acme", "acme", "globex")] == [1, 2, 1]
    assert {(d.tenant, d.version) for d in await store.latest_policies()} == {("acme", 2), ("globex", 1)}
