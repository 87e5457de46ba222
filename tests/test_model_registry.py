"""The model registry: signed immutable versions stored on both backends, artifacts that cannot be swapped on disk
or in the database without the load refusing them (and the audit log saying so), aliases with their history,
promotion and rollback, lineage; its API routes and its command line."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeloop.api import create_app
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError, ConflictError, ModelRefused, NotFoundError
from edgeloop.identity.auth import ANONYMOUS_ADMIN, Role
from edgeloop.identity.pki import CertificateAuthority
from edgeloop.models.artifacts import ArtifactStore
from edgeloop.models.manifest import DataWindow, ModelManifest, ModelRef, Trigger, canonical, sha256_hex
from edgeloop.models.registry import ModelRegistry, champion_stack
from edgeloop.models.signing import ModelSigner, read_bundle, write_bundle
from edgeloop.store import Store
from edgeloop.store.base import ModelAliasEvent

T0 = 1_767_225_600_000
ONNX = b"\x08\x07onnx-model-bytes" * 64
DETECTOR = b"detector-state-pickle" * 32
PERSON = Trigger(kind="person", by="ana")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("pki") / "pki")


def make_registry(store: Store, ca: CertificateAuthority | None, root: Path, *,
                  revoked: frozenset[int] = frozenset()) -> ModelRegistry:
    return ModelRegistry(store=store, artifacts=ArtifactStore(root=root / "models" / "artifacts"),
                         signer=ModelSigner.ensure(ca) if ca is not None else None,
                         chain_pem=ca.chain_pem if ca is not None else None, revoked=lambda: revoked,
                         clock=ManualClock(T0), code="test")


@pytest.fixture
def models(store: Store, ca: CertificateAuthority, tmp_path: Path) -> ModelRegistry:
    return make_registry(store, ca, tmp_path)


async def refusals(store: Store) -> list[str]:
    return [f"{a.target} {a.detail.split(':')[0]}" for a in await store.list_audit(action="model.refused")]


# -- artifacts -------------------------------------------------------------------------------------------------


async def test_artifacts_are_content_addressed_write_once_and_private(tmp_path: Path) -> None:
    arts = ArtifactStore(root=tmp_path / "artifacts")
    sha = await arts.put(ONNX)
    assert sha == sha256_hex(ONNX) and await arts.get(sha) == ONNX
    path = arts.path(sha)
    assert (path.stat().st_mode & 0o777, arts.root.stat().st_mode & 0o777) == (0o600, 0o700)
    before = path.stat().st_mtime_ns
    assert await arts.put(ONNX) == sha and path.stat().st_mtime_ns == before, "the same content: nothing written"
    assert [p.name for p in arts.root.iterdir()] == [sha], "no temporary file left behind"
    path.chmod(0o600)
    path.write_bytes(ONNX[:-1] + b"!")
    with pytest.raises(ModelRefused) as err:
        await arts.get(sha)
    assert err.value.code == "tampered"
    with pytest.raises(ModelRefused) as missing:
        await arts.get("0" * 64)
    assert missing.value.code == "tampered"
    with pytest.raises(ValueError, match="SHA-256"):
        arts.path("../../etc/passwd")


# -- register, list, load --------------------------------------------------------------------------------------


async def test_register_list_load_round_trip(models: ModelRegistry, store: Store) -> None:
    window = DataWindow(window_start_ms=T0 - 86_400_000, window_end_ms=T0, devices=["d1", "d2"], rows=172_800,
                        data_sha256="ab" * 32)
    first = await models.register("detector", "detector.pump", DETECTOR, by="trainer", profile="pump",
                                  trigger=Trigger(kind="drift", by="monitor", ref="drift-7"), parent="detector.pump@0",
                                  data=window, label_ids=[3, 4], metrics={"false_alarms_per_asset_day": 0.2},
                                  card={"held_out": {"start_ms": T0 - 3_600_000}})
    assert (first.ref, first.format, first.artifact_sha256, first.created_ms) == (
        ModelRef("detector.pump", 1), "edgeloop-detector-v1", sha256_hex(DETECTOR), T0)
    edge = await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    assert edge.ref == ModelRef("edge.pump", 1), "versions count per name"

    listed = await models.versions()
    assert [str(m.ref) for m in listed] == ["detector.pump@1", "edge.pump@1"]
    assert [str(m.ref) for m in await models.versions(kind="edge")] == ["edge.pump@1"]
    manifest, artifact = await models.load("detector.pump@1")
    assert manifest == first and artifact == DETECTOR
    assert (manifest.data, manifest.label_ids, manifest.code_version) == (window, [3, 4], "test")
    assert await models.get(ModelRef("edge.pump", 1)) == edge
    audit = [(a.action, a.target) for a in await store.list_audit()]
    assert ("model.register", "detector.pump@1") in audit and ("model.register", "edge.pump@1") in audit
    with pytest.raises(NotFoundError):
        await models.load("edge.pump@2")


async def test_versions_are_immutable_and_numbered_per_name(models: ModelRegistry, store: Store) -> None:
    one = await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    two = await models.register("edge", "edge.pump", ONNX, by="bo", trigger=PERSON)
    assert (one.version, two.version) == (1, 2)
    r1, r2 = await store.get_model_version("edge.pump", 1), await store.get_model_version("edge.pump", 2)
    assert r1 is not None and r2 is not None and r1.manifest != r2.manifest and r1.sha256 == r2.sha256
    assert not [m for m in dir(store) if "model_version" in m and m.startswith(("update", "delete", "set"))]
    with pytest.raises(ConflictError):
        await store.put_model_version(r1)
    with pytest.raises(ConflictError, match="is a edge model"):
        await models.register("rul", "edge.pump", ONNX, by="ana", trigger=PERSON)
    for bad_kind, bad_name in (("tree", "edge.x"), ("edge", "Edge Pump"), ("edge", "")):
        with pytest.raises(ConfigError):
            await models.register(bad_kind, bad_name, ONNX, by="ana", trigger=PERSON)
    with pytest.raises(NotFoundError):
        await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON, parent="edge.pump@9")


@pytest.mark.postgres
async def test_concurrent_registrations_get_different_versions_on_postgres(pg_dsn: str, ca: CertificateAuthority,
                                                                           tmp_path: Path) -> None:
    from edgeloop.store import open_store

    async with open_store(pg_dsn) as first, open_store(pg_dsn) as second:  # two platforms, one database
        a, b = make_registry(first, ca, tmp_path / "a"), make_registry(second, ca, tmp_path / "b")
        made = await asyncio.gather(*(reg.register("edge", "edge.pump", ONNX + bytes([k]), by=f"p{k}",
                                                   trigger=PERSON) for k, reg in enumerate([a, b] * 5)))
        assert sorted(m.version for m in made) == list(range(1, 11))
        assert [m.version for m in await a.versions("edge.pump")] == list(range(1, 11))


# -- refusals --------------------------------------------------------------------------------------------------


async def test_an_artifact_changed_on_disk_is_refused_and_audited(models: ModelRegistry, store: Store) -> None:
    m = await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    path = models.artifacts.path(m.artifact_sha256)
    bad = bytearray(path.read_bytes())
    bad[100] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(ModelRefused) as err:
        await models.load("edge.pump@1", by="agent-sync")
    assert err.value.code == "tampered"
    [record] = await store.list_audit(action="model.refused")
    assert (record.target, record.actor, record.outcome) == ("edge.pump@1", "agent-sync", "refused")
    assert record.detail.startswith("tampered:")
    with pytest.raises(ModelRefused):
        await models.export("edge.pump@1")
    with pytest.raises(ModelRefused):
        await models.promote("edge.pump@1", by="ana", reason="ship it")
    assert await models.resolve("edge.pump", "champion") is None, "a refused version never serves"


async def test_a_manifest_changed_in_the_database_breaks_the_signature(models: ModelRegistry, store: Store) -> None:
    m = await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    forged = canonical(ModelManifest(**{**{f: getattr(m, f) for f in m.__struct_fields__}, "created_by": "mallory"}))
    await store.driver.execute("UPDATE model_versions SET manifest=? WHERE name=? AND version=?",
                               (forged.decode(), "edge.pump", 1))
    with pytest.raises(ModelRefused) as err:
        await models.load("edge.pump@1")
    assert err.value.code == "bad_signature"
    assert await refusals(store) == ["edge.pump@1 bad_signature"]


async def test_a_row_holding_another_versions_signed_manifest_is_refused(models: ModelRegistry, store: Store) -> None:
    await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    await models.register("edge", "edge.pump", ONNX + b"v2", by="ana", trigger=PERSON)
    one = await store.get_model_version("edge.pump", 1)
    assert one is not None
    await store.driver.execute("UPDATE model_versions SET manifest=?, signature=? WHERE name=? AND version=?",
                               (one.manifest, one.signature, "edge.pump", 2))  # an old version passed off as new
    with pytest.raises(ModelRefused) as err:
        await models.load("edge.pump@2")
    assert err.value.code == "bad_manifest"


async def test_a_revoked_signer_stops_every_load(store: Store, ca: CertificateAuthority, tmp_path: Path) -> None:
    models = make_registry(store, ca, tmp_path)
    await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(ModelSigner.ensure(ca).cert_pem).serial_number
    revoked = make_registry(store, ca, tmp_path, revoked=frozenset({serial}))
    with pytest.raises(ModelRefused) as err:
        await revoked.load("edge.pump@1")
    assert err.value.code == "revoked_signer"
    with pytest.raises(ConfigError, match="model-signing certificate is revoked"):
        await revoked.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)


# -- import and export -----------------------------------------------------------------------------------------


async def test_export_then_import_elsewhere_keeps_the_version_as_signed(models: ModelRegistry,
                                                                        ca: CertificateAuthority,
                                                                        tmp_path: Path) -> None:
    m = await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    blob = await models.export("edge.pump@1", by="ana")
    signed, artifact = read_bundle(blob)
    assert signed is not None and artifact == ONNX and signed.manifest_bytes == canonical(m)
    from edgeloop.store import open_store

    async with open_store(f"sqlite:///{tmp_path / 'other.db'}") as other_store:
        other = make_registry(other_store, ca, tmp_path / "other")
        assert await other.import_bundle(blob, by="bo") == m
        assert await other.import_bundle(blob, by="bo") == m, "the same file again: a no-op"
        assert (await other.load("edge.pump@1"))[1] == ONNX
        assert [a.action for a in await other_store.list_audit()] == ["model.import"]
        nxt = await other.register("edge", "edge.pump", ONNX, by="bo", trigger=PERSON, parent="edge.pump@1")
        assert nxt.version == 2


async def test_import_of_a_model_signed_by_another_ca_is_refused(models: ModelRegistry, store: Store,
                                                                tmp_path: Path) -> None:
    other_ca = CertificateAuthority.init(tmp_path / "other-pki", name="Other")
    theirs = make_registry(store, other_ca, tmp_path / "theirs")
    manifest = ModelManifest(name="edge.pump", kind="edge", version=1, format="onnx", artifact_sha256=sha256_hex(ONNX),
                             artifact_size=len(ONNX), created_ms=T0, created_by="eve", code_version="x",
                             trigger=PERSON)
    assert theirs.signer is not None
    blob = write_bundle(theirs.signer.sign(manifest), ONNX)
    with pytest.raises(ModelRefused) as err:
        await models.import_bundle(blob, by="ana", source="10.0.0.9")
    assert err.value.code == "untrusted_signer"
    [record] = await store.list_audit(action="model.refused")
    assert (record.target, record.source, record.detail.split(":")[0]) == ("import", "10.0.0.9", "untrusted_signer")
    assert await models.versions() == [], "nothing stored"
    with pytest.raises(ModelRefused) as garbage:
        await models.import_bundle(b"not a zip", by="ana")
    assert garbage.value.code == "bad_bundle"


# -- aliases, promotion, rollback ------------------------------------------------------------------------------


async def test_promote_and_rollback_walk_the_alias_history(models: ModelRegistry, store: Store) -> None:
    for _ in range(3):
        await models.register("detector", "detector.pump", DETECTOR, by="trainer", trigger=PERSON)
    assert await models.resolve("detector.pump", "champion") is None, "unset: the built-in detector serves"
    assert await models.champion("detector.pump") == ModelRef("detector.pump", 0)
    assert await models.champion("edge.pump") is None
    assert (await models.get("detector.pump@1")).profile == "pump", "from the name's convention"
    with pytest.raises(ConflictError, match="no earlier champion"):
        await models.rollback("detector.pump", by="ana", reason="nothing to go back to")
    await models.promote("detector.pump@1", by="ana", reason="campaign 1 passed")
    await models.promote("detector.pump@2", by="ana", reason="campaign 2 passed")
    await models.promote("detector.pump@3", by="ana", reason="campaign 3 passed")
    await models.set_alias("detector.pump", "champion", 1, scope="group:north", by="bo", reason="pinned")
    assert await models.resolve("detector.pump", "champion") == ModelRef("detector.pump", 3)
    assert await models.resolve("detector.pump", "champion", "group:north") == ModelRef("detector.pump", 1)
    assert await models.resolve("detector.pump", "champion", "group:south") == ModelRef("detector.pump", 3)
    assert await models.champion("detector.pump", "group:north") == ModelRef("detector.pump", 1)

    back = await models.rollback("detector.pump", by="ana", reason="false alarms on line 2")
    assert (back.action, back.previous, back.version, back.set_by) == ("rollback", 3, 2, "ana")
    assert (await models.rollback("detector.pump", by="ana", reason="again")).version == 1
    assert (await models.rollback("detector.pump", by="ana", reason="and again")).version == 0, "the built-in"
    assert await models.resolve("detector.pump", "champion") == ModelRef("detector.pump", 0)
    with pytest.raises(ConflictError):
        await models.rollback("detector.pump", by="ana", reason="nothing left")
    assert await models.resolve("detector.pump", "champion", "group:north") == ModelRef("detector.pump", 1), \
        "another scope is untouched"
    history = await models.alias_history("detector.pump", alias="champion", scope="*")
    assert [(e.action, e.previous, e.version) for e in history] == [
        ("set", None, 1), ("set", 1, 2), ("set", 2, 3), ("rollback", 3, 2), ("rollback", 2, 1), ("rollback", 1, 0)]
    assert len([a for a in await store.list_audit(action="model.alias")]) == 7


async def test_challenger_aliases_and_their_refusals(models: ModelRegistry) -> None:
    await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    await models.set_alias("edge.pump", "challenger", 1, by="ana", reason="shadow")
    assert await models.resolve("edge.pump", "challenger") == ModelRef("edge.pump", 1)
    await models.set_alias("edge.pump", "challenger", None, by="ana", reason="campaign over")
    assert await models.resolve("edge.pump", "challenger") is None
    history = await models.alias_history("edge.pump", alias="challenger")
    assert [(e.action, e.previous, e.version) for e in history] == [("set", None, 1), ("clear", 1, None)]
    for alias, version, scope, error in (("winner", 1, "*", ConfigError), ("champion", 1, "north", ConfigError),
                                         ("champion", None, "*", ConfigError), ("champion", 2, "*", NotFoundError),
                                         ("champion", 0, "*", NotFoundError)):
        with pytest.raises(error):
            await models.set_alias("edge.pump", alias, version, scope=scope, by="ana", reason="x")
    with pytest.raises(ConflictError, match="no earlier champion"):
        await models.rollback("edge.pump", by="ana", reason="never promoted")


async def test_a_rollback_decided_on_stale_history_is_refused(store: Store) -> None:
    await store.set_model_alias(name="m", alias="champion", scope="*", version=1, at_ms=1, by="a", reason="")
    with pytest.raises(ConflictError, match="changed meanwhile"):
        await store.set_model_alias(name="m", alias="champion", scope="*", version=0, at_ms=2, by="a", reason="",
                                    action="rollback", expect=2)
    assert [a.version for a in await store.list_model_aliases(name="m")] == [1]


async def test_two_rollbacks_at_once_go_back_one_step_not_two(models: ModelRegistry, store: Store,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two operators roll back at the same moment, each having read the same history: one step back, not two."""
    for version in (1, 2, 3):
        await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
        await models.promote(f"edge.pump@{version}", by="ana", reason="r")
    real, readers, both_read = store.model_alias_history, [], asyncio.Event()

    async def history(*args: Any, **kw: Any) -> list[ModelAliasEvent]:
        got = await real(*args, **kw)
        readers.append(1)
        if len(readers) == 2:
            both_read.set()
        await asyncio.wait_for(both_read.wait(), 30)  # both decide on the same history
        return got

    monkeypatch.setattr(store, "model_alias_history", history)
    done = await asyncio.gather(*(models.rollback("edge.pump", by=who, reason="alarm storm") for who in ("a", "b")),
                                return_exceptions=True)
    assert sorted(type(d).__name__ for d in done) == ["ConflictError", "ModelAliasEvent"], done
    assert await models.resolve("edge.pump", "champion") == ModelRef("edge.pump", 2)


