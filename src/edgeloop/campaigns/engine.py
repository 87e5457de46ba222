"""The campaign engine (pure): moves a set of targets from version ``from_ref`` to ``to_ref`` through a shadow
phase and canary waves, judged by quality gates, to ``promoted`` or ``rolled_back``.

It knows nothing of what is rolled out: a detector version on devices, an edge model or a software release on
gateways (issue 17). ``from_ref``/``to_ref`` and targets are plain strings; the service that runs a campaign turns
the engine's actions into alias changes, detector swaps or release pushes.

Phases::

    shadow ──▶ wave 0 ──▶ wave 1 ──▶ … ──▶ promoted            (any gate fail ──▶ rolled_back; abort ──▶ aborted)
          ╲   (awaiting_approval before a wave whose ``approvals`` entry is true)

- ``shadow`` (``shadow_ms``, skipped when 0 or when the payload cannot be shadowed): every target scores
  ``to_ref`` beside ``from_ref``; nothing changes for anyone.
- ``wave k`` (``soak_ms``): the first ``max(1, ⌊waves[k] · N⌋)`` targets in the campaign's hash order run
  ``to_ref`` live; with ``shadow`` on, ``from_ref`` keeps scoring them in shadow (so every gate compares the two on
  the same data, and what the champion finds is still paged by the service: no fault missed during a rollout) and
  the other targets keep shadowing ``to_ref``. Waves are cumulative; the last is 1.0 (every target).
- A phase passes when its duration has elapsed and every gate says ``pass``; a gate that says ``fail`` at any
  time rolls back every target that ran ``to_ref``; a gate still at ``continue`` when the phase reaches
  ``max_soak_factor`` × its duration fails the phase (no decision is no promotion). The exception is a
  campaign-wide test (``RateSPRT(scope="campaign")``, the default false-alarm gate): one sequential test over
  every phase's counts, which a phase does not wait for and which is truncated only at the end of the last soak
  (why: ``campaigns/stats.py``).
- ``awaiting_approval``: the previous phase passed and the next wave needs an operator (``approve``); the
  previous placement stays and the gates keep watching (a fail still rolls back).

Log entries (``Event.kind``): ``campaign.started``, ``shadow.entered``, ``wave.entered``, ``approval.awaited``,
``approval.given``, ``gate.passed`` / ``gate.running`` (a campaign-wide test still undecided when a phase ends) /
``gate.failed`` (each with the gate's figures), then one of ``promoted``, ``rolled_back``, ``aborted``; each names
who (``engine`` or the operator).

Persistence and restarts. ``CampaignState`` is a msgspec struct (JSON via ``encode_state`` / ``decode_state``)
and says what *should* run where. Actions are derived from it, never stored elsewhere: the placement actions
(``Assign``, ``Shadow``, ``EndShadow``, ``Rollback``, ``Promote``) are emitted whenever the placement changed
since the service last called ``acknowledge``, and ``Event`` actions for the log entries not yet acknowledged.
The service persists the new state, applies the actions (idempotently), then persists ``acknowledge(state)``.
A crash anywhere in between re-emits what may not have been applied; nothing is lost, at worst re-applied.

Observations passed to ``step`` are per gate name, cumulative since ``state.phase_start_ms``, over
``compared_targets(spec, state)`` (the wave's targets, or every target while the candidate only shadows); a gate
without an observation keeps its last decision, and a sequential gate (``RateSPRT``) keeps its first pass for the
rest of the phase (its error rates assume it stops there). Each phase is judged on its own data: gates start
afresh when a phase begins.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from edgeloop.campaigns.gates import (
    Gate,
    GateDecision,
    MissedFaultGate,
    Observation,
    RateCounts,
    RateSPRT,
    decide,
)
from edgeloop.errors import ConfigError, ConflictError

__all__ = [
    "Action",
    "Assign",
    "CampaignProgress",
    "CampaignSpec",
    "CampaignState",
    "CampaignStateError",
    "EndShadow",
    "Event",
    "Promote",
    "Rollback",
    "Shadow",
    "abort",
    "acknowledge",
    "approve",
    "compared_targets",
    "decode_state",
    "default_gates",
    "encode_state",
    "pending_actions",
    "progress",
    "start",
    "step",
    "validate_spec",
    "wave_targets",
]

Phase = Literal["shadow", "wave", "awaiting_approval", "promoted", "rolled_back", "aborted"]
TERMINAL: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_TARGETS = 100_000
MAX_WAVES = 10
MAX_GATES = 16
MAX_TEXT = 500  # an operator's name or reason kept in the log
GATE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class CampaignStateError(ConflictError):
    """The operation does not fit the campaign's phase (approving a campaign that awaits nothing, aborting a
    finished one)."""


def default_gates() -> dict[str, Gate]:
    """The gates of a detector rollout: false alarms (SPRT) and missed faults."""
    return {"false_alarms": RateSPRT(), "missed_faults": MissedFaultGate()}


class CampaignSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to roll out where, and how carefully. ``approvals[k]``: wave k waits for an operator before it starts
    (empty = no approvals). ``shadow``: whether ``to_ref`` can score beside ``from_ref`` (models yes, releases
    no). ``scope``: the alias scope whose champion ``from_ref`` is and that a promotion changes (``*`` the whole
    profile, ``group:NAME`` a rollout group's)."""

    id: str
    payload: Literal["model", "edge_model", "release"]
    subject: str
    from_ref: str
    to_ref: str
    targets: list[str]
    waves: list[float] = msgspec.field(default_factory=lambda: [0.1, 0.5, 1.0])
    shadow: bool = True
    shadow_ms: int = 24 * 3_600_000
    soak_ms: int = 24 * 3_600_000
    max_soak_factor: float = 3.0
    approvals: list[bool] = msgspec.field(default_factory=list)
    gates: dict[str, Gate] = msgspec.field(default_factory=default_gates)
    created_by: str = ""
    created_ms: int = 0
    scope: str = "*"


