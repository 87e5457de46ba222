"""The agent's local intelligence and its links with the platform: fail-safe rules that act on a real
Modbus PLC with the uplink down and honour a local override; an ONNX model scored on the agent;
the bandwidth policy; the heartbeat and remote configuration (applied, rolled back, rejected) over
a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.agent.config import BandwidthSection, FailSafeRule, ModbusWrite, parse_config
from edgeloop.agent.failsafe import FailSafe
from edgeloop.agent.forward import Forwarder
from edgeloop.agent.inference import LocalModelRunner, train_edge_model
from edgeloop.agent.journal import PRIORITY
from edgeloop.agent.remote import PUSHED_FILE, load_effective_config
from edgeloop.agent.runner import Agent
from edgeloop.errors import ConfigError
from edgeloop.messages import (
    ConfigPush,
    DeviceEvent,
    Sample,
    TopicKind,
    decode_event,
    decode_heartbeat,
    encode,
    topic,
)
from edgeloop.models.signing import write_bundle
from tests.support import free_port, start_mosquitto
from tests.test_agent import modbus_server, write_holding


async def eventually(check: Callable[[], object], timeout_s: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


async def read_holding(port: int, address: int) -> int:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        resp = await client.read_holding_registers(address, count=1, device_id=1)
        assert not resp.isError()
        return int(resp.registers[0])
    finally:
        client.close()


def outbox(agent: Agent) -> list[DeviceEvent]:
    return [decode_event(e.payload) for e in agent.journal.unsent_events()]


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run(drain_s=0.5))
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- fail-safe rules ------------------------------------------------------------------------------
RULE = FailSafeRule(name="hot", device="press-1", channel="temp", above=90, for_s=5, override="override",
                    action=ModbusWrite(source="plc", address=10, value=1))


def test_a_rule_trips_only_after_the_condition_held_for_its_time() -> None:
    fs = FailSafe([RULE])
    verdicts = [[d.verdict for d in fs.observe("press-1", Sample(ts=t * 1000, values={"temp": v}))]
                for t, v in enumerate([95, 95, None, 95, 95, 95, 95, 95, 50, 95])]
    # 0..5 s over the limit (a missing reading neither trips nor clears): trips at 5 s, once; clears at 50.
    assert verdicts == [[], [], [], [], [], ["trip"], [], [], ["clear"], []]
    assert [d.verdict for d in fs.observe("press-1", Sample(ts=9000, values={"temp": 80}))] == []
    below = FailSafe([FailSafeRule(name="low", device="d", channel="p", below=1.0, for_s=0,
                                   action=ModbusWrite(source="plc", address=1, value=0))])
    assert [d.verdict for d in below.observe("d", Sample(ts=0, values={"p": 0.5}))] == ["trip"]


def test_the_override_keeps_a_rule_from_acting_and_says_so_once() -> None:
    fs = FailSafe([RULE])
    out = [fs.observe("press-1", Sample(ts=t * 1000, values={"temp": 95, "override": 1})) for t in range(10)]
    decisions = [d for ds in out for d in ds]
    assert [d.verdict for d in decisions] == ["overridden"]
    assert "override" in decisions[0].message
    released = fs.observe("press-1", Sample(ts=10_000, values={"temp": 95, "override": 0}))
    assert [d.verdict for d in released] == ["trip"], "the person let go: the rule acts"


def test_a_rule_must_name_a_source_that_can_perform_its_action() -> None:
    base = """\
agent: {tenant: acme, gateway: gw-1}
sources:
  - {name: fleet, kind: simulator}
rules:
  - {name: hot, device: motor-0001, channel: temp, above: 90, action: {kind: modbus, source: SRC, address: 1,
     value: 1}}
