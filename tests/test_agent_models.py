"""Signed models on the edge agent: only a model signed by the platform's model-signing key loads; installed
versions are kept in two crash-safe slots (current, previous); a new version on probation that alarms too often
or fails is reverted by the agent itself, offline too; the platform installs and rolls back versions with
idempotent pushes on the gateway's own ``model`` topic."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.agent.config import LocalModel, parse_config
from edgeloop.agent.edge_models import EdgeModels, trust_chain
from edgeloop.agent.model_guard import ModelGuard, guard_limits
from edgeloop.agent.model_slots import CURRENT, PREVIOUS, ModelSlots, VerifiedModel, verify_edge_bundle
from edgeloop.agent.runner import Agent
from edgeloop.broker.acl import INGEST_IDENTITY, allowed, mosquitto_acl
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError, ModelRefused
from edgeloop.identity.pki import CertificateAuthority, new_private_key, pem
from edgeloop.messages import (
    ConfigPush,
    DeviceEvent,
    Sample,
    TopicKind,
    decode_event,
    decode_model_push,
    encode,
    topic,
)
from edgeloop.models.edge_delivery import push_answer, push_message, reverted
from edgeloop.models.manifest import ModelManifest, Trigger, sha256_hex
from edgeloop.models.signing import ModelSigner, read_bundle, write_bundle
from tests.support import free_port, start_mosquitto
from tests.test_mqtt_tls import TlsBroker, broker, connected, ingest  # noqa: F401  # fixtures: both brokers under TLS

NAME = "edge.press"
HOUR_MS = 3_600_000


# -- models and their signatures --------------------------------------------------------------------
def onnx_model(threshold: float, *, nan: bool = False) -> bytes:
    """The smallest model of the agent's contract: its score is the mean of ``temp`` over the window (NaN for
    ``nan``), anomalous at and above ``threshold``."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((8, 1), dtype=np.float32)
    weights[0, 0] = np.nan if nan else 1.0  # the first feature is the window's mean of the first channel
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "W"], ["score"])], "mean-temp",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in {"edgeloop.channels": json.dumps(["temp", "vib"]), "edgeloop.window_s": "10",
                       "edgeloop.score_output": "score", "edgeloop.threshold": repr(threshold)}.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return bytes(model.SerializeToString())


def manifest(artifact: bytes, version: int, *, name: str = NAME, kind: str = "edge",
             metrics: dict[str, float] | None = None) -> ModelManifest:
    return ModelManifest(name=name, kind=kind, version=version, format="onnx",  # type: ignore[arg-type]
                         artifact_sha256=sha256_hex(artifact), artifact_size=len(artifact), created_ms=1,
                         created_by="ana", code_version="test", trigger=Trigger(kind="person", by="ana"),
                         metrics=metrics or {})


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority.init(root / "pki")
        self.signer = ModelSigner.ensure(self.ca)
        self.chain = root / "ca-chain.pem"
        self.chain.write_bytes(self.ca.chain_pem)

    def bundle(self, version: int, threshold: float = 70.0, *, nan: bool = False, signer: ModelSigner | None = None,
               metrics: dict[str, float] | None = None, name: str = NAME, kind: str = "edge") -> bytes:
        artifact = onnx_model(threshold, nan=nan)
        signed = (signer or self.signer).sign(manifest(artifact, version, name=name, kind=kind, metrics=metrics))
        return write_bundle(signed, artifact)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("models-pki"))


def verifier(pki: Pki) -> Callable[[bytes], VerifiedModel]:
    return lambda data: verify_edge_bundle(data, chain_pem=pki.ca.chain_pem, name=NAME)


def close(agent: Agent) -> None:
    agent.journal.close()
    agent._executor.shutdown()
    agent._lock.release()


def normal(i: int, temp: float = 50.0) -> Sample:
    return Sample(ts=1_000_000 + i * 1000, values={"temp": temp + 0.1 * (i % 3), "vib": 1.0})


def models(tmp_path: Path, pki: Pki, clock: ManualClock | None = None) -> tuple[EdgeModels, list[DeviceEvent]]:
    events: list[DeviceEvent] = []
    return EdgeModels(data_dir=tmp_path / "agent", chain_pem=pki.ca.chain_pem, gateway="gw-1", emit=events.append,
                      clock=clock or ManualClock()), events