class Event(msgspec.Struct, frozen=True, kw_only=True, tag="event", tag_field="action"):
    """One entry of the campaign's log (and an audit record / campaign event for the service to write)."""

    seq: int
    ts_ms: int
    kind: str
    by: str
    message: str
    figures: dict[str, float] = msgspec.field(default_factory=dict)


class Assign(msgspec.Struct, frozen=True, kw_only=True, tag="assign", tag_field="action"):
    """These targets run ``ref`` live."""

    targets: list[str]
    ref: str


class Shadow(msgspec.Struct, frozen=True, kw_only=True, tag="shadow", tag_field="action"):
    """These targets score ``ref`` in shadow (findings recorded, never paged); replaces any earlier shadow.
    ``safety_net``: ``ref`` is the champion shadowing a wave's targets; a finding of it that the live candidate
    does not match within the missed-fault grace period must still be paged (no fault missed during a rollout)."""

    targets: list[str]
    ref: str
    safety_net: bool = False


class EndShadow(msgspec.Struct, frozen=True, kw_only=True, tag="end_shadow", tag_field="action"):
    """These targets score nothing in shadow any more."""

    targets: list[str]


class Promote(msgspec.Struct, frozen=True, kw_only=True, tag="promote", tag_field="action"):
    """``ref`` becomes the subject's champion (for every target)."""

    ref: str


class Rollback(msgspec.Struct, frozen=True, kw_only=True, tag="rollback", tag_field="action"):
    """These targets (all that ever ran the candidate) run ``to_ref`` again; the champion is unchanged."""

    targets: list[str]
    to_ref: str


Action = Assign | Shadow | EndShadow | Promote | Rollback | Event


