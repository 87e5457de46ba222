"""Closed-loop actions on the real platform with a real agent and a real Modbus PLC: an alert fires a policy, its
checks hold or pass with the values they saw, people approve (two different ones), dry-run sends nothing, a hold
on the asset (manual override) stops automation until its lease ends, the command is applied and read back, and
every step is on the hash-chained decision log, which names a record that was altered or removed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgeloop.actions.engine import verify_log
from edgeloop.actions.policy import parse_policies
from edgeloop.agent.config import parse_config
from edgeloop.agent.runner import Agent
from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, Device
from edgeloop.cli import app
from edgeloop.errors import ConfigError
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from edgeloop.store import Store
from edgeloop.store.actions import DecisionEntry, DecisionRecord
from tests.support import HOT_RULES, free_port
from tests.test_agent import modbus_server, register_press, write_holding
from tests.test_agent_local import eventually, read_holding
from tests.test_api import publish_all

SPEED = 10  # the PLC's speed setpoint register
API = "/api/v1"


def policy(name: str = "slow-when-hot", *, mode: str = "on", approval: str = "none", extra: str = "",
           value: int = 600) -> str:
    return f"""\
  - name: {name}
    mode: {mode}
    trigger: {{kind: alert, rule: hot, assets: [press-a]}}
    action: {{kind: setpoint, actuator: speed, value: {value}, device: press-1}}
    preconditions: {{fresh_s: 10}}
    approval: {approval}
    ttl_s: 60
{extra}"""


# -- the policy document ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "needle"), [
    (policy(mode="sometimes"), r"line 3 \(policies\[0\] 'slow-when-hot', mode\)"),
    (policy(extra="    interlocks: [{kind: state, name: b, device: pump-b, channel: running}]\n"),
     "interlock 'b': give exactly one of above, below, equals"),
    (policy() + policy(), "the name is used twice"),
    (policy(extra="    interlocks: [{kind: rate, name: r, max: 1, window_s: 60}, {kind: rate, name: r, max: 2, "
                  "window_s: 60}]\n"), "interlock names must be unique"),
    (policy().replace("setpoint, actuator: speed, value: 600, device: press-1", "reboot"), "line 5"),
])
def test_a_policy_that_cannot_work_is_refused_with_its_line(body: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_policies("policies:\n" + body)


# -- the decision log -----------------------------------------------------------------------------------------------
def record(decision: str, kind: str, ts: int) -> DecisionEntry:
    return DecisionEntry(decision=decision, tenant="acme", asset="press-a", ts=ts, kind=kind, actor="system",
                         body=json.dumps({"n": ts}))


async def test_the_chain_names_a_record_altered_or_removed(store: Store) -> None:
    d = DecisionRecord(id="dec-1", tenant="acme", asset="press-a", device="press-1", policy="p", policy_version=1,
                       mode="on", state="held", created_ms=1, updated_ms=1, expires_ms=2)
    await store.record_decision(d, [record("dec-1", "decided", 1), record("dec-1", "checked", 2)], new=True)
    await store.record_decision(d, [record("dec-1", "held", 3), record("dec-1", "note", 4)], expect_state="held")
    assert not await store.record_decision(d, [record("dec-1", "x", 5)], expect_state="sent"), "compare-and-set"
    clean = await verify_log(store)
    assert (clean.ok, clean.records) == (True, 4)
    entries = await store.decision_entries("dec-1")
    assert [e.kind for e in entries] == ["decided", "checked", "held", "note"]
    assert entries[1].prev == entries[0].hash and len(entries[0].hash) == 64

    await store.driver.execute("UPDATE decision_log SET body=? WHERE id=?", ('{"n":99}', entries[1].id))
    altered = await verify_log(store)
    assert not altered.ok and altered.problems == [f"record {entries[1].id} (dec-1 checked): its content does not "
                                                   "match its hash: it was altered"]
    await store.driver.execute("UPDATE decision_log SET body=? WHERE id=?", (entries[1].body, entries[1].id))
    await store.driver.execute("DELETE FROM decision_log WHERE id=?", (entries[2].id,))
    removed = await verify_log(store)
    assert len(removed.problems) == 1 and removed.problems[0].startswith(f"record {entries[3].id} (dec-1 note): it "
                                                                         "follows")


# -- on the platform, with a real agent and PLC ----------------------------------------------------------------------
def agent_yaml(tmp_path: Path, mqtt_port: int, plc: int) -> str:
    return f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}, commit_ms: 50}}
uplink: {{mqtt: 127.0.0.1:{mqtt_port}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {plc}, device: press-1, poll_ms: 100, timeout_ms: 500,
     points: [{{channel: temp, address: 0}}]}}
actuators:
  - {{name: speed, device: press-1, min: 0, max: 1500, write: {{kind: modbus, source: plc, address: {SPEED}}}}}
"""


