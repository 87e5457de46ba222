"""The NAB scorer: hand-computed cases on a small file, the calibration on the real corpus, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.evaluation.nab import (
    CostMatrix,
    ScoredFile,
    Window,
    probationary_length,
    raw_score,
    scaled_sigmoid,
    score_corpus,
    score_profile,
)
from edgeloop.evaluation.nab_data import default_data_dir, load_profiles, load_scored_corpus, load_thresholds, nab_dir

STANDARD = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FN = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)

# A 100-row file, one row a minute; the probationary period is its first 15 rows; one window, rows 40..49.
ROWS = 100
T = np.datetime64("2024-01-01T00:00", "us") + np.arange(ROWS) * np.timedelta64(1, "m")
WINDOW: Window = (T[40], T[49])


def score_at(*rows: int, windows: list[Window] | None = None, costs: CostMatrix = STANDARD) -> float:
    scores = np.zeros(ROWS)
    scores[list(rows)] = 0.9
    return raw_score(T, scores, [WINDOW] if windows is None else windows, 0.5, costs)


def test_scaled_sigmoid_and_probation() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(math.tanh(2.5)) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0
    assert probationary_length(ROWS) == 15
    assert probationary_length(10_000) == 750


def test_a_detection_at_the_window_start_earns_the_full_tp_weight() -> None:
    assert score_at(40) == pytest.approx(1.0)
    assert score_at(40, 45, 49) == pytest.approx(1.0)  # only the earliest detection of a window counts


def test_a_late_detection_earns_less() -> None:
    # last row: position -(49 - 49 + 1) / 10 = -0.1 -> S = tanh(0.25) = 0.2449187, divided by S(-1) = 0.9866143
    assert score_at(49) == pytest.approx(0.2482415, abs=1e-6)
    # middle: position -(49 - 45 + 1) / 10 = -0.5 -> tanh(1.25) / tanh(2.5) = 0.8482836 / 0.9866143
    assert score_at(45) == pytest.approx(0.8597926, abs=1e-6)


def test_false_positives_are_weighted_by_the_distance_past_the_preceding_window() -> None:
    # row 54: (54 - 49) / (10 - 1) = 5/9 past the window -> S = -tanh(25/18) = -0.8829262, times fp 0.11
    assert score_at(40, 54) == pytest.approx(1.0 - 0.11 * 0.8829262, abs=1e-6)
    assert score_at(40, 50) == pytest.approx(1.0 - 0.11 * math.tanh(2.5 / 9))  # just past: nearly free
    assert score_at(40, 90) == pytest.approx(1.0 - 0.11)  # 41/9 >= 3 past: the full fp weight
    assert score_at(40, 20) == pytest.approx(1.0 - 0.11)  # before any window: the full fp weight
    assert score_at(40, 20, 21, 90) == pytest.approx(1.0 - 3 * 0.11)  # every false positive counts


def test_a_missed_window_costs_the_fn_weight_and_the_probationary_period_is_ignored() -> None:
    assert score_at() == pytest.approx(-1.0)
    assert score_at(costs=LOW_FN) == pytest.approx(-2.0)
    assert score_at(5, 14) == pytest.approx(-1.0)  # detections in the probationary period do not count
    assert score_at(15) == pytest.approx(-1.11)  # row 15 is the first scored row
    # a window wholly inside the probationary period is neither missed nor caught
    assert score_at(windows=[(T[2], T[5])]) == 0.0
    assert score_at(90, windows=[]) == pytest.approx(-0.11)


def test_the_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    second: Window = (T[70], T[79])
    windows = [WINDOW, second]
    null = np.zeros(ROWS)
    perfect = np.zeros(ROWS)
    perfect[[40, 70]] = 1.0
    profiles = {"standard": STANDARD, "reward_low_FN_rate": LOW_FN}
    thresholds = {"standard": 0.5, "reward_low_FN_rate": 0.5}
    for scores, expected in ((null, 0.0), (perfect, 100.0)):
        results = score_corpus([ScoredFile("a/b.csv", T, scores, windows)], thresholds, profiles)
        assert {p: r.normalized for p, r in results.items()} == pytest.approx({p: expected for p in profiles})
    r = score_profile([ScoredFile("a/b.csv", T, null, windows)], 0.5, LOW_FN)
    assert (r.raw, r.null, r.perfect) == (-4.0, -4.0, 2.0)
    half = np.zeros(ROWS)
    half[40] = 1.0  # one window at its start, the other missed: halfway between null and perfect
    assert score_profile([ScoredFile("a/b.csv", T, half, windows)], 0.5, STANDARD).normalized == pytest.approx(50)


# -- the calibration on the real NAB corpus (../shared/data or $EDGELOOP_DATA) ----------------------------
PUBLISHED = {"standard": 51.72, "reward_low_FP_rate": 38.36, "reward_low_FN_rate": 59.75}


def nab() -> Path:
    return nab_dir(default_data_dir())


def test_the_calibration_reproduces_the_published_random_cut_forest_scores() -> None:
    corpus = nab()
    files = load_scored_corpus(corpus, corpus / "calibration" / "randomCutForest")
    assert len(files) == 58
    assert sum(len(f.windows) for f in files) == 116
    thresholds = load_thresholds(corpus / "config" / "thresholds.json", "randomCutForest")
    results = score_corpus(files, thresholds, load_profiles(corpus))
    assert {p: r.normalized for p, r in results.items()} == pytest.approx(PUBLISHED, abs=0.05)
    # NAB's thresholds.json also records the raw score each threshold gave
    published_raw = json.loads((corpus / "config" / "thresholds.json").read_text())["randomCutForest"]
    assert {p: r.raw for p, r in results.items()} == pytest.approx(
        {p: published_raw[p]["score"] for p in PUBLISHED}, abs=1e-6)


def test_a_file_that_steps_back_in_time_is_scored_in_its_row_order() -> None:
    """Rows that step back an hour (as one corpus file does) are not reordered: the window still spans the rows
    from its start to its end, so a detection at its first row earns the full TP weight."""
    stepped = np.concatenate([T[:50], T[:30] + np.timedelta64(1, "s"), T[50:]])  # after row 49, 50 min back
    scores = np.zeros(len(stepped))
    scores[40] = 0.9  # the window's first row
    assert raw_score(stepped, scores, [WINDOW], 0.5, STANDARD) == pytest.approx(1.0)


def test_results_in_the_corpus_row_order_reproduce_the_published_scores(tmp_path: Path) -> None:
    """NAB's results files keep the corpus's row order, in which machine_temperature_system_failure.csv steps
    back an hour; the calibration scores, written in that order, are accepted and still give the published
    scores."""
    corpus = nab()
    scores_dir = tmp_path / "randomCutForest"
    shutil.copytree(corpus / "calibration" / "randomCutForest", scores_dir)
    name = "realKnownCause/machine_temperature_system_failure.csv"
    data_rows = (corpus / "data" / name).read_text().splitlines()[1:]
    stamps = np.array([row.split(",")[0] for row in data_rows], dtype="datetime64[us]")
    assert bool(np.any(np.diff(stamps) < np.timedelta64(0, "us"))), "the corpus file no longer steps back"
    target = scores_dir / "realKnownCause" / "randomCutForest_machine_temperature_system_failure.csv"
    sorted_scores = [row.split(",")[1] for row in target.read_text().splitlines()[1:]]
    in_row_order = [""] * len(sorted_scores)
    for k, row in enumerate(np.argsort(stamps, kind="stable")):  # the calibration file is the corpus sorted
        in_row_order[int(row)] = sorted_scores[k]
    target.write_text("timestamp,anomaly_score\n" + "".join(
        f"{row.split(',')[0]},{score}\n" for row, score in zip(data_rows, in_row_order, strict=True)))

    files = load_scored_corpus(corpus, scores_dir)
    thresholds = load_thresholds(corpus / "config" / "thresholds.json", "randomCutForest")
    results = score_corpus(files, thresholds, load_profiles(corpus))
    assert {p: r.normalized for p, r in results.items()} == pytest.approx(PUBLISHED, abs=0.05)


def test_the_cli_scores_a_scores_directory() -> None:
    corpus = nab()
    runner = CliRunner()
    args = ["eval", "nab", "--data", str(corpus.parent), "--scores", str(corpus / "calibration" / "randomCutForest"),
            "--thresholds", str(corpus / "config" / "thresholds.json")]
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == pytest.approx(PUBLISHED, abs=0.05)
    table = runner.invoke(app, args, catch_exceptions=False)
    assert table.exit_code == 0
    assert "51.72" in table.stdout and "reward_low_FN_rate" in table.stdout


def test_the_cli_reports_a_missing_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_DATA", str(tmp_path / "absent"))
    result = CliRunner().invoke(app, ["eval", "nab", "--scores", str(tmp_path), "--thresholds",
                                      str(tmp_path / "t.json")], catch_exceptions=False)
    assert result.exit_code == 1
    assert "absent" in result.output and "EDGELOOP_DATA" in result.output
