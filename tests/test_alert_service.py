"""The alert service against real stores (SQLite and PostgreSQL): rules -> incidents -> rows, lifecycle,
suppression records, restart, feedback, and no duplicate alert under racing evaluations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edgeloop.alerts.feedback import read_labels_csv
from edgeloop.alerts.service import AlertService
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.clock import ManualClock
from edgeloop.errors import ConflictError
from edgeloop.messages import AlertStatus
from edgeloop.registry import Registry
from edgeloop.store import Store, open_store
from edgeloop.store.alerting import AlertChanges, MaintenanceRecord, SilenceRecord, TimelineEntry
from edgeloop.store.base import TelemetryChunk
from tests.support import HOT_RULES

T0 = 1_767_225_600_000
MIN = 60_000
RULES = HOT_RULES + "    tune: {mode: auto, after_false_alarms: 2, max_step: 5, max: 90}\n"


def registry(assets: int = 3) -> Registry:
    reg = Registry()
    reg.tenants["acme"] = Tenant(id="acme")
    reg.sites["s1"] = Site(id="s1", tenant="acme")
    reg.lines["l1"] = Line(id="l1", site="s1")
    reg.profiles["p"] = DeviceProfile(name="p", channels=[ChannelSpec(name="temp", unit="C")])
    for i in range(assets):
        reg.assets[f"a{i}"] = Asset(id=f"a{i}", line="l1", criticality=4)
        reg.devices[f"d{i}"] = Device(id=f"d{i}", tenant="acme", asset=f"a{i}", profile="p")
    return reg


def chunk(i: int, seq: int, t: int, temps: list[float]) -> TelemetryChunk:
    ts = np.array([t + k * 1000 for k in range(len(temps))], dtype=np.int64)
    return TelemetryChunk(device=f"d{i}", seq=seq, channels=("temp",), ts=ts,
                          values=np.array(temps, dtype=np.float64).reshape(-1, 1), tenant="acme", asset=f"a{i}")


async def service(store: Store, clock: ManualClock, reg: Registry | None = None) -> AlertService:
    svc = AlertService(store=store, registry=reg or registry(), clock=clock)
    await svc.start()
    return svc


async def ready(store: Store) -> tuple[AlertService, ManualClock, int]:
    """A started service with ``RULES`` in force, its clock 3 min after the start (past the startup grace)."""
    clock = ManualClock(T0)
    svc = await service(store, clock)
    await svc.replace_rules(RULES, by="ops")
    t = T0 + 3 * MIN
    clock.advance(t - T0)
    return svc, clock, t


async def feed(svc: AlertService, *chunks: TelemetryChunk) -> None:
    for c in chunks:
        svc.observe_run(c)
    await svc.flush()


async def at(svc: AlertService, clock: ManualClock, ms: int) -> None:
    clock.advance(ms - clock.now_ms())
    await svc.tick()


async def test_a_raise_becomes_a_stored_alert_and_incident_that_pages_and_resolves(store: Store) -> None:
    svc, clock, t = await ready(store)
    await feed(svc, chunk(0, 1, t, [70, 85, 86]))
    [alert] = await store.list_alerts(unresolved=True)
    assert (alert.asset, alert.kind, alert.status, alert.first_seen) == ("a0", "hot", AlertStatus.OPEN, t + 1000)
    assert alert.incident is not None and alert.priority == pytest.approx(80.0) and alert.suppressed is None
    inc = await store.get_incident(alert.incident)
    assert (inc.status, inc.paged_at, inc.assets) == ("open", None, ("a0",))
    await at(svc, clock, t + 1000 + 30_000)  # the incident gathers its alerts for 30 s, then pages
    inc = await store.get_incident(alert.incident)
    assert inc.paged_at == t + 31_000 and inc.route == "urgent"
    await feed(svc, chunk(0, 2, t + 10_000, [90, 91]))  # the same condition: no second alert
    assert [a.count for a in await store.list_alerts()] == [1]
    await feed(svc, chunk(0, 3, t + 40_000, [74]))  # below clear_below: cleared, resolves 5 min later
    assert (await store.get_alert(alert.id)).cleared_at == t + 40_000
    await at(svc, clock, t + 40_000 + 300_000)
    done = await store.get_alert(alert.id)
    assert (done.status, done.resolved_by, done.resolved_at) == (AlertStatus.RESOLVED, "system", t + 340_000)
    inc = await store.get_incident(alert.incident)
    assert inc.status == "resolved" and inc.resolved_at == t + 340_000
    timeline = await store.incident_timeline(inc.id)
    kinds = [e.kind for e in timeline]
    # no notification channel is configured: the page is decided, and the timeline says it reached no one
    assert kinds[:3] == ["opened", "alert-opened", "not-paged"] and "alert-resolved" in kinds and kinds[-1] == "status"
    assert timeline[2].detail.startswith("not paged: no notification channel is configured for the urgent route")
    assert svc.page_channels("urgent") == [] and svc.stats.unrouted_pages == 1


async def test_an_alert_resolved_and_a_new_one_opened_in_one_batch_are_two_rows(store: Store) -> None:
    """The condition cleared, its alert auto-resolves when the next raise is processed, and that raise opens a
    new alert: both in one write. The new alert must be stored open (not merged into the resolved row, which
    showed "0 open alerts" while the engine held one open)."""
    svc, _clock, t = await ready(store)
    await feed(svc, chunk(0, 1, t, [85]))
    await feed(svc, chunk(0, 2, t + 40_000, [70]))  # cleared; resolves 5 min later unless raised again
    await feed(svc, chunk(0, 3, t + 400_000, [90]))  # later: the resolve and the new raise in one batch
    rows = sorted(await store.list_alerts(), key=lambda a: a.id)
    assert [(a.status, a.first_seen) for a in rows] == [(AlertStatus.RESOLVED, t), (AlertStatus.OPEN, t + 400_000)]
    held = svc.engine.open_alert("a0", "hot")
    assert held is not None and held.id == rows[1].id


async def test_alerts_opened_resolved_and_opened_again_within_one_batch_are_stored_as_they_are(store: Store) -> None:
    """A replay scores many minutes in one batch: an alert opens, clears and resolves, and the next alert of the
    same rule opens, all in one write. The second must not be merged into the first (stored resolved)."""
    svc, _clock, t = await ready(store)
    svc.observe_run(chunk(0, 1, t, [85]))
    svc.observe_run(chunk(0, 2, t + 40_000, [70]))
    svc.observe_run(chunk(0, 3, t + 400_000, [90]))
    await svc.flush()
    rows = sorted(await store.list_alerts(), key=lambda a: a.id)
    assert [(a.status, a.first_seen) for a in rows] == [(AlertStatus.RESOLVED, t), (AlertStatus.OPEN, t + 400_000)]


async def test_the_lifecycle_is_stored_and_enforced(store: Store) -> None:
    svc, clock, t = await ready(store)
    await feed(svc, chunk(0, 1, t, [85]))
    [alert] = await store.list_alerts()
    assert alert.incident is not None
    iid = alert.incident
    await at(svc, clock, t + 31_000)
    rec = await svc.act(iid, "acknowledge", "alice", note="on my way")
    assert (rec.status, rec.acknowledged_by, rec.acknowledged_at) == ("acknowledged", "alice", t + 31_000)
    with pytest.raises(ConflictError, match="acknowledged"):
        await svc.act(iid, "acknowledge", "bob")
    await svc.act(iid, "assign", "alice", to="bob")
    await svc.act(iid, "start", "bob")
    await svc.act(iid, "comment", "bob", text="bearing replaced")
    rec = await svc.act(iid, "resolve", "bob", note="fixed")
    assert (rec.status, rec.assignee) == ("resolved", "bob")
    with pytest.raises(ConflictError, match=r"condition|still active"):
        await svc.act(iid, "close", "bob")  # its alert still fires: it cannot be closed yet
    timeline = await store.incident_timeline(iid)
    said = [(e.kind, e.actor, e.detail) for e in timeline if e.actor != "system"]
    assert said == [("status", "alice", "open → acknowledged: on my way"), ("assigned", "alice", "assigned to bob"),
                    ("status", "bob", "acknowledged → in_progress"), ("comment", "bob", "bearing replaced"),
                    ("status", "bob", "in_progress → resolved: fixed")]


async def test_escalation_when_nobody_acknowledges(store: Store) -> None:
    svc, clock, t = await ready(store)
    await feed(svc, chunk(1, 1, t, [95]))
    [alert] = await store.list_alerts()
    assert alert.incident is not None
    await at(svc, clock, t + 30_000)
    await at(svc, clock, t + 30_000 + 899_000)
    assert (await store.get_incident(alert.incident)).escalation_level == 0
    await at(svc, clock, t + 30_000 + 900_000)  # default policy: level 1 after 15 min
    rec = await store.get_incident(alert.incident)
    assert rec.escalation_level == 1
    esc = [e for e in await store.incident_timeline(alert.incident) if e.kind == "escalated"]
    assert [(e.ts, e.data["notify"]) for e in esc] == [(t + 930_000, ["shift-lead"])]
    await svc.act(alert.incident, "acknowledge", "carol")
    await at(svc, clock, t + 30_000 + 3_600_000)  # acknowledged: level 2 never fires
    assert (await store.get_incident(alert.incident)).escalation_level == 1


async def test_maintenance_and_silences_are_recorded_reasons(store: Store) -> None:
    svc, clock, t = await ready(store)
    await svc.add_maintenance(MaintenanceRecord(id="mw-1", tenant="acme", scope="line", target="l1", start_ms=t,
                                                end_ms=t + 10 * MIN, by="alice", reason="pump overhaul",
                                                created_ms=t))
    await svc.add_silence(SilenceRecord(id="si-1", tenant="acme", scope="line", target="l1", rule="hot",
                                        start_ms=t + 20 * MIN, until_ms=t + 30 * MIN, by="bob", reason="known",
                                        created_ms=t))
    await feed(svc, chunk(0, 1, t + 60_000, [85]))
    await feed(svc, chunk(2, 1, t + 21 * MIN, [85]))
    await at(svc, clock, t + 25 * MIN)
    why = {x.asset: x for x in await store.list_suppressions()}
    assert why["a0"].reason == "maintenance" and "mw-1" in why["a0"].detail and "alice" in why["a0"].detail
    assert "pump overhaul" in why["a0"].detail
    assert why["a2"].reason == "silenced" and "bob" in why["a2"].detail
    assert all(i.paged_at is None for i in await store.list_incidents()), "suppressed alerts page nobody"
    # both alerts are stored all the same: nothing is lost
    assert {a.asset: a.suppressed for a in await store.list_alerts()} == {"a0": "maintenance", "a2": "silenced"}
    # a restart takes the running silence back
    svc2 = await service(store, clock)
    await feed(svc2, chunk(1, 1, t + 26 * MIN, [85]))
    assert [(x.reason, x.asset) for x in await store.list_suppressions(asset="a1")] == [("silenced", "a1")]
    await at(svc2, clock, t + 31 * MIN)
    assert all(i.paged_at is None for i in await store.list_incidents())


async def test_a_restart_restores_open_alerts_and_incidents(store: Store) -> None:
    svc, clock, t = await ready(store)
    await feed(svc, chunk(0, 1, t, [85]), chunk(1, 1, t, [85]))
    await at(svc, clock, t + 31_000)
    first = {a.asset: a for a in await store.list_alerts()}
    iid = first["a0"].incident
    assert iid is not None
    await svc.act(iid, "acknowledge", "alice")
    clock.advance(60_000)  # the platform stops for a minute and starts again
    svc2 = await service(store, clock)
    assert svc2.rules_version == 1
    rec = await store.get_incident(iid)
    assert (rec.status, rec.acknowledged_by) == ("acknowledged", "alice")
    # a0 still too hot: the fresh rule engine raises again, and it merges into the stored alert
    await feed(svc2, chunk(0, 2, clock.now_ms(), [88]))
    a0 = await store.get_alert(first["a0"].id)
    assert (a0.count, a0.status) == (2, AlertStatus.OPEN)
    assert len(await store.list_alerts(unresolved=True)) == 2
    # a1 recovered while the platform was down: its alert resolves 5 min after the restart
    await at(svc2, clock, clock.now_ms() + 300_000)
    a1 = await store.get_alert(first["a1"].id)
    assert a1.status == AlertStatus.RESOLVED
    assert (await store.get_alert(first["a0"].id)).status == AlertStatus.OPEN
    await svc2.act(iid, "start", "alice")  # the lifecycle carries on after the restart


async def test_feedback_is_stored_as_labels_and_tunes_within_bounds(store: Store, tmp_path: Path) -> None:
    svc, clock, t = await ready(store)
    levels = []
    for k in range(8):  # a false alarm now and then: two of them loosen the level by 5, up to 90
        start = t + k * 20 * MIN
        await feed(svc, chunk(0, 2 * k + 1, start, [95]), chunk(0, 2 * k + 2, start + 60_000, [60]))
        await at(svc, clock, start + 7 * MIN)
        [alert] = [a for a in await store.list_alerts() if a.first_seen == start]
        label, _ = await svc.feedback(alert.id, "false_alarm", by=f"tech{k % 2}", reason="sun on the sensor")
        assert (label.start_ms, label.end_ms) == (start - 10 * MIN, start + 60_000)
        assert label.model_version == "rules:hot@1" and label.peak == 95.0
        levels.append(svc.rules.rule_for("a0", "hot").above)  # type: ignore[union-attr]
    assert levels == [80, 85, 85, 90, 90, 90, 90, 90], "at most one step per decision, never past max 90"
    audit = [r for r in await store.list_audit(limit=50) if r.action.startswith("rule.tune.")]
    assert [r.action for r in reversed(audit)] == ["rule.tune.applied", "rule.tune.applied", "rule.tune.held",
                                                    "rule.tune.held"]
    assert all(r.target == "a0/hot" for r in audit) and "tech0" in audit[-1].actor
    labels = await store.list_labels(asset="a0")
    assert len(labels) == 8 and {x.verdict.value for x in labels} == {"false_alarm"}
    with pytest.raises(Exception, match="fault_type"):
        await svc.feedback(labels[0].alert, "confirmed", by="tech0")  # a confirmation needs the fault type
    from edgeloop.alerts.feedback import labels_to_csv

    labels_to_csv(labels, tmp_path / "labels.csv")
    assert read_labels_csv(tmp_path / "labels.csv") == labels
    # the tuned level survives a restart
    svc2 = await service(store, clock)
    assert svc2.rules.rule_for("a0", "hot").above == 90  # type: ignore[union-attr]
    assert svc2.rules.rule_for("a1", "hot").above == 80  # type: ignore[union-attr]


async def test_racing_evaluations_never_store_a_duplicate_alert(store: Store) -> None:
    """Many tasks feed the same condition at once into one service, while ticks run; then a second service
    (another platform process on the same database) raises the same (asset, rule): one open alert."""
    svc, clock, t = await ready(store)

    async def hot(k: int) -> None:
        svc.observe_run(chunk(0, k, t + k * 1000, [85 + k % 3]))
        await svc.flush()

    await asyncio.gather(*(hot(k) for k in range(1, 41)), *(svc.tick() for _ in range(10)))
    other = await service(store, clock)
    other.observe_run(chunk(0, 99, t + 100_000, [99]))
    svc.observe_run(chunk(0, 100, t + 100_000, [99]))
    await asyncio.gather(other.flush(), svc.flush())
    open_ = [a for a in await store.list_alerts(unresolved=True) if a.kind == "hot"]
    assert len(open_) == 1, [(a.id, a.count) for a in open_]
    assert open_[0].asset == "a0" and open_[0].count >= 2


async def test_the_schema_upgrades_a_version_1_database(tmp_path: Path) -> None:
    """A database created before alerting (schema 1) gains the incident columns and tables on open."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE alerts (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, asset TEXT NOT NULL, device TEXT NOT NULL,"
        " kind TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL, first_seen INTEGER NOT NULL,"
        " last_seen INTEGER NOT NULL, count INTEGER NOT NULL, score REAL NOT NULL, message TEXT NOT NULL,"
        " explanation TEXT NOT NULL, detector TEXT NOT NULL, acknowledged_by TEXT, acknowledged_at INTEGER,"
        " resolved_by TEXT, resolved_at INTEGER);"
        "INSERT INTO alerts VALUES (41, 'acme', 'a0', 'd0', 'anomaly', 'warning', 'open', 1, 2, 1, 1.5, 'm', '{}',"
        " 'x', NULL, NULL, NULL, NULL);")
    db.commit()
    db.close()
    async with open_store(f"sqlite:///{path}") as store:
        [old] = await store.list_alerts()
        assert (old.id, old.incident, old.priority, old.confidence) == (41, None, 0.0, 1.0)
        block = await store.reserve_ids("alerts", 10)
        assert block.start > 41, "new ids never collide with the ones written before"