@dataclass
class Plant:
    platform: Platform
    client: httpx.AsyncClient
    plc: int
    heated_ms: int = 0

    async def call(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        resp = await self.client.request(method, f"{API}{path}", **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        return resp.json()

    async def policies(self, *bodies: str) -> None:
        await self.call("PUT", "/policies?tenant=acme", content="policies:\n" + "".join(bodies))

    async def heat(self) -> int:
        """The press runs hot: an alert of rule ``hot`` opens; returns its id."""
        self.heated_ms = int(time.time() * 1000)
        await write_holding(self.plc, 0, [95])
        return int(await until(self, self._open_alert))

    async def cool(self) -> None:
        """Back to normal, and the technician resolves the alert (a new one can open)."""
        await write_holding(self.plc, 0, [50])
        await eventually(lambda: self._temp() == 50, what="the reading back to 50")
        for alert in await self.platform.store.list_alerts():
            if alert.status != "resolved":
                await self.platform.alerts.resolve(alert.id, by="test")
        await until(self, self._no_open_alert)

    def _temp(self) -> float | None:
        found = self.platform.readings.reading("press-1", "temp")
        return None if found is None else found.value

    async def _open_alert(self) -> int | None:
        found = [a for a in await self.platform.store.list_alerts() if a.status == "open" and a.kind == "hot"]
        return found[0].id if found else None

    async def _no_open_alert(self) -> bool:
        return not [a for a in await self.platform.store.list_alerts() if a.status != "resolved"]

    async def decision(self, *, state: str) -> dict[str, Any]:
        """The newest decision, made since the press last ran hot, once it is in ``state``, with its record."""
        async def newest() -> dict[str, Any] | None:
            found = await self.call("GET", f"/decisions?limit=1&since={self.heated_ms}")
            if not found or found[0]["state"] != state:
                return None
            return await self.call("GET", f"/decisions/{found[0]['id']}")  # type: ignore[no-any-return]
        return await until(self, newest)  # type: ignore[no-any-return]


async def until(plant: Plant, probe: Any, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await plant.platform.actions.step()
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s")


@contextlib.asynccontextmanager
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    mqtt_port, plc = free_port(), free_port()
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=mqtt_port, http_port=None)
    async with Platform(cfg) as p, modbus_server(plc, [50] + [0] * 9 + [800] + [0] * 5, [0]):
        await register_press(p)
        await p.alerts.replace_rules(HOT_RULES, by="test", tenant="acme")
        p.actions.effect_after_s = 0.5
        agent = Agent(parse_config(agent_yaml(tmp_path, mqtt_port, plc)))
        task = asyncio.create_task(agent.run(drain_s=0.5))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(p.services)),
                                         base_url="http://test") as client:
                await eventually(lambda: p.presence.online.get("press-1") is True, what="press-1 online")
                await eventually(lambda: p.readings.newest_ts("press-1") is not None, what="a reading")
                yield Plant(p, client, plc)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def kinds(view: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in view["entries"]]


def body(view: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e["body"] for e in view["entries"] if e["kind"] == kind)  # type: ignore[no-any-return]


