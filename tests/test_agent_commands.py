"""Platform commands on the gateway: the local safety envelope (each refusal), the register codec, and the whole
path over a real Mosquitto to a real Modbus server: applied with the value read back, a redelivery answered again
and never executed twice, refusals that leave the PLC untouched, a command that expired while the gateway was
offline, and a command interrupted mid-write answered ``failed`` at the next start, never executed again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.agent.commands import Reading, check, check_step, read_back_ok
from edgeloop.agent.config import Actuator, Interlock, ModbusTarget, parse_config
from edgeloop.agent.journal import Journal
from edgeloop.agent.runner import Agent
from edgeloop.agent.sources import decode_point, encode_value
from edgeloop.errors import ConfigError
from edgeloop.messages import Command, DeviceEvent, TopicKind, decode_event, encode, topic
from tests.support import free_port, start_mosquitto
from tests.test_agent import modbus_server, write_holding
from tests.test_agent_local import eventually, read_holding, running

NOW = 1_796_400_000_000
SPEED = Actuator(name="speed", device="press-1", write=ModbusTarget(source="plc", address=10), min=0, max=1500,
                 max_step=200, min_interval_s=600, override="manual",
                 interlocks=[Interlock(name="hot", device="press-1", channel="temp", above=90),
                             Interlock(name="b-stopped", device="press-2", channel="running", equals=0)])


def command(**changes: object) -> Command:
    base: dict[str, object] = {"id": "c-1", "key": "policy-a:incident-7", "device": "press-1", "seq": 5, "ts": NOW,
                               "expires": NOW + 60_000, "action": "speed", "value": 900.0, "trace": "ab" * 16}
    return Command(**{**base, **changes})  # type: ignore[arg-type]


def readings(**values: tuple[float | None, int]) -> Callable[[str, str], Reading | None]:
    """``temp=(80, NOW)`` -> press-1.temp; ``press_2_running=(1, NOW)`` -> press-2.running."""
    found = {}
    for name, (value, ts) in values.items():
        device, channel = ("press-2", name.removeprefix("press_2_")) if name.startswith("press_2_") else \
            ("press-1", name)
        found[(device, channel)] = Reading(value, ts)
    return lambda d, c: found.get((d, c))


FINE = readings(temp=(70, NOW - 1000), manual=(0, NOW - 1000), press_2_running=(1, NOW - 2000))


def refused(cmd: Command, act: Actuator | None = SPEED, *, applied_seq: int | None = None,
            last_change_ms: int | None = None, reading: Callable[[str, str], Reading | None] = FINE) -> str | None:
    found = check(cmd, act, now_ms=NOW, applied_seq=applied_seq, last_change_ms=last_change_ms, reading=reading)
    return None if found is None else found.code


def test_the_envelope_refuses_each_unsafe_command_with_its_reason() -> None:
    assert refused(command()) is None
    assert refused(command(expires=NOW)) == "expired"
    assert refused(command(action="torque"), None) == "unknown_action"
    assert refused(command(seq=5), applied_seq=5) == "stale_seq", "not newer than what was applied"
    assert refused(command(seq=6), applied_seq=5) is None
    assert refused(command(value=1500.5)) == "out_of_range" and refused(command(value=-1)) == "out_of_range"
    assert refused(command(), last_change_ms=NOW - 599_000) == "rate_limited"
    assert refused(command(), last_change_ms=NOW - 600_000) is None
    assert refused(command(), reading=readings(temp=(70, NOW), manual=(1, NOW), press_2_running=(1, NOW))) == \
        "overridden"
    assert refused(command(), reading=readings(temp=(91, NOW), manual=(0, NOW), press_2_running=(1, NOW))) == \
        "interlock"
    assert refused(command(), reading=readings(temp=(70, NOW), manual=(0, NOW), press_2_running=(0, NOW))) == \
        "interlock", "across machines: never while press-2 is stopped"
    stale = readings(temp=(70, NOW - 10_001), manual=(0, NOW), press_2_running=(1, NOW))
    assert refused(command(), reading=stale) == "stale_reading", "a reading older than max_age_s holds it"
    no_reading = readings(temp=(None, NOW), manual=(0, NOW), press_2_running=(1, NOW))
    assert refused(command(), reading=no_reading) == "stale_reading", "no valid reading holds it too"
    reason = check(command(), SPEED, now_ms=NOW, applied_seq=None, last_change_ms=None,
                   reading=readings(temp=(95, NOW), manual=(0, NOW), press_2_running=(1, NOW)))
    assert reason is not None and reason.reason == "interlock hot: press-1.temp is 95 (above 90)"


def test_a_step_larger_than_max_step_is_refused_and_the_read_back_must_match() -> None:
    assert check_step(SPEED, 800, 1000) is None
    found = check_step(SPEED, 700, 1000)
    assert found is not None and found.code == "step_too_large"
    unknown = check_step(SPEED, None, 1000)
    assert unknown is not None and unknown.code == "stale_reading"
    assert read_back_ok(SPEED, 900, 900.0) and not read_back_ok(SPEED, 900, 901) and not read_back_ok(SPEED, 900, None)


@pytest.mark.parametrize(("kind", "value", "scale", "offset"), [
    ("uint16", 1200.0, 1.0, 0.0), ("int16", -12.5, 0.5, 0.0), ("uint32", 70_000.0, 1.0, 0.0),
    ("int32", -70_000.0, 1.0, 0.0), ("float32", 3.25, 1.0, 0.0), ("uint16", 20.0, 0.1, -5.0)])
@pytest.mark.parametrize("order", ["big", "little"])
def test_a_value_written_reads_back_the_same(kind: str, value: float, scale: float, offset: float,
                                             order: str) -> None:
    target = ModbusTarget(source="plc", address=0, type=kind, word_order=order, scale=scale,  # type: ignore[arg-type]
                          offset=offset)
    assert decode_point(target, encode_value(target, value)) == pytest.approx(value)


def test_a_value_its_register_cannot_hold_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"outside uint16 \(0\.\.65535\)"):
        encode_value(ModbusTarget(source="plc", address=0), 70_000)
    with pytest.raises(ValueError, match="outside uint16"):
        encode_value(ModbusTarget(source="plc", address=0), -1)


def yaml_with(actuator: str) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: /tmp/x}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, device: press-1, points: [{{channel: temp, address: 0}}]}}
  - {{name: fleet, kind: simulator}}
actuators:
  - {actuator}
"""