def test_the_champion_stack_pushes_promotions_and_pops_rollbacks() -> None:
    def ev(action: str, version: int | None) -> ModelAliasEvent:
        return ModelAliasEvent(name="m", alias="champion", scope="*", action=action, version=version, previous=None,
                               ts=0, set_by="a", reason="")

    assert champion_stack("edge.x", [ev("set", 1), ev("set", 1), ev("set", 2)]) == [1, 2], "a repeat is no push"
    assert champion_stack("detector.x", [ev("set", 1), ev("set", 2), ev("rollback", 1)]) == [0, 1]
    assert champion_stack("edge.x", [ev("set", 1), ev("rollback", 5)]) == [5], "a rollback outside the stack"


# -- lineage ---------------------------------------------------------------------------------------------------


async def test_lineage_walks_parents_to_the_built_in_detector(models: ModelRegistry, store: Store) -> None:
    window = DataWindow(window_start_ms=T0 - 10, window_end_ms=T0, devices=["d1"], rows=10, data_sha256="cd" * 32)
    await models.register("detector", "detector.pump", DETECTOR, by="trainer", parent="detector.pump@0",
                          trigger=Trigger(kind="drift", by="monitor", ref="drift-1"), data=window, label_ids=[1])
    await models.register("detector", "detector.pump", DETECTOR + b"2", by="trainer", parent="detector.pump@1",
                          trigger=Trigger(kind="labels", by="policy", ref="job-2"), data=window, label_ids=[1, 2, 5])
    chain = await models.lineage("detector.pump@2")
    assert [(e.ref, e.found, e.verified, e.builtin) for e in chain] == [
        ("detector.pump@2", True, True, False), ("detector.pump@1", True, True, False),
        ("detector.pump@0", True, True, True)]
    assert (chain[0].trigger, chain[0].label_ids, chain[0].data, chain[0].code_version) == (
        Trigger(kind="labels", by="policy", ref="job-2"), [1, 2, 5], window, "test")
    assert await models.lineage_complete("detector.pump@2")

    # a trained version without its data window is not a complete lineage; neither is one whose parent is unknown
    await models.register("detector", "detector.pump", DETECTOR, by="t", parent="detector.pump@2",
                          trigger=Trigger(kind="labels", by="policy"))
    assert not await models.lineage_complete("detector.pump@3")
    edge = make_registry(store, None, Path("/nonexistent"))
    assert (await edge.lineage("detector.pump@1"))[0].problem == "not verified: no PKI"