"""
    with pytest.raises(ConfigError, match="action source 'plc' is not one of the sources"):
        parse_config(base.replace("SRC", "plc"))
    with pytest.raises(ConfigError, match="a modbus action needs a modbus source"):
        parse_config(base.replace("SRC", "fleet"))
    with pytest.raises(ConfigError, match="exactly one of 'above' or 'below'"):
        parse_config(base.replace("SRC", "fleet").replace("above: 90", "above: 90, below: 10"))


async def test_a_fail_safe_rule_acts_on_the_plc_with_the_uplink_down_and_honours_the_override(
        tmp_path: Path) -> None:
    """No broker at all: temperature over the limit for 1 s writes the stop register on the real Modbus
    server; with the operator's override switch on, it does not, and both are journaled as events for the
    platform."""
    modbus_port = free_port()
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{free_port()}}}
sources:
  - name: plc
    kind: modbus
    host: 127.0.0.1
    port: {modbus_port}
    device: press-1
    poll_ms: 100
    points: [{{channel: temp, address: 0}}, {{channel: override, address: 1}}]
rules:
  - {{name: hot, device: press-1, channel: temp, above: 90, for_s: 1, override: override,
     action: {{kind: modbus, source: plc, address: 10, value: 1}}}}
""")
    async with modbus_server(modbus_port, [50, 0] + [0] * 10, [0]):
        agent = Agent(cfg)
        async with running(agent):
            await write_holding(modbus_port, 0, [95])
            await eventually(lambda: agent.actions_done == 1, what="the rule acted")
            assert await read_holding(modbus_port, 10) == 1, "the stop register was written on the PLC"
            await eventually(lambda: any(e.kind == "failsafe" for e in outbox(agent)), what="journaled")
            assert not any(agent.uplink.connected.values()), "all of this happened offline"

            await write_holding(modbus_port, 10, [0])  # the machine is reset; the override switch goes on
            await write_holding(modbus_port, 1, [1])
            await write_holding(modbus_port, 0, [50])
            await eventually(lambda: any(e.kind == "failsafe_clear" for e in outbox(agent)), what="cleared")
            await write_holding(modbus_port, 0, [96])
            await eventually(lambda: any(e.kind == "failsafe_overridden" for e in outbox(agent)),
                             what="the override was reported")
            await asyncio.sleep(1.5)
            assert await read_holding(modbus_port, 10) == 0, "the override kept the rule from writing"
            assert agent.actions_done == 1
        trip = next(e for e in outbox_after_stop(tmp_path) if e.kind == "failsafe")
        assert trip.device == "press-1" and trip.data["rule"] == "hot" and trip.data["value"] == 95


def outbox_after_stop(tmp_path: Path) -> list[DeviceEvent]:
    from edgeloop.agent.journal import Journal

    j = Journal(tmp_path / "agent" / "journal.db")
    try:
        return [decode_event(e.payload) for e in j.unsent_events()]
    finally:
        j.close()


# -- the local ONNX model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    rng = np.random.default_rng(1)
    n = 1800
    ts = (np.arange(n) * 1000).astype(np.int64)
    values = np.column_stack([50 + rng.normal(0, 1, n), 1.0 + rng.normal(0, 0.05, n)])
    return train_edge_model(ts, values, ["temp", "vib"], window_s=10, every_s=1)


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory, model_bytes: bytes) -> tuple[Path, Path]:
    """The trained model as the agent loads it: a signed model file (``press-if@1``), and the CA chain."""
    from tests.test_agent_models import Pki, manifest

    root = tmp_path_factory.mktemp("signed-model")
    pki = Pki(root)
    path = root / "press.elm"
    path.write_bytes(write_bundle(pki.signer.sign(manifest(model_bytes, 1, name="press-if")), model_bytes))
    return path, pki.chain


def healthy(rng: np.random.Generator, vib_shift: float = 0.0) -> dict[str, float | None]:
    return {"temp": 50 + float(rng.normal(0, 1)), "vib": 1.0 + vib_shift + float(rng.normal(0, 0.05))}


