"""SKAB: the metrics on hand-computed cases, the loader on any folder of SKAB-format files, the pipeline and
``edgeloop eval skab`` on the real runs (``default_data_dir()/skab``) with a bar that fails if quality regresses."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.evaluation.nab_data import default_data_dir
from edgeloop.evaluation.skab import SkabConfig, detect_run, evaluate, latch
from edgeloop.evaluation.skab_data import (
    CHANNELS,
    SkabDataError,
    SkabRun,
    SkippedFile,
    load_runs,
    read_run,
    skab_dir,
)
from edgeloop.evaluation.skab_metrics import (
    NAB_PROFILES,
    ChangepointRun,
    changepoint_windows,
    nab_changepoints,
    point_counts,
    predicted_changepoints,
    window_score,
)

SKAB = default_data_dir() / "skab"
STANDARD = NAB_PROFILES["standard"]
HEADER = "datetime;" + ";".join(CHANNELS) + ";anomaly;changepoint"


def _real_runs() -> list[SkabRun]:
    assert (SKAB / "valve1").is_dir(), f"SKAB data not found in {SKAB} (set EDGELOOP_DATA)"
    runs, _ = load_runs(SKAB)
    return runs


# ------------------------------------------------------------------ metrics
def test_point_metrics_by_hand() -> None:
    c = point_counts([0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0, 0])
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 3, 1)
    assert math.isclose(c.f1, 2 / 3) and math.isclose(c.far, 1 / 4) and math.isclose(c.mar, 1 / 3)
    total = c + point_counts([1], [1])
    assert (total.tp, total.fp, total.tn, total.fn) == (3, 1, 3, 1)
    nothing = point_counts([0, 0], [0, 0])
    assert nothing.f1 == 0.0 and nothing.far == 0.0 and nothing.mar == 0.0
    with pytest.raises(ValueError):
        point_counts([0, 1], [0])


def test_predicted_changepoints_are_label_switches() -> None:
    assert predicted_changepoints([1, 1, 0, 0, 1, 1]).tolist() == [True, False, True, False, True, False]
    assert predicted_changepoints([0, 0, 1]).tolist() == [False, False, True]
    assert predicted_changepoints([]).size == 0


def test_windows_are_centred_and_cut_on_overlap() -> None:
    assert changepoint_windows([100.0]) == [(85.0, 115.0)]
    assert changepoint_windows([20.0, 0.0]) == [(-15.0, 15.0), (15.0, 35.0)]  # the later window is cut


def test_window_score_runs_from_tp_to_fp() -> None:
    assert math.isclose(window_score(0.0, STANDARD), 1.0)
    assert math.isclose(window_score(1.0, STANDARD), -0.11)
    assert math.isclose(window_score(0.5, STANDARD), (1.0 - 0.11) / 2, abs_tol=0.01)
    assert window_score(0.2, STANDARD) > window_score(0.4, STANDARD) > window_score(0.8, STANDARD)


def _cp_run(predicted_at: list[int], true_at: tuple[int, ...] = (50,)) -> ChangepointRun:
    seconds = np.arange(100, dtype=np.float64)
    true_cp = np.isin(np.arange(100), true_at)
    return ChangepointRun(seconds=seconds, true_cp=true_cp, predicted_cp=np.isin(np.arange(100), predicted_at))


def test_changepoint_nab_by_hand() -> None:
    def standard(*runs: ChangepointRun) -> float:
        return nab_changepoints(list(runs))["standard"].normalized

    assert math.isclose(standard(_cp_run([35])), 100.0)  # at the window's start (t - 15 s)
    assert math.isclose(standard(_cp_run([])), 0.0)
    assert math.isclose(standard(_cp_run([10])), 100 * (-1.11 + 1) / 2)  # a miss and a false alarm
    assert math.isclose(standard(_cp_run([35, 40, 65])), 100.0)  # only the earliest in a window counts
    assert math.isclose(standard(_cp_run([65])), 100 * (-0.11 + 1) / 2)  # at the window's end: A_fp
    two = standard(_cp_run([35]), _cp_run([]))
    assert math.isclose(two, 50.0)
    scores = nab_changepoints([_cp_run([10, 35])])
    assert math.isclose(scores["reward_low_FP_rate"].raw, 1.0 - 0.22)
    assert math.isclose(scores["reward_low_FN_rate"].null, -2.0)


def test_latch_confirms_and_releases() -> None:
    s = np.array([0, 5, 5, 0, 5, 5, 5, 3, 2, 0.5, 5], dtype=np.float64)
    assert latch(s, 4.0, 0.25, 3, 1).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert latch(s, 4.0, 0.25, 1, 1).tolist() == [0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1]


# ------------------------------------------------------------------ loader
def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_any_folder_of_skab_format_files_is_accepted(tmp_path: Path) -> None:
    shutil.copy(SKAB / "valve1" / "3.csv", tmp_path / "pump-B-run.csv")
    _write(tmp_path / "other" / "notes.csv", ["timestamp,value", "2020-01-01 00:00:00,1.0"])
    _write(tmp_path / "free" / "normal.csv", [HEADER.rsplit(";", 2)[0], "2020-01-01 00:00:00" + ";1.0" * 8])
    runs, skipped = load_runs(tmp_path)
    assert [r.name for r in runs] == ["pump-B-run.csv"]
    assert runs[0].x.shape[1] == len(CHANNELS) and runs[0].anomaly.sum() > 0
    reasons = {s.name: s.reason for s in skipped}
    assert "not SKAB format" in reasons["other/notes.csv"]
    assert "no labels" in reasons["free/normal.csv"]
    assert skab_dir(default_data_dir()) == SKAB and skab_dir(tmp_path) == tmp_path


def test_loader_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SkabDataError, match="not a directory"):
        load_runs(tmp_path / "missing")
    with pytest.raises(SkabDataError, match="no CSV files"):
        load_runs(tmp_path)
    _write(tmp_path / "a.csv", ["x;y", "1;2"])
    with pytest.raises(SkabDataError, match=r"no labelled SKAB runs.*a\.csv: not SKAB format"):
        load_runs(tmp_path)
    row = "2020-01-01 00:00:0{};" + ";".join(["1.0"] * 8) + ";0;0"
    bad = _write(tmp_path / "bad.csv", [HEADER, row.format(1), row.format(2).replace("1.0", "one", 1)])
    with pytest.raises(SkabDataError, match=r"bad\.csv:3: bad row"):
        read_run(bad)
    back = _write(tmp_path / "back.csv", [HEADER, row.format(2), row.format(1)])
    with pytest.raises(SkabDataError, match=r"back\.csv:3: timestamps go backwards"):
        read_run(back)
    holes = _write(tmp_path / "holes.csv", [HEADER, row.format(1), row.format(2).replace("1.0", "", 1)])
    got = read_run(holes)
    assert isinstance(got, SkabRun) and np.isnan(got.x[1, 0]) and not np.isnan(got.x[0]).any()


# ------------------------------------------------------------------ pipeline on the real runs
def test_pipeline_is_streaming_and_labels_only_the_test_part() -> None:
    run = _real_runs()[0]
    res = detect_run(run)
    cut = 700  # a different future does not change the past
    future = SkabRun(run.name, run.timestamps, run.x.copy(), run.anomaly, run.changepoint)
    future.x[cut:] *= 1.5
    other = detect_run(future)
    for alarm, again in ((res.anomaly, other.anomaly), (res.change, other.change)):
        assert (alarm.labels[:400] == 0).all() and (alarm.scores[:400] == 0).all() and alarm.threshold > 0
        np.testing.assert_array_equal(alarm.labels[:cut], again.labels[:cut])
        np.testing.assert_allclose(alarm.scores[:cut], again.scores[:cut])
    assert res.anomaly.labels[400:].any() and res.change.labels[400:].any()


def test_quality_bar_on_all_runs() -> None:
    report = evaluate(_real_runs())
    c = report.counts
    # measured on the 16 valve1 runs: F1 0.864, FAR 0.064, MAR 0.198; change-point NAB standard 37.4 (change
    # alarm), 24.3 (the anomaly alarm's switches); see edgeloop.evaluation.skab
    assert c.far <= 0.10 and c.mar <= 0.22 and c.f1 >= 0.85, c
    assert report.nab_score("standard") >= 34.0 and report.nab_score("reward_low_FP_rate") >= 29.0
    assert report.nab_score("standard", "anomaly") >= 21.0
    assert report.windows == 63


def test_few_alarms_on_the_fault_free_run() -> None:
    """SKAB's fault-free run, cut into run-sized pieces (400 training rows each): drift must not look like a fault."""
    path = SKAB / "anomaly-free" / "anomaly-free.csv"
    skipped = read_run(path)
    assert isinstance(skipped, SkippedFile) and "no labels" in skipped.reason
    lines = path.read_text().splitlines()[1:]
    stamps = np.array([ln.split(";")[0].replace(" ", "T") for ln in lines], dtype="datetime64[s]")
    x = np.array([[float(v) for v in ln.split(";")[1:9]] for ln in lines])
    flagged = []
    for start in range(0, len(lines) - 1150, 575):
        piece = slice(start, start + 1150)
        zeros = np.zeros(1150, dtype=np.int8)
        res = detect_run(SkabRun("free", stamps[piece], x[piece], zeros, zeros))
        flagged.append(res.anomaly.labels[400:].mean())
    assert float(np.mean(flagged)) <= 0.06, flagged  # measured 0.041 (0.134 without the level floor)