async def test_a_lineage_broken_by_a_forged_parent_is_incomplete(models: ModelRegistry, store: Store) -> None:
    await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
    await models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON, parent="edge.pump@1")
    assert await models.lineage_complete("edge.pump@2")
    await store.driver.execute("UPDATE model_versions SET signature=? WHERE name='edge.pump' AND version=1",
                               (b"\x30\x06\x02\x01\x01\x02\x01\x01",))
    chain = await models.lineage("edge.pump@2")
    assert chain[1].verified is False and chain[1].problem.startswith("bad_signature")
    assert not await models.lineage_complete("edge.pump@2")


# -- without a PKI ---------------------------------------------------------------------------------------------


async def test_without_a_pki_reads_work_and_writes_say_what_is_missing(store: Store, tmp_path: Path) -> None:
    models = make_registry(store, None, tmp_path)
    assert await models.versions() == [] and await models.resolve("detector.pump", "champion") is None
    for write in (models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON),
                  models.promote("edge.pump@1", by="ana", reason="x"),
                  models.rollback("edge.pump", by="ana", reason="x"),
                  models.import_bundle(b"", by="ana")):
        with pytest.raises(ConfigError, match="needs the platform's PKI"):
            await write


# -- the API ---------------------------------------------------------------------------------------------------


def tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "edge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


@dataclasses.dataclass
class ModelApi:
    client: httpx.AsyncClient
    models: ModelRegistry
    store: Store
    services: object


async def model_api(tmp_path: Path, ca: CertificateAuthority | None, *, auth: bool = False
                    ) -> AsyncIterator[ModelApi]:
    from edgeloop.store import open_store
    from tests.test_routes import services

    async with open_store(f"sqlite:///{tmp_path / 'edgeloop.db'}") as store:
        svc, _ = await services(store, ManualClock(T0), auth=auth)
        models = make_registry(store, ca, tmp_path)
        svc = dataclasses.replace(svc, models=models)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(svc)),
                                     base_url="http://test") as client:
            yield ModelApi(client, models, store, svc)


@pytest.fixture
async def mapi(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[ModelApi]:
    async for api in model_api(tmp_path, ca):
        yield api


async def test_api_upload_promote_show_lineage_export(mapi: ModelApi) -> None:
    c = mapi.client
    onnx_model = tiny_onnx()
    up = await c.post("/api/v1/models/import?kind=edge&name=edge.pump", content=onnx_model,
                      headers={"Content-Type": "application/octet-stream"})
    assert up.status_code == 201, up.text
    assert (up.json()["name"], up.json()["version"], up.json()["trigger"]) == (
        "edge.pump", 1, {"kind": "person", "by": "anonymous", "ref": "upload"})
    [model] = (await c.get("/api/v1/models")).json()
    assert (model["name"], model["kind"], model["champion"], [v["version"] for v in model["versions"]]) == (
        "edge.pump", "edge", None, [1])
    assert "history" not in model, "the alias history is on the model's own page"

    promoted = await c.post("/api/v1/models/edge.pump/promote", json={"version": 1, "reason": "bench passed"})
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["version"], promoted.json()["previous"]) == (1, None)
    shown = (await c.get("/api/v1/models/edge.pump")).json()
    assert shown["champion"] == 1 and shown["versions"][0]["aliases"] == ["champion"]
    assert [(h["action"], h["version"], h["reason"]) for h in shown["history"]] == [("set", 1, "bench passed")]
    version = (await c.get("/api/v1/models/edge.pump/versions/1")).json()
    assert (version["ref"], version["aliases"], version["manifest"]["artifact_size"]) == (
        "edge.pump@1", ["champion"], len(onnx_model))
    lineage = (await c.get("/api/v1/models/edge.pump/versions/1/lineage")).json()
    assert (lineage["complete"], [e["ref"] for e in lineage["entries"]]) == (True, ["edge.pump@1"])

    elm = await c.get("/api/v1/models/edge.pump/versions/1/artifact")
    assert elm.status_code == 200 and elm.headers["content-type"] == "application/vnd.edgeloop.model+zip"
    signed, artifact = read_bundle(elm.content)
    assert signed is not None and artifact == onnx_model
    as_json = (await c.get("/api/v1/models/edge.pump/versions/1/artifact?format=json")).json()
    assert (as_json["artifact_size"], as_json["signer"]) == (len(onnx_model), signed.signer_pem.decode())
    again = await c.post("/api/v1/models/import", content=elm.content)
    assert again.status_code == 201 and again.json()["version"] == 1, "the same signed file: kept as it is"
    second = await c.post("/api/v1/models/import?kind=edge&name=edge.pump&parent=edge.pump@1", content=onnx_model)
    assert (second.json()["version"], second.json()["parent"]) == (2, "edge.pump@1")
    await c.post("/api/v1/models/edge.pump/promote", json={"version": 2, "reason": "v2"})
    back = await c.post("/api/v1/models/edge.pump/rollback", json={"reason": "latency on gw-3"})
    assert (back.status_code, back.json()["version"], back.json()["previous"]) == (200, 1, 2)
    assert [a.action for a in await mapi.store.list_audit()].count("model.alias") == 3


