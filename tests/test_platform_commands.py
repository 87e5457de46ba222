"""Commands from the platform to a machine, end to end: the platform's command service, its embedded broker, a real
agent and a real Modbus server. A command is applied and its answer recorded; one issued while the gateway is
offline is delivered when the gateway is back; one that expires first is never executed; the same idempotency key
issues one command; the API lists what happened."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from typer.testing import CliRunner

from edgeloop.agent.config import parse_config
from edgeloop.agent.runner import Agent
from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.cli import app
from tests.support import free_port
from tests.test_agent import modbus_server, register_press
from tests.test_agent_local import eventually, read_holding, running

SPEED_REGISTER = 10


def agent_yaml(tmp_path: Path, mqtt_port: int, plc: int) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {plc}, device: press-1, poll_ms: 100, timeout_ms: 500,
     points: [{{channel: temp, address: 0}}]}}
actuators:
  - {{name: speed, device: press-1, min: 0, max: 1500, write: {{kind: modbus, source: plc, address: {SPEED_REGISTER}}},
     interlocks: [{{name: hot, device: press-1, channel: temp, above: 90}}]}}
"""


def agent_running(tmp_path: Path, mqtt_port: int, plc: int) -> contextlib.AbstractAsyncContextManager[Agent]:
    return running(Agent(parse_config(agent_yaml(tmp_path, mqtt_port, plc))))


async def test_a_command_is_applied_on_the_plc_and_its_answer_recorded_once(tmp_path: Path) -> None:
    mqtt_port, plc = free_port(), free_port()
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=free_port())
    async with Platform(cfg) as p, modbus_server(plc, [50] + [0] * 9 + [800] + [0] * 5, [0]):
        await register_press(p)
        async with agent_running(tmp_path, mqtt_port, plc) as agent:
            await eventually(lambda: agent.commands.reading("press-1", "temp") is not None, what="a reading")
            await eventually(lambda: p.presence.online.get("press-1") is True, what="press-1 online")
            cmd = await p.commands.issue(device="press-1", action="speed", value=1100, key="test:1", ttl_s=30,
                                         issued_by="ana")
            assert (cmd.seq, cmd.status, cmd.sends) == (1, "sent", 1)
            done = await p.commands.wait(cmd.id, 10)
            assert (done.status, done.value_before, done.read_back) == ("applied", 800, 1100)
            assert await read_holding(plc, SPEED_REGISTER) == 1100
            again = await p.commands.issue(device="press-1", action="speed", value=1200, key="test:1", ttl_s=30,
                                           issued_by="ana")
            assert again.id == cmd.id and again.status == "applied", "the same key: the command already issued"

            refused = await p.commands.issue(device="press-1", action="speed", value=1600, key="test:2", ttl_s=30,
                                             issued_by="ana")
            done = await p.commands.wait(refused.id, 10)
            assert (done.status, done.code, done.seq) == ("refused", "out_of_range", 2)
            assert await read_holding(plc, SPEED_REGISTER) == 1100

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(p.services)),
                                         base_url="http://test") as client:
                listed = (await client.get("/api/v1/commands", params={"device": "press-1"})).json()
                assert [(c["id"], c["status"]) for c in listed] == [(refused.id, "refused"), (cmd.id, "applied")]
                shown = (await client.get(f"/api/v1/commands/{cmd.id}")).json()
                assert (shown["read_back"], shown["trace"]) == (1100, cmd.trace)
                assert (await client.get("/api/v1/commands/cmd-nope")).status_code == 404
            url = p.http_url
            assert url is not None
            table = await asyncio.to_thread(CliRunner().invoke, app, ["commands", "list", "--url", url])
            assert table.exit_code == 0 and "out_of_range" in table.stdout and "1100" in table.stdout, table.output
            one = await asyncio.to_thread(CliRunner().invoke, app, ["commands", "show", cmd.id, "--url", url])
            assert one.exit_code == 0 and "applied" in one.stdout and "before 800, read back 1100" in one.stdout, \
                one.output
        audit = [a.detail for a in await p.store.list_audit(action="command.issue")]
        assert len(audit) == 2 and cmd.id in audit[-1]


async def test_a_command_reaches_a_gateway_that_comes_back_in_time_and_never_one_that_comes_back_too_late(
        tmp_path: Path) -> None:
    mqtt_port, plc = free_port(), free_port()
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)
    async with Platform(cfg) as p, modbus_server(plc, [50] + [0] * 9 + [800] + [0] * 5, [0]):
        await register_press(p)
        late = await p.commands.issue(device="press-1", action="speed", value=900, key="late", ttl_s=1,
                                      issued_by="ana")
        in_time = await p.commands.issue(device="press-1", action="speed", value=1000, key="in-time", ttl_s=60,
                                         issued_by="ana")
        await asyncio.sleep(1.2)
        await p.commands.tick()
        assert (await p.commands.wait(late.id, 1)).status == "expired", "no answer before it ran out: expired"
        async with agent_running(tmp_path, mqtt_port, plc):  # the gateway is back: the resend reaches it
            done = await p.commands.wait(in_time.id, 15)
            assert (done.status, done.read_back) == ("applied", 1000)
            assert done.sends >= 2, "published again once the gateway was back"
            assert await read_holding(plc, SPEED_REGISTER) == 1000
        assert (await p.store.get_command(late.id)).status == "expired"  # type: ignore[union-attr]
        events = await p.store.list_events(device="press-1", kind="command")
        assert [e.data["id"] for e in events] == [in_time.id], "the expired one never reached the machine"
