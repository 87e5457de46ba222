"""Recoverable state: the agent's journal stays within its disk budget through a long outage, corrupt
journals and databases are moved aside at start, an empty database file is refused, data files are
private (0600 in a 0700 directory) and one data directory serves one process at a time."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeloop.agent.config import parse_config
from edgeloop.agent.journal import SENT_GAPS_KEPT, Journal
from edgeloop.agent.runner import Agent
from edgeloop.errors import ConfigError
from edgeloop.messages import DeviceEvent, Sample, Severity, decode_event, decode_telemetry
from tests.conftest import ADMIN_PASSWORD, start_up_process, stop_up_process
from tests.support import free_port
from tests.test_agent import modbus_server, write_holding
from tests.test_agent_local import eventually, outbox, read_holding, running

DEVICES = [f"dev-{k}" for k in range(4)]


def gap_numbers(payload: bytes) -> dict[str, int]:
    """A gap report's numbers (first_ts, last_ts, samples, messages)."""
    data = decode_event(payload).data
    return {k: v for k, v in data.items() if isinstance(v, int)}


def journal_files_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("journal.db"))


# -- the journal's disk budget ---------------------------------------------------------------------
def test_a_long_outage_stays_within_the_disk_budget_and_its_gaps_are_reported(tmp_path: Path) -> None:
    """An outage (nothing acknowledged) against a tiny budget: one commit per 100 ms for 4 devices plus a
    local anomaly event now and then. The files stay within 2 x budget + 256 KiB (the stated slack: SQLite's
    fixed pages, the WAL and its index), gap reports stay one per device and add up to what was dropped."""
    budget = int(0.05 * 2**20)
    j = Journal(tmp_path / "journal.db", budget_bytes=budget)
    ts, peak = 0, 0
    for commit in range(3000):  # 300 s of outage
        j.append({d: [Sample(ts=ts + i * 10, values={"a": float(i), "b": 2.5}) for i in range(10)] for d in DEVICES},
                 now_ms=ts)
        if commit % 7 == 0:
            j.record_event(DeviceEvent(device="dev-0", ts=ts, kind="anomaly", severity=Severity.WARNING,
                                       message="local model m: score high", data={"score": 1.0}), now_ms=ts)
        ts += 100
        if commit % 25 == 0:
            peak = max(peak, journal_files_size(tmp_path))
            assert j.used_bytes <= budget
    assert peak <= 2 * budget + 256 * 1024, f"the journal grew to {peak} bytes for a {budget} byte budget"
    stats = j.stats()
    assert stats.messages > 0, "the newest telemetry is kept; events do not crowd it out"
    assert stats.dropped_events > 0, "old events beyond their share were dropped, and counted"
    gaps = {e.device: gap_numbers(e.payload) for e in j.unsent_events() if decode_event(e.payload).kind == "gap"}
    assert sorted(gaps) == DEVICES, "one coalesced gap report per device"
    assert sum(g["samples"] for g in gaps.values()) == stats.dropped_samples
    assert sum(g["messages"] for g in gaps.values()) == stats.dropped_messages
    for device, g in gaps.items():
        oldest_kept = decode_telemetry(j.pending(device, limit=1)[0].payload).samples[0].ts
        assert g["first_ts"] == 0, "the gap starts with the first dropped sample"
        assert g["last_ts"] < oldest_kept, "and ends before the oldest sample still kept"
    assert j._db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == len(DEVICES)


def test_a_gap_report_handed_to_the_uplink_is_never_extended(tmp_path: Path) -> None:
    budget = 20_000
    j = Journal(tmp_path / "journal.db", budget_bytes=budget)
    ts = 0

    def outage(commits: int) -> None:
        nonlocal ts
        for _ in range(commits):
            j.append({"dev-0": [Sample(ts=ts + i, values={"a": 1.0}) for i in range(10)]}, now_ms=ts)
            ts += 100

    outage(400)
    first = j.unsent_events(take_for={"dev-0"})  # connected: the uplink publishes it now
    assert [decode_event(e.payload).kind for e in first] == ["gap"]
    outage(400)
    events = j.unsent_events()
    assert events[0].payload == first[0].payload, "the report in flight keeps its bytes"
    assert gap_numbers(events[1].payload)["first_ts"] > gap_numbers(first[0].payload)["last_ts"], \
        "new drops, a new report"
    j.events_sent([first[0].id, events[1].id])
    for _ in range(SENT_GAPS_KEPT + 20):  # many reconnects, each reporting a gap
        outage(5)
        j.events_sent([e.id for e in j.unsent_events(take_for={"dev-0"})])
    assert j._db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] <= SENT_GAPS_KEPT + 1, "gap history is bounded"
    assert j.stats().events_unsent == 0