async def test_api_errors(mapi: ModelApi, tmp_path: Path) -> None:
    c = mapi.client
    garbage = await c.post("/api/v1/models/import?kind=edge&name=edge.pump", content=b"not onnx")
    assert garbage.status_code == 422 and "not an ONNX model" in garbage.json()["detail"]
    half = await c.post("/api/v1/models/import?kind=edge", content=tiny_onnx())
    assert half.status_code == 422
    raw_detector = await c.post("/api/v1/models/import?kind=detector&name=detector.pump", content=b"pickle")
    assert raw_detector.status_code == 422, "a detector (a pickle) is never uploaded raw"
    assert (await c.post("/api/v1/models/import", content=b"not a zip")).json()["code"] == "bad_bundle"

    other = CertificateAuthority.init(tmp_path / "other-pki", name="Other")
    foreign = make_registry(mapi.store, other, tmp_path / "foreign")
    manifest = ModelManifest(name="edge.pump", kind="edge", version=1, format="onnx", artifact_sha256=sha256_hex(ONNX),
                             artifact_size=len(ONNX), created_ms=T0, created_by="eve", code_version="x",
                             trigger=PERSON)
    assert foreign.signer is not None
    refused = await c.post("/api/v1/models/import", content=write_bundle(foreign.signer.sign(manifest), ONNX))
    assert (refused.status_code, refused.json()["code"]) == (422, "untrusted_signer")

    assert (await c.get("/api/v1/models/edge.pump")).status_code == 404
    assert (await c.get("/api/v1/models/edge.pump/versions/1")).status_code == 404
    assert (await c.get("/api/v1/models/Not%20A%20Name")).status_code == 422
    await c.post("/api/v1/models/import?kind=edge&name=edge.pump", content=tiny_onnx())
    nothing = await c.post("/api/v1/models/edge.pump/rollback", json={"reason": "x"})
    assert nothing.status_code == 409 and "no earlier champion" in nothing.json()["detail"]
    assert (await c.post("/api/v1/models/edge.pump/promote", json={"version": 1})).status_code == 422, "a reason"
    m = await mapi.models.get("edge.pump@1")
    mapi.models.artifacts.path(m.artifact_sha256).write_bytes(b"swapped")
    tampered = await c.get("/api/v1/models/edge.pump/versions/1/artifact")
    assert (tampered.status_code, tampered.json()["code"]) == (422, "tampered")
    promote = await c.post("/api/v1/models/edge.pump/promote", json={"version": 1, "reason": "x"})
    assert (promote.status_code, promote.json()["code"]) == (422, "tampered")