async def test_the_schema_upgrades_a_version_2_database_keeping_its_timeline(tmp_path: Path) -> None:
    """Version 3 gives timeline entries the time they were recorded; entries written before have none."""
    import sqlite3

    path = tmp_path / "v2.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.write_alert_changes(AlertChanges(timeline=[TimelineEntry(incident=1, ts=5, kind="opened",
                                                                              actor="system", detail="d")]))
    db = sqlite3.connect(path)  # as a version-2 platform left it: no recorded_at column
    db.executescript("ALTER TABLE incident_timeline DROP COLUMN recorded_at;"
                     "UPDATE meta SET value='2' WHERE key='schema_version';")
    db.commit()
    db.close()
    async with open_store(f"sqlite:///{path}") as store:
        [old] = await store.incident_timeline(1)
        assert (old.ts, old.recorded_at) == (5, None)
        await store.write_alert_changes(AlertChanges(timeline=[TimelineEntry(incident=1, ts=6, kind="paged",
                                                                              actor="system", detail="d",
                                                                              recorded_at=9)]))
        assert [(e.ts, e.recorded_at) for e in await store.incident_timeline(1)] == [(5, None), (6, 9)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("5",)
    db.close()


async def test_timeline_entries_carry_data_time_and_record_time(store: Store) -> None:
    """A replayed or late condition: its timeline says when it happened in the data (``ts``) and when the
    platform recorded it (``recorded_at``, the clock); the incident's ``updated_at`` is the clock's too."""
    svc, clock, late = await ready(store)
    clock.advance(2 * 3_600_000)  # the data below arrives two hours late (a gateway's backlog)
    await feed(svc, chunk(0, 1, late, [70, 85, 86]))
    [inc] = await store.list_incidents()
    [opened, *_] = await store.incident_timeline(inc.id)
    assert (opened.kind, opened.ts, opened.recorded_at) == ("opened", late + 1000, clock.now_ms())
    assert inc.opened_at == late + 1000 and inc.updated_at == clock.now_ms() >= inc.opened_at


async def test_a_critical_finding_raises_a_critical_alert_under_a_warning_rule(store: Store) -> None:
    """The default ``anomaly`` rule is a warning; a detector that confirms a critical anomaly (far over its
    threshold) makes the alert critical, with the detector's own words and explanation."""
    from edgeloop.detect.finding import Finding

    clock = ManualClock(T0)
    svc = await service(store, clock)  # the default rules
    t = T0 + 3 * MIN
    clock.advance(t - T0)
    c = chunk(0, 1, t, [70.0])
    svc.observe_finding(c, Finding(ts=t, kind="anomaly", severity="warning", score=1.4, explanation={"temp": 1.0},
                                   message="temperature (temp 100 %) above normal for this load"), "det-v1")
    svc.observe_finding(chunk(1, 1, t, [70.0]), Finding(ts=t, kind="anomaly", severity="critical", score=4.2,
                                                        explanation={"temp": 1.0}, message="far above normal",
                                                        evidence={"temp": (96.44, 71.0)}),
                        "det-v1", "detector.pump@3")
    await svc.flush()
    alerts = {a.asset: a for a in await store.list_alerts()}
    assert (alerts["a0"].severity.value, alerts["a1"].severity.value) == ("warning", "critical")
    # the detector's words, then the level seen against the level expected, in the channel's unit
    assert alerts["a1"].message == "far above normal; temp ≈ 96.4 C where 71 C is expected for this load"
    assert alerts["a1"].detector == "det-v1"
    assert alerts["a1"].priority > alerts["a0"].priority and alerts["a1"].explanation == {"temp": 1.0}
    # provenance: the alert keeps the model version that raised it, and a verdict on it labels that version
    assert (alerts["a1"].model, alerts["a0"].model) == ("detector.pump@3", "")
    label, _ = await svc.feedback(alerts["a1"].id, "false_alarm", by="tech", reason="new product run")
    assert label.model_version == "detector.pump@3"


async def test_a_database_blip_loses_no_alert_state(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database refuses two writes (and an id reservation): nothing raises into the scoring stage, and the
    alert, its incident and its timeline are all stored with the next write that succeeds."""
    from edgeloop.errors import StoreError

    svc, clock, t = await ready(store)
    real_write, real_reserve = store.write_alert_changes, store.reserve_ids
    failures = {"write": 2, "reserve": 1}

    async def flaky_write(changes: object) -> dict[int, int]:
        if failures["write"]:
            failures["write"] -= 1
            raise StoreError("connection lost")
        return await real_write(changes)  # type: ignore[arg-type]

    async def flaky_reserve(name: str, n: int) -> range:
        if failures["reserve"]:
            failures["reserve"] -= 1
            raise StoreError("connection lost")
        return await real_reserve(name, n)

    monkeypatch.setattr(store, "write_alert_changes", flaky_write)
    monkeypatch.setattr(store, "reserve_ids", flaky_reserve)
    svc._ids.alerts.clear()  # make the next flush reserve ids
    await feed(svc, chunk(0, 1, t, [85]))  # the reservation fails: the signal waits
    assert await store.list_alerts() == [] and failures["reserve"] == 0
    await feed(svc, chunk(1, 1, t + 1000, [86]))  # the write fails (1 of 2)
    await at(svc, clock, t + 31_000)  # the write fails again (2 of 2): the pages are due meanwhile
    assert await store.list_alerts() == []
    await at(svc, clock, t + 32_000)  # the database is back
    alerts = await store.list_alerts()
    assert sorted(a.asset for a in alerts) == ["a0", "a1"]
    assert len({a.incident for a in alerts}) == 1  # two pumps of one line at once: one line-wide incident
    inc = await store.get_incident(alerts[0].incident or 0)
    assert inc.kind == "line" and inc.paged_at is not None and set(inc.assets) == {"a0", "a1"}
    kinds = [e.kind for e in await store.incident_timeline(inc.id)]
    assert kinds.count("alert-added") == 2 and "not-paged" in kinds  # no channel configured