def test_other_detectors_run_through_the_pipeline() -> None:
    report = evaluate(_real_runs()[:2], SkabConfig(detector="mad"))
    assert report.runs == 2 and report.counts.tp > 0


# ------------------------------------------------------------------ edgeloop eval skab
def test_cli_end_to_end_on_the_real_runs() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "skab", "--data", str(default_data_dir()), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert {"f1", "far", "mar", "nab_standard", "nab_low_fp", "nab_low_fn", "tp", "fp", "tn", "fn", "runs",
            "windows", "detector"} <= set(got)
    assert got["runs"] >= 16 and got["detector"] == "mahalanobis" and got["skipped"] >= 1
    assert got["far"] <= 0.10 and got["mar"] <= 0.22 and got["f1"] >= 0.85 and got["nab_standard"] >= 34.0, got
    assert set(got["nab_anomaly_alarm"]) == {"standard", "low_fp", "low_fn"}
    table = runner.invoke(app, ["eval", "skab", "--data", str(SKAB / "valve1")], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "FAR" in table.stdout and "NAB standard" in table.stdout and "16 runs" in table.stdout


def test_cli_takes_a_folder_of_other_skab_files(tmp_path: Path) -> None:
    shutil.copy(SKAB / "valve1" / "5.csv", tmp_path / "line2-pump.csv")
    _write(tmp_path / "export.csv", ["a,b", "1,2"])
    result = CliRunner().invoke(app, ["eval", "skab", "--data", str(tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["runs"] == 1 and got["skipped"] == 1 and got["tp"] > 0
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "export.csv" in stderr and "not SKAB format" in stderr


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["eval", "skab", "--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "not a directory" in " ".join(missing.output.split())
    empty = runner.invoke(app, ["eval", "skab", "--data", str(tmp_path)])
    assert empty.exit_code == 1 and "no labelled SKAB runs" in " ".join(empty.output.split())
    unknown = runner.invoke(app, ["eval", "skab", "--data", str(SKAB), "--detector", "nope"])
    assert unknown.exit_code == 1 and "unknown detector" in " ".join(unknown.output.split())
