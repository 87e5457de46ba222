"""The ``edgeloop`` command line: help, API client commands against a real ``edgeloop up``, and ``scenario``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from edgeloop.app import Platform, PlatformConfig
from edgeloop.cli import app
from edgeloop.messages import Alert, Severity
from tests.conftest import LivePlatform, start_up_process, stop_up_process
from tests.support import free_port, open_alert

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_line(text: str) -> str:
    """Rich wraps long lines at the console width; compare messages without the wrapping."""
    return " ".join(text.split())


# -- no platform needed -------------------------------------------------------------------------------------


def help_commands(text: str) -> set[str]:
    """Command names in the "Commands" panel of typer's rich help."""
    panel = text[text.index("Commands"):]
    return {line[2:].split()[0] for line in panel.splitlines() if line.startswith("│ ") and line[2:3] != " "}


def test_help_lists_the_commands() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    assert "EdgeLoop" in result.stdout
    assert {"up", "scenario", "bench", "list", "create", "alerts", "version"} <= help_commands(result.stdout)
    alerts = cli("alerts", "--help")
    assert alerts.exit_code == 0
    assert help_commands(alerts.stdout) == {"list", "ack", "resolve"}
    bench = cli("bench", "--help")
    assert bench.exit_code == 0
    assert "ingest" in help_commands(bench.stdout)


def test_version_prints_the_package_version() -> None:
    from edgeloop import __version__

    result = cli("version")
    assert (result.exit_code, result.stdout.strip()) == (0, __version__)


def test_the_version_flag_prints_the_same_version_and_nothing_else() -> None:
    from edgeloop import __version__

    result = cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, __version__)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("15min", 900), ("2h", 7200),
                                               ("1.5h", 5400), ("7d", 604_800)])
def test_one_duration_grammar_for_every_duration_option(text: str, seconds: float) -> None:
    from edgeloop.cli.durations import parse_duration

    assert parse_duration(text, "--expires") == seconds


