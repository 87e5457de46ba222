"""The edge agent: configuration errors, the journal's guarantees, register decoding, and a real
pymodbus server whose values reach the platform's store with the right channel and scale."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.agent.config import AgentConfig, ModbusPoint, parse_config
from edgeloop.agent.journal import NORMAL, PRIORITY, Journal
from edgeloop.agent.runner import Agent
from edgeloop.agent.sources import decode_point
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.errors import ConfigError
from edgeloop.messages import Sample, decode_event, decode_telemetry

GOOD = """\
agent:
  tenant: acme
  gateway: gw-1
sources:
  - name: press
    kind: modbus
    host: 127.0.0.1
    device: press-1
    points:
      - {channel: force, address: 0, type: float32}
"""


# -- configuration ------------------------------------------------------------------------------
def test_a_good_configuration_parses() -> None:
    cfg = parse_config(GOOD)
    assert cfg.agent.tenant == "acme"
    assert cfg.sources[0].name == "press"
    assert cfg.uplink.port == 1883


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace("host: 127.0.0.1", "host: 127.0.0.1\n    port: fivehundred"),
     r"line 8 \(sources\[0\]\.port\): Expected `int`"),
    (GOOD.replace("type: float32", "type: float64"), r"line 10 \(sources\[0\]\.points\[0\]\.type\)"),
    (GOOD.replace("kind: modbus", "kind: profibus"), r"line 6 \(sources\[0\]\.kind\): Invalid value 'profibus'"),
    (GOOD.replace("  tenant: acme", "  tenant: acme\n  colour: blue"),
     r"line 2 \(agent\): Object contains unknown field `colour`"),
    (GOOD.replace("points:", "points: [oops"), r"line \d+: not valid YAML"),
    (GOOD + GOOD[GOOD.index("  - name"):], r"source names must be unique; repeated: press"),
    ("- just\n- a list\n", r"expected a mapping"),
])
def test_configuration_errors_say_which_line_and_what(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(text)


# -- register decoding --------------------------------------------------------------------------
def regs_of(fmt: str, value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(fmt, value))
    return [hi, lo]


def test_register_decoding_types_word_order_and_scale() -> None:
    int16 = ModbusPoint(channel="t", address=0, type="int16", scale=0.1)
    assert decode_point(int16, [65535 - 99]) == pytest.approx(-10.0)
    assert decode_point(ModbusPoint(channel="t", address=0, type="uint16", offset=-40), [100]) == 60
    assert decode_point(ModbusPoint(channel="t", address=0, type="uint32"), [1, 2]) == 65538
    assert decode_point(ModbusPoint(channel="t", address=0, type="uint32", word_order="little"), [2, 1]) == 65538
    assert decode_point(ModbusPoint(channel="t", address=0, type="int32"), regs_of(">i", -5)) == -5
    little = list(reversed(regs_of(">f", 12.5)))
    assert decode_point(ModbusPoint(channel="t", address=0, type="float32", word_order="little"), little) == 12.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_float_register_is_flagged_not_passed_on(bad: float) -> None:
    assert decode_point(ModbusPoint(channel="t", address=0, type="float32"), regs_of(">f", bad)) is None


# -- journal ------------------------------------------------------------------------------------
def samples(t0: int, n: int) -> list[Sample]:
    return [Sample(ts=t0 + i * 100, values={"v": float(i)}) for i in range(n)]


def test_journal_seals_messages_that_survive_a_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", max_samples_per_message=4)
    sealed = j.append({"d1": samples(0, 10), "d2": samples(0, 1)}, now_ms=5_000)
    assert [(p.device, p.seq - 5_000_000) for p in sealed] == [("d1", 0), ("d1", 1), ("d1", 2), ("d2", 0)]
    msg = decode_telemetry(sealed[1].payload)
    assert (msg.device, msg.seq, [s.ts for s in msg.samples]) == ("d1", 5_000_001, [400, 500, 600, 700])
    j.close()
    again = Journal(tmp_path / "j.db", max_samples_per_message=4)
    assert [p.payload for p in again.take("d1")] == [p.payload for p in sealed[:3]], "same bytes after reopen"
    more = again.append({"d1": samples(2000, 1)}, now_ms=9_000)
    assert more[0].seq == 5_000_003, "the sequence continues; a restart never reuses or jumps back"
    again.ack([sealed[0].id, sealed[1].id])
    assert [p.seq for p in again.pending("d1")] == [5_000_002, 5_000_003]
    assert again.last_accepted()["d1"] == (2000, 11)


def test_disk_budget_drops_oldest_normal_first_and_records_gaps(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", budget_bytes=10**9, max_samples_per_message=10)
    j.append({"d1": samples(0, 10)}, priority=PRIORITY, now_ms=1)
    j.append({"d1": samples(10_000, 10)}, priority=NORMAL, now_ms=2)
    j.append({"d1": samples(20_000, 10)}, priority=NORMAL, now_ms=3)
    size = j.stats().bytes
    j.budget_bytes = size  # full: the next message must push something out
    j.append({"d1": samples(30_000, 10)}, now_ms=4)
    left = [decode_telemetry(p.payload).samples[0].ts for p in j.pending("d1")]
    assert left == [0, 20_000, 30_000], "the oldest normal message went; the alarm window stayed"
    gaps = [decode_event(e.payload) for e in j.unsent_events()]
    assert [(g.device, g.kind, g.data["first_ts"], g.data["last_ts"], g.data["samples"]) for g in gaps] == [
        ("d1", "gap", 10_000, 10_900, 10)]
    assert "disk budget" in gaps[0].message
    j.budget_bytes = 1  # nothing normal is left to drop: priority data goes last
    j.append({"d1": samples(40_000, 10)}, now_ms=5)
    assert j.stats().dropped_samples == 10 + 40
    assert j.stats().messages == 0
    gaps = [decode_event(e.payload) for e in j.unsent_events()]
    assert [(g.data["first_ts"], g.data["last_ts"], g.data["samples"], g.data["messages"]) for g in gaps] == [
        (0, 40_900, 50, 5)], "the device's unsent gap report is extended, not repeated"
    j.close()
    assert Journal(tmp_path / "j.db").stats().dropped_samples == 50, "drop counts survive a restart"


def test_anomaly_windows_are_raised_to_priority_after_the_fact(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", max_samples_per_message=10)
    for start in (10_000, 20_000, 30_000):  # messages of equal size
        j.append({"d1": samples(start, 10)})
    assert j.mark_priority("d1", since_ts=20_500) == 2, "the messages holding samples from 20.5 s on"
    j.budget_bytes = j.stats().bytes + 20 + 250  # the budget counts the gap report (234 bytes) too
    j.append({"d1": samples(40_000, 10)})
    j.append({"d1": samples(50_000, 10)})
    left = [decode_telemetry(p.payload).samples[0].ts for p in j.pending("d1")]
    assert left == [20_000, 30_000, 50_000], "normal data went, newer normal data too, the raised window stayed"


# -- Modbus to the platform ---------------------------------------------------------------------
@contextlib.asynccontextmanager
async def modbus_server(port: int, holding: list[int], inputs: list[int]) -> AsyncIterator[object]:
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    # pymodbus keeps protocol address N at data block address N + 1.
    device = ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, holding), ir=ModbusSequentialDataBlock(1, inputs))
    context = ModbusServerContext(devices={1: device}, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.2)
    try:
        yield device
    finally:
        await server.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def write_holding(port: int, address: int, values: list[int]) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        assert not (await client.write_registers(address, values, device_id=1)).isError()
    finally:
        client.close()


async def register_press(platform: Platform) -> None:
    reg = platform.registry
    await reg.put_tenant(Tenant(id="acme"))
    await reg.put_site(Site(id="s1", tenant="acme"))
    await reg.put_line(Line(id="l1", site="s1"))
    await reg.put_asset(Asset(id="press-a", line="l1", kind="press"))
    await reg.put_profile(DeviceProfile(name="press-v1", channels=[
        ChannelSpec(name="force", unit="kN"), ChannelSpec(name="temp", unit="degC"),
        ChannelSpec(name="count", unit="")]))
    await reg.put_device(Device(id="press-1", tenant="acme", asset="press-a", profile="press-v1"))


async def test_modbus_values_reach_the_store_scaled(tmp_path: Path) -> None:
    mqtt_port, modbus_port = free_port(), free_port()
    holding = [*regs_of(">f", 12.5), 0, 0]
    inputs = [65535 - 49, *regs_of(">I", 70_000)[::-1]]  # temp -5.0 degC (x0.1); count as little-endian words
    text = f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - name: press
    kind: modbus
    host: 127.0.0.1
    port: {modbus_port}
    device: press-1
    poll_ms: 100
    points:
      - {{channel: force, address: 0, type: float32, unit: kN}}
      - {{channel: temp, address: 0, table: input, type: int16, scale: 0.1, unit: degC}}
      - {{channel: count, address: 1, table: input, type: uint32, word_order: little}}
"""
    cfg: AgentConfig = parse_config(text)
    async with (Platform(PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)) as p,
                modbus_server(modbus_port, holding, inputs)):
        await register_press(p)
        agent = Agent(cfg)
        run = asyncio.create_task(agent.run())
        try:
            got = await wait_for_values(p, "press-1", lambda v: v.get("force") == 12.5)
            assert got["temp"] == pytest.approx(-5.0)
            assert got["count"] == 70_000
            await write_holding(modbus_port, 0, regs_of(">f", 99.0))  # the machine's value changes
            got = await wait_for_values(p, "press-1", lambda v: v.get("force") == 99.0)
            assert got["force"] == 99.0
            health = await agent.health()
            assert health["sources"]["press"]["state"] == "ok"
            assert health["sources"]["press"]["bad_values"] == 0
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


