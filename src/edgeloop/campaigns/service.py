"""The campaign service: runs the pure engine (``campaigns/engine.py``) on the platform, persisted and resumable.

What it does for every running campaign, on each ``tick`` (the platform calls it every few seconds, ``run``):

1. collect the gates' observations since the phase began over ``compared_targets`` (``observe``): anomaly onsets
   of both versions from ``model_findings``, confirmed faults from the technicians' labels, probe results;
2. ``engine.step``, then persist the new state *before* acting on it;
3. apply its placement (idempotently, the whole placement derived from the state, never a diff): which versions
   score each target (``Placement.assign``), the alias change on promotion (``Aliases.promote`` then
   ``Aliases.refresh``), the release of every target when the campaign ends; then audit each new log entry once;
4. persist ``engine.acknowledge(state)``.

A crash anywhere leaves a state that says what should run where: ``resume`` (at start-up) re-applies the
placement of every active campaign, so a restarted platform continues where it was. A log entry is audited
exactly once: its audit record carries its ``seq`` (``[seq]`` at the start of the detail), and entries already
in the audit log are not written again (``Store.list_campaign_audit`` after a restart, a watermark in memory
otherwise).

A version that cannot be loaded (``ModelRefused`` while assigning) aborts the campaign with the reason (audited);
the loop never crashes on one campaign's trouble, it logs and tries again on the next tick.

One change at a time: ``tick``, ``start``, ``approve`` and ``abort`` hold one lock (a probe run, once per phase,
holds it too). One service per database: two platforms over one PostgreSQL would both step every campaign.

Model campaigns run here: payload ``model`` (platform detectors: targets are devices, refs
``<subject>@<version>``, placed by ``Placement``) and payload ``edge_model`` (edge models: targets are gateways,
placed by pushes and observed from heartbeats by a ``GatewayPlacement``); a release campaign (issue 17) needs its
own placement.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

import msgspec

from edgeloop.campaigns import engine
from edgeloop.campaigns.engine import (
    TERMINAL,
    Action,
    CampaignProgress,
    CampaignSpec,
    CampaignState,
    Event,
)
from edgeloop.campaigns.gates import (
    Episode,
    Episodes,
    MissedFaultGate,
    Observation,
    ProbeGate,
    ProbeResults,
    RateCounts,
    RateSPRT,
    ScoreSample,
    ScoreShiftGate,
)
from edgeloop.campaigns.live_scores import LiveScores
from edgeloop.errors import ConfigError, EdgeLoopError, ModelRefused, NotFoundError
from edgeloop.scoring import Assignment
from edgeloop.store.alerting import Label, Verdict
from edgeloop.store.base import AuditRecord, CampaignRecord, Store

__all__ = ["Aliases", "CampaignService", "CampaignView", "Placement", "ProbeRunner"]

log = logging.getLogger(__name__)

DAY_MS = 24 * 3_600_000
LABEL_PAD_MS = 30 * 60_000  # a confirmed fault's window, padded: onsets inside it are not false alarms
MAX_FINDINGS = 100_000  # findings read per campaign and tick (the gates' own bound)
ANOMALY = "anomaly"  # the finding kind the gates compare (data gaps and stuck sensors are not the model's doing)
AUDIT_SOURCE = "campaigns"
SEQ_PREFIX = re.compile(r"\[(\d+)\]")


class Placement(Protocol):
    """Which versions score which device (``edgeloop.models.deployment.Deployment``)."""

    async def assign(self, assignments: Mapping[str, Assignment]) -> None:
        """These devices score with these versions from now on; ``ModelRefused`` if a version cannot be loaded."""
        ...

    def release(self, devices: Iterable[str]) -> None:
        """These devices go back to their profile's champion."""
        ...


class Aliases(Protocol):
    """The champion aliases (``edgeloop.models.registry.ModelRegistry`` and the deployment that reads them)."""

    async def promote(self, ref: str, *, by: str, reason: str, scope: str = "*") -> object:
        """``ref`` becomes its model's champion in ``scope`` (audited by the registry)."""
        ...

    async def refresh(self) -> None:
        """The deployment re-reads the champions."""
        ...


