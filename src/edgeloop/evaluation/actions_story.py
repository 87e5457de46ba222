"""``edgeloop eval actions``: closed-loop actions end to end, measured against what must and must not happen.

The real platform (embedded broker, SQLite, the actions engine), one real agent (the gateway) and three real
Modbus servers (pymodbus) standing in for the PLCs of three presses on one line. Each PLC logs every write to its
speed register: that log is the ground truth of what reached the machines. The scenario (``seed`` picks which
press plays which part, the temperatures and the approvers' names) plays these cases, each with what must happen:

| case | what happens | must the PLC be written? |
|---|---|---|
| ``hot`` | a press runs hot: the ``slow-when-hot`` policy (no approval) slows it | yes |
| ``rate`` | hot again within 10 min: its rate interlock holds | no |
| ``peers`` | another press of the line is stopped, a third runs hot: the peer interlock holds | no |
| ``two_approvals`` | very hot: ``stop-when-very-hot`` needs two people; one approves twice (refused), one more | yes |
| ``rejected`` | very hot again elsewhere: a person rejects | no |
| ``hot_too`` | the ``hot`` policy's own decision beside each very hot one (very hot is hot too) | yes |
| ``setpoints`` | a person runs setpoint policies (no approval) ``rounds`` times over the presses | yes |
| ``unanswered`` | a person-run policy needing one approval: nobody answers, it lapses | no |
| ``hold`` | a technician holds automation on a press (a lease); a person-run policy on it | no |
| ``offline`` | the gateway is offline; an approved command outlives its lifetime; the broker hands it over late | no |
| ``duplicates`` | an applied command is delivered three more times | no more writes |
| ``envelope`` | a policy asks for a speed beyond the gateway's own envelope | no |
| ``override`` | the press's manual switch is on; an approved command arrives | no |

The figures: ``commands_sent``, ``commands_applied`` (read back from the PLC), ``unsafe_executed`` (writes of a
case that must not write), ``duplicate_executed`` (writes beyond one per command), ``records_complete`` (the
share of decisions that sent a command whose record has every link), ``chain_verified``,
``p99_decision_to_applied_ms`` (the moment a decision could act, its creation or last approval, to the value read
back from the PLC, as the gateway answered), and per case what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.actions.engine import verify_log
from edgeloop.agent.config import parse_config
from edgeloop.agent.runner import Agent, cancel_all
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.errors import ConflictError
from edgeloop.messages import Command, TopicKind, encode, topic
from edgeloop.store.actions import CommandRecord, DecisionRecord

__all__ = ["ActionsConfig", "run_actions"]

TENANT = "acme"
SPEED, TEMP, RUNNING, MANUAL = 10, 0, 1, 2  # holding registers of each PLC
Report = Callable[[str, float, dict[str, Any]], None]

RULES = """\
version: 1
rules:
  - {name: hot, kind: threshold, channel: temp, above: 80, clear_below: 75, severity: warning}
  - {name: very-hot, kind: threshold, channel: temp, above: 110, clear_below: 100, severity: critical}
"""

POLICIES = """\
policies:
  - name: slow-when-hot
    mode: "on"
    trigger: {kind: alert, rule: hot}
    action: {kind: setpoint, actuator: speed, value: 600, channel: temp}
    preconditions: {fresh_s: 10}
    interlocks:
      - {kind: peers, name: line-stopped, channel: running, equals: 0}
      - {kind: rate, name: one-per-10-min, max: 1, window_s: 600}
    approval: none
    ttl_s: 30
  - name: stop-when-very-hot
    mode: "on"
    trigger: {kind: alert, rule: very-hot}
    action: {kind: setpoint, actuator: speed, value: 0, channel: temp}
    preconditions: {fresh_s: 10}
    approval: two
    ttl_s: 120
  - name: manual-speed
    mode: "on"
    trigger: {kind: person}
    action: {kind: setpoint, actuator: speed, value: 900, channel: temp}
    preconditions: {fresh_s: 10}
    approval: one
    ttl_s: TTL
  - name: speed-850
    mode: "on"
    trigger: {kind: person}
    action: {kind: setpoint, actuator: speed, value: 850, channel: temp}
    preconditions: {fresh_s: 10}
    approval: none
    ttl_s: 60
  - name: speed-950
    mode: "on"
    trigger: {kind: person}
    action: {kind: setpoint, actuator: speed, value: 950, channel: temp}
    preconditions: {fresh_s: 10}
    approval: none
    ttl_s: 60
  - name: manual-overspeed
    mode: "on"
    trigger: {kind: person}
    action: {kind: setpoint, actuator: speed, value: 2000, channel: temp}
    preconditions: {fresh_s: 10}
    approval: none
    ttl_s: 60