def test_the_onnx_model_flags_a_shift_and_stays_quiet_on_healthy_data(model_bytes: bytes) -> None:
    from edgeloop.agent.config import LocalModel

    runner = LocalModelRunner(LocalModel(name="m", devices=["press-1"]), model_bytes)
    rng = np.random.default_rng(2)  # held-out data, not the training series
    scores = [runner.observe("press-1", Sample(ts=i * 1000, values=healthy(rng, 0.5 if i >= 300 else 0.0)))
              for i in range(400)]
    scored = [s for s in scores if s is not None]
    assert not [s for s in scored if s.ts < 300_000 and s.score >= s.threshold], "no false alarm when healthy"
    starts = [s.ts for s in scored if s.starts]
    assert starts and 300_000 <= starts[0] <= 310_000, "the shift is flagged within one window"
    assert len(starts) == 1, "one episode, reported once"


def test_missing_readings_are_skipped_never_scored_as_zero(model_bytes: bytes) -> None:
    from edgeloop.agent.config import LocalModel

    runner = LocalModelRunner(LocalModel(name="m", devices=["press-1"]), model_bytes)
    for i in range(40):
        assert runner.observe("press-1", Sample(ts=i * 1000, values={"temp": 50.0, "vib": None})) is None
    assert runner.scored == 0 and runner.skipped > 0


def test_a_file_that_is_not_an_edgeloop_model_is_refused_clearly() -> None:
    from edgeloop.agent.config import LocalModel

    with pytest.raises(ConfigError, match="cannot load"):
        LocalModelRunner(LocalModel(name="m", devices=["d"]), b"not a model")