class GatewayPlacement(Protocol):
    """Edge-model campaigns (payload ``edge_model``): the pushes to gateways and what their gates observe
    (``edgeloop.models.edge_rollout.EdgeRollout``)."""

    def check(self, spec: CampaignSpec) -> None:
        """``ConfigError`` for an edge campaign that cannot run."""
        ...

    async def place(self, spec: CampaignSpec, state: CampaignState) -> None: ...

    async def observe(self, spec: CampaignSpec, state: CampaignState) -> dict[str, Observation]: ...

    def forget(self, campaign_id: str) -> None: ...


class ProbeRunner(Protocol):
    """Known-answer fault injections on the targets' recent normal data, scored by both versions."""

    async def run(self, spec: CampaignSpec, targets: Sequence[str], now_ms: int) -> ProbeResults: ...


class CampaignView(msgspec.Struct, frozen=True, kw_only=True):
    """A campaign as the API shows it: what was asked, where it is, at a glance, and its log."""

    spec: CampaignSpec
    state: CampaignState
    progress: CampaignProgress
    events: list[Event]


class Onset(NamedTuple):
    """An anomaly onset of one version on one device."""

    model: str
    device: str
    ts: int


class Fault(NamedTuple):
    """A fault a technician confirmed: its window on one device and when the verdict was given."""

    device: str
    start_ms: int
    end_ms: int
    labelled_ms: int


def _ref_model(ref: str) -> str:
    return ref.rpartition("@")[0]


def _unapplied(state: CampaignState) -> CampaignState:
    """``state`` with its placement not acknowledged: the engine emits it whole again."""
    return msgspec.structs.replace(state, applied=min(state.applied, state.placement - 1))


def _audit_seq(detail: str) -> int | None:
    found = SEQ_PREFIX.match(detail)
    return int(found.group(1)) if found else None


