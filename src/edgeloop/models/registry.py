"""The model registry: signed, immutable model versions, their artifacts, and the aliases that say which version
serves (``champion``) and which is on trial (``challenger``), per model and scope.

- A version is registered once and never changes: its manifest (``models/manifest.py``) is signed with the
  platform's model-signing key (``models/signing.py``) and stored beside its signature and signer; its artifact is
  a write-once file named by its SHA-256 (``models/artifacts.py``). The version number is chosen inside the insert's
  transaction, so concurrent registrations of one name get different numbers.
- :meth:`ModelRegistry.load` (and everything built on it: export, promote, rollback) **always** verifies the
  signature, the signer and the artifact's hash; a refusal raises :class:`~edgeloop.errors.ModelRefused` with its
  code and writes an audit record ``model.refused``.
- Aliases change only through :meth:`ModelRegistry.set_alias` (and ``promote`` / ``rollback``), each change kept in
  the alias history with who and why; rollback walks that history back to the champion before the current one.
- Version 0 of a detector model (``detector.<profile>@0``) is the built-in online detector: no artifact, no row;
  it is the implicit champion until a version is promoted, and what rolling back the first promotion returns to.

Without a PKI (``signer`` None) the registry reads what is stored but registers, imports and changes nothing: each
write raises a ``ConfigError`` saying the registry needs the platform's PKI.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from edgeloop import __version__
from edgeloop.assets import GROUP_NAME
from edgeloop.clock import Clock
from edgeloop.errors import ConfigError, ConflictError, ModelRefused, NotFoundError
from edgeloop.models.artifacts import ArtifactStore
from edgeloop.models.manifest import (
    FORMATS,
    KINDS,
    NAME_PATTERN,
    DataWindow,
    ModelKind,
    ModelManifest,
    ModelRef,
    Trigger,
    decode_manifest,
)
from edgeloop.models.signing import (
    MAX_ARTIFACT_BYTES,
    ModelSigner,
    SignedModel,
    read_bundle,
    verify_signed,
    write_bundle,
)
from edgeloop.store import Store
from edgeloop.store.base import ANY, AuditRecord, ModelAlias, ModelAliasEvent, ModelVersionRecord

__all__ = ["ALIASES", "BUILTIN_DETECTOR", "LineageEntry", "ModelRegistry", "code_version"]

log = logging.getLogger(__name__)

ALIASES: Final = ("champion", "challenger")
BUILTIN_DETECTOR: Final = 0  # version 0 of a detector model: the built-in online detector (no artifact)
_NAME = re.compile(NAME_PATTERN)
_SCOPE = re.compile(rf"^(\*|group:{GROUP_NAME})$")
_MAX_LINEAGE = 1000  # a parent chain longer than this is cut (and incomplete)
AuditFn = Callable[[AuditRecord], Awaitable[None]]


class LineageEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One link of a version's lineage: where it came from. ``found`` False: the reference is not stored here (an
    imported model's parent); ``verified``: its signature and signer checked out; ``builtin``: version 0 of a
    detector model, the root of a trained line."""

    ref: str
    found: bool
    verified: bool = False
    builtin: bool = False
    kind: str = ""
    created_ms: int | None = None
    created_by: str = ""
    code_version: str = ""
    trigger: Trigger | None = None
    parent: str | None = None
    data: DataWindow | None = None
    label_ids: list[int] = msgspec.field(default_factory=list)
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    problem: str = ""  # why it is not verified, or what it lacks


