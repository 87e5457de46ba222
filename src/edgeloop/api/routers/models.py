"""The model registry: model versions (signed, immutable), their lineage and aliases; import, export, promotion and
rollback (see ``docs/models.md``).

Models are shared by every tenant (a detector model serves a device profile), so reading them takes a viewer and
changing them (or downloading an artifact) a platform administrator. A tenant's viewer sees a version's training
devices only where they are their tenant's.
"""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, raw_body, reply
from edgeloop.api.security import ROLE, Admin, Source, Svc, Viewer
from edgeloop.api.services import Services
from edgeloop.api.visibility import shared_models_admin
from edgeloop.errors import ConfigError, NotFoundError
from edgeloop.identity.auth import Principal, Role
from edgeloop.models.manifest import NAME_PATTERN, ModelManifest, ModelRef, Trigger
from edgeloop.models.registry import BUILTIN_DETECTOR, LineageEntry, ModelRegistry
from edgeloop.store.base import ModelAlias, ModelAliasEvent

__all__ = ["MAX_MODEL_BODY", "router"]

router = APIRouter(prefix="/api/v1/models", tags=["models"], dependencies=[ROLE[Role.VIEWER]])
MAX_MODEL_BODY = 64 * 1024 * 1024  # an uploaded signed model file or ONNX model
_ACTION_BODY = 16 * 1024
ModelName = Annotated[str, FastApiPath(pattern=NAME_PATTERN)]
Version = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]
_ELM = "application/vnd.edgeloop.model+zip"


class PromoteBody(msgspec.Struct, forbid_unknown_fields=True):
    """Make ``version`` the champion (``scope``: ``*`` the whole profile, or ``group:NAME``)."""

    version: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    scope: Annotated[str, msgspec.Meta(max_length=80)] = "*"


class RollbackBody(msgspec.Struct, forbid_unknown_fields=True):
    """Make the champion before the current one champion again."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    scope: Annotated[str, msgspec.Meta(max_length=80)] = "*"


class VersionHeadline(msgspec.Struct, kw_only=True):
    """One version in a list: when, by whom, why (its trigger), from what (its parent), its headline figures, and
    the aliases pointing at it (``champion``, ``challenger@group:north``)."""

    version: int
    format: str
    created_ms: int
    created_by: str
    trigger: Trigger
    parent: str | None
    artifact_size: int
    artifact_sha256: str
    metrics: dict[str, float]
    aliases: list[str]


class ModelSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model: its kind and profile, the version serving the whole profile (``champion``; 0 for a detector:
    the built-in detector), its versions (newest first) and aliases; ``history``: every alias change (one model)."""

    name: str
    kind: str
    profile: str | None
    champion: int | None
    versions: list[VersionHeadline]
    aliases: list[ModelAlias]
    history: list[ModelAliasEvent] | None = None


class ModelVersionView(msgspec.Struct, kw_only=True):
    """One version: its signed manifest (with the model card) and the aliases pointing at it."""

    ref: str
    manifest: ModelManifest
    aliases: list[str]


class LineageView(msgspec.Struct, kw_only=True):
    """A version's lineage, itself first, then its parents to the root; ``complete``: every link stored and
    signed by us, each with its trigger and code version, each trained one with its data window."""

    ref: str
    complete: bool
    entries: list[LineageEntry]


class SignedManifestView(msgspec.Struct, kw_only=True):
    """A version's signed manifest without its artifact: the exact bytes signed (``manifest``, base64), the DER
    signature (base64) and the signer's certificate (PEM), to verify elsewhere."""

    ref: str
    manifest: str
    signature: str
    signer: str
    artifact_sha256: str
    artifact_size: int


class AliasChanged(msgspec.Struct, kw_only=True):
    """What a promotion or rollback changed."""

    name: str
    alias: str
    scope: str
    action: str
    version: int | None
    previous: int | None
    set_by: str
    reason: str


def _models(svc: Services) -> ModelRegistry:
    if svc.models is None:
        raise HTTPException(503, "the model registry is not enabled on this platform")
    return svc.models


def _alias_text(a: ModelAlias) -> str:
    return a.alias if a.scope == "*" else f"{a.alias}@{a.scope}"


