"""What a detector reports: a :class:`Finding` (the seam between detect and alerts)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Finding", "FindingKind"]


class FindingKind(enum.StrEnum):
    ANOMALY = "anomaly"
    SENSOR_STUCK = "sensor_stuck"
    DATA_GAP = "data_gap"


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition a detector confirmed on one asset.

    ``ts`` is the sample time (ms) at which the condition was confirmed; ``score``
    is calibrated so that 1.0 is the detector's threshold; ``explanation`` maps
    channel -> share of the score (shares sum to 1; for ``data_gap`` and
    ``sensor_stuck`` the affected channels share equally).
    """

    ts: int
    kind: str  # "anomaly" | "sensor_stuck" | "data_gap" (a FindingKind, which is a str)
    severity: str  # "warning" | "critical"
    score: float
    explanation: dict[str, float]
    message: str
