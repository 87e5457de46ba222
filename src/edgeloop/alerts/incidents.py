"""The incident engine: signals in, alerts, incidents, pages and suppression records out (pure, deterministic).

:class:`IncidentEngine` consumes :class:`~edgeloop.alerts.model.Signal` s in time order (``process``), gateway
state changes (``gateway_state``) and the passage of time (``tick``), and returns a list of events for each
call. It does no I/O and never reads the wall clock: times come from the signals, from ``tick(now_ms)`` or
from the injected clock (only for the platform start time and a ``tick()`` without argument).

What it does, in the order a raise goes through:

1. **Deduplication**: one open alert per ``(asset, rule)``. A raise while the alert is open (active, or
   cleared but not yet auto-resolved) merges into it (``AlertMerged``, count + 1, last seen) and writes a
   ``DUPLICATE`` suppression record.
2. **Suppression** of a new alert, first reason wins: maintenance window > manual silence > startup grace >
   flapping hold-off > offline gateway (``CORRELATED``). A suppressed alert is still opened and still joins an
   incident (nothing is lost), but does not make its incident page.
3. **Correlation** into incidents, first match wins:
   - a silence rule (``config.silence_rules``) on an asset behind an offline gateway joins the gateway's
     incident;
   - the line incident for the same ``(line, rule)`` within ``line_window_ms`` of its last raise;
   - the asset's incident within ``asset_window_ms`` of its last raise.
   (A resolved incident that gets an alert within its window reopens, "reopened", and does not page again:
   with flapping detection, this is what makes a flapping signal page once);
   - otherwise a new incident of the asset. When raises of one rule reach ``line_min_assets`` distinct assets
     of a line (or ``line_min_fraction`` of the line's assets, whichever is fewer, at least 2) within
     ``line_window_ms``, a line incident opens and takes over those alerts from incidents that have not paged
     yet (those incidents are merged into it).
   An alert joining an existing incident gets a ``CORRELATED`` record (it does not page on its own).
4. **Paging**: an incident pages once, ``group_wait_ms`` after it opened (so that a power dip or a gateway
   outage can gather its alerts first), if at least one of its alerts is not suppressed. ``Page`` carries the
   priority (:mod:`edgeloop.alerts.priority`) and the route. An incident that gains its first unsuppressed
   alert after its page was due pages then. An incident whose alerts all resolve before its page is due
   still pages (a short fault is still a fault) and resolves right after.
5. **Clearing and resolving**: a clear marks the alert cleared (``AlertCleared``); it auto-resolves
   ``auto_resolve_ms`` later unless raised again. An incident resolves when all its alerts have resolved.
   When a gateway comes back, its own alert resolves at once, its linked alerts resolve as soon as they have
   cleared, and any still silent ``gateway_recovery_ms`` later are moved to incidents of their own, which
   page: a device that stays silent after its gateway returned is a problem of its own.

Time order: a signal older than the engine's current time is handled at the current time (its own ``ts``
is still recorded as the alert's last seen only if newer).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from edgeloop.alerts.model import Signal, SignalState, Suppression, SuppressionReason, Topology
from edgeloop.alerts.priority import criticality_of, priority, route, severity_rank
from edgeloop.alerts.suppress import MaintenanceWindow, Silence, fmt_ms
from edgeloop.clock import Clock, SystemClock

__all__ = [
    "AlertCleared",
    "AlertMerged",
    "AlertOpened",
    "AlertResolved",
    "AlertState",
    "Counters",
    "Event",
    "IdSource",
    "Incident",
    "IncidentConfig",
    "IncidentEngine",
    "IncidentMerged",
    "IncidentOpened",
    "IncidentResolved",
    "IncidentUpdated",
    "Page",
]


class IdSource(Protocol):
    """Where new alert and incident ids come from (the platform reserves blocks of them in its database)."""

    def next_alert(self) -> int: ...

    def next_incident(self) -> int: ...


@dataclass(slots=True)
class Counters:
    """Ids from 1 upwards: for a standalone engine (tests, benchmarks)."""

    alert: int = 0
    incident: int = 0

    def next_alert(self) -> int:
        self.alert += 1
        return self.alert

    def next_incident(self) -> int:
        self.incident += 1
        return self.incident


@dataclass(frozen=True, slots=True)
class IncidentConfig:
    """Tunables of the incident engine (times in ms)."""

    asset_window_ms: int = 600_000  # alerts on one asset within 10 min form one incident
    repeat_window_ms: int = 3_600_000  # the same rule raising again on an asset within an hour of its last
    # raise is the same problem: it rejoins that incident (reopened, not paged again), as Alertmanager's
    # repeat interval does
    line_window_ms: int = 30_000  # the same rule on many assets of a line within 30 s is one cause
    line_min_assets: int = 5  # ... on at least this many assets
    line_min_fraction: float = 0.5  # ... or at least this share of the line's assets (whichever is fewer)
    group_wait_ms: int = 30_000  # an incident pages this long after it opened, having gathered its alerts
    auto_resolve_ms: int = 300_000  # an alert whose condition cleared resolves after 5 min without a raise
    flap_max_raises: int = 5  # more raises than this of one rule on one asset ...
    flap_period_ms: int = 3_600_000  # ... within an hour is flapping ...
    flap_hold_ms: int = 3_600_000  # ... and new alerts of it are held off (do not page) for an hour
    startup_grace_ms: int = 120_000  # raises in the first 2 min after the platform start do not page
    gateway_rule: str = "gateway-offline"  # a signal of this rule with asset = gateway id is a gateway state
    silence_rules: frozenset[str] = frozenset({"missing-data", "device-silent", "silent"})
    gateway_recovery_ms: int = 120_000  # a linked silence still active this long after its gateway returned pages
    gateway_severity: str = "critical"  # the severity of a gateway's own alert from ``gateway_state``
    urgent_priority: float = 60.0  # pages at or above this priority route "urgent"
    started_at_ms: int | None = None  # the platform start; the clock's now at construction when None


# --- events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertOpened:
    """A new alert for ``(asset, rule)``; ``suppressed`` says why it will not page, if it will not."""

    ts: int
    alert: int
    incident: int
    tenant: str
    asset: str
    rule: str
    device: str
    severity: str
    priority: float
    message: str
    suppressed: SuppressionReason | None


@dataclass(frozen=True, slots=True)
class AlertMerged:
    """A repeated raise merged into the open alert (``count`` is the new count)."""

    ts: int
    alert: int
    incident: int
    asset: str
    rule: str
    count: int
    severity: str


@dataclass(frozen=True, slots=True)
class AlertCleared:
    """The alert's condition ended; it resolves after ``auto_resolve_ms`` unless raised again."""

    ts: int
    alert: int
    incident: int
    asset: str
    rule: str


