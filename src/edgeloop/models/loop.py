"""The closed loop on the platform: drift events and technician labels → the retraining policy → a training job →
a candidate version → a quality-gated rollout campaign (the async shell around :mod:`edgeloop.models.retraining`).

On each :meth:`LearningLoop.tick` (the platform calls it every few seconds of its alerting clock, which is the
sample time in a simulation), per profile that has a policy:

- nothing happens while a job of the profile runs or awaits approval, or a campaign of its model runs;
- the policy decides from the drift events recorded since its last request, the labels since then and the
  devices with an open confirmed fault (left out: their data is not normal);
- a request in ``automatic`` mode starts a training job at once; one in ``approval`` mode waits for an operator
  (:meth:`LearningLoop.approve`);
- a finished job whose model card says ``better`` is rolled out (:func:`~edgeloop.models.rollout.start_rollout`
  with the loop's plan); one that is ``not_better`` stays a registered version, and why is audited.

A drift-triggered job trains from the end of the first drifting window (the change happened inside that window, so
what follows is the new normal only).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeloop.campaigns.service import CampaignService
from edgeloop.errors import EdgeLoopError
from edgeloop.models.drift import DriftConfig, DriftEvent
from edgeloop.models.manifest import Trigger
from edgeloop.models.registry import ModelRegistry
from edgeloop.models.retraining import PolicySet
from edgeloop.models.retraining import TrainingRequest as RetrainRequest
from edgeloop.models.rollout import RolloutPlan, start_rollout
from edgeloop.models.training import newest_labels
from edgeloop.models.training_jobs import JobView, TrainingJobs
from edgeloop.registry import Registry
from edgeloop.store.alerting import Verdict
from edgeloop.store.base import AuditRecord, DriftRecord, Store

__all__ = ["LearningLoop"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Profile:
    last_request_ms: int | None = None
    job: JobView | None = None  # the profile's job running or awaiting approval
    waiting: RetrainRequest | None = None  # a request awaiting an operator's approval
    history: list[str] = field(default_factory=list)  # job ids, oldest first


class LearningLoop:
    """Retraining policy → training → rollout, per profile (see the module docstring)."""

    def __init__(self, *, store: Store, assets: Registry, policies: PolicySet, training: TrainingJobs,
                 campaigns: CampaignService, models: ModelRegistry, now: Callable[[], int],
                 plan: RolloutPlan | None = None, probes: bool = False, drift: DriftConfig | None = None,
                 capacity: int = 10_000) -> None:
        self.store = store
        self.assets = assets
        self.policies = policies
        self.training = training
        self.campaigns = campaigns
        self.models = models
        self.now = now
        self.plan = plan or RolloutPlan()
        self.probes = probes
        self.drift_window_ms = (drift or DriftConfig()).window_ms
        self._events: deque[DriftEvent] = deque(maxlen=capacity)
        self._profiles: dict[str, _Profile] = {}

    async def on_drift(self, record: DriftRecord) -> None:
        """A recorded drift event (the drift service's listener)."""
        self._events.append(DriftEvent(
            device=record.device, kind=record.kind,  # type: ignore[arg-type]  # stored from a DriftKind
            since_ms=record.since_ms, detected_ms=record.detected_ms, channels=dict(record.channels),
            figure=record.figure, threshold=record.threshold, message=record.message, model=record.model,
            asset=record.asset, profile=record.profile, id=record.id))

    def status(self, profile: str) -> _Profile:
        return self._profiles.setdefault(profile, _Profile())

    async def tick(self) -> None:
        now = self.now()
        for policy in self.policies.policies:
            if policy.profile not in self.assets.profiles:
                continue
            state = self.status(policy.profile)
            if state.job is not None and state.job.state == "running":
                continue
            state.job = None
            if state.waiting is not None or await self._rolling_out(f"detector.{policy.profile}"):
                continue
            devices = sorted(d.id for d in self.assets.devices.values() if d.profile == policy.profile)
            labels = await self.store.list_labels(since_ms=state.last_request_ms)
            requests = policy.decide(now, self._events, labels, await self._open_faults(), devices=devices,
                                     last_request_ms=state.last_request_ms)
            for request in requests:
                state.last_request_ms = now
                if request.awaits_approval:
                    state.waiting = request
                    await self._audit("training.awaiting_approval", policy.profile, request.trigger.reason)
                else:
                    await self._launch(request, by="policy")

    async def approve(self, profile: str, *, by: str) -> JobView:
        """Start the job a profile's policy asked for and an operator approved."""
        state = self.status(profile)
        if state.waiting is None:
            raise EdgeLoopError(f"no training of profile {profile!r} awaits approval")
        request, state.waiting = state.waiting, None
        await self._audit("training.approved", profile, f"by {by}: {request.trigger.reason}", actor=by)
        return await self._launch(request, by=by)

    async def _launch(self, request: RetrainRequest, *, by: str) -> JobView:
        start = request.window_start_ms
        if request.trigger.kind == "drift":  # the change happened inside the first drifting window
            start = min(start + self.drift_window_ms, request.window_end_ms - 1)
        trigger = Trigger(kind=request.trigger.kind, by=by, ref=request.trigger.ref)
        job = await self.training.plan(profile=request.profile, devices=list(request.devices), start_ms=start,
                                       end_ms=request.window_end_ms, trigger=trigger)
        state = self.status(request.profile)
        state.job = job
        state.history.append(job.id)
        await self.training.start(job, then=self._after)
        return job

    async def _after(self, job: JobView) -> None:
        """A job ended: roll a better candidate out; say why another is not."""
        if job.state != "done" or job.version is None:
            await self._audit("training.failed", job.profile, job.error)
            return
        if job.verdict != "better":
            await self._audit("training.not_rolled_out", job.version, "; ".join(job.reasons) or "not better")
            return
        try:
            await start_rollout(campaigns=self.campaigns, models=self.models, registry=self.assets, ref=job.version,
                                plan=self.plan, by="policy", now_ms=self.now(), probes=self.probes)
        except EdgeLoopError as exc:
            await self._audit("training.not_rolled_out", job.version, str(exc))

    async def _rolling_out(self, model: str) -> bool:
        return any(v.spec.subject == model for v in await self.campaigns.list(running_only=True))

    async def _open_faults(self) -> set[str]:
        """Devices whose alert, confirmed as a fault (or relabelled), is still open: the newest verdict on the alert
        counts (a confirmation later corrected to a false alarm leaves the device's data normal)."""
        open_alerts = {a.id for a in await self.store.list_alerts(unresolved=True, limit=100_000)}
        labels = await self.store.list_labels(since_ms=self.now() - 7 * 86_400_000)
        return {lab.device for _, lab in newest_labels(labels)
                if lab.alert in open_alerts and lab.verdict in (Verdict.CONFIRMED, Verdict.RELABEL)}

    async def _audit(self, action: str, target: str, detail: str, *, actor: str = "policy") -> None:
        log.info("learning loop: %s %s: %s", action, target, detail)
        await self.store.audit(AuditRecord(ts_ms=self.now(), actor=actor, action=action, target=target,
                                           outcome="ok", detail=detail, source="learning-loop"))
