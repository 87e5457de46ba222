"""The alerting data model shared by rules, correlation and suppression (pure data, no I/O).

The flow (see ``docs/alerts.md`` when it exists, and issue 6):

    telemetry / findings / RUL / presence
        -> rules (``alerts.rules``): a :class:`Signal` each time a rule's condition on one asset starts
           (``state="raise"``) or ends (``state="clear"``)
        -> suppression and correlation (``alerts.incidents``): signals become alerts (one open per
           (asset, rule)), alerts group into :class:`Incident` s, and every signal that does not page
           someone gets a :class:`Suppression` record saying why
        -> notification, lifecycle, feedback, KPIs (later steps).

Times are sample/clock times in ms from an injectable clock, never read from the wall inside this package.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Signal", "SignalState", "Suppression", "SuppressionReason", "Topology"]


class SignalState(enum.StrEnum):
    RAISE = "raise"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Signal:
    """A rule's condition on one asset started or ended at ``ts``.

    ``key`` identifies what is deduplicated: one open alert per ``(asset, rule)``. ``severity`` is
    "info" | "warning" | "critical"; ``confidence`` in [0, 1] (1 for plain thresholds, a detector's calibrated
    confidence for anomaly scores); ``explanation`` maps channel -> share (sums to 1, or empty).
    """

    ts: int
    tenant: str
    asset: str
    rule: str
    state: SignalState
    severity: str = "warning"
    device: str = ""
    value: float | None = None
    confidence: float = 1.0
    message: str = ""
    explanation: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.asset, self.rule)


class SuppressionReason(enum.StrEnum):
    DUPLICATE = "duplicate"  # merged into the open alert for (asset, rule)
    FLAPPING = "flapping"  # the rule flips on this asset too often: held off
    STARTUP_GRACE = "startup_grace"  # raised during the grace period after a platform (re)start
    MAINTENANCE = "maintenance"  # inside a maintenance window of the asset / line / site
    SILENCED = "silenced"  # a manual silence (who, why, until when)
    CORRELATED = "correlated"  # linked under an incident that has already paged (e.g. its gateway is offline)


@dataclass(frozen=True, slots=True)
class Suppression:
    """Why a signal did not page anyone: the answer to "why was I not paged?"."""

    ts: int
    asset: str
    rule: str
    reason: SuppressionReason
    detail: str  # human words: "maintenance window mw-3 by alice until 14:00: pump overhaul"
    incident: int | None = None  # the incident it was linked to, if any


@dataclass(frozen=True, slots=True)
class Topology:
    """Where assets sit and what they depend on: lines and sites (a line-wide cause), and gateways.

    ``gateway_of_asset`` maps an asset to the gateway its devices reach the platform through (if any): when
    that gateway is offline, silence from the asset is a consequence, not a new problem.
    """

    line_of_asset: dict[str, str] = field(default_factory=dict)
    site_of_line: dict[str, str] = field(default_factory=dict)
    gateway_of_asset: dict[str, str] = field(default_factory=dict)
    criticality: dict[str, int] = field(default_factory=dict)  # asset -> 1..5 (3 if unknown)
