"""The alert service: the platform's one owner of alert state, wiring the pure engines to the store.

Data flow (see docs/alerts.md)::

    scoring stage ── telemetry runs, detector findings, RUL alerts ──▶ RuleEngine ──signals──┐
    ticks (1 s) ── missing data, score holds, gateway states ─────────▶ RuleEngine / gateways ─┤
                                                                                            ▼
                                       IncidentEngine (dedup, correlation, suppression, priority, pages)
                                                                                            │ events
                                       AlertService: one AlertChanges per batch ──▶ store (one transaction)

Everything that changes alert state goes through one ``asyncio.Lock``: the scoring stage's batches, the clock
ticks, and the API's maintenance windows, silences and rule changes. Within the process evaluations never
race; across processes (two platforms on one PostgreSQL) the partial unique index on open (asset, kind) is
the arbiter, and a new alert that loses the race merges into the winner's row (its id is remapped).

Times: the engines run on sample time. Ticks use the injected clock, except while the embedded simulator
replays history (``replaying``): then "now" is the newest sample time scored, so that a replay of six hours
does not look like six hours of silence, and silence is found only in the gaps of each device's own data (a
device whose turn in the replay has not come yet is not silent).

After a restart the open incidents and unresolved alerts are read back (``IncidentEngine.restore``); the rule
engine starts empty, so a condition that still holds raises again and merges into its stored alert, while one
that ended during the downtime auto-resolves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from edgeloop.alerts import incidents as ie
from edgeloop.alerts import lifecycle as lc
from edgeloop.alerts.feedback import Decision, Proposal, Tuner, make_label, rule_model_version
from edgeloop.alerts.model import Signal, SignalState, Suppression, SuppressionReason, Topology
from edgeloop.alerts.notify import Channel, Notifier, PageDetails, load_channels
from edgeloop.alerts.priority import route, severity_rank
from edgeloop.alerts.rule_config import MissingRule, RuleSet, ScoreRule, parse_rules
from edgeloop.alerts.rule_documents import RuleDocument, RuleDocuments
from edgeloop.alerts.rules import RuleEngine
from edgeloop.alerts.suppress import MaintenanceWindow, Scope, Silence
from edgeloop.clock import Clock
from edgeloop.detect.finding import Finding, FindingPhase
from edgeloop.errors import ConfigError, ConflictError, NotFoundError, StoreError
from edgeloop.messages import Alert, AlertStatus, Severity
from edgeloop.registry import Registry
from edgeloop.store.alerting import (
    AlertChanges,
    IncidentRecord,
    Label,
    MaintenanceRecord,
    OverrideRecord,
    SilenceRecord,
    SuppressionRecord,
    TimelineEntry,
    UndeliveredRecord,
)
from edgeloop.store.base import GatewayRecord, Store, TelemetryChunk
from edgeloop.yaml_lines import convert, load_yaml, read_text

__all__ = ["DEFAULT_RULES", "AlertService", "AlertServiceStats", "AlertingSettings", "load_settings"]

log = logging.getLogger(__name__)

#: What a platform without a rule document of its own evaluates: the detectors' findings (as before the rule
#: engine, one alert kind per finding kind), low remaining useful life, and silent devices. A finding is a
#: detection the detector has already confirmed (score >= 1 for anomalies, exactly 1 for a stuck sensor or a
#: gap), so any finding raises (``above: 0.5``; a level raises strictly above it); ``hold_s`` clears the
#: alert when no finding came for that long.
DEFAULT_RULES = """\
version: 1
rules:
  - name: anomaly
    kind: score
    source: anomaly
    above: 0.5
    hold_s: 900
    message: the asset's detector scores it anomalous
  - name: sensor_stuck
    kind: score
    source: sensor_stuck
    above: 0.5
    hold_s: 900
    message: a sensor reports the same value for too long
  - name: data_gap
    kind: score
    source: data_gap
    above: 0.5
    hold_s: 900
    message: a channel stopped reporting valid values
  - name: rul
    kind: score
    source: rul
    above: 0.5
    hold_s: 86400
    severity: critical
    message: the remaining useful life is below the horizon
  - name: device-silent
    kind: missing
    after_s: 300
    message: no data for 5 minutes
"""

_ALERT_BLOCK = 1024  # ids reserved per database round trip
MAX_UNWRITTEN = 1000  # batches that may wait for the database before its error stops the caller
COMPACT_EVERY_MS = 600_000  # forget closed incidents now and then (they stay in the database) ...
KEEP_CLOSED_MS = 86_400_000  # ... once closed for a day


class AlertingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``alerting.yaml``: where pages go (notification channels) and the lifecycle's escalation and close.

    Example::

        channels:
          - {type: webhook, name: ops-hook, url: "https://ops.example/hook", secret: "...", routes: [urgent]}
          - {type: work_order, name: cmms, url: "https://cmms.example/api/wo", secret: "..."}
          - {type: email, name: shift-lead, host: smtp.example, from_addr: edgeloop@example, to: [lead@example]}
        lifecycle:
          levels: [{after_s: 900, notify: [shift-lead]}]
          close_after_s: 86400
    """

    channels: list[Channel] = []
    lifecycle: lc.LifecyclePolicy = lc.LifecyclePolicy()


def load_settings(path: Path) -> AlertingSettings:
    """Read ``alerting.yaml``; ``ConfigError`` names the line and the problem."""
    origin = str(path)
    doc, node = load_yaml(read_text(path, "alerting settings"), origin)
    settings = convert(doc or {}, AlertingSettings, origin=origin, node=node)
    try:
        load_channels(msgspec.to_builtins(settings.channels))  # names unique, recipients present
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{origin} (channels): {exc}") from None
    lc.policy_from_obj(msgspec.to_builtins(settings.lifecycle), origin=origin)
    names = {c.name for c in settings.channels}
    for level in settings.lifecycle.levels:
        unknown = [n for n in level.notify if n not in names]
        if settings.channels and unknown:
            raise ConfigError(f"{origin} (lifecycle.levels): escalation names {', '.join(unknown)}, which are not "
                              f"channels ({', '.join(sorted(names))})")
    return settings


@dataclass(slots=True)
class AlertServiceStats:
    signals: int = 0  # raise/clear signals from the rules (and gateway states)
    alerts_opened: int = 0
    incidents_opened: int = 0
    pages: int = 0  # pages decided, with or without a channel to carry them
    unrouted_pages: int = 0  # pages no configured channel carries: "not paged: no channel configured"
    suppressions: int = 0
    writes: int = 0  # transactions
    notifications: int = 0  # deliveries that succeeded
    undelivered: int = 0  # deliveries given up on (dead letters)