def _visible(svc: Services, who: Principal, m: ModelManifest) -> ModelManifest:
    """``m`` with the training devices ``who`` may not see left out."""
    if who.tenant is None or m.data is None:
        return m
    devices = svc.registry.registry.devices
    seen = [d for d in m.data.devices if d in devices and who.sees(devices[d].tenant)]
    return msgspec.structs.replace(m, data=msgspec.structs.replace(m.data, devices=seen))


async def _summaries(models: ModelRegistry, name: str | None = None) -> list[ModelSummary]:
    manifests = await models.versions(name)
    aliases = await models.aliases(name)
    by_name: dict[str, list[ModelManifest]] = defaultdict(list)
    for m in manifests:
        by_name[m.name].append(m)
    named: dict[str, list[ModelAlias]] = defaultdict(list)
    for a in aliases:
        named[a.name].append(a)
    out = []
    for model in sorted(set(by_name) | set(named)):
        versions, its_aliases = by_name.get(model, []), named.get(model, [])
        at: dict[int, list[str]] = defaultdict(list)
        for a in its_aliases:
            at[a.version].append(_alias_text(a))
        champion = next((a.version for a in its_aliases if a.alias == "champion" and a.scope == "*"),
                        BUILTIN_DETECTOR if model.startswith("detector.") else None)
        first = versions[0] if versions else None
        out.append(ModelSummary(
            name=model, kind=first.kind if first else "detector", profile=first.profile if first else None,
            champion=champion, aliases=its_aliases, versions=[VersionHeadline(
                version=m.version, format=m.format, created_ms=m.created_ms, created_by=m.created_by,
                trigger=m.trigger, parent=m.parent, artifact_size=m.artifact_size, artifact_sha256=m.artifact_sha256,
                metrics=m.metrics, aliases=at.get(m.version, [])) for m in reversed(versions)]))
    return out


@router.get("", responses=reply(list[ModelSummary]))
async def list_models(svc: Svc, who: Viewer) -> Response:
    """Every model with its versions (newest first, each with its trigger, parent, headline figures and aliases)
    and its aliases."""
    return json_response(await _summaries(_models(svc)))


@router.get("/{name}", responses=reply(ModelSummary))
async def get_model(name: ModelName, svc: Svc, who: Viewer) -> Response:
    """One model, with the history of its aliases (every promotion and rollback: when, by whom, why)."""
    models = _models(svc)
    found = await _summaries(models, name)
    if not found:
        raise NotFoundError("model", name)
    return json_response(msgspec.structs.replace(found[0], history=await models.alias_history(name)))


@router.get("/{name}/versions/{version}", responses=reply(ModelVersionView))
async def get_version(name: ModelName, version: Version, svc: Svc, who: Viewer) -> Response:
    """One version's manifest as signed: lineage fields, training data window, labels used, model card."""
    models = _models(svc)
    manifest = await models.get(ModelRef(name, version))
    aliases = [_alias_text(a) for a in await models.aliases(name) if a.version == version]
    return json_response(ModelVersionView(ref=str(manifest.ref), manifest=_visible(svc, who, manifest),
                                          aliases=aliases))


@router.get("/{name}/versions/{version}/lineage", responses=reply(LineageView))
async def get_lineage(name: ModelName, version: Version, svc: Svc, who: Viewer) -> Response:
    """Where the version came from: itself and its parents to the root, each with its trigger, data window,
    labels and code version, and whether its signature checks out."""
    models = _models(svc)
    ref = ModelRef(name, version)
    await models.get(ref)  # 404 for an unknown version
    entries = await models.lineage(ref)
    if who.tenant is not None:
        devices = svc.registry.registry.devices
        entries = [e if e.data is None else msgspec.structs.replace(e, data=msgspec.structs.replace(
            e.data, devices=[d for d in e.data.devices if d in devices and who.sees(devices[d].tenant)]))
            for e in entries]
    return json_response(LineageView(ref=str(ref), complete=await models.lineage_complete(ref), entries=entries))


@router.get("/{name}/versions/{version}/artifact", responses=reply(SignedManifestView, media={
    _ELM: {"schema": {"type": "string", "format": "binary"}}}))