def entry(path: Path | None = None, **guard: float) -> LocalModel:
    return msgspec.convert({"name": NAME, "devices": ["press-1"], "path": str(path) if path else None, **guard},
                           LocalModel)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def push(action: str, push_id: str, *, bundle: bytes = b"", to_version: int | None = None) -> bytes:
    return push_message("acme", "gw-1", name=NAME, action=action, push_id=push_id, now_ms=1,  # type: ignore[arg-type]
                        bundle=bundle, to_version=to_version)[1]


def answers(events: list[DeviceEvent]) -> list[tuple[str, object, object]]:
    return [(str(e.data["id"]), e.data["status"], e.data["version"]) for e in events if e.kind == "model"]


# -- only signed models load ----------------------------------------------------------------------------
def other_ca_signer(tmp: Path) -> ModelSigner:
    return ModelSigner.ensure(CertificateAuthority.init(tmp / "other-ca", name="Other"))


def device_signer(pki: Pki) -> ModelSigner:
    key = new_private_key()
    return ModelSigner(key, pem(pki.ca.issue(key.public_key(), "gw-1", kind="device")))


def tampered(pki: Pki) -> bytes:
    signed, _ = read_bundle(pki.bundle(2))
    assert signed is not None
    return write_bundle(signed, onnx_model(10.0))  # the signed manifest of v2 with another model inside