@pytest.mark.parametrize(("actuator", "needle"), [
    ("{name: speed, device: press-1, min: 10, max: 5, write: {kind: modbus, source: plc, address: 1}}",
     "min 10 is above max 5"),
    ("{name: speed, device: press-1, min: 0, max: 5, write: {kind: modbus, source: fleet, address: 1}}",
     "write source 'fleet' is not a modbus source"),
    ("{name: speed, device: press-9, min: 0, max: 5, write: {kind: modbus, source: plc, address: 1}}",
     "source 'plc' reads device 'press-1', not 'press-9'"),
    ("{name: speed, device: press-1, min: 0, max: 5, write: {kind: modbus, source: plc, address: 1},"
     " interlocks: [{name: x, device: press-1, channel: temp, above: 1, below: 0}]}",
     "interlock 'x': give exactly one of above, below, equals"),
    ("{name: speed, device: press-1, min: 0, max: 5, write: {kind: modbus, source: plc, address: 1}, max_stp: 3}",
     "max_stp"),
])
def test_an_actuator_that_cannot_work_is_refused_with_its_line(actuator: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_config(yaml_with(actuator))


# -- over a real broker, to a real PLC --------------------------------------------------------------------------
class Platform:
    """The platform's side of the broker: publishes commands, collects the gateway's answers."""

    def __init__(self, port: int) -> None:
        self.answers: list[DeviceEvent] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-side")
        self.client.on_message = lambda _c, _u, msg: self.answers.append(decode_event(bytes(msg.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic("acme", "press-1", TopicKind.EVENT), 1)
        self.client.loop_start()

    def send(self, cmd: Command, *, retain: bool = False) -> None:
        self.client.publish(topic("acme", "press-1", TopicKind.CMD), encode(cmd), qos=1,
                            retain=retain).wait_for_publish(5)

    def answer(self, cid: str, n: int = 1) -> Callable[[], bool]:
        return lambda: len(self.of(cid)) >= n

    def of(self, cid: str) -> list[DeviceEvent]:
        return [a for a in self.answers if a.kind == "command" and a.data["id"] == cid]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _value(agent: Agent, channel: str) -> float | None:
    found = agent.commands.reading("press-1", channel)
    return None if found is None else found.value


def live(**changes: object) -> Command:
    now = int(time.time() * 1000)
    return command(**{"ts": now, "expires": now + 30_000, **changes})


def agent_config(tmp_path: Path, mqtt_port: int, plc: int) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {plc}, device: press-1, poll_ms: 100, timeout_ms: 500,
     points: [{{channel: temp, address: 0}}, {{channel: manual, address: 1}}, {{channel: speed, address: 10}}]}}
actuators:
  - {{name: speed, device: press-1, min: 0, max: 1500, max_step: 500, override: manual,
     write: {{kind: modbus, source: plc, address: 10}},
     interlocks: [{{name: hot, device: press-1, channel: temp, above: 90}}]}}
"""


@pytest.mark.mosquitto
async def test_commands_over_mqtt_are_applied_once_read_back_and_refused_outside_the_envelope(
        tmp_path: Path) -> None:
    mqtt_port, plc = free_port(), free_port()
    with start_mosquitto(port=mqtt_port, workdir=tmp_path / "mosquitto"):
        side = Platform(mqtt_port)
        try:
            async with modbus_server(plc, [50, 0] + [0] * 8 + [800] + [0] * 5, [0]):
                agent = Agent(parse_config(agent_config(tmp_path, mqtt_port, plc)))
                async with running(agent):
                    await eventually(lambda: agent.uplink.connected.get("press-1"), what="press-1 is online")
                    await eventually(lambda: agent.commands.reading("press-1", "temp"), what="a reading")
                    side.send(live(id="c-1", seq=1, value=1000))
                    await eventually(side.answer("c-1"), what="the answer")
                    [applied] = side.of("c-1")
                    assert applied.data["status"] == "applied" and applied.data["read_back"] == 1000
                    assert applied.data["before"] == 800 and applied.data["trace"] == "ab" * 16
                    assert await read_holding(plc, 10) == 1000, "the PLC has the new setpoint"

                    await write_holding(plc, 10, [700])  # the machine moves on; the same command comes again
                    side.send(live(id="c-1", seq=1, value=1000))
                    await eventually(side.answer("c-1", 2), what="the repeated answer")
                    assert side.of("c-1")[1].data == applied.data, "the first answer again"
                    assert await read_holding(plc, 10) == 700, "a redelivered command is never executed twice"

                    for cid, changes, code in [
                        ("c-2", {"seq": 2, "value": 1600, "key": "k2"}, "out_of_range"),
                        ("c-3", {"seq": 3, "value": 1300, "key": "k3"}, "step_too_large"),  # 700 -> 1300 > 500
                        ("c-4", {"seq": 4, "value": 900, "key": "policy-a:incident-7"}, "duplicate"),
                        ("c-5", {"seq": 1, "value": 900, "key": "k5"}, "stale_seq"),
                    ]:
                        side.send(live(id=cid, **changes))
                        await eventually(side.answer(cid), what=f"the answer to {cid}")
                        assert (side.of(cid)[0].data["status"], side.of(cid)[0].data["code"]) == ("refused", code)
                    await write_holding(plc, 0, [95])  # hot: the interlock holds
                    await eventually(lambda: _value(agent, "temp") == 95, what="hot")
                    side.send(live(id="c-6", seq=6, value=900, key="k6"))
                    await write_holding(plc, 0, [50])
                    await write_holding(plc, 1, [1])  # a person takes the machine
                    await eventually(lambda: _value(agent, "manual") == 1, what="manual")
                    side.send(live(id="c-7", seq=7, value=900, key="k7"))
                    await eventually(side.answer("c-7"), what="the answers")
                    assert [side.of(c)[0].data["code"] for c in ("c-6", "c-7")] == ["interlock", "overridden"]
                    assert await read_holding(plc, 10) == 700, "nothing refused reached the PLC"
                    assert (agent.commands.applied, agent.commands.refused) == (1, 6)
        finally:
            side.close()


@pytest.mark.mosquitto
async def test_a_command_that_expires_while_the_gateway_is_offline_is_never_executed(tmp_path: Path) -> None:
    mqtt_port, plc = free_port(), free_port()
    with start_mosquitto(port=mqtt_port, workdir=tmp_path / "mosquitto"):
        side = Platform(mqtt_port)
        try:
            async with modbus_server(plc, [50, 0] + [0] * 8 + [800] + [0] * 5, [0]):
                now = int(time.time() * 1000)  # waiting on the broker (retained) while the gateway is off
                side.send(command(id="late", seq=1, value=900, ts=now, expires=now + 1000), retain=True)
                await asyncio.sleep(1.2)
                agent = Agent(parse_config(agent_config(tmp_path, mqtt_port, plc)))
                async with running(agent):
                    await eventually(side.answer("late"), what="the answer")
                    [answer] = side.of("late")
                    assert (answer.data["status"], answer.data["code"]) == ("refused", "expired")
                    assert await read_holding(plc, 10) == 800
        finally:
            side.close()


async def test_a_command_interrupted_mid_write_is_answered_at_the_next_start_and_never_executed_again(
        tmp_path: Path) -> None:
    """As if ``kill -9`` hit between the ledger's ``executing`` and the answer: the next start answers each such
    command from what the PLC reads (``applied`` if it holds the value asked for, else ``failed``), and a
    redelivery of it gets that answer, not a second write."""
    plc = free_port()
    cfg = parse_config(agent_config(tmp_path, free_port(), plc))
    journal = Journal(tmp_path / "agent" / "journal.db")
    journal.command_start(command(id="c-8", key="k8", seq=8, value=700), NOW)  # the PLC never got this one
    journal.command_start(command(id="c-9", seq=9, value=1000), NOW)  # nor the answer of this one
    journal.close()
    async with modbus_server(plc, [50, 0] + [0] * 8 + [1000] + [0] * 5, [0]):
        agent = Agent(cfg)
        async with running(agent):
            await eventually(lambda: agent.commands.applied + agent.commands.failed == 2, what="both answered")
            await write_holding(plc, 10, [600])
            agent.commands.submit("press-1", encode(live(id="c-9", seq=9, value=1000)))
            agent.commands.submit("press-1", encode(live(id="c-8", key="k8", seq=8, value=700)))
            await asyncio.sleep(0.5)
            assert await read_holding(plc, 10) == 600, "never executed again"
            answers = [decode_event(e.payload) for e in await agent.in_journal(lambda j: j.unsent_events())]
            mine = {cid: [a for a in answers if a.kind == "command" and a.data["id"] == cid] for cid in ("c-8", "c-9")}
            assert [a.data["status"] for a in mine["c-9"]] == ["applied", "applied"], "answered, then again"
            assert mine["c-9"][0].data["read_back"] == 1000
            assert [a.data["status"] for a in mine["c-8"]] == ["failed", "failed"]
            assert "reads 1000 now, not 700" in mine["c-8"][0].message


async def test_a_command_sets_an_opc_ua_node_with_its_own_type_and_reads_it_back(tmp_path: Path) -> None:
    """An integer setpoint node: the value is written as the node's type (Int32) and read back."""
    from asyncua import ua
    from asyncua.server.server import Server

    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    idx = await server.register_namespace("urn:edgeloop:test")
    press = await server.nodes.objects.add_object(idx, "Press")
    temp = await press.add_variable(idx, "Temp", 50.0)
    speed = await press.add_variable(idx, "Speed", ua.Variant(800, ua.VariantType.Int32))
    await speed.set_writable()
    async with server:
        cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{free_port()}}}
sources:
  - {{name: plc, kind: opcua, url: "opc.tcp://127.0.0.1:{port}/", device: press-1, sampling_ms: 50, poll_ms: 200,
     nodes: [{{channel: temp, node: "{temp.nodeid.to_string()}"}}]}}
actuators:
  - {{name: speed, device: press-1, min: 0, max: 1500, write: {{kind: opcua, source: plc,
     node: "{speed.nodeid.to_string()}"}}}}
""")
        agent = Agent(cfg)
        async with running(agent):
            await eventually(lambda: agent.commands.reading("press-1", "temp") is not None or (
                (src := agent.sources.get("plc")) is not None and src.state == "ok"), what="the OPC UA source up")
            agent.commands.submit("press-1", encode(live(id="c-opc", seq=1, value=1100)))
            await eventually(lambda: agent.commands.applied == 1, what="applied")
            assert await speed.read_value() == 1100
            assert (await speed.read_data_type_as_variant_type()) == ua.VariantType.Int32
            answers = [decode_event(e.payload) for e in await agent.in_journal(lambda j: j.unsent_events())]
            [answer] = [a for a in answers if a.kind == "command"]
            assert (answer.data["status"], answer.data["before"], answer.data["read_back"]) == ("applied", 800, 1100)
