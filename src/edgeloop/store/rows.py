"""Row <-> struct conversion shared by the SQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.store.alerting import select_where
from edgeloop.store.base import ALERT_COLUMNS, AuditRecord, Credential, Enrollment, GatewayConfig, GatewayRecord, User


def alert_params(alert: Alert) -> tuple[Any, ...]:
    """Values for every alert column but ``id``, in ``ALERT_COLUMNS`` order."""
    return (
        alert.tenant, alert.asset, alert.device, alert.kind, alert.severity.value, alert.status.value,
        alert.first_seen, alert.last_seen, alert.count, alert.score, alert.message,
        msgspec.json.encode(alert.explanation).decode(), alert.detector, alert.acknowledged_by,
        alert.acknowledged_at, alert.resolved_by, alert.resolved_at, alert.incident, alert.priority,
        alert.confidence, alert.suppressed, alert.cleared_at,
    )


def alert_from_row(row: Sequence[Any]) -> Alert:
    return Alert(
        id=int(row[0]), tenant=row[1], asset=row[2], device=row[3], kind=row[4], severity=Severity(row[5]),
        status=AlertStatus(row[6]), first_seen=int(row[7]), last_seen=int(row[8]), count=int(row[9]),
        score=float(row[10]), message=row[11], explanation=msgspec.json.decode(row[12], type=dict[str, float]),
        detector=row[13], acknowledged_by=row[14], acknowledged_at=row[15], resolved_by=row[16],
        resolved_at=row[17], incident=None if row[18] is None else int(row[18]), priority=float(row[19]),
        confidence=float(row[20]), suppressed=row[21], cleared_at=None if row[22] is None else int(row[22]),
    )


def alert_query(*, status: AlertStatus | None, asset: str | None, tenant: str | None, limit: int,
                incident: int | None, unresolved: bool, since_ms: int | None = None) -> tuple[str, list[Any]]:
    """SELECT of alerts, newest first, with ``?`` placeholders (``alerting.pg`` for PostgreSQL); ``since_ms``:
    first seen then or later."""
    sql, params = select_where(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts", [
        ("first_seen >= ?", since_ms), ("status = ?", None if status is None else status.value), ("asset = ?", asset),
        ("tenant = ?", tenant), ("incident = ?", incident)])
    if unresolved:
        sql += (" AND " if params else " WHERE ") + "status <> 'resolved'"
    return sql + " ORDER BY last_seen DESC, id DESC LIMIT ?", [*params, limit]


ENROLLMENT_COLUMNS = ("id, tenant, line, profile, claim_hash, expires_ms, created_ms, created_by, asset, serials, "
                      "max_devices")
AUDIT_COLUMNS = "id, ts_ms, actor, action, target, outcome, detail, source"


def enrollment_params(e: Enrollment) -> tuple[Any, ...]:
    serials = None if e.serials is None else msgspec.json.encode(list(e.serials)).decode()
    return (e.id, e.tenant, e.line, e.profile, e.claim_hash, e.expires_ms, e.created_ms, e.created_by, e.asset,
            serials, e.max_devices)


def enrollment_from_row(row: Sequence[Any]) -> Enrollment:
    serials = None if row[9] is None else tuple(msgspec.json.decode(row[9], type=list[str]))
    return Enrollment(id=row[0], tenant=row[1], line=row[2], profile=row[3], claim_hash=row[4],
                      expires_ms=int(row[5]), created_ms=int(row[6]), created_by=row[7], asset=row[8],
                      serials=serials, max_devices=None if row[10] is None else int(row[10]))


def audit_params(r: AuditRecord) -> tuple[Any, ...]:
    return (r.ts_ms, r.actor, r.action, r.target[:200], r.outcome, r.detail[:1000], r.source[:100])


def audit_from_row(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(id=int(row[0]), ts_ms=int(row[1]), actor=row[2], action=row[3], target=row[4],
                       outcome=row[5], detail=row[6], source=row[7])


USER_COLUMNS = "username, role, tenant, password_hash, created_ms, disabled"
CREDENTIAL_COLUMNS = "id, kind, subject, role, tenant, created_ms, expires_ms, secret_hash, revoked_ms"
# Bearer-token housekeeping (``?`` placeholders; ``alerting.pg`` for PostgreSQL): expired ones, a bounded number
# per call; and all but a user's newest ``keep``.
EXPIRED_TOKENS_DELETE = ("DELETE FROM credentials WHERE id IN (SELECT id FROM credentials WHERE kind='token' AND "
                         "expires_ms <= ? LIMIT ?)")
TOKENS_TRIM = ("DELETE FROM credentials WHERE kind='token' AND subject=? AND id NOT IN (SELECT id FROM credentials "
               "WHERE kind='token' AND subject=? ORDER BY created_ms DESC, id LIMIT ?)")


def user_params(u: User, *, as_bool: bool = False) -> tuple[Any, ...]:
    return (u.username, u.role, u.tenant, u.password_hash, u.created_ms, u.disabled if as_bool else int(u.disabled))


def user_from_row(row: Sequence[Any]) -> User:
    return User(username=row[0], role=row[1], tenant=row[2], password_hash=row[3], created_ms=int(row[4]),
                disabled=bool(row[5]))


def credential_params(c: Credential) -> tuple[Any, ...]:
    return (c.id, c.kind, c.subject, c.role, c.tenant, c.created_ms, c.expires_ms, c.secret_hash, c.revoked_ms)


def credential_from_row(row: Sequence[Any]) -> Credential:
    return Credential(id=row[0], kind=row[1], subject=row[2], role=row[3], tenant=row[4], created_ms=int(row[5]),
                      expires_ms=None if row[6] is None else int(row[6]), secret_hash=row[7],
                      revoked_ms=None if row[8] is None else int(row[8]))


def gateway_from_row(row: Sequence[Any], devices: Sequence[str]) -> GatewayRecord:
    """``GATEWAY_COLUMNS`` order."""
    return GatewayRecord(id=row[0], tenant=row[1], heartbeat=row[2], received_ms=int(row[3]), devices=tuple(devices),
                         status=row[4], status_ms=None if row[5] is None else int(row[5]),
                         dropped_at_ms=None if row[6] is None else int(row[6]))


def gateway_config_from_row(row: Sequence[Any]) -> GatewayConfig:
    """``GATEWAY_CONFIG_COLUMNS`` order."""
    return GatewayConfig(gateway=row[0], tenant=row[1], version=int(row[2]), config=row[3] or "",
                         created_ms=int(row[4]), created_by=row[5], status=row[6],
                         status_ms=None if row[7] is None else int(row[7]), error=row[8])