async def test_api_roles_and_tenants(tmp_path: Path, ca: CertificateAuthority) -> None:
    async for api in model_api(tmp_path, ca, auth=True):
        access = api.services.access  # type: ignore[attr-defined]
        for user, role, tenant in (("tv", Role.VIEWER, "acme"), ("ta", Role.ADMIN, "acme"),
                                   ("pv", Role.VIEWER, None)):
            await access.create_user(username=user, password="a long enough password", role=role, tenant=tenant,
                                     by=ANONYMOUS_ADMIN, source="test")
        tokens = {u: (await access.login(u, "a long enough password", source="t"))[0] for u in ("tv", "ta", "pv")}
        await api.models.register("detector", "detector.p", DETECTOR, by="trainer", trigger=PERSON, profile="p",
                                  data=DataWindow(window_start_ms=0, window_end_ms=1, devices=["d0", "other-t-d9"],
                                                  rows=2, data_sha256="00" * 32))

        def auth(user: str, tokens: dict[str, str] = tokens) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[user]}"}

        seen = (await api.client.get("/api/v1/models/detector.p/versions/1", headers=auth("tv"))).json()
        assert seen["manifest"]["data"]["devices"] == ["d0"], "another tenant's devices are left out"
        [model] = (await api.client.get("/api/v1/models", headers=auth("tv"))).json()
        assert model["champion"] == 0, "a detector model without a champion runs the built-in detector"
        for user, status in (("tv", 403), ("ta", 403), ("pv", 403)):
            promote = await api.client.post("/api/v1/models/detector.p/promote", headers=auth(user),
                                            json={"version": 1, "reason": "x"})
            assert promote.status_code == status, (user, promote.text)
            elm = await api.client.get("/api/v1/models/detector.p/versions/1/artifact", headers=auth(user))
            assert elm.status_code == status
        assert "platform administrators" in (await api.client.post(
            "/api/v1/models/detector.p/rollback", headers=auth("ta"), json={"reason": "x"})).json()["detail"]