"""


@dataclass(frozen=True)
class ActionsConfig:
    seed: int = 1
    ttl_s: float = 12.0  # the person-run policy's lifetime (the unanswered and offline cases wait it out)
    rounds: int = 60  # setpoints a person runs, one after the other (the latency figures' sample)
    data_dir: Path | None = None  # default: a temporary directory


@dataclass
class _Case:
    name: str
    press: str
    must_write: bool
    value: float | None = None
    decisions: list[str] = field(default_factory=list)
    note: str = ""


class _Plc:
    """A Modbus server for one press (pymodbus's simulator). Every write to its speed register is logged (time,
    value): the ground truth of what reached the machine. The scenario changes the other registers (temperature,
    running, the manual switch) as the machine would, applied at the next request."""

    def __init__(self, port: int, speed: int) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.writes: list[tuple[float, int]] = []
        self._pending: dict[int, int] = {}
        registers = [70, 1, 0] + [0] * 7 + [speed] + [0] * 5
        device = SimDevice(id=1, simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)],
                           action=self._action)
        self.server: Any = ModbusTcpServer(device, address=("127.0.0.1", port))
        self.port = port

    async def _action(self, _function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int], set_values: list[int] | list[bool] | None) -> None:
        for register, value in self._pending.items():
            current_registers[register - start_address] = value
        self._pending.clear()
        if set_values is not None and address <= SPEED < address + count:
            self.writes.append((time.time(), int(set_values[SPEED - address])))

    def set(self, register: int, value: int) -> None:
        """The machine changes (its temperature, its switches: never the speed register)."""
        assert register != SPEED
        self._pending[register] = value


def _agent_yaml(data_dir: Path, mqtt_port: int, plcs: dict[str, _Plc]) -> str:
    sources = "".join(f"""\
  - {{name: plc-{press}, kind: modbus, host: 127.0.0.1, port: {plc.port}, device: {press}, poll_ms: 100,
     timeout_ms: 500, points: [{{channel: temp, address: {TEMP}}}, {{channel: running, address: {RUNNING}}},
     {{channel: manual, address: {MANUAL}}}]}}
""" for press, plc in plcs.items())
    actuators = "".join(f"""\
  - {{name: speed, device: {press}, min: 0, max: 1500, max_step: 1500, override: manual,
     write: {{kind: modbus, source: plc-{press}, address: {SPEED}}}}}