@dataclass(frozen=True, slots=True)
class AlertResolved:
    """The alert is closed for good; a later raise opens a new alert."""

    ts: int
    alert: int
    incident: int
    asset: str
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class IncidentOpened:
    """A new incident: ``kind`` is "asset", "line" or "gateway"; ``scope`` the asset, line or gateway id."""

    ts: int
    incident: int
    kind: str
    scope: str
    rule: str
    title: str
    priority: float


@dataclass(frozen=True, slots=True)
class IncidentUpdated:
    """An incident changed: ``change`` is "alert-added", "alert-removed", "priority", "reopened" or
    "recovering"."""

    ts: int
    incident: int
    change: str
    alert: int | None
    priority: float
    detail: str


@dataclass(frozen=True, slots=True)
class IncidentMerged:
    """An incident that had not paged was absorbed into ``into`` (e.g. by a line-wide cause)."""

    ts: int
    incident: int
    into: int
    detail: str


@dataclass(frozen=True, slots=True)
class IncidentResolved:
    """All the incident's alerts have resolved."""

    ts: int
    incident: int
    reason: str


@dataclass(frozen=True, slots=True)
class Page:
    """Someone must look: what a notifier acts on. One per incident (at most)."""

    ts: int
    incident: int
    kind: str
    scope: str
    title: str
    priority: float
    route: str  # "urgent" | "normal"
    alerts: tuple[int, ...]
    assets: tuple[str, ...]


Event = (AlertOpened | AlertMerged | AlertCleared | AlertResolved | IncidentOpened | IncidentUpdated
         | IncidentMerged | IncidentResolved | Page | Suppression)


# --- state --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlertState:
    """One alert as the engine holds it (read-only outside the engine)."""

    id: int
    tenant: str
    asset: str
    rule: str
    device: str
    severity: str
    confidence: float
    priority: float
    message: str
    first_seen: int
    last_seen: int
    incident: int
    suppressed: SuppressionReason | None
    count: int = 1
    active: bool = True
    cleared_at: int | None = None
    resolved_at: int | None = None


@dataclass(slots=True)
class Incident:
    """One incident as the engine holds it (read-only outside the engine)."""

    id: int
    kind: str  # "asset" | "line" | "gateway"
    scope: str
    rule: str
    title: str
    opened_at: int
    last_raise: int
    page_due: int
    alerts: dict[int, None] = field(default_factory=dict)  # ordered set of alert ids
    unsuppressed: int = 0  # how many of its alerts may page
    priority: float = 0.0
    paged_at: int | None = None
    resolved_at: int | None = None
    merged_into: int | None = None
    recovering_until: int | None = None  # a gateway incident after the gateway returned

    @property
    def closed(self) -> bool:
        return self.resolved_at is not None or self.merged_into is not None


_PAGE, _RESOLVE, _RECOVER, _FLAP = 0, 1, 2, 3