class CampaignState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where a campaign is. ``wave``: the wave running (``phase == "wave"``) or awaiting approval to start; -1 in
    shadow. ``live``: the targets that should run ``to_ref`` now; ``exposed``: every target that ever did.
    ``gates``: the latest decision of each gate in the current phase (a campaign-wide test's is kept from phase
    to phase). ``carried``: the counts of the finished phases for the campaign-wide tests, ``phase_counts``
    the current phase's latest (what ``carried`` gains when the phase ends). ``placement`` counts placement changes,
    ``applied`` the last one the service acknowledged; ``delivered`` the events it acknowledged."""

    campaign_id: str
    phase: Phase
    wave: int
    phase_start_ms: int
    live: list[str] = msgspec.field(default_factory=list)
    exposed: list[str] = msgspec.field(default_factory=list)
    gates: dict[str, GateDecision] = msgspec.field(default_factory=dict)
    carried: dict[str, RateCounts] = msgspec.field(default_factory=dict)
    phase_counts: dict[str, RateCounts] = msgspec.field(default_factory=dict)
    events: list[Event] = msgspec.field(default_factory=list)
    placement: int = 0
    applied: int = 0
    delivered: int = 0
    ended_ms: int | None = None
    outcome: str = ""


def encode_state(state: CampaignState) -> bytes:
    return msgspec.json.encode(state, order="sorted")


def decode_state(raw: bytes) -> CampaignState:
    return msgspec.json.decode(raw, type=CampaignState)


# --- the spec ---------------------------------------------------------------------------------------------------


def validate_spec(spec: CampaignSpec) -> None:
    """Refuse a spec the engine cannot run, with ``ConfigError`` naming the field."""
    if not ID_PATTERN.fullmatch(spec.id):
        raise ConfigError(f"campaign id {spec.id!r} must match {ID_PATTERN.pattern}")
    if spec.from_ref == spec.to_ref:
        raise ConfigError(f"from_ref and to_ref are both {spec.to_ref!r}: nothing to roll out")
    if not spec.targets:
        raise ConfigError("targets is empty")
    if len(spec.targets) > MAX_TARGETS:
        raise ConfigError(f"targets holds {len(spec.targets)}, more than {MAX_TARGETS}")
    if len(set(spec.targets)) != len(spec.targets):
        raise ConfigError("targets holds a target twice")
    if not 1 <= len(spec.waves) <= MAX_WAVES:
        raise ConfigError(f"waves must hold 1 to {MAX_WAVES} fractions, not {len(spec.waves)}")
    if any(not (0.0 < w <= 1.0) for w in spec.waves) or any(b <= a for a, b in itertools.pairwise(spec.waves)):
        raise ConfigError(f"waves {spec.waves} must increase strictly within (0, 1]")
    if spec.waves[-1] != 1.0:
        raise ConfigError(f"the last wave must be 1.0 (every target), not {spec.waves[-1]}")
    if spec.approvals and len(spec.approvals) != len(spec.waves):
        raise ConfigError(f"approvals holds {len(spec.approvals)} entries for {len(spec.waves)} waves")
    if spec.soak_ms <= 0 or spec.shadow_ms < 0:
        raise ConfigError("soak_ms must be above 0 and shadow_ms at least 0")
    if len(spec.gates) > MAX_GATES or any(not GATE_NAME.fullmatch(name) for name in spec.gates):
        raise ConfigError(f"gates: at most {MAX_GATES}, each named like {GATE_NAME.pattern}")
    if not (math.isfinite(spec.max_soak_factor) and spec.max_soak_factor >= 1.0):
        raise ConfigError(f"max_soak_factor must be at least 1, not {spec.max_soak_factor}")


def wave_targets(spec: CampaignSpec) -> list[list[str]]:
    """The targets of each wave: every target ordered by sha256(campaign id, target) (deterministic, unrelated
    to names, different per campaign), wave k the first ``max(1, ⌊waves[k] · N⌋)``: cumulative, at least one
    target, never more than the wave's fraction unless that fraction is under one target."""
    order = sorted(spec.targets, key=lambda t: (hashlib.sha256(f"{spec.id}\n{t}".encode()).digest(), t))
    n = len(order)
    return [order[: max(1, math.floor(w * n + 1e-9))] for w in spec.waves]


# --- transitions ------------------------------------------------------------------------------------------------


def _log(state: CampaignState, *, now_ms: int, kind: str, message: str, by: str = "engine",
         figures: Mapping[str, float] | None = None) -> None:
    state.events.append(Event(seq=len(state.events), ts_ms=now_ms, kind=kind, by=by, message=message,
                              figures=dict(figures or {})))


