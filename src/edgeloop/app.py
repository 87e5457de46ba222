"""The composition root: wires broker, ingest, storage, scoring and the HTTP API into one platform.

``Platform`` is an async context manager. Entering it opens the store, loads
the registry, starts the embedded broker (if configured), subscribes, and
starts the background loops; leaving it stops them in reverse order. Nothing
here does domain work; each part owns its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import ipaddress
import logging
import socket
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import uvicorn

from edgeloop.actions.commands import CommandService
from edgeloop.actions.engine import ActionEngine
from edgeloop.actions.readings import LatestReadings
from edgeloop.alerts.notify import Notifier
from edgeloop.alerts.service import AlertingSettings, AlertService, load_settings
from edgeloop.assets import DeviceProfile
from edgeloop.broker.acl import BROKER_IDENTITY, INGEST_IDENTITY
from edgeloop.broker.embedded import BrokerTls, EmbeddedBroker
from edgeloop.campaigns.live_scores import LiveScores
from edgeloop.campaigns.service import CampaignService
from edgeloop.clock import Clock, SystemClock
from edgeloop.dir_lock import DirLock
from edgeloop.errors import BrokerError, ConfigError, ConflictError, EdgeLoopError, StoreError
from edgeloop.file_modes import private_data_dir
from edgeloop.identity.access import AccessService
from edgeloop.identity.auth import OncePer
from edgeloop.identity.pki import PkiError
from edgeloop.identity.tls import TlsIdentity
from edgeloop.models.deployment import Deployment
from edgeloop.models.drift_service import DriftService
from edgeloop.models.edge_rollout import EdgeRollout
from edgeloop.models.findings import FindingLog
from edgeloop.models.loop import LearningLoop
from edgeloop.models.probe_runner import PlatformProbes
from edgeloop.models.retraining import PolicySet, load_policies
from edgeloop.models.rollout import RolloutPlan
from edgeloop.models.training_jobs import TrainingJobs

if TYPE_CHECKING:
    from edgeloop.agent.config import AgentConfig
    from edgeloop.api.services import Services
    from edgeloop.identity.pki import CertificateAuthority
    from edgeloop.identity.provisioning import ProvisioningService
    from edgeloop.models.registry import ModelRegistry
from edgeloop.ingest.bounds import Limits
from edgeloop.ingest.handoff import HandoffSource
from edgeloop.ingest.mqtt import MqttSource
from edgeloop.ingest.pipeline import IngestPipeline, Presence
from edgeloop.ingest.validate import Validator
from edgeloop.messages import AlertStatus, ConfigPush, TopicKind, encode, subscription, topic
from edgeloop.registry import RegistryService
from edgeloop.rul.monitor import RulMonitor, load_rul_models
from edgeloop.scoring import ScoredHook, ScoringStage
from edgeloop.store import Store, open_store
from edgeloop.store.base import AuditRecord, GatewayConfig, TelemetryChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    data_dir: Path = Path("data")
    store_url: str | None = None  # default: SQLite in data_dir
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    embedded_broker: bool = True
    http_host: str = "127.0.0.1"
    http_port: int | None = 8000  # None: no HTTP server
    ingest_client_id: str = "edgeloop-ingest"
    mqtt_tls: TlsIdentity | None = None  # mutual TLS to an external broker (the ingest service's identity)
    pki_dir: Path | None = None  # enables provisioning; created on first start when ``create_pki``
    create_pki: bool = False
    # The embedded broker accepts only mutual TLS (needs pki_dir): its own and ingest's certificates are
    # kept in data_dir/tls and renewed there; devices use certificates from the same PKI.
    embedded_tls: bool = False
    provision_rate_per_s: float = 20.0  # per client address, on provisioning and renewal
    provision_burst: int = 200
    auth: bool = False  # require authentication on the API (users, tokens, API keys)
    admin_password: str | None = None  # first start with auth: the admin's password (default: generated)
    require_admin: bool = False  # production: refuse to generate one; an admin must be configured
    https: TlsIdentity | None = None  # serve the API over HTTPS with this certificate (``cert``/``key``)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; none by default, so a
    # client cannot pick the address that login limits, provisioning limits and the audit log go by.
    trusted_proxies: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    rul_horizon: float = 30.0  # cycles: a RUL model's alert fires when the RUL's lower bound is below this
    retraining: Path | None = None  # retraining policies (default: data_dir/retraining.yaml if there; else none)
    rollout: RolloutPlan = field(default_factory=RolloutPlan)  # how the policies' candidates roll out
    drift_scores: bool = False  # drift also judges the live version's score shift (off: see docs/models.md)
    alerting: Path | None = None  # notification channels and escalation (default: data_dir/alerting.yaml if there)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir.resolve() / 'edgeloop.db'}"


CRL_RESIGN_DAYS = 15
ALERT_TICK_S = 1.0
CAMPAIGN_TICK_S = 2.0  # how often running campaigns are judged (their gates read the store)


def trusted_proxies(entries: tuple[str, ...]) -> list[str]:
    """The configured proxies as uvicorn takes them; ConfigError for anything but an address or a network."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"trusted proxy {entry!r}: give an IP address or a network (10.0.0.5, "
                              "10.0.0.0/24)") from None
    return list(entries)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Revoked:
    serials: list[int]
    sessions_closed: int