class CampaignService:
    """Starts, steps, persists and resumes campaigns; see the module docstring."""

    def __init__(self, *, store: Store, now: Callable[[], int], placement: Placement, aliases: Aliases,
                 audit: Callable[[AuditRecord], Awaitable[None]], probes: ProbeRunner | None = None,
                 gateways: GatewayPlacement | None = None, scores: LiveScores | None = None) -> None:
        self.store = store
        self.now = now
        self.placement = placement
        self.aliases = aliases
        self.audit = audit
        self.probes = probes
        self.gateways = gateways
        self.scores = scores  # the versions' live scores (the score-distribution gate), fed by the scoring stage
        self._lock = asyncio.Lock()  # one change of a campaign at a time (tick, start, approve, abort)
        self._audited: dict[str, int] = {}  # campaign id → the next log entry not yet audited (kept only while active)
        self._probe_cache: dict[str, tuple[int, int, ProbeResults]] = {}  # id → (phase start, wave, results)
        self._placed: set[str] = set()  # the active campaigns whose placement this process applied

    # --- operations -------------------------------------------------------------------------------------------

    async def start(self, spec: CampaignSpec, *, by: str) -> CampaignView:
        """Validate and persist a new campaign and apply its first placement. ``ConfigError`` for a spec this
        service cannot run; ``ConflictError`` if its id exists or another campaign still rolls out its subject."""
        now = self.now()
        spec = msgspec.structs.replace(spec, created_by=by[:engine.MAX_TEXT], created_ms=now)
        self._check(spec)
        state, actions = engine.start(spec, now_ms=now)
        async with self._lock:
            await self.store.add_campaign(CampaignRecord(
                id=spec.id, payload=spec.payload, subject=spec.subject, spec=msgspec.json.encode(spec).decode(),
                state=engine.encode_state(state).decode(), phase=state.phase, active=True, created_ms=now,
                updated_ms=now))
            state = await self._commit(spec, state, actions)
        log.info("campaign %s started by %s: %s → %s on %d targets", spec.id, by, spec.from_ref, spec.to_ref,
                 len(spec.targets))
        return self._view(spec, state)

    async def approve(self, campaign_id: str, *, by: str) -> CampaignView:
        """Let the awaited wave start (``CampaignStateError`` if the campaign awaits no approval)."""
        async with self._lock:
            spec, state = await self._load(campaign_id)
            state, actions = engine.approve(spec, state, by=by, now_ms=self.now())
            state = await self._commit(spec, state, actions)
        return self._view(spec, state)

    async def abort(self, campaign_id: str, *, by: str, reason: str) -> CampaignView:
        """Stop the campaign: every target back to the champion, which does not change (``CampaignStateError``
        if it is over already)."""
        async with self._lock:
            spec, state = await self._load(campaign_id)
            state, actions = engine.abort(spec, state, by=by, reason=reason, now_ms=self.now())
            state = await self._commit(spec, state, actions)
        return self._view(spec, state)

    async def get(self, campaign_id: str) -> CampaignView:
        """``NotFoundError`` if there is no such campaign."""
        return self._view(*await self._load(campaign_id))

    async def list(self, *, running_only: bool = False) -> list[CampaignView]:
        """Newest first."""
        return [self._view(*self._decode(r)) for r in await self.store.list_campaigns(running_only=running_only)]

    # --- the loop -------------------------------------------------------------------------------------------

    async def resume(self) -> int:
        """At start-up: re-apply the placement of every active campaign (a restarted platform's scoring knows
        nothing of them), settle what was not applied before the stop, audit what was not audited. Returns how
        many campaigns were resumed."""
        resumed = 0
        async with self._lock:
            for rec in await self.store.list_campaigns(running_only=True):
                spec, state = self._decode(rec)
                try:
                    forced = _unapplied(state)  # the whole placement again, acknowledged before the stop or not
                    await self._commit(spec, forced, engine.pending_actions(spec, forced))
                except EdgeLoopError as exc:
                    log.warning("campaign %s not resumed yet (%s); the next tick tries again", spec.id, exc)
                    continue
                resumed += 1
                log.info("campaign %s resumed in %s", spec.id, state.phase)
        return resumed

    async def tick(self) -> None:
        """Step every running campaign once (observe, judge, persist, apply, persist). One campaign's failure
        (store down, probe runner failing) is logged and retried on the next tick."""
        async with self._lock:
            for rec in await self.store.list_campaigns(running_only=True):
                spec, state = self._decode(rec)
                try:
                    if state.phase in TERMINAL:  # over, but its last actions were not applied
                        await self._commit(spec, state, engine.pending_actions(spec, state))
                        continue
                    now = self.now()
                    observations = await self.observe(spec, state, now)
                    new, actions = engine.step(spec, state, now, observations)
                    if spec.id not in self._placed:  # not placed by this process yet (``resume`` failed or not run)
                        new = _unapplied(new)
                        actions = engine.pending_actions(spec, new)
                    if new != state or actions:
                        await self._commit(spec, new, actions)
                except EdgeLoopError as exc:
                    log.warning("campaign %s: step failed (%s); the next tick tries again", spec.id, exc)

    async def run(self, every_s: float) -> None:
        """``tick`` every ``every_s`` seconds until cancelled."""
        while True:
            try:
                await self.tick()
            except Exception:  # the loop outlives any one tick's failure (it is logged with its traceback)
                log.exception("campaign tick failed")
            await asyncio.sleep(every_s)

    # --- observations ---------------------------------------------------------------------------------------

    async def observe(self, spec: CampaignSpec, state: CampaignState, now_ms: int) -> dict[str, Observation]:
        """Each gate's observation, cumulative since ``state.phase_start_ms`` over the compared targets.

        - ``RateSPRT``: anomaly onsets of each version, except those inside a confirmed (or relabelled) fault's
          window padded by 30 min on that device; exposure = compared targets × elapsed days, the same for both
          (they score the same targets);
        - ``MissedFaultGate``: the candidate's onsets as point episodes, and the confirmed faults overlapping the
          phase or confirmed during it (a fault of an earlier phase whose verdict came late still counts); the
          champion's findings are not references of their own (a champion finding the candidate does not share is
          judged by the technicians' verdict on it, paged through the safety net);
        - ``ProbeGate``: the probe runner's results on every target, once per phase;
        - ``ScoreShiftGate``: the candidate's live scores on the compared targets since the phase began (live or
          shadow, thinned, ``campaigns/live_scores.py``);
        - other gates: no observation (they stay pending, which is why ``start`` refuses them).
        """
        if spec.payload == "edge_model":
            return await self.gateways.observe(spec, state) if self.gateways is not None else {}
        targets = engine.compared_targets(spec, state)
        if not targets:
            return {}
        since = state.phase_start_ms
        now_ms = max(now_ms, since)
        grace = max((g.grace_ms for g in spec.gates.values() if isinstance(g, MissedFaultGate)), default=0)
        faults = await self._confirmed_faults(targets, labelled_since=since - LABEL_PAD_MS - grace, now_ms=now_ms)
        campaign_start = state.events[0].ts_ms if state.events else since
        # the faults the candidate is judged on: those of this phase, and those of an earlier phase of the campaign
        # whose verdict came only now (the phase that saw them passed before anyone knew it was a fault)
        judged = [f for f in faults if f.end_ms >= since or (f.labelled_ms >= since and f.end_ms >= campaign_start)]
        earliest = min([since, *(f.start_ms for f in judged)]) - grace
        findings = await self._onsets(spec, targets, since=max(campaign_start, earliest), until=now_ms + 1)
        observations: dict[str, Observation] = {}
        for name, gate in spec.gates.items():
            if isinstance(gate, RateSPRT):
                observations[name] = self._rate_counts(spec, findings, faults, targets=len(targets), since=since,
                                                       now_ms=now_ms)
            elif isinstance(gate, MissedFaultGate):
                faulty = {f.device for f in judged}  # a finding can only match a fault on its own target
                observations[name] = Episodes(
                    champion=[],
                    challenger=[Episode(target=f.device, start_ms=f.ts, end_ms=f.ts) for f in findings
                                if f.model == spec.to_ref and f.device in faulty],
                    confirmed=[Episode(target=f.device, start_ms=f.start_ms, end_ms=f.end_ms) for f in judged])
            elif isinstance(gate, ProbeGate) and self.probes is not None:
                # every target, in every phase: probes are synthetic, and a wave of one device whose champion is
                # alarming (a changed regime) would give no evidence at all
                results = await self._probe(spec, state, spec.targets, now_ms)
                if results is not None:
                    observations[name] = results
            elif isinstance(gate, ScoreShiftGate) and self.scores is not None:
                observations[name] = ScoreSample(scores=self.scores.sample(spec.to_ref, targets, since_ms=since))
        return observations

    async def _onsets(self, spec: CampaignSpec, targets: Sequence[str], *, since: int,
                      until: int) -> Sequence[Onset]:
        """Both versions' anomaly onsets on ``targets`` with ``since <= ts < until``, in time order."""
        wanted = set(targets)
        found = await self.store.list_model_onsets(models=[spec.from_ref, spec.to_ref], kind=ANOMALY, since=since,
                                                   until=until, limit=MAX_FINDINGS)
        if len(found) >= MAX_FINDINGS:
            log.warning("campaign %s: more than %d findings in the phase, the gates see the first ones", spec.id,
                        MAX_FINDINGS)
        return [Onset(*f) for f in found if f[1] in wanted]

    async def _confirmed_faults(self, targets: Sequence[str], *, labelled_since: int,
                                now_ms: int) -> Sequence[Fault]:
        """The faults technicians confirmed (or relabelled) on ``targets`` in a verdict given since
        ``labelled_since``, begun by ``now_ms``; the newest label of each alert wins (a confirmation later called a
        false alarm is no fault). A verdict comes after the window it judges began, so older labels are not read."""
        wanted = set(targets)
        newest: dict[int, Label] = {}
        for label in await self.store.list_labels(since_ms=labelled_since):  # oldest first: the last one wins
            newest[label.alert] = label
        return sorted(Fault(lb.device, lb.start_ms, lb.end_ms, lb.ts) for lb in newest.values()
                      if lb.verdict in (Verdict.CONFIRMED, Verdict.RELABEL) and lb.device in wanted
                      and lb.start_ms <= now_ms)

    @staticmethod
    def _rate_counts(spec: CampaignSpec, findings: Sequence[Onset], faults: Sequence[Fault], *, targets: int,
                     since: int, now_ms: int) -> RateCounts:
        windows: dict[str, list[tuple[int, int]]] = {}
        for f in faults:
            windows.setdefault(f.device, []).append((f.start_ms - LABEL_PAD_MS, f.end_ms + LABEL_PAD_MS))

        def false_alarms(ref: str) -> int:
            return sum(1 for f in findings if f.model == ref and f.ts >= since
                       and not any(lo <= f.ts <= hi for lo, hi in windows.get(f.device, ())))

        exposure = targets * (now_ms - since) / DAY_MS
        return RateCounts(challenger_events=false_alarms(spec.to_ref), challenger_exposure=exposure,
                          champion_events=false_alarms(spec.from_ref), champion_exposure=exposure)

    async def _probe(self, spec: CampaignSpec, state: CampaignState, targets: Sequence[str],
                     now_ms: int) -> ProbeResults | None:
        """The phase's probe results: run once per phase (kept in memory; a restart runs them again)."""
        assert self.probes is not None
        cached = self._probe_cache.get(spec.id)
        if cached is not None and cached[:2] == (state.phase_start_ms, state.wave):
            return cached[2]
        try:
            results = await self.probes.run(spec, targets, now_ms)
        except EdgeLoopError as exc:
            log.warning("campaign %s: probes failed (%s); tried again on the next tick", spec.id, exc)
            return None
        if results.probes:  # none yet (the candidate's detectors not attached, too little data): next tick
            self._probe_cache[spec.id] = (state.phase_start_ms, state.wave, results)
        return results

    # --- persistence and placement ----------------------------------------------------------------------------

    def _check(self, spec: CampaignSpec) -> None:
        """What the engine accepts and this service can also run."""
        engine.validate_spec(spec)
        if spec.payload == "edge_model":
            if self.gateways is None:
                raise ConfigError("this platform does not roll edge models out (no gateway placement)")
            self.gateways.check(spec)
            return
        if spec.payload != "model":
            raise ConfigError(f"payload {spec.payload!r}: this service rolls out model versions only")
        for ref in (spec.from_ref, spec.to_ref):
            if _ref_model(ref) != spec.subject or not ref.rpartition("@")[2].isdigit():
                raise ConfigError(f"{ref!r} is not a version of {spec.subject!r} (expected {spec.subject}@<n>)")
        for name, gate in spec.gates.items():
            if (isinstance(gate, RateSPRT | MissedFaultGate) or (isinstance(gate, ProbeGate) and self.probes)
                    or (isinstance(gate, ScoreShiftGate) and self.scores is not None)):
                continue
            missing = {ProbeGate: " (no probe runner)", ScoreShiftGate: " (no live scores)"}.get(type(gate), "")
            raise ConfigError(f"gate {name!r} ({type(gate).__name__}): the platform collects no observations for "
                              f"it{missing}, so it could never pass")

    async def _load(self, campaign_id: str) -> tuple[CampaignSpec, CampaignState]:
        rec = await self.store.get_campaign(campaign_id)
        if rec is None:
            raise NotFoundError("campaign", campaign_id)
        return self._decode(rec)

    @staticmethod
    def _decode(rec: CampaignRecord) -> tuple[CampaignSpec, CampaignState]:
        return msgspec.json.decode(rec.spec, type=CampaignSpec), engine.decode_state(rec.state.encode())

    @staticmethod
    def _view(spec: CampaignSpec, state: CampaignState) -> CampaignView:
        return CampaignView(spec=spec, state=state, progress=engine.progress(spec, state), events=list(state.events))

    async def _save(self, spec: CampaignSpec, state: CampaignState) -> None:
        settled = state.phase in TERMINAL and state.applied >= state.placement and state.delivered >= len(
            state.events)
        await self.store.put_campaign(CampaignRecord(
            id=spec.id, payload=spec.payload, subject=spec.subject, spec="", state=engine.encode_state(state).decode(),
            phase=state.phase, active=not settled, created_ms=spec.created_ms, updated_ms=self.now()))

    async def _commit(self, spec: CampaignSpec, state: CampaignState, actions: Sequence[Action]) -> CampaignState:
        """Persist ``state``, apply ``actions`` (the placement whole, then the log entries), persist the
        acknowledged state. A version refused while assigning aborts the campaign (and that is committed)."""
        await self._save(spec, state)
        if any(not isinstance(a, Event) for a in actions):
            try:
                await self._place(spec, state)
                self._placed.add(spec.id)
            except ModelRefused as exc:
                if state.phase in TERMINAL:  # the promotion itself refused: retried on the next tick, never undone
                    raise
                log.warning("campaign %s aborted: %s", spec.id, exc)
                state, actions = engine.abort(spec, state, by="engine", reason=str(exc), now_ms=self.now())
                return await self._commit(spec, state, actions)
        await self._deliver(spec, [a for a in actions if isinstance(a, Event)])
        state = engine.acknowledge(state)
        await self._save(spec, state)
        if state.phase in TERMINAL:
            self._audited.pop(spec.id, None)
            self._probe_cache.pop(spec.id, None)
            self._placed.discard(spec.id)
            if self.gateways is not None:
                self.gateways.forget(spec.id)
        return state

    async def _place(self, spec: CampaignSpec, state: CampaignState) -> None:
        """Make the state's placement hold, whatever was applied before (idempotent)."""
        if spec.payload == "edge_model":
            assert self.gateways is not None  # checked at start
            await self.gateways.place(spec, state)
            if state.phase == "promoted":
                await self._promote(spec, state)
        elif state.phase == "promoted":
            await self._promote(spec, state)
            self.placement.release(spec.targets)
        elif state.phase in TERMINAL:
            self.placement.release(spec.targets)
        else:
            live = set(state.live)
            assignments = {t: Assignment(spec.to_ref, spec.from_ref if spec.shadow else None, safety_net=spec.shadow)
                           for t in state.live}
            if spec.shadow:
                assignments |= {t: Assignment(spec.from_ref, spec.to_ref) for t in spec.targets if t not in live}
            await self.placement.assign(assignments)

    async def _promote(self, spec: CampaignSpec, state: CampaignState) -> None:
        reason = f"campaign {spec.id}: {state.outcome}"
        await self.aliases.promote(spec.to_ref, by=f"campaign:{spec.id}", reason=reason[:engine.MAX_TEXT],
                                   scope=spec.scope)
        await self.aliases.refresh()

    async def _deliver(self, spec: CampaignSpec, events: Sequence[Event]) -> None:
        """Audit each log entry once: entries below the campaign's watermark were audited already (the watermark
        is read from the audit log when this process has none, as after a restart)."""
        if events and spec.id not in self._audited:
            audited = [s for a in await self.store.list_campaign_audit(spec.id)
                       if (s := _audit_seq(a.detail)) is not None]
            self._audited[spec.id] = max(audited, default=-1) + 1
        for ev in events:
            if ev.seq < self._audited[spec.id]:
                continue
            figures = msgspec.json.encode(ev.figures, order="sorted").decode()
            await self.audit(AuditRecord(ts_ms=ev.ts_ms, actor=ev.by, action=f"campaign.{ev.kind}", target=spec.id,
                                         outcome="ok", detail=f"[{ev.seq}] {ev.message} {figures}",
                                         source=AUDIT_SOURCE))
            self._audited[spec.id] = ev.seq + 1