@functools.cache
def code_version() -> str:
    """EdgeLoop's version, with ``git describe`` of the checkout it runs from when there is one."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True,
                              timeout=5, check=False, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return __version__
    described = done.stdout.strip()
    return f"{__version__}+{described}" if done.returncode == 0 and described else __version__


def _needs_pki() -> ConfigError:
    return ConfigError("the model registry needs the platform's PKI to sign and verify models: start the platform "
                       "with a PKI (--pki DIR)")


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class ModelRegistry:
    """Model versions and aliases over the store and the artifact directory (see the module doc).

    ``revoked``: the CA's revoked serials (read at each verification, so a revocation applies at once);
    ``audit``: where audit records go (default: the store's audit log)."""

    def __init__(self, *, store: Store, artifacts: ArtifactStore, signer: ModelSigner | None,
                 chain_pem: bytes | None, revoked: Callable[[], frozenset[int]] = frozenset, clock: Clock,
                 audit: AuditFn | None = None, code: str | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        self.signer = signer
        self.chain_pem = chain_pem
        self._revoked = revoked
        self.clock = clock
        self._audit_fn: AuditFn = audit if audit is not None else store.audit
        self._code = code
        self.alias_listeners: list[Callable[[ModelAliasEvent], Awaitable[None]]] = []  # told after every change

    @property
    def writable(self) -> bool:
        """Whether this registry can sign (it has the platform's model-signing key)."""
        return self.signer is not None and self.chain_pem is not None

    # -- registering --------------------------------------------------------------------------------------------
    async def register(self, kind: str, name: str, artifact: bytes, *, by: str, trigger: Trigger,
                       parent: ModelRef | str | None = None, profile: str | None = None,
                       data: DataWindow | None = None, label_ids: Sequence[int] = (),
                       features: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                       card: dict[str, Any] | None = None, source: str = "") -> ModelManifest:
        """Sign and store ``artifact`` as ``name``'s next version (artifact first, then the row); audited
        ``model.register``. ConfigError for a bad kind or name, ConflictError for a name of another kind,
        NotFoundError for an unknown parent."""
        signer = self._usable_signer()
        if kind not in KINDS:
            raise ConfigError(f"model kind {kind!r} must be one of {', '.join(KINDS)}")
        if not _NAME.match(name):
            raise ConfigError(f"model name {name!r} must match {NAME_PATTERN}")
        if len(artifact) > MAX_ARTIFACT_BYTES:
            raise ConfigError(f"the artifact is {len(artifact)} bytes (limit {MAX_ARTIFACT_BYTES})")
        await self._check_kind(name, kind)
        if kind == "detector" and profile is None and name.startswith("detector."):
            profile = name.removeprefix("detector.")  # the naming convention: detector.<profile>
        parent_ref = await self._parent(parent)
        sha = await self.artifacts.put(artifact)
        created = self.clock.now_ms()
        code = self._code if self._code is not None else code_version()

        def build(version: int) -> ModelVersionRecord:
            manifest = ModelManifest(
                name=name, kind=cast(ModelKind, kind), version=version, format=FORMATS[kind], artifact_sha256=sha,
                artifact_size=len(artifact), created_ms=created, created_by=by, code_version=code, trigger=trigger,
                parent=parent_ref, profile=profile, data=data, label_ids=list(label_ids), features=features or {},
                metrics=metrics or {}, card=card or {})
            return _row(manifest, signer.sign(manifest))

        rec = await self.store.add_model_version(name, build)
        manifest = decode_manifest(rec.manifest.encode())
        await self._audit("model.register", str(manifest.ref), by, source,
                          f"{kind}, {len(artifact)} bytes, sha256 {sha[:12]}…, trigger {trigger.kind}"
                          + (f", parent {parent_ref}" if parent_ref else ""))
        return manifest

    async def import_bundle(self, blob: bytes, *, by: str, source: str = "") -> ModelManifest:
        """Store a signed model file (``.elm``) signed by our CA's model-signing key, exactly as signed (its name
        and version are the manifest's). The same file again is a no-op; another file under a stored version is a
        ConflictError; a refused file is audited ``model.refused``."""
        if self.chain_pem is None:
            raise _needs_pki()
        try:
            signed, artifact = read_bundle(blob)
            manifest = self._verify(signed, artifact)
        except ModelRefused as exc:
            await self._refused("import", exc, by, source)
            raise
        assert signed is not None  # verified
        existing = await self.store.get_model_version(manifest.name, manifest.version)
        if existing is not None:
            if existing.manifest.encode() == signed.manifest_bytes and existing.signature == signed.signature:
                return manifest
            raise ConflictError(f"{manifest.ref} is stored already, with another manifest")
        await self._check_kind(manifest.name, manifest.kind)
        await self.artifacts.put(artifact)
        await self.store.put_model_version(_row(manifest, signed))
        await self._audit("model.import", str(manifest.ref), by, source,
                          f"{manifest.kind}, {manifest.artifact_size} bytes, sha256 {manifest.artifact_sha256[:12]}…, "
                          f"created {manifest.created_ms} by {manifest.created_by}")
        return manifest

    # -- reading ------------------------------------------------------------------------------------------------
    async def versions(self, name: str | None = None, kind: str | None = None) -> list[ModelManifest]:
        """Stored versions as recorded (by name, then version); :meth:`load` is what verifies them."""
        return [decode_manifest(r.manifest.encode())
                for r in await self.store.list_model_versions(name=name, kind=kind)]

    async def aliases(self, name: str | None = None) -> list[ModelAlias]:
        return await self.store.list_model_aliases(name=name)

    async def alias_history(self, name: str, *, alias: str | None = None, scope: str | None = None
                            ) -> list[ModelAliasEvent]:
        """Every change of ``name``'s aliases, oldest first."""
        return await self.store.model_alias_history(name, alias=alias, scope=scope)

    async def get(self, ref: ModelRef | str) -> ModelManifest:
        """The stored manifest of ``ref`` as recorded (NotFoundError if there is none)."""
        return decode_manifest((await self._record(_ref(ref))).manifest.encode())

    async def load(self, ref: ModelRef | str, *, by: str = "platform", source: str = "") -> tuple[ModelManifest,
                                                                                                  bytes]:
        """The verified manifest and artifact of ``ref``: signature, signer (our CA, a signer, not revoked) and the
        artifact's hash, every time. A refusal is audited ``model.refused`` (with its code) and raised."""
        manifest, artifact, _ = await self._load(_ref(ref), by, source)
        return manifest, artifact

    async def export(self, ref: ModelRef | str, *, by: str = "platform", source: str = "") -> bytes:
        """``ref`` as a signed model file (``.elm``), verified first; audited ``model.export``."""
        parsed = _ref(ref)
        manifest, artifact, signed = await self._load(parsed, by, source)
        await self._audit("model.export", str(parsed), by, source, f"{manifest.artifact_size} bytes")
        return write_bundle(signed, artifact)

    async def lineage(self, ref: ModelRef | str) -> list[LineageEntry]:
        """``ref`` and its parents up to the root (a version without parent, or the built-in detector), each with
        its trigger, training data window, labels and code version; signatures are checked (not the artifacts)."""
        entries: list[LineageEntry] = []
        seen: set[str] = set()
        current: str | None = str(_ref(ref))
        while current is not None and current not in seen and len(entries) < _MAX_LINEAGE:
            seen.add(current)
            parsed = ModelRef.parse(current)
            if parsed.version == BUILTIN_DETECTOR:
                entries.append(LineageEntry(ref=current, found=parsed.name.startswith("detector."), builtin=True,
                                            verified=parsed.name.startswith("detector."), kind="detector",
                                            problem="" if parsed.name.startswith("detector.") else
                                            "version 0 exists only for detector models"))
                break
            rec = await self.store.get_model_version(parsed.name, parsed.version)
            if rec is None:
                entries.append(LineageEntry(ref=current, found=False, problem="not stored in this registry"))
                break
            entries.append(self._entry(rec))
            current = entries[-1].parent
        return entries

    async def lineage_complete(self, ref: ModelRef | str) -> bool:
        """Whether the lineage reaches its root with every link stored and signed by us, each naming its trigger
        and code version, and each trained version (trigger drift or labels) its data window."""
        entries = await self.lineage(ref)
        last = entries[-1] if entries else None
        return last is not None and (last.builtin or last.parent is None) and all(e.found and e.verified and (
            e.builtin or (e.trigger is not None and e.code_version and (e.trigger.kind == "person" or e.data))
        ) for e in entries)

    async def resolve(self, name: str, alias: str, scope: str = "*") -> ModelRef | None:
        """The version ``alias`` points at in ``scope`` (falling back to the whole profile, ``*``); None if unset
        (for a detector's champion: the built-in detector, version 0)."""
        found = {a.scope: a.version for a in await self.store.list_model_aliases(name=name) if a.alias == alias}
        version = found.get(scope, found.get("*"))
        return None if version is None else ModelRef(name, version)

    async def champion(self, name: str, scope: str = "*") -> ModelRef | None:
        """The version serving ``name`` in ``scope``: its champion, else for a detector model the built-in
        detector (``detector.<profile>@0``, what every alert of it records), else None."""
        found = await self.resolve(name, "champion", scope)
        if found is None and name.startswith("detector."):
            return ModelRef(name, BUILTIN_DETECTOR)
        return found

    # -- aliases ------------------------------------------------------------------------------------------------
    async def set_alias(self, name: str, alias: str, version: int | None, *, scope: str = "*", by: str,
                        reason: str, source: str = "") -> ModelAliasEvent:
        """Point ``alias`` at ``version`` (None: remove a challenger); the version is verified first (signature
        and artifact) unless it is the built-in detector. Audited ``model.alias``."""
        return await self._set(name, alias, version, scope=scope, by=by, reason=reason, source=source,
                               action="set" if version is not None else "clear")

    async def promote(self, ref: ModelRef | str, *, by: str, reason: str, scope: str = "*",
                      source: str = "") -> ModelAliasEvent:
        """Make ``ref`` the champion of its model (in ``scope``)."""
        parsed = _ref(ref)
        return await self._set(parsed.name, "champion", parsed.version, scope=scope, by=by, reason=reason,
                               source=source)

    async def rollback(self, name: str, *, by: str, reason: str, scope: str = "*",
                       source: str = "") -> ModelAliasEvent:
        """Make the champion before the current one champion again (from the alias history: each promotion
        stacks, each rollback unstacks; a detector model's first champion rolls back to the built-in detector; a
        group's first champion is removed, so the group follows the whole profile's again). ConflictError when
        there is no earlier champion."""
        if not self.writable:
            raise _needs_pki()
        history = await self.store.model_alias_history(name, alias="champion", scope=scope)
        stack = champion_stack(name, history, scope=scope)
        if not stack or (len(stack) < 2 and scope == "*"):
            raise ConflictError(f"{name} has no earlier champion to roll back to"
                                + (f" in scope {scope}" if scope != "*" else ""))
        return await self._set(name, "champion", stack[-2] if len(stack) > 1 else None, scope=scope, by=by,
                               reason=reason, source=source, action="rollback", expect=stack[-1])

    # -- inside -------------------------------------------------------------------------------------------------
    async def _set(self, name: str, alias: str, version: int | None, *, scope: str, by: str, reason: str,
                   source: str, action: str = "set", expect: object = ANY) -> ModelAliasEvent:
        if not self.writable:
            raise _needs_pki()
        if alias not in ALIASES:
            raise ConfigError(f"alias {alias!r} must be one of {', '.join(ALIASES)}")
        if not _SCOPE.match(scope):
            raise ConfigError(f"scope {scope!r} must be * (the whole profile) or group:NAME")
        if not _NAME.match(name):
            raise ConfigError(f"model name {name!r} must match {NAME_PATTERN}")
        if version is None and alias == "champion" and (scope == "*" or action != "rollback"):
            raise ConfigError("a champion is replaced (promote) or rolled back, never removed")
        if version == BUILTIN_DETECTOR and not name.startswith("detector."):
            raise NotFoundError("model version", f"{name}@0")
        if version is not None and version != BUILTIN_DETECTOR:
            await self._load(ModelRef(name, version), by, source)  # a refused version never serves
        event = await self.store.set_model_alias(name=name, alias=alias, scope=scope, version=version,
                                                 at_ms=self.clock.now_ms(), by=by, reason=reason, action=action,
                                                 expect=expect)
        await self._audit("model.alias", name, by, source,
                          f"{action} {alias} [{scope}]: {_text(event.previous)} -> {_text(event.version)}; {reason}")
        for listener in self.alias_listeners:  # the platform's deployment scores with the new champion at once
            await listener(event)
        return event

    def _usable_signer(self) -> ModelSigner:
        """The signer, unless it is missing (no PKI) or revoked (what it signed would never load)."""
        signer = self.signer
        if signer is None or self.chain_pem is None:
            raise _needs_pki()
        if _serial(signer.cert_pem) in self._revoked():
            raise ConfigError("the platform's model-signing certificate is revoked: restart the platform to issue "
                              "a new one (PKI_DIR/signers)")
        return signer

    async def _record(self, ref: ModelRef) -> ModelVersionRecord:
        rec = await self.store.get_model_version(ref.name, ref.version)
        if rec is None:
            raise NotFoundError("model version", str(ref))
        return rec

    async def _load(self, ref: ModelRef, by: str, source: str) -> tuple[ModelManifest, bytes, SignedModel]:
        if ref.version == BUILTIN_DETECTOR:
            raise NotFoundError("model artifact", f"{ref} (the built-in detector has none)")
        rec = await self._record(ref)
        if self.chain_pem is None:
            raise _needs_pki()
        signed = SignedModel(rec.manifest.encode(), rec.signature, rec.signer.encode())
        try:
            manifest = self._verify(signed, None)
            if manifest.ref != ref:
                raise ModelRefused("bad_manifest", f"the row of {ref} holds the signed manifest of {manifest.ref}")
            artifact = await self.artifacts.get(manifest.artifact_sha256)
            manifest = self._verify(signed, artifact)
        except ModelRefused as exc:
            await self._refused(str(ref), exc, by, source)
            raise
        return manifest, artifact, signed

    def _verify(self, signed: SignedModel | None, artifact: bytes | None) -> ModelManifest:
        """:func:`verify_signed` now; a signer whose certificate has expired (or was not valid yet on this clock)
        is accepted when it was valid when it signed (the signed ``created_ms``): an old version stays loadable
        after the signing certificate is renewed."""
        assert self.chain_pem is not None
        revoked = self._revoked()
        try:
            return verify_signed(signed, artifact, chain_pem=self.chain_pem, revoked=revoked)
        except ModelRefused as exc:
            if exc.code != "untrusted_signer" or signed is None or "not valid at" not in exc.detail:
                raise
            try:
                at = _utc(decode_manifest(signed.manifest_bytes).created_ms)
                return verify_signed(signed, artifact, chain_pem=self.chain_pem, revoked=revoked, now=at)
            except (ModelRefused, ValueError, OverflowError, OSError):
                raise exc from None

    def _entry(self, rec: ModelVersionRecord) -> LineageEntry:
        signed = SignedModel(rec.manifest.encode(), rec.signature, rec.signer.encode())
        problem = ""
        try:
            m = self._verify(signed, None) if self.chain_pem is not None else decode_manifest(signed.manifest_bytes)
            verified = self.chain_pem is not None
            if not verified:
                problem = "not verified: no PKI"
        except ModelRefused as exc:
            try:
                m = decode_manifest(signed.manifest_bytes)
            except ModelRefused:
                return LineageEntry(ref=f"{rec.name}@{rec.version}", found=True, problem=f"{exc.code}: {exc.detail}")
            verified, problem = False, f"{exc.code}: {exc.detail}"
        return LineageEntry(ref=str(m.ref), found=True, verified=verified, kind=m.kind, created_ms=m.created_ms,
                            created_by=m.created_by, code_version=m.code_version, trigger=m.trigger, parent=m.parent,
                            data=m.data, label_ids=list(m.label_ids), metrics=dict(m.metrics), problem=problem)

    async def _check_kind(self, name: str, kind: str) -> None:
        stored = await self.store.list_model_versions(name=name)
        if stored and stored[0].kind != kind:
            raise ConflictError(f"model {name!r} is a {stored[0].kind} model, not {kind}")

    async def _parent(self, parent: ModelRef | str | None) -> str | None:
        if parent is None:
            return None
        ref = _ref(parent)
        if ref.version == BUILTIN_DETECTOR and ref.name.startswith("detector."):
            return str(ref)
        await self._record(ref)
        return str(ref)

    async def _refused(self, target: str, exc: ModelRefused, by: str, source: str) -> None:
        log.warning("model %s refused (%s): %s", target, exc.code, exc.detail)
        await self._audit("model.refused", target, by, source, f"{exc.code}: {exc.detail}", outcome="refused")

    async def _audit(self, action: str, target: str, by: str, source: str, detail: str, *,
                     outcome: str = "ok") -> None:
        await self._audit_fn(AuditRecord(ts_ms=self.clock.now_ms(), actor=by, action=action, target=target,
                                         outcome=outcome, detail=detail, source=source))


def champion_stack(name: str, history: Sequence[ModelAliasEvent], *, scope: str = "*") -> list[int]:
    """The champions of one scope as a stack, from its alias history (oldest first): a promotion pushes (unless it
    is already on top), a rollback pops; a detector model's whole-profile scope starts from the built-in detector
    (version 0), a group's from nothing (it follows the whole profile)."""
    stack: list[int] = [BUILTIN_DETECTOR] if name.startswith("detector.") and scope == "*" else []
    for e in history:
        if e.version is None:
            stack.clear()
            continue
        if e.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != e.version:
            stack.append(e.version)
    return stack


@functools.lru_cache(maxsize=8)
def _serial(cert_pem: bytes) -> int:
    from cryptography import x509

    return int(x509.load_pem_x509_certificate(cert_pem).serial_number)


def _row(manifest: ModelManifest, signed: SignedModel) -> ModelVersionRecord:
    return ModelVersionRecord(name=manifest.name, version=manifest.version, kind=manifest.kind,
                              profile=manifest.profile, format=manifest.format, sha256=manifest.artifact_sha256,
                              size=manifest.artifact_size, manifest=signed.manifest_bytes.decode(),
                              signature=signed.signature, signer=signed.signer_pem.decode(),
                              created_ms=manifest.created_ms, created_by=manifest.created_by)


def _ref(ref: ModelRef | str) -> ModelRef:
    if isinstance(ref, ModelRef):
        return ref
    try:
        return ModelRef.parse(ref)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _text(version: int | None) -> str:
    return "unset" if version is None else f"v{version}"
