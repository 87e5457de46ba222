"""The incident lifecycle (issue 6): statuses, who/when, assignment, comments, escalation, auto-resolve and
auto-close, restart, and the wiring to the incident engine. Every time comes from the tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec
import pytest

from edgeloop.alerts.incidents import IncidentConfig, IncidentEngine, IncidentMerged, Page
from edgeloop.alerts.lifecycle import (
    DEFAULT_LEVELS,
    MAX_COMMENTS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    SYSTEM,
    TRANSITIONS,
    Assigned,
    Commented,
    Escalated,
    EscalationLevel,
    IncidentStatus,
    Lifecycle,
    LifecycleEvent,
    LifecyclePolicy,
    LifecycleSnapshot,
    Stamp,
    StatusChanged,
    parse_policy,
)
from edgeloop.alerts.model import Signal, SignalState, Topology
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError, ConflictError, NotFoundError

T0 = 1_767_225_600_000
T = T0 + 3_600_000
S = 1000
MIN = 60_000
OPEN, ACK, WORK, RESOLVED, CLOSED = (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.IN_PROGRESS,
                                     IncidentStatus.RESOLVED, IncidentStatus.CLOSED)

TWO_LEVELS = LifecyclePolicy(levels=(EscalationLevel(after_s=900, notify=("shift-lead",)),
                                     EscalationLevel(after_s=1800, notify=("manager", "plant"))),
                             close_after_s=3600)


def lifecycle(policy: LifecyclePolicy = TWO_LEVELS, start: int = T) -> tuple[Lifecycle, ManualClock]:
    clock = ManualClock(start)
    return Lifecycle(policy, clock), clock


def paged_incident(lc: Lifecycle, incident: int = 1, ts: int = T, priority: float = 40.0) -> None:
    assert lc.opened(incident, ts - 30 * S, priority) == []
    assert lc.paged(incident, ts, priority) == []


E = TypeVar("E", StatusChanged, Assigned, Commented, Escalated)


def only(events: Sequence[LifecycleEvent], kind: type[E]) -> E:
    """The one event of ``events``, of type ``kind``."""
    assert len(events) == 1 and isinstance(events[0], kind), events
    return events[0]


def escalations(events: Sequence[LifecycleEvent]) -> list[tuple[int, int, int]]:
    """(incident, level, ts) of the escalations."""
    return [(e.incident, e.level, e.ts) for e in events if isinstance(e, Escalated)]


def moves(events: Sequence[LifecycleEvent]) -> list[tuple[str, str, str]]:
    return [(e.from_status, e.to_status, e.by) for e in events if isinstance(e, StatusChanged)]


def raise_(ts: int, asset: str, rule: str, severity: str = "warning") -> Signal:
    return Signal(ts=ts, tenant="t1", asset=asset, rule=rule, state=SignalState.RAISE, severity=severity)


def clear(ts: int, asset: str, rule: str) -> Signal:
    return Signal(ts=ts, tenant="t1", asset=asset, rule=rule, state=SignalState.CLEAR)


# --- the full path, who and when ----------------------------------------------------------------------------


def test_open_ack_in_progress_resolved_closed_with_who_and_when() -> None:
    lc, clock = lifecycle()
    paged_incident(lc)
    clock.advance(4 * MIN)
    ev = only(lc.acknowledge(1, "alice", note="on my way"), StatusChanged)  # ts from the injected clock
    assert ev == StatusChanged(ts=T + 4 * MIN, incident=1, from_status=OPEN, to_status=ACK, by="alice",
                               note="on my way")
    assert lc.start(1, "bob", ts=T + 10 * MIN) == [
        StatusChanged(ts=T + 10 * MIN, incident=1, from_status=ACK, to_status=WORK, by="bob")]
    assert moves(lc.resolve(1, "bob", note="bearing replaced", ts=T + 50 * MIN)) == [(WORK, RESOLVED, "bob")]
    # the condition clears afterwards (the engine resolves): no second move, the close may happen now
    assert lc.condition_resolved(1, T + 55 * MIN) == []
    assert moves(lc.close(1, "carol", ts=T + 60 * MIN)) == [(RESOLVED, CLOSED, "carol")]
    st = lc.get(1)
    assert st.status is CLOSED and st.status_since == T + 60 * MIN
    assert st.acknowledged == Stamp("alice", T + 4 * MIN)  # the first move of a person out of open
    assert st.stamps == {OPEN: Stamp(SYSTEM, T - 30 * S), ACK: Stamp("alice", T + 4 * MIN),
                         WORK: Stamp("bob", T + 10 * MIN), RESOLVED: Stamp("bob", T + 50 * MIN),
                         CLOSED: Stamp("carol", T + 60 * MIN)}
    assert st.escalated == []  # acknowledged 4 min after the page: no level came due
    assert lc.tick(T + 10 * 3_600_000) == []


def test_start_from_open_is_the_acknowledgement_and_stops_escalation() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    assert moves(lc.start(1, "bob", ts=T + MIN)) == [(OPEN, WORK, "bob")]
    assert lc.get(1).acknowledged == Stamp("bob", T + MIN)
    assert lc.tick(T + 3_600_000) == []


# --- refused transitions ------------------------------------------------------------------------------------


def in_status(status: IncidentStatus) -> Lifecycle:
    """A lifecycle whose incident 1 is in ``status`` (its condition cleared when resolved or closed)."""
    lc, _ = lifecycle()
    paged_incident(lc)
    path = {OPEN: [], ACK: [ACK], WORK: [ACK, WORK], RESOLVED: [ACK, WORK, RESOLVED],
            CLOSED: [ACK, WORK, RESOLVED, CLOSED]}[status]
    for i, to in enumerate(path):
        if to is CLOSED:
            lc.condition_resolved(1, T + i * MIN)
        lc.transition(1, to, "alice", ts=T + i * MIN)
    assert lc.get(1).status is status
    return lc


@pytest.mark.parametrize("current", list(IncidentStatus))
def test_every_transition_outside_the_table_is_refused_naming_both_states(current: IncidentStatus) -> None:
    for target in IncidentStatus:
        lc = in_status(current)
        if target in TRANSITIONS[current]:
            if target is CLOSED:
                lc.condition_resolved(1, T + 10 * MIN)
            assert moves(lc.transition(1, target, "dave", ts=T + 10 * MIN)) == [(current, target, "dave")]
            continue
        with pytest.raises(ConflictError) as err:
            lc.transition(1, target, "dave", ts=T + 10 * MIN)
        msg = str(err.value)
        assert f"incident 1 is {current}" in msg and f"cannot become {target}" in msg
        assert ("closed is final" in msg) if current is CLOSED else (f"from {current} it can become" in msg)
        assert lc.get(1).status is current  # nothing changed


def test_the_table() -> None:
    assert TRANSITIONS[OPEN] == {ACK, WORK, RESOLVED}
    assert TRANSITIONS[ACK] == {WORK, RESOLVED}
    assert TRANSITIONS[WORK] == {RESOLVED}
    assert TRANSITIONS[RESOLVED] == {CLOSED, OPEN}
    assert TRANSITIONS[CLOSED] == frozenset()


def test_a_second_acknowledgement_names_who_acknowledged_first() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.acknowledge(1, "alice", ts=T + MIN)
    with pytest.raises(ConflictError, match=r"is acknowledged \(since 2026-01-01T01:01:00Z, by alice\): it cannot "
                                            r"become acknowledged; from acknowledged it can become in_progress or "
                                            r"resolved"):
        lc.acknowledge(1, "bob", ts=T + 2 * MIN)


def test_close_is_refused_while_the_condition_is_active() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.resolve(1, "alice", ts=T + MIN)  # a person may resolve while alerts still fire ...
    with pytest.raises(ConflictError, match=r"still active.*closes by itself 3600 s after its alerts have resolved"):
        lc.close(1, "alice", ts=T + 2 * MIN)  # ... but not close
    assert lc.tick(T + 5 * 3_600_000) == []  # and it does not close by itself either
    lc.condition_resolved(1, T + 6 * 3_600_000)
    assert lc.get(1).status is RESOLVED
    assert moves(lc.close(1, "alice", ts=T + 6 * 3_600_000 + S)) == [(RESOLVED, CLOSED, "alice")]


def test_unknown_incident_status_and_bad_input() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    with pytest.raises(NotFoundError, match="incident 9 not found"):
        lc.acknowledge(9, "alice")
    with pytest.raises(ValueError, match="unknown status 'done'"):
        lc.transition(1, "done", "alice")
    for bad in ("", "   ", SYSTEM, "x" * (MAX_NAME_CHARS + 1)):
        with pytest.raises(ValueError, match="by: "):
            lc.acknowledge(1, bad)
    with pytest.raises(ValueError, match="note: at most 4000"):
        lc.acknowledge(1, "alice", note="n" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(ConflictError, match="ids must not be reused"):
        lc.opened(1, T)
    assert lc.get(1).status is OPEN
    assert moves(lc.transition(1, "acknowledged", " alice ")) == [(OPEN, ACK, "alice")]  # names are stripped


def test_a_refused_call_loses_no_timer_event() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    with pytest.raises(NotFoundError):
        lc.acknowledge(2, "alice", ts=T + 16 * MIN)  # fired level 1 before finding no incident 2
    assert escalations(lc.tick(T + 16 * MIN)) == [(1, 1, T + 15 * MIN)]


# --- escalation ---------------------------------------------------------------------------------------------


def test_escalation_fires_at_exactly_the_configured_times_each_level_once() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    assert lc.tick(T + 15 * MIN - 1) == []
    e1 = only(lc.tick(T + 15 * MIN), Escalated)
    assert e1 == Escalated(ts=T + 15 * MIN, incident=1, level=1, notify=("shift-lead",), after_s=900, priority=40.0,
                           since=T)
    assert lc.tick(T + 30 * MIN - 1) == []
    assert escalations(lc.tick(T + 2 * 3_600_000)) == [(1, 2, T + 30 * MIN)]  # stamped when due, not when ticked
    assert lc.tick(T + 10 * 3_600_000) == []
    assert lc.get(1).escalated == [1, 2]


def test_escalation_is_the_same_however_time_is_split() -> None:
    a, _ = lifecycle()
    b, _ = lifecycle()
    for lc in (a, b):
        paged_incident(lc, 1, T)
        paged_incident(lc, 2, T + 7 * MIN, priority=90)
    once = a.tick(T + 3_600_000)
    stepped: list[LifecycleEvent] = []
    for t in range(T, T + 3_600_000 + 1, 10 * S):
        stepped += b.tick(t)
    assert once == stepped
    assert escalations(once) == [(1, 1, T + 15 * MIN), (2, 1, T + 22 * MIN), (1, 2, T + 30 * MIN),
                                 (2, 2, T + 37 * MIN)]


def test_acknowledging_stops_escalation_and_a_late_call_first_fires_what_was_due() -> None:
    lc, _ = lifecycle()
    paged_incident(lc, 1)
    paged_incident(lc, 2)
    # nothing called the lifecycle between the page and the ack: level 1 was due first
    ev = lc.acknowledge(1, "alice", ts=T + 16 * MIN)
    assert escalations(ev) == [(1, 1, T + 15 * MIN), (2, 1, T + 15 * MIN)]
    assert moves(ev) == [(OPEN, ACK, "alice")]
    assert escalations(lc.tick(T + 3_600_000)) == [(2, 2, T + 30 * MIN)]  # only the unacknowledged one


def test_resolving_stops_escalation() -> None:
    lc, _ = lifecycle()
    paged_incident(lc, 1)
    paged_incident(lc, 2)
    lc.resolve(1, "alice", ts=T + MIN)
    lc.condition_resolved(2, T + 2 * MIN)  # auto-resolve by the engine
    assert lc.tick(T + 3_600_000) == []


def test_an_acknowledgement_before_the_page_starts_no_escalation() -> None:
    lc, _ = lifecycle()
    lc.opened(1, T - 30 * S, 40.0)
    lc.acknowledge(1, "alice", ts=T - 10 * S)  # seen in the inbox during the engine's group wait
    assert lc.paged(1, T, 40.0) == []
    assert lc.tick(T + 3_600_000) == []
    assert lc.get(1).paged_at == T


def test_min_priority_levels_fire_when_the_priority_rises() -> None:
    policy = LifecyclePolicy(levels=(EscalationLevel(after_s=900, notify=("lead",)),
                                     EscalationLevel(after_s=1800, notify=("manager",), min_priority=60)))
    lc, _ = lifecycle(policy)
    paged_incident(lc, 1, priority=40)
    paged_incident(lc, 2, priority=80)
    assert escalations(lc.tick(T + 35 * MIN)) == [(1, 1, T + 15 * MIN), (2, 1, T + 15 * MIN), (2, 2, T + 30 * MIN)]
    # incident 1 was below level 2's priority at its time; when its priority rises, level 2 fires then, once
    assert lc.priority_changed(1, 50.0, T + 38 * MIN) == []
    e = only(lc.priority_changed(1, 80.0, T + 40 * MIN), Escalated)
    assert (e.level, e.ts, e.notify, e.priority) == (2, T + 40 * MIN, ("manager",), 80.0)
    assert lc.priority_changed(1, 90.0, T + 41 * MIN) == []
    assert lc.tick(T + 3 * 3_600_000) == []


def test_a_late_page_fires_the_levels_already_due() -> None:
    lc, _ = lifecycle()
    lc.tick(T + 20 * MIN)  # other work moved time on; the page (stamped T) arrives late
    assert escalations(lc.paged(1, T, 40.0)) == [(1, 1, T + 15 * MIN)]
    assert escalations(lc.tick(T + 31 * MIN)) == [(1, 2, T + 30 * MIN)]


def test_the_default_policy() -> None:
    assert LifecyclePolicy() == parse_policy("")
    assert [(lv.after_s, lv.min_priority) for lv in DEFAULT_LEVELS] == [(900, None), (1800, None)]
    lc = Lifecycle(clock=ManualClock(T))
    paged_incident(lc)
    assert escalations(lc.tick(T + 3_600_000)) == [(1, 1, T + 15 * MIN), (1, 2, T + 30 * MIN)]


# --- auto-resolve, auto-close, reopen -----------------------------------------------------------------------


def test_auto_resolve_from_the_engine_then_auto_close() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.acknowledge(1, "alice", ts=T + MIN)
    ev = only(lc.condition_resolved(1, T + 20 * MIN, "all its alerts resolved"), StatusChanged)
    assert ev == StatusChanged(ts=T + 20 * MIN, incident=1, from_status=ACK, to_status=RESOLVED, by=SYSTEM,
                               note="auto-resolved: all its alerts resolved")
    assert lc.tick(T + 80 * MIN - 1) == []
    ev = only(lc.tick(T + 80 * MIN), StatusChanged)
    assert (ev.from_status, ev.to_status, ev.by, ev.ts) == (RESOLVED, CLOSED, SYSTEM, T + 80 * MIN)
    assert "resolved for 3600 s" in ev.note


def test_auto_close_counts_from_the_later_of_resolution_and_condition_end_and_can_be_off() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.resolve(1, "alice", ts=T + MIN)
    lc.condition_resolved(1, T + 30 * MIN)
    assert lc.tick(T + 90 * MIN - 1) == []
    assert moves(lc.tick(T + 90 * MIN)) == [(RESOLVED, CLOSED, SYSTEM)]
    lc2, _ = lifecycle(LifecyclePolicy(close_after_s=None))
    paged_incident(lc2)
    lc2.condition_resolved(1, T + MIN)
    assert lc2.tick(T + 1000 * 3_600_000) == [] and lc2.get(1).status is RESOLVED


def test_the_engine_reopens_a_resolved_incident_without_restarting_escalation() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.condition_resolved(1, T + 5 * MIN)  # never acknowledged: auto-resolved, escalation stops
    ev = only(lc.reopened(1, T + 8 * MIN, "a new alert within 600 s"), StatusChanged)
    assert (ev.from_status, ev.to_status, ev.by, ev.note) == (RESOLVED, OPEN, SYSTEM, "a new alert within 600 s")
    assert lc.get(1).condition_active
    assert lc.tick(T + 3 * 3_600_000) == []  # no escalation (the engine does not page again), no auto-close
    assert lc.get(1).status is OPEN


def test_escalate_reopened_restarts_the_levels_from_the_reopen() -> None:
    lc, _ = lifecycle(LifecyclePolicy(levels=TWO_LEVELS.levels, escalate_reopened=True))
    paged_incident(lc)
    assert escalations(lc.tick(T + 16 * MIN)) == [(1, 1, T + 15 * MIN)]
    lc.condition_resolved(1, T + 20 * MIN)
    lc.reopened(1, T + 25 * MIN)
    ev = lc.tick(T + 3_600_000)
    assert escalations(ev) == [(1, 1, T + 40 * MIN), (1, 2, T + 55 * MIN)]
    assert {e.since for e in ev if isinstance(e, Escalated)} == {T + 25 * MIN}


def test_a_person_reopens_and_the_close_timer_is_cancelled() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.condition_resolved(1, T + MIN)
    assert moves(lc.reopen(1, "alice", note="still noisy", ts=T + 10 * MIN)) == [(RESOLVED, OPEN, "alice")]
    assert lc.tick(T + 5 * 3_600_000) == []  # neither the old close nor an escalation
    lc.resolve(1, "alice", ts=T + 6 * 3_600_000)
    assert lc.get(1).status is RESOLVED and not lc.get(1).condition_active
    assert moves(lc.tick(T + 7 * 3_600_000)) == [(RESOLVED, CLOSED, SYSTEM)]  # the condition had cleared before


def test_a_second_resolution_restarts_the_close_and_a_reopen_before_a_level_keeps_it_quiet() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.condition_resolved(1, T + MIN)  # close due at T + 61 min ...
    lc.reopen(1, "alice", ts=T + 10 * MIN)  # ... cancelled; no escalation either (levels at 15 and 30 min)
    lc.resolve(1, "alice", ts=T + 20 * MIN)  # close due at T + 80 min
    assert lc.tick(T + 80 * MIN - 1) == []
    assert moves(lc.tick(T + 80 * MIN)) == [(RESOLVED, CLOSED, SYSTEM)]


def test_a_new_alert_on_a_resolved_incident_reopens_it_even_when_closed() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.resolve(1, "alice", ts=T + MIN)  # resolved by a person while the engine's incident is still open
    ev = only(lc.alert_added(1, T + 2 * MIN, "p1/temp-high"), StatusChanged)
    assert (ev.from_status, ev.to_status, ev.by) == (RESOLVED, OPEN, SYSTEM)
    assert ev.note == "a new alert (p1/temp-high) after it was resolved"
    assert lc.alert_added(1, T + 3 * MIN, "p1/other") == []  # already open
    # closed is final for people, but a new alert must not vanish in a closed incident
    lc.condition_resolved(1, T + 10 * MIN)
    lc.close(1, "alice", ts=T + 11 * MIN)
    with pytest.raises(ConflictError, match="closed is final"):
        lc.reopen(1, "alice", ts=T + 12 * MIN)
    assert moves(lc.reopened(1, T + 13 * MIN)) == [(CLOSED, OPEN, SYSTEM)]


def test_timestamps_never_go_back_within_an_incident() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.acknowledge(1, "alice", ts=T + 10 * MIN)
    ev = only(lc.condition_resolved(1, T + 9 * MIN), StatusChanged)  # a fact stamped before the ack arrives after it
    assert ev.ts == T + 10 * MIN and lc.get(1).status_since == T + 10 * MIN


# --- assignment and comments --------------------------------------------------------------------------------


def test_assignment() -> None:
    lc, clock = lifecycle()
    paged_incident(lc)
    assert lc.assign(1, "bob", "alice") == [Assigned(ts=T, incident=1, assignee="bob", previous=None, by="alice")]
    assert lc.assign(1, "bob", "alice") == []  # already his
    clock.advance(MIN)
    assert lc.assign(1, "carol", "bob") == [Assigned(ts=T + MIN, incident=1, assignee="carol", previous="bob",
                                                     by="bob")]
    assert only(lc.assign(1, None, "carol"), Assigned).assignee is None
    assert lc.get(1).status is OPEN  # assigning is not acknowledging
    for bad in ("", SYSTEM, "y" * (MAX_NAME_CHARS + 1)):
        with pytest.raises(ValueError, match="assignee: "):
            lc.assign(1, bad, "alice")
    lc.condition_resolved(1, T + 2 * MIN)
    lc.close(1, "alice", ts=T + 3 * MIN)
    with pytest.raises(ConflictError, match="closed: it cannot be reassigned"):
        lc.assign(1, "dave", "alice")


def test_comments_are_bounded_numbered_and_allowed_after_close() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    assert lc.comment(1, "alice", "  vibration at the drive end \n", ts=T + MIN) == [
        Commented(ts=T + MIN, incident=1, n=1, by="alice", text="vibration at the drive end")]
    for bad in ("", "   \n"):
        with pytest.raises(ValueError, match="comment: empty"):
            lc.comment(1, "alice", bad)
    with pytest.raises(ValueError, match="comment: at most 4000 characters, not 4001"):
        lc.comment(1, "alice", "c" * (MAX_TEXT_CHARS + 1))
    assert only(lc.comment(1, "alice", "c" * MAX_TEXT_CHARS), Commented).n == 2
    lc.condition_resolved(1, T + 2 * MIN)
    lc.close(1, "alice", ts=T + 3 * MIN)
    postmortem = lc.comment(1, "bob", "root cause: loose coupling", ts=T + 4 * MIN)  # allowed after the close
    assert only(postmortem, Commented).n == 3
    for i in range(MAX_COMMENTS - 3):
        lc.comment(1, "bob", f"note {i}", ts=T + 5 * MIN)
    with pytest.raises(ConflictError, match=f"already has {MAX_COMMENTS} comments"):
        lc.comment(1, "bob", "one too many")
    assert len(lc.get(1).comments) == MAX_COMMENTS and lc.get(1).status is CLOSED


# --- restart ------------------------------------------------------------------------------------------------


def test_restore_then_escalation_continues_where_it_was() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    lc.assign(1, "bob", "alice", ts=T + MIN)
    lc.comment(1, "alice", "looking", ts=T + 2 * MIN)
    assert escalations(lc.tick(T + 20 * MIN)) == [(1, 1, T + 15 * MIN)]
    snap = lc.snapshot(1)
    stored = msgspec.json.encode(snap)  # what a database row could hold
    back = msgspec.json.decode(stored, type=LifecycleSnapshot)
    assert back == snap
    # the platform restarts at T + 25 min
    lc2, _ = lifecycle(start=T + 25 * MIN)
    lc2.restore(back)
    assert lc2.snapshot(1) == snap
    assert lc2.tick(T + 30 * MIN - 1) == []  # level 1 does not fire again
    assert escalations(lc2.tick(T + 30 * MIN)) == [(1, 2, T + 30 * MIN)]
    assert lc2.get(1).assignee == "bob" and [c.text for c in lc2.get(1).comments] == ["looking"]
    assert only(lc2.comment(1, "bob", "on it"), Commented).n == 2
    with pytest.raises(ConflictError, match="restore it only once"):
        lc2.restore(back)


def test_levels_due_while_down_fire_at_the_next_call_stamped_when_due() -> None:
    lc, _ = lifecycle()
    paged_incident(lc)
    snap = lc.snapshot(1)
    lc2, _ = lifecycle(start=T + 2 * 3_600_000)
    lc2.restore(snap)
    assert escalations(lc2.tick()) == [(1, 1, T + 15 * MIN), (1, 2, T + 30 * MIN)]
    # a stopped escalation stays stopped; a resolved incident gets its automatic close back
    lc.acknowledge(1, "alice", ts=T + MIN)
    lc.condition_resolved(1, T + 2 * MIN)
    lc3, _ = lifecycle()
    lc3.restore(lc.snapshot(1))
    assert moves(lc3.tick(T + 10 * 3_600_000)) == [(RESOLVED, CLOSED, SYSTEM)]
    assert lc3.get(1).stamps[CLOSED].ts == T + 62 * MIN


def test_restore_refuses_inconsistent_data_and_ignores_levels_the_policy_no_longer_has() -> None:
    lc, _ = lifecycle()
    with pytest.raises(ValueError, match="closed with its condition still active"):
        lc.restore(LifecycleSnapshot(incident=1, status=CLOSED, opened_at=T, status_since=T))
    with pytest.raises(ValueError, match="never paged"):
        lc.restore(LifecycleSnapshot(incident=1, status=OPEN, opened_at=T, status_since=T, escalation_from=T))
    with pytest.raises(ValueError, match="before opened_at"):
        lc.restore(LifecycleSnapshot(incident=1, status=OPEN, opened_at=T, status_since=T - 1))
    lc.restore(LifecycleSnapshot(incident=1, status=OPEN, opened_at=T, status_since=T, paged_at=T,
                                 escalation_from=T, escalated=(1, 7)))
    assert lc.get(1).escalated == [1]
    assert escalations(lc.tick(T + 3_600_000)) == [(1, 2, T + 30 * MIN)]


def test_compact_forgets_closed_incidents_only() -> None:
    lc, _ = lifecycle()
    paged_incident(lc, 1)
    paged_incident(lc, 2)
    lc.condition_resolved(1, T + MIN)
    lc.tick(T + 3 * 3_600_000)  # 1 closed at T + 61 min
    assert lc.compact(T + 61 * MIN) == 0
    assert lc.compact(T + 62 * MIN) == 1
    assert 1 not in lc and 2 in lc and len(lc) == 1


# --- the policy as data -------------------------------------------------------------------------------------


def test_a_policy_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"levels\[1\].after_s\): 900 s must be later than the previous level's"):
        Lifecycle(LifecyclePolicy(levels=(EscalationLevel(after_s=1800, notify=("a",)),
                                           EscalationLevel(after_s=900, notify=("b",)))))
    with pytest.raises(ConfigError, match="close_after_s"):
        Lifecycle(LifecyclePolicy(close_after_s=-1))


def test_policy_from_yaml() -> None:
    p = parse_policy("levels:\n  - {after_s: 600, notify: [lead]}\n"
                     "  - {after_s: 1200, notify: [manager, plant], min_priority: 60}\n"
                     "close_after_s: null\nescalate_reopened: true\n")
    assert p == LifecyclePolicy(levels=(EscalationLevel(after_s=600, notify=("lead",)),
                                        EscalationLevel(after_s=1200, notify=("manager", "plant"), min_priority=60)),
                                close_after_s=None, escalate_reopened=True)
    assert parse_policy('{"levels": []}').levels == ()


@pytest.mark.parametrize(("text", "message"), [
    ("levels:\n  - {after_s: 600, notify: [lead]}\n  - {after_s: 300, notify: [boss]}\n",
     "policy.yaml, line 3 (levels[1].after_s): 300 s must be later than the previous level's 600 s"),
    ("levels:\n  - {after_s: -5, notify: [lead]}\n", "policy.yaml, line 2 (levels[0].after_s): Expected `float` > 0"),
    ("levels:\n  - {after_s: 60, notify: []}\n", "line 2 (levels[0].notify): Expected `array` of length >= 1"),
    ("levels:\n  - {after_s: 60, notify: [a, a]}\n", "line 2 (levels[0].notify): a listed twice"),
    ("levels:\n  - {after_s: 60, notify: [lead], min_priority: 120}\n", "(levels[0].min_priority): Expected `float`"),
    ("levels:\n  - {after_s: 60, notfy: [lead]}\n", "line 2 (levels[0]): Object contains unknown field `notfy`"),
    ("close_after_s: 0\n", "line 1 (close_after_s): Expected `float` > 0"),
    ("- 1\n", "policy.yaml: expected a mapping"),
    ("levels: [\n", "policy.yaml, line 2: not valid YAML/JSON"),
])
def test_policy_errors_name_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(text, origin="policy.yaml")
    assert message in str(err.value)


# --- wired to the incident engine ---------------------------------------------------------------------------


def engine(topology: Topology | None = None, **cfg: object) -> IncidentEngine:
    config = IncidentConfig(started_at_ms=T0, **cfg)  # type: ignore[arg-type]
    return IncidentEngine(topology or Topology(), config, ManualClock(T0))


def test_engine_pages_the_lifecycle_escalates_a_person_acknowledges_the_engine_resolves() -> None:
    eng = engine(Topology(criticality={"p1": 5}), auto_resolve_ms=5 * MIN)
    lc, _ = lifecycle()
    out = lc.observe(eng.process(raise_(T, "p1", "bearing-hot", severity="critical")))
    assert out == [] and lc.get(1).status is OPEN and lc.get(1).priority == 100.0
    page_events = eng.tick(T + 30 * S)
    (page,) = [e for e in page_events if isinstance(e, Page)]
    assert lc.observe(page_events) == [] and lc.get(1).paged_at == T + 30 * S
    # nobody acknowledges for 15 minutes after the page
    assert lc.observe(eng.tick(T + 15 * MIN)) == []
    assert escalations(lc.tick(T + 15 * MIN + 30 * S)) == [(page.incident, 1, T + 15 * MIN + 30 * S)]
    lc.acknowledge(page.incident, "alice", ts=T + 17 * MIN)
    lc.start(page.incident, "alice", ts=T + 18 * MIN)
    # the fault is fixed: the condition clears, and the engine resolves 5 min later
    assert lc.observe(eng.process(clear(T + 25 * MIN, "p1", "bearing-hot"))) == []
    assert lc.observe(eng.tick(T + 30 * MIN - 1)) == []
    ev = only(lc.observe(eng.tick(T + 30 * MIN)), StatusChanged)
    assert (ev.from_status, ev.to_status, ev.by, ev.ts) == (WORK, RESOLVED, SYSTEM, T + 30 * MIN)
    assert ev.note == "auto-resolved: all its alerts resolved"
    assert lc.tick(T + 3 * 3_600_000)[-1] == StatusChanged(
        ts=T + 90 * MIN, incident=1, from_status=RESOLVED, to_status=CLOSED, by=SYSTEM,
        note="auto-closed: resolved for 3600 s without reopening")


def test_engine_reopens_a_resolved_incident_and_the_lifecycle_follows() -> None:
    eng = engine(auto_resolve_ms=MIN)
    lc, _ = lifecycle()
    ev = eng.process(raise_(T, "p1", "temp-high")) + eng.tick(T + 30 * S)
    ev += eng.process(clear(T + MIN, "p1", "temp-high")) + eng.tick(T + 2 * MIN)
    out = lc.observe(ev)
    assert moves(out) == [(OPEN, RESOLVED, SYSTEM)]  # auto-resolved before anyone looked
    # another rule on the same asset within the engine's window: the engine reopens the incident
    out = lc.observe(eng.process(raise_(T + 5 * MIN, "p1", "vibration-high")))
    assert moves(out) == [(RESOLVED, OPEN, SYSTEM)]
    (reopen,) = [e for e in out if isinstance(e, StatusChanged)]
    assert reopen.note.startswith("the engine reopened it: a new alert within 600 s")
    assert lc.get(1).condition_active
    lc.resolve(1, "alice", ts=T + 6 * MIN)
    with pytest.raises(ConflictError, match="condition is still active"):
        lc.close(1, "alice", ts=T + 6 * MIN)
    assert lc.tick(T + 3 * 3_600_000) == []  # reopened, not paged again: no escalation


def test_a_line_wide_cause_one_lifecycle_pages_the_merged_ones_resolve() -> None:
    topo = Topology(line_of_asset={f"p{i}": "L2" for i in range(40)}, site_of_line={"L2": "s"})
    eng = engine(topo)
    lc, _ = lifecycle()
    ev = eng.process_many([raise_(T + i * 100, f"p{i}", "undervoltage") for i in range(30)])
    ev += eng.tick(T + 5 * MIN)
    out = lc.observe(ev)
    (page,) = [e for e in ev if isinstance(e, Page)]
    merged = {e.incident: e.into for e in ev if isinstance(e, IncidentMerged)}
    assert len(merged) == 5 and set(merged.values()) == {page.incident}
    assert sorted((e.incident, e.note) for e in out if isinstance(e, StatusChanged)) == [
        (i, f"merged into incident {page.incident}") for i in sorted(merged)]
    assert {i.incident for i in lc if i.status is OPEN} == {page.incident}
    assert escalations(lc.tick(T + 3_600_000)) == [(page.incident, 1, page.ts + 15 * MIN),
                                                   (page.incident, 2, page.ts + 30 * MIN)]