async def test_an_alert_slows_the_press_and_the_decision_record_has_every_link(tmp_path: Path) -> None:
    started = int(time.time() * 1000)
    async with plant(tmp_path) as pl:
        await pl.policies(policy(extra="    interlocks: [{kind: rate, name: one-per-10-min, max: 1, window_s: 600}]\n"))
        alert = await pl.heat()
        view = await pl.decision(state="verified")
        d = view["decision"]
        assert (d["policy"], d["device"], d["action"], d["cause"]) == ("slow-when-hot", "press-1", "speed -> 600",
                                                                       f"alert {alert} (hot)")
        assert kinds(view) == ["decided", "checked", "sent", "answered", "effect"]
        decided = body(view, "decided")
        assert (decided["alert"], decided["rule"], decided["policy_version"], decided["trace"]) == \
            (alert, "hot", 1, d["trace"])
        assert decided["samples"]["device"] == "press-1" and decided["samples"]["seqs"], "the samples it rested on"
        checks = {c["name"]: c for c in body(view, "checked")["checks"]}
        assert checks["fresh"]["ok"] and checks["fresh"]["value"] < 10 and checks["one-per-10-min"]["value"] == 0
        sent, answered = body(view, "sent"), body(view, "answered")
        assert sent["key"] == d["id"] and sent["trace"] == d["trace"]
        assert (answered["status"], answered["before"], answered["read_back"]) == ("applied", 800, 600)
        assert await read_holding(pl.plc, SPEED) == 600
        cmd = await pl.call("GET", f"/commands/{d['command']}")
        assert (cmd["decision"], cmd["trace"]) == (d["id"], d["trace"]), "one trace id, decision to answer"
        assert await pl.call("GET", f"/decisions?command={d['command']}") == [d]

        await pl.cool()  # hot again within 10 min: the rate interlock holds it, with the count it saw
        await pl.heat()
        held = await pl.decision(state="held")
        lock = next(c for c in body(held, "checked")["checks"] if c["name"] == "one-per-10-min")
        assert (lock["ok"], lock["value"]) == (False, 1)
        assert "1 change(s) of speed on press-a" in body(held, "held")["reason"]
        assert (await pl.call("GET", "/decision-log/verify"))["ok"] is True

        # replay on this known history: the version in force, then a new version without the rate interlock
        window = {"from_ms": started, "to_ms": int(time.time() * 1000) + 1}
        again = await pl.call("POST", "/policies/slow-when-hot/replay?tenant=acme", json=window)
        assert [(r["outcome"], r["actual"]) for r in again["rows"]] == [("would_send", "verified"),
                                                                        ("held", "held")]
        assert "1 change(s) of speed" in again["rows"][1]["detail"], "its own first send counts, as it did live"
        proposed = "policies:\n" + policy(value=650)
        other = await pl.call("POST", "/policies/slow-when-hot/replay?tenant=acme", json={**window, "text": proposed})
        assert other["version"] == "proposed" and other["counts"] == {"would_send": 2}
        assert [r["in_force"] for r in other["rows"]] == ["would_send", "held"] and other["differs"] == 1
        assert await pl.call("GET", "/commands", params={"limit": 10}) != [] and len(
            await pl.call("GET", "/commands")) == 1, "a replay sends nothing"


async def test_approvals_dry_run_and_a_hold_on_the_asset(tmp_path: Path) -> None:
    async with plant(tmp_path) as pl:
        await pl.policies(policy(mode="dry-run"))
        await pl.heat()
        dry = await pl.decision(state="dry_run")
        assert body(dry, "dry_run")["would"] == {"kind": "setpoint", "actuator": "speed", "value": 600}
        assert await pl.call("GET", "/commands") == [], "dry-run sends nothing"
        await pl.cool()

        await pl.policies(policy(approval="two", value=700))
        await pl.heat()
        waiting = (await pl.decision(state="awaiting_approval"))["decision"]
        assert waiting["needed"] == 2
        first = await pl.call("POST", f"/decisions/{waiting['id']}/approve", json={"note": "ok by me"})
        assert (first["state"], first["approvals"]) == ("awaiting_approval", 1)
        again = await pl.client.post(f"{API}/decisions/{waiting['id']}/approve", json={})
        assert again.status_code == 409 and "must come from another person" in again.text
        assert await pl.call("GET", "/commands") == [], "one approval of two sends nothing"
        # the second approver is another person (the API's callers here are anonymous: the engine is asked directly)
        sent = await pl.platform.actions.approve(waiting["id"], by="bea", approve=True)
        assert sent.state == "sent"
        view = await pl.decision(state="verified")
        assert [e["actor"] for e in view["entries"] if e["kind"] == "approved"] == ["anonymous", "bea"]
        assert await read_holding(pl.plc, SPEED) == 700
        await pl.cool()

        hold = await pl.call("POST", "/holds", 201, json={"target": "press-a", "duration_s": 2,
                                                           "reason": "bearing change"})
        await pl.policies(policy(value=650))
        await pl.heat()
        held = await pl.decision(state="held")
        assert "automation held on press-a by anonymous" in body(held, "held")["reason"]
        assert [h["id"] for h in await pl.call("GET", "/holds")] == [hold["id"]]
        await pl.cool()
        await asyncio.sleep(2)  # the lease ends: automation acts again
        assert await pl.call("GET", "/holds") == []
        await pl.heat()
        await pl.decision(state="verified")
        assert await read_holding(pl.plc, SPEED) == 650
        assert (await pl.call("GET", "/decision-log/verify"))["ok"] is True


