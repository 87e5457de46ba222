"""Storage records and SQL for alerting: incidents, their timeline, suppressions, maintenance windows,
silences, rule sets and id blocks. Written once for both SQL backends (``?`` placeholders; PostgreSQL turns
them into ``$n`` with :func:`pg`), so SQLite and PostgreSQL cannot drift apart.

The alert service (``edgeloop.alerts.service``) is the one writer of incidents and of the engine-owned
columns of alerts: it persists each batch of engine events as one :class:`AlertChanges` in one transaction.
Deduplication stays the database's job: a new alert is inserted with ``ON CONFLICT (asset, kind) WHERE status
<> 'resolved' DO UPDATE`` (the partial unique index ``alerts_one_open``), so when two evaluators race on one
(asset, rule), the second merges into the first's row and learns its id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from edgeloop.messages import Alert
from edgeloop.store.driver import Row, insert_sql, record

__all__ = ["AlertChanges", "IncidentRecord", "Label", "MaintenanceRecord", "OverrideRecord", "RuleSetRecord",
           "SilenceRecord", "SuppressionRecord", "TimelineEntry", "UndeliveredRecord", "Verdict", "WorkOrderRecord"]


class Verdict(enum.StrEnum):
    """A technician's verdict on an alert (a training label)."""

    CONFIRMED = "confirmed"  # a real fault, with its fault type
    FALSE_ALARM = "false_alarm"  # no fault, with the reason
    RELABEL = "relabel"  # a real event, under another label (the new fault type)


