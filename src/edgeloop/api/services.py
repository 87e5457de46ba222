"""What the routes may use: narrow interfaces the composition root (``edgeloop.app``) builds and hands to
``create_app``.

The API never sees the platform object (its broker, its loops): a route reaches the store, the registry, access
control, the alert service, a read-only view of ingest, provisioning, the gateways' control plane and the clock,
and nothing else. So the API can be built in a test over a store and fakes, without a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edgeloop.actions.engine import ActionEngine
from edgeloop.alerts.feedback import Decision, Proposal
from edgeloop.alerts.incidents import IncidentEngine
from edgeloop.alerts.rule_documents import RuleDocument
from edgeloop.campaigns.service import CampaignService
from edgeloop.clock import Clock
from edgeloop.identity.access import AccessService
from edgeloop.identity.provisioning import ProvisioningService
from edgeloop.messages import Alert
from edgeloop.models.registry import ModelRegistry
from edgeloop.models.training_jobs import TrainingJobs
from edgeloop.registry import RegistryService
from edgeloop.store import Store
from edgeloop.store.alerting import IncidentRecord, Label, MaintenanceRecord, SilenceRecord
from edgeloop.store.base import GatewayConfig

__all__ = ["Alerting", "GatewayControl", "IngestView", "Revocation", "Services"]


class IngestView(Protocol):
    """What ingest knows that the store does not: presence, the newest sample per device, its counters."""

    @property
    def mqtt_connected(self) -> bool: ...

    def online(self, device: str) -> bool: ...

    def last_seen_ms(self, device: str) -> int | None: ...

    def dead_letters(self, device: str) -> int:
        """Payloads of ``device`` refused since this process started."""
        ...

    async def stats(self, tenant: str | None) -> dict[str, Any]:
        """The platform's statistics (``GET /stats``); for a tenant, only what is that tenant's."""
        ...


class Revocation(Protocol):
    @property
    def serials(self) -> Sequence[int]: ...

    @property
    def sessions_closed(self) -> int: ...


class GatewayControl(Protocol):
    """What reaches devices through the broker: configurations pushed to gateways, revoked certificates."""

    async def push_gateway_config(self, gateway: str, text: str, *, by: str, source: str = "") -> GatewayConfig: ...

    async def revoke_device(self, device_id: str, *, by: str, source: str = "") -> Revocation: ...


class Alerting(Protocol):
    """The alert service as the routes use it: the one writer of alert and incident state."""

    engine: IncidentEngine

    def now(self) -> int: ...

    def page_channels(self, route: str) -> list[str]: ...

    async def acknowledge(self, alert_id: int, *, by: str) -> Alert: ...

    async def resolve(self, alert_id: int, *, by: str) -> Alert: ...

    async def act(self, incident: int, action: str, by: str, *, note: str = "", to: str | None = None,
                  text: str = "") -> IncidentRecord: ...

    async def feedback(self, alert_id: int, verdict: str, *, by: str, fault_type: str = "",
                       reason: str = "") -> tuple[Label, Decision | None]: ...

    def proposals(self) -> list[Proposal]: ...

    async def decide_proposal(self, proposal: int, *, approve: bool, by: str, reason: str = "") -> Decision: ...

    async def add_maintenance(self, rec: MaintenanceRecord) -> None: ...

    async def add_silence(self, rec: SilenceRecord) -> None: ...

    async def end_silence(self, silence_id: str) -> SilenceRecord: ...

    def rules_of(self, tenant: str | None) -> RuleDocument: ...

    async def replace_rules(self, text: str, *, by: str, tenant: str | None = None) -> int: ...


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a route may touch. ``provisioning`` is None without a PKI (its routes answer 503); ``models``:
    the model registry (None: its routes answer 503); ``auth`` False: every caller is the anonymous administrator
    (a laptop, a test)."""

    store: Store
    registry: RegistryService
    access: AccessService
    alerts: Alerting
    ingest: IngestView
    gateways: GatewayControl
    clock: Clock
    provisioning: ProvisioningService | None = None
    auth: bool = False
    mqtt_address: str = ""  # where devices connect (``host:port``), told to whoever creates an enrollment
    models: ModelRegistry | None = None
    campaigns: CampaignService | None = None  # rollout campaigns (None without a model registry: 503)
    training: TrainingJobs | None = None  # training jobs (None without a model registry: 503)
    probes: bool = False  # whether the platform runs known-answer probes for the campaigns' probe gate
    actions: ActionEngine | None = None  # policies, decisions, approvals, holds (None: their routes answer 503)
