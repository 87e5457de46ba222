"""Training jobs on the platform: a profile's stored telemetry and the technicians' labels become a signed candidate
version with its model card (the async shell around :mod:`edgeloop.models.training` and
:mod:`edgeloop.models.trainer`).

A job (:meth:`TrainingJobs.start`, or :meth:`TrainingJobs.run` to await it):

1. writes the profile's devices' data over the window to a series file, one device at a time (bounded memory);
2. reads the labels on those devices' alerts in the window (the newest per alert wins; a label's id is its
   alert's);
3. loads and verifies the champion (a trained version's fitted detectors, or none for the built-in detector);
4. trains in a worker process (progress in :attr:`JobView.stage` / ``done`` / ``total``);
5. registers the candidate as the model's next version, signed, with its lineage (parent: the champion, the data
   window and its hash, the labels, the trigger, the code version), its headline metrics and its model card,
   which also keeps each device's drift reference (what the drift monitor compares live data against once the
   version scores it). Audited ``model.train``.

A job never promotes anything: the candidate goes through a campaign (:mod:`edgeloop.models.rollout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import msgspec

from edgeloop.errors import ConfigError, EdgeLoopError, NotFoundError
from edgeloop.models.detector_artifact import PlatformDetector, dump_detectors
from edgeloop.models.manifest import DataWindow, ModelManifest, ModelRef, Trigger
from edgeloop.models.registry import ModelRegistry
from edgeloop.models.trainer import SeriesWriter, TrainingRequest, run_training
from edgeloop.models.training import DeviceSeries, TrainingConfig, TrainingResult, make_detector
from edgeloop.registry import Registry
from edgeloop.store.base import AuditRecord, Store

__all__ = ["JobView", "TrainingJobs"]

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000
DEFAULT_WINDOW_MS = 24 * _HOUR_MS
BUILTIN_LEARNS_MS = 6 * _HOUR_MS + 40 * 60_000  # the built-in detector's warm-up, ensemble warm-up and calibration


class JobView(msgspec.Struct, kw_only=True):
    """A training job as the API shows it."""

    id: str
    model: str
    profile: str
    devices: list[str]
    window_start_ms: int
    window_end_ms: int
    trigger: Trigger
    use_labels: bool = True  # False: the labels are ignored (a fault in the window is learnt as normal)
    state: Literal["running", "done", "failed"] = "running"
    stage: str = "queued"
    done: int = 0
    total: int = 0
    started_ms: int = 0
    finished_ms: int | None = None
    version: str | None = None  # the candidate registered (name@version)
    verdict: str | None = None  # the model card's: better | not_better
    reasons: list[str] = msgspec.field(default_factory=list)
    error: str = ""


class TrainingJobs:
    """Runs training jobs and keeps the last ``keep`` of them for the API (the versions themselves are stored)."""

    def __init__(self, *, store: Store, models: ModelRegistry, assets: Registry, work_dir: Path,
                 now: Callable[[], int], config: TrainingConfig | None = None, keep: int = 100,
                 timeout_s: float = 3600.0) -> None:
        self.store = store
        self.models = models
        self.assets = assets
        self.work_dir = work_dir
        self.now = now
        self.config = config or TrainingConfig()
        self.keep = keep
        self.timeout_s = timeout_s  # a job that runs longer fails (its worker is stopped): a profile is never blocked
        self.jobs: dict[str, JobView] = {}
        self._tasks: set[asyncio.Task[ModelManifest | None]] = set()

    async def plan(self, *, profile: str, devices: list[str] | None = None, start_ms: int | None = None,
                   end_ms: int | None = None, trigger: Trigger, hours: float | None = None,
                   use_labels: bool = True) -> JobView:
        """Check a job's inputs and fill its defaults: every device of the profile, the window ending at their
        newest sample and starting ``hours`` (a day) earlier."""
        if profile not in self.assets.profiles:
            raise NotFoundError("profile", profile)
        of_profile = sorted(d.id for d in self.assets.devices.values() if d.profile == profile)
        chosen = sorted(set(devices)) if devices else of_profile
        if not chosen:
            raise ConfigError(f"no device of profile {profile!r} is registered: nothing to train on")
        stray = [d for d in chosen if d not in of_profile]
        if stray:
            raise ConfigError(f"not devices of profile {profile!r}: {', '.join(stray)}")
        if end_ms is None:
            latest = await self.store.latest_sample_ms()
            end_ms = max((latest.get(d, 0) for d in chosen), default=0)
            if not end_ms:
                raise ConfigError(f"the devices of profile {profile!r} have no stored data to train on")
        if start_ms is None:
            start_ms = end_ms - (int(hours * _HOUR_MS) if hours is not None else DEFAULT_WINDOW_MS)
        if end_ms <= start_ms:
            raise ConfigError("the training window is empty (start must be before end)")
        return JobView(id=f"train-{secrets.token_hex(4)}", model=f"detector.{profile}", profile=profile,
                       devices=chosen, window_start_ms=start_ms, window_end_ms=end_ms, trigger=trigger,
                       use_labels=use_labels, started_ms=self.now())

    async def start(self, job: JobView, *, then: Callable[[JobView], Awaitable[None]] | None = None) -> JobView:
        """Run ``job`` in the background; its progress and outcome are in :attr:`jobs`; ``then(job)`` is awaited
        when it ended (done or failed)."""
        self._remember(job)
        task = asyncio.get_running_loop().create_task(self._run_quietly(job, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def run(self, job: JobView) -> ModelManifest:
        """Run ``job`` and return the registered candidate (raises what made it fail)."""
        self._remember(job)
        try:
            return await self._train(job)
        except BaseException as exc:
            job.state, job.finished_ms = "failed", self.now()
            job.error = str(exc) or type(exc).__name__
            raise

    async def _run_quietly(self, job: JobView,
                           then: Callable[[JobView], Awaitable[None]] | None) -> ModelManifest | None:
        manifest = None
        try:
            manifest = await self.run(job)
        except EdgeLoopError as exc:
            log.warning("training job %s failed: %s", job.id, exc)
        if then is not None:
            try:
                await then(job)
            except EdgeLoopError as exc:
                log.warning("after training job %s: %s", job.id, exc)
        return manifest

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remember(self, job: JobView) -> None:
        self.jobs[job.id] = job
        while len(self.jobs) > self.keep:
            self.jobs.pop(next(iter(self.jobs)))

    # -- the job -----------------------------------------------------------------------------------------------
    async def _train(self, job: JobView) -> ModelManifest:
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.work_dir / f"{job.id}.series"
        try:
            job.stage = "reading data"
            await self._write_series(job, path)
            labels = [lab for lab in await self.store.list_labels(since_ms=None)
                      if lab.device in job.devices and lab.end_ms >= job.window_start_ms
                      and lab.start_ms <= job.window_end_ms] if job.use_labels else []
            champion = await self.models.champion(job.model)
            if champion is not None and champion.version > 0:
                _, artifact = await self.models.load(champion)
            else:
                job.stage = "replaying the built-in champion"
                artifact = await self._builtin_champion(job)
            job.stage = "training"

            def progress(stage: str, done: int, total: int) -> None:
                job.stage, job.done, job.total = stage, done, total

            result = await run_training(TrainingRequest(
                series_path=str(path), window_start_ms=job.window_start_ms, window_end_ms=job.window_end_ms,
                labels=labels, config=self.config, champion_artifact=artifact,
                champion_ref=str(champion) if champion is not None else "built-in"), progress=progress,
                timeout_s=self.timeout_s)
            job.stage = "registering"
            manifest = await self._register(job, result, champion)
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        job.state, job.stage, job.finished_ms = "done", "done", self.now()
        job.version, job.verdict, job.reasons = str(manifest.ref), result.card.verdict, list(result.card.reasons)
        await self.store.audit(AuditRecord(
            ts_ms=self.now(), actor=job.trigger.by, action="model.train", target=str(manifest.ref), outcome="ok",
            detail=f"{job.trigger.kind} {job.trigger.ref}: {len(result.detectors)} devices, "
                   f"{result.data.rows} rows, verdict {result.card.verdict}", source="training"))
        return manifest

    async def _builtin_champion(self, job: JobView) -> bytes:
        """The built-in detector (version 0) as it runs on each device: it learnt from the device's own first
        ``BUILTIN_LEARNS_MS`` of data and keeps that model, so a fresh one fed the same rows stands for it. (A
        fresh one warmed on the training window instead would have learnt the new normal: never the champion's
        false alarms.)"""
        first = await self.store.first_sample_ms()
        detectors: dict[str, PlatformDetector] = {}
        for device in job.devices:
            if device not in first:
                continue
            series = await self._series(device, first[device], first[device] + BUILTIN_LEARNS_MS)
            if series is None:
                continue
            det = make_detector(self.config.detector, series.channels, self.config.period_ms)
            await asyncio.to_thread(det.process, series.ts, series.values)
            detectors[device] = det
        return dump_detectors(detectors)

    async def _series(self, device: str, start_ms: int, end_ms: int) -> DeviceSeries | None:
        """A device's stored samples in ``[start_ms, end_ms]``, in time order, once each (its usual channels)."""
        found = await self.store.read_samples(device, start_ms, end_ms)
        if found is None:
            return None
        ts, values, channels = found
        return DeviceSeries(device=device, ts=ts, values=values, channels=channels,
                            asset=self.assets.devices[device].asset)

    async def _write_series(self, job: JobView, path: Path) -> None:
        with SeriesWriter(path, max_rows=self.config.max_rows_per_device) as writer:
            for i, device in enumerate(job.devices, start=1):
                series = await self._series(device, job.window_start_ms, job.window_end_ms)
                job.done, job.total = i, len(job.devices)
                if series is not None:
                    writer.add(series)

    async def _register(self, job: JobView, result: TrainingResult, champion: ModelRef | None) -> ModelManifest:
        card = msgspec.to_builtins(result.card)
        card["drift_reference"] = msgspec.to_builtins(result.drift_references)
        m = result.card.candidate_metrics
        metrics = {"false_alarms_per_asset_day": m.false_alarms_per_asset_day, "alarms": float(m.alarms),
                   "faults": float(m.faults), "share_above_1": m.share_above_1}
        if m.recall is not None:
            metrics["recall"] = m.recall
        if m.median_delay_s is not None:
            metrics["median_delay_s"] = m.median_delay_s
        channels = sorted({c for r in result.drift_references.values() for c in r.channels})
        return await self.models.register(
            "detector", job.model, dump_detectors(result.detectors), by=job.trigger.by, trigger=job.trigger,
            parent=champion, profile=job.profile,
            data=DataWindow(window_start_ms=result.data.window_start_ms, window_end_ms=result.data.window_end_ms,
                            devices=result.data.devices, rows=result.data.rows,
                            data_sha256=result.data.data_sha256),
            label_ids=result.label_ids, features={"channels": channels, "detector": result.card.detector},
            metrics=metrics, card=card)