MAX_CONFIG_NODES = 100_000


def _parse_agent_config(text: str) -> AgentConfig:
    """The agent's own validation, after refusing YAML whose aliases expand to a huge document ("billion laughs"):
    it would cost the platform (and the agent) exponential time."""
    import yaml

    from edgeloop.agent.config import parse_config

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        root = None  # parse_config reports it (the line of a syntax error; nesting too deep)
    if root is not None and _expanded_nodes(root) > MAX_CONFIG_NODES:
        raise ConfigError(f"agent.yaml: its aliases expand to more than {MAX_CONFIG_NODES} YAML nodes")
    return parse_config(text, origin="agent.yaml")


def _expanded_nodes(root: Any) -> int:
    """How many nodes the document has with every alias expanded (each shared node counted once, memoised)."""
    import yaml

    cap = 10 * MAX_CONFIG_NODES
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # being counted: meeting one again is a recursive alias, an endless document
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            sizes[id(node)] = 1
            continue
        if done:
            open_.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), cap)
            continue
        if id(node) in open_:
            return cap
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


class _IngestView:
    """What the API reads of ingest (``edgeloop.api.services.IngestView``): presence, newest samples, counters."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform

    @property
    def mqtt_connected(self) -> bool:
        return self._platform.source.stats.connected

    def online(self, device: str) -> bool:
        return self._platform.presence.online.get(device, False)

    def last_seen_ms(self, device: str) -> int | None:
        return self._platform.pipeline.last_seen.get(device)

    def dead_letters(self, device: str) -> int:
        return self._platform.pipeline.stats.dead_by_device.get(device, 0)

    async def stats(self, tenant: str | None) -> dict[str, Any]:
        return await self._platform.snapshot(tenant)


class _ApiServer(uvicorn.Server):
    """uvicorn inside our event loop; signals stay with the CLI, which shuts everything down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Platform:
    def __init__(
        self, config: PlatformConfig, *, clock: Clock | None = None, on_scored: ScoredHook | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.on_scored = on_scored
        self.started_at = self.clock.monotonic()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: asyncio.Future[BaseException] | None = None
        self.store: Store
        self.registry: RegistryService
        self.pipeline: IngestPipeline
        self.scoring: ScoringStage
        self.alerts: AlertService
        self.source: MqttSource  # the platform's MQTT connection (ingest subscribes on it unless embedded)
        self.inbound: MqttSource | HandoffSource  # what ingest takes its messages from
        self.presence = Presence()
        self.api_server: uvicorn.Server | None = None
        self.provisioning: ProvisioningService | None = None
        self.ca: CertificateAuthority | None = None
        self.models: ModelRegistry
        self.broker: EmbeddedBroker | None = None
        self._refusals_audited = OncePer(60_000)
        self.access: AccessService
        self.generated_admin_password: str | None = None  # shown once by the caller, never stored
        # what the store held when this process started: totals = these + the pipeline's counters since start
        self._stored_before: tuple[int, int] = (0, 0)
        self._dead_before: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        cfg = self.config
        private_data_dir(cfg.data_dir)  # 0700, its files 0600 (tightened and logged if they were not)
        self._stack.callback(DirLock(cfg.data_dir).acquire().release)  # one platform per data directory
        self._failed = asyncio.get_running_loop().create_future()
        http_socket = self._bind_http() if cfg.http_port is not None else None
        self.store = await self._stack.enter_async_context(open_store(cfg.resolved_store_url, recover_corrupt=True))
        registry = await self.store.load_registry()
        self._stored_before = await self.store.telemetry_counts()
        self._dead_before = await self.store.dead_letter_counts()
        validator = Validator(registry=registry, limits=cfg.limits)
        self.registry = RegistryService(store=self.store, registry=registry, validator=validator)
        self.access = AccessService(store=self.store, clock=self.clock)
        if cfg.auth:
            if cfg.require_admin and cfg.admin_password is None and not await self.store.list_users():
                raise ConfigError("no administrator is configured: on the first start set EDGELOOP_ADMIN_PASSWORD "
                                  "(at least 12 characters); it creates the user 'admin'")
            self.generated_admin_password = await self.access.bootstrap_admin(cfg.admin_password)
        if cfg.pki_dir is not None:
            from edgeloop.identity.auth import RateLimiter
            from edgeloop.identity.pki import CertificateAuthority
            from edgeloop.identity.provisioning import ProvisioningService

            fresh = cfg.create_pki and not (cfg.pki_dir / "issuing.key").exists()
            self.ca = CertificateAuthority.init(cfg.pki_dir) if fresh else CertificateAuthority.open(cfg.pki_dir)
            self.provisioning = ProvisioningService(
                store=self.store, registry=self.registry, ca=self.ca, clock=self.clock,
                limiter=RateLimiter(rate_per_s=cfg.provision_rate_per_s, burst=cfg.provision_burst))
        self.models = self._model_registry()
        ingest_tls = cfg.mqtt_tls
        handoff = HandoffSource(clock=self.clock) if cfg.embedded_broker else None
        if cfg.embedded_broker:
            broker_tls = None
            if cfg.embedded_tls:
                broker_tls, ingest_tls = self._embedded_tls()
            # the broker hands ingest its messages and acknowledges them to devices after commit
            self.broker = await self._stack.enter_async_context(
                EmbeddedBroker(host=cfg.mqtt_host, port=cfg.mqtt_port, tls=broker_tls,
                               on_refused=self._audit_refused_connection, handoff=handoff))
        rul_models = load_rul_models(cfg.data_dir / "models" / "rul")
        if rul_models:
            log.info("RUL models loaded: %s (horizon %g cycles)", ", ".join(rul_models), cfg.rul_horizon)
        def profile_of(device: str) -> DeviceProfile | None:
            dev = registry.devices.get(device)
            return registry.profiles.get(dev.profile) if dev is not None else None

        def scope_of(device: str) -> str:
            dev = registry.devices.get(device)
            return dev.scope if dev is not None else "*"

        settings_path = cfg.alerting or (cfg.data_dir / "alerting.yaml")
        settings = (load_settings(settings_path) if cfg.alerting is not None or settings_path.exists()
                    else AlertingSettings())
        notifier = Notifier(settings.channels, clock=self.clock, base_url=self.http_url or "") \
            if settings.channels else None
        self.alerts = AlertService(store=self.store, registry=registry, clock=self.clock, policy=settings.lifecycle,
                                   notifier=notifier, latest_sample_ms=lambda: self.scoring.latest_ms)
        self._stack.push_async_callback(self.alerts.aclose)
        await self.alerts.start()
        if settings.channels:
            log.info("alerting: pages go to %s", ", ".join(c.name for c in settings.channels))
        self.deployment = Deployment(registry=self.models, scope_of=scope_of)
        await self.deployment.refresh()  # the champions (verified) before the first sample is scored
        self.models.alias_listeners.append(lambda _event: self.deployment.refresh())
        self.drift = DriftService(store=self.store, models=self.deployment, profile_of=profile_of,
                                  manifest_of=self.models.get)
        self._stack.push_async_callback(self.drift.close)
        self.live_scores = LiveScores()  # each version's live scores, sampled (a campaign's score gate)
        self.scoring = ScoringStage(alerts=self.alerts, on_scored=self._scored, profile_of=profile_of,
                                    rul=RulMonitor(rul_models, horizon=cfg.rul_horizon) if rul_models else None,
                                    history=self.store.read_chunks, on_findings=FindingLog(store=self.store),
                                    models=self.deployment, on_scores=self._run_scores)
        self.probes = True  # known-answer probes judge every phase of a detector rollout (the probe gate)
        self.edge_rollout = EdgeRollout(store=self.store, bundle=lambda ref: self.models.export(ref, by="campaigns"),
                                        publish=self._publish_retained, tenant_of=self._gateway_tenant,
                                        now=self.alerts.now)
        self.campaigns = CampaignService(store=self.store, now=self.alerts.now, placement=self.deployment,
                                         aliases=self.deployment, audit=self.store.audit,
                                         probes=PlatformProbes(store=self.store, scoring=self.scoring),
                                         gateways=self.edge_rollout, scores=self.live_scores)
        await self.campaigns.resume()  # a campaign a restart interrupted continues where it was
        self.training = TrainingJobs(store=self.store, models=self.models, assets=registry,
                                     work_dir=cfg.data_dir / "models" / "jobs", now=self.alerts.now)
        self._stack.push_async_callback(self.training.close)
        policies = load_policies(cfg.retraining) if cfg.retraining is not None else (
            load_policies(cfg.data_dir / "retraining.yaml") if (cfg.data_dir / "retraining.yaml").exists()
            else PolicySet())
        self.learning = LearningLoop(store=self.store, assets=registry, policies=policies, training=self.training,
                                     campaigns=self.campaigns, models=self.models, now=self.alerts.now,
                                     plan=cfg.rollout, probes=self.probes)
        self.drift.listeners.append(self.learning.on_drift)
        self.source = MqttSource(
            host=cfg.mqtt_host, port=cfg.mqtt_port, client_id=cfg.ingest_client_id, clock=self.clock,
            topics=() if handoff is not None else [
                subscription(TopicKind.TELEMETRY), subscription(TopicKind.STATUS), subscription(TopicKind.EVENT),
                subscription(TopicKind.HEALTH)],
            tls=ingest_tls,
        )
        await self._stack.enter_async_context(self.source)
        self.inbound = handoff if handoff is not None else self.source
        self.commands = CommandService(store=self.store, registry=registry, clock=self.clock,
                                       publish=lambda topic_, payload: self.source.publish(topic_, payload, qos=1),
                                       online=self.presence.online.get)
        self.readings = LatestReadings()  # what the actions engine checks its preconditions and interlocks on
        self.actions = ActionEngine(store=self.store, registry=registry, commands=self.commands,
                                    readings=self.readings, clock=self.clock)
        await self.actions.start()
        self.alerts.opened_listeners.append(self.actions.on_alerts)

        async def downstream(chunks: list[TelemetryChunk]) -> None:
            self.readings.observe(chunks)
            await self.scoring.submit(chunks)

        self.pipeline = IngestPipeline(source=self.inbound, store=self.store, validator=validator,
                                       downstream=downstream, on_answers=self.commands.answered,
                                       presence=self.presence, clock=self.clock)
        self.pipeline.last_seen.update(await self.store.latest_sample_ms())
        self.pipeline.gateways.update(g.id for g in await self.store.list_gateways())
        self._stack.push_async_callback(self._stop_tasks)
        self._spawn(self.scoring.run(), "scoring")
        self._spawn(self._alert_ticks(), "alerts")
        self._spawn(self.drift.run(), "drift")
        self._spawn(self.campaigns.run(CAMPAIGN_TICK_S), "campaigns")
        self._spawn(self.commands.run(), "commands")
        self._spawn(self.actions.run(), "actions")
        if self.models.writable and policies.policies:
            self._spawn(self._learning_ticks(), "learning")
        self._spawn(self.pipeline.run(), "ingest")
        if self.ca is not None:
            self._spawn(self._keep_crl_fresh(self.ca), "crl")
        if cfg.http_port is not None:
            from edgeloop.api import create_app

            tls = cfg.https
            server = _ApiServer(uvicorn.Config(create_app(self.services), host=cfg.http_host, port=cfg.http_port,
                                               log_level="warning", lifespan="off", access_log=False,
                                               proxy_headers=bool(cfg.trusted_proxies),
                                               forwarded_allow_ips=trusted_proxies(cfg.trusted_proxies),
                                               ssl_certfile=str(tls.cert) if tls else None,
                                               ssl_keyfile=str(tls.key) if tls else None))
            self.api_server = server
            self._spawn(server.serve(sockets=[http_socket] if http_socket else None), "http")
            while not server.started:
                if self._failed.done():
                    raise EdgeLoopError(f"HTTP server failed to start on {cfg.http_host}:{cfg.http_port}")
                await asyncio.sleep(0.02)

    def _scored(self, chunks: list[TelemetryChunk]) -> None:
        """After each scored batch: the caller's hook (``on_scored``)."""
        if self.on_scored is not None:
            self.on_scored(chunks)

    def _run_scores(self, run: TelemetryChunk, ref: str, scores: np.ndarray, live: bool) -> None:
        """Each scored run of each version: the campaigns' live-score sample, and drift (the live version)."""
        self.live_scores.observe(run, ref, scores, live)
        if live:
            self.drift.observe_run(run, scores if self.config.drift_scores else None)

    async def _learning_ticks(self) -> None:
        """The retraining policies, judged every few seconds (a store outage waits for the next tick)."""
        while True:
            await asyncio.sleep(CAMPAIGN_TICK_S)
            try:
                await self.learning.tick()
            except StoreError as exc:
                log.warning("learning loop tick failed: %s", exc)

    async def _alert_ticks(self) -> None:
        """Time passing for alerting: silent devices, gateway states, pages, auto-resolves (every second)."""
        while True:
            await asyncio.sleep(ALERT_TICK_S)
            try:
                await self.alerts.tick()
            except StoreError as exc:  # the database is away for a moment: the next tick tries again
                log.warning("alert tick failed: %s", exc)

    def _model_registry(self) -> ModelRegistry:
        """The model registry: signing with the PKI's model-signing key (issued on first use); without a PKI it
        reads what is stored and refuses every write, saying why."""
        from edgeloop.identity.crl import RevocationList
        from edgeloop.models.artifacts import ArtifactStore
        from edgeloop.models.registry import ModelRegistry
        from edgeloop.models.signing import ModelSigner

        artifacts = ArtifactStore(root=self.config.data_dir / "models" / "artifacts")
        ca = self.ca
        if ca is None:
            return ModelRegistry(store=self.store, artifacts=artifacts, signer=None, chain_pem=None, clock=self.clock)
        signer = ModelSigner.ensure(ca)
        crl = RevocationList(ca.dir / "crl.pem", ca.cert)  # re-read only when the file changes (a revocation)
        if not crl.path.exists():
            ca.write_crl()
        return ModelRegistry(store=self.store, artifacts=artifacts, signer=signer, chain_pem=ca.chain_pem,
                             revoked=crl.serials, clock=self.clock)

    @property
    def tls_dir(self) -> Path:
        """Where the embedded platform keeps its own certificates (broker, ingest, simulated devices)."""
        return self.config.data_dir / "tls"

    def _embedded_tls(self) -> tuple[BrokerTls, TlsIdentity]:
        from edgeloop.identity.crl import RevocationList
        from edgeloop.identity.pki import ensure_identity

        cfg = self.config
        if self.ca is None:
            raise ConfigError("mutual TLS on the embedded broker needs a PKI (pki_dir)")
        ips = ["127.0.0.1"] + ([cfg.mqtt_host] if _is_ip(cfg.mqtt_host) and cfg.mqtt_host != "0.0.0.0" else [])
        dns = ["localhost", socket.gethostname()] + ([] if _is_ip(cfg.mqtt_host) else [cfg.mqtt_host])
        ensure_identity(self.ca, self.tls_dir, BROKER_IDENTITY, dns_names=dns, ip_addresses=ips)
        ensure_identity(self.ca, self.tls_dir, INGEST_IDENTITY)
        broker = BrokerTls(TlsIdentity.from_dir(self.tls_dir, BROKER_IDENTITY),
                           RevocationList(self.ca.dir / "crl.pem", self.ca.cert))
        return broker, TlsIdentity.from_dir(self.tls_dir, INGEST_IDENTITY)

    async def _audit_refused_connection(self, source: str, actor: str, reason: str) -> None:
        """A connection the embedded broker refused: audited once per address and minute (floods stay small)."""
        now = self.clock.now_ms()
        if self._refusals_audited.due(source, now):
            await self.store.audit(AuditRecord(ts_ms=now, actor=actor, action="mqtt.connect", target=source,
                                               outcome="refused", detail=reason, source=source))

    async def _keep_crl_fresh(self, ca: CertificateAuthority) -> None:
        """Re-sign the CRL before it expires: Mosquitto (and OpenSSL) refuse every client on an expired CRL."""
        while True:
            if ca.crl_expires_within(dt.timedelta(days=CRL_RESIGN_DAYS)):
                await asyncio.to_thread(ca.write_crl)
                log.info("re-signed the certificate revocation list")
            await asyncio.sleep(3600)

    async def revoke_device(self, device_id: str, *, by: str, source: str = "") -> Revoked:
        """Revoke every certificate of ``device_id``, close its live session on the embedded broker, audit it."""
        if self.ca is None:
            raise ConfigError("revocation needs the platform's PKI (pki_dir)")
        try:
            serials = await asyncio.to_thread(self.ca.revoke, device_id)
        except PkiError as exc:
            raise ConflictError(str(exc)) from exc
        closed = device_id in (self.broker.refresh_revocations() if self.broker else [])
        await self.store.audit(AuditRecord(
            ts_ms=self.clock.now_ms(), actor=by, action="device.revoke", target=device_id, outcome="ok",
            source=source, detail=f"serials {', '.join(f'{n:x}' for n in serials)}"
                                  f"{'; live MQTT session closed' if closed else ''}"))
        return Revoked(serials=serials, sessions_closed=int(closed))

    async def _publish_retained(self, topic_: str, payload: bytes) -> None:
        """Publish a push to a gateway: QoS 1, retained (an offline gateway gets it when it reconnects)."""
        await self.source.publish(topic_, payload, qos=1, retain=True)

    def _gateway_tenant(self, gateway: str) -> str | None:
        device = self.registry.registry.devices.get(gateway)
        return device.tenant if device is not None else None

    async def push_gateway_config(self, gateway: str, text: str, *, by: str, source: str = "") -> GatewayConfig:
        """Validate an agent configuration, store it as the gateway's next version and publish it (retained,
        QoS 1) on the gateway's ``config`` topic. ``ConfigError`` names the line; ``BrokerError`` if the broker
        did not take it (the version is then stored as ``failed``)."""
        from edgeloop.ingest.gateways import read_heartbeat

        device = self.registry.registry.devices.get(gateway)
        if device is None:
            raise ConflictError(f"gateway {gateway!r} is not a registered device")
        # Off the event loop (PyYAML is slow on a large file; ingest and the embedded broker keep running).
        parsed = await asyncio.to_thread(_parse_agent_config, text)
        if parsed.agent.gateway != gateway:
            raise ConfigError(f"agent.yaml: agent.gateway is {parsed.agent.gateway!r}; this configuration is "
                              f"for {gateway!r}")
        if parsed.agent.tenant != device.tenant:
            raise ConfigError(f"agent.yaml: agent.tenant is {parsed.agent.tenant!r}, but gateway {gateway!r} "
                              f"belongs to tenant {device.tenant!r}")
        record = await self.store.get_gateway(gateway)
        hb = read_heartbeat(record) if record is not None else None
        now = self.clock.now_ms()
        cfg = await self.store.add_gateway_config(gateway=gateway, tenant=device.tenant, config=text, created_ms=now,
                                                  created_by=by, after=hb.config_version if hb else 0)
        audit = AuditRecord(ts_ms=now, actor=by, action="gateway.config", target=gateway, outcome="ok",
                            detail=f"version {cfg.version}, {len(text)} bytes", source=source)
        push = ConfigPush(version=cfg.version, config=text, ts=now, issued_by=by)
        try:
            await self.source.publish(topic(device.tenant, gateway, TopicKind.CONFIG), encode(push), qos=1,
                                      retain=True)
        except BrokerError as exc:
            await self.store.set_gateway_config_status(gateway, cfg.version, "failed", str(exc), self.clock.now_ms())
            await self.store.audit(dataclasses.replace(audit, outcome="failed", detail=f"{audit.detail}: {exc}"))
            raise
        await self.store.audit(audit)
        return cfg

    def _bind_http(self) -> socket.socket:
        """Bind the API's port first, so a busy port is one clear error before anything else starts."""
        cfg = self.config
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.http_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.http_host, cfg.http_port or 0))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"the HTTP port {cfg.http_host}:{cfg.http_port} is not available ({exc.strerror}); "
                              "choose another with --port") from exc
        self._stack.callback(sock.close)
        return sock

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failed is None or self._failed.done():
            return
        exc = task.exception()
        self._failed.set_result(exc or EdgeLoopError(f"background task {task.get_name()} stopped"))

    async def _stop_tasks(self) -> None:
        if self.api_server is not None:
            self.api_server.should_exit = True
        for task in reversed(self._tasks):
            if task.get_name() == "http":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 5)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def alive(self) -> bool:
        """True while every background loop is running."""
        return self._failed is not None and not self._failed.done()

    async def wait_failed(self) -> BaseException:
        """Wait until a background loop dies (it should not); returns its exception."""
        assert self._failed is not None
        return await self._failed

    # -- views for the API and CLI --------------------------------------------------------------
    @functools.cached_property
    def services(self) -> Services:
        """What the API may use, over this running platform (the API's modules load on first use only)."""
        from edgeloop.api.services import Services

        cfg = self.config
        return Services(store=self.store, registry=self.registry, access=self.access, alerts=self.alerts,
                        ingest=_IngestView(self), gateways=self, clock=self.clock, provisioning=self.provisioning,
                        auth=cfg.auth, mqtt_address=f"{cfg.mqtt_host}:{cfg.mqtt_port}", models=self.models,
                        campaigns=self.campaigns if self.models.writable else None,
                        training=self.training if self.models.writable else None, probes=self.probes,
                        actions=self.actions)

    @property
    def http_url(self) -> str | None:
        port = self.config.http_port
        scheme = "https" if self.config.https else "http"
        return None if port is None else f"{scheme}://{self.config.http_host}:{port}"

    def data_now_ms(self) -> int:
        """The dashboards' "now": the newest sample time, never ahead of the platform's clock, so a device whose
        clock runs ahead moves no one's "now", in any tenant."""
        return min(self.scoring.latest_ms or self.clock.now_ms(), self.clock.now_ms())

    async def _tenant_snapshot(self, tenant: str) -> dict[str, Any]:
        devices = [d.id for d in self.registry.registry.devices.values() if d.tenant == tenant]
        unresolved = await self.store.list_alerts(unresolved=True, limit=10_000, tenant=tenant)
        open_alerts = [a for a in unresolved if a.status is AlertStatus.OPEN]
        dead, before = self.pipeline.stats.dead_by_device, self._dead_before
        return {
            "now_ms": self.data_now_ms(),
            "tenant": tenant,
            "devices_total": len(devices),
            "devices_online": self.presence.count(devices),
            "alerts_open": len(open_alerts),
            # acknowledged but not resolved: someone is on it, yet the condition may still hold (never "all quiet")
            "alerts_acknowledged": len(unresolved) - len(open_alerts),
            "uptime_s": round(self.clock.monotonic() - self.started_at, 1),
            "ingest": {"dead_letters": sum(dead.get(d, 0) for d in devices)},
            "totals": {"dead_letters": sum(dead.get(d, 0) + before.get(d, 0) for d in devices)},
        }

    async def idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything received so far is stored and scored."""
        deadline = self.clock.monotonic() + timeout_s
        while True:
            await asyncio.sleep(0.05)  # always yield: the loops being waited for need the event loop
            if self.inbound.depth == 0 and self.scoring.queue.empty() and not self.scoring.busy:
                return True
            if self.clock.monotonic() >= deadline:
                return False

    async def snapshot(self, tenant: str | None = None) -> dict[str, Any]:
        """The platform's statistics; for a ``tenant``, only what is that tenant's: its devices, their presence
        and dead letters, and its open alerts (the pipeline's rates, queues and counters are the platform's).
        ``totals`` are what the store holds; ``ingest``, ``scoring`` and ``alerting`` count since this process
        started (``uptime_s`` ago) and restart at zero with it."""
        if tenant is not None:
            return await self._tenant_snapshot(tenant)
        ing, sc, src = self.pipeline.stats, self.scoring.stats, self.source.stats
        now = self.clock.monotonic()
        unresolved = await self.store.list_alerts(unresolved=True, limit=10_000)
        open_alerts = [a for a in unresolved if a.status is AlertStatus.OPEN]
        al = self.alerts.stats
        return {
            "now_ms": self.data_now_ms(),
            "devices_total": len(self.registry.registry.devices),
            "devices_online": self.presence.count(self.registry.registry.devices),  # registered ones only
            "readings_per_s": round(ing.samples_rate.rate(now), 1),
            "messages_per_s": round(ing.messages_rate.rate(now), 1),
            "alerts_open": len(open_alerts),
            # acknowledged but not resolved: someone is on it, yet the condition may still hold (never "all quiet")
            "alerts_acknowledged": len(unresolved) - len(open_alerts),
            "uptime_s": round(now - self.started_at, 1),
            # everything the store holds (what it held at start plus what this process stored since)
            "totals": {
                "stored_messages": self._stored_before[0] + ing.stored_messages,
                "stored_samples": self._stored_before[1] + ing.stored_samples,
                "dead_letters": sum(self._dead_before.values()) + ing.dead_letters,
            },
            # the counters below count since this process started (``uptime_s`` ago)
            "ingest": {
                "received": ing.received, "stored_messages": ing.stored_messages,
                "stored_samples": ing.stored_samples, "duplicates": ing.duplicates,
                "dead_letters": ing.dead_letters, "dead_letters_by_code": dict(ing.dead_by_code),
                "events": ing.events,
                "store_retries": ing.store_retries, "batches": ing.batches,
                "queue_depth": self.inbound.depth,
                "queue_capacity": self.inbound.capacity, "mqtt_connected": src.connected, "mqtt_connects": src.connects,
            },
            "scoring": {
                "scored_messages": sc.scored_messages, "scored_samples": sc.scored_samples,
                "late_messages": sc.late_messages, "findings": sc.findings, "alerts_raised": al.alerts_opened,
                "queue_depth": self.scoring.queue.qsize(), "queue_capacity": sc.capacity,
                "rul_models": sorted(self.scoring.rul.models) if self.scoring.rul else [],
                "rul_predictions": self.scoring.rul.stats.predictions if self.scoring.rul else 0,
            },
            "alerting": {
                "rules_version": self.alerts.rules_version, "signals": al.signals, "alerts_opened": al.alerts_opened,
                "incidents_opened": al.incidents_opened, "pages": al.pages,
                "unrouted_pages": al.unrouted_pages, "suppressions": al.suppressions,
                "open_incidents": len(self.alerts.engine.inbox()),
            },
        }