async def wait_for_values(p: Platform, device: str, ok: object, timeout_s: float = 10) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    now = int(time.time() * 1000)
    while time.monotonic() < deadline:
        q = await p.store.query_telemetry(device, ("force", "temp", "count"), now - 60_000, now + 60_000, 10_000)
        latest = {ch: vals[-1] for ch, s in q.series.items() if (vals := [v for v in s.max if v is not None])}
        if latest and ok(latest):  # type: ignore[operator]
            return latest
        await asyncio.sleep(0.1)
        now = int(time.time() * 1000)
    raise AssertionError(f"no matching values from {device} within {timeout_s} s")


def test_journal_ids_only_grow_even_when_emptied(tmp_path: Path) -> None:
    """The uplink splits live from backlog by id: an emptied journal must not hand out old ids again."""
    j = Journal(tmp_path / "j.db")
    first = j.append({"d1": samples(0, 1)}, now_ms=1)
    j.ack([first[0].id])
    second = j.append({"d1": samples(1000, 1)}, now_ms=2)
    assert second[0].id > first[0].id


async def test_a_failing_source_is_retried_and_reported_and_stops_nothing(tmp_path: Path) -> None:
    """A Modbus server that is not there: the source reports 'failing' with the reason and keeps retrying;
    the simulator beside it keeps delivering; when the server appears, the source recovers by itself."""
    mqtt_port, modbus_port = free_port(), free_port()
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - {{name: press, kind: modbus, host: 127.0.0.1, port: {modbus_port}, device: press-1, poll_ms: 100,
      timeout_ms: 200, points: [{{channel: force, address: 0, type: float32}}]}}
  - {{name: fleet, kind: simulator, devices: 1, poll_ms: 100}}