def flipped(pki: Pki) -> bytes:
    data = bytearray(pki.bundle(2))
    data[len(data) // 2] ^= 0x01  # one bit changed on disk or on the way: the zip's CRC no longer matches
    return bytes(data)


BAD_FILES: dict[str, Callable[[Pki, Path], bytes]] = {
    "tampered": lambda pki, tmp: tampered(pki),
    "bad_bundle": lambda pki, tmp: flipped(pki),
    "unsigned": lambda pki, tmp: onnx_model(70.0),  # a plain .onnx
    "untrusted_signer": lambda pki, tmp: pki.bundle(2, signer=other_ca_signer(tmp)),
    "not_a_signer": lambda pki, tmp: pki.bundle(2, signer=device_signer(pki)),
    "wrong_kind": lambda pki, tmp: pki.bundle(2, kind="detector"),
    "wrong_model": lambda pki, tmp: pki.bundle(2, name="edge.other"),
}


@pytest.mark.parametrize("code", sorted(BAD_FILES))
async def test_a_model_file_that_is_not_ours_is_refused_and_reported(
        code: str, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The agent starts anyway, without that model: one error naming the file and the code, and a
    ``model_refused`` event in the durable journal for the platform."""
    maker = BAD_FILES[code]
    bad = write(tmp_path / "press.elm", maker(pki, tmp_path))
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, models_trust: {pki.chain}}}
uplink: {{mqtt: 127.0.0.1:{free_port()}}}
sources: [{{name: fleet, kind: simulator, devices: 1}}]
models: [{{name: {NAME}, path: {bad}, devices: [press-1]}}]
""")
    with caplog.at_level(logging.ERROR, logger="edgeloop.agent"):
        agent = Agent(cfg)
    try:
        assert agent.models.active == {}, "the refused model does not run"
        errors = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
        assert len(errors) == 1 and str(bad) in errors[0] and f"({code})" in errors[0]
        await agent.commit()
        [event] = [decode_event(e.payload) for e in agent.journal.unsent_events()
                   if decode_event(e.payload).kind == "model_refused"]
        assert event.device == "gw-1" and event.data["code"] == code and event.data["file"] == str(bad)
    finally:
        close(agent)


def test_a_refused_file_leaves_the_version_the_agent_had(pki: Pki, tmp_path: Path) -> None:
    good = write(tmp_path / "v1.elm", pki.bundle(1))
    em, _ = models(tmp_path, pki)
    em.configure([entry(good)], strict=False)
    assert em.active[NAME].model.version == 1
    bad = write(tmp_path / "v2.elm", tampered(pki))
    em2, events2 = models(tmp_path, pki)  # a restart with the tampered v2 in the configuration
    em2.configure([entry(bad)], strict=False)
    assert em2.active[NAME].model.version == 1, "still the version it had"
    assert [e.data["code"] for e in events2 if e.kind == "model_refused"] == ["tampered"]
    with pytest.raises(ModelRefused) as err:  # a pushed configuration naming it is rejected, nothing changes
        em2.configure([entry(bad)], strict=True)
    assert err.value.code == "tampered" and em2.active[NAME].model.version == 1


def test_no_trust_chain_means_no_model(pki: Pki) -> None:
    with pytest.raises(ModelRefused) as err:
        verify_edge_bundle(pki.bundle(1), chain_pem=None, name=NAME)
    assert err.value.code == "untrusted_signer" and "models_trust" in err.value.detail


def test_the_trust_chain_defaults_to_the_uplinks_ca_and_a_relative_path_is_resolved(tmp_path: Path) -> None:
    cfg = parse_config("""\
agent: {tenant: acme, gateway: gw-1, models_trust: ./trust/chain.pem}
sources: [{name: fleet, kind: simulator}]
models: [{name: edge.press, devices: [press-1]}]
""").resolve(tmp_path)
    assert cfg.agent.models_trust == str(tmp_path / "trust" / "chain.pem")
    assert cfg.models[0].path is None, "a model may wait for the platform's push"


def test_the_trust_chain_is_the_uplinks_ca_unless_models_trust_names_one(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "ca.crt").write_bytes(pki.ca.chain_pem)
    base = "agent: {tenant: acme, gateway: gw-1}\nsources: [{name: fleet, kind: simulator}]\n"
    assert trust_chain(parse_config(base + "uplink: {tls: ./ids}\n").resolve(tmp_path)) == pki.ca.chain_pem
    other = write(tmp_path / "other.pem", b"another chain")
    with_trust = base.replace("gateway: gw-1}", "gateway: gw-1, models_trust: ./other.pem}")
    assert trust_chain(parse_config(with_trust + "uplink: {tls: ./ids}\n").resolve(tmp_path)) == other.read_bytes()
    assert trust_chain(parse_config(base).resolve(tmp_path)) is None


async def test_a_pushed_configuration_with_a_refused_model_file_is_rejected(pki: Pki, tmp_path: Path) -> None:
    v1, bad = write(tmp_path / "v1.elm", pki.bundle(1)), write(tmp_path / "bad.elm", tampered(pki))
    text = agent_yaml(tmp_path, pki, free_port(), f"name: {NAME}, path: {v1}, devices: [press-1]")
    agent = Agent(parse_config(text))
    try:
        pushed = ConfigPush(version=2, config=text.replace(str(v1), str(bad)), ts=1)
        outcome = await agent.apply_push(encode(pushed))
        assert outcome.status == "rejected" and "tampered" in outcome.message and outcome.running == 1
        assert agent.models.active[NAME].model.version == 1, "nothing changed"
    finally:
        close(agent)


async def test_a_configuration_rolled_back_takes_back_the_model_version_it_installed(
        pki: Pki, tmp_path: Path) -> None:
    """A pushed configuration brings v2's file and a PLC that is not there: it is rolled back, and so is v2
    (without blocking it: pushing that configuration again would install it again)."""
    v1, v2 = write(tmp_path / "v1.elm", pki.bundle(1)), write(tmp_path / "v2.elm", pki.bundle(2))
    text = agent_yaml(tmp_path, pki, free_port(), f"name: {NAME}, path: {v1}, devices: [press-1]").replace(
        "commit_ms: 50", "commit_ms: 50, config_verify_s: 0.5")
    agent = Agent(parse_config(text))
    try:
        dead_plc = (f"{{name: plc, kind: modbus, host: 127.0.0.1, port: {free_port()}, device: press-2, "
                    "timeout_ms: 100, points: [{channel: temp, address: 0}]}")
        pushed = text.replace(str(v1), str(v2)).replace("sources: [", f"sources: [{dead_plc}, ")
        outcome = await agent.apply_push(encode(ConfigPush(version=2, config=pushed, ts=1)))
        assert outcome.status == "rolled_back" and outcome.running == 1, outcome.message
        assert agent.models.active[NAME].model.version == 1, "back on v1"
        installed, _ = agent.models.slots.load(NAME, verifier(pki))
        assert installed is not None and installed.model.version == 1 and agent.models.slots.blocked(NAME) == []
    finally:
        await agent._stop_sources(agent.running)
        close(agent)


# -- slots: current and previous -------------------------------------------------------------------------
def test_an_install_keeps_the_previous_version_and_a_restart_runs_the_current(pki: Pki, tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1.elm", pki.bundle(1))
    em, events = models(tmp_path, pki)
    em.configure([entry(v1)], strict=False)
    em.apply_push(push("install", "p-2", bundle=pki.bundle(2)))
    assert em.active[NAME].model.version == 2 and answers(events) == [("p-2", "applied", 2)]
    folder = tmp_path / "agent" / "models" / NAME
    verify = verifier(pki)
    assert verify((folder / CURRENT).read_bytes()).version == 2
    assert verify((folder / PREVIOUS).read_bytes()).version == 1
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o600} and folder.stat().st_mode & 0o077 == 0

    em2, _ = models(tmp_path, pki)  # restart: the configuration still names v1's file
    em2.configure([entry(v1)], strict=False)
    assert em2.active[NAME].model.version == 2, "the pushed version runs; the older file does not downgrade it"


def test_pushes_are_idempotent(pki: Pki, tmp_path: Path) -> None:
    em, events = models(tmp_path, pki)
    em.configure([entry()], strict=False)
    assert em.active == {}, "no version yet: waiting for a push"
    payload = push("install", "p-1", bundle=pki.bundle(1))
    em.apply_push(payload)
    em.apply_push(payload)  # the retained push delivered again
    assert answers(events) == [("p-1", "applied", 1)], "the same id twice: one answer, one install"
    em.apply_push(push("install", "p-1b", bundle=pki.bundle(1)))
    assert answers(events)[-1] == ("p-1b", "applied", 1) and events[-1].data["reason"] == "already installed"
    assert not (tmp_path / "agent" / "models" / NAME / PREVIOUS).exists(), "the same version twice: nothing new"
    em2, events2 = models(tmp_path, pki)  # after a restart the id is still known
    em2.configure([entry()], strict=False)
    em2.apply_push(payload)
    assert answers(events2) == [] and em2.active[NAME].model.version == 1


def test_a_refused_push_is_answered_and_changes_nothing(pki: Pki, tmp_path: Path) -> None:
    em, events = models(tmp_path, pki)
    em.configure([entry()], strict=False)
    em.apply_push(push("install", "p-1", bundle=pki.bundle(1)))
    em.apply_push(push("install", "p-bad", bundle=tampered(pki)))
    assert answers(events)[-1] == ("p-bad", "refused", None) and "tampered" in str(events[-1].data["reason"])
    assert [e.data["code"] for e in events if e.kind == "model_refused"] == ["tampered"]
    assert em.active[NAME].model.version == 1
    em.apply_push(b'{"id": "x"}')
    assert answers(events)[-1] == ("", "refused", None), "a malformed push is answered too"


def test_a_rollback_push_goes_back_and_the_version_is_not_reinstalled_unless_pushed_again(
        pki: Pki, tmp_path: Path) -> None:
    v1, v2 = write(tmp_path / "v1.elm", pki.bundle(1)), write(tmp_path / "v2.elm", pki.bundle(2))
    em, events = models(tmp_path, pki)
    em.configure([entry(v1)], strict=False)
    em.apply_push(push("install", "p-2", bundle=pki.bundle(2)))
    em.apply_push(push("rollback", "r-5", to_version=5))
    assert answers(events)[-1] == ("r-5", "refused", 5) and "previous version here: 1" in str(events[-1].data["reason"])
    em.apply_push(push("rollback", "r-1", to_version=1))
    assert answers(events)[-1] == ("r-1", "rolled_back", 1) and em.active[NAME].model.version == 1
    em.apply_push(push("rollback", "r-1b", to_version=1))
    assert answers(events)[-1] == ("r-1b", "rolled_back", 1), "already there: answered, nothing to do"

    em2, _ = models(tmp_path, pki)  # a restart whose configuration names v2's file
    em2.configure([entry(v2)], strict=False)
    assert em2.active[NAME].model.version == 1, "v2 was rolled back from: not re-installed from the file"
    em2.apply_push(push("install", "p-2-again", bundle=pki.bundle(2)))
    assert em2.active[NAME].model.version == 2, "told again: installed"


# -- guardrails on probation ---------------------------------------------------------------------------
def test_guard_limits_come_from_the_configuration_then_the_model_card_then_a_default() -> None:
    def limit(configured: float | None, metrics: dict[str, float]) -> tuple[float, str]:
        got = guard_limits(window=10, max_errors=3, configured=configured, metrics=metrics)
        return got.max_alarm_rate, got.source

    assert limit(0.2, {"max_alarm_rate": 0.3}) == (0.2, "config")
    assert limit(None, {"max_alarm_rate": 0.3, "expected_alarm_rate": 0.001}) == (0.3, "card max_alarm_rate")
    rate, source = limit(None, {"expected_alarm_rate": 0.004})
    assert rate == pytest.approx(0.04) and source == "card expected_alarm_rate", "ten times the card's rate"
    assert limit(None, {"expected_alarm_rate": 0.0}) == (0.01, "card expected_alarm_rate")
    assert limit(None, {}) == (0.05, "default")


def test_the_guard_judges_a_full_window_of_alarms_but_errors_at_once() -> None:
    guard = ModelGuard(guard_limits(window=10, max_errors=2, configured=0.3, metrics={}))
    outcomes = [guard.scored(1.0 if i % 3 == 0 else 0.0, 0.5) for i in range(30)]  # 1 in 3 alarms: 33 % > 30 %
    assert outcomes[:9] == [None] * 9, "not judged before the window is full"
    assert outcomes[9] is not None and outcomes[9].reason == "alarm_rate" and outcomes[9].alarms == 4
    quiet = ModelGuard(guard_limits(window=10, max_errors=2, configured=0.3, metrics={}))
    assert all(quiet.scored(1.0 if i % 4 == 0 else 0.0, 0.5) is None for i in range(40)), "25 % is within 30 %"
    assert quiet.failed("boom") is None
    breach = quiet.scored(float("nan"), 0.5)
    assert breach is not None and breach.reason == "errors" and breach.errors == 2


def test_a_version_on_probation_that_alarms_too_often_is_reverted_by_the_agent(pki: Pki, tmp_path: Path) -> None:
    clock = ManualClock()
    v1 = write(tmp_path / "v1.elm", pki.bundle(1))
    em, events = models(tmp_path, pki, clock)
    em.configure([entry(v1, guard_windows=20)], strict=False)
    clock.advance(48 * HOUR_MS)  # v1 has served for two days: out of probation
    # v2 alarms on every healthy window; its card expects 0.1 % of windows over threshold
    em.apply_push(push("install", "p-2", bundle=pki.bundle(2, threshold=40.0, metrics={"expected_alarm_rate": 0.001})))
    assert em.active[NAME].guard is not None
    scored = [s for i in range(60) for s in em.observe("press-1", normal(i))]
    [reverted] = [e for e in events if e.kind == "model_reverted"]
    assert reverted.data["from_version"] == 2 and reverted.data["to_version"] == 1
    assert reverted.data["reason"] == "alarm_rate" and reverted.data["alarm_rate"] == 1.0
    assert reverted.data["limit"] == 0.01 and reverted.data["limit_source"] == "card expected_alarm_rate"
    assert reverted.data["windows"] == 20
    assert em.active[NAME].model.version == 1 and em.active[NAME].guard is None, "v1 serves again, unwatched"
    assert {s.ref for s in scored} == {f"{NAME}@2", f"{NAME}@1"} and scored[-1].score < 70, "v1 scores the rest"

    em2, _ = models(tmp_path, pki, clock)  # restart with v2's file in the configuration: not re-installed
    em2.configure([entry(write(tmp_path / "v2.elm", pki.bundle(2, threshold=40.0)))], strict=False)
    assert em2.active[NAME].model.version == 1


def test_a_failing_version_is_reverted_and_a_first_version_with_no_previous_stops(pki: Pki, tmp_path: Path) -> None:
    clock = ManualClock()
    em, events = models(tmp_path, pki, clock)
    em.configure([entry(max_errors=3)], strict=False)
    em.apply_push(push("install", "p-1", bundle=pki.bundle(1, nan=True)))  # outputs NaN
    assert [s for i in range(30) for s in em.observe("press-1", normal(i))] == [], "a NaN is never a score"
    [reverted] = [e for e in events if e.kind == "model_reverted"]
    assert reverted.data["reason"] == "errors" and reverted.data["errors"] == 3 and reverted.data["to_version"] == 0
    assert "output nan" in str(reverted.data["error"])
    assert NAME not in em.active, "no previous version: the model stops rather than keep failing"


def test_after_probation_the_guard_no_longer_reverts(pki: Pki, tmp_path: Path) -> None:
    clock = ManualClock()
    em, events = models(tmp_path, pki, clock)
    em.configure([entry(guard_windows=10, probation_h=1)], strict=False)
    em.apply_push(push("install", "p-1", bundle=pki.bundle(1)))
    em.apply_push(push("install", "p-2", bundle=pki.bundle(2, threshold=40.0)))
    clock.advance(HOUR_MS)
    for i in range(40):
        em.observe("press-1", normal(i))
    assert not [e for e in events if e.kind == "model_reverted"] and em.active[NAME].model.version == 2


def test_the_heartbeat_says_what_each_model_runs_and_when_its_guardrail_has_judged_a_full_window(
        pki: Pki, tmp_path: Path) -> None:
    """What an edge campaign's gates read: the version, probation, whether the guardrail judged a full window yet,
    windows scored, episodes begun and the p95 latency of the version since it started here (after its warm-up)."""
    clock = ManualClock()
    em, _ = models(tmp_path, pki, clock)
    em.configure([entry(guard_windows=10, probation_h=1)], strict=False)
    assert em.health() == {}, "no version yet"
    em.apply_push(push("install", "p-1", bundle=pki.bundle(1)))
    for i in range(14):  # a 10 s window: the first score at 10 s, then one a second
        em.observe("press-1", normal(i))
    early = em.health()[NAME]
    assert (early.version, early.on_probation, early.judged) == (1, True, False)
    assert early.scored == 4 and early.latencies == 1, "the first three inferences warm the session up, untimed"
    assert early.p95_ms is not None and early.p95_ms > 0
    for i in range(14, 30):
        em.observe("press-1", normal(i))
    assert em.health()[NAME].judged and em.health()[NAME].alarms == 0
    clock.advance(HOUR_MS)
    em.observe("press-1", normal(30))
    later = em.health()[NAME]
    assert (later.on_probation, later.judged) == (False, True), "out of probation: nothing left to judge"


# -- crash safety of the slot switch -----------------------------------------------------------------------
def test_an_interrupted_switch_leaves_a_verifiable_current_version(pki: Pki, tmp_path: Path) -> None:
    slots = ModelSlots(tmp_path / "models")
    verify = verifier(pki)
    slots.install(NAME, verify(pki.bundle(1)), now_ms=1)
    slots.install(NAME, verify(pki.bundle(2)), now_ms=2)
    folder = slots.folder(NAME)
    # killed while writing the next version, before its rename: the half-written file is ignored and removed
    (folder / "incoming.tmp").write_bytes(pki.bundle(3)[:500])
    (folder / "previous.tmp").write_bytes(b"")
    installed, refusals = slots.load(NAME, verify)
    assert installed is not None and installed.model.version == 2 and installed.installed_ms == 2 and not refusals
    assert sorted(p.name for p in folder.iterdir()) == [CURRENT, PREVIOUS, "state.json"]
    # killed during a revert, after the state blocked v2 but before the rename: the loader finishes it
    state = slots.state(NAME)
    state.blocked.append(2)
    (folder / "state.json").write_bytes(msgspec.json.encode(state))
    installed, _ = slots.load(NAME, verify)
    assert installed is not None and installed.model.version == 1
    assert verify((folder / CURRENT).read_bytes()).version == 1
    # a current file damaged on disk: refused, reported, and nothing else to run
    (folder / CURRENT).write_bytes(pki.bundle(1)[:-100])
    installed, refusals = slots.load(NAME, verify)
    assert installed is None and [r.error.code for r in refusals] == ["bad_bundle"]


KILLER = """
import sys
from pathlib import Path
from edgeloop.agent.model_slots import ModelSlots, verify_edge_bundle
chain = Path(sys.argv[2]).read_bytes()
bundles = [Path(p).read_bytes() for p in sys.argv[3:]]
slots = ModelSlots(Path(sys.argv[1]))
models = [verify_edge_bundle(b, chain_pem=chain, name="edge.press") for b in bundles]
print("ready", flush=True)
i = 0
while True:
    slots.install("edge.press", models[i % len(models)], now_ms=i)
    if i % 3 == 2:
        slots.revert("edge.press", models[i % len(models)].version)
    i += 1
"""


def test_kill_9_at_any_point_of_installs_and_reverts_leaves_a_verifiable_current(pki: Pki, tmp_path: Path) -> None:
    """A process installs and reverts in a loop and is killed with SIGKILL at different moments: each time, the
    slots load to a version that verifies."""
    files = [write(tmp_path / f"v{v}.elm", pki.bundle(v)) for v in (1, 2, 3)]
    root = tmp_path / "models"
    verify = verifier(pki)
    ModelSlots(root).install(NAME, verify(files[0].read_bytes()), now_ms=0)  # a version runs before the first kill
    versions = set()
    for delay_ms in (5, 13, 29, 41, 67, 83):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(root), str(pki.chain), *map(str, files)],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay_ms / 1000)  # where in the loop the kill lands (not synchronisation: any moment must do)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        installed, refusals = ModelSlots(root).load(NAME, verify)
        assert installed is not None and not refusals, f"killed after {delay_ms} ms"
        versions.add(installed.model.version)
        assert {p.name for p in (root / NAME).iterdir()} <= {CURRENT, PREVIOUS, "state.json"}, "no leftovers"
    assert versions <= {1, 2, 3}


