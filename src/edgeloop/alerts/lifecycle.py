"""The incident lifecycle: the human workflow on top of an incident (pure, deterministic, no I/O).

:class:`Lifecycle` holds, per incident, its status, assignee, comments, who moved it into each status and when,
and its escalation. It is fed two kinds of input and returns, for every call, the events it caused (frozen
dataclasses), which the caller persists as the incidents' timelines:

- **engine facts** (past tense, from :class:`~edgeloop.alerts.incidents.IncidentEngine` events):
  ``opened``, ``paged``, ``priority_changed``, ``alert_added``, ``condition_resolved``, ``reopened``,
  ``merged``; or all at once with ``observe(engine_events)``, the intended wiring;
- **people's actions** (imperative, with ``by``): ``acknowledge``, ``start``, ``resolve``, ``close``,
  ``reopen``, ``transition``, ``assign``, ``comment``;
- the passage of time: ``tick(now_ms)`` (escalations and automatic closes due by then).

It never reads the wall clock: times come from the arguments, or from the injected clock when an argument is
``None`` (``ts=None`` in a person's action means "now").

Statuses and transitions
------------------------
::

      ┌─────────────────────── start ───────────────────────┐
      │                                                     ▼
    open ──── acknowledge ───▶ acknowledged ── start ──▶ in_progress
     │  ▲                           │                        │
     │  │ reopen (a person,         │ resolve                │ resolve
     │  │ or the engine)            ▼                        │
     │  └───────────────────── resolved ◀────────────────────┘
     │          resolve           ▲  │
     └────────────────────────────┘  │ close (a person, once the condition has cleared,
                                     ▼        or by itself after close_after_s)
                                  closed ──▶ open: only the engine (a new alert); final for people

People may make the moves of :data:`TRANSITIONS`; anything else raises
:class:`~edgeloop.errors.ConflictError` naming the current and the requested status (including a move to the
status the incident is already in, e.g. a second acknowledgement). The system (``by="system"``) makes these:

- **auto-resolve**: the engine's ``IncidentResolved`` (all its alerts resolved, i.e. the condition cleared for
  the engine's ``auto_resolve_ms``) moves open / acknowledged / in progress to resolved, with the reason;
- **reopen**: the engine reopened the incident (``IncidentUpdated(change="reopened")``) or attached a new alert
  to it while it was resolved: resolved (or closed) goes back to open. A new alert must never disappear into
  an incident nobody looks at, so this is the one way out of closed. It is rare: see the next rule;
- **auto-close**: with ``close_after_s``, a resolved incident whose condition has cleared closes that long after
  both (its resolution and its condition's end), unless reopened first;
- **merged**: an incident the engine absorbed into another (``IncidentMerged``) resolves with "merged into N".

A person cannot close an incident whose condition is still active (the engine has not resolved it): resolving
is enough to say "done"; closing is "done and nothing is firing any more", and it closes by itself then.

Acknowledgement: the first move of a person out of open (acknowledge, start or resolve) is the
acknowledgement (``IncidentLifecycle.acknowledged``: who and when, what MTTA counts). Every status also records the
latest person (or ``system``) and time that moved the incident into it (``IncidentLifecycle.stamps``).

Escalation
----------
A :class:`LifecyclePolicy` holds escalation levels as data: ``after_s`` (since the page), ``notify`` (names
of notification channels or people) and optionally ``min_priority``. Once an incident has paged, level *k*
fires (one :class:`Escalated` event, stamped at exactly ``page + after_s``) if the incident is still open (not
acknowledged, started or resolved) and its priority is at least the level's ``min_priority``. A level whose
priority is not reached at its time fires later, when the priority rises, if the incident is still open then.
Each level fires at most once per page. Acknowledging, starting or resolving stops the escalation for good;
a reopen does not start it again (the engine does not page a reopened incident either) unless the policy says
``escalate_reopened``: then a reopen by the engine restarts every level from the reopen time. A page that
arrives after a person already acknowledged the incident starts no escalation.

Times
-----
Every call first fires the timers due by its time (escalations, automatic closes), so the events of one call
may concern other incidents: each event names its incident. Timer events are stamped at their due time,
even when they fire later (after a restart, or when nothing called the lifecycle for a while). A status
change is never stamped before the incident's previous status change (a late-arriving fact is recorded at
the previous change's time). A call that raises (``ConflictError``, ``NotFoundError``, ``ValueError``) changes
nothing, and the timer events it fired before raising are returned by the next call. One caller at a time:
nothing here locks.

Restart
-------
``snapshot(incident)`` gives a :class:`LifecycleSnapshot` (plain data, what a database row holds);
``restore(snapshot)`` rebuilds the incident in a new lifecycle, re-arming the escalation levels that have not
fired (those that came due while the platform was down fire at the next call, stamped at their due time) and
the automatic close.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final

import msgspec

from edgeloop.alerts.incidents import (
    AlertOpened,
    IncidentMerged,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Page,
)
from edgeloop.alerts.incidents import Event as EngineEvent
from edgeloop.alerts.suppress import fmt_ms
from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.yaml_lines import convert, load_yaml, read_text, where

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_COMMENTS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "SYSTEM",
    "TRANSITIONS",
    "Assigned",
    "Commented",
    "Escalated",
    "EscalationLevel",
    "IncidentLifecycle",
    "IncidentStatus",
    "Lifecycle",
    "LifecycleEvent",
    "LifecyclePolicy",
    "LifecycleSnapshot",
    "Stamp",
    "StatusChanged",
    "load_policy",
    "parse_policy",
    "policy_from_obj",
]

SYSTEM: Final = "system"  # ``by`` of what the platform does by itself; refused as a person's name
MAX_NAME_CHARS: Final = 128  # a person's or an assignee's name
MAX_TEXT_CHARS: Final = 4000  # a comment or a note on a status change
MAX_COMMENTS: Final = 500  # per incident


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


_S = IncidentStatus
TRANSITIONS: Final[Mapping[IncidentStatus, frozenset[IncidentStatus]]] = MappingProxyType({
    _S.OPEN: frozenset({_S.ACKNOWLEDGED, _S.IN_PROGRESS, _S.RESOLVED}),
    _S.ACKNOWLEDGED: frozenset({_S.IN_PROGRESS, _S.RESOLVED}),
    _S.IN_PROGRESS: frozenset({_S.RESOLVED}),
    _S.RESOLVED: frozenset({_S.CLOSED, _S.OPEN}),
    _S.CLOSED: frozenset(),
})
"""The moves a person may make (the system's own moves are listed in the module docstring)."""

_ACTIVE: Final = frozenset({_S.OPEN, _S.ACKNOWLEDGED, _S.IN_PROGRESS})
_ORDER: Final = (_S.OPEN, _S.ACKNOWLEDGED, _S.IN_PROGRESS, _S.RESOLVED, _S.CLOSED)


# --- the policy (data) --------------------------------------------------------------------------------------

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"\S")]
_Seconds = Annotated[float, msgspec.Meta(gt=0, le=365 * 86_400)]


