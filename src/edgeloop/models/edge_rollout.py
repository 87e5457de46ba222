"""Rolling an edge model out to gateways (campaign payload ``edge_model``): the pushes that make a campaign's
placement hold, and what its gates observe. The campaign service (``campaigns/service.py``) calls
:meth:`EdgeRollout.place` and :meth:`EdgeRollout.observe`; the engine is the same as for platform detectors.

Placement (idempotent: applied whole after every change and at start-up). Targets are gateways; ``to_ref`` /
``from_ref`` are versions of one edge model.

- a wave's gateways get an ``install`` push of ``to_ref``'s signed file (push id ``<campaign>:install``);
- rolled back or aborted: every gateway that was in a wave gets a ``rollback`` push to ``from_ref``'s version
  (``<campaign>:rollback``); the agent kept that version as its previous one, so it needs no download;
- promoted: ``to_ref`` becomes the model's champion (the service sets the alias), every gateway has it already.

Pushes are retained on the gateway's ``model`` topic (``models/edge_delivery.py``): a gateway offline when its
push is published acts on it when it reconnects, and a push id it has seen does nothing. So a rollback decided
while a gateway is offline reaches it later; meanwhile the agent's own probation guardrail may have reverted it
already (it reports that when it reconnects). Edge models have no shadow phase (an agent runs one version of a
model).

Observations, from the wave's gateways' heartbeats (``Heartbeat.models``: version, alarms begun, p95 inference
latency) and their answers (``model`` / ``model_reverted`` events):

- ``InstallGate``: how many of the wave's gateways run ``to_ref``, which of those have not had a full window of it
  judged by their guardrail yet, and which refused the push or went back from it;
- ``LatencyGate``: p95 inference latencies (each over at least 20 inferences: a new version's first inference
  is slow) reported by gateways running ``to_ref`` (this phase) against those running ``from_ref`` in the same
  phase (the control gateways, over the same minutes), or, in the last wave, which has no control, in the
  campaign's earlier phases; and the median CPU of each side's heartbeats (one busy moment does not move it);
- ``RateSPRT``: anomaly episodes begun per device-day by each version, from the heartbeats' counters: the
  challenger on the wave's gateways, the champion on the others (the control cohort). Unlike a detector campaign,
  the counts include episodes of real faults (the gateways do not know the technicians' verdicts).

Heartbeats are read from the store (each gateway's latest, one read of them all) on every observation and remembered
in memory for the running phase, bounded per gateway; after a restart a phase's figures start again from the next
heartbeats.
"""

from __future__ import annotations

import itertools
import logging
import statistics
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from edgeloop.campaigns import engine
from edgeloop.campaigns.engine import CampaignSpec, CampaignState
from edgeloop.campaigns.gates import (
    Gate,
    InstallGate,
    Installs,
    LatencyGate,
    LatencyObservation,
    Observation,
    RateCounts,
    RateSPRT,
)
from edgeloop.errors import ConfigError
from edgeloop.ingest.gateways import read_heartbeat
from edgeloop.messages import Heartbeat
from edgeloop.models.edge_delivery import push_answer, push_message, reverted
from edgeloop.models.manifest import ModelRef
from edgeloop.store.base import Store