@dataclass(slots=True)
class _IdPool:
    """Alert and incident ids from blocks reserved in the database (unique across processes)."""

    alerts: list[int] = field(default_factory=list)
    incidents: list[int] = field(default_factory=list)

    def next_alert(self) -> int:
        return self.alerts.pop()

    def next_incident(self) -> int:
        return self.incidents.pop()


@dataclass(frozen=True, slots=True)
class Origin:
    """What raised a signal: the detector algorithm (``robust-ensemble-v2``) and the model version that ran it
    (``detector.pump@3``); both empty for a plain rule (its rule set's version is the label's model)."""

    detector: str = ""
    model: str = ""


_RULE = Origin()


@dataclass(slots=True)
class _Extra:
    """What the engine does not keep about an alert but the stored alert shows."""

    score: float = 0.0
    explanation: dict[str, float] = field(default_factory=dict)
    origin: Origin = _RULE
    message: str = ""


class AlertService:
    """Rules and incidents of a running platform, persisted (see the module docstring)."""

    def __init__(self, *, store: Store, registry: Registry, clock: Clock,
                 config: ie.IncidentConfig | None = None, policy: lc.LifecyclePolicy | None = None,
                 notifier: Notifier | None = None, latest_sample_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.config = config or ie.IncidentConfig()
        self.latest_sample_ms = latest_sample_ms or (lambda: 0)
        self.replaying = False
        self.stats = AlertServiceStats()
        self.lock = asyncio.Lock()
        self._ids = _IdPool()
        self._profiles = _ProfileView(registry)
        self.documents = RuleDocuments(parse_rules(DEFAULT_RULES, origin="default rules"), 0, self._rule_engine)
        self.engine = ie.IncidentEngine(Topology(), self._engine_config(), clock=clock, ids=self._ids)
        self.lifecycle = lc.Lifecycle(policy, clock=clock)
        self.notifier = notifier
        self.opened_listeners: list[Callable[[Sequence[Alert]], None]] = []  # alerts just opened, once stored
        self._sending: set[asyncio.Task[None]] = set()
        self.tuner = Tuner(self.ruleset, clock=clock)
        self._pending: list[tuple[Signal, Origin]] = []  # (signal, origin) not yet through the incident engine
        self._held: list[tuple[str, str, int]] = []  # (asset, rule, ts): states re-asserted, for the alerts' last seen
        self._extra: dict[int, _Extra] = {}
        self._remap: dict[int, int] = {}  # engine alert id -> stored id (lost a race to another process)
        self._resolved_by: dict[int, str] = {}  # engine alert id -> the person who resolved it
        self._gateways_online: dict[str, bool] = {}
        self._gateway_ids: frozenset[str] = frozenset()  # devices that are gateways (they send heartbeats)
        self._topology_key: tuple[int, int] = (-1, -1)
        self._compacted = 0
        self._unwritten = _Batch()  # what a failed write left, stored with the next one
        self._unwritten_batches = 0

    # --- start ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored rule document (or the defaults), the topology and the open incidents."""
        stored = await self.store.latest_rules()
        if stored is not None:
            self.documents.set(parse_rules(stored.text, origin=f"stored rules v{stored.version}"), stored.version, None)
        for own in await self.store.tenant_rules():
            self.documents.set(parse_rules(own.text, origin=f"stored rules of {own.tenant} v{own.version}"),
                               own.version, own.tenant)
        now = self.now()
        cfg = self._engine_config()
        self.engine = ie.IncidentEngine(Topology(), cfg, clock=self.clock, ids=self._ids)
        self.lifecycle = lc.Lifecycle(self.lifecycle.policy, clock=self.clock)
        await self.refresh_topology()
        for rec in await self.store.list_maintenance(ending_after=now):
            self.engine.add_maintenance(MaintenanceWindow(id=rec.id, scope=Scope(rec.scope), target=rec.target,
                                                          start_ms=rec.start_ms, end_ms=rec.end_ms, by=rec.by,
                                                          reason=rec.reason, tenant=rec.tenant))
        for sil in await self.store.list_silences(active_at=now):
            self.engine.add_silence(_silence(sil))
        await self._restore(now)
        self._expect_all(now)
        await self._load_tuning()

    async def _load_tuning(self, changed: RuleDocument | None = None) -> None:
        """The stored per-asset overrides on the engines, and the tuner for the default rules with its tuning state
        and confirmed faults. After a tenant's own document ``changed``, only that document's engine gets its
        overrides again: the tuner and its pending proposals (other tenants') stay as they are."""
        retune = changed is None or changed.tenant is None
        if retune:
            self.tuner = Tuner(self.ruleset, clock=self.clock)
        for o in await self.store.list_overrides():
            doc = self._rules_of_asset(o.asset)
            if not retune and doc is not changed:
                continue
            try:
                doc.engine.set_override(o.asset, o.rule, **o.levels)
            except (ConfigError, NotFoundError) as exc:  # the rule document changed under it
                log.warning("rule override %s/%s not applied: %s", o.asset, o.rule, exc)
                continue
            level = o.levels.get("above", o.levels.get("below"))
            if (retune and level is not None and doc is self.documents.default
                    and o.rule in {r.name for r in self.ruleset.rules}):
                clear = o.levels.get("clear_below", o.levels.get("clear_above"))
                try:
                    self.tuner.restore(o.asset, o.rule, level=level, clear=clear, since_ms=o.set_ms)
                except (ConfigError, NotFoundError, ValueError) as exc:
                    log.warning("tuning state of %s/%s not restored: %s", o.asset, o.rule, exc)
        if retune:
            for label in await self.store.list_labels():
                if label.verdict.value != "false_alarm":  # confirmed faults bound any loosening; never decide
                    self.tuner.observe(label)

    # --- rule documents: the platform's default and each tenant's own -------------------------------------

    @property
    def ruleset(self) -> RuleSet:
        """The platform's default rule document (tenants without their own)."""
        return self.documents.default.ruleset

    @property
    def rules_version(self) -> int:
        return self.documents.default.version

    @property
    def rules(self) -> RuleEngine:
        """The default document's engine."""
        return self.documents.default.engine

    def rules_of(self, tenant: str | None) -> RuleDocument:
        """The rule document ``tenant``'s assets are evaluated by (None: the default)."""
        return self.documents.of(tenant)

    def _rule_engine(self, ruleset: RuleSet) -> RuleEngine:
        return RuleEngine(ruleset, clock=self.clock, profiles=self._profiles, units=self.unit_of)

    def unit_of(self, device: str, channel: str) -> str:
        """The unit ``device``'s profile gives ``channel`` ("" when it gives none)."""
        dev = self.registry.devices.get(device)
        profile = self.registry.profiles.get(dev.profile) if dev is not None else None
        spec = next((c for c in profile.channels if c.name == channel), None) if profile is not None else None
        return spec.unit if spec is not None else ""

    def _rules_of_asset(self, asset: str) -> RuleDocument:
        return self.documents.of(self.registry.tenant_of("asset", asset))

    def _tuned(self, asset: str) -> bool:
        """Feedback tunes the default document's rules (a tenant's own document is not tuned yet)."""
        return self._rules_of_asset(asset) is self.documents.default

    def _expect_all(self, now: int, doc: RuleDocument | None = None) -> None:
        """Watch every registered asset (of ``doc``'s tenants) for missing data, even one that never sends; not a
        gateway's own asset: a gateway reports by heartbeat (its state is watched as a gateway), never by samples."""
        devices: dict[str, list[str]] = {}
        for d in self.registry.devices.values():
            if d.id not in self._gateway_ids:
                devices.setdefault(d.asset, []).append(d.id)
        gateway_assets = {d.asset for d in self.registry.devices.values() if d.id in self._gateway_ids}
        for asset in self.registry.assets:
            if asset in gateway_assets and asset not in devices:
                continue
            tenant = self.registry.tenant_of("asset", asset)
            mine = self.documents.of(tenant)
            if doc is None or mine is doc:
                mine.engine.expect(asset, tenant=tenant or "", since_ms=now, devices=devices.get(asset, ()))

    def _engine_config(self) -> ie.IncidentConfig:
        """Silence rules (consequences of an offline gateway): the ``missing`` rules, and the rules on the
        detectors' ``data_gap`` findings (the gap an outage leaves, reported when data comes back), of every
        document in force."""
        silent = frozenset(r.name for doc in self.documents for r in doc.ruleset.rules if isinstance(r, MissingRule)
                           or (isinstance(r, ScoreRule) and r.source == "data_gap"))
        return dataclasses.replace(self.config, silence_rules=silent or self.config.silence_rules)

    async def _restore(self, now: int) -> None:
        records = await self.store.list_incidents(statuses=["open", "acknowledged", "in_progress", "resolved"],
                                                  limit=1_000_000)
        for r in records:
            if r.lifecycle:
                self.lifecycle.restore(msgspec.json.decode(r.lifecycle, type=lc.LifecycleSnapshot))
        records = [r for r in records if r.resolved_at is None and r.merged_into is None]
        alerts = await self.store.list_alerts(unresolved=True, limit=1_000_000)
        incidents = [_incident_state(r) for r in records]
        states = [_alert_state(a) for a in alerts if a.incident is not None]
        for a in alerts:
            self._extra[a.id] = _Extra(a.score, dict(a.explanation), Origin(a.detector, a.model), a.message)
        self.engine.restore(incidents, states, now)
        if incidents or states:
            log.info("alert service: restored %d open incidents and %d alerts", len(incidents), len(states))

    def replay_from(self, start_ms: int) -> None:
        """A replay of simulated history from ``start_ms`` begins on a platform without alerts (``edgeloop
        scenario``): alerting follows sample time from there, as if the platform had started then."""
        self.replaying = True
        self.engine.replay_from(start_ms)

    def now(self) -> int:
        """The alerting "now": the clock, or the newest sample time while the simulator replays history."""
        return self.latest_sample_ms() if self.replaying else self.clock.now_ms()

    # --- inputs from the scoring stage --------------------------------------------------------------------

    def observe_run(self, chunk: TelemetryChunk) -> None:
        """Threshold, rate, missing and composite rules on one device's run of messages (concatenated)."""
        for s in self.documents.of(chunk.tenant).engine.evaluate_chunk(chunk):
            self._pending.append((s, _RULE))

    def observe_finding(self, chunk: TelemetryChunk, finding: Finding, detector: str, model: str = "") -> None:
        """A detector's confirmed condition: the ``score`` rules of its kind. A state's ``holding`` report keeps
        them raised (it is no new alarm: it does not count as a repeat), its ``ended`` report clears them."""
        asset = chunk.asset or chunk.device
        rules = self.documents.of(chunk.tenant).engine
        signals = rules.evaluate_finding(asset, finding, tenant=chunk.tenant, device=chunk.device)
        self._score_signals(signals, asset, finding.kind, finding.ts, finding.score, chunk.tenant, chunk.device,
                            self._with_evidence(finding, chunk.device), dict(finding.explanation),
                            Origin(detector, model), finding.severity, repeat=finding.phase is FindingPhase.ONSET)
        if finding.phase is FindingPhase.HOLDING:
            active = set(rules.active(asset))
            doc = self.documents.of(chunk.tenant)
            self._held += [(asset, r.name, finding.ts) for r in doc.ruleset.rules
                           if isinstance(r, ScoreRule) and r.source == finding.kind and r.name in active]

    def _with_evidence(self, finding: Finding, device: str) -> str:
        """The finding's words, then for each channel that drove it the level seen against the level expected,
        in the channel's unit: "... ; vib_x ≈ 7.9 mm/s where 3.1 mm/s is expected for this load"."""
        if not finding.evidence:
            return finding.message
        order = sorted(finding.evidence, key=lambda c: -finding.explanation.get(c, 0.0))
        said = []
        for c in order:
            seen, expected = finding.evidence[c]
            u = f" {unit}" if (unit := self.unit_of(device, c)) else ""
            said.append(f"{c} ≈ {seen:.3g}{u} where {expected:.3g}{u} is expected for this load")
        return f"{finding.message}; {', '.join(said)}"

    def observe_alert(self, alert: Alert) -> None:
        """A ready-made condition (a RUL model's low-life alert): the ``score`` rules of source ``alert.kind``."""
        signals = self.documents.of(alert.tenant).engine.evaluate_score(
            alert.asset, alert.last_seen, alert.score, source=alert.kind, tenant=alert.tenant, device=alert.device,
            explanation=alert.explanation)
        self._score_signals(signals, alert.asset, alert.kind, alert.last_seen, alert.score, alert.tenant,
                            alert.device, alert.message, dict(alert.explanation),
                            Origin(alert.detector, alert.model), alert.severity.value)

    def _score_signals(self, signals: list[Signal], asset: str, source: str, ts: int, score: float, tenant: str,
                       device: str, message: str, explanation: dict[str, float], origin: Origin,
                       severity: str, *, repeat: bool = True) -> None:
        """A detector's alarm is a raw signal of its own: one that comes while its rule is already raised (a
        detector alarms again) merges into the open alert (its count and last seen), as a repeat. A raise is as
        severe as the rule says, or as the detector says when that is more (a ``critical`` finding)."""
        raised = {s.rule for s in signals}
        doc = self.documents.of(tenant)
        active = set(doc.engine.active(asset)) if repeat else set()
        for rule in doc.ruleset.rules:
            if (isinstance(rule, ScoreRule) and rule.source == source and rule.emit and rule.name in active
                    and rule.name not in raised and score >= rule.above):
                signals.append(Signal(ts=ts, tenant=tenant, asset=asset, rule=rule.name, state=SignalState.RAISE,
                                      severity=rule.severity, device=device, value=score,
                                      message=message or rule.message, explanation=explanation))
        for s in signals:
            worse = s.state is SignalState.RAISE and severity_rank(severity) > severity_rank(s.severity)
            self._pending.append((dataclasses.replace(  # the detector's own words say more than the rule's
                s, message=message or s.message, severity=severity if worse else s.severity), origin))

    async def flush(self) -> None:
        """Run what the scoring stage observed through the incident engine and store it (one transaction)."""
        if not self._pending and not self._held and self._unwritten.empty:
            return
        async with self.lock:
            try:
                await self._reserve(len(self._pending))
            except StoreError as exc:  # the signals stay pending: the next flush or tick takes them
                log.warning("alert ids not reserved (%s); %d signals wait", exc, len(self._pending))
                return
            pending, self._pending = self._pending, []
            batch = _Batch()
            for signal, origin in pending:
                self._apply(self.engine.process(signal), batch, signal, origin)
            held, self._held = self._held, []
            for asset, rule, ts in held:  # a state still holds: its alert was last seen now
                a = self.engine.hold(asset, rule, ts)
                if a is not None:
                    batch.alerts.add(a.id)
            await self._write(batch)
        self._dispatch(batch)

    # --- time and gateways --------------------------------------------------------------------------------

    async def tick(self, *, caught_up: bool = False) -> None:
        """Time passing: silent devices, score holds, gateway states, pages, auto-resolves.

        While a replay runs, silence is found only in the gaps of each device's own data; ``caught_up`` says the
        replay has delivered every device's data up to now, so a device silent since before now is silent (its
        alert stays open until its data arrives again)."""
        async with self.lock:
            now = self.now()
            batch = _Batch()
            await self._reserve(len(self._pending) + 64)
            for signal in self.documents.tick(now, missing=caught_up or not self.replaying):
                self._apply(self.engine.process(signal), batch, signal, _RULE)
            records = await self.store.list_gateways()
            self._set_topology(records)  # devices and gateways register while the platform runs
            if not self.replaying:
                for gw, online, tenant in self._gateway_changes(records, now):
                    self._apply(self.engine.gateway_state(gw, online, now, tenant=tenant), batch, None, _RULE)
            self._apply(self.engine.tick(now), batch, None, _RULE)
            self._lifecycle_events(self.lifecycle.tick(now), batch)
            await self._write(batch)
            self._dispatch(batch)
            if now - self._compacted >= COMPACT_EVERY_MS:
                self._compacted = now
                self.engine.compact(now - KEEP_CLOSED_MS)
                self.lifecycle.compact(now - KEEP_CLOSED_MS)
                self._resolved_by = {a: by for a, by in self._resolved_by.items() if self._holds(a)}

    def _holds(self, alert_id: int) -> bool:
        """Whether the engine still holds the alert (it forgets closed ones when it compacts)."""
        try:
            self.engine.alert(alert_id)
        except KeyError:
            return False
        return True

    def _gateway_changes(self, records: Sequence[GatewayRecord], now: int) -> list[tuple[str, bool, str]]:
        """(gateway, online, tenant) of the gateways whose state changed since the last tick."""
        from edgeloop.ingest.gateways import gateway_state, read_heartbeat

        out: list[tuple[str, bool, str]] = []
        for rec in records:
            online = gateway_state(rec, read_heartbeat(rec), now).connected
            if self._gateways_online.get(rec.id, True) != online:
                out.append((rec.id, online, rec.tenant))
            self._gateways_online[rec.id] = online
        return out

    async def refresh_topology(self) -> None:
        self._set_topology(await self.store.list_gateways())

    def _set_topology(self, gateways: Sequence[GatewayRecord]) -> None:
        reg = self.registry
        key = (hash(tuple((a.id, a.line, a.criticality) for a in reg.assets.values()))
               ^ hash(tuple((d.id, d.asset) for d in reg.devices.values())),
               hash(tuple((g.id, g.devices) for g in gateways)))
        if key == self._topology_key:
            return
        self._topology_key = key
        self._gateway_ids = frozenset(g.id for g in gateways)
        gw_of: dict[str, str] = {}
        for g in gateways:
            for dev in g.devices:
                d = reg.devices.get(dev)
                if d is not None and d.id != g.id:
                    gw_of[d.asset] = g.id
        self.engine.set_topology(Topology(
            line_of_asset={a.id: a.line for a in reg.assets.values()},
            site_of_line={ln.id: ln.site for ln in reg.lines.values()},
            gateway_of_asset=gw_of,
            criticality={a.id: a.criticality for a in reg.assets.values()}))

    # --- notifications ------------------------------------------------------------------------------------

    def page_channels(self, route: str) -> list[str]:
        """The configured channels that carry a page of ``route``; none: its pages reach no one."""
        if self.notifier is None:
            return []
        return [c.name for c in self.notifier.channels if route in c.routes]

    def _dispatch(self, batch: _Batch) -> None:
        """Send the batch's pages and escalations in the background (retries take minutes: never in the way of
        scoring); their outcomes land on the incidents' timelines, failures as undelivered records."""
        if self.notifier is None:
            return
        for page in batch.pages:
            self._send(page, None)
        for esc in batch.escalations:
            try:
                inc = self.engine.incident(esc.incident)
            except KeyError:
                continue
            page = ie.Page(ts=esc.ts, incident=inc.id, kind=inc.kind, scope=inc.scope, title=inc.title,
                           priority=inc.priority, route=route(inc.priority, self.config.urgent_priority),
                           alerts=tuple(inc.alerts), assets=tuple(dict.fromkeys(self.engine.alert(a).asset
                                                                                  for a in inc.alerts)))
            self._send(page, esc)

    def _send(self, page: ie.Page, esc: lc.Escalated | None) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(page, esc), name=f"notify-{page.incident}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, page: ie.Page, esc: lc.Escalated | None) -> None:
        assert self.notifier is not None
        details = self._details(page)
        try:
            deliveries = await self.notifier.send(page, details, only=esc.notify if esc else None,
                                                  escalation=esc.level if esc else 0)
        except Exception:  # a bug in a channel must not take the platform down; the page stays on record
            log.exception("notifying incident %d failed", page.incident)
            return
        what = f"escalation level {esc.level}" if esc else "page"
        tenant = self._tenant_of_page(page)
        batch = _Batch()
        undelivered = []
        for d in deliveries:
            if d.ok:
                self.stats.notifications += 1
                batch.note(page.incident, self.clock.now_ms(), "notified", f"{what} sent to {d.channel} ({d.type}) "
                           f"after {d.attempts} attempt(s)", {"channel": d.channel, "attempts": d.attempts})
            else:
                self.stats.undelivered += 1
                batch.note(page.incident, self.clock.now_ms(), "notify-failed", f"{what} to {d.channel} ({d.type}) "
                           f"failed after {d.attempts} attempt(s): {d.error}", {"channel": d.channel})
                if d.dead_letter is not None:
                    undelivered.append(UndeliveredRecord(
                        ts=self.clock.now_ms(), tenant=tenant, incident=page.incident, channel=d.channel,
                        record=msgspec.json.encode(d.dead_letter).decode()))
        async with self.lock:
            await self.store.write_alert_changes(AlertChanges(timeline=self._recorded(batch.timeline)))
            await self.store.put_undelivered(undelivered)

    def _details(self, page: ie.Page) -> PageDetails:
        """What the page does not say itself: the first alert's explanation and what to do."""
        for aid in page.alerts:
            try:
                a = self.engine.alert(aid)
            except KeyError:
                continue
            extra = self._extra.get(aid) or _Extra(message=a.message)
            top = sorted(extra.explanation.items(), key=lambda kv: -kv[1])[:3]
            why = ", ".join(f"{c} {share:.0%}" for c, share in top)
            return PageDetails(
                explanation=f"{a.asset}: {extra.message or a.message}" + (f" (mostly {why})" if why else ""),
                contributions=dict(extra.explanation),
                recommended_action=(f"Check {page.scope}: {len(page.assets)} assets behind it are silent"
                                    if page.kind == "gateway" else
                                    f"Inspect {', '.join(page.assets[:5])} ({a.rule}); confirm or mark as a false "
                                    "alarm in the inbox"))
        return PageDetails()

    def _tenant_of_page(self, page: ie.Page) -> str:
        for aid in page.alerts:
            try:
                return self.engine.alert(aid).tenant or self._tenant_of_scope(page.kind, page.scope)
            except KeyError:
                continue
        return self._tenant_of_scope(page.kind, page.scope)

    async def aclose(self) -> None:
        """Wait briefly for notifications under way, then stop them; close the notifier."""
        if self._sending:
            _, pending = await asyncio.wait(set(self._sending), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.aclose()

    # --- people's actions ---------------------------------------------------------------------------------

    async def act(self, incident: int, action: str, by: str, *, note: str = "", to: str | None = None,
                  text: str = "") -> IncidentRecord:
        """A person's move on an incident: ``acknowledge``, ``start``, ``resolve``, ``close``, ``reopen``,
        ``assign`` (``to``; None unassigns) or ``comment`` (``text``). ``ConflictError`` for a move its status
        does not allow, ``NotFoundError`` for an incident the platform no longer works on (closed long ago)."""
        async with self.lock:
            if incident not in self.lifecycle:
                stored = await self.store.get_incident(incident)
                raise ConflictError(f"incident {incident} is {stored.status}; it can no longer change")
            life = self.lifecycle
            now = self.now()
            if action == "assign":
                events = life.assign(incident, to, by, ts=now)
            elif action == "comment":
                events = life.comment(incident, by, text, ts=now)
            elif action in ("acknowledge", "start", "resolve", "close", "reopen"):
                events = getattr(life, action)(incident, by, note=note, ts=now)
            else:
                raise ValueError(f"unknown incident action {action!r}")
            batch = _Batch()
            batch.incidents.add(incident)
            self._lifecycle_events(events, batch)
            await self._write(batch)
        self._dispatch(batch)
        return await self.store.get_incident(incident)

    # --- a person's moves on one alert ---------------------------------------------------------------------

    async def acknowledge(self, alert_id: int, *, by: str) -> Alert:
        """``by`` acknowledges the alert: recorded on it, and its incident (if still open) is acknowledged by the
        same person, so its escalation stops and MTTA counts it. ``ConflictError`` unless the alert is open."""
        async with self.lock:
            alert = await self.store.get_alert(alert_id)
            _check_move(alert, AlertStatus.ACKNOWLEDGED)
            acked = msgspec.structs.replace(alert, status=AlertStatus.ACKNOWLEDGED, acknowledged_by=by,
                                            acknowledged_at=self.clock.now_ms())
            await self.store.write_alert_changes(AlertChanges(updated=[acked]))
            batch = _Batch()
            incident = alert.incident
            if incident is not None and incident in self.lifecycle \
                    and self.lifecycle.get(incident).status is lc.IncidentStatus.OPEN:
                self._lifecycle_events(self.lifecycle.acknowledge(
                    incident, by, note=f"alert {alert_id} ({alert.asset}: {alert.kind}) acknowledged",
                    ts=self.now()), batch)
            await self._write(batch)
        self._dispatch(batch)
        return acked

    async def resolve(self, alert_id: int, *, by: str) -> Alert:
        """``by`` resolved the alert: the engine closes it (the next raise of its rule is a new alert, never a
        repeat of this resolved one), its incident resolves once all its alerts are, and the store records who.
        ``ConflictError`` if it is resolved already."""
        async with self.lock:
            alert = await self.store.get_alert(alert_id)
            _check_move(alert, AlertStatus.RESOLVED)
            now = self.now()
            engine_id = next((e for e, stored in self._remap.items() if stored == alert_id), alert_id)
            batch = _Batch()
            if self._holds(engine_id) and self.engine.alert(engine_id).resolved_at is None:
                self._resolved_by[engine_id] = by
                self._apply(self.engine.resolve(engine_id, now, f"resolved by {by}"), batch, None, _RULE)
            else:  # not the engine's (raised before it ran, or by another process): the stored row alone
                row = msgspec.structs.replace(alert, status=AlertStatus.RESOLVED, resolved_by=by, resolved_at=now)
                await self.store.write_alert_changes(AlertChanges(updated=[row]))
            await self._write(batch)
        self._dispatch(batch)
        return await self.store.get_alert(alert_id)

    # --- technician feedback ------------------------------------------------------------------------------

    async def feedback(self, alert_id: int, verdict: str, *, by: str, fault_type: str = "",
                       reason: str = "") -> tuple[Label, Decision | None]:
        """A technician's verdict on an alert: stored as a training label (its data window, the detector or
        rule version, the person), then given to the tuner, whose decision (if one is due) is audited and, when
        it moves a level, applied to the asset at once and stored. ``InvalidFeedback`` (a ``ConfigError``)
        names a missing fault type or reason."""
        async with self.lock:
            alert = await self.store.get_alert(alert_id)
            model = alert.model or alert.detector or rule_model_version(
                alert.kind, self.documents.of(alert.tenant).version)
            label = make_label(
                alert=alert.id, incident=alert.incident, tenant=alert.tenant, asset=alert.asset, device=alert.device,
                rule=alert.kind, verdict=verdict, by=by, ts=max(self.now(), alert.last_seen), model_version=model,
                first_seen=alert.first_seen, last_seen=alert.last_seen, cleared_at=alert.cleared_at,
                fault_type=fault_type, reason=reason, peak=alert.score or None)
            await self.store.put_labels([label])
            if alert.incident is not None:
                what = label.fault_type or label.reason
                batch = _Batch()
                batch.note(alert.incident, label.ts, "verdict", f"{alert.asset}/{alert.kind}: {label.verdict.value}"
                           + (f" ({what})" if what else ""), {"alert": alert.id, "verdict": label.verdict.value,
                                                              "fault_type": label.fault_type}, actor=by)
                await self.store.write_alert_changes(AlertChanges(timeline=self._recorded(batch.timeline)))
            decision = self.tuner.observe(label) if self._tuned(alert.asset) else None
            await self._decided(decision)
            return label, decision

    def proposals(self) -> list[Proposal]:
        """Threshold changes waiting for an operator."""
        return self.tuner.pending()

    async def decide_proposal(self, proposal: int, *, approve: bool, by: str, reason: str = "") -> Decision:
        async with self.lock:
            decision = (self.tuner.approve(proposal, by, ts_ms=self.now()) if approve
                        else self.tuner.reject(proposal, by, reason=reason, ts_ms=self.now()))
            await self._decided(decision)
            return decision

    async def _decided(self, decision: Decision | None) -> None:
        if decision is None:
            return
        await self.store.audit(decision.audit.to_record())
        change = decision.change
        if change is not None:
            levels = change.override()
            self._rules_of_asset(change.asset).engine.set_override(change.asset, change.rule, **levels)
            await self.store.put_override(OverrideRecord(asset=change.asset, rule=change.rule, levels=levels,
                                                         set_ms=decision.audit.ts_ms, set_by=decision.audit.actor))
            log.info("rule %s on %s tuned from feedback: %s", change.rule, change.asset, levels)

    # --- maintenance, silences, rules ---------------------------------------------------------------------

    async def add_maintenance(self, rec: MaintenanceRecord) -> None:
        """Store a maintenance window and apply it at once (``ConflictError`` if its id exists)."""
        async with self.lock:
            await self.store.put_maintenance(rec)
            self.engine.add_maintenance(MaintenanceWindow(id=rec.id, scope=Scope(rec.scope), target=rec.target,
                                                          start_ms=rec.start_ms, end_ms=rec.end_ms, by=rec.by,
                                                          reason=rec.reason, tenant=rec.tenant))

    async def add_silence(self, rec: SilenceRecord) -> None:
        """Store a manual silence and apply it at once (``ConflictError`` if its id exists)."""
        async with self.lock:
            await self.store.put_silence(rec)
            self.engine.add_silence(_silence(rec))

    async def end_silence(self, silence_id: str) -> SilenceRecord:
        """End a silence now (``NotFoundError`` if it is not running)."""
        async with self.lock:
            rec = await self.store.end_silence(silence_id, self.now())
            self.engine.end_silence(silence_id)
            return rec

    async def replace_rules(self, text: str, *, by: str, tenant: str | None = None) -> int:
        """Validate a rule document (``ConfigError`` names the line), store it as the next version of
        ``tenant``'s (None: the platform's default) and evaluate it from now on; returns the version."""
        ruleset = parse_rules(text, origin="rules")
        version = await self.store.put_rules(text, by=by, at_ms=self.clock.now_ms(), tenant=tenant)
        await self.set_rules(ruleset, version, tenant=tenant)
        return version

    async def set_rules(self, ruleset: RuleSet, version: int, *, tenant: str | None = None) -> None:
        """Evaluate a new rule document for ``tenant`` (None: every tenant without its own) from now on. Its
        rule state starts afresh (conditions that still hold raise again and merge into their open alerts); open
        alerts and incidents are kept, and other tenants' rules are not touched."""
        async with self.lock:
            doc = self.documents.set(ruleset, version, tenant)
            self._expect_all(self.now(), doc)
            self.engine.config = self._engine_config()
            await self._load_tuning(doc)

    # --- events -> rows -----------------------------------------------------------------------------------

    async def _reserve(self, signals: int) -> None:
        """Enough ids for ``signals`` signals: each opens at most one alert and two incidents (asset, line); time
        passing may move each open alert to an incident of its own (still silent after its gateway returned)."""
        need_a, need_i = signals + 8, 2 * signals + 8 + self.engine.open_alerts
        if len(self._ids.alerts) < need_a:
            block = await self.store.reserve_ids("alerts", max(_ALERT_BLOCK, need_a))
            self._ids.alerts[:0] = reversed(block)
        if len(self._ids.incidents) < need_i:
            block = await self.store.reserve_ids("incidents", max(_ALERT_BLOCK, need_i))
            self._ids.incidents[:0] = reversed(block)

    def _apply(self, events: Sequence[ie.Event], batch: _Batch, signal: Signal | None, origin: Origin) -> None:
        self._engine_events(events, batch, signal, origin)
        self._lifecycle_events(self.lifecycle.observe(events), batch)

    def _lifecycle_events(self, events: Iterable[lc.LifecycleEvent], batch: _Batch) -> None:
        for ev in events:
            batch.incidents.add(ev.incident)
            if isinstance(ev, lc.StatusChanged):
                note = f": {ev.note}" if ev.note else ""
                batch.note(ev.incident, ev.ts, "status", f"{ev.from_status.value} → {ev.to_status.value}{note}",
                           {"from": ev.from_status.value, "to": ev.to_status.value}, actor=ev.by)
            elif isinstance(ev, lc.Assigned):
                batch.note(ev.incident, ev.ts, "assigned", f"assigned to {ev.assignee}" if ev.assignee
                           else "unassigned", {"assignee": ev.assignee, "previous": ev.previous}, actor=ev.by)
            elif isinstance(ev, lc.Commented):
                batch.note(ev.incident, ev.ts, "comment", ev.text, {"n": ev.n}, actor=ev.by)
            else:
                batch.note(ev.incident, ev.ts, "escalated", f"level {ev.level}: not acknowledged {ev.after_s:g} s "
                           f"after the page; notify {', '.join(ev.notify)}",
                           {"level": ev.level, "notify": list(ev.notify)})
                batch.escalations.append(ev)

    def _engine_events(self, events: Iterable[ie.Event], batch: _Batch, signal: Signal | None,
                       origin: Origin) -> None:
        for ev in events:
            if isinstance(ev, ie.AlertOpened):
                self.stats.alerts_opened += 1
                batch.opened.add(ev.alert)
                batch.alerts.add(ev.alert)
                batch.incidents.add(ev.incident)
                if signal is not None:
                    self._extra[ev.alert] = _Extra(signal.value or 0.0, dict(signal.explanation), origin,
                                                   signal.message)
                batch.note(ev.incident, ev.ts, "alert-opened", f"{ev.asset}: {ev.rule} ({ev.severity})"
                           + (f", suppressed: {ev.suppressed.value}" if ev.suppressed else ""),
                           {"alert": ev.alert, "asset": ev.asset, "rule": ev.rule})
            elif isinstance(ev, ie.AlertMerged):
                batch.alerts.add(ev.alert)
                extra = self._extra.get(ev.alert)  # the explanation stays the one the alert was raised with
                if extra is not None and signal is not None:
                    extra.score = max(extra.score, signal.value or 0.0)
            elif isinstance(ev, ie.AlertCleared):
                batch.alerts.add(ev.alert)
                batch.note(ev.incident, ev.ts, "alert-cleared", f"{ev.asset}: {ev.rule} condition ended",
                           {"alert": ev.alert})
            elif isinstance(ev, ie.AlertResolved):
                batch.alerts.add(ev.alert)
                batch.incidents.add(ev.incident)
                batch.note(ev.incident, ev.ts, "alert-resolved", f"{ev.asset}: {ev.rule}: {ev.reason}",
                           {"alert": ev.alert})
            elif isinstance(ev, ie.IncidentOpened):
                self.stats.incidents_opened += 1
                batch.incidents.add(ev.incident)
                batch.note(ev.incident, ev.ts, "opened", ev.title, {"kind": ev.kind, "scope": ev.scope})
            elif isinstance(ev, ie.IncidentUpdated):
                batch.incidents.add(ev.incident)
                if ev.alert is not None:
                    batch.alerts.add(ev.alert)
                batch.note(ev.incident, ev.ts, ev.change, ev.detail, {"alert": ev.alert})
            elif isinstance(ev, ie.IncidentMerged):
                batch.incidents.update((ev.incident, ev.into))
                batch.note(ev.incident, ev.ts, "merged", f"merged into incident {ev.into}: {ev.detail}",
                           {"into": ev.into})
                batch.note(ev.into, ev.ts, "absorbed", f"incident {ev.incident} merged into this one",
                           {"from": ev.incident})
            elif isinstance(ev, ie.IncidentResolved):
                batch.incidents.add(ev.incident)
                batch.note(ev.incident, ev.ts, "resolved", ev.reason, {})
            elif isinstance(ev, ie.Page):
                self.stats.pages += 1
                batch.incidents.add(ev.incident)
                data = {"route": ev.route, "priority": ev.priority, "alerts": list(ev.alerts)}
                if self.page_channels(ev.route):
                    batch.note(ev.incident, ev.ts, "paged", f"{ev.route} page, priority {ev.priority:g}: {ev.title}",
                               data)
                    batch.pages.append(ev)
                else:
                    self.stats.unrouted_pages += 1
                    batch.note(ev.incident, ev.ts, "not-paged", f"not paged: no notification channel is configured "
                               f"for the {ev.route} route ({ev.route} page, priority {ev.priority:g}: {ev.title})",
                               data)
            elif isinstance(ev, Suppression):
                self.stats.suppressions += 1
                tenant = signal.tenant if signal is not None else ""
                batch.suppressions.append(SuppressionRecord(
                    ts=ev.ts, tenant=tenant or self.registry.tenant_of("asset", ev.asset) or "", asset=ev.asset,
                    rule=ev.rule, reason=ev.reason.value, detail=ev.detail, incident=ev.incident))
        if signal is not None:
            self.stats.signals += 1

    async def _write(self, batch: _Batch) -> None:
        """Store what ``batch`` changed (rows as the engine holds them now), with any batch a failed write left.

        A database that is away for a moment (``StoreError``) costs nothing: the batch waits and goes out with the
        next write (its rows are rebuilt then from the engine, so they are the newest). Only when
        ``MAX_UNWRITTEN`` batches wait does the error reach the caller."""
        if not batch.empty:
            self._unwritten.absorb(batch)
        if self._unwritten.empty:
            return
        try:
            changes = await self._changes(self._unwritten)
            remap = await self.store.write_alert_changes(changes)
        except StoreError as exc:
            self._unwritten_batches += 1
            if self._unwritten_batches > MAX_UNWRITTEN:
                raise
            log.warning("alert state not stored yet (%s); %d batches wait for the next write", exc,
                        self._unwritten_batches)
            return
        self._unwritten, self._unwritten_batches = _Batch(), 0
        self.stats.writes += 1
        if changes.opened:
            for listener in self.opened_listeners:
                listener(changes.opened)
        if remap:
            log.warning("alert service: %d new alerts merged into alerts another process opened", len(remap))
            self._remap.update(remap)

    def _recorded(self, entries: Sequence[TimelineEntry]) -> list[TimelineEntry]:
        """Timeline entries stamped with the platform time they are recorded at (their ``ts`` is the data's)."""
        now = self.clock.now_ms()
        return [e if e.recorded_at is not None else dataclasses.replace(e, recorded_at=now) for e in entries]

    async def _changes(self, batch: _Batch) -> AlertChanges:
        changes = AlertChanges(timeline=self._recorded(batch.timeline), suppressions=list(batch.suppressions))
        for aid in sorted(batch.alerts):
            try:
                state = self.engine.alert(aid)
            except KeyError:
                continue
            row = self._alert_row(state)
            if aid in batch.opened:
                changes.opened.append(row)
            changes.updated.append(row)
        for iid in sorted(batch.incidents):
            try:
                changes.incidents.append(self._incident_row(self.engine.incident(iid)))
            except KeyError:  # the engine is done with it (resolved before a restart, or compacted)
                if iid in self.lifecycle:
                    changes.incidents.append(self._lifecycle_row(await self.store.get_incident(iid)))
        return changes

    def _alert_row(self, a: ie.AlertState) -> Alert:
        extra = self._extra.get(a.id) or _Extra(message=a.message)
        resolved = a.resolved_at is not None
        return Alert(
            id=self._remap.get(a.id, a.id), tenant=a.tenant, asset=a.asset, device=a.device, kind=a.rule,
            severity=Severity(a.severity), status=AlertStatus.RESOLVED if resolved else AlertStatus.OPEN,
            first_seen=a.first_seen, last_seen=a.last_seen, count=a.count, score=extra.score,
            message=extra.message or a.message, explanation=extra.explanation, detector=extra.origin.detector,
            resolved_by=self._resolved_by.get(a.id, "system") if resolved else None, resolved_at=a.resolved_at,
            incident=a.incident, model=extra.origin.model,
            priority=a.priority, confidence=a.confidence,
            suppressed=a.suppressed.value if a.suppressed is not None else None, cleared_at=a.cleared_at)

    def _incident_row(self, inc: ie.Incident) -> IncidentRecord:
        alerts = [self.engine.alert(i) for i in inc.alerts]
        tenant = next((a.tenant for a in alerts if a.tenant), "")
        if not tenant:
            tenant = self._tenant_of_scope(inc.kind, inc.scope)
        life = self.lifecycle.get(inc.id) if inc.id in self.lifecycle else None
        status = life.status.value if life is not None else "resolved" if inc.closed else "open"
        closed = life.stamps.get(lc.IncidentStatus.CLOSED) if life is not None else None
        return IncidentRecord(
            id=inc.id, tenant=tenant, kind=inc.kind, scope=inc.scope, rule=inc.rule, title=inc.title,
            status=status, priority=inc.priority, route=route(inc.priority, self.config.urgent_priority),
            opened_at=inc.opened_at, last_raise=inc.last_raise, page_due=inc.page_due, paged_at=inc.paged_at,
            resolved_at=inc.resolved_at, merged_into=inc.merged_into,
            assets=tuple(dict.fromkeys(a.asset for a in alerts)), updated_at=self.clock.now_ms(),
            assignee=life.assignee if life else None,
            acknowledged_by=life.acknowledged.by if life and life.acknowledged else None,
            acknowledged_at=life.acknowledged.ts if life and life.acknowledged else None,
            closed_at=closed.ts if closed and life and life.status is lc.IncidentStatus.CLOSED else None,
            escalation_level=max(life.escalated, default=0) if life else 0,
            lifecycle=msgspec.json.encode(self.lifecycle.snapshot(inc.id)).decode() if life else "")

    def _lifecycle_row(self, stored: IncidentRecord) -> IncidentRecord:
        """A stored incident the engine no longer holds, with its lifecycle now."""
        life = self.lifecycle.get(stored.id)
        closed = life.stamps.get(lc.IncidentStatus.CLOSED)
        return dataclasses.replace(
            stored, status=life.status.value, assignee=life.assignee, updated_at=self.clock.now_ms(),
            acknowledged_by=life.acknowledged.by if life.acknowledged else None,
            acknowledged_at=life.acknowledged.ts if life.acknowledged else None,
            closed_at=closed.ts if closed and life.status is lc.IncidentStatus.CLOSED else None,
            escalation_level=max(life.escalated, default=0),
            lifecycle=msgspec.json.encode(self.lifecycle.snapshot(stored.id)).decode())

    def _tenant_of_scope(self, kind: str, scope: str) -> str:
        return self.registry.tenant_of("line" if kind == "line" else "device" if kind == "gateway" else "asset",
                                       scope) or ""


@dataclass(slots=True)
class _Batch:
    """What one locked step changed."""

    opened: set[int] = field(default_factory=set)
    alerts: set[int] = field(default_factory=set)
    incidents: set[int] = field(default_factory=set)
    timeline: list[TimelineEntry] = field(default_factory=list)
    suppressions: list[SuppressionRecord] = field(default_factory=list)
    pages: list[ie.Page] = field(default_factory=list)
    escalations: list[lc.Escalated] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.alerts or self.incidents or self.timeline or self.suppressions)

    def absorb(self, other: _Batch) -> None:
        """Add what ``other`` changed (not its pages or escalations: those are sent once, from ``other``)."""
        self.opened |= other.opened
        self.alerts |= other.alerts
        self.incidents |= other.incidents
        self.timeline += other.timeline
        self.suppressions += other.suppressions

    def note(self, incident: int, ts: int, kind: str, detail: str, data: dict[str, object], *,
             actor: str = "system") -> None:
        self.timeline.append(TimelineEntry(incident=incident, ts=ts, kind=kind, actor=actor, detail=detail,
                                           data=data))


class _ProfileView(Mapping[str, str]):
    """device -> profile, read live from the registry (devices register while the platform runs)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __getitem__(self, device: str) -> str:
        return self.registry.devices[device].profile

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry.devices)

    def __len__(self) -> int:
        return len(self.registry.devices)


_ALERT_MOVES: dict[AlertStatus, frozenset[AlertStatus]] = {  # a person's moves on an alert; resolved is final
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.RESOLVED}),
    AlertStatus.RESOLVED: frozenset(),
}


def _check_move(alert: Alert, to: AlertStatus) -> None:
    """``ConflictError`` for a move the alert's status does not allow (acknowledged is reached from open only)."""
    if to not in _ALERT_MOVES[alert.status]:
        raise ConflictError(f"alert {alert.id} is {alert.status.value}; it cannot become {to.value}")


def _silence(rec: SilenceRecord) -> Silence:
    return Silence(id=rec.id, scope=Scope(rec.scope), target=rec.target, by=rec.by, reason=rec.reason,
                   until_ms=rec.until_ms, start_ms=rec.start_ms, rule=rec.rule, tenant=rec.tenant)


def _incident_state(r: IncidentRecord) -> ie.Incident:
    return ie.Incident(id=r.id, kind=r.kind, scope=r.scope, rule=r.rule, title=r.title, opened_at=r.opened_at,
                       last_raise=r.last_raise, page_due=r.page_due, priority=r.priority, paged_at=r.paged_at,
                       resolved_at=r.resolved_at, merged_into=r.merged_into)


def _alert_state(a: Alert) -> ie.AlertState:
    return ie.AlertState(
        id=a.id, tenant=a.tenant, asset=a.asset, rule=a.kind, device=a.device, severity=a.severity.value,
        confidence=a.confidence, priority=a.priority, message=a.message, first_seen=a.first_seen,
        last_seen=a.last_seen, incident=a.incident or 0,
        suppressed=SuppressionReason(a.suppressed) if a.suppressed else None, count=a.count,
        active=a.cleared_at is None, cleared_at=a.cleared_at, resolved_at=a.resolved_at)

