"""The agent's signed edge models: which version of each runs, its probation guardrail, and the platform's pushes.

* **At start and on a configuration change** (:meth:`EdgeModels.configure`), each ``models:`` entry runs the
  version in its slot (``model_slots.py``). An entry's ``path`` (a signed ``.elm``) is installed first when it
  holds a newer version than the slot's that the agent has not gone back from. A file that does not verify is
  refused: one error log line naming the file and the code, and a ``model_refused`` event; at start the agent
  runs on without it (or with the version it had), a pushed configuration naming it is rejected.
* **Probation** (``model_guard.py``): a version installed less than ``probation_h`` ago is watched; on a breach
  the agent goes back to the previous version by itself, offline too, and journals a ``model_reverted`` event
  with the figures. The version it left is blocked: not re-installed unless pushed again.
* **Pushes** (:meth:`EdgeModels.apply_push`, a ``ModelPush`` on the gateway's ``model`` topic): ``install``
  verifies and installs (the version it runs already, or a push id seen before, does nothing new); ``rollback``
  goes back to the previous version if it is ``to_version``. Each is answered by a ``model`` event (``data``: id,
  name, action, status ``applied`` / ``refused`` / ``rolled_back``, version, reason, running).

Every event is journaled, so it reaches the platform when the link is up, whenever that is.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edgeloop.agent.config import AgentConfig, LocalModel
from edgeloop.agent.inference import LocalModelRunner, Score
from edgeloop.agent.model_guard import Breach, GuardLimits, ModelGuard, guard_limits
from edgeloop.agent.model_slots import Installed, ModelSlots, SlotRefusal, VerifiedModel, verify_edge_bundle
from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import ConfigError, ModelRefused
from edgeloop.identity.auth import OncePer
from edgeloop.messages import DeviceEvent, EdgeModelHealth, ModelPush, Sample, Severity, decode_model_push

__all__ = ["EdgeModels", "trust_chain"]

log = logging.getLogger(__name__)
MAX_SEEN_PUSHES = 256


def trust_chain(cfg: AgentConfig) -> bytes | None:
    """The CA chain a model's signer must chain to: ``agent.models_trust``, else ``uplink.tls``'s ``ca.crt``."""
    path = (Path(cfg.agent.models_trust) if cfg.agent.models_trust
            else Path(cfg.uplink.tls) / "ca.crt" if cfg.uplink.tls else None)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        log.error("the models' trust chain %s cannot be read (%s): every model will be refused", path, exc.strerror)
        return None


@dataclass(slots=True)
class _Active:
    entry: LocalModel
    runner: LocalModelRunner
    model: VerifiedModel
    installed_ms: int
    guard: ModelGuard | None  # None once out of probation
    errors: int = 0  # inferences that failed


class EdgeModels:
    """The models one agent runs; ``emit`` takes the device events it produces (journaled by the agent)."""

    def __init__(self, *, data_dir: Path, chain_pem: bytes | None, gateway: str,
                 emit: Callable[[DeviceEvent], None], clock: Clock | None = None) -> None:
        self.slots = ModelSlots(data_dir / "models")
        self.chain_pem = chain_pem
        self.gateway = gateway
        self.emit = emit
        self.clock: Clock = clock or SystemClock()
        self.entries: dict[str, LocalModel] = {}
        self.active: dict[str, _Active] = {}
        self.reverts = 0
        self._seen: collections.deque[str] = collections.deque(maxlen=MAX_SEEN_PUSHES)
        self._error_logged = OncePer(60_000)

    # -- verification ---------------------------------------------------------------------------
    def _verify(self, data: bytes, name: str) -> VerifiedModel:
        return verify_edge_bundle(data, chain_pem=self.chain_pem, name=name)

    def _verifier(self, name: str) -> Callable[[bytes], VerifiedModel]:
        return lambda data: self._verify(data, name)

    def _refused(self, name: str, where: str, exc: ModelRefused) -> None:
        log.error("model %s: %s REFUSED (%s): %s", name, where, exc.code, exc.detail)
        self.emit(self._event("model_refused", Severity.CRITICAL, f"model {name}: {where} refused ({exc.code}): "
                              f"{exc.detail}", {"name": name, "file": where, "code": exc.code,
                                                "detail": exc.detail[:1000]}))

    def _event(self, kind: str, severity: Severity, message: str, data: dict[str, Any]) -> DeviceEvent:
        return DeviceEvent(device=self.gateway, ts=self.clock.now_ms(), kind=kind, severity=severity,
                           message=message[:2000], data=data)

    def _load(self, name: str, *, report: bool) -> Installed | None:
        installed, refusals = self.slots.load(name, self._verifier(name))
        if report:
            for refusal in refusals:
                self._report_slot(name, refusal)
        return installed

    def _report_slot(self, name: str, refusal: SlotRefusal) -> None:
        self._refused(name, str(refusal.path), refusal.error)

    # -- configuration --------------------------------------------------------------------------
    def configure(self, entries: list[LocalModel], *, strict: bool) -> list[tuple[str, int]]:
        """Run ``entries``; returns the versions installed from their files (see :meth:`undo`). ``strict`` (a pushed
        configuration): a refused or unloadable model file raises (``ModelRefused`` / ``ConfigError``) and nothing
        changes, on disk or in memory; otherwise (at start) it is reported and the entry runs the version it had,
        if any."""
        plans: list[tuple[LocalModel, _Active, VerifiedModel | None]] = []
        for entry in entries:
            seed = self._seed(entry, strict=strict)
            installed = self._load(entry.name, report=True)
            if seed is not None and (seed.version in self.slots.blocked(entry.name) or (
                    installed is not None and seed.version <= installed.model.version)):
                seed = None  # gone back from, or not newer than the version the agent runs
            candidates = ([Installed(seed, self.clock.now_ms())] if seed is not None else []) + (
                [installed] if installed is not None else [])
            if not candidates:
                log.warning("model %s: no version installed; it runs once the platform pushes one", entry.name)
                continue
            for candidate in candidates:
                try:
                    plans.append((entry, self._activate(entry, candidate), seed if candidate.model is seed else None))
                    break
                except ConfigError as exc:  # signed, but not a model this agent can run (no EdgeLoop metadata)
                    self._refused(entry.name, f"version {candidate.model.version}",
                                  ModelRefused("unloadable", str(exc)))
                    if strict:
                        raise
        done: list[tuple[str, int]] = []
        for entry, _, seed in plans:
            if seed is not None:
                self.slots.install(entry.name, seed, now_ms=self.clock.now_ms())
                log.warning("model %s: version %d installed from %s", entry.name, seed.version, entry.path)
                done.append((entry.name, seed.version))
        self.entries = {e.name: e for e in entries}
        self.active = {entry.name: act for entry, act, _ in plans}
        return done

    def undo(self, installed: list[tuple[str, int]]) -> None:
        """Take back the versions a configuration installed from its files (it was rolled back): each goes back
        to the version before it, without being blocked (pushing that configuration again installs it again)."""
        for name, version in installed:
            current = self._load(name, report=False)
            if current is not None and current.model.version == version:
                self.slots.revert(name, version, block=False)

    def _seed(self, entry: LocalModel, *, strict: bool) -> VerifiedModel | None:
        if entry.path is None:
            return None
        try:
            try:
                data = Path(entry.path).read_bytes()
            except OSError as exc:
                raise ModelRefused("unreadable", f"cannot read {entry.path}: {exc.strerror}") from None
            return self._verify(data, entry.name)
        except ModelRefused as exc:
            self._refused(entry.name, entry.path, exc)
            if strict:
                raise
            return None

    def _activate(self, entry: LocalModel, installed: Installed) -> _Active:
        model = installed.model
        runner = LocalModelRunner(entry, model.artifact, ref=str(model.manifest.ref))
        at = installed.installed_ms if installed.installed_ms is not None else self.clock.now_ms()
        guard = None
        if self.clock.now_ms() - at < entry.probation_h * 3_600_000:
            guard = ModelGuard(self._limits(entry, model))
        return _Active(entry, runner, model, at, guard)

    @staticmethod
    def _limits(entry: LocalModel, model: VerifiedModel) -> GuardLimits:
        return guard_limits(window=entry.guard_windows, max_errors=entry.max_errors, configured=entry.max_alarm_rate,
                            metrics=model.manifest.metrics)

    # -- scoring --------------------------------------------------------------------------------
    def observe(self, device: str, sample: Sample) -> list[Score]:
        """Every model of ``device`` over one sample; a version on probation is watched and reverted on a breach."""
        scores: list[Score] = []
        for name, act in list(self.active.items()):
            if device not in act.entry.devices:
                continue
            if act.guard is not None and self.clock.now_ms() - act.installed_ms >= act.entry.probation_h * 3_600_000:
                act.guard = None  # probation over
            breach: Breach | None = None
            try:
                score = act.runner.observe(device, sample)
            except Exception as exc:  # noqa: BLE001  # any failure of the model is an inference error
                error = f"{type(exc).__name__}: {exc}"
                act.errors += 1
                if self._error_logged.due(name, self.clock.now_ms()):
                    log.error("model %s: inference failed on %s: %s", act.runner.ref, device, error)
                breach = act.guard.failed(error) if act.guard is not None else None
            else:
                if score is None:
                    continue
                if act.guard is not None:
                    breach = act.guard.scored(score.score, score.threshold)
                if math.isfinite(score.score):
                    scores.append(score)
            if breach is not None and act.guard is not None:
                self._revert(name, act, breach, act.guard.limits)
        return scores

    def _revert(self, name: str, act: _Active, breach: Breach, limits: GuardLimits) -> None:
        bad = act.model.version
        self.slots.revert(name, bad)
        self.reverts += 1
        installed = self._load(name, report=True)
        back = installed.model.version if installed is not None else 0
        if installed is not None:
            self._try_activate(name, installed)
        else:
            self.active.pop(name, None)
        what = f"version {back}" if back else "no model (there was no previous version)"
        log.error("model %s: version %d breached its probation guardrail (%s): back to %s by itself", name, bad,
                  breach.describe(), what)
        self.emit(self._event("model_reverted", Severity.WARNING,
                              f"model {name}: version {bad} reverted to {what}: {breach.describe()}",
                              {"name": name, "from_version": bad, "to_version": back, "reason": breach.reason,
                               "alarm_rate": round(breach.alarm_rate, 4), "limit": limits.max_alarm_rate,
                               "limit_source": limits.source, "windows": breach.windows, "alarms": breach.alarms,
                               "errors": breach.errors, "error": breach.last_error}))

    def _try_activate(self, name: str, installed: Installed) -> str:
        """Run ``installed`` for the entry of ``name``; '' or why it does not run."""
        entry = self.entries.get(name)
        if entry is None:
            self.active.pop(name, None)
            return f"no models: entry named {name!r} runs it yet"
        try:
            self.active[name] = self._activate(entry, installed)
        except ConfigError as exc:
            self.active.pop(name, None)
            return str(exc)
        return ""

    # -- pushes ---------------------------------------------------------------------------------
    def apply_push(self, payload: bytes) -> None:
        """Act on one ``ModelPush`` and answer it with a ``model`` event (nothing for a push id seen before)."""
        try:
            push = decode_model_push(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("a model push was refused: not a model push (%s)", exc)
            self.emit(self._event("model", Severity.WARNING, f"a model push was refused: not a model push: {exc}",
                                  {"id": "", "name": "", "action": "", "status": "refused", "version": None,
                                   "reason": f"not a model push: {exc}"[:1000], "running": None}))
            return
        if push.id in self._seen or self.slots.seen_push(push.name, push.id):
            log.info("model push %s seen before: nothing to do", push.id)
            return
        self._seen.append(push.id)
        if push.action == "install":
            self._install(push)
        else:
            self._rollback(push)

    def _answer(self, push: ModelPush, status: str, version: int | None, reason: str = "") -> None:
        running = self.active.get(push.name)
        severity = Severity.INFO if status != "refused" else Severity.WARNING
        words = {"applied": "applied", "refused": "REFUSED", "rolled_back": "rolled back"}[status]
        message = f"model {push.name} {push.action} (push {push.id}) {words}" + (f": {reason}" if reason else "")
        (log.warning if status == "refused" else log.info)("%s", message)
        self.emit(self._event("model", severity, message,
                              {"id": push.id, "name": push.name, "action": push.action, "status": status,
                               "version": version, "reason": reason[:1000],
                               "running": running.model.version if running is not None else None}))

    def _install(self, push: ModelPush) -> None:
        try:
            model = self._verify(push.bundle, push.name)
            LocalModelRunner(LocalModel(name=push.name, devices=["check"]), model.artifact)
        except ModelRefused as exc:
            self._refused(push.name, f"pushed file (push {push.id})", exc)
            self._answer(push, "refused", None, f"{exc.code}: {exc.detail}")
            return
        except ConfigError as exc:
            refusal = ModelRefused("unloadable", str(exc))
            self._refused(push.name, f"pushed file (push {push.id})", refusal)
            self._answer(push, "refused", None, f"unloadable: {exc}")
            return
        current = self._load(push.name, report=False)
        if current is not None and current.model.version == model.version:
            self.slots.remember_push(push.name, push.id)
            self._answer(push, "applied", model.version, "already installed")
            return
        self.slots.install(push.name, model, now_ms=self.clock.now_ms())
        self.slots.remember_push(push.name, push.id)
        why_not = self._try_activate(push.name, Installed(model, self.clock.now_ms()))
        self._answer(push, "applied", model.version, why_not)

    def _rollback(self, push: ModelPush) -> None:
        current = self._load(push.name, report=False)
        if current is not None and current.model.version == push.to_version:
            self.slots.remember_push(push.name, push.id)
            self._answer(push, "rolled_back", push.to_version, f"already on version {push.to_version}")
            return
        previous = self.slots.previous(push.name, self._verifier(push.name))
        if current is None or previous is None or previous.version != push.to_version:
            have = f"previous version here: {previous.version}" if previous is not None else "no previous version here"
            self._answer(push, "refused", push.to_version, f"cannot roll back to version {push.to_version} ({have})")
            return
        self.slots.revert(push.name, current.model.version)
        self.slots.remember_push(push.name, push.id)
        installed = self._load(push.name, report=True)
        why_not = self._try_activate(push.name, installed) if installed is not None else "nothing installed"
        self._answer(push, "rolled_back", push.to_version, why_not)

    # -- status ---------------------------------------------------------------------------------
    def health(self) -> dict[str, EdgeModelHealth]:
        """What the heartbeat says of each model running: its version and how it runs since it started here."""
        out: dict[str, EdgeModelHealth] = {}
        for name, act in self.active.items():
            lat = act.runner.latencies_ms
            out[name] = EdgeModelHealth(
                version=act.model.version, on_probation=act.guard is not None,
                judged=act.guard is None or act.guard.judged, scored=act.runner.scored,
                alarms=act.runner.alarms, errors=act.errors, latencies=len(lat),
                p95_ms=round(float(np.percentile(np.fromiter(lat, dtype=np.float64), 95)), 4) if lat else None)
        return out

    def status(self) -> dict[str, Any]:
        """What runs, for the agent's health: per model what its heartbeat says (:meth:`health`) and when it was
        installed, and how many times a version was reverted."""
        return {name: msgspec.structs.asdict(h) | {"installed_ms": self.active[name].installed_ms}
                for name, h in self.health().items()} | {"reverts": self.reverts}