async def test_api_without_a_registry_or_a_pki(tmp_path: Path) -> None:
    async for api in model_api(tmp_path, None):
        assert (await api.client.get("/api/v1/models")).json() == []
        refused = await api.client.post("/api/v1/models/import?kind=edge&name=edge.x", content=tiny_onnx())
        assert refused.status_code == 422 and "needs the platform's PKI" in refused.json()["detail"]
        app = create_app(dataclasses.replace(api.services, models=None))  # type: ignore[type-var]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.get("/api/v1/models")).status_code == 503


# -- the command line against a running platform with a PKI ----------------------------------------------------


async def test_cli_import_list_show_promote_rollback_lineage_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner, Result

    from edgeloop.app import Platform, PlatformConfig
    from edgeloop.cli import app
    from tests.support import free_port

    runner = CliRunner()
    onnx_file = tmp_path / "pump.onnx"
    onnx_file.write_bytes(tiny_onnx())
    cfg = PlatformConfig(data_dir=tmp_path / "data", mqtt_port=free_port(), http_port=free_port(),
                         pki_dir=tmp_path / "pki", create_pki=True)
    async with Platform(cfg) as platform:
        url = platform.http_url
        assert url is not None

        async def run(*args: str) -> Result:  # the CLI blocks on HTTP; the server runs on this loop
            return await asyncio.to_thread(runner.invoke, app, [*args, "--url", url], catch_exceptions=False)

        for _ in range(2):
            imported = await run("models", "import", str(onnx_file), "--kind", "edge", "--name", "edge.pump")
            assert imported.exit_code == 0, imported.output
        assert "imported edge.pump@2 (edge" in imported.stdout
        [model] = json.loads((await run("models", "list", "--json")).stdout)
        assert (model["name"], [v["version"] for v in model["versions"]]) == ("edge.pump", [2, 1])
        shown = await run("models", "show", "edge.pump@1")
        assert shown.exit_code == 0 and "trigger   person by anonymous (upload)" in shown.stdout, shown.stdout

        for version in (1, 2):
            promoted = await run("models", "promote", f"edge.pump@{version}", "--reason", f"bench {version}")
            assert promoted.exit_code == 0, promoted.output
        assert "edge.pump champion [*]: v1 -> v2" in promoted.stdout
        back = await run("models", "rollback", "edge.pump", "--reason", "latency")
        assert "rolled back: v2 -> v1" in back.stdout, back.output
        again = await run("models", "rollback", "edge.pump", "--reason", "again")
        said = " ".join(again.stderr.split())
        assert again.exit_code == 1 and "409" in said and "no earlier champion" in said
        assert await platform.models.resolve("edge.pump", "champion") == ModelRef("edge.pump", 1)

        lineage = json.loads((await run("models", "lineage", "edge.pump@2", "--json")).stdout)
        assert lineage["complete"] is True
        out_file = tmp_path / "pump.elm"
        exported = await run("models", "export", "edge.pump@1", "--out", str(out_file))
        assert exported.exit_code == 0, exported.output
        signed, artifact = read_bundle(out_file.read_bytes())
        assert artifact == onnx_file.read_bytes() and platform.ca is not None
        from edgeloop.models.signing import verify_signed

        assert verify_signed(signed, artifact, chain_pem=platform.ca.chain_pem).ref == ModelRef("edge.pump", 1)
        assert (await run("models", "import", str(out_file))).exit_code == 0, "the same signed file: a no-op"
        bad = await run("models", "show", "edge.pump")
        assert bad.exit_code == 1 and "not a model reference" in bad.stderr
        half = await run("models", "import", str(onnx_file), "--kind", "edge")
        assert half.exit_code == 1 and "both --kind and --name" in half.stderr


