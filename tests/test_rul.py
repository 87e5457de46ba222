"""Remaining useful life: streaming features, the ONNX model against scikit-learn, SHAP explanations, alerts,
the C-MAPSS reader, and ``edgeloop eval rul`` on the real FD001 (../shared/data or $EDGELOOP_DATA)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli import app
from edgeloop.evaluation.cmapss_data import (
    CmapssDataError,
    default_cmapss_dir,
    format_runs,
    load_runs,
    load_test,
    parse_runs,
    parse_truth,
)
from edgeloop.evaluation.rul_eval import cut_points, phm08_score, rmse
from edgeloop.rul.features import AssetHistory, asset_features, fit_feature_spec
from edgeloop.rul.model import (
    RulModel,
    RulParams,
    RulPrediction,
    TrainedRul,
    explanation,
    rul_alert,
    train_rul,
)

SMALL = RulParams(n_estimators=60, stride=4, calibration_folds=2)


def fd001() -> Path:
    path = default_cmapss_dir() / "train_FD001.txt"
    assert path.is_file(), f"C-MAPSS FD001 not found at {path}: set EDGELOOP_DATA to the shared data directory"
    return path


@pytest.fixture(scope="module")
def engines() -> list[AssetHistory]:
    return load_runs(fd001())


@pytest.fixture(scope="module")
def small_model(engines: list[AssetHistory]) -> TrainedRul:
    return train_rul(engines[:60], SMALL)


# -- features ------------------------------------------------------------------------------------------------
def test_features_at_a_cycle_do_not_change_when_later_cycles_arrive(engines: list[AssetHistory]) -> None:
    spec = fit_feature_spec(engines[:20])
    engine = engines[30]
    full = asset_features(spec, engine)
    assert full.shape == (len(engine), len(spec.names))
    for t in (1, 2, 9, 10, 11, 29, 30, 31, 57, len(engine) - 1):
        assert np.array_equal(asset_features(spec, engine.head(t)), full[:t]), t
    # and a history whose future is wildly different gives the same past
    future = engine.sensors.copy()
    future[100:] *= 3.0
    changed = AssetHistory(engine.asset, engine.cycles, engine.settings, future, engine.sensor_names)
    assert np.array_equal(asset_features(spec, changed)[:100], full[:100])


def test_constant_sensors_are_dropped_and_fd001_has_one_operating_regime(engines: list[AssetHistory]) -> None:
    spec = fit_feature_spec(engines)
    assert len(spec.centres) == 1
    for constant in ("s1", "s5", "s6", "s10", "s16", "s18", "s19"):
        assert constant not in spec.kept
    assert {"s2", "s3", "s4", "s7", "s11", "s12", "s15", "s21"} <= set(spec.kept)
    assert spec.names[-1] == "age" and len(spec.names) == 4 * len(spec.kept) + 1


def test_operating_regimes_are_found_and_normalised_away() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0, 100], [10, 0.25, 100], [20, 0.7, 100], [25, 0.62, 60], [35, 0.84, 100],
                        [42, 0.84, 100]])
    histories = []
    for i in range(12):
        regime = rng.integers(0, 6, 150)
        settings = centres[regime] + rng.normal(0, 0.002, (150, 3))
        sensors = regime[:, None] * 50.0 + rng.normal(0, 1, (150, 2))  # the regime dominates the readings
        histories.append(AssetHistory(str(i), np.arange(1, 151), settings, sensors, ("a", "b")))
    spec = fit_feature_spec(histories)
    assert len(spec.centres) == 6
    z = asset_features(spec, histories[0])[:, 0]  # a.mean10 after normalisation: noise around 0, not 0..250
    assert np.abs(z[10:]).max() < 2.0
    # settings exactly at three set points (fewer distinct points than k-means' largest k)
    exact = [replace(h, settings=centres[:3][rng.integers(0, 3, len(h))]) for h in histories]
    assert len(fit_feature_spec(exact).centres) == 3


# -- the ONNX model and its explanation --------------------------------------------------------------------------
def test_the_onnx_model_predicts_what_scikit_learn_does(small_model: TrainedRul,
                                                        engines: list[AssetHistory]) -> None:
    model = RulModel(small_model.onnx)
    x = np.vstack([model.features(e) for e in engines[60:70]])
    # ONNX Runtime reads float32: the same input, within 1e-4 cycles
    assert np.abs(model.raw(x) - small_model.estimator.predict(x.astype(np.float32))).max() < 1e-4
    rul, lower, upper = model.predict_rows(x)
    assert ((lower <= rul) & (rul <= upper)).all() and (rul >= 0).all() and (rul <= 125).all()
    p = model.predict(engines[65].head(120))
    assert p.cycle == 120 and p.lower <= p.rul <= p.upper and p.coverage == 0.8


def test_shap_of_the_onnx_trees_adds_up_and_matches_shap_on_scikit_learn(small_model: TrainedRul,
                                                                          engines: list[AssetHistory]) -> None:
    import shap

    model = RulModel(small_model.onnx)
    x = np.vstack([model.features(e) for e in engines[60:63]])
    base, values = model.shap_values(x)
    assert np.abs(base + values.sum(axis=1) - model.raw(x)).max() < 1e-3
    reference = shap.TreeExplainer(small_model.estimator).shap_values(x.astype(np.float32))
    assert np.abs(values - reference).max() < 1e-3


def test_a_sensor_given_end_of_life_degradation_leads_the_explanation(small_model: TrainedRul,
                                                                       engines: list[AssetHistory]) -> None:
    model = RulModel(small_model.onnx)
    healthy = engines[70].head(60)  # early life: far from failure
    donor = engines[71]  # its sensors over its last 60 cycles carry the degradation
    before, why_before = model.predict(healthy).rul, model.explain(healthy)
    for sensor in ("s7", "s11", "s12", "s15"):
        j = healthy.sensor_names.index(sensor)
        sensors = healthy.sensors.copy()
        sensors[:, j] = donor.sensors[-60:, j]  # only this sensor degrades
        perturbed = replace(healthy, sensors=sensors)
        why = model.explain(perturbed)
        assert model.predict(perturbed).rul < before - 3
        # it is what pulls the RUL down, by far, and its share of |SHAP| grows more than any other's
        assert why.drivers(1)[0][0] == sensor and why.lowering[sensor] > 0.4, (sensor, why.drivers(3))
        growth = {c: why.channels.get(c, 0.0) - why_before.channels.get(c, 0.0) for c in why.channels}
        assert max(growth, key=lambda c: growth[c]) == sensor, (sensor, growth)
        assert sum(why.channels.values()) == pytest.approx(1.0)
        assert sum(why.lowering.values()) == pytest.approx(1.0)
        assert why.base + sum(why.features.values()) == pytest.approx(model.raw(model.features(perturbed))[-1],
                                                                      abs=1e-3)


def test_the_platform_feeds_named_channels_and_gets_an_explained_alert(small_model: TrainedRul,
                                                                        engines: list[AssetHistory]) -> None:
    model = RulModel(small_model.onnx)
    engine = engines[75]
    readings = {name: engine.sensors[:, j] for j, name in enumerate(engine.sensor_names)}
    assert set(model.channels) == set(small_model.spec.kept)  # FD001: one regime, the settings are not needed
    history = model.history(engine.asset, engine.cycles, readings)
    assert model.predict(history) == model.predict(engine)
    with pytest.raises(ValueError, match="no readings for s11"):
        model.history("x", engine.cycles, {k: v for k, v in readings.items() if k != "s11"})
    # a missing reading holds the previous one: the same features as the series with that value repeated
    gappy = {k: v.copy() for k, v in readings.items()}
    gappy["s11"][50] = np.nan
    held = {k: v.copy() for k, v in readings.items()}
    held["s11"][50] = held["s11"][49]
    assert np.array_equal(model.features(model.history("x", engine.cycles, gappy)),
                          model.features(model.history("x", engine.cycles, held)))
    prediction, alert = model.check(history, horizon=30)
    assert prediction.rul < 30 and alert is not None and alert.explanation is not None
    assert alert.severity == "critical" and "pulled down by" in alert.message
    early, none = model.check(history.head(40), horizon=30)
    assert early.rul > 60 and none is None


def test_rul_models_refuse_other_bytes(small_model: TrainedRul) -> None:
    with pytest.raises(ValueError, match="not an ONNX model"):
        RulModel(b"not a model")


# -- alerts ------------------------------------------------------------------------------------------------
def test_the_alert_fires_on_the_lower_bound_and_names_the_drivers(small_model: TrainedRul) -> None:
    spec = small_model.spec
    values = np.zeros(len(spec.names))
    values[spec.names.index("s11.mean30")] = -20.0
    values[spec.names.index("s4.drift")] = -10.0
    values[spec.names.index("s7.mean10")] = 5.0  # holds the RUL up
    why = explanation(spec, 80.0, values)
    assert [c for c, _ in why.top(3)] == ["s11", "s4", "s7"]
    assert dict(why.top(3)) == pytest.approx({"s11": 20 / 35, "s4": 10 / 35, "s7": 5 / 35})
    assert [c for c, _ in why.drivers()] == ["s11", "s4"]
    assert dict(why.drivers()) == pytest.approx({"s11": 2 / 3, "s4": 1 / 3})
    far = RulPrediction("7", 150, rul=60.0, lower=45.0, upper=80.0, coverage=0.8, cap=125.0)
    assert rul_alert(far, horizon=30) is None
    near = replace(far, rul=40.0, lower=25.0)
    warning = rul_alert(near, horizon=30, explanation=why)
    assert warning is not None and warning.severity == "warning"
    assert "asset 7" in warning.message and "30-cycle horizon" in warning.message
    assert "pulled down by s11 67%, s4 33%" in warning.message
    assert rul_alert(near, horizon=30, basis="point") is None
    critical = rul_alert(replace(near, rul=20.0, lower=10.0), horizon=30)
    assert critical is not None and critical.severity == "critical"


# -- metrics ------------------------------------------------------------------------------------------------
def test_phm08_penalises_late_predictions_more() -> None:
    assert phm08_score(np.array([10.0]), np.array([0.0])) == pytest.approx(np.e - 1)
    assert phm08_score(np.array([0.0]), np.array([13.0])) == pytest.approx(np.e - 1)
    assert rmse(np.array([3.0, -3.0]), np.zeros(2)) == 3.0
    cuts = cut_points([AssetHistory("1", np.arange(1, 201), np.zeros((200, 0)), np.zeros((200, 1)), ("s",))] * 50, 0)
    assert min(cuts) >= 31 and max(cuts) <= 199 and len(set(cuts)) > 20


# -- the C-MAPSS reader ----------------------------------------------------------------------------------------
ROW = "1 1 -0.0007 -0.0004 100.0 " + " ".join(["1.0"] * 21)


def test_malformed_files_name_the_line_and_the_problem(tmp_path: Path) -> None:
    row2 = ROW.replace("1 1 ", "1 2 ", 1)
    cases = {
        "columns": ([ROW, "1 2 0 0"], "line 2: 4 columns, expected 26"),
        "number": ([ROW, row2.replace("1.0", "x", 1)], "line 2: 'x' is not a number"),
        "cycle": ([ROW, ROW.replace("1 1 ", "1 3 ", 1)], "line 2: unit 1 cycle 3, expected 2"),
        "unit": ([ROW, ROW.replace("1 1 ", "2 1 ", 1), row2], "line 3: unit 1 appears again"),
        "integer": ([ROW.replace("1 1 ", "1 1.5 ", 1)], "line 1: unit '1' and cycle '1.5' must be positive"),
        "nan": ([ROW.replace("100.0", "nan")], "line 1: a value is not finite"),
    }
    for name, (lines, message) in cases.items():
        with pytest.raises(CmapssDataError, match=message):
            parse_runs(lines, name)
    with pytest.raises(CmapssDataError, match=r"empty\.txt: no data rows"):
        parse_runs(["", "  "], "empty.txt")
    with pytest.raises(CmapssDataError, match=r"RUL\.txt, line 2: remaining useful life '-3' must be a finite"):
        parse_truth(["12", "-3"], "RUL.txt")
    with pytest.raises(CmapssDataError, match=r"RUL\.txt, line 1: 2 values"):
        parse_truth(["12 13"], "RUL.txt")
    (tmp_path / "test.txt").write_text(ROW + "\n")
    (tmp_path / "RUL.txt").write_text("10\n20\n")
    with pytest.raises(CmapssDataError, match="2 values for the 1 units"):
        load_test(tmp_path / "test.txt", tmp_path / "RUL.txt")
    with pytest.raises(CmapssDataError, match=r"absent\.txt: not found"):
        load_runs(tmp_path / "absent.txt")


def test_the_cli_reports_a_malformed_file(tmp_path: Path) -> None:
    bad = tmp_path / "train.txt"
    bad.write_text(ROW + "\n" + ROW.replace("1 1 ", "1 2 ", 1).rsplit(" ", 1)[0] + "\n")
    result = CliRunner().invoke(app, ["eval", "rul", "--train", str(bad)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "line 2: 25 columns, expected 26" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["eval", "rul", "--train", str(bad), "--test", str(bad)],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "--truth" in result.output


# -- the evaluation on the real FD001 -------------------------------------------------------------------------------
# Reduced settings so each run takes well under a minute: 60 trees at learning rate 0.1 on every 4th cycle (the
# defaults, 300 trees at 0.05 on every 2nd, are better still: 9.4 in 5-fold cross-validation). In 3-fold
# cross-validation they reach an RMSE of 11.5 at the last observed cycle (9.9 over every cycle, PHM08 216), and 13.5
# on the 20 held-out engines; the bars sit a little above, so a regression in features or training fails here.
REDUCED = ["--trees", "60", "--learning-rate", "0.1", "--stride", "4"]


def test_cross_validation_by_engine_on_fd001_meets_its_bar() -> None:
    result = CliRunner().invoke(app, ["eval", "rul", "--train", str(fd001()), "--folds", "3", *REDUCED, "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "cv" and doc["engines"] == 100 and doc["folds"] == 3
    assert doc["rmse"] <= RMSE_BAR, doc["rmse"]
    assert doc["rows_rmse"] <= ROWS_RMSE_BAR, doc["rows_rmse"]
    assert doc["phm08"] <= PHM08_BAR, doc["phm08"]
    assert 0.7 <= doc["coverage"] <= 0.95 and 0.7 <= doc["rows_coverage"] <= 0.9


def test_test_mode_scores_held_out_engines_at_their_last_cycle(tmp_path: Path, engines: list[AssetHistory]) -> None:
    rng = np.random.default_rng(3)
    held = engines[80:]
    cuts = [int(rng.integers(31, len(e))) for e in held]
    (tmp_path / "train.txt").write_text(format_runs(engines[:80]))
    (tmp_path / "test.txt").write_text(format_runs([e.head(c) for e, c in zip(held, cuts, strict=True)]))
    (tmp_path / "RUL.txt").write_text("".join(f"{len(e) - c}\n" for e, c in zip(held, cuts, strict=True)))
    args = ["eval", "rul", "--train", str(tmp_path / "train.txt"), "--test", str(tmp_path / "test.txt"), "--truth",
            str(tmp_path / "RUL.txt"), *REDUCED]
    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "test" and doc["engines"] == 20
    assert [r["observed"] for r in doc["per_engine"]] == cuts
    assert doc["rmse"] <= HELD_OUT_RMSE_BAR, doc["rmse"]
    table = CliRunner().invoke(app, args, catch_exceptions=False)
    assert table.exit_code == 0 and "PHM08" in table.stdout


def test_the_cli_writes_the_model_the_platform_runs(tmp_path: Path, engines: list[AssetHistory]) -> None:
    (tmp_path / "train.txt").write_text(format_runs(engines[:30]))
    out = tmp_path / "rul.onnx"
    result = CliRunner().invoke(app, ["rul-model", "--train", str(tmp_path / "train.txt"), "--out", str(out),
                                      "--trees", "20", "--stride", "8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = RulModel(out.read_bytes())
    p = model.predict(engines[90])
    assert p.asset == "91" and p.rul < 40  # run to failure: its last cycle is close to the end
    assert rul_alert(p, horizon=50, explanation=model.explain(engines[90])) is not None


RMSE_BAR = 12.5
ROWS_RMSE_BAR = 10.8
PHM08_BAR = 270.0
HELD_OUT_RMSE_BAR = 15.0