# -- delivery over the broker, and who may use the topic -----------------------------------------------------
def test_only_the_platform_publishes_model_pushes_and_only_that_gateway_receives_them() -> None:
    mine, other = topic("acme", "gw-1", TopicKind.MODEL), topic("acme", "gw-2", TopicKind.MODEL)
    assert allowed("gw-1", "device", "read", mine) and not allowed("gw-1", "device", "read", other)
    assert not allowed("gw-1", "device", "write", mine), "a gateway cannot push models to itself"
    assert not allowed("gw-1", "device", "read", "edgeloop/v1/+/+/model")
    assert allowed(INGEST_IDENTITY, "service", "write", mine)
    assert "pattern read edgeloop/v1/+/%u/model" in mosquitto_acl()


def test_the_platform_builds_a_push_the_agent_decodes(pki: Pki) -> None:
    bundle = pki.bundle(3)
    where, payload = push_message("acme", "gw-1", name=NAME, action="install", push_id="c1-w1", now_ms=5,
                                  bundle=bundle, issued_by="ana")
    got = decode_model_push(payload)
    assert where == "edgeloop/v1/acme/gw-1/model" and got.bundle == bundle and got.issued_by == "ana"
    with pytest.raises(ConfigError, match=r"as edge model 'edge\.other'"):
        push_message("acme", "gw-1", name="edge.other", action="install", push_id="x", now_ms=5, bundle=bundle)
    with pytest.raises(ConfigError, match="needs the signed model file"):
        push_message("acme", "gw-1", name=NAME, action="install", push_id="x", now_ms=5)
    with pytest.raises(ConfigError, match="needs the version"):
        push_message("acme", "gw-1", name=NAME, action="rollback", push_id="x", now_ms=5)
    with pytest.raises(ConfigError, match="the broker takes at most 1000"):
        push_message("acme", "gw-1", name=NAME, action="install", push_id="x", now_ms=5, bundle=bundle,
                      max_payload_bytes=1000)


