"""Commands through ``kill -9``: the agent killed the moment its write reaches the PLC, and the platform killed the
moment it decided. The PLC (pymodbus's simulator) logs every write to its speed register: each command reaches
the machine exactly once, and its answer is recorded after the restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.agent.config import parse_config
from edgeloop.agent.runner import Agent, cancel_all
from edgeloop.app import Platform, PlatformConfig
from edgeloop.messages import Command, TopicKind, encode, topic
from edgeloop.store.actions import CommandRecord
from tests.support import free_port
from tests.test_agent import register_press

SPEED = 10


class Plc:
    """One machine: holding registers 0..15 (temp at 0, speed at 10); every write to the speed register is logged,
    and ``on_write`` runs when one arrives (before the PLC answers it)."""

    def __init__(self, port: int) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.port = port
        self.writes: list[int] = []
        self.on_write: Callable[[], None] = lambda: None
        device = SimDevice(id=1, simdata=[SimData(0, values=[50] + [0] * 9 + [800] + [0] * 5,
                                                  datatype=DataType.REGISTERS)], action=self._action)
        self.server: Any = ModbusTcpServer(device, address=("127.0.0.1", port))

    async def _action(self, _code: int, _start: int, address: int, count: int, _registers: list[int],
                      set_values: list[int] | list[bool] | None) -> None:
        if set_values is not None and address <= SPEED < address + count:
            self.writes.append(int(set_values[SPEED - address]))
            self.on_write()


@contextlib.asynccontextmanager
async def serving(plc: Plc) -> AsyncIterator[Plc]:
    task = asyncio.create_task(plc.server.serve_forever())
    await asyncio.sleep(0.2)
    try:
        yield plc
    finally:
        await plc.server.shutdown()
        await cancel_all([task])


def agent_yaml(data: Path, mqtt_port: int, plc: int) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {data}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {plc}, device: press-1, poll_ms: 100, timeout_ms: 500,
     points: [{{channel: temp, address: 0}}]}}
actuators:
  - {{name: speed, device: press-1, min: 0, max: 1500, write: {{kind: modbus, source: plc, address: {SPEED}}}}}
"""


async def until(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


async def test_an_agent_killed_mid_write_never_writes_twice_and_the_answer_comes_after_its_restart(
        tmp_path: Path) -> None:
    mqtt_port = free_port()
    config = tmp_path / "agent.yaml"
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)
    async with Platform(cfg) as p, serving(Plc(free_port())) as plc:
        config.write_text(agent_yaml(tmp_path / "agent", mqtt_port, plc.port))
        await register_press(p)
        log = (tmp_path / "agent.log").open("ab")

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "edgeloop", "agent", "--config", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT)

        agent = start()
        try:
            await until(lambda: _true(p.presence.online.get("press-1") is True), "the agent online")
            plc.on_write = lambda: os.kill(agent.pid, signal.SIGKILL)  # dead before the PLC answers the write
            cmd = await p.commands.issue(device="press-1", action="speed", value=1200, key="k1", ttl_s=60,
                                         issued_by="ana")
            await asyncio.to_thread(agent.wait, 20)
            assert agent.returncode == -signal.SIGKILL and plc.writes == [1200]
            plc.on_write = lambda: None
            agent = start()  # the platform resends the unanswered command every 5 s meanwhile
            done = await p.commands.wait(cmd.id, 30)
            assert (done.status, done.read_back) == ("applied", 1200), done
            assert "stopped during the write" in done.reason
            await redeliver(mqtt_port, done)  # as a broker redelivering it would: answered again, not executed
            await until(lambda: _true(f"command {cmd.id} delivered again (it is applied)" in
                                      (tmp_path / "agent.log").read_text()), "the redelivery seen by the agent")
            assert plc.writes == [1200], "one write, whatever was redelivered"
        finally:
            agent.kill()
            agent.wait(10)
            log.close()


async def _true(value: bool) -> bool:
    return value


async def redeliver(mqtt_port: int, cmd: CommandRecord) -> None:
    message = Command(id=cmd.id, key=cmd.key, device=cmd.device, seq=cmd.seq, ts=cmd.ts, expires=cmd.expires,
                      action=cmd.action, value=cmd.value, trace=cmd.trace, issued_by=cmd.issued_by)

    def send() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="redeliver")
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        try:
            client.publish(topic("acme", cmd.device, TopicKind.CMD), encode(message), qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    await asyncio.to_thread(send)


def start_platform(data_dir: Path, port: int, mqtt_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "edgeloop", "up", "--devices", "0", "--data-dir",
                                 str(data_dir), "--port", str(port), "--mqtt-port", str(mqtt_port), "--no-auth",
                                 "--no-mqtt-tls"],
                                stdout=out, stderr=subprocess.STDOUT)


POLICY = """\
policies:
  - {name: speed-up, mode: "on", trigger: {kind: person}, approval: none, ttl_s: 120,
     preconditions: {fresh_s: 30}, action: {kind: setpoint, actuator: speed, value: 1300, device: press-1}}
"""


async def test_a_platform_killed_as_it_decides_acts_exactly_once_after_its_restart(tmp_path: Path) -> None:
    port, mqtt_port = free_port(), free_port()
    data, log = tmp_path / "platform", tmp_path / "platform.log"
    api = f"http://127.0.0.1:{port}/api/v1"
    platform = start_platform(data, port, mqtt_port, log)
    agent_task: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=api, timeout=10) as client, serving(Plc(free_port())) as plc:
            async def up() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(up, "the platform's API", 60)
            for kind, body in [("tenants", {"id": "acme"}), ("sites", {"id": "s1", "tenant": "acme"}),
                               ("lines", {"id": "l1", "site": "s1"}), ("assets", {"id": "press-a", "line": "l1"}),
                               ("profiles", {"name": "press-v1", "channels": [{"name": "temp"}]}),
                               ("devices", {"id": "press-1", "tenant": "acme", "asset": "press-a",
                                            "profile": "press-v1"})]:
                assert (await client.post(f"/{kind}", json=body)).status_code == 201
            assert (await client.put("/policies?tenant=acme", content=POLICY)).status_code == 200
            agent = Agent(parse_config(agent_yaml(tmp_path / "agent", mqtt_port, plc.port)))
            agent_task = asyncio.create_task(agent.run(drain_s=0.5))

            async def fresh() -> bool:
                found = await client.post("/policies/speed-up/run?tenant=acme", json={"asset": "press-a"})
                return bool(found.status_code == 201 and found.json()["state"] != "held")

            await until(fresh, "a decision that acts (the agent's readings reached the platform)", 60)
            platform.send_signal(signal.SIGKILL)  # the moment it decided
            await asyncio.to_thread(platform.wait, 20)
            platform = start_platform(data, port, mqtt_port, log)
            await until(up, "the restarted platform's API", 60)

            async def settled() -> dict[str, Any] | None:
                [d] = [d for d in (await client.get("/decisions")).json() if d["state"] != "held"]  # the one that acts
                return d if d["state"] in ("applied", "verified") else None

            decision = await until(settled, "the decision answered after the restart", 60)
            command = (await client.get(f"/commands/{decision['command']}")).json()
            assert (command["status"], command["read_back"]) == ("applied", 1300)
            assert plc.writes == [1300], "exactly one write across the platform's kill -9"
            chain = (await client.get("/decision-log/verify")).json()
            assert chain["ok"] is True, chain
    finally:
        if agent_task is not None:
            await cancel_all([agent_task])
        platform.kill()
        platform.wait(10)