__all__ = ["EDGE_GATES", "EdgeRollout", "default_edge_gates", "gateways_running"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MAX_BEATS = 4096  # heartbeats remembered per gateway and phase
EVENTS_READ = 50  # a gateway's newest answers of each kind (``model``, ``model_reverted``) read per observation
MIN_LATENCIES = 20  # a heartbeat's p95 counts once it is over this many inferences (a new session's first is slow)
EDGE_GATES = (InstallGate, LatencyGate, RateSPRT)  # the gates an edge campaign can be judged by
Publish = Callable[[str, bytes], Awaitable[None]]  # topic, payload: QoS 1, retained


async def gateways_running(store: Store, model: str) -> dict[str, Heartbeat]:
    """The latest heartbeat of each gateway that reports running edge model ``model``, by gateway (one read)."""
    out: dict[str, Heartbeat] = {}
    for record in await store.list_gateways():
        hb = read_heartbeat(record)
        if hb is not None and model in hb.models:
            out[record.id] = hb
    return out


def default_edge_gates() -> dict[str, Gate]:
    """An edge model's rollout: every wave gateway takes and keeps the version, its latency and CPU stay within
    1.5× the champion's (or within 1 ms at p95 and 10 points of CPU of it), and it does not alarm more often than
    the champion (sequential test). A latency sample is one heartbeat's p95 (itself over 20 to 256 inferences; the
    gate compares their medians): 3 a side suffice."""
    latency = LatencyGate(min_samples=3, samples="p95", min_delta_ms=1.0, min_cpu_delta=10.0)
    return {"install": InstallGate(), "latency": latency, "alarms": RateSPRT()}


@dataclass(slots=True)
class _Beat:
    ts: int
    version: int
    alarms: int
    p95_ms: float | None  # None: over fewer than MIN_LATENCIES inferences
    judged: bool
    cpu: float
    devices: int

    @classmethod
    def of(cls, hb: Heartbeat, model: str) -> _Beat:
        m = hb.models[model]
        return cls(ts=hb.ts, version=m.version, alarms=m.alarms,
                   p95_ms=m.p95_ms if m.latencies >= MIN_LATENCIES else None, judged=m.judged, cpu=hb.cpu_percent,
                   devices=len(hb.devices))


@dataclass(slots=True)
class _Phase:
    key: tuple[int, int]  # (phase start, wave)
    beats: dict[str, list[_Beat]] = field(default_factory=dict)  # gateway → this phase's heartbeats, oldest first
    champion_ms: list[float] = field(default_factory=list)  # the champion's latencies in this phase (control)
    champion_cpu: list[float] = field(default_factory=list)
    earlier_ms: list[float] = field(default_factory=list)  # ... in the campaign's earlier phases
    earlier_cpu: list[float] = field(default_factory=list)


class EdgeRollout:
    """Pushes and observations of edge-model campaigns (see the module docstring)."""

    def __init__(self, *, store: Store, bundle: Callable[[str], Awaitable[bytes]], publish: Publish,
                 tenant_of: Callable[[str], str | None], now: Callable[[], int]) -> None:
        """``bundle(ref)``: the signed ``.elm`` of a version (verified; ``ModelRefused`` if it cannot be);
        ``tenant_of(gateway)``: the registered gateway's tenant (None: not registered)."""
        self.store = store
        self.bundle = bundle
        self.publish = publish
        self.tenant_of = tenant_of
        self.now = now
        self._phases: dict[str, _Phase] = {}
        self._bundles: dict[str, bytes] = {}  # ref → signed file (immutable versions: cached)

    # --- checks and placement -----------------------------------------------------------------------------------

    def check(self, spec: CampaignSpec) -> None:
        """What an edge campaign must be: versions >= 1 of its subject, no shadow phase, registered gateways as
        targets and only gates judged from gateways (``ConfigError`` otherwise)."""
        for ref in (spec.from_ref, spec.to_ref):
            try:
                parsed = ModelRef.parse(ref)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if parsed.name != spec.subject or parsed.version < 1:
                raise ConfigError(f"{ref!r} is not a version >= 1 of edge model {spec.subject!r}")
        if spec.shadow:
            raise ConfigError("an edge model has no shadow phase (an agent runs one version): set shadow false")
        unknown = [t for t in spec.targets if self.tenant_of(t) is None]
        if unknown:
            raise ConfigError(f"targets must be registered gateways; not registered: {', '.join(unknown[:5])}")
        for name, gate in spec.gates.items():
            if not isinstance(gate, EDGE_GATES):
                raise ConfigError(f"gate {name!r} ({type(gate).__name__}) is not judged on gateways; an edge "
                                  f"campaign takes {', '.join(g.__name__ for g in EDGE_GATES)}")

    async def place(self, spec: CampaignSpec, state: CampaignState) -> None:
        """Publish what makes the state's placement hold (see the module docstring); ``BrokerError`` /
        ``ModelRefused`` propagate (the service retries, or aborts on a refused version)."""
        if state.phase == "promoted":
            await self._push(spec, spec.targets, "install")
        elif state.phase in engine.TERMINAL:
            await self._push(spec, state.exposed, "rollback")
        else:
            await self._push(spec, state.live, "install")

    async def _push(self, spec: CampaignSpec, gateways: Iterable[str], action: str) -> None:
        name = spec.subject
        data = b""
        if action == "install":
            data = self._bundles.get(spec.to_ref) or await self.bundle(spec.to_ref)
            self._bundles[spec.to_ref] = data
        back = ModelRef.parse(spec.from_ref).version
        for gateway in gateways:
            tenant = self.tenant_of(gateway)
            if tenant is None:
                log.warning("campaign %s: gateway %s is no longer registered: no %s pushed", spec.id, gateway, action)
                continue
            if action == "install":
                topic, payload = push_message(tenant, gateway, name=name, action="install",
                                              push_id=f"{spec.id}:install", now_ms=self.now(), bundle=data,
                                              issued_by=f"campaign:{spec.id}")
            else:
                topic, payload = push_message(tenant, gateway, name=name, action="rollback",
                                              push_id=f"{spec.id}:rollback", now_ms=self.now(), to_version=back,
                                              issued_by=f"campaign:{spec.id}")
            await self.publish(topic, payload)

    def forget(self, campaign_id: str) -> None:
        self._phases.pop(campaign_id, None)

    # --- observations -------------------------------------------------------------------------------------------

    async def observe(self, spec: CampaignSpec, state: CampaignState) -> dict[str, Observation]:
        """Each gate's observation over the wave's gateways since the phase began (see the module docstring)."""
        if state.phase in engine.TERMINAL:
            return {}
        phase = self._phase(spec.id, state)
        to_v, from_v = ModelRef.parse(spec.to_ref).version, ModelRef.parse(spec.from_ref).version
        wave = set(state.live)
        running = 0
        unjudged: list[str] = []
        heartbeats = await gateways_running(self.store, spec.subject)
        for gateway in spec.targets:
            if gateway not in heartbeats:
                continue
            beat = _Beat.of(heartbeats[gateway], spec.subject)
            beats = phase.beats.setdefault(gateway, [])
            if beats and beats[-1].ts >= beat.ts:
                beat = beats[-1]  # nothing new since the last observation
            else:
                if len(beats) >= MAX_BEATS:
                    del beats[: MAX_BEATS // 2]
                beats.append(beat)
                if beat.version == from_v and beat.p95_ms is not None:
                    phase.champion_ms.append(beat.p95_ms)
                    phase.champion_cpu.append(beat.cpu)
                    del phase.champion_ms[:-MAX_BEATS], phase.champion_cpu[:-MAX_BEATS]
            if gateway in wave and beat.version == to_v:
                running += 1
                if not beat.judged:
                    unjudged.append(gateway)
        refused, back = await self._answers(spec, wave, to_v)
        observations: dict[str, Observation] = {}
        for name, gate in spec.gates.items():
            if isinstance(gate, InstallGate):
                observations[name] = Installs(targets=len(wave), running=running, refused=refused, reverted=back,
                                              unjudged=unjudged)
            elif isinstance(gate, LatencyGate):
                new = [(b.p95_ms, b.cpu) for g in wave for b in phase.beats.get(g, ())
                       if b.version == to_v and b.p95_ms is not None]
                control = len(wave) < len(spec.targets)
                old_ms, old_cpu = ((phase.champion_ms, phase.champion_cpu) if control
                                   else (phase.earlier_ms, phase.earlier_cpu))
                observations[name] = LatencyObservation(
                    challenger_ms=[ms for ms, _ in new], champion_ms=list(old_ms),
                    challenger_cpu=_median(c for _, c in new), champion_cpu=_median(old_cpu))
            elif isinstance(gate, RateSPRT):
                observations[name] = self._alarm_counts(phase.beats, wave, to_v=to_v, from_v=from_v)
        return observations

    def _phase(self, campaign_id: str, state: CampaignState) -> _Phase:
        key = (state.phase_start_ms, state.wave)
        phase = self._phases.get(campaign_id)
        if phase is None:
            phase = self._phases[campaign_id] = _Phase(key)
        elif phase.key != key:  # a new phase: its own heartbeats, the champion's latencies carried over
            phase = self._phases[campaign_id] = _Phase(
                key, earlier_ms=[*phase.earlier_ms, *phase.champion_ms][-MAX_BEATS:],
                earlier_cpu=[*phase.earlier_cpu, *phase.champion_cpu][-MAX_BEATS:])
        return phase

    async def _answers(self, spec: CampaignSpec, wave: set[str], to_v: int) -> tuple[list[str], list[str]]:
        """The wave's gateways that refused this campaign's install, and those that went back from ``to_v`` by
        themselves since the campaign began (each "gateway: why")."""
        refused: list[str] = []
        back: list[str] = []
        push_id = f"{spec.id}:install"
        for gateway in sorted(wave):
            for event in await self.store.list_events(device=gateway, kind="model", limit=EVENTS_READ):
                answer = push_answer(event)
                if answer is not None and answer.id == push_id and answer.status == "refused":
                    refused.append(f"{gateway}: {answer.reason}")
                    break
            else:
                for event in await self.store.list_events(device=gateway, kind="model_reverted", limit=EVENTS_READ):
                    gone = reverted(event)
                    if (gone is not None and gone.name == spec.subject and gone.from_version == to_v
                            and event.received_ms >= spec.created_ms):
                        back.append(f"{gateway}: {gone.reason} {gone.alarm_rate:.3g} (limit {gone.limit:.3g})")
                        break
        return refused, back

    @staticmethod
    def _alarm_counts(beats: Mapping[str, list[_Beat]], wave: set[str], *, to_v: int, from_v: int) -> RateCounts:
        """Episodes begun and device-days of each version over this phase: per gateway and version, the growth of
        its heartbeats' counter between the first and the last heartbeat of the phase (a counter that went down
        started again: a restart)."""
        events = {to_v: 0, from_v: 0}
        exposure = {to_v: 0.0, from_v: 0.0}
        for gateway, seq in beats.items():
            for version in (to_v, from_v):
                if (version == to_v) != (gateway in wave):
                    continue
                mine = [b for b in seq if b.version == version]
                for a, b in itertools.pairwise(mine):
                    events[version] += b.alarms - a.alarms if b.alarms >= a.alarms else b.alarms
                    exposure[version] += b.devices * (b.ts - a.ts) / DAY_MS
        return RateCounts(challenger_events=events[to_v], challenger_exposure=exposure[to_v],
                          champion_events=events[from_v], champion_exposure=exposure[from_v])


def _median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else 0.0