def _copy(state: CampaignState) -> CampaignState:
    return msgspec.structs.replace(state, live=list(state.live), exposed=list(state.exposed),
                                   gates=dict(state.gates), carried=dict(state.carried),
                                   phase_counts=dict(state.phase_counts), events=list(state.events))


def _new_phase(spec: CampaignSpec, state: CampaignState, phase: Phase, wave: int, *, now_ms: int) -> None:
    """Begin a phase: the campaign-wide tests carry the ended phase's counts and their standing over; every other
    gate starts afresh."""
    for name, counts in state.phase_counts.items():
        state.carried[name] = state.carried[name] + counts if name in state.carried else counts
    state.phase_counts = {}
    state.gates = {name: d for name, d in state.gates.items() if spec.gates[name].spans_phases}
    state.phase, state.wave, state.phase_start_ms = phase, wave, now_ms


def _enter_wave(spec: CampaignSpec, state: CampaignState, k: int, *, now_ms: int, by: str = "engine") -> None:
    live = wave_targets(spec)[k]
    _new_phase(spec, state, "wave", k, now_ms=now_ms)
    state.live = live
    state.exposed = sorted(set(state.exposed) | set(live))
    state.placement += 1
    _log(state, now_ms=now_ms, kind="wave.entered", by=by,
         message=f"wave {k + 1} of {len(spec.waves)}: {len(live)} of {len(spec.targets)} targets run {spec.to_ref}",
         figures={"wave": float(k), "fraction": spec.waves[k], "targets": float(len(live))})


def _enter(spec: CampaignSpec, state: CampaignState, k: int, *, now_ms: int) -> None:
    """Go to wave ``k``, through approval when the spec asks for it."""
    if spec.approvals and spec.approvals[k]:
        _new_phase(spec, state, "awaiting_approval", k, now_ms=now_ms)
        _log(state, now_ms=now_ms, kind="approval.awaited",
             message=f"wave {k + 1} ({spec.waves[k]:.0%} of targets) waits for an operator's approval",
             figures={"wave": float(k)})
    else:
        _enter_wave(spec, state, k, now_ms=now_ms)


def _end(spec: CampaignSpec, state: CampaignState, phase: Phase, *, now_ms: int, kind: str, message: str,
         by: str = "engine", figures: Mapping[str, float] | None = None) -> None:
    state.phase, state.ended_ms, state.outcome = phase, now_ms, message
    if phase != "promoted":
        state.live = []
    state.placement += 1
    _log(state, now_ms=now_ms, kind=kind, by=by, message=message, figures=figures)


def start(spec: CampaignSpec, *, now_ms: int) -> tuple[CampaignState, list[Action]]:
    """A new campaign: validated, in shadow (or at its first wave when there is no shadow phase)."""
    validate_spec(spec)
    state = CampaignState(campaign_id=spec.id, phase="shadow", wave=-1, phase_start_ms=now_ms)
    _log(state, now_ms=now_ms, kind="campaign.started", by=spec.created_by or "engine",
         message=f"roll {spec.subject} from {spec.from_ref} to {spec.to_ref} on {len(spec.targets)} targets in "
                 f"{len(spec.waves)} waves", figures={"targets": float(len(spec.targets))})
    if spec.shadow and spec.shadow_ms > 0:
        state.placement += 1
        _log(state, now_ms=now_ms, kind="shadow.entered",
             message=f"{spec.to_ref} scores in shadow on every target", figures={"shadow_ms": float(spec.shadow_ms)})
    else:
        _enter(spec, state, 0, now_ms=now_ms)
    return state, pending_actions(spec, state)


def _phase_duration(spec: CampaignSpec, state: CampaignState) -> int:
    return spec.shadow_ms if state.phase == "shadow" else spec.soak_ms


