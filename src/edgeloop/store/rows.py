"""Row <-> struct conversion shared by the SQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from edgeloop.messages import Alert, AlertStatus, Severity


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