async def get_artifact(name: ModelName, version: Version, svc: Svc, src: Source, who: Admin,
                       format: Literal["elm", "json"] = "elm") -> Response:
    """The version as a signed model file (``.elm``: manifest, signature, signer, artifact), verified first (a
    refused version answers 422 with its code); ``format=json``: the signed manifest without the artifact."""
    shared_models_admin(who)
    models = _models(svc)
    ref = ModelRef(name, version)
    blob = await models.export(ref, by=who.name, source=src)
    if format == "elm":
        return Response(blob, media_type=_ELM,
                        headers={"Content-Disposition": f'attachment; filename="{name}-{version}.elm"'})
    from edgeloop.models.signing import read_bundle

    signed, _ = read_bundle(blob)
    assert signed is not None
    manifest = await models.get(ref)
    return json_response(SignedManifestView(
        ref=str(ref), manifest=base64.b64encode(signed.manifest_bytes).decode(),
        signature=base64.b64encode(signed.signature).decode(), signer=signed.signer_pem.decode(),
        artifact_sha256=manifest.artifact_sha256, artifact_size=manifest.artifact_size))


_UPLOAD = {"requestBody": {"required": True, "content": {
    _ELM: {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/import", status_code=201, openapi_extra=_UPLOAD, responses=reply(ModelManifest, 201))
async def import_model(svc: Svc, src: Source, who: Admin, raw: Annotated[bytes, Depends(raw_body(MAX_MODEL_BODY))],
                       kind: Annotated[Literal["edge", "rul"] | None, Query()] = None,
                       name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
                       parent: Annotated[str | None, Query(max_length=100)] = None) -> Response:
    """Upload a signed model file (``.elm``, signed by this platform's CA: kept as signed), or a raw ONNX model
    with ``kind`` (edge or rul) and ``name``, registered here as the name's next version and signed. A refused
    file answers 422 with its ``code`` (``untrusted_signer``, ``tampered``, ``bad_bundle`` ...). Detector models
    are never uploaded raw: they come from training, or signed."""
    shared_models_admin(who)
    models = _models(svc)
    if (kind is None) != (name is None):
        raise HTTPException(422, "a raw ONNX model needs both kind and name; a signed model file (.elm) neither")
    if kind is None or name is None:
        manifest = await models.import_bundle(raw, by=who.name, source=src)
    else:
        await asyncio.to_thread(_check_onnx, raw)
        manifest = await models.register(kind, name, raw, by=who.name, source=src, parent=parent,
                                          trigger=Trigger(kind="person", by=who.name, ref="upload"))
    return json_response(manifest, 201)


def _check_onnx(raw: bytes) -> None:
    """A raw upload must be a valid ONNX model before it is signed (the agent would refuse it only later)."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        onnx.checker.check_model(onnx.load_from_string(raw))
    except (DecodeError, onnx.checker.ValidationError, ValueError) as exc:
        raise ConfigError(f"not an ONNX model: {exc}") from None


def _changed(e: ModelAliasEvent) -> AliasChanged:
    return AliasChanged(name=e.name, alias=e.alias, scope=e.scope, action=e.action, version=e.version,
                        previous=e.previous, set_by=e.set_by, reason=e.reason)


@router.post("/{name}/promote", openapi_extra=body_doc(PromoteBody), responses=reply(AliasChanged))
async def promote(name: ModelName, svc: Svc, src: Source, who: Admin,
                  req: Annotated[PromoteBody, Depends(body(PromoteBody, _ACTION_BODY))]) -> Response:
    """Make a version the champion (verified first: a refused version never serves); audited ``model.alias``."""
    shared_models_admin(who)
    event = await _models(svc).promote(ModelRef(name, req.version), by=who.name, reason=req.reason,
                                       scope=req.scope, source=src)
    return json_response(_changed(event))


@router.post("/{name}/rollback", openapi_extra=body_doc(RollbackBody), responses=reply(AliasChanged))
async def rollback(name: ModelName, svc: Svc, src: Source, who: Admin,
                   req: Annotated[RollbackBody, Depends(body(RollbackBody, _ACTION_BODY))]) -> Response:
    """Make the previous champion champion again (409 when there is none); audited ``model.alias``."""
    shared_models_admin(who)
    event = await _models(svc).rollback(name, by=who.name, reason=req.reason, scope=req.scope, source=src)
    return json_response(_changed(event))