class IncidentEngine:
    """Dedup, correlation, suppression and priority over a time-ordered stream of signals (see module doc)."""

    def __init__(self, topology: Topology, config: IncidentConfig | None = None,
                 clock: Clock | None = None, ids: IdSource | None = None) -> None:
        self.topology = topology
        self.config = config or IncidentConfig()
        self._clock: Clock = clock or SystemClock()
        self.started_at = (self.config.started_at_ms if self.config.started_at_ms is not None
                           else self._clock.now_ms())
        self.now = self.started_at
        self._alerts: dict[int, AlertState] = {}
        self._open: dict[tuple[str, str], AlertState] = {}  # (asset, rule) -> open alert
        self._incidents: dict[int, Incident] = {}
        self._asset_incident: dict[str, int] = {}  # asset -> its latest asset incident
        self._key_incident: dict[tuple[str, str], int] = {}  # (asset, rule) -> the incident of its latest alert
        self._line_member: dict[str, int] = {}  # asset -> the line incident that holds its latest alert there
        self._line_incident: dict[tuple[str, str], int] = {}  # (line, rule) -> latest line incident
        self._gateway_incident: dict[str, int] = {}  # gateway -> its open offline incident
        self._gateway_returned: dict[str, int] = {}  # gateway -> its last outage's incident, while recovering
        self._line_raises: dict[tuple[str, str], deque[tuple[int, int]]] = {}  # (line, rule) -> (ts, alert)
        self._flap_raises: dict[tuple[str, str], deque[int]] = {}
        self._flap_until: dict[tuple[str, str], int] = {}
        self._maintenance: list[MaintenanceWindow] = []
        self._silences: dict[str, Silence] = {}
        self._timers: list[tuple[int, int, int, int]] = []  # (due, seq, kind, id)
        self._seq = 0
        self.ids: IdSource = ids or Counters()
        self._line_size: dict[str, int] = {}
        self._behind: dict[str, list[str]] = {}
        self.set_topology(topology)

    # --- public API -----------------------------------------------------------------------------------------

    def process(self, signal: Signal) -> list[Event]:
        """Handle one signal (after firing the timers due by its time); the events it caused, in order."""
        out: list[Event] = []
        ts = self._advance(max(signal.ts, self.now), out)
        if signal.rule == self.config.gateway_rule:
            self._gateway(signal.asset, signal.state is SignalState.CLEAR, ts, out, signal)
        elif signal.state is SignalState.RAISE:
            self._raise(signal, ts, out)
        else:
            self._clear(signal, ts, out)
        return out

    def process_many(self, signals: Iterable[Signal]) -> list[Event]:
        """``process`` each signal in turn; all the events."""
        out: list[Event] = []
        for s in signals:
            out.extend(self.process(s))
        return out

    def gateway_state(self, gateway: str, online: bool, ts: int, tenant: str = "") -> list[Event]:
        """A gateway went offline (``online=False``) or came back; the same as a ``gateway_rule`` signal."""
        sig = Signal(ts=ts, tenant=tenant, asset=gateway, rule=self.config.gateway_rule,
                     state=SignalState.CLEAR if online else SignalState.RAISE,
                     severity=self.config.gateway_severity, message=f"gateway {gateway} offline")
        return self.process(sig)

    def tick(self, now_ms: int | None = None) -> list[Event]:
        """Let time pass to ``now_ms`` (the clock's now when None): pages, auto-resolves, recoveries due."""
        out: list[Event] = []
        self._advance(max(self.now, self._clock.now_ms() if now_ms is None else now_ms), out)
        return out

    def hold(self, asset: str, rule: str, ts: int) -> AlertState | None:
        """The condition of the open alert for ``(asset, rule)`` still holds at ``ts`` (a state re-asserted): its
        last seen moves on. No event and no count: it is no new alarm. Returns the alert (None if none is raised)."""
        a = self._open.get((asset, rule))
        if a is None or not a.active:
            return None
        a.last_seen = max(a.last_seen, ts)
        return a

    def replay_from(self, ts: int) -> None:
        """A replay of history from ``ts`` begins on an engine without alerts (a simulated run): the engine's time
        and its startup grace start there, so that alerts clear, resolve and page in sample time (not all at
        once at the platform's start, after every replayed sample)."""
        if self._alerts or self._incidents:
            raise ValueError("an engine that holds alerts cannot go back in time")
        self.started_at = self.now = ts

    def restarted(self, ts: int) -> None:
        """The platform (re)started at ``ts``: the startup grace period begins again."""
        self.started_at = ts

    def set_topology(self, topology: Topology) -> None:
        """Lines, sites, gateways and criticality changed (a device registered, a gateway's device list)."""
        self.topology = topology
        self._line_size.clear()
        for line in topology.line_of_asset.values():
            self._line_size[line] = self._line_size.get(line, 0) + 1
        self._behind.clear()
        for asset, gw in topology.gateway_of_asset.items():
            self._behind.setdefault(gw, []).append(asset)

    def restore(self, incidents: Iterable[Incident], alerts: Iterable[AlertState], ts: int) -> None:
        """Take back the open incidents and unresolved alerts a previous run stored, after a restart at ``ts``.

        The rule engine restarts empty: a condition that still holds raises again (and merges into its restored
        alert), one that ended while the platform was down never clears. So every restored alert counts as
        cleared at ``ts`` and auto-resolves ``auto_resolve_ms`` later unless raised again; only a gateway's own
        alert stays active (the platform re-reads gateway states). Incidents that have not paged yet page when
        due.
        """
        self.now = max(self.now, ts)
        for inc in incidents:
            self._incidents[inc.id] = inc
            if inc.closed:
                continue
            if inc.kind == "asset":
                self._asset_incident[inc.scope] = inc.id
            elif inc.kind == "line":
                self._line_incident[(inc.scope, inc.rule)] = inc.id
            if inc.paged_at is None:
                self._schedule(max(inc.page_due, ts), _PAGE, inc.id)
        for a in alerts:
            owner = self._incidents.get(a.incident)
            if owner is None or a.resolved_at is not None:
                continue
            self._alerts[a.id] = a
            self._open[(a.asset, a.rule)] = a
            owner.alerts[a.id] = None
            if a.suppressed is None:
                owner.unsuppressed += 1
            if owner.kind == "gateway" and a.rule == self.config.gateway_rule and a.active:
                self._gateway_incident[owner.scope] = owner.id
                continue
            if a.active or a.cleared_at is None:
                a.active = False
                a.cleared_at = ts
            self._schedule(a.cleared_at + self.config.auto_resolve_ms, _RESOLVE, a.id)

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        """Register a maintenance window (raises it covers do not page while it is active)."""
        self._maintenance.append(window)

    def add_silence(self, silence: Silence) -> None:
        """Register (or replace, by id) a manual silence."""
        self._silences[silence.id] = silence

    def end_silence(self, silence_id: str) -> None:
        """Remove a manual silence before its end."""
        self._silences.pop(silence_id, None)

    def compact(self, before_ms: int) -> int:
        """Forget incidents closed before ``before_ms`` whose windows have passed, with their alerts.

        The engine keeps closed incidents so that a late alert can reopen them within their window; a
        long-running platform calls this now and then (after persisting the events). Returns how many
        incidents were forgotten.
        """
        horizon = before_ms - max(self.config.asset_window_ms, self.config.line_window_ms,
                                  self.config.repeat_window_ms)
        gone = [i for i in self._incidents.values()
                if i.closed and (i.resolved_at or i.opened_at) < before_ms and i.last_raise < horizon
                and all(self._alerts[a].resolved_at is not None for a in i.alerts)]
        for inc in gone:
            del self._incidents[inc.id]
            for aid in inc.alerts:
                del self._alerts[aid]
        ids = {inc.id for inc in gone}
        for asset in [k for k, v in self._asset_incident.items() if v in ids]:
            del self._asset_incident[asset]
        for key in [k for k, v in self._key_incident.items() if v in ids]:
            del self._key_incident[key]
        for asset in [k for k, v in self._line_member.items() if v in ids]:
            del self._line_member[asset]
        for lk in [k for k, v in self._line_incident.items() if v in ids]:
            del self._line_incident[lk]
        flap_horizon = before_ms - self.config.flap_period_ms
        for key in [k for k, q in self._flap_raises.items() if not q or q[-1] <= flap_horizon]:
            del self._flap_raises[key]
        for key in [k for k, u in self._flap_until.items() if u <= before_ms]:
            del self._flap_until[key]
        line_horizon = before_ms - self.config.line_window_ms
        for lk in [k for k, q in self._line_raises.items() if not q or q[-1][0] < line_horizon]:
            del self._line_raises[lk]
        self._gateway_returned = {g: i for g, i in self._gateway_returned.items() if i in self._incidents}
        self._maintenance = [w for w in self._maintenance if w.end_ms > before_ms]
        self._silences = {k: v for k, v in self._silences.items() if v.until_ms > before_ms}
        return len(gone)

    def alert(self, alert_id: int) -> AlertState:
        """One alert by id."""
        return self._alerts[alert_id]

    def resolve(self, alert_id: int, ts: int, reason: str) -> list[Event]:
        """A person resolved the alert: it is closed now (a new raise of its rule opens a new alert, it does not
        merge into this one), and its incident resolves once all its alerts are. Nothing for one already resolved."""
        a = self._alerts[alert_id]
        out: list[Event] = []
        if a.resolved_at is None:
            a.active = False
            self._resolve_alert(a, ts, reason, out)
        return out

    @property
    def open_alerts(self) -> int:
        """How many alerts are open (not resolved)."""
        return len(self._open)

    def open_alert(self, asset: str, rule: str) -> AlertState | None:
        """The open alert for ``(asset, rule)``, if any."""
        return self._open.get((asset, rule))

    def incident(self, incident_id: int) -> Incident:
        """One incident by id."""
        return self._incidents[incident_id]

    def inbox(self) -> list[Incident]:
        """Open incidents, highest priority first, then oldest first (the technician's inbox order)."""
        live = [i for i in self._incidents.values() if not i.closed]
        return sorted(live, key=lambda i: (-i.priority, i.opened_at, i.id))

    # --- time -----------------------------------------------------------------------------------------------

    def _schedule(self, due: int, kind: int, ident: int) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, ident))

    def _advance(self, ts: int, out: list[Event]) -> int:
        timers = self._timers
        while timers and timers[0][0] <= ts:
            due, _, kind, ident = heapq.heappop(timers)
            self.now = max(self.now, due)
            if kind == _PAGE:
                inc = self._incidents.get(ident)
                if inc is not None:
                    self._maybe_page(inc, due, out)
                    self._check_incident(inc, due, out)
            elif kind == _RESOLVE:
                a = self._alerts.get(ident)
                if (a is not None and a.resolved_at is None and not a.active and a.cleared_at is not None
                        and a.cleared_at + self.config.auto_resolve_ms == due):
                    self._resolve_alert(a, due, "condition cleared for "
                                        f"{self.config.auto_resolve_ms // 1000} s", out)
            elif kind == _RECOVER and ident in self._incidents:
                self._recovery_over(self._incidents[ident], due, out)
        self.now = max(self.now, ts)
        return self.now

    # --- raise / clear --------------------------------------------------------------------------------------

    def _raise(self, s: Signal, ts: int, out: list[Event]) -> None:
        key = s.key
        flapping = self._count_flap(key, ts)
        a = self._open.get(key)
        if a is not None:
            self._merge(a, s, ts, out)
            return
        reason, detail, target = self._suppression_for(s, ts, flapping)
        crit = criticality_of(self.topology, s.asset)
        prio = priority(s.severity, crit, s.confidence)
        a = AlertState(id=self.ids.next_alert(), tenant=s.tenant, asset=s.asset, rule=s.rule, device=s.device,
                       severity=s.severity, confidence=s.confidence, priority=prio, message=s.message,
                       first_seen=s.ts, last_seen=s.ts, incident=0, suppressed=reason)
        self._alerts[a.id] = a
        self._open[key] = a
        inc, joined = (target, True) if target is not None else self._correlate(a, ts, out)
        a.incident = inc.id
        out.append(AlertOpened(ts=ts, alert=a.id, incident=inc.id, tenant=a.tenant, asset=a.asset, rule=a.rule,
                               device=a.device, severity=a.severity, priority=prio, message=a.message,
                               suppressed=reason))
        self._attach(a, inc, ts, out, announce=joined)
        if reason is not None:
            out.append(Suppression(ts=ts, asset=a.asset, rule=a.rule, reason=reason, detail=detail,
                                   incident=inc.id))
        elif joined:
            out.append(Suppression(ts=ts, asset=a.asset, rule=a.rule, reason=SuppressionReason.CORRELATED,
                                   detail=f"linked under incident {inc.id} ({inc.title})", incident=inc.id))
        if target is None and inc.kind != "gateway":
            self._line_check(a, ts, out)
        if target is not None and target.recovering_until is not None and inc.id == target.id:
            a.active = False  # the outage's own gap, reported late: nothing is wrong now
            a.cleared_at = ts
            self._resolve_alert(a, ts, f"the gap left by gateway {target.scope}'s outage", out)
        self._maybe_page(self._incidents[a.incident], ts, out)

    def _merge(self, a: AlertState, s: Signal, ts: int, out: list[Event]) -> None:
        a.count += 1
        a.last_seen = max(a.last_seen, s.ts)
        a.active = True
        a.cleared_at = None
        inc = self._incidents[a.incident]
        inc.last_raise = max(inc.last_raise, ts)  # a repeat keeps the incident's correlation window open
        if severity_rank(s.severity) > severity_rank(a.severity) or s.confidence > a.confidence:
            if severity_rank(s.severity) > severity_rank(a.severity):
                a.severity = s.severity
            a.confidence = max(a.confidence, s.confidence)
            a.priority = priority(a.severity, criticality_of(self.topology, a.asset), a.confidence)
            if a.priority > inc.priority:
                inc.priority = a.priority
                out.append(IncidentUpdated(ts=ts, incident=inc.id, change="priority", alert=a.id,
                                           priority=inc.priority, detail=f"{a.asset}/{a.rule} now {a.severity}"))
        out.append(AlertMerged(ts=ts, alert=a.id, incident=a.incident, asset=a.asset, rule=a.rule, count=a.count,
                               severity=a.severity))
        out.append(Suppression(ts=ts, asset=a.asset, rule=a.rule, reason=SuppressionReason.DUPLICATE,
                               detail=f"merged into open alert {a.id} (count {a.count}, first seen "
                                      f"{fmt_ms(a.first_seen)})", incident=a.incident))

    def _clear(self, s: Signal, ts: int, out: list[Event]) -> None:
        a = self._open.get(s.key)
        if a is None or not a.active:
            return
        a.active = False
        a.cleared_at = ts
        out.append(AlertCleared(ts=ts, alert=a.id, incident=a.incident, asset=a.asset, rule=a.rule))
        inc = self._incidents[a.incident]
        if inc.kind == "gateway" and inc.recovering_until is not None:
            self._resolve_alert(a, ts, f"gateway {inc.scope} back online and data flowing", out)
        else:
            self._schedule(ts + self.config.auto_resolve_ms, _RESOLVE, a.id)

    # --- suppression ----------------------------------------------------------------------------------------

    def _count_flap(self, key: tuple[str, str], ts: int) -> bool:
        """Count a raise of ``key``; True when the rule is (now) held off as flapping on this asset."""
        cfg = self.config
        q = self._flap_raises.get(key)
        if q is None:
            q = self._flap_raises[key] = deque()
        q.append(ts)
        horizon = ts - cfg.flap_period_ms
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) > cfg.flap_max_raises:
            self._flap_until[key] = ts + cfg.flap_hold_ms
            return True
        until = self._flap_until.get(key)
        if until is None:
            return False
        if ts < until:
            return True
        del self._flap_until[key]
        return False

    def _suppression_for(self, s: Signal, ts: int,
                         flapping: bool) -> tuple[SuppressionReason | None, str, Incident | None]:
        """(reason, detail, the gateway incident to link under) for a new alert; first reason wins."""
        topo = self.topology
        target: Incident | None = None
        gw = topo.gateway_of_asset.get(s.asset)
        aftermath = False
        if gw is not None and s.rule in self.config.silence_rules:
            gid = self._gateway_incident.get(gw)
            if gid is None and (rid := self._gateway_returned.get(gw)) is not None:
                returned = self._incidents.get(rid)
                if returned is not None and returned.recovering_until is not None and ts <= returned.recovering_until:
                    gid, aftermath = rid, True  # a gap reported when data came back: the outage's own gap
            if gid is not None:
                target = self._incidents[gid]
        for mw in self._maintenance:
            if mw.covers(s.asset, ts, topo, s.tenant):
                return SuppressionReason.MAINTENANCE, mw.detail(), target
        for si in self._silences.values():
            if si.covers(s.asset, s.rule, ts, topo, s.tenant):
                return SuppressionReason.SILENCED, si.detail(), target
        if ts < self.started_at + self.config.startup_grace_ms:
            return (SuppressionReason.STARTUP_GRACE,
                    f"raised {(ts - self.started_at) / 1000:.0f} s after the platform started at "
                    f"{fmt_ms(self.started_at)} (grace {self.config.startup_grace_ms // 1000} s)", target)
        if flapping:
            cfg = self.config
            return (SuppressionReason.FLAPPING,
                    f"rule {s.rule} raised more than {cfg.flap_max_raises} times in {cfg.flap_period_ms // 1000} s "
                    f"on {s.asset}: held off until {fmt_ms(self._flap_until[s.key])}", target)
        if target is not None and aftermath:
            return (SuppressionReason.CORRELATED,
                    f"the gap left by gateway {gw}'s outage (incident {target.id}), reported as its data came back",
                    target)
        if target is not None:
            return (SuppressionReason.CORRELATED,
                    f"gateway {gw} offline since {fmt_ms(target.opened_at)}: linked under incident {target.id}",
                    target)
        return None, "", None

    # --- correlation ----------------------------------------------------------------------------------------

    def _new_incident(self, kind: str, scope: str, rule: str, title: str, ts: int, out: list[Event],
                      page_due: int | None = None) -> Incident:
        inc = Incident(id=self.ids.next_incident(), kind=kind, scope=scope, rule=rule, title=title, opened_at=ts,
                       last_raise=ts, page_due=ts + self.config.group_wait_ms if page_due is None else page_due)
        self._incidents[inc.id] = inc
        out.append(IncidentOpened(ts=ts, incident=inc.id, kind=kind, scope=scope, rule=rule, title=title,
                                  priority=0.0))
        if inc.page_due > ts:
            self._schedule(inc.page_due, _PAGE, inc.id)
        return inc

    def _correlate(self, a: AlertState, ts: int, out: list[Event]) -> tuple[Incident, bool]:
        """The incident a new alert joins (and whether it existed), opening one when none fits."""
        line = self.topology.line_of_asset.get(a.asset)
        if line is not None:
            lid = self._line_incident.get((line, a.rule))
            if lid is not None:
                linc = self._incidents[lid]
                if linc.merged_into is None and ts - linc.last_raise <= self.config.line_window_ms:
                    return self._reopen(linc, ts, out), True
        kid = self._key_incident.get((a.asset, a.rule))
        if kid is not None and kid in self._incidents:
            inc = self._incidents[kid]
            if (inc.kind == "asset" and inc.merged_into is None and inc.paged_at is not None
                    and ts - inc.last_raise <= self.config.repeat_window_ms):
                return self._reopen(inc, ts, out), True
        for iid in (self._asset_incident.get(a.asset), self._line_member.get(a.asset)):
            if iid is None or iid not in self._incidents:
                continue
            inc = self._incidents[iid]
            while inc.merged_into is not None and inc.merged_into in self._incidents:
                inc = self._incidents[inc.merged_into]  # its alerts went to a line-wide or gateway incident
            if inc.kind != "gateway" and inc.merged_into is None and ts - inc.last_raise <= self.config.asset_window_ms:
                return self._reopen(inc, ts, out), True
        inc = self._new_incident("asset", a.asset, "", f"{a.asset}: {a.rule}", ts, out)
        self._asset_incident[a.asset] = inc.id
        return inc, False

    def _reopen(self, inc: Incident, ts: int, out: list[Event]) -> Incident:
        """A resolved incident that gets a new alert within its window opens again (it does not page again)."""
        if inc.resolved_at is not None:
            inc.resolved_at = None
            out.append(IncidentUpdated(ts=ts, incident=inc.id, change="reopened", alert=None, priority=inc.priority,
                                       detail=f"a new alert within {self.config.asset_window_ms // 1000} s"))
        return inc

    def _attach(self, a: AlertState, inc: Incident, ts: int, out: list[Event], *, announce: bool) -> None:
        inc.alerts[a.id] = None
        a.incident = inc.id
        self._key_incident[(a.asset, a.rule)] = inc.id
        if inc.kind == "line":
            self._line_member[a.asset] = inc.id
        if a.active:
            inc.last_raise = max(inc.last_raise, ts)
        if a.suppressed is None:
            inc.unsuppressed += 1
        inc.priority = max(inc.priority, a.priority)
        if announce:
            out.append(IncidentUpdated(ts=ts, incident=inc.id, change="alert-added", alert=a.id,
                                       priority=inc.priority, detail=f"{a.asset}/{a.rule}"))

    def _detach(self, a: AlertState, ts: int, out: list[Event], into: Incident) -> None:
        """Move ``a`` from its incident into ``into``; an emptied incident is merged into ``into``."""
        old = self._incidents[a.incident]
        del old.alerts[a.id]
        if a.suppressed is None:
            old.unsuppressed -= 1
        if old.alerts:
            old.priority = max(self._alerts[i].priority for i in old.alerts)
            out.append(IncidentUpdated(ts=ts, incident=old.id, change="alert-removed", alert=a.id,
                                       priority=old.priority, detail=f"moved to incident {into.id}"))
        elif old.paged_at is None:
            old.merged_into = into.id
            out.append(IncidentMerged(ts=ts, incident=old.id, into=into.id, detail=into.title))
        else:
            old.resolved_at = ts
            out.append(IncidentResolved(ts=ts, incident=old.id, reason=f"its alerts moved to incident {into.id}"))
        self._attach(a, into, ts, out, announce=True)

    def _line_check(self, a: AlertState, ts: int, out: list[Event]) -> None:
        """Count a raise toward a line-wide cause; open the line incident when the threshold is reached."""
        cfg = self.config
        line = self.topology.line_of_asset.get(a.asset)
        if line is None:
            return
        lk = (line, a.rule)
        inc = self._incidents[a.incident]
        if inc.kind == "line":
            return
        q = self._line_raises.get(lk)
        if q is None:
            q = self._line_raises[lk] = deque()
        q.append((ts, a.id))
        horizon = ts - cfg.line_window_ms
        while q and q[0][0] < horizon:
            q.popleft()
        size = self._line_size.get(line, 0)
        need = max(2, min(cfg.line_min_assets, math.ceil(cfg.line_min_fraction * size)))
        if len(q) < need:
            return
        members = [self._alerts[i] for _, i in q]
        movable = [m for m in members if m.resolved_at is None and self._incidents[m.incident].paged_at is None
                   and self._incidents[m.incident].kind == "asset"]
        if len({m.asset for m in members}) < need or not movable:
            return
        due = min(self._incidents[m.incident].page_due for m in movable)
        linc = self._new_incident("line", line, a.rule, f"line {line}: {a.rule} on many assets", ts, out,
                                  page_due=max(due, ts))
        self._line_incident[lk] = linc.id
        q.clear()
        for m in movable:
            self._detach(m, ts, out, linc)
            if m.suppressed is None:
                out.append(Suppression(ts=ts, asset=m.asset, rule=m.rule, reason=SuppressionReason.CORRELATED,
                                       detail=f"line-wide cause: {a.rule} on {len(members)} assets of line {line} "
                                              f"within {cfg.line_window_ms // 1000} s; incident {linc.id}",
                                       incident=linc.id))
        linc.last_raise = ts

    # --- gateways -------------------------------------------------------------------------------------------

    def _gateway(self, gw: str, online: bool, ts: int, out: list[Event], s: Signal) -> None:
        gid = self._gateway_incident.get(gw)
        if not online:
            if gid is not None:  # already offline: a duplicate
                a = self._open.get((gw, self.config.gateway_rule))
                if a is not None:
                    self._merge(a, s, ts, out)
                return
            inc = self._new_incident("gateway", gw, self.config.gateway_rule, f"gateway {gw} offline", ts, out)
            self._gateway_incident[gw] = inc.id
            reason, detail, _ = self._suppression_for(s, ts, self._count_flap(s.key, ts))
            crit = max([criticality_of(self.topology, x) for x in self._behind.get(gw, [])]
                       or [criticality_of(self.topology, gw)])
            prio = priority(s.severity, crit, s.confidence)
            a = AlertState(id=self.ids.next_alert(), tenant=s.tenant, asset=gw, rule=s.rule, device=s.device,
                           severity=s.severity, confidence=s.confidence, priority=prio, message=s.message,
                           first_seen=s.ts, last_seen=s.ts, incident=inc.id, suppressed=reason)
            self._alerts[a.id] = a
            self._open[s.key] = a
            out.append(AlertOpened(ts=ts, alert=a.id, incident=inc.id, tenant=a.tenant, asset=gw, rule=a.rule,
                                   device=a.device, severity=a.severity, priority=prio, message=a.message,
                                   suppressed=reason))
            self._attach(a, inc, ts, out, announce=False)
            if reason is not None:
                out.append(Suppression(ts=ts, asset=gw, rule=a.rule, reason=reason, detail=detail, incident=inc.id))
            # silences that arrived before the gateway's own signal move under it (if they have not paged)
            for asset in self._behind.get(gw, []):
                for rule in self.config.silence_rules:
                    m = self._open.get((asset, rule))
                    if m is None or self._incidents[m.incident].paged_at is not None:
                        continue
                    if m.suppressed is None:  # it no longer pages on its own
                        self._incidents[m.incident].unsuppressed -= 1
                        m.suppressed = SuppressionReason.CORRELATED
                        out.append(Suppression(ts=ts, asset=asset, rule=rule, reason=SuppressionReason.CORRELATED,
                                               detail=f"gateway {gw} offline: linked under incident {inc.id}",
                                               incident=inc.id))
                    self._detach_suppressed(m, ts, out, inc)
            self._maybe_page(inc, ts, out)
            return
        if gid is None:
            return
        inc = self._incidents[gid]
        del self._gateway_incident[gw]
        a = self._open.get((gw, self.config.gateway_rule))
        if a is not None:
            a.active = False
            a.cleared_at = ts
            out.append(AlertCleared(ts=ts, alert=a.id, incident=inc.id, asset=gw, rule=a.rule))
            self._resolve_alert(a, ts, f"gateway {gw} back online", out, check_incident=False)
        inc.recovering_until = ts + self.config.gateway_recovery_ms
        self._gateway_returned[gw] = inc.id
        out.append(IncidentUpdated(ts=ts, incident=inc.id, change="recovering", alert=None, priority=inc.priority,
                                   detail=f"gateway {gw} back online; linked alerts resolve as data returns"))
        for aid in list(inc.alerts):
            m = self._alerts[aid]
            if m.resolved_at is None and not m.active:
                self._resolve_alert(m, ts, f"gateway {gw} back online", out, check_incident=False)
        self._check_incident(inc, ts, out)
        if not inc.closed:
            self._schedule(inc.recovering_until, _RECOVER, inc.id)

    def _detach_suppressed(self, a: AlertState, ts: int, out: list[Event], into: Incident) -> None:
        old = self._incidents[a.incident]
        if old.id == into.id:
            return
        self._detach(a, ts, out, into)

    def _recovery_over(self, inc: Incident, ts: int, out: list[Event]) -> None:
        """Linked alerts still silent ``gateway_recovery_ms`` after their gateway returned page on their own."""
        if inc.closed:
            return
        again = self._gateway_incident.get(inc.scope)
        for aid in list(inc.alerts):
            a = self._alerts[aid]
            if a.resolved_at is not None:
                continue
            if again is not None:  # the gateway went offline again: the silence belongs to its new incident
                self._detach(a, ts, out, self._incidents[again])
                continue
            new = self._new_incident("asset", a.asset, "", f"{a.asset}: {a.rule} (still silent after gateway "
                                     f"{inc.scope} returned)", ts, out, page_due=ts)
            self._asset_incident[a.asset] = new.id
            a.suppressed = None
            del inc.alerts[aid]
            out.append(IncidentUpdated(ts=ts, incident=inc.id, change="alert-removed", alert=a.id,
                                       priority=inc.priority, detail=f"still silent: moved to incident {new.id}"))
            self._attach(a, new, ts, out, announce=True)
            self._maybe_page(new, ts, out)
        self._check_incident(inc, ts, out)

    # --- resolution and paging ------------------------------------------------------------------------------

    def _resolve_alert(self, a: AlertState, ts: int, reason: str, out: list[Event], *,
                       check_incident: bool = True) -> None:
        a.resolved_at = ts
        if self._open.get((a.asset, a.rule)) is a:
            del self._open[(a.asset, a.rule)]
        out.append(AlertResolved(ts=ts, alert=a.id, incident=a.incident, asset=a.asset, rule=a.rule, reason=reason))
        if check_incident:
            self._check_incident(self._incidents[a.incident], ts, out)

    def _check_incident(self, inc: Incident, ts: int, out: list[Event]) -> None:
        if inc.closed:
            return
        if inc.paged_at is None and inc.unsuppressed > 0 and ts < inc.page_due:
            return  # a short fault still pages: the incident resolves once its page has gone out
        if all(self._alerts[i].resolved_at is not None for i in inc.alerts):
            inc.resolved_at = ts
            out.append(IncidentResolved(ts=ts, incident=inc.id, reason="all its alerts resolved"))

    def _maybe_page(self, inc: Incident, ts: int, out: list[Event]) -> None:
        if inc.closed or inc.paged_at is not None or ts < inc.page_due or inc.unsuppressed <= 0:
            return
        inc.paged_at = ts
        ids = tuple(inc.alerts)
        assets = tuple(dict.fromkeys(self._alerts[i].asset for i in ids))
        out.append(Page(ts=ts, incident=inc.id, kind=inc.kind, scope=inc.scope, title=inc.title,
                        priority=inc.priority, route=route(inc.priority, self.config.urgent_priority), alerts=ids,
                        assets=assets))

