"""Which detector version scores each device: the scoring stage's :class:`~edgeloop.scoring.ModelSource`.

- A device runs its profile's **champion** (the registry's alias ``champion`` of ``detector.<profile>``): the one of
  its rollout group's scope (``group:NAME``) if the group has one, else the whole profile's (``*``); without one,
  the built-in online detector (version 0).
- A **campaign** overrides the assignment of its targets (:meth:`Deployment.assign`): in its shadow phase the
  champion pages and the candidate shadows; a target in a canary wave runs the candidate live with the champion in
  shadow (its safety net); at the end the override is lifted (:meth:`Deployment.release`).
- Versions are loaded (and **verified**: signature, signer and artifact hash, by the registry) before they are
  used (:meth:`Deployment.prepare`), so the scoring stage's lookups never wait on disk or the database. A version
  that is refused is not used: its devices keep (or fall back to) what they ran, the refusal is audited by the
  registry, logged here and listed in :attr:`Deployment.refused`.

Fitted detectors are kept once per version as templates; each device gets a copy, which the scoring stage then
warms on the device's stored history (so a version attached mid-stream catches up with the data since its
training window).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping

from edgeloop.assets import DeviceProfile
from edgeloop.errors import EdgeLoopError, ModelRefused
from edgeloop.models.detector_artifact import PlatformDetector, load_detectors
from edgeloop.models.manifest import ModelRef
from edgeloop.models.registry import ModelRegistry
from edgeloop.scoring import Assignment, builtin_ref

__all__ = ["Deployment", "detector_model"]

log = logging.getLogger(__name__)


def detector_model(profile: DeviceProfile | None) -> str:
    """The name of a profile's detector model (``detector.<profile>``)."""
    return f"detector.{profile.name if profile is not None else 'default'}"


class Deployment:
    """Champions per detector model, campaign overrides per device, and the loaded versions' detectors."""

    def __init__(self, *, registry: ModelRegistry | None, scope_of: Callable[[str], str] = lambda _device: "*"
                 ) -> None:
        self.registry = registry
        self.scope_of = scope_of  # device -> the alias scope it follows (``*`` or ``group:NAME``)
        self._champion: dict[tuple[str, str], str] = {}  # (model name, scope) -> champion reference
        self._overrides: dict[str, Assignment] = {}  # device -> a campaign's assignment
        self._loaded: dict[str, Mapping[str, PlatformDetector]] = {}  # reference -> device -> fitted template
        self.refused: dict[str, str] = {}  # reference -> why it was not loaded
        self._pinned: set[str] = set()  # versions an assignment in progress is loading

    # -- the scoring stage's lookups (synchronous, in memory) --------------------------------------------------
    def assignment(self, device: str, profile: DeviceProfile | None) -> Assignment:
        override = self._overrides.get(device)
        if override is not None:
            return override
        model = detector_model(profile)
        scope = self.scope_of(device)
        champion = (self._champion.get((model, scope)) if scope != "*" else None) or self._champion.get((model, "*"))
        return Assignment(champion if champion is not None else builtin_ref(profile))

    def detector(self, ref: str, device: str, channels: tuple[str, ...]) -> PlatformDetector | None:
        """A copy of ``ref``'s fitted detector for ``device``; None (the profile's built-in detector) for version
        0, a version not loaded, a device the version was not trained on, or one whose channels changed since."""
        template = self._loaded.get(ref, {}).get(device)
        if template is None or tuple(template.channels) != channels:
            return None
        return copy.deepcopy(template)

    # -- changes (async: they may load and verify versions) ----------------------------------------------------
    async def refresh(self) -> None:
        """Read every detector model's champions (each scope's) from the registry and load the ones not loaded
        yet."""
        if self.registry is None:
            return
        champions: dict[tuple[str, str], str] = {}
        for alias in await self.registry.aliases():
            if alias.alias == "champion" and alias.name.startswith("detector."):
                key = (alias.name, alias.scope)
                ref = str(ModelRef(alias.name, alias.version))
                if alias.version == 0 or await self.prepare(ref):
                    champions[key] = ref
                elif key in self._champion:  # keep scoring with the last version that loaded
                    champions[key] = self._champion[key]
        self._champion = champions
        self._forget_unused()

    async def prepare(self, ref: str) -> bool:
        """Load and verify ``ref`` (once); False if it is refused or cannot be read."""
        if ref in self._loaded or ref.endswith("@0"):
            return True
        if self.registry is None:
            return False
        try:
            manifest, artifact = await self.registry.load(ref)
            if manifest.kind != "detector":
                raise ModelRefused("bad_manifest", f"{ref} is a {manifest.kind} model, not a detector")
            self._loaded[ref] = load_detectors(artifact)
        except EdgeLoopError as exc:
            self.refused[ref] = str(exc)
            log.error("model %s is not used: %s", ref, exc)
            return False
        self.refused.pop(ref, None)
        return True

    async def assign(self, assignments: Mapping[str, Assignment]) -> None:
        """A campaign's assignment of its targets. Every version in it is loaded and verified first; if one is
        refused, nothing changes and ``ModelRefused`` is raised (the campaign service rolls back)."""
        refs = {r for a in assignments.values() for r in (a.live, a.shadow) if r is not None}
        self._pinned |= refs
        try:
            for ref in sorted(refs):
                if not await self.prepare(ref):
                    raise ModelRefused("not_loaded", f"{ref}: {self.refused.get(ref, 'not loaded')}")
            self._overrides.update(assignments)
        finally:
            self._pinned -= refs

    def release(self, devices: Iterable[str]) -> None:
        """Lift a campaign's overrides: the devices run their profile's champion again."""
        for device in devices:
            self._overrides.pop(device, None)
        self._forget_unused()

    async def promote(self, ref: str, *, by: str, reason: str, scope: str = "*") -> object:
        """Make ``ref`` its model's champion in the registry, in ``scope`` (its alias listeners then refresh this
        deployment)."""
        if self.registry is None:
            raise ModelRefused("not_loaded", f"{ref}: no model registry")
        return await self.registry.promote(ref, by=by, reason=reason, scope=scope)

    def champion(self, model: str, scope: str = "*") -> str:
        """The reference a model's devices of ``scope`` run outside campaigns."""
        return self._champion.get((model, scope)) or self._champion.get((model, "*"), f"{model}@0")

    def _forget_unused(self) -> None:
        used = set(self._champion.values()) | self._pinned
        for a in self._overrides.values():
            used.update(r for r in (a.live, a.shadow) if r is not None)
        for ref in [r for r in self._loaded if r not in used]:
            del self._loaded[ref]