class Label(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One piece of technician feedback on one alert, as stored and exported (fields in column order)."""

    alert: int
    incident: int | None
    tenant: str
    asset: str
    device: str
    rule: str
    verdict: Verdict
    fault_type: str
    reason: str
    start_ms: int
    end_ms: int
    first_seen: int
    last_seen: int
    peak: float | None
    model_version: str
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as stored: the engine's correlation (kind, scope, alerts) plus the human lifecycle."""

    id: int
    tenant: str
    kind: str  # asset | line | gateway
    scope: str  # the asset, line or gateway id
    rule: str
    title: str
    status: str  # open | acknowledged | in_progress | resolved | closed | merged
    priority: float
    route: str  # urgent | normal
    opened_at: int
    last_raise: int
    page_due: int
    paged_at: int | None
    resolved_at: int | None
    merged_into: int | None
    assets: tuple[str, ...]
    updated_at: int
    assignee: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    closed_at: int | None = None
    escalation_level: int = 0
    lifecycle: str = ""  # the lifecycle snapshot (JSON) a restart rebuilds the workflow from


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of an incident's history: opened, alert added, paged, acknowledged, comment, escalated, ..."""

    incident: int
    ts: int
    kind: str
    actor: str  # "system" or a person
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    recorded_at: int | None = None  # platform (wall-clock) time of the write; ``ts`` is when it happened in the data


@dataclass(frozen=True, slots=True)
class SuppressionRecord:
    """Why a signal did not page (the answer to "why was I not paged?")."""

    ts: int
    tenant: str
    asset: str
    rule: str
    reason: str
    detail: str
    incident: int | None
    id: int = 0


@dataclass(frozen=True, slots=True)
class MaintenanceRecord:
    id: str
    tenant: str
    scope: str  # asset | line | site
    target: str
    start_ms: int
    end_ms: int
    by: str
    reason: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    id: str
    tenant: str
    scope: str
    target: str
    rule: str  # "" = every rule
    start_ms: int
    until_ms: int
    by: str
    reason: str
    created_ms: int
    ended_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RuleSetRecord:
    version: int  # per tenant (the platform's default document counts on its own)
    text: str  # the YAML/JSON document as given
    created_ms: int
    created_by: str
    tenant: str | None = None  # None: the platform's default, for tenants without a document of their own


@dataclass(slots=True)
class AlertChanges:
    """One batch of engine output, written in one transaction.

    ``opened``: new alerts (the engine's id in ``Alert.id``; inserted or merged into an open row of the same
    (asset, kind)); ``updated``: alerts already stored, engine-owned columns replaced by id; ``incidents``: full
    rows, upserted by id.
    """

    opened: list[Alert] = field(default_factory=list)
    updated: list[Alert] = field(default_factory=list)
    incidents: list[IncidentRecord] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    suppressions: list[SuppressionRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.opened or self.updated or self.incidents or self.timeline or self.suppressions)


# --- alerts (engine-owned columns) --------------------------------------------------------------------------

ALERT_OPEN_SQL: Final = (  # the arbiter: a second open alert for (asset, kind) merges into the first
    "INSERT INTO alerts (id, tenant, asset, device, kind, severity, status, first_seen, last_seen, count, score, "
    "message, explanation, detector, incident, priority, confidence, suppressed, cleared_at, model) "
    "VALUES (?,?,?,?,?,?,'open',?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (asset, kind) WHERE status <> 'resolved' DO UPDATE SET count=alerts.count+excluded.count, "
    "last_seen=CASE WHEN excluded.last_seen > alerts.last_seen THEN excluded.last_seen ELSE alerts.last_seen END, "
    "cleared_at=NULL RETURNING id"
)


def alert_open_params(a: Alert) -> tuple[Any, ...]:
    return (a.id, a.tenant, a.asset, a.device, a.kind, a.severity.value, a.first_seen, a.last_seen, a.count,
            a.score, a.message, msgspec.json.encode(a.explanation).decode(), a.detector, a.incident, a.priority,
            a.confidence, a.suppressed, a.cleared_at, a.model)


def updates_around_opens(changes: AlertChanges) -> tuple[list[Alert], dict[int, Alert]]:
    """``changes.updated`` split as a write applies it: the rows that exist already are updated before any new
    alert is inserted, and each new alert's update follows its own insert, before the next insert (in id, that is
    creation, order). So an alert resolved in this batch, new or not, no longer takes in a newer alert of its
    (asset, kind) as a merge (the newer one was stored as resolved: a false all-clear)."""
    new = {a.id for a in changes.opened}
    return [a for a in changes.updated if a.id not in new], {a.id: a for a in changes.updated if a.id in new}


def remapped(a: Alert, remap: dict[int, int]) -> Alert:
    """``a`` under the stored id it merged into, if it did."""
    return msgspec.structs.replace(a, id=remap[a.id]) if a.id in remap else a


# The alert service is the one writer of alert rows. Status only moves forward: an acknowledgement (open →
# acknowledged, who and when kept from the first) and a resolution (who and when kept from the first) are recorded
# from the row's status; an update that carries neither leaves the stored status, so an engine update never
# reopens what a person acknowledged or resolved.
ALERT_UPDATE_SQL: Final = (
    "UPDATE alerts SET severity=?, last_seen=CASE WHEN ? > last_seen THEN ? ELSE last_seen END, "
    "count=CASE WHEN ? > count THEN ? ELSE count END, score=?, message=?, explanation=?, incident=?, priority=?, "
    "confidence=?, suppressed=?, cleared_at=?, "
    "status=CASE WHEN ? = 'resolved' THEN 'resolved' "
    "WHEN ? = 'acknowledged' AND status = 'open' THEN 'acknowledged' ELSE status END, "
    "acknowledged_by=CASE WHEN ? = 'acknowledged' AND acknowledged_by IS NULL THEN ? ELSE acknowledged_by END, "
    "acknowledged_at=CASE WHEN ? = 'acknowledged' AND acknowledged_at IS NULL THEN ? ELSE acknowledged_at END, "
    "resolved_by=CASE WHEN ? = 'resolved' AND resolved_by IS NULL THEN ? ELSE resolved_by END, "
    "resolved_at=CASE WHEN ? = 'resolved' AND resolved_at IS NULL THEN ? ELSE resolved_at END WHERE id=?"
)


def alert_update_params(a: Alert) -> tuple[Any, ...]:
    st = a.status.value
    return (a.severity.value, a.last_seen, a.last_seen, a.count, a.count, a.score, a.message,
            msgspec.json.encode(a.explanation).decode(), a.incident, a.priority, a.confidence, a.suppressed,
            a.cleared_at, st, st, st, a.acknowledged_by, st, a.acknowledged_at, st, a.resolved_by, st, a.resolved_at,
            a.id)


# --- incidents ----------------------------------------------------------------------------------------------

INCIDENT_COLUMNS: Final = (
    "id, tenant, kind, scope, rule, title, status, priority, route, opened_at, last_raise, page_due, paged_at, "
    "resolved_at, merged_into, assets, updated_at, assignee, acknowledged_by, acknowledged_at, closed_at, "
    "escalation_level, lifecycle"
)
INCIDENT_UPSERT_SQL: Final = insert_sql("incidents", INCIDENT_COLUMNS, key="id")


def incident_from_row(row: Row) -> IncidentRecord:
    return record(IncidentRecord, row, assets=tuple(a for a in row["assets"].split(",") if a))


# --- timeline, suppressions ---------------------------------------------------------------------------------

TIMELINE_COLUMNS: Final = "incident, ts, kind, actor, detail, data, recorded_at"
TIMELINE_SELECT_SQL: Final = f"SELECT id, {TIMELINE_COLUMNS} FROM incident_timeline WHERE incident=? ORDER BY id"


def timeline_from_row(row: Row) -> TimelineEntry:
    return record(TimelineEntry, row, data=msgspec.json.decode(row["data"]))


SUPPRESSION_COLUMNS: Final = "ts, tenant, asset, rule, reason, detail, incident"


# --- maintenance windows, silences, rule sets, id blocks ----------------------------------------------------

MAINTENANCE_COLUMNS: Final = "id, tenant, scope, target, start_ms, end_ms, created_by, reason, created_ms"
MAINTENANCE_SELECT: Final = (
    f"SELECT {MAINTENANCE_COLUMNS.replace('created_by', 'created_by AS by')} FROM maintenance_windows"
)
SILENCE_COLUMNS: Final = "id, tenant, scope, target, rule, start_ms, until_ms, created_by, reason, created_ms, ended_ms"
_SILENCE_FIELDS: Final = SILENCE_COLUMNS.replace("created_by", "created_by AS by")
SILENCE_SELECT: Final = f"SELECT {_SILENCE_FIELDS} FROM silences"
SILENCE_END_SQL: Final = (
    f"UPDATE silences SET ended_ms=?, until_ms=CASE WHEN until_ms > ? THEN ? ELSE until_ms END "
    f"WHERE id=? AND ended_ms IS NULL RETURNING {_SILENCE_FIELDS}"
)


def silence_end_params(silence_id: str, at_ms: int) -> tuple[Any, ...]:
    return (at_ms, at_ms, at_ms, silence_id)


RULES_INSERT_SQL: Final = (
    "INSERT INTO alert_rules (version, text, created_ms, created_by) "
    "SELECT coalesce(max(version), 0) + 1, CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT) FROM alert_rules "
    "RETURNING version"
)
RULES_LATEST_SQL: Final = "SELECT version, text, created_ms, created_by FROM alert_rules ORDER BY version DESC LIMIT 1"
TENANT_RULES_INSERT_SQL: Final = (
    "INSERT INTO tenant_alert_rules (tenant, version, text, created_ms, created_by) "
    "SELECT CAST(? AS TEXT), coalesce(max(version), 0) + 1, CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT) "
    "FROM tenant_alert_rules WHERE tenant = ? RETURNING version"
)
TENANT_RULES_LATEST_SQL: Final = (  # each tenant's newest document
    "SELECT version, text, created_ms, created_by, tenant FROM tenant_alert_rules t "
    "WHERE version = (SELECT max(version) FROM tenant_alert_rules u WHERE u.tenant = t.tenant) ORDER BY tenant"
)


def rules_insert(text: str, by: str, at_ms: int, tenant: str | None) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters that store a rule document as the next version of ``tenant``'s (None: default)."""
    if tenant is None:
        return RULES_INSERT_SQL, (text, at_ms, by)
    return TENANT_RULES_INSERT_SQL, (tenant, text, at_ms, by, tenant)


ID_SEQUENCES: Final = ("alerts", "incidents")


def id_block_sql(name: str) -> str:
    """Reserve ``?`` ids of table ``name`` (params: n, n, n, n): returns the block's end; the block is
    [end - n, end). Blocks start above every id in the table (ids written before blocks existed)."""
    if name not in ID_SEQUENCES:
        raise ValueError(f"no id sequence {name!r}")
    floor = f"(SELECT coalesce(max(id), 0) FROM {name})"
    return (f"INSERT INTO id_blocks (name, next) VALUES ('{name}', {floor} + 1 + CAST(? AS BIGINT)) "
            "ON CONFLICT (name) DO UPDATE SET next = CASE WHEN id_blocks.next > excluded.next - CAST(? AS BIGINT) "
            "THEN id_blocks.next ELSE excluded.next - CAST(? AS BIGINT) END + CAST(? AS BIGINT) RETURNING next")


# --- labels (technician feedback) and per-asset rule overrides ---------------------------------------------

LABEL_COLUMNS: Final = ("alert, incident, tenant, asset, device, rule, verdict, fault_type, reason, start_ms, end_ms, "
                        "first_seen, last_seen, peak, model_version, by_person, ts")


def label_from_row(row: Row) -> Label:
    return record(Label, row, verdict=Verdict(row["verdict"]))


OVERRIDE_UPSERT_SQL: Final = insert_sql("rule_overrides", "asset, rule, levels, set_ms, set_by", key="asset, rule")
OVERRIDE_SELECT_SQL: Final = "SELECT asset, rule, levels, set_ms, set_by FROM rule_overrides ORDER BY asset, rule"


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    """A rule's levels on one asset, tuned from feedback (``levels``: ``RuleEngine.set_override`` arguments)."""

    asset: str
    rule: str
    levels: dict[str, float]
    set_ms: int
    set_by: str


def override_params(o: OverrideRecord) -> tuple[Any, ...]:
    return (o.asset, o.rule, msgspec.json.encode(o.levels).decode(), o.set_ms, o.set_by)


def override_from_row(row: Row) -> OverrideRecord:
    return record(OverrideRecord, row, levels=msgspec.json.decode(row["levels"], type=dict[str, float]))


# --- notifications given up on ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UndeliveredRecord:
    """A notification that failed on its last attempt: ``record`` is the notifier's dead letter as JSON (the
    exact payload, target, attempts and last error), enough to replay it."""

    ts: int
    tenant: str
    incident: int
    channel: str
    record: str
    id: int = 0


UNDELIVERED_COLUMNS: Final = "ts, tenant, incident, channel, record"


# --- work orders (reported back by a CMMS/ERP, or opened by hand) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkOrderRecord:
    """A repair on an asset: when the machine was down (``downtime_start`` .. ``downtime_end``), for MTTR,
    MTBF and availability."""

    id: str
    tenant: str
    asset: str
    opened_ms: int
    opened_by: str
    incident: int | None = None
    alert: int | None = None
    downtime_start: int | None = None
    closed_ms: int | None = None
    downtime_end: int | None = None
    closed_by: str | None = None
    note: str = ""


WORK_ORDER_COLUMNS: Final = ("id, tenant, asset, incident, alert, opened_ms, downtime_start, closed_ms, downtime_end, "
                             "opened_by, closed_by, note")
WORK_ORDER_CLOSE_SQL: Final = (
    "UPDATE work_orders SET closed_ms=?, downtime_end=?, closed_by=? WHERE id=? AND closed_ms IS NULL "
    f"RETURNING {WORK_ORDER_COLUMNS}"
)
