"""``edgeloop bench edge`` runs end to end for our agent in a tiny configuration (the ThingsBoard row needs
``make bench-deps`` and minutes, so it is not run here): a journal backlog replayed beside live data, a short
outage, one ``kill -9``, and everything the journal accepted counted at the broker once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mosquitto
ROOT = Path(__file__).resolve().parent.parent


def test_bench_edge_runs_for_the_agent_and_counts_nothing_lost_or_duplicated() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloop", "bench", "edge", "--rows", "edgeloop", "--devices", "2", "--hz", "10",
         "--backlog-minutes", "0.1", "--outage-s", "2", "--kills", "1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    Path(report["results_file"]).unlink(missing_ok=True)
    row = report["rows"]["edgeloop"]
    assert "error" not in row, row
    assert row["journal_throughput"]["samples"] == 2 * 10 * 6  # 6 s of backlog, 2 devices at 10 Hz
    assert row["replay"]["samples"] == 120
    total = row["total"]
    assert total["expected"] > 120 and total["delivered"] == total["expected"], total
    assert total["lost"] == 0 and total["duplicates"] == 0, total
    assert {"replay", "outage", "kill -9"} <= set(row["phases"])
    assert all(p["lost"] == 0 and p["duplicates"] == 0 for p in row["phases"].values()), row["phases"]
    assert row["peak_rss_mb"] > 0
    assert "thingsboard" not in report["rows"]