class EscalationLevel(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Notify ``notify`` when the incident has paged and is still open ``after_s`` later (and its priority is
    at least ``min_priority``, when given)."""

    after_s: _Seconds
    notify: Annotated[tuple[_Name, ...], msgspec.Meta(min_length=1, max_length=64)]
    min_priority: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None

    @property
    def after_ms(self) -> int:
        return round(self.after_s * 1000)


DEFAULT_LEVELS: Final = (
    EscalationLevel(after_s=900, notify=("shift-lead",)),
    EscalationLevel(after_s=1800, notify=("maintenance-manager",)),
)


class LifecyclePolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The lifecycle's timing as data: escalation levels (in order of ``after_s``), automatic close.

    Example (YAML or JSON)::

        levels:
          - {after_s: 900, notify: [shift-lead]}
          - {after_s: 1800, notify: [maintenance-manager, plant-manager], min_priority: 60}
        close_after_s: 86400      # null: resolved incidents stay resolved until a person closes them
        escalate_reopened: false  # true: a reopen by the engine restarts the escalation
    """

    levels: Annotated[tuple[EscalationLevel, ...], msgspec.Meta(max_length=16)] = DEFAULT_LEVELS
    close_after_s: _Seconds | None = 86_400.0
    escalate_reopened: bool = False

    @property
    def close_after_ms(self) -> int | None:
        return None if self.close_after_s is None else round(self.close_after_s * 1000)


def parse_policy(text: str, *, origin: str = "lifecycle policy") -> LifecyclePolicy:
    """Parse YAML or JSON text into a :class:`LifecyclePolicy`; ``ConfigError`` names the line and the problem."""
    doc, node = load_yaml(text, origin)
    return policy_from_obj({} if doc is None else doc, origin=origin, node=node)


def load_policy(path: Path) -> LifecyclePolicy:
    """Read and parse a lifecycle policy file."""
    return parse_policy(read_text(path, "lifecycle policy"), origin=str(path))


def policy_from_obj(doc: Any, *, origin: str = "lifecycle policy", node: Any = None) -> LifecyclePolicy:
    """Validate an already-decoded document (e.g. an API body); ``node`` (the composed YAML) adds lines."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a mapping (levels, close_after_s, escalate_reopened)")
    policy = convert(doc, LifecyclePolicy, origin=origin, node=node)
    at = where(origin, node)
    for i, level in enumerate(policy.levels):
        if i and level.after_ms <= policy.levels[i - 1].after_ms:
            raise ConfigError(f"{at(f'$.levels[{i}].after_s')} (levels[{i}].after_s): {level.after_s:g} s must "
                              f"be later than the previous level's {policy.levels[i - 1].after_s:g} s; list the "
                              f"levels in the order they fire")
        dup = sorted({n for n in level.notify if level.notify.count(n) > 1})
        if dup:
            raise ConfigError(f"{at(f'$.levels[{i}].notify')} (levels[{i}].notify): {', '.join(dup)} "
                              f"listed twice")
    return policy


# --- events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The incident moved from ``from_status`` to ``to_status``; ``by`` a person or ``system``."""

    ts: int
    incident: int
    from_status: IncidentStatus
    to_status: IncidentStatus
    by: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Assigned:
    """The incident was assigned to ``assignee`` (``None``: unassigned); ``previous`` the one before."""

    ts: int
    incident: int
    assignee: str | None
    previous: str | None
    by: str


@dataclass(frozen=True, slots=True)
class Commented:
    """A comment, the incident's ``n``-th (1-based; with ``incident``, a key for storing it once)."""

    ts: int
    incident: int
    n: int
    by: str
    text: str


@dataclass(frozen=True, slots=True)
class Escalated:
    """The incident paged and is still open ``after_s`` later: notify ``notify`` (level is 1-based).

    ``ts`` is the level's due time (``since + after_s``), or the time a rising priority reached the level's
    ``min_priority`` when that came later. ``since`` is what the levels count from: the page (or the reopen,
    with ``escalate_reopened``). A notifier's idempotency key for it is ``(incident, since, level)``.
    """

    ts: int
    incident: int
    level: int
    notify: tuple[str, ...]
    after_s: float
    priority: float
    since: int


LifecycleEvent = StatusChanged | Assigned | Commented | Escalated


# --- state --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who did something, and when."""

    by: str
    ts: int


@dataclass(slots=True)
class IncidentLifecycle:
    """One incident's lifecycle state (read-only outside :class:`Lifecycle`)."""

    incident: int
    status: IncidentStatus
    opened_at: int
    status_since: int
    priority: float = 0.0
    paged_at: int | None = None  # the (first) page
    escalation_from: int | None = None  # levels count from here; None: not escalating
    escalated: list[int] = field(default_factory=list)  # levels fired since ``escalation_from``
    acknowledged: Stamp | None = None  # the first move of a person out of open
    assignee: str | None = None
    condition_active: bool = True  # the engine has not resolved the incident (its alerts still open)
    condition_cleared_at: int | None = None
    stamps: dict[IncidentStatus, Stamp] = field(default_factory=dict)  # the latest move into each status
    comments: list[Commented] = field(default_factory=list)
    gen: int = 0  # bumped on every status change: timers of an older generation are stale

    @property
    def escalating(self) -> bool:
        return self.escalation_from is not None and self.status is IncidentStatus.OPEN


@dataclass(frozen=True, slots=True)
class LifecycleSnapshot:
    """An incident's lifecycle as plain data, for a database row; ``Lifecycle.restore`` rebuilds it."""

    incident: int
    status: IncidentStatus
    opened_at: int
    status_since: int
    priority: float = 0.0
    paged_at: int | None = None
    escalation_from: int | None = None
    escalated: tuple[int, ...] = ()
    acknowledged: Stamp | None = None
    assignee: str | None = None
    condition_active: bool = True
    condition_cleared_at: int | None = None
    stamps: tuple[tuple[IncidentStatus, Stamp], ...] = ()
    comments: tuple[Commented, ...] = ()


_ESCALATE, _CLOSE = 0, 1


class Lifecycle:
    """Status, assignment, comments and escalation of incidents (see the module docstring)."""

    def __init__(self, policy: LifecyclePolicy | None = None, clock: Clock | None = None) -> None:
        # a policy built in code skipped msgspec's checks: validate it like a file (``ConfigError``)
        self.policy = LifecyclePolicy() if policy is None else policy_from_obj(msgspec.to_builtins(policy))
        self._clock: Clock = clock or SystemClock()
        self.now = 0  # the latest time seen (timers due by it have fired)
        self._incidents: dict[int, IncidentLifecycle] = {}
        self._timers: list[tuple[int, int, int, int, int, int]] = []  # (due, seq, kind, incident, gen, level)
        self._seq = 0
        self._out: list[LifecycleEvent] = []  # events not yet returned

    # --- queries --------------------------------------------------------------------------------------------

    def get(self, incident: int) -> IncidentLifecycle:
        """One incident's state; ``NotFoundError`` when unknown."""
        try:
            return self._incidents[incident]
        except KeyError:
            raise NotFoundError("incident", incident) from None

    def __contains__(self, incident: object) -> bool:
        return incident in self._incidents

    def __iter__(self) -> Iterator[IncidentLifecycle]:
        return iter(list(self._incidents.values()))

    def __len__(self) -> int:
        return len(self._incidents)

    # --- engine facts ---------------------------------------------------------------------------------------

    def observe(self, events: Iterable[EngineEvent]) -> list[LifecycleEvent]:
        """Feed the incident engine's events, in order (the intended wiring); the lifecycle events they caused.

        ``IncidentOpened`` -> ``opened``; ``AlertOpened`` and any ``IncidentUpdated`` -> the priority;
        ``Page`` -> ``paged``; ``IncidentUpdated`` "reopened" -> ``reopened``, "alert-added" -> ``alert_added``;
        ``IncidentResolved`` -> ``condition_resolved``; ``IncidentMerged`` -> ``merged``. Facts about an
        incident the lifecycle does not know (forgotten by ``compact``, or not restored) are ignored, except a
        page, which starts its lifecycle.
        """
        for e in events:
            if isinstance(e, IncidentOpened):
                self._opened(e.incident, e.ts, e.priority)
            elif isinstance(e, Page):
                self._paged(e.incident, e.ts, e.priority)
            elif e.incident is None or e.incident not in self._incidents:
                continue
            elif isinstance(e, AlertOpened):
                self._priority(e.incident, max(self._incidents[e.incident].priority, e.priority), e.ts)
            elif isinstance(e, IncidentUpdated):
                if e.change == "reopened":
                    self._reopened(e.incident, e.ts, f"the engine reopened it: {e.detail}")
                elif e.change == "alert-added":
                    self._alert_added(e.incident, e.ts, e.detail)
                self._priority(e.incident, e.priority, e.ts)
            elif isinstance(e, IncidentResolved):
                self._condition_resolved(e.incident, e.ts, f"auto-resolved: {e.reason}")
            elif isinstance(e, IncidentMerged):
                self._condition_resolved(e.incident, e.ts, f"merged into incident {e.into}")
        return self._take()

    def opened(self, incident: int, ts: int | None = None, priority: float = 0.0) -> list[LifecycleEvent]:
        """A new incident (the engine's ``IncidentOpened``): open, its condition active. ``ConflictError`` if
        the id is known (an engine restarted without mapping its ids to the stored ones)."""
        self._opened(incident, self._time(ts), priority)
        return self._take()

    def paged(self, incident: int, ts: int | None = None, priority: float | None = None) -> list[LifecycleEvent]:
        """The incident paged (the engine's ``Page``): its escalation starts, if it is still open. An unknown
        incident starts its lifecycle here."""
        self._paged(incident, self._time(ts), priority)
        return self._take()

    def priority_changed(self, incident: int, priority: float, ts: int | None = None) -> list[LifecycleEvent]:
        """The incident's priority changed: a level that is due and now reaches its ``min_priority`` fires
        (stamped at the change)."""
        self._priority(incident, priority, self._time(ts))
        return self._take()

    def alert_added(self, incident: int, ts: int | None = None, detail: str = "") -> list[LifecycleEvent]:
        """The engine attached a new alert to the incident: its condition is active again, and a resolved (or
        closed) incident reopens (by ``system``)."""
        self._alert_added(incident, self._time(ts), detail)
        return self._take()

    def reopened(self, incident: int, ts: int | None = None,
                 reason: str = "the engine reopened it") -> list[LifecycleEvent]:
        """The engine reopened the incident (a new alert within its correlation window): resolved or closed
        goes back to open (by ``system``); the condition is active again."""
        self._reopened(incident, self._time(ts), reason)
        return self._take()

    def condition_resolved(self, incident: int, ts: int | None = None,
                           reason: str = "all its alerts resolved") -> list[LifecycleEvent]:
        """The engine resolved the incident (``IncidentResolved``: its condition cleared for the engine's
        ``auto_resolve_ms``): open, acknowledged or in progress becomes resolved (by ``system``, with the
        reason); the automatic close starts counting."""
        self._condition_resolved(incident, self._time(ts), f"auto-resolved: {reason}")
        return self._take()

    def merged(self, incident: int, into: int, ts: int | None = None) -> list[LifecycleEvent]:
        """The engine absorbed the incident into ``into`` (``IncidentMerged``): it resolves (by ``system``)."""
        self._condition_resolved(incident, self._time(ts), f"merged into incident {into}")
        return self._take()

    # --- people's actions -----------------------------------------------------------------------------------

    def transition(self, incident: int, to: IncidentStatus | str, by: str, *, note: str = "",
                   ts: int | None = None) -> list[LifecycleEvent]:
        """A person moves the incident to ``to``; ``ConflictError`` when :data:`TRANSITIONS` does not allow it
        (or when closing while the condition is still active), ``ValueError`` for a bad name or note."""
        try:
            target = IncidentStatus(to)
        except ValueError:
            raise ValueError(f"unknown status {to!r}; one of {', '.join(_ORDER)}") from None
        by = _person(by)
        note = _text(note, "note", allow_empty=True)
        ts = self._time(ts)
        self._advance(ts)
        inc = self.get(incident)
        allowed = TRANSITIONS[inc.status]
        if target not in allowed:
            stamp = inc.stamps.get(inc.status)
            since = f" (since {fmt_ms(stamp.ts)}, by {stamp.by})" if stamp else ""
            if inc.status is _S.CLOSED:
                raise ConflictError(f"incident {incident} is closed{since}: it cannot become {target}; "
                                    f"closed is final")
            options = " or ".join(s for s in _ORDER if s in allowed)
            raise ConflictError(f"incident {incident} is {inc.status}{since}: it cannot become {target}; "
                                f"from {inc.status} it can become {options}")
        if target is _S.CLOSED and inc.condition_active:
            after = self.policy.close_after_s
            when = (f"; it closes by itself {after:g} s after its alerts have resolved" if after is not None
                    else "; close it once its alerts have resolved")
            raise ConflictError(f"incident {incident} cannot be closed while its condition is still active "
                                f"(the engine has not resolved its alerts){when}")
        if inc.status is _S.OPEN and inc.acknowledged is None:
            inc.acknowledged = Stamp(by, max(ts, inc.status_since))
        self._move(inc, target, by, ts, note)
        if target is _S.RESOLVED:
            self._schedule_close(inc)
        return self._take()

    def acknowledge(self, incident: int, by: str, *, note: str = "", ts: int | None = None) -> list[LifecycleEvent]:
        """open -> acknowledged (stops the escalation)."""
        return self.transition(incident, _S.ACKNOWLEDGED, by, note=note, ts=ts)

    def start(self, incident: int, by: str, *, note: str = "", ts: int | None = None) -> list[LifecycleEvent]:
        """open or acknowledged -> in progress (from open, it is also the acknowledgement)."""
        return self.transition(incident, _S.IN_PROGRESS, by, note=note, ts=ts)

    def resolve(self, incident: int, by: str, *, note: str = "", ts: int | None = None) -> list[LifecycleEvent]:
        """open, acknowledged or in progress -> resolved, by a person (the condition may still be active)."""
        return self.transition(incident, _S.RESOLVED, by, note=note, ts=ts)

    def close(self, incident: int, by: str, *, note: str = "", ts: int | None = None) -> list[LifecycleEvent]:
        """resolved -> closed (final), once the condition is no longer active."""
        return self.transition(incident, _S.CLOSED, by, note=note, ts=ts)

    def reopen(self, incident: int, by: str, *, note: str = "", ts: int | None = None) -> list[LifecycleEvent]:
        """resolved -> open, by a person (it was not fixed). The escalation does not start again."""
        return self.transition(incident, _S.OPEN, by, note=note, ts=ts)

    def assign(self, incident: int, to: str | None, by: str, *, ts: int | None = None) -> list[LifecycleEvent]:
        """Assign the incident to ``to`` (``None``: unassign); no event when it is already theirs. A closed
        incident cannot be reassigned (``ConflictError``)."""
        by = _person(by)
        assignee = None if to is None else _person(to, "assignee")
        ts = self._time(ts)
        self._advance(ts)
        inc = self.get(incident)
        if inc.status is _S.CLOSED:
            raise ConflictError(f"incident {incident} is closed: it cannot be reassigned")
        if assignee != inc.assignee:
            self._out.append(Assigned(ts=ts, incident=incident, assignee=assignee, previous=inc.assignee, by=by))
            inc.assignee = assignee
        return self._take()

    def comment(self, incident: int, by: str, text: str, *, ts: int | None = None) -> list[LifecycleEvent]:
        """Add a comment (any status, closed too: a post-mortem note). The text is stripped, non-empty and at
        most :data:`MAX_TEXT_CHARS`; an incident holds at most :data:`MAX_COMMENTS` (``ConflictError``)."""
        by = _person(by)
        text = _text(text, "comment", allow_empty=False)
        ts = self._time(ts)
        self._advance(ts)
        inc = self.get(incident)
        if len(inc.comments) >= MAX_COMMENTS:
            raise ConflictError(f"incident {incident} already has {MAX_COMMENTS} comments, the most it can hold")
        c = Commented(ts=ts, incident=incident, n=len(inc.comments) + 1, by=by, text=text)
        inc.comments.append(c)
        self._out.append(c)
        return self._take()

    # --- time, restart, memory ------------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> list[LifecycleEvent]:
        """Let time pass to ``now_ms`` (the clock's now when None): the escalations and closes due by then."""
        self._advance(self._time(now_ms))
        return self._take()

    def snapshot(self, incident: int) -> LifecycleSnapshot:
        """The incident's lifecycle as plain data (to store; ``restore`` rebuilds it)."""
        inc = self.get(incident)
        return LifecycleSnapshot(
            incident=inc.incident, status=inc.status, opened_at=inc.opened_at, status_since=inc.status_since,
            priority=inc.priority, paged_at=inc.paged_at, escalation_from=inc.escalation_from,
            escalated=tuple(inc.escalated), acknowledged=inc.acknowledged, assignee=inc.assignee,
            condition_active=inc.condition_active, condition_cleared_at=inc.condition_cleared_at,
            stamps=tuple((s, inc.stamps[s]) for s in _ORDER if s in inc.stamps), comments=tuple(inc.comments))

    def restore(self, snap: LifecycleSnapshot) -> None:
        """Rebuild an incident from stored data after a restart (before feeding new facts about it).

        Escalation levels not yet fired are re-armed from ``escalation_from`` (levels that came due while the
        platform was down fire at the next call, stamped at their due time; fired level numbers beyond the
        policy's levels are ignored), and a resolved incident whose condition has cleared gets its automatic
        close. ``ConflictError`` if the incident is already known, ``ValueError`` if the data is inconsistent.
        """
        if snap.incident in self._incidents:
            raise ConflictError(f"incident {snap.incident} already has a lifecycle; restore it only once")
        status = IncidentStatus(snap.status)
        if snap.status_since < snap.opened_at:
            raise ValueError(f"incident {snap.incident}: status_since {snap.status_since} is before opened_at "
                             f"{snap.opened_at}")
        if status is _S.CLOSED and snap.condition_active:
            raise ValueError(f"incident {snap.incident}: closed with its condition still active")
        if snap.escalation_from is not None and snap.paged_at is None:
            raise ValueError(f"incident {snap.incident}: escalating (escalation_from) but never paged")
        if len(snap.comments) > MAX_COMMENTS:
            raise ValueError(f"incident {snap.incident}: {len(snap.comments)} comments, more than {MAX_COMMENTS}")
        n_levels = len(self.policy.levels)
        inc = IncidentLifecycle(
            incident=snap.incident, status=status, opened_at=snap.opened_at, status_since=snap.status_since,
            priority=snap.priority, paged_at=snap.paged_at,
            escalation_from=snap.escalation_from if status is _S.OPEN else None,
            escalated=sorted({k for k in snap.escalated if 1 <= k <= n_levels}), acknowledged=snap.acknowledged,
            assignee=snap.assignee, condition_active=snap.condition_active,
            condition_cleared_at=snap.condition_cleared_at,
            stamps={IncidentStatus(s): st for s, st in snap.stamps}, comments=list(snap.comments))
        self._incidents[inc.incident] = inc
        if inc.escalation_from is not None:
            self._schedule_levels(inc, inc.escalation_from)
        self._schedule_close(inc)

    def compact(self, before_ms: int) -> int:
        """Forget incidents closed before ``before_ms`` (after persisting their events); how many."""
        gone = [i for i, inc in self._incidents.items()
                if inc.status is _S.CLOSED and inc.status_since < before_ms]
        for i in gone:
            del self._incidents[i]
        return len(gone)

    # --- internals: engine facts ----------------------------------------------------------------------------

    def _opened(self, incident: int, ts: int, priority: float) -> IncidentLifecycle:
        self._advance(ts)
        if incident in self._incidents:
            raise ConflictError(f"incident {incident} already has a lifecycle (status "
                                f"{self._incidents[incident].status}); incident ids must not be reused")
        inc = IncidentLifecycle(incident=incident, status=_S.OPEN, opened_at=ts, status_since=ts, priority=priority,
                                stamps={_S.OPEN: Stamp(SYSTEM, ts)})
        self._incidents[incident] = inc
        return inc

    def _paged(self, incident: int, ts: int, priority: float | None) -> None:
        self._advance(ts)
        inc = self._incidents.get(incident)
        if inc is None:
            inc = self._opened(incident, ts, priority or 0.0)
        if priority is not None:
            inc.priority = priority
        if inc.paged_at is not None:
            return  # the engine pages once; a repeated page does not restart the escalation
        inc.paged_at = ts
        if inc.status is _S.OPEN:
            self._arm(inc, ts)
            self._catch_up(inc, ts)  # a page stamped before the latest time seen: levels already due

    def _priority(self, incident: int, priority: float, ts: int) -> None:
        self._advance(ts)
        inc = self.get(incident)
        inc.priority = priority
        self._catch_up(inc, ts)

    def _alert_added(self, incident: int, ts: int, detail: str) -> None:
        self._advance(ts)
        inc = self.get(incident)
        inc.condition_active = True
        inc.condition_cleared_at = None
        if inc.status in (_S.RESOLVED, _S.CLOSED):
            what = f"a new alert ({detail})" if detail else "a new alert"
            self._system_reopen(inc, ts, f"{what} after it was {inc.status}")

    def _reopened(self, incident: int, ts: int, reason: str) -> None:
        self._advance(ts)
        inc = self.get(incident)
        inc.condition_active = True
        inc.condition_cleared_at = None
        if inc.status in (_S.RESOLVED, _S.CLOSED):
            self._system_reopen(inc, ts, reason)

    def _condition_resolved(self, incident: int, ts: int, note: str) -> None:
        self._advance(ts)
        inc = self.get(incident)
        if inc.status is _S.CLOSED:
            return
        inc.condition_active = False
        inc.condition_cleared_at = ts
        if inc.status in _ACTIVE:
            self._move(inc, _S.RESOLVED, SYSTEM, ts, note)
        self._schedule_close(inc)

    # --- internals: status, timers --------------------------------------------------------------------------

    def _time(self, ts: int | None) -> int:
        return self._clock.now_ms() if ts is None else ts

    def _take(self) -> list[LifecycleEvent]:
        """The events gathered since the last call returned (a call that raised leaves its timer events here)."""
        out, self._out = self._out, []
        return out

    def _move(self, inc: IncidentLifecycle, to: IncidentStatus, by: str, ts: int, note: str) -> None:
        ts = max(ts, inc.status_since)
        self._out.append(StatusChanged(ts=ts, incident=inc.incident, from_status=inc.status, to_status=to, by=by,
                                       note=note))
        inc.status = to
        inc.status_since = ts
        inc.stamps[to] = Stamp(by, ts)
        inc.gen += 1  # pending timers of the previous status are stale
        if to is not _S.OPEN:
            inc.escalation_from = None  # acknowledged, started or resolved: no more escalation

    def _system_reopen(self, inc: IncidentLifecycle, ts: int, reason: str) -> None:
        self._move(inc, _S.OPEN, SYSTEM, ts, reason)
        if self.policy.escalate_reopened and inc.paged_at is not None:
            self._arm(inc, inc.status_since)

    def _arm(self, inc: IncidentLifecycle, start: int) -> None:
        inc.escalation_from = start
        inc.escalated = []
        self._schedule_levels(inc, start)

    def _schedule_levels(self, inc: IncidentLifecycle, start: int) -> None:
        for k, level in enumerate(self.policy.levels, 1):
            if k not in inc.escalated:
                self._schedule(start + level.after_ms, _ESCALATE, inc, k)

    def _schedule_close(self, inc: IncidentLifecycle) -> None:
        after = self.policy.close_after_ms
        if after is None or inc.status is not _S.RESOLVED or inc.condition_active:
            return
        since = max(inc.status_since, inc.condition_cleared_at or inc.status_since)
        self._schedule(since + after, _CLOSE, inc, 0)

    def _schedule(self, due: int, kind: int, inc: IncidentLifecycle, level: int) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, kind, inc.incident, inc.gen, level))

    def _advance(self, ts: int) -> None:
        until = max(ts, self.now)
        timers = self._timers
        while timers and timers[0][0] <= until:
            due, _, kind, ident, gen, k = heapq.heappop(timers)
            inc = self._incidents.get(ident)
            if inc is None or inc.gen != gen:
                continue  # forgotten, or its status changed since the timer was set
            if kind == _ESCALATE:
                if (inc.escalating and k not in inc.escalated and inc.escalation_from is not None
                        and inc.escalation_from + self.policy.levels[k - 1].after_ms == due
                        and self._eligible(inc, self.policy.levels[k - 1])):
                    self._fire(inc, k, due)
            elif inc.status is _S.RESOLVED and not inc.condition_active:
                self._move(inc, _S.CLOSED, SYSTEM, due,
                           f"auto-closed: resolved for {self.policy.close_after_s or 0:g} s without reopening")
        self.now = until

    def _catch_up(self, inc: IncidentLifecycle, ts: int) -> None:
        """Fire the levels already due (by the latest time seen) that have not fired and may now, stamped at
        ``ts`` or their due time, whichever is later."""
        if not inc.escalating or inc.escalation_from is None:
            return
        for k, level in enumerate(self.policy.levels, 1):
            due = inc.escalation_from + level.after_ms
            if due <= self.now and k not in inc.escalated and self._eligible(inc, level):
                self._fire(inc, k, max(ts, due))

    @staticmethod
    def _eligible(inc: IncidentLifecycle, level: EscalationLevel) -> bool:
        return level.min_priority is None or inc.priority >= level.min_priority

    def _fire(self, inc: IncidentLifecycle, k: int, ts: int) -> None:
        level = self.policy.levels[k - 1]
        inc.escalated.append(k)
        self._out.append(Escalated(ts=ts, incident=inc.incident, level=k, notify=level.notify,
                                   after_s=level.after_s, priority=inc.priority,
                                   since=inc.escalation_from if inc.escalation_from is not None else ts))


def _person(name: str, what: str = "by") -> str:
    """A person's name: stripped, non-empty, at most :data:`MAX_NAME_CHARS`, not ``system``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: a person's name is required")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{what}: a name of at most {MAX_NAME_CHARS} characters, not {len(name)}")
    if name == SYSTEM:
        raise ValueError(f"{what}: {SYSTEM!r} is reserved for what the platform does by itself")
    return name


def _text(text: str, what: str, *, allow_empty: bool) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{what}: text expected")
    text = text.strip()
    if not text and not allow_empty:
        raise ValueError(f"{what}: empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{what}: at most {MAX_TEXT_CHARS} characters, not {len(text)}")
    return text