def step(spec: CampaignSpec, state: CampaignState, now_ms: int,
         observations: Mapping[str, Observation]) -> tuple[CampaignState, list[Action]]:
    """Judge the current phase on ``observations`` (per gate name, cumulative since ``state.phase_start_ms``) and
    move on if it is decided. Returns the new state and the actions still to apply (see the module docstring);
    ``state`` itself is not changed. A finished campaign only re-emits its unacknowledged actions."""
    unknown = set(observations) - set(spec.gates)
    if unknown:
        raise ValueError(f"observations for gates the campaign does not have: {sorted(unknown)}")
    new = _copy(state)
    if new.phase in TERMINAL:
        return new, pending_actions(spec, new)
    duration = _phase_duration(spec, new)
    waiting = new.phase == "awaiting_approval"
    end_of_soak = not waiting and now_ms >= new.phase_start_ms + duration
    last_phase = new.phase == "wave" and new.wave == len(spec.waves) - 1
    for name, obs in sorted(observations.items()):
        gate, before = spec.gates[name], new.gates.get(name)
        if before is not None and before.status == "pass" and gate.sticky:
            continue
        judged, truncate = obs, end_of_soak
        if gate.spans_phases and isinstance(obs, RateCounts):
            new.phase_counts[name] = obs
            judged = new.carried[name] + obs if name in new.carried else obs
            truncate = end_of_soak and last_phase
        new.gates[name] = decide(name, gate, judged, now_ms=now_ms, end_of_soak=truncate)
    where = "shadow" if new.phase == "shadow" else f"wave {new.wave + 1}"
    if waiting:
        where = f"waiting for wave {new.wave + 1}"
    failed = [d for _, d in sorted(new.gates.items()) if d.status == "fail"]
    if failed:
        for d in failed:
            _log(new, now_ms=now_ms, kind="gate.failed", message=f"{where}: {d.gate}: {d.reason}",
                 figures=d.figures)
        _end(spec, new, "rolled_back", now_ms=now_ms, kind="rolled_back",
             message=f"{where}: gate {failed[0].gate} failed; {len(new.exposed)} target(s) back to {spec.from_ref}",
             figures={"exposed": float(len(new.exposed))})
        return new, pending_actions(spec, new)
    if waiting or not end_of_soak:
        return new, pending_actions(spec, new)
    undecided = sorted(g for g in spec.gates if (g not in new.gates or new.gates[g].status != "pass")
                       and not (spec.gates[g].spans_phases and not last_phase))
    if undecided:
        if now_ms >= new.phase_start_ms + spec.max_soak_factor * duration:
            _end(spec, new, "rolled_back", now_ms=now_ms, kind="rolled_back",
                 message=f"{where}: no decision from {', '.join(undecided)} within the longest soak; "
                         f"{len(new.exposed)} target(s) back to {spec.from_ref}",
                 figures={"exposed": float(len(new.exposed))})
        return new, pending_actions(spec, new)
    for _, d in sorted(new.gates.items()):
        kind = "gate.passed" if d.status == "pass" else "gate.running"  # a campaign-wide test, still undecided
        _log(new, now_ms=now_ms, kind=kind, message=f"{where}: {d.gate}: {d.reason}", figures=d.figures)
    if new.phase == "wave" and new.wave == len(spec.waves) - 1:
        _end(spec, new, "promoted", now_ms=now_ms, kind="promoted",
             message=f"{spec.to_ref} is the champion of {spec.subject} on all {len(spec.targets)} targets")
    else:
        _enter(spec, new, new.wave + 1, now_ms=now_ms)
    return new, pending_actions(spec, new)


def approve(spec: CampaignSpec, state: CampaignState, *, by: str,
            now_ms: int) -> tuple[CampaignState, list[Action]]:
    """An operator lets the awaited wave start."""
    if state.phase != "awaiting_approval":
        raise CampaignStateError(f"campaign {state.campaign_id} awaits no approval (it is {state.phase})")
    new = _copy(state)
    by = by[:MAX_TEXT]
    _log(new, now_ms=now_ms, kind="approval.given", by=by, message=f"{by} approved wave {new.wave + 1}",
         figures={"wave": float(new.wave)})
    _enter_wave(spec, new, new.wave, now_ms=now_ms, by=by)
    return new, pending_actions(spec, new)


