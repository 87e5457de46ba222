"""Priority of alerts and incidents: severity x asset criticality x confidence, on a 0..100 scale.

The formula (documented here because routing and the inbox order depend on it)::

    priority = 100 * (severity_weight / 3) * (criticality / 5) * confidence

    severity_weight: info = 1, warning = 2, critical = 3 (unknown severities count as warning)
    criticality:     the asset's 1..5 from :class:`~edgeloop.alerts.model.Topology` (3 when unknown),
                     clamped to 1..5
    confidence:      the signal's confidence, clamped to [0, 1]

So a critical, fully confident alert on a criticality-5 asset is 100; a warning on an ordinary asset (3) with
confidence 1 is 40; an info on a criticality-1 asset is about 6.7. An incident's priority is the maximum over
its alerts. :func:`route` turns a priority into a routing decision: ``"urgent"`` at or above the configured
threshold (default 60: critical on criticality >= 3, or warning on criticality 5 with confidence >= 0.9),
otherwise ``"normal"``. The notifier (a later step) decides what each route means (phone call vs. email).
"""

from __future__ import annotations

from typing import Final

from edgeloop.alerts.model import Topology

__all__ = ["DEFAULT_CRITICALITY", "SEVERITY_WEIGHT", "criticality_of", "priority", "route", "severity_rank"]

SEVERITY_WEIGHT: Final[dict[str, int]] = {"info": 1, "warning": 2, "critical": 3}
DEFAULT_CRITICALITY: Final = 3


def severity_rank(severity: str) -> int:
    """1 (info), 2 (warning) or 3 (critical); unknown severities rank as warning."""
    return SEVERITY_WEIGHT.get(severity, 2)


def criticality_of(topology: Topology, asset: str) -> int:
    """The asset's criticality 1..5 (3 when unknown)."""
    return min(5, max(1, topology.criticality.get(asset, DEFAULT_CRITICALITY)))


def priority(severity: str, criticality: int, confidence: float) -> float:
    """``100 * (severity/3) * (criticality/5) * confidence``, rounded to 0.1 (see the module docstring)."""
    crit = min(5, max(1, criticality))
    conf = min(1.0, max(0.0, confidence))
    return round(100.0 * (severity_rank(severity) / 3.0) * (crit / 5.0) * conf, 1)


def route(prio: float, urgent_at: float = 60.0) -> str:
    """``"urgent"`` when ``prio >= urgent_at``, else ``"normal"``."""
    return "urgent" if prio >= urgent_at else "normal"
