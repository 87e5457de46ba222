"""The alerting CLI against an in-process platform with its HTTP server: rules, the inbox and its lifecycle,
"why was I not paged?", silences, maintenance windows and label exports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from edgeloop.alerts.feedback import read_labels_csv
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.broker import free_port
from edgeloop.cli import app
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import HOT_RULES, register_device
from tests.test_api import publish_all

runner = CliRunner()
RULES = HOT_RULES


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Platform]:
    cfg = PlatformConfig(data_dir=tmp_path / "p", embedded_broker=True, mqtt_port=free_port(), http_port=free_port())
    async with Platform(cfg) as p:
        await register_device(p, tenant="acme", asset="pump-1", device="pump-1-dev", kind="pump",
                              profile=DeviceProfile(name="pump", channels=[ChannelSpec(name="temp", unit="C")]))
        yield p


def one_line(text: str) -> str:
    return " ".join(text.split())


async def test_rules_incidents_silences_and_labels_from_the_cli(served: Platform, tmp_path: Path) -> None:
    url = served.http_url
    assert url is not None

    async def run(*args: str) -> Result:  # the CLI blocks on HTTP; the server runs on this loop
        return await asyncio.to_thread(runner.invoke, app, [*args, "--url", url])

    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace("above: 80", "above: hot"))
    checked = runner.invoke(app, ["rules", "check", str(bad)])
    assert checked.exit_code == 1 and "line 6" in one_line(checked.stderr) and "hot" in checked.stderr
    good = tmp_path / "rules.yaml"
    good.write_text(RULES)
    assert "1 rules OK (1 threshold)" in runner.invoke(app, ["rules", "check", str(good)]).stdout
    refused = await run("rules", "set", str(bad))
    assert refused.exit_code == 1 and "422" in refused.stderr
    done = await run("rules", "set", str(good))
    assert done.exit_code == 0 and "rules version 1 in force (1 rules)" in done.stdout
    assert "above: 80" in (await run("rules", "show")).stdout

    now = served.clock.now_ms()
    msg = Telemetry("pump-1-dev", 1, [Sample(ts=now - 1000, values={"temp": 70.0}),
                                      Sample(ts=now, values={"temp": 91.0})])
    await publish_all(served, [(topic("acme", "pump-1-dev", TopicKind.TELEMETRY), encode(msg))])
    assert await served.idle(30)
    [inc] = json.loads((await run("incidents", "--json")).stdout)
    assert json.loads((await run("incidents", "list", "--json")).stdout) == [inc]  # the same inbox
    listed = await run("incidents", "list", "--all")
    assert listed.exit_code == 0 and f" {inc['id']} " in listed.stdout
    assert inc["assets"] == ["pump-1"] and inc["status"] == "open"
    iid = str(inc["id"])
    acked = await run("incidents", "acknowledge", iid, "--note", "looking")
    assert acked.exit_code == 0 and f"incident {iid}: acknowledged" in acked.stdout
    again = await run("incidents", "acknowledge", iid)
    assert again.exit_code == 1 and "409" in again.stderr
    assert "assigned to sam" in (await run("incidents", "assign", iid, "--to", "sam")).stdout
    assert (await run("incidents", "comment", iid, "seal leaking")).exit_code == 0
    fb = await run("incidents", "feedback", iid, "--verdict", "confirmed", "--fault-type", "seal_leak")
    assert fb.exit_code == 0 and "confirmed (seal_leak)" in fb.stdout
    shown = await run("incidents", "show", iid)
    for text in ("pump-1/hot", "seal leaking", "assigned to sam", "open → acknowledged: looking"):
        assert text in one_line(shown.stdout), text
    # the platform has only just started: the alert did not page, and "why" says so
    why = await run("incidents", "why", "--asset", "pump-1")
    assert "startup_grace" in why.stdout
    out_csv = tmp_path / "labels.csv"
    assert (await run("incidents", "labels", "--out", str(out_csv))).exit_code == 0
    [label] = read_labels_csv(out_csv)
    assert (label.asset, label.rule, label.fault_type) == ("pump-1", "hot", "seal_leak")

    added = await run("silences", "add", "--scope", "asset", "--target", "pump-1", "--duration", "30m",
                      "--reason", "sensor swap", "--rule", "hot")
    assert added.exit_code == 0, added.stderr
    sid = added.stdout.split()[1]
    assert sid in (await run("silences")).stdout
    assert (await run("silences", "end", sid)).exit_code == 0
    assert sid not in (await run("silences")).stdout
    mw = await run("maintenance", "add", "--scope", "line", "--target", "acme-line", "--duration", "2h",
                   "--reason", "line overhaul")
    assert mw.exit_code == 0 and "on line acme-line" in mw.stdout
    assert "line overhaul" in (await run("maintenance")).stdout
    bad_duration = await run("maintenance", "add", "--scope", "line", "--target", "acme-line", "--duration", "2x",
                             "--reason", "r")
    assert bad_duration.exit_code == 1 and "not a duration" in bad_duration.stderr


def test_the_inbox_says_not_paged_when_no_channel_carries_the_page() -> None:
    from edgeloop.cli.incidents import _paged

    decided = {"paged_at": 1_700_000_000_000, "page_channels": []}
    assert _paged(decided) == "not paged: no channel configured"
    assert _paged({**decided, "page_channels": ["ops"]}).startswith("2023-11-14")
    assert _paged({"paged_at": None, "page_channels": ["ops"]}) == "-"
