"""Maintenance windows and manual silences: who silenced what, why, and until when (pure data + matching)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgeloop.alerts.model import Topology

__all__ = ["MaintenanceWindow", "Scope", "Silence", "fmt_ms"]


class Scope(enum.StrEnum):
    """What a maintenance window or silence covers: one asset (or gateway id), a line, or a site."""

    ASSET = "asset"
    LINE = "line"
    SITE = "site"


def fmt_ms(ms: int) -> str:
    """A compact UTC time for human details (``2026-01-01T00:10:00Z``); pure arithmetic, no wall clock."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _covers(scope: Scope, target: str, asset: str, topology: Topology) -> bool:
    if scope is Scope.ASSET:
        return asset == target
    line = topology.line_of_asset.get(asset)
    if scope is Scope.LINE:
        return line == target
    return line is not None and topology.site_of_line.get(line) == target


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Planned work on an asset, line or site from ``start_ms`` to ``end_ms`` (exclusive): raises do not page."""

    id: str
    scope: Scope
    target: str
    start_ms: int
    end_ms: int
    by: str
    reason: str
    tenant: str = ""  # whose window it is: it covers only that tenant's signals ("": any)

    def covers(self, asset: str, ts: int, topology: Topology, tenant: str = "") -> bool:
        """True when the window is active at ``ts`` and covers ``asset`` of ``tenant``."""
        return (self.start_ms <= ts < self.end_ms and self.tenant in ("", tenant)
                and _covers(self.scope, self.target, asset, topology))

    def detail(self) -> str:
        """Human words for the suppression record."""
        return (f"maintenance window {self.id} on {self.scope.value} {self.target} by {self.by} "
                f"until {fmt_ms(self.end_ms)}: {self.reason}")


@dataclass(frozen=True, slots=True)
class Silence:
    """A manual silence by a person: raises of ``rule`` (any rule when empty) on the target do not page."""

    id: str
    scope: Scope
    target: str
    by: str
    reason: str
    until_ms: int
    start_ms: int = 0
    rule: str = ""
    tenant: str = ""  # whose silence it is: it covers only that tenant's signals ("": any)

    def covers(self, asset: str, rule: str, ts: int, topology: Topology, tenant: str = "") -> bool:
        """True when the silence is active at ``ts`` and covers ``(asset, rule)`` of ``tenant``."""
        return (self.start_ms <= ts < self.until_ms and (not self.rule or self.rule == rule)
                and self.tenant in ("", tenant) and _covers(self.scope, self.target, asset, topology))

    def detail(self) -> str:
        """Human words for the suppression record."""
        what = f"rule {self.rule}" if self.rule else "all rules"
        return (f"silenced {what} on {self.scope.value} {self.target} by {self.by} "
                f"until {fmt_ms(self.until_ms)}: {self.reason}")
