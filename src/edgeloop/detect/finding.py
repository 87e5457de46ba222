"""What a detector reports: a :class:`Finding` (the seam between detect and alerts)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Finding", "FindingKind", "FindingPhase"]


class FindingKind(enum.StrEnum):
    ANOMALY = "anomaly"
    SENSOR_STUCK = "sensor_stuck"
    DATA_GAP = "data_gap"


class FindingPhase(enum.StrEnum):
    """Where a finding stands in its condition's life.

    ``onset``: the detector confirmed the condition at ``ts`` (a new alarm). A condition that is a *state* (a
    stuck sensor, a channel without values, an anomaly episode such as a drift or a wearing bearing) is then
    re-asserted while it holds (``holding``, at most every ``reassert_ms`` of sample time) and reported once
    more when the data shows it has ended (``ended``). Alert rules keep a state's alert raised while it is
    re-asserted and clear it at its end; an event (a spike, a gap already over when it is seen) has only
    its onset and clears after a quiet period.
    """

    ONSET = "onset"
    HOLDING = "holding"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition a detector confirmed on one asset.

    ``ts`` is the sample time (ms) at which the condition was confirmed; ``score``
    is calibrated so that 1.0 is the detector's threshold; ``explanation`` maps
    channel -> share of the score (shares sum to 1; for ``data_gap`` and
    ``sensor_stuck`` the affected channels share equally). ``phase`` says whether
    the condition starts, still holds or has ended at ``ts`` (see :class:`FindingPhase`). ``evidence`` maps
    the channels that drove an anomaly to (the level the detector saw, the level it expected for the load), in
    the channel's own unit.
    """

    ts: int
    kind: str  # "anomaly" | "sensor_stuck" | "data_gap" (a FindingKind, which is a str)
    severity: str  # "warning" | "critical"
    score: float
    explanation: dict[str, float]
    message: str
    phase: FindingPhase = FindingPhase.ONSET
    evidence: dict[str, tuple[float, float]] = field(default_factory=dict)