def abort(spec: CampaignSpec, state: CampaignState, *, by: str, reason: str,
          now_ms: int) -> tuple[CampaignState, list[Action]]:
    """Stop the campaign and roll every target that ran ``to_ref`` back (the champion is unchanged)."""
    if state.phase in TERMINAL:
        raise CampaignStateError(f"campaign {state.campaign_id} is {state.phase} already")
    new = _copy(state)
    by, reason = by[:MAX_TEXT], reason[:MAX_TEXT]
    _end(spec, new, "aborted", now_ms=now_ms, kind="aborted", by=by,
         message=f"aborted by {by}: {reason}; {len(new.exposed)} target(s) back to {spec.from_ref}",
         figures={"exposed": float(len(new.exposed))})
    return new, pending_actions(spec, new)


# --- actions derived from the state -----------------------------------------------------------------------------


def _placement(spec: CampaignSpec, state: CampaignState) -> list[Action]:
    """Everything needed for the state's placement to hold, whatever was applied before."""
    everyone = list(spec.targets)
    if state.phase == "promoted":
        return [Assign(targets=everyone, ref=spec.to_ref), Promote(ref=spec.to_ref),
                *([EndShadow(targets=everyone)] if spec.shadow else [])]
    if state.phase in TERMINAL:
        back: list[Action] = [Rollback(targets=list(state.exposed), to_ref=spec.from_ref)] if state.exposed else []
        return back + ([EndShadow(targets=everyone)] if spec.shadow else [])
    live = set(state.live)
    rest = [t for t in spec.targets if t not in live]
    actions: list[Action] = []
    if state.live:
        actions.append(Assign(targets=list(state.live), ref=spec.to_ref))
        if spec.shadow:
            actions.append(Shadow(targets=list(state.live), ref=spec.from_ref, safety_net=True))
    if spec.shadow and rest:
        actions.append(Shadow(targets=rest, ref=spec.to_ref))
    return actions


def pending_actions(spec: CampaignSpec, state: CampaignState) -> list[Action]:
    """The actions the service has not acknowledged: the placement (whole, if it changed since the last
    acknowledgement) then the new log entries."""
    actions = _placement(spec, state) if state.applied < state.placement else []
    return [*actions, *state.events[state.delivered:]]


def acknowledge(state: CampaignState) -> CampaignState:
    """The service applied every pending action: nothing is re-emitted until the state changes again."""
    return msgspec.structs.replace(state, applied=state.placement, delivered=len(state.events))


# --- what the service observes and shows ------------------------------------------------------------------------


def compared_targets(spec: CampaignSpec, state: CampaignState) -> list[str]:
    """The targets whose two versions the gates compare now: the wave's (the candidate live, the champion in
    shadow), or every target while the candidate only shadows (the shadow phase, or awaiting the first wave's
    approval). Empty once the campaign is over. The service collects observations over these, since
    ``state.phase_start_ms``."""
    if state.phase in TERMINAL:
        return []
    return list(state.live) if state.live else list(spec.targets)


class CampaignProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A campaign at a glance (for the API, the command line and the dashboard)."""

    id: str
    phase: Phase
    wave: int  # 1-based wave running or awaited; 0 in shadow
    waves: int
    fraction: float  # of targets running the candidate now
    on_candidate: int
    targets: int
    phase_start_ms: int
    phase_ends_ms: int | None  # when the phase may pass at the earliest (None: awaiting approval, or over)
    gates: dict[str, str]  # gate name → pass | fail | continue | pending (no observation yet in this phase)
    ended_ms: int | None
    outcome: str


def progress(spec: CampaignSpec, state: CampaignState) -> CampaignProgress:
    ends: int | None = None
    if state.phase in {"shadow", "wave"}:
        ends = state.phase_start_ms + _phase_duration(spec, state)
    return CampaignProgress(
        id=state.campaign_id, phase=state.phase, wave=max(0, state.wave + 1), waves=len(spec.waves),
        fraction=len(state.live) / len(spec.targets), on_candidate=len(state.live), targets=len(spec.targets),
        phase_start_ms=state.phase_start_ms, phase_ends_ms=ends,
        gates={name: state.gates[name].status if name in state.gates else "pending" for name in sorted(spec.gates)},
        ended_ms=state.ended_ms, outcome=state.outcome)
