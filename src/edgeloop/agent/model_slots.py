"""Signed edge models on the gateway's disk: what is verified, and the two slots each model keeps.

**Only signed models load.** :func:`verify_edge_bundle` is the one check: the file is a signed model file
(``.elm``), its signer chains to the agent's trust chain (``uplink.tls``'s ``ca.crt`` or ``agent.models_trust``)
and is a model signer, the artifact is the one signed, and the manifest says it is an ``edge`` model of the
expected name. Anything else raises :class:`~edgeloop.errors.ModelRefused` with a stable code (those of
:func:`edgeloop.models.signing.verify_signed`, and ``unsigned`` for a plain ONNX file, ``wrong_kind``,
``wrong_model``, ``unreadable``, ``unloadable``).

**Slots.** ``DATA_DIR/models/<name>/`` holds ``current.elm`` (the version that runs), ``previous.elm`` (the one
before it, to go back to) and ``state.json`` (when each was installed, the versions the agent went back from and
must not re-install unless told again, the push ids already acted on). Every switch is crash-safe, and every
read verifies again, so a ``kill -9`` at any step leaves a current version that verifies:

* install: the new file is written to ``incoming.tmp`` and fsynced; the current file is hard-linked to
  ``previous.tmp`` and renamed over ``previous.elm``; ``state.json`` is replaced; ``incoming.tmp`` is renamed over
  ``current.elm``; the folder is fsynced. Until that last rename ``current.elm`` is the old version, whole.
* revert (to the previous version): ``state.json`` first marks the current version blocked, then
  ``previous.elm`` is renamed over ``current.elm``. A crash between the two leaves a blocked current, which the
  loader skips for the previous one, finishing the revert.
* load: leftover ``*.tmp`` files are removed; ``current.elm`` is used if it verifies and is not blocked, else
  ``previous.elm`` (renamed over ``current.elm``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edgeloop.errors import ModelRefused
from edgeloop.models.manifest import ModelManifest
from edgeloop.models.signing import read_bundle, verify_signed

__all__ = ["CURRENT", "PREVIOUS", "Installed", "ModelSlots", "SlotRefusal", "SlotState", "VerifiedModel",
           "verify_edge_bundle"]

log = logging.getLogger(__name__)

CURRENT, PREVIOUS, STATE = "current.elm", "previous.elm", "state.json"
_INCOMING, _PREVIOUS_TMP, _STATE_TMP = "incoming.tmp", "previous.tmp", "state.tmp"
MAX_BLOCKED = 32
MAX_PUSH_IDS = 64


@dataclass(frozen=True, slots=True)
class VerifiedModel:
    """A signed model file whose signature, signer, artifact and kind checked out."""

    manifest: ModelManifest
    artifact: bytes  # the ONNX model
    bundle: bytes  # the whole .elm file, as kept in a slot

    @property
    def version(self) -> int:
        return self.manifest.version


def verify_edge_bundle(data: bytes, *, chain_pem: bytes | None, name: str | None = None) -> VerifiedModel:
    """The verified model in ``data`` (a ``.elm`` file), or ``ModelRefused`` saying why not."""
    if chain_pem is None:
        raise ModelRefused("untrusted_signer", "the agent has no trust chain for models: set uplink.tls (its "
                           "ca.crt) or agent.models_trust")
    if not data.startswith(b"PK"):
        raise ModelRefused("unsigned", "not a signed model file (.elm): a plain ONNX model carries no signature; "
                           "export a signed one from the platform")
    signed, artifact = read_bundle(data)
    manifest = verify_signed(signed, artifact, chain_pem=chain_pem)
    if manifest.kind != "edge":
        raise ModelRefused("wrong_kind", f"{manifest.ref} is a {manifest.kind} model, not an edge model")
    if name is not None and manifest.name != name:
        raise ModelRefused("wrong_model", f"the file holds {manifest.ref}, not a version of {name!r}")
    return VerifiedModel(manifest, artifact, data)


class SlotState(msgspec.Struct, kw_only=True):
    installed_ms: dict[int, int] = msgspec.field(default_factory=dict)  # version -> when it was installed here
    blocked: list[int] = msgspec.field(default_factory=list)  # gone back from: not re-installed unless pushed
    push_ids: list[str] = msgspec.field(default_factory=list)  # pushes acted on (idempotency), newest last


@dataclass(frozen=True, slots=True)
class Installed:
    model: VerifiedModel
    installed_ms: int | None  # None: not recorded (a crash before the state was written): probation restarts


@dataclass(frozen=True, slots=True)
class SlotRefusal:
    """A slot file that did not verify (it is skipped; the caller reports it)."""

    path: Path
    error: ModelRefused


Verify = Callable[[bytes], VerifiedModel]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync (0600), replacing whatever was there."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelSlots:
    """The installed versions of every model under ``root`` (``DATA_DIR/models``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / name

    def _ensure(self, name: str) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder(name).mkdir(mode=0o700, exist_ok=True)
        return self.folder(name)

    # -- state ----------------------------------------------------------------------------------
    def state(self, name: str) -> SlotState:
        path = self.folder(name) / STATE
        try:
            return msgspec.json.decode(path.read_bytes(), type=SlotState)
        except FileNotFoundError:
            return SlotState()
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("model %s: %s is unreadable (%s): install times, blocked versions and push ids start afresh",
                      name, path, exc)
            return SlotState()

    def _write_state(self, name: str, state: SlotState) -> None:
        folder = self._ensure(name)
        state.blocked = state.blocked[-MAX_BLOCKED:]
        state.push_ids = state.push_ids[-MAX_PUSH_IDS:]
        _write_file(folder / _STATE_TMP, msgspec.json.encode(state))
        (folder / _STATE_TMP).replace(folder / STATE)
        _fsync_dir(folder)

    def remember_push(self, name: str, push_id: str) -> None:
        state = self.state(name)
        if push_id not in state.push_ids:
            state.push_ids.append(push_id)
            self._write_state(name, state)

    def seen_push(self, name: str, push_id: str) -> bool:
        return push_id in self.state(name).push_ids

    # -- reading --------------------------------------------------------------------------------
    def _read(self, path: Path, verify: Verify) -> VerifiedModel | SlotRefusal | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return SlotRefusal(path, ModelRefused("unreadable", f"cannot read {path}: {exc.strerror}"))
        try:
            return verify(data)
        except ModelRefused as exc:
            return SlotRefusal(path, exc)

    def load(self, name: str, verify: Verify) -> tuple[Installed | None, list[SlotRefusal]]:
        """The version that runs (see the module doc), and the slot files that did not verify."""
        folder = self.folder(name)
        if not folder.is_dir():
            return None, []
        for leftover in (_INCOMING, _PREVIOUS_TMP, _STATE_TMP):  # a switch a crash interrupted
            with contextlib.suppress(FileNotFoundError):
                (folder / leftover).unlink()
        state = self.state(name)
        refusals: list[SlotRefusal] = []
        for slot in (CURRENT, PREVIOUS):
            got = self._read(folder / slot, verify)
            if isinstance(got, SlotRefusal):
                refusals.append(got)
                continue
            if got is None or got.version in state.blocked:
                continue
            if slot == PREVIOUS:  # the current one is missing, refused or blocked: the previous one takes over
                (folder / PREVIOUS).replace(folder / CURRENT)
                _fsync_dir(folder)
                log.warning("model %s: back on version %d (the current file was missing, refused or blocked)",
                            name, got.version)
            return Installed(got, state.installed_ms.get(got.version)), refusals
        return None, refusals

    def previous(self, name: str, verify: Verify) -> VerifiedModel | None:
        got = self._read(self.folder(name) / PREVIOUS, verify)
        return got if isinstance(got, VerifiedModel) else None

    # -- switching ------------------------------------------------------------------------------
    def install(self, name: str, model: VerifiedModel, *, now_ms: int) -> None:
        """``model`` becomes current, the current one previous (crash-safe: see the module doc). Installing is
        being told to run it: the version is no longer blocked."""
        folder = self._ensure(name)
        _write_file(folder / _INCOMING, model.bundle)
        current = folder / CURRENT
        if current.exists():
            with contextlib.suppress(FileNotFoundError):
                (folder / _PREVIOUS_TMP).unlink()
            os.link(current, folder / _PREVIOUS_TMP)
            (folder / _PREVIOUS_TMP).replace(folder / PREVIOUS)
        state = self.state(name)
        kept = {v: ms for v, ms in state.installed_ms.items() if v == self._version_of(current)}
        state.installed_ms = {**kept, model.version: now_ms}
        state.blocked = [v for v in state.blocked if v != model.version]
        self._write_state(name, state)
        (folder / _INCOMING).replace(current)
        _fsync_dir(folder)

    def revert(self, name: str, bad_version: int, *, block: bool = True) -> None:
        """Back from ``bad_version`` (the current one) to the previous version, or to none if there is none;
        ``bad_version`` stays blocked unless ``block`` is False (crash-safe: see the module doc)."""
        folder = self._ensure(name)
        state = self.state(name)
        if block and bad_version not in state.blocked:
            state.blocked.append(bad_version)
            self._write_state(name, state)
        if (folder / PREVIOUS).exists():
            (folder / PREVIOUS).replace(folder / CURRENT)
        else:
            with contextlib.suppress(FileNotFoundError):
                (folder / CURRENT).unlink()
        _fsync_dir(folder)

    def blocked(self, name: str) -> list[int]:
        return list(self.state(name).blocked)

    @staticmethod
    def _version_of(path: Path) -> int | None:
        """The version a slot file says it holds (unverified: only to keep its install time)."""
        try:
            signed, _ = read_bundle(path.read_bytes())
        except (OSError, ModelRefused):
            return None
        if signed is None:
            return None
        try:
            return msgspec.json.decode(signed.manifest_bytes, type=ModelManifest).version
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            return None
