"""What a model version is: its manifest (the one record of where it came from and how good it is) and its
reference (``name@version``).

The manifest is signed, not the artifact alone: it binds the artifact's SHA-256 and size to the model's name,
version, lineage (parent, trigger, training data window and hash, labels used, code version) and evaluation. Its
canonical bytes are ``msgspec.json.encode`` with sorted keys, so a verifier recomputes exactly what was signed.

>>> ref = ModelRef.parse("detector.pump@3")
>>> ref.name, ref.version, str(ref)
('detector.pump', 3, 'detector.pump@3')
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec

from edgeloop.errors import ModelRefused

__all__ = ["FORMATS", "KINDS", "NAME_PATTERN", "DataWindow", "ModelManifest", "ModelRef", "Trigger",
           "canonical", "decode_manifest", "sha256_hex"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
ModelKind = Literal["detector", "rul", "edge"]
KINDS: tuple[str, ...] = ("detector", "rul", "edge")
FORMATS: dict[str, str] = {"detector": "edgeloop-detector-v1", "rul": "onnx", "edge": "onnx"}
MAX_VERSION = 2**31 - 1


class ModelRef(msgspec.Struct, frozen=True):
    """``name@version``; version 0 of a detector model is the built-in online detector (no artifact)."""

    name: str
    version: int

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, sep, version = text.partition("@")
        if not sep or not _NAME.match(name) or not version.isdigit() or int(version) > MAX_VERSION:
            raise ValueError(f"not a model reference (name@version): {text!r}")
        return cls(name, int(version))

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    """Why a version exists: a drift event, a batch of labels, or a person (``ref``: the event or job id)."""

    kind: Literal["drift", "labels", "person"]
    by: str
    ref: str = ""


class DataWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The training data: its time window, devices, rows and a content hash of exactly the rows used."""

    window_start_ms: int
    window_end_ms: int
    devices: list[str]
    rows: int
    data_sha256: str


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One immutable model version, as signed."""

    name: str
    kind: ModelKind
    version: int
    format: str
    artifact_sha256: str
    artifact_size: int
    created_ms: int
    created_by: str
    code_version: str
    trigger: Trigger
    parent: str | None = None  # the reference this version was trained to replace (lineage)
    profile: str | None = None  # a detector model's device profile
    data: DataWindow | None = None  # None: not trained here (an imported ONNX model)
    label_ids: list[int] = msgspec.field(default_factory=list)
    features: dict[str, Any] = msgspec.field(default_factory=dict)  # channels, window, feature schema
    metrics: dict[str, float] = msgspec.field(default_factory=dict)  # headline figures of the model card
    card: dict[str, Any] = msgspec.field(default_factory=dict)  # the full model card

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"model name {self.name!r} must match {NAME_PATTERN}")
        if not 1 <= self.version <= MAX_VERSION:
            raise ValueError("a stored model version is >= 1 (0 is the built-in detector)")
        if len(self.artifact_sha256) != 64 or self.artifact_size < 0:
            raise ValueError("artifact_sha256 must be a hex SHA-256 and artifact_size >= 0")

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)


def canonical(manifest: ModelManifest) -> bytes:
    """The bytes that are signed: JSON with sorted keys (deterministic for equal manifests)."""
    return msgspec.json.encode(manifest, order="sorted")


def decode_manifest(data: bytes) -> ModelManifest:
    """A manifest from its canonical bytes; anything else is refused (``bad_manifest``)."""
    try:
        return msgspec.json.decode(data, type=ModelManifest)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ModelRefused("bad_manifest", str(exc)) from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