# -- corrupt files at start --------------------------------------------------------------------------
def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(3 * 4096))


def truncated(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2 + 100)


def malformed_page(path: Path) -> None:
    with path.open("r+b") as f:  # the b-tree header of page 3 overwritten: "database disk image is malformed"
        f.seek(2 * 4096)
        f.write(b"\x0d\xff\xff\xff" * 64)


def filled_journal(path: Path) -> None:
    j = Journal(path, budget_bytes=10**9, max_samples_per_message=10)
    for start in range(0, 2_000_000, 10_000):
        j.append({"d1": [Sample(ts=start + i, values={"a": float(i)}) for i in range(10)]}, now_ms=start)
    j.close()


CORRUPTIONS: list[Callable[[Path], None]] = [garbage, truncated, malformed_page]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_a_corrupt_journal_is_moved_aside_and_an_empty_one_started(
        tmp_path: Path, corrupt: Callable[[Path], None], caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal.db"
    filled_journal(path)
    corrupt(path)
    with caplog.at_level(logging.ERROR):
        j = Journal(path)
    assert [m.name.split(".corrupt-")[0] for m in j.moved_aside] == ["journal.db"]
    assert j.moved_aside[0].exists() and not j.moved_aside[0].name.endswith("-wal")
    assert any("corrupt" in r.message and str(j.moved_aside[0]) in r.message for r in caplog.records), \
        "the message says what was moved where"
    assert j.stats().messages == 0
    j.append({"d1": [Sample(ts=1, values={"a": 1.0})]})
    assert j.stats().messages == 1, "the fresh journal works"
    j.close()
    assert Journal(path).moved_aside == [], "a healthy journal is left alone"


async def test_an_agent_with_a_corrupt_journal_starts_and_its_fail_safe_rule_acts(tmp_path: Path) -> None:
    modbus_port = free_port()
    data = tmp_path / "agent"
    data.mkdir()
    garbage(data / "journal.db")
    (data / "journal.db-wal").write_bytes(b"junk")
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {data}, commit_ms: 50, heartbeat_s: 0.5}}
uplink: {{mqtt: 127.0.0.1:{free_port()}}}
sources:
  - {{name: plc, kind: modbus, host: 127.0.0.1, port: {modbus_port}, device: press-1, poll_ms: 50,
     points: [{{channel: temp, address: 0}}]}}
rules:
  - {{name: hot, device: press-1, channel: temp, above: 90, for_s: 0.2,
     action: {{kind: modbus, source: plc, address: 10, value: 1}}}}
""")
    async with modbus_server(modbus_port, [50] + [0] * 11, [0]):
        agent = Agent(cfg)
        moved = sorted(p.name for p in data.iterdir() if ".corrupt-" in p.name)
        assert len(moved) == 2 and moved[1] == moved[0] + "-wal", "the journal and its WAL moved aside together"
        async with running(agent):
            await write_holding(modbus_port, 0, [95])
            await eventually(lambda: agent.actions_done == 1, what="the rule acted")
            assert await read_holding(modbus_port, 10) == 1
            await eventually(lambda: any(e.kind == "journal_corrupt" for e in outbox(agent)),
                             what="the platform will be told")


async def test_an_agent_whose_journal_cannot_be_opened_runs_on_one_in_memory(tmp_path: Path) -> None:
    """No file opens at all (here a folder stands where journal.db should be): the agent still starts, on a
    journal in memory, says so, and forwards what it can."""
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}}}
sources: [{{name: fleet, kind: simulator}}]
""")
    (tmp_path / "agent" / "journal.db").mkdir(parents=True)
    agent = Agent(cfg)
    try:
        assert (await agent.health())["journal_in_memory"] is True
        agent._emit("press-1", Sample(ts=1, values={"temp": 1.0}))
        await agent.commit()
        assert agent.journal.stats().messages == 1
        assert any(e.kind == "journal_unavailable" for e in outbox(agent))
    finally:
        await agent.in_journal(lambda j: j.close())
        agent._lock.release()


def test_one_agent_per_data_directory(tmp_path: Path) -> None:
    cfg = parse_config(f"""\
agent: {{tenant: acme, gateway: gw-1, data_dir: {tmp_path / 'agent'}}}
sources: [{{name: fleet, kind: simulator}}]
""")
    first = Agent(cfg)
    held = rf"agent data directory .* in use by another EdgeLoop process \(PID {os.getpid()}\)"
    with pytest.raises(ConfigError, match=held):
        Agent(cfg)
    first.journal.close()
    first._lock.release()
    Agent(cfg).journal.close()  # released: the next one starts