def test_a_bad_duration_is_refused_with_the_grammar_before_any_request() -> None:
    """A bare number is refused too: ``--expires 24`` must not silently mean 24 seconds."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the duration must fail first
    for args in (("enroll", "create", "--group", "g", "--profile", "p", "--tenant", "t", "--line", "l",
                  "--expires", "24"),
                 ("gateways", "add", "gw1", "--expires", "2 weeks"),
                 ("silences", "add", "--scope", "asset", "--target", "a", "--reason", "r", "--duration", "-5m"),
                 ("maintenance", "add", "--scope", "line", "--target", "l", "--reason", "r", "--duration", "h")):
        result = cli(*args, "--url", url)
        assert result.exit_code == 1, args
        message = one_line(result.stderr)
        assert "is not a duration: use a number and s, m, h or d" in message, (args, message)
        assert "cannot reach" not in message


def test_list_commands_print_json_with_the_json_flag() -> None:
    """Every command that prints a list takes ``--json``."""
    for args in (("list", "assets"), ("alerts", "list"), ("gateways",), ("incidents",), ("incidents", "why"),
                 ("maintenance",), ("silences",), ("users",)):
        result = cli(*args, "--help")
        assert result.exit_code == 0, args
        assert "--json" in result.stdout, args


def test_unreachable_platform_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (("list", "assets"), ("alerts", "list"), ("create", "tenants", '{"id": "t1"}'),
                 ("alerts", "ack", "1", "--by", "me")):
        result = cli(*args, "--url", url)
        assert result.exit_code == 1, args
        message = one_line(result.stderr)
        assert f"cannot reach the platform at {url}" in message, message
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_url_can_come_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["list", "devices"], env={"EDGELOOP_URL": url})
    assert result.exit_code == 1
    assert f"cannot reach the platform at {url}" in one_line(result.stderr)


def test_up_on_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "edgeloop", "up", "--devices", "0", "--data-dir", str(tmp_path / "d"),
             "--port", str(port), "--mqtt-port", str(free_port())],
            capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"the HTTP port 127.0.0.1:{port} is not available" in one_line(proc.stderr)
    assert "--port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_kind_and_non_json_body_fail_before_any_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("list", "widgets", "--url", url)
    assert result.exit_code == 1
    assert "unknown kind 'widgets'" in one_line(result.stderr)
    result = cli("create", "sites", "{id: s1}", "--url", url)
    assert result.exit_code == 1
    assert "the body is not JSON" in one_line(result.stderr)


# -- against a real `edgeloop up` --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    """This module's own ``edgeloop up`` (the session's live_platform is shared and must not be changed)."""
    platform = start_up_process(tmp_path_factory.mktemp("cli-live") / "data", devices=2, faulty=0)
    try:
        deadline = time.monotonic() + 20
        while len(platform.get("/api/v1/devices")) < 2:  # the fleet registers just after the API is up
            assert time.monotonic() < deadline, "the simulated fleet was not registered"
            time.sleep(0.1)
        yield platform
    finally:
        assert stop_up_process(platform) == 0


def run_wide(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgeloop ARGS`` on a 200-column terminal, so rich tables do not wrap their cells."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeloop", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_list_shows_the_registry(live: LivePlatform) -> None:
    devices = json_out(cli("list", "devices", "--json", "--url", live.base_url))
    assert devices == live.get("/api/v1/devices")
    assert {d["tenant"] for d in devices} == {"demo"}
    before = {a["id"]: a["status"] for a in live.get("/api/v1/assets")}
    table = run_wide("list", "assets", "--url", live.base_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    for asset in live.get("/api/v1/assets"):  # the fleet runs on: a status may change while the CLI reads it
        row = next(line for line in lines if f" {asset['id']} " in line)
        assert f" {asset['line']} " in row
        assert f" {asset['status']} " in row or f" {before[asset['id']]} " in row, row
        if asset["last_seen_ms"] is not None:  # a time, not epoch milliseconds
            assert str(asset["last_seen_ms"]) not in row
            assert re.search(r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", row), row
    header = next(line for line in lines if " id " in line)
    for column in ("name", "kind", "line", "site", "tenant", "criticality", "status", "online"):
        assert f" {column} " in header, column
    assert " devices " not in header  # lists are left out of the table


def test_create_through_the_cli_then_list(live: LivePlatform, tmp_path: Path) -> None:
    profile = live.get("/api/v1/devices")[0]["profile"]
    url = live.base_url
    site = json_out(cli("create", "sites", '{"id": "cli-site", "tenant": "demo", "name": "CLI site"}', "--url", url))
    assert site == {"id": "cli-site", "tenant": "demo", "name": "CLI site"}
    json_out(cli("create", "lines", '{"id": "cli-line", "site": "cli-site"}', "--url", url))
    body_file = tmp_path / "asset.json"
    body_file.write_text(json.dumps({"id": "cli-asset", "line": "cli-line", "kind": "fan", "criticality": 2}))
    asset = json_out(cli("create", "assets", f"@{body_file}", "--url", url))
    assert (asset["id"], asset["kind"], asset["criticality"]) == ("cli-asset", "fan", 2)
    # Creating never overwrites; --replace does, for an entry of one's own tenant.
    again = cli("create", "sites", '{"id": "cli-site", "tenant": "demo"}', "--url", url)
    assert again.exit_code == 1
    assert "409: site 'cli-site' already exists" in one_line(again.stderr)
    renamed = json_out(cli("create", "sites", '{"id": "cli-site", "tenant": "demo", "name": "Renamed"}',
                           "--replace", "--url", url))
    assert renamed == {"id": "cli-site", "tenant": "demo", "name": "Renamed"}
    assert next(s for s in live.get("/api/v1/sites") if s["id"] == "cli-site")["name"] == "Renamed"

    # The device through the installed entry point, as a user types it.
    device_body = json.dumps({"id": "cli-dev", "tenant": "demo", "asset": "cli-asset", "profile": profile})
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "create", "devices", device_body, "--url", url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == "cli-dev"

    devices = json_out(cli("list", "devices", "--json", "--url", url))
    mine = [d for d in devices if d["id"] == "cli-dev"]
    assert mine == [{"id": "cli-dev", "tenant": "demo", "asset": "cli-asset", "profile": profile, "name": "",
                     "rollout_group": ""}]
    assets = {a["id"]: a for a in json_out(cli("list", "assets", "--json", "--url", url))}
    assert assets["cli-asset"]["devices"] == ["cli-dev"]
    assert (assets["cli-asset"]["site"], assets["cli-asset"]["tenant"]) == ("cli-site", "demo")
    assert live.get("/api/v1/devices/cli-dev")["asset"] == "cli-asset"


def test_bad_bodies_report_the_api_message(live: LivePlatform) -> None:
    url = live.base_url
    result = cli("create", "devices", '{"id": "Bad Id", "tenant": "demo", "asset": "x", "profile": "y"}', "--url", url)
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "422: invalid Device" in message, message
    assert "$.id" in message
    assert result.stdout == ""

    result = cli("create", "assets", '{"id": "orphan", "line": "no-such-line"}', "--url", url)
    assert result.exit_code == 1
    assert "409: line 'no-such-line' does not exist; create it first" in one_line(result.stderr)
    assert "orphan" not in {a["id"] for a in live.get("/api/v1/assets")}

    proc = subprocess.run([sys.executable, "-m", "edgeloop", "create", "tenants", '{"name": "no id"}', "--url", url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "422: invalid Tenant" in one_line(proc.stderr)
    assert "missing required field `id`" in one_line(proc.stderr)


def test_alerts_list_json(live: LivePlatform) -> None:
    alerts = json_out(cli("alerts", "list", "--json", "--url", live.base_url))
    assert isinstance(alerts, list)
    assert [a["id"] for a in alerts] == [a["id"] for a in live.get("/api/v1/alerts")]
    opened = json_out(cli("alerts", "list", "--status", "open", "--json", "--url", live.base_url))
    assert all(a["status"] == "open" for a in opened)
    bad = cli("alerts", "list", "--status", "bogus", "--url", live.base_url)
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: 422")
    missing = cli("alerts", "ack", "987654", "--by", "pytest", "--url", live.base_url)
    assert missing.exit_code == 1
    assert "404: alert 987654 not found" in one_line(missing.stderr)


# -- alert commands against an in-process platform with its HTTP server ------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Platform]:
    cfg = PlatformConfig(data_dir=tmp_path, embedded_broker=True, mqtt_port=free_port(), http_port=free_port())
    async with Platform(cfg) as p:
        yield p


async def test_alert_commands_ack_and_resolve(served: Platform) -> None:
    url = served.http_url
    assert url is not None
    t0 = served.clock.now_ms() - 60_000
    raised = await open_alert(served.store, Alert(
        tenant="t", asset="a1", device="d1", kind="vibration", severity=Severity.CRITICAL, first_seen=t0,
        last_seen=t0, message="bearing wear suspected"))

    async def run(*args: str) -> Result:  # the CLI blocks on HTTP; the server runs on this loop
        return await asyncio.to_thread(runner.invoke, app, [*args, "--url", url])

    table = await asyncio.to_thread(run_wide, "alerts", "list", "--url", url)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if " bearing wear suspected " in line)
    for cell in (str(raised.id), "critical", "open", "a1", "vibration"):
        assert f" {cell} " in row, cell

    acked = await run("alerts", "ack", str(raised.id), "--by", "alice")
    assert acked.exit_code == 0, acked.stderr
    doc = json.loads(acked.stdout)
    assert (doc["status"], doc["acknowledged_by"]) == ("acknowledged", "alice")
    assert (await served.store.get_alert(raised.id)).acknowledged_by == "alice"

    resolved = await run("alerts", "resolve", str(raised.id), "--by", "bob")
    assert resolved.exit_code == 0, resolved.stderr
    assert json.loads(resolved.stdout)["resolved_by"] == "bob"

    again = await run("alerts", "ack", str(raised.id), "--by", "carol")
    assert again.exit_code == 1
    assert f"409: alert {raised.id} is resolved" in one_line(again.stderr)
    listed = json.loads((await run("alerts", "list", "--status", "resolved", "--json")).stdout)
    assert [a["id"] for a in listed] == [raised.id]


async def test_alert_ack_records_the_signed_in_user_without_by(tmp_path: Path) -> None:
    """With authentication, ``alerts ack`` / ``resolve`` need no ``--by``: the platform records the token's user."""
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=free_port(), auth=True,
                         admin_password="correct horse battery staple")
    async with Platform(cfg) as served:
        url = served.http_url
        assert url is not None
        t0 = served.clock.now_ms() - 60_000
        raised = await open_alert(served.store, Alert(tenant="t", asset="a1", device="d1", kind="vibration",
                                                      severity=Severity.WARNING, first_seen=t0, last_seen=t0))
        token, _ = await served.access.login("admin", "correct horse battery staple", source="test")

        async def run(*args: str) -> Result:
            return await asyncio.to_thread(runner.invoke, app, [*args, "--url", url], env={"EDGELOOP_TOKEN": token})

        acked = await run("alerts", "ack", str(raised.id))
        assert acked.exit_code == 0, acked.output
        assert json.loads(acked.stdout)["acknowledged_by"] == "admin"
        resolved = await run("alerts", "resolve", str(raised.id), "--by", "someone-else")  # accepted, not trusted
        assert resolved.exit_code == 0, resolved.output
        assert (await served.store.get_alert(raised.id)).resolved_by == "admin"