def test_the_platform_reads_the_gateways_answers(pki: Pki, tmp_path: Path) -> None:
    clock = ManualClock()
    em, events = models(tmp_path, pki, clock)
    em.configure([entry(guard_windows=10)], strict=False)
    em.apply_push(push("install", "p-1", bundle=pki.bundle(1)))
    clock.advance(48 * HOUR_MS)
    em.apply_push(push("install", "p-2", bundle=pki.bundle(2, threshold=40.0)))
    for i in range(30):
        em.observe("press-1", normal(i))
    got = [push_answer(e) for e in events if e.kind == "model"]
    assert [(a.id, a.status, a.version, a.running) for a in got if a] == [("p-1", "applied", 1, 1),
                                                                        ("p-2", "applied", 2, 2)]
    [back] = [r for e in events if (r := reverted(e)) is not None]
    assert (back.gateway, back.from_version, back.to_version, back.reason) == ("gw-1", 2, 1, "alarm_rate")
    assert back.alarm_rate == 1.0 and back.limit == 0.05 and back.windows == 10
    assert push_answer(events[-1]) is None and reverted(events[0]) is None


class Platform:
    """The platform's side of gw-1 on a real broker: its events, and its model pushes."""

    def __init__(self, port: int) -> None:
        self.events: list[DeviceEvent] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-side")
        self.client.on_message = lambda _c, _u, msg: self.events.append(decode_event(bytes(msg.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic("acme", "gw-1", TopicKind.EVENT), qos=1)
        self.client.loop_start()

    def push(self, where: str, payload: bytes) -> None:
        self.client.publish(where, payload, qos=1, retain=True).wait_for_publish(5)

    def kinds(self, kind: str) -> list[DeviceEvent]:
        return [e for e in self.events if e.kind == kind]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_yaml(tmp_path: Path, pki: Pki, port: int, model: str) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50, models_trust: {pki.chain}}}