async def test_the_platform_signs_with_its_pki_and_a_revoked_signer_takes_effect_at_once(tmp_path: Path) -> None:
    from edgeloop.app import Platform, PlatformConfig
    from tests.support import free_port

    cfg = PlatformConfig(data_dir=tmp_path / "data", mqtt_port=free_port(), http_port=None,
                         pki_dir=tmp_path / "pki", create_pki=True)
    async with Platform(cfg) as platform:
        assert platform.ca is not None and platform.services.models is platform.models
        m = await platform.models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
        assert (tmp_path / "data" / "models" / "artifacts" / m.artifact_sha256).exists()
        assert (await platform.models.load(m.ref))[1] == ONNX
        platform.ca.revoke("model-signing")  # e.g. its key leaked
        with pytest.raises(ModelRefused) as err:
            await platform.models.load(m.ref)
        assert err.value.code == "revoked_signer"
    async with Platform(dataclasses.replace(cfg, mqtt_port=free_port())) as platform:  # a new signer at start
        again = await platform.models.register("edge", "edge.pump", ONNX, by="ana", trigger=PERSON)
        assert (again.version, (await platform.models.load(again.ref))[1]) == (2, ONNX)
        with pytest.raises(ModelRefused):
            await platform.models.load(m.ref)  # what the revoked key signed stays refused
    async with Platform(dataclasses.replace(cfg, pki_dir=None, mqtt_port=free_port())) as platform:
        assert [v.version for v in await platform.models.versions()] == [1, 2], "reads without a PKI"
        with pytest.raises(ConfigError, match="PKI"):
            await platform.models.load(m.ref)
