"""``edgeloop bench alerts``: the alert storm through the real detector, rule and incident engines, end to end
(the default storm, as docs/benchmarks.md reports it, and a quick one with the outage backfilled)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(tmp: Path, *extra: str) -> dict[str, Any]:
    path = tmp / "alerts.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloop", "bench", "alerts", "--json", str(path), *extra],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    machines = 240 if "--quick" in extra else 400
    assert f"bench alerts: storm on {machines} machines" in proc.stdout  # the table is printed too
    report: dict[str, Any] = json.loads(path.read_text())
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _bench(tmp_path_factory.mktemp("bench-alerts"))


def test_report_has_the_issue_keys_scenario_and_machine(report: dict[str, Any]) -> None:
    for key in ("reduction_ratio", "fault_recall", "signals_per_s", "false_pages", "raw_signals", "notifications",
                "scenario", "rules", "throughput", "machine", "elapsed_seconds"):
        assert key in report, key
    sc = report["scenario"]
    assert (sc["devices"], sc["hours"], sc["outage"]["devices"], sc["dip"]["assets"]) == (400, 3.0, 200, 40)
    assert len(sc["faults"]) == 6 and len(sc["flapping"]["assets"]) == 3
    assert report["reduction_ratio"] == pytest.approx(report["raw_signals"] / report["notifications"], abs=0.01)


def test_every_injected_fault_is_notified(report: dict[str, Any]) -> None:
    assert report["fault_recall"] == 1.0
    faults = report["storm"]["faults"]
    assert {f["kind"] for f in faults} == {"bearing_wear", "cavitation", "overheating", "sensor_stuck",
                                           "sensor_drift", "dropout"}
    assert all(f["notified"] and f["delay_min"] >= 0 for f in faults)


def test_the_gateway_outage_pages_once_for_its_200_silences(report: dict[str, Any]) -> None:
    g = report["storm"]["gateway_outage"]
    # one machine behind gw-1 has the dropout fault: it went silent before, and its silence in the outage rejoins
    # that incident (already paged, within the repeat window) instead of moving under the gateway's
    assert g["silences"] == 200 and g["silences_linked_to_gateway_incident"] == 199
    assert g["gateway_pages"] == 1 and g["pages"] == 1
    assert g["page_alerts"] == 200  # the gateway's own alert and 199 silences, in one page
    by = report["storm"]["by_cause"]["gateway outage"]
    assert by["raw_signals"] >= 402 and by["pages"] == 1  # 200 raises + 200 clears + offline + online


def test_the_line_dip_pages_once(report: dict[str, Any]) -> None:
    d = report["storm"]["line_dip"]
    assert d["raised"] == 40 and d["pages"] == 1


def test_throughput_is_measured_on_every_path(report: dict[str, Any]) -> None:
    tp = report["throughput"]
    assert report["signals_per_s"] == tp["rules_batched"]["rows_per_s"] > 0
    assert tp["rules_batched"]["rows_per_call"] == 60
    assert tp["rules_10_row_messages"]["rows_per_call"] == 10 and tp["rules_1_row_messages"]["rows_per_call"] == 1
    assert tp["rules_1_row_messages"]["rows_per_s"] > 0 and tp["incidents"]["signals_per_s"] > 0
    assert tp["incidents"]["signals"] == report["raw_signals"]


def test_the_storm_reaches_the_issue_reduction_target(report: dict[str, Any]) -> None:
    assert report["reduction_ratio"] >= 50
    assert report["false_pages"] == 0
    assert report["notifications"] == 11  # the outage, the dip, 3 flapping sensors and 6 faults: one page each


def test_a_backfilled_outage_also_pages_once(tmp_path: Path) -> None:
    g = _bench(tmp_path, "--quick", "--backfill")["storm"]["gateway_outage"]
    assert g["silences"] == 200 and g["pages"] == 1