async def test_tables_show_times_in_iso_8601_utc(served: Platform) -> None:
    url = served.http_url
    assert url is not None
    first_seen = 1_767_225_600_000 + 90_000  # 2026-01-01T00:01:30Z
    await open_alert(served.store, Alert(tenant="t", asset="a1", device="d1", kind="vibration",
                                         severity=Severity.WARNING, first_seen=first_seen, last_seen=first_seen,
                                         message="bearing"))
    table = await asyncio.to_thread(run_wide, "alerts", "list", "--url", url)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if " bearing " in line)
    assert " 2026-01-01T00:01:30Z " in row
    assert str(first_seen) not in table.stdout


# -- scenario -------------------------------------------------------------------------------------------------


def test_scenario_json_outcome_and_progress_on_stderr() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloop", "scenario", "--devices", "3", "--faulty", "1", "--seed", "5",
         "--sim-hours", "1", "--json"],
        capture_output=True, text=True, timeout=90, check=False)  # ~2 s normally; a hang must not stall the suite
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert isinstance(result, dict)
    for key in ("samples_published", "samples_stored", "duplicates", "dead_letters", "faulty_alerted",
                "faulty_missed", "healthy_alerted", "faulty_active_at_end", "faulty_without_open_alert_at_end",
                "per_device"):
        assert key in result, key
    assert (result["devices"], result["faulty"], result["seed"], result["sim_hours"]) == (3, 1, 5, 1.0)
    assert result["samples_published"] > 0
    assert result["samples_stored"] == result["samples_published"]
    assert result["samples_lost"] == 0
    assert result["stored_twice"] == 0
    assert result["dead_letters"] == 0
    assert result["faulty_alerted"] + result["faulty_missed"] == 1
    assert 0 <= result["healthy_alerted"] <= 2
    per_device = result["per_device"]
    assert len(per_device) == 3
    assert sum(d["faulty"] for d in per_device) == 1
    assert sum(d["published_samples"] for d in per_device) == result["samples_published"]
    assert all(d["stored_samples"] == d["published_samples"] for d in per_device)
    assert "{" not in proc.stderr  # the JSON goes to stdout only
    phases = [line.split()[3] for line in proc.stderr.splitlines() if line.startswith("[")]
    assert "publish" in phases, proc.stderr  # progress goes to stderr, one line per phase off-terminal
    assert phases[-1] == "done", proc.stderr


def test_scenario_refuses_more_faulty_than_devices() -> None:
    result = cli("scenario", "--devices", "2", "--faulty", "3", "--json")
    assert result.exit_code == 1
    assert "--faulty 3 is more than --devices 2" in one_line(result.stderr)
    assert result.stdout == ""