""" for press in plcs)
    return (f"agent: {{tenant: {TENANT}, gateway: gw-1, data_dir: {data_dir / 'agent'}, commit_ms: 50}}\n"
            f"uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}\nsources:\n{sources}actuators:\n{actuators}")


async def run_actions(cfg: ActionsConfig, progress: Report | None = None) -> dict[str, Any]:
    report = progress or (lambda _stage, _frac, _data: None)
    with contextlib.ExitStack() as stack:
        base = cfg.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-actions-")))
        return await _run(cfg, base, report)
    raise AssertionError("unreachable")  # pragma: no cover


async def _run(cfg: ActionsConfig, base: Path, report: Report) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    presses = ["press-1", "press-2", "press-3"]
    rng.shuffle(presses)
    a, b, c = presses  # the parts each press plays this run
    people = rng.sample(["ana", "ben", "chen", "dara", "eli"], 3)

    def hot() -> int:
        return rng.randint(85, 99)

    def very_hot() -> int:
        return rng.randint(112, 130)

    started = time.time()
    mqtt_port = free_port()
    plcs = {p: _Plc(free_port(), speed=rng.randint(700, 1100)) for p in sorted(presses)}
    pcfg = PlatformConfig(data_dir=base / "platform", mqtt_port=mqtt_port, http_port=None)
    async with Platform(pcfg) as platform, _serving(plcs):
        p = platform
        p.actions.effect_after_s = 1.0
        await _register(p, presses)
        await p.alerts.replace_rules(RULES, by="eval", tenant=TENANT)
        await p.actions.put_policies(TENANT, POLICIES.replace("TTL", f"{cfg.ttl_s:g}"), by="eval")
        agent_cfg = parse_config(_agent_yaml(base, mqtt_port, plcs))
        world = _World(p, plcs, agent_cfg)
        await world.start_agent()
        await world.until(lambda: all(p.readings.newest_ts(d) is not None for d in presses), "first readings")
        cases: list[_Case] = []

        report("hot", 0.05, {})
        case = _Case("hot", a, True, 600)
        cases.append(case)
        case.decisions.append(await world.heat(a, hot(), policy="slow-when-hot"))
        await world.settle(case.decisions[-1])
        applied_cmd = (await p.store.get_decision(case.decisions[-1])).command  # type: ignore[union-attr]
        await world.cool(a)

        report("rate", 0.12, {})
        case = _Case("rate", a, False, 600)
        cases.append(case)
        case.decisions.append(await world.heat(a, hot(), policy="slow-when-hot"))
        await world.cool(a)

        report("peers", 0.2, {})
        case = _Case("peers", b, False, 600)
        cases.append(case)
        plcs[c].set(RUNNING, 0)
        await world.until(lambda: _value(p, c, "running") == 0, "a press stopped")
        case.decisions.append(await world.heat(b, hot(), policy="slow-when-hot"))
        plcs[c].set(RUNNING, 1)
        await world.until(lambda: _value(p, c, "running") == 1, "the press running again")
        await world.cool(b)

        report("two approvals", 0.3, {})
        case = _Case("two_approvals", b, True, 0)
        cases.append(case)
        decision = await world.heat(b, very_hot(), policy="stop-when-very-hot", state="awaiting_approval")
        case.decisions.append(decision)
        cases.append(await world.alongside(b, decision, "hot_too"))
        await p.actions.approve(decision, by=people[0], approve=True)
        try:
            await p.actions.approve(decision, by=people[0], approve=True)
            case.note = "the same person approved twice"
        except ConflictError as exc:  # the refusal is the point
            case.note = f"second approval by {people[0]} refused: {type(exc).__name__}"
        await p.actions.approve(decision, by=people[1], approve=True)
        await world.settle(decision)
        await world.cool(b)

        report("rejected", 0.4, {})
        case = _Case("rejected", c, False, 0)
        cases.append(case)
        decision = await world.heat(c, very_hot(), policy="stop-when-very-hot", state="awaiting_approval")
        case.decisions.append(decision)
        cases.append(await world.alongside(c, decision, "hot_too"))
        await p.actions.approve(decision, by=people[2], approve=False, note="running a test batch")
        await world.cool(c)

        report("a run of setpoints", 0.45, {})
        for i in range(cfg.rounds):
            policy = "speed-850" if i % 2 == 0 else "speed-950"
            run = _Case("setpoints", presses[i % 3], True, 850 if i % 2 == 0 else 950)
            cases.append(run)
            decided = await p.actions.run_person(TENANT, policy, _asset(run.press), by=people[i % 3])
            run.decisions.append(decided.id)
            await world.settle(decided.id)

        report("unanswered, hold, envelope, override", 0.5, {})
        unanswered = _Case("unanswered", a, False, 900)
        cases.append(unanswered)
        unanswered.decisions.append((await p.actions.run_person(TENANT, "manual-speed", _asset(a), by=people[0])).id)
        hold = _Case("hold", b, False, 900)
        cases.append(hold)
        lease = await p.actions.hold(TENANT, _asset(b), by=people[1], duration_s=5, reason="bearing change")
        hold.decisions.append((await p.actions.run_person(TENANT, "manual-speed", _asset(b), by=people[1])).id)
        hold.note = f"hold {lease.id}"
        envelope = _Case("envelope", c, False, 2000)
        cases.append(envelope)
        envelope.decisions.append((await p.actions.run_person(TENANT, "manual-overspeed", _asset(c),
                                                              by=people[2])).id)
        await world.settle(envelope.decisions[-1])
        override = _Case("override", c, False, 900)
        cases.append(override)
        plcs[c].set(MANUAL, 1)
        await world.until(lambda: _value(p, c, "manual") == 1, "the manual switch on")
        d = await p.actions.run_person(TENANT, "manual-speed", _asset(c), by=people[2])
        override.decisions.append(d.id)
        await p.actions.approve(d.id, by=people[0], approve=True)
        await world.settle(d.id)
        plcs[c].set(MANUAL, 0)

        report("duplicates", 0.6, {})
        dup = _Case("duplicates", a, False, 600, note=f"command {applied_cmd} delivered three more times")
        cases.append(dup)
        stored = await p.store.get_command(applied_cmd)
        assert stored is not None
        for _ in range(3):
            await world.deliver(stored)

        report("offline", 0.7, {})
        offline = _Case("offline", b, False, 900)
        cases.append(offline)
        await asyncio.sleep(max(0.0, lease.until_ms / 1000 - time.time()))  # the hold on b has ended
        await world.stop_agent()
        d = await p.actions.run_person(TENANT, "manual-speed", _asset(b), by=people[1])
        offline.decisions.append(d.id)
        await p.actions.approve(d.id, by=people[2], approve=True)
        late = await p.store.get_decision(d.id)
        await asyncio.sleep(cfg.ttl_s + 1)  # it outlives its lifetime while the gateway is away
        await world.tick()
        await world.start_agent()
        if late is not None and late.command:
            cmd = await p.store.get_command(late.command)
            if cmd is not None:
                await world.deliver(cmd)  # a broker that kept it hands it over late
        offline.note = f"command {late.command if late else '?'} handed over {cfg.ttl_s + 1:g} s late"

        report("waiting out the lifetimes", 0.85, {})
        deadline = time.monotonic() + cfg.ttl_s + 10
        while time.monotonic() < deadline:
            await world.tick()
            open_ = [x for case in cases for x in case.decisions
                     if (dd := await p.store.get_decision(x)) is not None and dd.state in
                     ("awaiting_approval", "approved", "sent", "applied")]
            if not open_:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        await world.stop_agent()
        result = await _figures(p, cases, plcs, cfg, started)
    report("done", 1.0, {})
    return result


class _World:
    def __init__(self, platform: Platform, plcs: dict[str, _Plc], agent_cfg: Any) -> None:
        self.p = platform
        self.plcs = plcs
        self.agent_cfg = agent_cfg
        self.task: asyncio.Task[None] | None = None

    async def start_agent(self) -> None:
        agent = Agent(self.agent_cfg)
        self.task = asyncio.create_task(agent.run(drain_s=0.5), name="eval-agent")
        await self.until(lambda: all(self.p.presence.online.get(d) for d in self.plcs), "the gateway online")

    async def stop_agent(self) -> None:
        """The gateway goes away (a clean stop: it drains what it can, then lets go of its data directory)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
            self.task = None
        await self.until(lambda: not self.p.presence.online.get(next(iter(self.plcs)), False), "the gateway gone")

    async def tick(self) -> None:
        await self.p.commands.tick()
        await self.p.actions.step()

    async def until(self, check: Callable[[], object], what: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"eval actions: {what} not within {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def heat(self, press: str, temp: int, *, policy: str, state: str | None = None) -> str:
        """The press runs at ``temp``: the policy decides; returns its decision (once in ``state``, if given)."""
        since = int(time.time() * 1000)
        self.plcs[press].set(TEMP, temp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await self.tick()
            found = [d for d in await self.p.store.list_decisions(tenant=TENANT, asset=_asset(press), since=since)
                     if d.policy == policy]
            if found and (state is None or found[0].state == state):
                return found[0].id
            await asyncio.sleep(0.1)
        raise TimeoutError(f"eval actions: no decision of {policy} on {press} at {temp}")

    async def alongside(self, press: str, decision: str, name: str) -> _Case:
        """The ``hot`` policy's decision on the same press, taken with ``decision`` (very hot is hot too): it may
        act (its own checks decide)."""
        first = await self.p.store.get_decision(decision)
        assert first is not None
        found = [d for d in await self.p.store.list_decisions(tenant=TENANT, asset=_asset(press),
                                                              since=first.created_ms - 5000)
                 if d.policy == "slow-when-hot"]
        case = _Case(name, press, True, 600, decisions=[d.id for d in found[:1]])
        if found:
            await self.settle(found[0].id)
        return case

    async def settle(self, decision: str, timeout_s: float = 20) -> DecisionRecord:
        """Until the decision's command is answered (or the decision ends without one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.tick()
            d = await self.p.store.get_decision(decision)
            assert d is not None
            if d.state not in ("approved", "sent") or time.monotonic() > deadline:
                return d
            await asyncio.sleep(0.05)

    async def cool(self, press: str) -> None:
        """Back to normal; the technician resolves the press's alerts, so a new one can open."""
        self.plcs[press].set(TEMP, 70)
        await self.until(lambda: _value(self.p, press, "temp") == 70, f"{press} cooled")
        for alert in await self.p.store.list_alerts(tenant=TENANT, asset=_asset(press), unresolved=True):
            await self.p.alerts.resolve(alert.id, by="eval")

    async def deliver(self, cmd: CommandRecord) -> None:
        """Publish a stored command on its device's cmd topic, as a broker redelivering it would."""
        message = Command(id=cmd.id, key=cmd.key, device=cmd.device, seq=cmd.seq, ts=cmd.ts, expires=cmd.expires,
                          action=cmd.action, value=cmd.value, trace=cmd.trace, issued_by=cmd.issued_by,
                          decision=cmd.decision)

        def send() -> None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"redeliver-{time.monotonic_ns()}")
            client.connect("127.0.0.1", self.p.config.mqtt_port)
            client.loop_start()
            try:
                client.publish(topic(TENANT, cmd.device, TopicKind.CMD), encode(message), qos=1).wait_for_publish(5)
            finally:
                client.disconnect()
                client.loop_stop()

        await asyncio.to_thread(send)
        await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def _serving(plcs: dict[str, _Plc]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(plc.server.serve_forever()) for plc in plcs.values()]
    await asyncio.sleep(0.3)
    try:
        yield
    finally:
        for plc in plcs.values():
            await plc.server.shutdown()
        await cancel_all(tasks)


async def _register(p: Platform, presses: list[str]) -> None:
    reg = p.registry
    await reg.put_tenant(Tenant(id=TENANT))
    await reg.put_site(Site(id="plant", tenant=TENANT))
    await reg.put_line(Line(id="line-1", site="plant"))
    await reg.put_profile(DeviceProfile(name="press", channels=[
        ChannelSpec(name="temp", unit="degC"), ChannelSpec(name="running"), ChannelSpec(name="manual")]))
    for press in sorted(presses):
        await reg.put_asset(Asset(id=_asset(press), line="line-1", kind="press"))
        await reg.put_device(Device(id=press, tenant=TENANT, asset=_asset(press), profile="press"))
    await reg.put_line(Line(id="infra", site="plant"))  # the gateway is no machine of the presses' line
    await reg.put_profile(DeviceProfile(name="gateway", channels=[ChannelSpec(name="cpu", unit="%")]))
    await reg.put_asset(Asset(id="gw-1-asset", line="infra", kind="gateway"))
    await reg.put_device(Device(id="gw-1", tenant=TENANT, asset="gw-1-asset", profile="gateway"))


def _asset(press: str) -> str:
    return f"{press}-asset"


def _value(p: Platform, device: str, channel: str) -> float | None:
    found = p.readings.reading(device, channel)
    return None if found is None else found.value


async def _figures(p: Platform, cases: list[_Case], plcs: dict[str, _Plc], cfg: ActionsConfig,
                   started: float) -> dict[str, Any]:
    commands = await p.store.list_commands(tenant=TENANT, limit=10_000)
    decisions = {d: await p.store.get_decision(d) for case in cases for d in case.decisions}
    # every write to a speed register, matched to a command of a case that must write
    must = {x for case in cases if case.must_write for x in case.decisions}
    allowed = sorted((c.device, c.value, c.ts, c.id) for c in commands if c.decision in must)
    matched: dict[str, int] = {}
    unsafe, duplicate = 0, 0
    writes = sorted((t, press, v) for press, plc in plcs.items() for t, v in plc.writes)
    for t, press, value in writes:
        fits = [cid for dev, val, ts, cid in allowed if dev == press and val == value and ts <= t * 1000 + 1000]
        fresh = [cid for cid in fits if cid not in matched]
        if fresh:
            matched[fresh[0]] = 1
        elif fits:
            duplicate += 1
        else:
            unsafe += 1
    applied = [c for c in commands if c.status == "applied"]
    latencies = []
    complete = 0
    acted = [d for d in decisions.values() if d is not None and d.command]
    for d in acted:
        entries = await p.store.decision_entries(d.id)
        kinds = [e.kind for e in entries]
        bodies = {e.kind: json.loads(e.body) for e in entries}
        cmd = next((c for c in commands if c.id == d.command), None)
        links = ["decided" in kinds, "checked" in kinds, "sent" in kinds, "answered" in kinds,
                 bodies.get("decided", {}).get("trace") == d.trace, cmd is not None and cmd.trace == d.trace,
                 kinds.count("approved") >= d.needed]
        if d.cause.startswith("alert "):
            links.append(bool(bodies.get("decided", {}).get("samples", {}).get("seqs")))
        if cmd is not None and cmd.status == "applied":
            links += [bodies.get("answered", {}).get("read_back") is not None, "effect" in kinds]
            ready = max([e.ts for e in entries if e.kind in ("decided", "approved")])
            latencies.append(cmd.status_ms - ready)
        complete += all(links)
    chain = await verify_log(p.store)
    per_case = []
    for case in cases:
        states = [found.state if (found := decisions.get(x)) is not None else "?" for x in case.decisions]
        wrote = sum(1 for t, press, v in writes if press == case.press and v == case.value
                    and any((dd := decisions.get(x)) is not None and dd.created_ms <= t * 1000 + 1000
                            for x in case.decisions))
        per_case.append({"case": case.name, "press": case.press, "must_write": case.must_write,
                         "decisions": states, "note": case.note,
                         "answers": [c.status + (f" ({c.code})" if c.code else "") for c in commands
                                     if c.decision in case.decisions], "plc_writes_of_its_value": wrote})
    lat = np.asarray(latencies, dtype=float)
    return {
        "seed": cfg.seed,
        "commands_sent": sum(1 for c in commands if c.sends > 0),
        "commands_applied": len(applied),
        "plc_writes": len(writes),
        "unsafe_executed": unsafe,
        "duplicate_executed": duplicate,
        "records_complete": round(complete / len(acted), 3) if acted else 0.0,
        "decisions_with_commands": len(acted),
        "chain_verified": chain.ok,
        "chain_records": chain.records,
        "p50_decision_to_applied_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_decision_to_applied_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "applied_measured": len(lat),
        "cases": per_case,
        "wall_seconds": round(time.time() - started, 1),
    }
