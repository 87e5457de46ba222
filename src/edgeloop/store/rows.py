"""Row <-> struct conversion shared by the SQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.store.base import AuditRecord, Enrollment


def alert_params(alert: Alert) -> tuple[Any, ...]:
    """Values for every alert column but ``id``, in ``ALERT_COLUMNS`` order."""
    return (
        alert.tenant, alert.asset, alert.device, alert.kind, alert.severity.value, alert.status.value,
        alert.first_seen, alert.last_seen, alert.count, alert.score, alert.message,
        msgspec.json.encode(alert.explanation).decode(), alert.detector, alert.acknowledged_by,
        alert.acknowledged_at, alert.resolved_by, alert.resolved_at,
    )


def alert_from_row(row: Sequence[Any]) -> Alert:
    return Alert(
        id=int(row[0]), tenant=row[1], asset=row[2], device=row[3], kind=row[4], severity=Severity(row[5]),
        status=AlertStatus(row[6]), first_seen=int(row[7]), last_seen=int(row[8]), count=int(row[9]),
        score=float(row[10]), message=row[11], explanation=msgspec.json.decode(row[12], type=dict[str, float]),
        detector=row[13], acknowledged_by=row[14], acknowledged_at=row[15], resolved_by=row[16],
        resolved_at=row[17],
    )


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