uplink: {{mqtt: 127.0.0.1:{port}}}
sources: [{{name: fleet, kind: simulator, devices: 1, prefix: t-}}]
models: [{{{model}}}]
"""


@pytest.mark.mosquitto
async def test_a_gateway_offline_reverts_by_itself_and_reports_it_after_reconnecting(pki: Pki, tmp_path: Path) -> None:
    """The issue's rollback on a gateway that is offline when the breach is found: no broker at all while v2
    alarms on healthy data and the agent goes back to v1; the ``model_reverted`` event reaches the platform
    once the link is back."""
    from tests.test_agent_local import eventually, running

    port = free_port()
    v1 = write(tmp_path / "v1.elm", pki.bundle(1))
    slots_cfg = parse_config(agent_yaml(tmp_path, pki, port, f"name: {NAME}, path: {v1}, devices: [press-1]"))
    first = Agent(slots_cfg)  # v1 is installed, then serves for a while
    close(first)
    state = first.models.slots.state(NAME)
    state.installed_ms = {1: 0}  # installed long ago: out of probation
    (tmp_path / "agent" / "models" / NAME / "state.json").write_bytes(msgspec.json.encode(state))

    v2 = write(tmp_path / "v2.elm", pki.bundle(2, threshold=40.0))
    cfg = parse_config(agent_yaml(tmp_path, pki, port, f"name: {NAME}, path: {v2}, devices: [press-1], "
                                                       "guard_windows: 10"))
    agent = Agent(cfg)
    assert agent.models.active[NAME].model.version == 2
    async with running(agent):
        for i in range(40):
            agent._emit("press-1", normal(i))
        await eventually(lambda: agent.models.reverts == 1, what="the agent reverted v2")
        assert agent.models.active[NAME].model.version == 1
        assert not any(agent.uplink.connected.values()), "all of this happened offline"
        await eventually(lambda: any(decode_event(e.payload).kind == "model_reverted"
                                     for e in agent.journal.unsent_events()), what="journaled")
        with start_mosquitto(port=port, workdir=tmp_path / "mosquitto"):
            platform = Platform(port)
            try:
                await eventually(lambda: platform.kinds("model_reverted"), timeout_s=20, what="delivered")
                [event] = platform.kinds("model_reverted")
                assert event.data["from_version"] == 2 and event.data["to_version"] == 1
                assert event.data["alarm_rate"] == 1.0 and event.data["windows"] == 10

                # back online, the platform installs v3 and the gateway answers; the retained push seen again
                # after a reconnect is not applied twice
                where, payload = push_message("acme", "gw-1", name=NAME, action="install", push_id="c9-w1",
                                              now_ms=1, bundle=pki.bundle(3))
                platform.push(where, payload)
                await eventually(lambda: platform.kinds("model"), timeout_s=10, what="answered")
                assert [(e.data["status"], e.data["version"]) for e in platform.kinds("model")] == [("applied", 3)]
                assert agent.models.active[NAME].model.version == 3
                arrived: list[bytes] = []
                handler = agent.uplink.on_model
                assert handler is not None

                def counted(data: bytes) -> None:
                    arrived.append(data)
                    handler(data)

                agent.uplink.on_model = counted
                platform.push(where, payload)  # the same push delivered again (as a retained one after a reconnect)
                await eventually(lambda: arrived, what="the repeat arrived")
                pending = [decode_event(e.payload) for e in agent.journal.unsent_events()] + agent._pending_events
                assert not [e for e in pending if e.kind == "model"], "the push seen again did nothing"
                assert len(platform.kinds("model")) == 1 and agent.models.active[NAME].model.version == 3
            finally:
                platform.close()


def test_the_brokers_deliver_a_model_push_to_its_gateway_only(
        broker: TlsBroker, ingest: Any) -> None:  # noqa: F811  # the fixtures of test_mqtt_tls
    """Under mutual TLS, on Mosquitto and the embedded broker: the platform's push reaches dev-a; neither dev-b's
    push nor one forged by dev-b for dev-a does."""
    platform, _ = ingest
    a, b = connected(broker, "dev-a"), connected(broker, "dev-b")
    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    a.on_subscribe = lambda *_args: subscribed.set()
    a.on_message = lambda _c, _u, m: received.append((m.topic, bytes(m.payload)))
    mine, theirs = topic("acme", "dev-a", TopicKind.MODEL), topic("acme", "dev-b", TopicKind.MODEL)
    try:
        a.subscribe([(mine, 1), (theirs, 1)])
        assert subscribed.wait(5)
        b.publish(mine, b"forged by dev-b", qos=1).wait_for_publish(5)
        platform.publish(theirs, b"for dev-b", qos=1).wait_for_publish(5)
        platform.publish(mine, b"for dev-a", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while (mine, b"for dev-a") not in received and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the other two were published first; they would have arrived by now
    finally:
        for c in (a, b):
            c.disconnect()
            c.loop_stop()
    assert received == [(mine, b"for dev-a")]
