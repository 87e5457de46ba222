"""``edgeloop bench detect`` runs end to end in a tiny configuration and reports every path it claims to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_detect_measures_the_platform_detector_and_the_registered_ones() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloop", "bench", "detect", "--rows", "2000", "--detector", "mad",
         "--detector", "ensemble", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    Path(report["results_file"]).unlink(missing_ok=True)
    assert report["channels"] == 8
    platform = report["platform"]
    assert platform["rows_per_s_batched"] > 0 and platform["single_rows"] == 5000
    assert 0 < platform["single_row"]["p50_us"] <= platform["single_row"]["p99_us"] <= platform["single_row"]["max_us"]
    kpi = report["platform_univariate"]
    assert kpi["channels"] == 1 and kpi["rows_per_s_batched"] > 0 and kpi["single_rows"] > 0
    assert [r["detector"] for r in report["registered"]] == ["mad", "ensemble"]
    assert all(r["rows_timed"] >= 2000 and r["rows_per_s_batched"] > 0 for r in report["registered"])