# -- the platform's data directory -----------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def edgeloop_up(data: Path, *, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``edgeloop up`` that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "edgeloop", "up", "--devices", "0", "--data-dir", str(data), "--port",
         str(free_port()), "--mqtt-port", str(free_port()), "--auth"], capture_output=True, text=True,
        timeout=timeout_s, env={**os.environ, "COLUMNS": "200"}, check=False)


def test_two_platforms_on_one_data_directory_the_second_names_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_up_process(data, devices=0, faulty=0, auth=True)
    try:
        second = edgeloop_up(data)
        assert second.returncode != 0
        assert f"in use by another EdgeLoop process (PID {first.process.pid})" in second.stdout + second.stderr
        assert "Traceback" not in second.stdout + second.stderr
        first.process.kill()  # kill -9: the kernel releases the lock with the process
        first.process.wait()
        again = start_up_process(data, devices=0, faulty=0, auth=True)
        stop_up_process(again)
    finally:
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait()


def test_data_files_are_private_whatever_the_umask_and_old_ones_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "alerting.yaml").write_text("channels: []\n")
    os.chmod(data / "alerting.yaml", 0o644)
    old = os.umask(0)  # the child inherits the most permissive umask
    try:
        live = start_up_process(data, devices=2, faulty=0, auth=True)
    finally:
        os.umask(old)
    try:
        assert mode(data) == 0o700
        deadline = time.monotonic() + 30
        while not (data / "sim.json").exists():  # written once the API is up, as the simulated fleet starts
            assert time.monotonic() < deadline, "the simulator's state was not written"
            time.sleep(0.05)
        for name in ("edgeloop.db", "edgeloop.db-wal", "edgeloop.db-shm", "alerting.yaml", "sim.json", ".lock"):
            assert mode(data / name) == 0o600, name
    finally:
        assert stop_up_process(live) == 0
    log = (tmp_path / "data.log").read_text()
    assert "tightened" in log and "alerting.yaml from 0644 to 0600" in log


def test_tightening_takes_only_group_and_other_access_away(tmp_path: Path) -> None:
    from edgeloop.file_modes import private_data_dir

    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "run.sh", 0o755)
    (tmp_path / "mine").write_text("x")
    os.chmod(tmp_path / "mine", 0o400)
    private_data_dir(tmp_path)
    assert (mode(tmp_path), mode(tmp_path / "run.sh"), mode(tmp_path / "mine")) == (0o700, 0o700, 0o400), \
        "the owner's own bits stay (a script stays executable, a read-only file read-only)"


def test_a_corrupt_platform_database_is_moved_aside_loudly_and_the_platform_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    garbage(data / "edgeloop.db")
    (data / "edgeloop.db-wal").write_bytes(os.urandom(5000))
    live = start_up_process(data, devices=0, faulty=0, auth=True)
    stop_up_process(live)
    log = (tmp_path / "data.log").read_text()
    moved = sorted(p.name for p in data.iterdir() if ".corrupt-" in p.name)
    assert len(moved) == 2 and moved[1] == moved[0] + "-wal"
    assert "is corrupt" in log and moved[0] in log and "EMPTY database" in log
    assert (data / "edgeloop.db").stat().st_size > 0


@pytest.mark.parametrize("content", ["empty", "schema-less"])
def test_an_empty_or_foreign_database_file_is_refused_never_reinitialised(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "edgeloop.db"
    if content == "empty":
        db.touch()
        expected = "exists but is empty (0 bytes): refusing to start a new platform"
    else:
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE notes (x)")
        c.close()
        expected = "without EdgeLoop's tables: refusing to start a new platform"
    before = db.read_bytes()
    got = edgeloop_up(data)
    out = " ".join((got.stdout + got.stderr).split())
    assert got.returncode != 0
    assert expected in out
    assert "password" not in out.lower() and "Traceback" not in out, "no new administrator"
    assert db.read_bytes() == before, "the file is left as it was"
    assert ADMIN_PASSWORD  # the live-process helper's admin, never created here


def test_a_local_tool_refuses_a_corrupt_database_and_leaves_it_in_place(tmp_path: Path) -> None:
    """Only the platform's own start (holding the directory's lock) moves a corrupt database aside; a tool such
    as `admin reset-password` must never rename a database from under a running platform."""
    data = tmp_path / "data"
    data.mkdir()
    garbage(data / "edgeloop.db")
    before = (data / "edgeloop.db").read_bytes()
    got = subprocess.run([sys.executable, "-m", "edgeloop", "admin", "reset-password", "admin", "--data-dir",
                          str(data)], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "COLUMNS": "200"})
    out = " ".join((got.stdout + got.stderr).split())
    assert got.returncode != 0 and "is corrupt" in out and "Traceback" not in out
    assert (data / "edgeloop.db").read_bytes() == before
    assert not [p for p in data.iterdir() if ".corrupt-" in p.name]