""")
    async with Platform(PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)) as p:
        await register_press(p)
        agent = Agent(cfg)
        run = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 10
            while True:  # under load the first polls take longer; the outcome must not depend on it
                health = await agent.health()
                press, fleet = health["sources"]["press"], health["sources"]["fleet"]
                if (press["failures"] >= 1 and fleet["polls"] >= 5 and health["accepted_samples"] >= 5) or \
                        time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert press["state"] == "failing" and press["failures"] >= 1
            assert "press" not in fleet["error"] and fleet["state"] == "ok" and fleet["polls"] >= 5
            assert health["accepted_samples"] >= 5, "the simulator's readings were accepted regardless"
            async with modbus_server(modbus_port, [*regs_of(">f", 7.0), 0, 0], [0, 0, 0]):
                got = await wait_for_values(p, "press-1", lambda v: v.get("force") == 7.0, timeout_s=15)
                assert got["force"] == 7.0
                assert (await agent.health())["sources"]["press"]["state"] == "ok"
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


@contextlib.asynccontextmanager
async def opcua_server(port: int) -> AsyncIterator[tuple[Any, Any]]:
    """A real OPC UA server (asyncua) with an oven: Temp (Double) and Door (Double)."""
    from asyncua.server.server import Server

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    idx = await server.register_namespace("urn:edgeloop:test")
    oven = await server.nodes.objects.add_object(idx, "Oven")
    temp = await oven.add_variable(idx, "Temp", 20.5)
    door = await oven.add_variable(idx, "Door", 0.0)
    async with server:
        yield temp, door


async def test_opcua_values_and_bad_status_reach_the_store(tmp_path: Path) -> None:
    from asyncua import ua

    mqtt_port, opc_port = free_port(), free_port()
    async with (Platform(PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)) as p,
                opcua_server(opc_port) as (temp, door)):
        reg = p.registry
        await register_press(p)
        await reg.put_profile(DeviceProfile(name="oven-v1", channels=[ChannelSpec(name="temp", unit="degC"),
                                                                        ChannelSpec(name="door", unit="")]))
        await reg.put_device(Device(id="oven-1", tenant="acme", asset="press-a", profile="oven-v1"))
        cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - name: oven
    kind: opcua
    url: opc.tcp://127.0.0.1:{opc_port}/
    device: oven-1
    sampling_ms: 50
    poll_ms: 200
    nodes:
      - {{channel: temp, node: "{temp.nodeid.to_string()}", scale: 2.0, unit: degC}}
      - {{channel: door, node: "{door.nodeid.to_string()}"}}
""")
        agent = Agent(cfg)
        run = asyncio.create_task(agent.run())
        try:
            async def latest(channel: str) -> list[float | None]:
                now = int(time.time() * 1000)
                q = await p.store.query_telemetry("oven-1", (channel,), now - 60_000, now + 60_000, 10_000)
                return list(q.series[channel].max) if channel in q.series else []

            deadline = time.monotonic() + 15
            while 41.0 not in await latest("temp"):
                assert time.monotonic() < deadline, "the OPC UA value never arrived"
                await asyncio.sleep(0.1)
            await temp.write_value(ua.DataValue(ua.Variant(999.0, ua.VariantType.Double),
                                                StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
            await door.write_value(1.0)
            deadline = time.monotonic() + 15
            while 1.0 not in await latest("door"):
                assert time.monotonic() < deadline, "the second node's change never arrived"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            assert 1998.0 not in await latest("temp"), "a Bad-status value was passed on as a number"
            health = await agent.health()
            assert health["sources"]["oven"]["bad_values"] >= 1
            assert health["sources"]["oven"]["state"] == "ok"
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run


def test_readings_of_one_device_at_one_time_become_one_sample() -> None:
    from edgeloop.agent.runner import merge_by_time

    merged = merge_by_time([Sample(ts=200, values={"a": 1.0}), Sample(ts=100, values={"b": None}),
                            Sample(ts=200, values={"b": 2.0})])
    assert merged == [Sample(ts=100, values={"b": None}), Sample(ts=200, values={"a": 1.0, "b": 2.0})]


def test_the_agent_command_refuses_a_bad_configuration_clearly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeloop.cli import app

    bad = tmp_path / "agent.yaml"
    bad.write_text(GOOD.replace("type: float32", "type: double"))
    result = CliRunner().invoke(app, ["agent", "--config", str(bad)])
    assert result.exit_code == 1
    assert "line 10 (sources[0].points[0].type)" in " ".join(result.output.split())
    missing = CliRunner().invoke(app, ["agent", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read the agent configuration" in " ".join(missing.output.split())


@pytest.mark.parametrize("example", sorted((Path(__file__).parent.parent / "examples").glob("agent-*.yaml")))
def test_the_example_configurations_are_valid(example: Path) -> None:
    from edgeloop.agent.config import load_config

    cfg = load_config(example)
    assert cfg.sources
    assert Path(cfg.agent.data_dir).is_absolute(), "relative paths are resolved against the file"


def test_untaken_messages_are_sent_coalesced_and_taken_ones_never_change(tmp_path: Path) -> None:
    """An outage's backlog (one small message per commit) goes out as full messages (fast replay); a message
    the uplink has taken keeps its bytes for every resend."""
    j = Journal(tmp_path / "j.db", max_samples_per_message=25)
    for k in range(6):
        j.append({"d1": samples(k * 1000, 10)})  # 60 samples, committed 10 at a time
    size = j.stats().bytes
    taken = j.take("d1", limit=2)
    got = [decode_telemetry(p.payload) for p in taken]
    assert [len(m.samples) for m in got] == [20, 20], "merged up to the message size, two messages asked for"
    assert [x.ts for m in got for x in m.samples] == [x.ts for k in range(4) for x in samples(k * 1000, 10)]
    assert [m.seq for m in got] == [p.seq for p in taken] and got[0].seq < got[1].seq
    assert j.stats().messages == 4 and j.stats().samples == 60 and j.stats().bytes < size
    again = j.take("d1", limit=10)
    assert [p.payload for p in again[:2]] == [p.payload for p in taken], "taken messages keep their bytes"
    assert len(decode_telemetry(again[2].payload).samples) == 20
    j.append({"d1": samples(10_000, 5)}, priority=PRIORITY)
    j.append({"d1": samples(20_000, 5)})
    assert len(j.take("d1", after_id=again[-1].id)) == 2, "priority and normal data are not merged"
    j.ack([p.id for p in j.pending("d1")])
    assert j.stats().messages == 0 and j.stats().bytes == 0
