"""Running detectors on NAB: the threshold optimiser on hand-made cases, the corpus runner, and
``edgeloop eval nab --detector`` end to end on a handful of real NAB files (a bar that fails if quality regresses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.evaluation.nab import CostMatrix, ScoredFile, Window, score_profile
from edgeloop.evaluation.nab_data import (
    NabDataError,
    default_data_dir,
    load_corpus,
    load_profiles,
    load_scored_corpus,
    nab_dir,
)
from edgeloop.evaluation.nab_run import optimise_threshold, run_corpus, run_series, threshold_curve

STANDARD = CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
ROWS = 100
T = np.datetime64("2024-01-01T00:00", "us") + np.arange(ROWS) * np.timedelta64(1, "m")
WINDOW: Window = (T[40], T[49])  # probation: rows 0..14


def _file(scores: dict[int, float], windows: list[Window] | None = None) -> ScoredFile:
    s = np.zeros(ROWS)
    for row, value in scores.items():
        s[row] = value
    return ScoredFile("a/b.csv", T, s, [WINDOW] if windows is None else windows)


# -- the optimiser ----------------------------------------------------------------------------------------
def test_the_optimiser_picks_the_threshold_that_catches_the_window_and_skips_the_false_alarms() -> None:
    # 0.9 at row 20 (a false positive), 0.6 at row 42 (in the window), 0.3 at rows 60..64 (false positives)
    f = _file({20: 0.9, 42: 0.6, 60: 0.3, 61: 0.3, 62: 0.3, 63: 0.3, 64: 0.3})
    threshold, result = optimise_threshold([f], STANDARD)
    assert 0.3 < threshold <= 0.6  # catches row 42 and the false positive at 20, not the five at 60..64
    assert result.raw == pytest.approx(score_profile([f], 0.6, STANDARD).raw)
    assert result.raw > score_profile([f], 0.95, STANDARD).raw  # better than detecting nothing
    assert result.raw > score_profile([f], 0.3, STANDARD).raw
    assert threshold == pytest.approx(0.45)  # the midpoint between 0.6 and the next lower score


def test_the_optimiser_detects_nothing_when_every_alarm_is_false() -> None:
    f = _file({20: 0.9, 70: 0.5}, windows=[])
    threshold, result = optimise_threshold([f], STANDARD)
    assert threshold > 0.9 and result.raw == 0.0


def test_the_curve_matches_the_scorer_at_every_threshold() -> None:
    rng = np.random.default_rng(3)
    files = [ScoredFile("a/b.csv", T, rng.random(ROWS) ** 4, [WINDOW, (T[70], T[79])]),
             ScoredFile("a/c.csv", T, rng.random(ROWS) ** 4, [(T[5], T[20])])]  # partly in probation
    thresholds, raw = threshold_curve(files, STANDARD)
    assert np.all(np.diff(thresholds) < 0)
    for t, r in zip(thresholds, raw, strict=True):
        assert r == pytest.approx(score_profile(files, float(t), STANDARD).raw, abs=1e-9)


def test_the_optimiser_reproduces_nab_on_the_random_cut_forest_calibration() -> None:
    corpus = nab_dir(default_data_dir())
    files = load_scored_corpus(corpus, corpus / "calibration" / "randomCutForest")
    published = json.loads((corpus / "config" / "thresholds.json").read_text())["randomCutForest"]
    for profile, costs in load_profiles(corpus).items():
        _threshold, result = optimise_threshold(files, costs)
        assert result.raw >= published[profile]["score"] - 1e-9  # NAB's own search found no better threshold


# -- running a detector -----------------------------------------------------------------------------------
def test_run_series_is_streaming_and_the_corpus_runner_keeps_the_order() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(10.0, 1.0, 9000)
    values[5000] = 30.0
    scores = run_series("mad", values)
    assert scores.shape == values.shape and int(np.argmax(scores)) == 5000
    changed = values.copy()
    changed[6000:] += 100.0
    np.testing.assert_array_equal(run_series("mad", changed)[:6000], scores[:6000])  # no look-ahead
    corpus = load_corpus(nab_dir(default_data_dir()), only=SMALL[:2])
    seen: list[tuple[int, int]] = []
    scored = run_corpus(corpus, "mad", workers=2, progress=lambda done, total: seen.append((done, total)))
    assert [f.name for f in scored] == SMALL[:2] and seen[-1] == (2, 2)
    np.testing.assert_array_equal(scored[1].scores, run_series("mad", corpus[1].values))


def test_unknown_files_and_detectors_are_refused() -> None:
    with pytest.raises(NabDataError, match="no such file"):
        load_corpus(nab_dir(default_data_dir()), only=["realTweets/none.csv"])
    with pytest.raises(ValueError, match="unknown detector"):
        run_corpus([], "no-such-detector")


# -- the CLI on a reduced corpus ----------------------------------------------------------------------------
SMALL = [
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "realKnownCause/ambient_temperature_system_failure.csv",
    "realTraffic/occupancy_t4013.csv",
    "realAdExchange/exchange-3_cpc_results.csv",
]


def _small_corpus(tmp: Path) -> Path:
    """A NAB layout in ``tmp`` with the files of :data:`SMALL` (links to the real data, nothing copied)."""
    real = nab_dir(default_data_dir())
    root = tmp / "nab"
    (root / "labels").mkdir(parents=True)
    windows = json.loads((real / "labels" / "combined_windows.json").read_text())
    (root / "labels" / "combined_windows.json").write_text(json.dumps({n: windows[n] for n in SMALL}))
    (root / "config").symlink_to(real / "config")
    for name in SMALL:
        target = root / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(real / "data" / name)
    return tmp


# The detectors' scores on SMALL when the bars were set (standard profile: mad 43.2, seasonal 50.0, novelty 81.2,
# context 57.3, ensemble with its univariate preset 82.4); each bar a little below.
BARS = {"mad": 40.0, "seasonal": 47.0, "novelty": 78.0, "context": 54.0, "ensemble": 79.0}


@pytest.mark.parametrize("detector", sorted(BARS))
def test_the_cli_runs_a_detector_on_nab(tmp_path: Path, detector: str) -> None:
    data = _small_corpus(tmp_path)
    result = CliRunner().invoke(app, ["eval", "nab", "--data", str(data), "--detector", detector, "--json",
                                      "--workers", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON only; the progress went to stderr
    assert f"{detector}: {len(SMALL)}/{len(SMALL)} files" in result.stderr
    assert report["detector"] == detector and report["files"] == len(SMALL)
    assert set(report["thresholds"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert report["standard"] >= BARS[detector], report


def test_the_cli_prints_a_table_with_the_thresholds(tmp_path: Path) -> None:
    data = _small_corpus(tmp_path)
    result = CliRunner().invoke(app, ["eval", "nab", "--data", str(data), "--detector", "mad"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "threshold" in result.stdout and "reward_low_FP_rate" in result.stdout
    assert "optimised thresholds" in result.stdout


def test_the_cli_refuses_an_unknown_detector_and_missing_data(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "nab", "--data", str(_small_corpus(tmp_path)), "--detector", "nope"],
                           catch_exceptions=False)
    assert result.exit_code == 1 and "unknown detector 'nope'" in result.output and "mad" in result.output
    result = runner.invoke(app, ["eval", "nab", "--data", str(tmp_path / "absent"), "--detector", "mad"],
                           catch_exceptions=False)
    assert result.exit_code == 1 and "absent" in result.output and "--data" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", "nab", "--data", str(empty)], catch_exceptions=False)
    assert result.exit_code == 1 and "no NAB corpus" in result.output
    result = runner.invoke(app, ["eval", "nab", "--data", str(empty), "--detector", "mad", "--scores", str(empty)],
                           catch_exceptions=False)
    assert result.exit_code == 1 and "not both" in result.output


def test_the_novelty_detectors_pruned_search_is_exact() -> None:
    from edgeloop.detect.detectors.novelty import _nearest

    rng = np.random.default_rng(7)
    for trial in range(200):
        past = rng.normal(0.0, 1.0, (int(rng.integers(1, 300)), 4)) + (0.0 if trial % 2 else np.arange(4.0))
        pattern = rng.normal(0.0, 1.0, 4)
        expected = float(np.abs(past - pattern).mean(axis=1).min())
        assert _nearest(past, past.mean(axis=1), pattern) == expected


def test_eval_nab_runs_the_platforms_ensemble_by_default(tmp_path: Path) -> None:
    from edgeloop.cli.evaluate import DEFAULT_NAB_DETECTOR

    assert DEFAULT_NAB_DETECTOR == "ensemble"
    data = _small_corpus(tmp_path)
    result = CliRunner().invoke(app, ["eval", "nab", "--data", str(data), "--json", "--workers", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["detector"] == "ensemble" and report["standard"] >= BARS["ensemble"], report
    assert report["reward_low_FP_rate"] >= 78.0, report  # 81.18 when set