async def test_the_command_line_sets_policies_runs_one_shows_its_record_and_verifies_the_chain(
        tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=free_port())
    async with Platform(cfg) as p:
        await register_press(p)
        url = p.http_url
        assert url is not None

        async def cli(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, app, [*args, "--url", url])

        bad = tmp_path / "bad.yaml"
        bad.write_text("policies:\n  - {name: x, trigger: {kind: person}, action: {kind: reboot}}\n")
        refused = await cli("policies", "set", str(bad), "--tenant", "acme")
        assert refused.exit_code == 1 and "line 2" in refused.output, refused.output
        good = tmp_path / "policies.yaml"
        person = policy("nudge", mode="on").replace("{kind: alert, rule: hot, assets: [press-a]}", "{kind: person}")
        good.write_text("policies:\n" + person)
        assert "policies version 1 of acme in force (1 policies)" in (await cli("policies", "set", str(good),
                                                                                  "--tenant", "acme")).output
        ran = await cli("policies", "run", "nudge", "--asset", "press-a", "--tenant", "acme")
        assert ran.exit_code == 0 and "speed -> 600 on press-a: held" in ran.output, ran.output  # no reading yet
        [d] = await p.store.list_decisions()
        shown = await cli("decisions", "show", d.id)
        assert "decided" in shown.output and "newest reading of press-1 unknown" in shown.output, shown.output
        held = await cli("holds", "add", "press-a", "--minutes", "5", "--reason", "bearing change")
        hold_id = held.output.split(":")[0]
        assert "automation held on press-a" in held.output
        assert hold_id in (await cli("holds", "list")).output
        assert "released" in (await cli("holds", "release", hold_id)).output
        replayed = await cli("policies", "replay", "nudge", "--from", "1h", "--tenant", "acme")
        assert replayed.exit_code == 0 and "0 triggers: no trigger" in replayed.output, replayed.output
        when = await cli("policies", "replay", "nudge", "--from", "yesterday", "--tenant", "acme")
        assert when.exit_code == 1 and "--from 'yesterday': a duration ago" in when.output, when.output
        ok = await cli("decisions", "verify")
        assert ok.exit_code == 0 and "the chain holds" in ok.output
        await p.store.driver.execute("UPDATE decision_log SET actor='mallory' WHERE kind='decided'")
        broken = await cli("decisions", "verify")
        assert broken.exit_code == 1 and "it was altered" in broken.output, broken.output


async def test_state_and_peer_interlocks_hold_with_the_values_they_saw(tmp_path: Path) -> None:
    """press-b, a peer of press-a on the same line, reports its own temperature (published here as a device
    would): cool, the interlocks pass; hot, the peer interlock holds; press-1's own state interlock too."""
    async with plant(tmp_path) as pl:
        await pl.platform.registry.put_asset(Asset(id="press-b", line="l1", kind="press"))
        await pl.platform.registry.put_device(Device(id="press-2", tenant="acme", asset="press-b", profile="press-v1"))
        seq = iter(range(1, 1000))

        async def peer(temp: float) -> None:
            sample = Sample(ts=int(time.time() * 1000), values={"temp": temp})
            await publish_all(pl.platform, [(topic("acme", "press-2", TopicKind.TELEMETRY),
                                             encode(Telemetry("press-2", next(seq), [sample])))])
            await eventually(lambda: _value(pl, "press-2") == temp, what=f"press-2 at {temp}")

        locks = ("    interlocks:\n"
                 "      - {kind: state, name: not-overheated, device: press-1, channel: temp, above: 99}\n"
                 "      - {kind: peers, name: peer-hot, channel: temp, above: 90}\n")
        await pl.policies(policy(extra=locks))
        await peer(20)
        await pl.heat()
        view = await pl.decision(state="verified")
        checks = {c["name"]: c for c in body(view, "checked")["checks"]}
        assert (checks["not-overheated"]["ok"], checks["not-overheated"]["value"]) == (True, 95)
        assert (checks["peer-hot"]["ok"], checks["peer-hot"]["value"]) == (True, 20)
        await pl.cool()

        await peer(96)
        await pl.heat()
        held = await pl.decision(state="held")
        peer_check = next(c for c in body(held, "checked")["checks"] if c["name"] == "peer-hot")
        assert (peer_check["ok"], peer_check["value"], peer_check["detail"]) == (
            False, 96, "press-2.temp = 96: is above 90")
        await pl.cool()

        await peer(20)
        await pl.policies(policy(extra=locks.replace("above: 99", "above: 90")))
        await pl.heat()
        held = await pl.decision(state="held")
        assert "press-1.temp = 95: is above 90" in body(held, "held")["reason"]
        assert await read_holding(pl.plc, SPEED) == 600, "only the first decision reached the PLC"


def _value(pl: Plant, device: str) -> float | None:
    found = pl.platform.readings.reading(device, "temp")
    return None if found is None else found.value