async def test_a_local_anomaly_becomes_an_event_and_a_priority_window(tmp_path: Path,
                                                                       signed_model: tuple[Path, Path]) -> None:
    model_path, chain = signed_model
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, models_trust: {chain}}}
sources: [{{name: fleet, kind: simulator}}]
models: [{{name: press-if, path: {model_path}, devices: [press-1]}}]
bandwidth: {{mode: raw, before_s: 20, after_s: 5}}
""")
    agent = Agent(cfg)
    rng = np.random.default_rng(3)
    try:
        for i in range(200):
            agent._emit("press-1", Sample(ts=1_000_000 + i * 1000, values=healthy(rng, 0.5 if i >= 120 else 0.0)))
            if i % 10 == 9:
                await agent.commit()
        events = [e for e in outbox(agent) if e.kind == "anomaly"]
        assert len(events) == 1 and events[0].data["model"] == "press-if"
        assert events[0].data["version"] == "press-if@1", "the event names the version that found it"
        t = events[0].ts
        rows = agent.journal._db.execute("SELECT first_ts, last_ts, priority FROM messages").fetchall()
        for first, last, prio in rows:
            if last >= t - 20_000 and first <= t + 5_000:
                assert prio == PRIORITY, "the window around the anomaly is kept last under the disk budget"
        assert any(prio != PRIORITY for *_, prio in rows), "the rest stays normal"
    finally:
        await agent.in_journal(lambda j: j.close())


# -- the bandwidth policy ---------------------------------------------------------------------------
def test_aggregates_carry_window_statistics_and_hot_windows_carry_every_raw_sample() -> None:
    fw = Forwarder(BandwidthSection(mode="aggregate", aggregate_s=10, stats=["mean", "min", "max"], before_s=5,
                                    after_s=5))
    raw = [Sample(ts=i * 1000, values={"t": float(i)}) for i in range(60)]
    normal, priority = [], []
    for i in range(0, 60, 5):  # batches of 5 s
        batch = raw[i:i + 5]
        hot = 35_000 if i == 35 else None
        if hot is not None:
            fw.heat("d", hot)
        routed = fw.route("d", batch, hot)
        normal += routed.normal
        priority += routed.priority
    normal += fw.flush()["d"]
    assert [s.ts for s in normal] == [0, 10_000, 20_000, 30_000, 40_000, 50_000]
    assert normal[1].values == {"t": 14.5, "t_min": 10.0, "t_max": 19.0}
    assert [s.ts // 1000 for s in priority] == list(range(30, 41)), "5 s before to 5 s after, full resolution"
    sent = sum(len(encode(s)) for s in normal + priority)
    assert fw.bytes_raw > 2 * sent, "fewer bytes than the raw stream"


def test_raw_mode_forwards_everything() -> None:
    fw = Forwarder(BandwidthSection(mode="raw"))
    batch = [Sample(ts=i, values={"t": 1.0}) for i in range(10)]
    routed = fw.route("d", batch, None)
    assert routed.normal == batch and not routed.priority


# -- heartbeat and remote configuration over a real broker ------------------------------------------
class Gateway:
    """What the platform sees of gw-1 on the broker: its heartbeats and its events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.beats: list[bytes] = []
        self.events: list[DeviceEvent] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-side")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(topic("acme", "gw-1", TopicKind.HEALTH), 1),
                               (topic("acme", "gw-1", TopicKind.EVENT), 1)])
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/health"):
            self.beats.append(bytes(msg.payload))
        else:
            self.events.append(decode_event(bytes(msg.payload)))

    def push(self, version: int, text: str) -> None:
        payload = encode(ConfigPush(version=version, config=text, ts=int(time.time() * 1000), issued_by="alice"))
        self.client.publish(topic("acme", "gw-1", TopicKind.CONFIG), payload, qos=1, retain=True).wait_for_publish(5)

    def outcome(self, version: int) -> DeviceEvent | None:
        return next((e for e in self.events if e.kind == "config" and e.data["version"] == version), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def agent_yaml(tmp_path: Path, mqtt_port: int, modbus_ports: list[int], *, heartbeat_s: float = 0.5) -> str:
    sources = "".join(f"""\
  - {{name: plc{i}, kind: modbus, host: 127.0.0.1, port: {p}, device: press-{i}, poll_ms: 100, timeout_ms: 200,
     points: [{{channel: temp, address: 0}}]}}
""" for i, p in enumerate(modbus_ports))
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50, heartbeat_s: {heartbeat_s},
         config_verify_s: 2}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
{sources}"""


@pytest.mark.mosquitto
async def test_heartbeats_and_pushed_configurations_applied_rolled_back_and_rejected(tmp_path: Path) -> None:
    mqtt_port, plc0, plc1, dead = free_port(), free_port(), free_port(), free_port()
    local = tmp_path / "agent.yaml"
    local.write_text(agent_yaml(tmp_path, mqtt_port, [plc0]))
    with start_mosquitto(port=mqtt_port, workdir=tmp_path / "mosquitto"):
        gw = Gateway(mqtt_port)
        try:
            async with modbus_server(plc0, [20], [0]), modbus_server(plc1, [30], [0]):
                agent = Agent(load_effective_config(local), base=tmp_path)
                async with running(agent):
                    await eventually(lambda: len(gw.beats) >= 2, what="heartbeats")
                    beat = decode_heartbeat(gw.beats[-1])
                    assert beat.gateway == "gw-1" and beat.interval_s == 0.5
                    assert beat.devices == ["press-0"] and beat.sources["plc0"].state == "ok"
                    assert beat.uplink_links == 1 and beat.rss_bytes > 10_000_000
                    assert beat.config_version == 1

                    gw.push(2, agent_yaml(tmp_path, mqtt_port, [plc0, plc1]))  # a second PLC
                    await eventually(lambda: gw.outcome(2) is not None, what="v2 reported")
                    assert gw.outcome(2).data["status"] == "applied"  # type: ignore[union-attr]
                    assert set(agent.sources) == {"plc0", "plc1"}
                    assert (tmp_path / "agent" / PUSHED_FILE).exists()

                    gw.push(3, agent_yaml(tmp_path, mqtt_port, [plc0, plc1, dead]))  # a PLC that is not there
                    await eventually(lambda: gw.outcome(3) is not None, what="v3 reported")
                    v3 = gw.outcome(3)
                    assert v3 is not None and v3.data["status"] == "rolled_back"
                    assert "plc2" in str(v3.data["error"]) and v3.data["running"] == 2
                    assert set(agent.sources) == {"plc0", "plc1"}, "back on version 2's sources"
                    await eventually(lambda: all(s.state == "ok" for s in agent.sources.values()), what="reading")

                    changed = agent_yaml(tmp_path, mqtt_port, [plc0]).replace("commit_ms: 50", "commit_ms: 60")
                    gw.push(4, changed)
                    await eventually(lambda: gw.outcome(4) is not None, what="v4 reported")
                    assert gw.outcome(4).data["status"] == "rejected"  # type: ignore[union-attr]
                    gw.push(5, "agent: [not, valid")
                    await eventually(lambda: gw.outcome(5) is not None, what="v5 reported")
                    assert "not valid YAML" in str(gw.outcome(5).data["error"])  # type: ignore[union-attr]
                    await eventually(lambda: decode_heartbeat(gw.beats[-1]).config_status == "rejected",
                                     what="the heartbeat says so")
                    assert decode_heartbeat(gw.beats[-1]).config_version == 2
                restarted = load_effective_config(local)
                assert restarted.version == 2 and [s.name for s in restarted.sources] == ["plc0", "plc1"], \
                    "after a restart the gateway runs the configuration it kept"
        finally:
            gw.close()


def test_edge_model_command_trains_from_a_csv_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeloop.agent.config import LocalModel
    from edgeloop.cli import app

    rng = np.random.default_rng(4)
    csv = tmp_path / "healthy.csv"
    rows = [f"{i * 1000},{50 + rng.normal(0, 1):.3f},{1 + rng.normal(0, 0.05):.4f}" for i in range(1200)]
    csv.write_text("ts,temp,vib\n" + "\n".join(rows) + "\n")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["edge-model", "--csv", str(csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    runner = LocalModelRunner(LocalModel(name="m", devices=["d"]), out.read_bytes())
    assert runner.channels == ["temp", "vib"]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,temp\n1,2\n")
    result = CliRunner().invoke(app, ["edge-model", "--csv", str(bad), "--out", str(out)])
    assert result.exit_code == 1 and "expected a header 'ts,CHANNEL,...'" in " ".join(result.output.split())


async def test_a_full_journal_does_not_stop_the_fail_safe_rules(tmp_path: Path) -> None:
    """SQLite reports the disk full (the journal file may not grow: max_page_count): the samples that cannot be
    accepted are counted and reported, and the rule still acts on the PLC."""
    import sqlite3

    modbus_port = free_port()
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50, heartbeat_s: 0.5}}
uplink: {{mqtt: 127.0.0.1:{free_port()}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {modbus_port}, device: press-1, poll_ms: 50,
     points: [{{channel: temp, address: 0}}]}}
rules:
  - {{name: hot, device: press-1, channel: temp, above: 90, for_s: 0.5,
     action: {{kind: modbus, source: plc, address: 10, value: 1}}}}
""")
    async with modbus_server(modbus_port, [50] + [0] * 11, [0]):
        agent = Agent(cfg)
        pages = agent.journal._db.execute("PRAGMA page_count").fetchone()[0]
        agent.journal._db.execute(f"PRAGMA max_page_count={pages}")
        async with running(agent):
            await eventually(lambda: agent.journal_failures > 0, what="the journal refuses writes")
            await write_holding(modbus_port, 0, [95])
            await eventually(lambda: agent.actions_done == 1, what="the rule acted anyway")
            assert await read_holding(modbus_port, 10) == 1
            assert agent.unjournaled_samples > 0
            with pytest.raises(sqlite3.OperationalError, match="full"):
                agent.journal.append({"press-1": [Sample(ts=1, values={"temp": 1.0})]})
