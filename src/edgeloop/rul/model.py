"""Remaining useful life (RUL): gradient-boosted trees on degradation features, run as ONNX, explained with SHAP.

Training (:func:`train_rul`) fits scikit-learn's ``GradientBoostingRegressor`` on the features of
:mod:`edgeloop.rul.features` against the RUL capped at ``cap`` cycles (a healthy asset's
remaining life cannot be read from its sensors, so the target is flat at the cap until
degradation starts), and exports it with skl2onnx. Everything the platform needs at run time is in
the ONNX file's metadata, nothing of the training data:

* ``edgeloop.rul.features``: the :class:`FeatureSpec` (regimes, normalisation, kept sensors);
* ``edgeloop.rul.cap``: the cap;
* ``edgeloop.rul.interval``: the interval, conformal residual quantiles of out-of-fold predictions
  (cross-validation by asset on the training set), per band of predicted RUL (errors grow with the
  RUL): ``[pred + q_lo, pred + q_hi]`` with the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``
  quantiles of ``true - predicted`` (no quantile models: one model, the interval is metadata);
* ``edgeloop.rul.cover``: each tree node's training sample count. With the trees themselves, read
  back from the ONNX graph's ``TreeEnsembleRegressor``, they are what path-dependent TreeSHAP needs:
  :meth:`RulModel.explain` explains the very model ONNX Runtime runs.

:class:`RulModel` loads those bytes and predicts the RUL with its interval at an asset's latest
cycle; :func:`rul_alert` turns a prediction into an alert when the RUL's lower bound falls below a
horizon. The evaluation (:mod:`edgeloop.evaluation.rul_eval`) uses these same functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeloop.rul.features import (
    AssetHistory,
    FeatureSpec,
    IntArray,
    Matrix,
    asset_features,
    fit_feature_spec,
)

__all__ = ["AssetHistory", "FeatureSpec", "IntervalTable", "RulAlert", "RulExplanation", "RulModel", "RulParams",
           "RulPrediction", "TrainedRul", "rul_alert", "rul_target", "train_rul"]

TRAINER = "gbr-degradation-features-v1"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RulParams:
    """Training settings. ``stride``: train on every n-th cycle of each asset (counted back from its last)."""

    cap: float = 125.0
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    min_samples_leaf: int = 20
    stride: int = 2
    calibration_folds: int = 3
    coverage: float = 0.8
    seed: int = 0


@dataclass(frozen=True)
class IntervalTable:
    """Conformal residual quantiles per band of predicted RUL; ``edges`` are the bands' upper limits."""

    edges: tuple[float, ...]
    lower: tuple[float, ...]  # one more than edges
    upper: tuple[float, ...]
    coverage: float

    def bounds(self, predicted: Matrix) -> tuple[Matrix, Matrix]:
        band = np.searchsorted(np.array(self.edges), predicted, side="right")
        lower = np.clip(predicted + np.array(self.lower)[band], 0.0, predicted)
        return lower, np.maximum(predicted + np.array(self.upper)[band], predicted)

    @classmethod
    def fit(cls, predicted: Matrix, true: Matrix, cap: float, coverage: float, min_count: int = 50) -> IntervalTable:
        """Quantiles of ``true - predicted`` per band of ``predicted`` (fifths of the cap); a band with fewer
        than ``min_count`` residuals uses all of them."""
        edges = tuple(cap * f for f in (0.2, 0.4, 0.6, 0.8))
        residual = true - predicted
        band = np.searchsorted(np.array(edges), predicted, side="right")
        levels = ((1 - coverage) / 2, (1 + coverage) / 2)
        pooled = np.quantile(residual, levels)
        lower, upper = [], []
        for b in range(len(edges) + 1):
            mine = residual[band == b]
            lo, hi = np.quantile(mine, levels) if len(mine) >= min_count else pooled
            lower.append(float(lo))
            upper.append(float(hi))
        return cls(edges, tuple(lower), tuple(upper), coverage)


@dataclass(frozen=True)
class TrainedRul:
    """A trained model: the ONNX bytes the platform runs, and the scikit-learn estimator it came from."""

    onnx: bytes
    estimator: Any  # sklearn.ensemble.GradientBoostingRegressor
    spec: FeatureSpec
    interval: IntervalTable
    params: RulParams


@dataclass(frozen=True)
class RulPrediction:
    """The RUL at an asset's latest cycle, in cycles, with its interval (``coverage`` nominal)."""

    asset: str
    cycle: int
    rul: float
    lower: float
    upper: float
    coverage: float
    cap: float


@dataclass(frozen=True)
class RulExplanation:
    """SHAP values of one prediction: ``base + sum(features.values())`` is the model's raw output.

    ``base`` is the model's average output over its training rows. Per channel (a sensor's features
    together; ``age`` on its own), largest first: ``channels`` is the channel's share of the sum of
    |SHAP| (what the prediction rests on, either way), ``lowering`` its share of the negative SHAP
    (what pulls this RUL below the average: the degradation an alert is about; empty if nothing does)."""

    base: float
    features: dict[str, float]
    channels: dict[str, float]
    lowering: dict[str, float]

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        return list(self.channels.items())[:n]

    def drivers(self, n: int = 3) -> list[tuple[str, float]]:
        """The channels pulling the RUL down the most, with their shares."""
        return list(self.lowering.items())[:n]


@dataclass(frozen=True)
class RulAlert:
    """A maintenance alert: the RUL (or its lower bound) is below the horizon."""

    asset: str
    cycle: int
    severity: str  # "critical": the point estimate is below the horizon; "warning": only the lower bound
    horizon: float
    prediction: RulPrediction
    explanation: RulExplanation | None
    message: str


def rul_target(history: AssetHistory, cap: float) -> Matrix:
    """The capped RUL of every cycle of an asset run to failure (its last cycle is the failure)."""
    return np.minimum(float(history.cycles[-1]) - history.cycles.astype(np.float64), cap)


def _training_rows(spec: FeatureSpec, histories: Sequence[AssetHistory], cap: float,
                   stride: int) -> tuple[Matrix, Matrix, IntArray]:
    xs, ys, groups = [], [], []
    for g, h in enumerate(histories):
        pick = np.arange(len(h) - 1, -1, -stride)[::-1]
        xs.append(asset_features(spec, h)[pick])
        ys.append(rul_target(h, cap)[pick])
        groups.append(np.full(len(pick), g, dtype=np.int64))
    return np.vstack(xs), np.concatenate(ys), np.concatenate(groups)


def _fit_gbr(x: Matrix, y: Matrix, params: RulParams) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(
        n_estimators=params.n_estimators, max_depth=params.max_depth, learning_rate=params.learning_rate,
        subsample=params.subsample, min_samples_leaf=params.min_samples_leaf, random_state=params.seed).fit(x, y)


def _export(estimator: Any, spec: FeatureSpec, interval: IntervalTable, params: RulParams) -> bytes:
    from skl2onnx import to_onnx

    n = len(spec.names)
    model = to_onnx(estimator, np.zeros((1, n), dtype=np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    cover = [[int(w) for w in tree[0].tree_.weighted_n_node_samples] for tree in estimator.estimators_]
    meta = {"edgeloop.kind": "rul", "edgeloop.trainer": TRAINER, "edgeloop.rul.features": spec.to_json(),
            "edgeloop.rul.cap": repr(params.cap), "edgeloop.rul.interval": json.dumps(asdict(interval)),
            "edgeloop.rul.cover": json.dumps(cover, separators=(",", ":")),
            "edgeloop.rul.params": json.dumps(asdict(params))}
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return bytes(model.SerializeToString())


def train_rul(histories: Sequence[AssetHistory], params: RulParams | None = None,
              progress: Progress | None = None) -> TrainedRul:
    """Fit the RUL model on assets run to failure and export it to ONNX (see the module's docstring).

    The interval comes from ``params.calibration_folds``-fold cross-validation by asset: the
    out-of-fold residuals of every training row, per band of predicted RUL."""
    from sklearn.model_selection import GroupKFold

    p = params or RulParams()
    if len(histories) < max(2, p.calibration_folds):
        raise ValueError(f"{len(histories)} training assets: need at least {max(2, p.calibration_folds)}")
    say = progress or (lambda _: None)
    spec = fit_feature_spec(list(histories))
    x, y, groups = _training_rows(spec, histories, p.cap, p.stride)
    oof = np.zeros_like(y)
    for k, (fit, held) in enumerate(GroupKFold(p.calibration_folds).split(x, y, groups), start=1):
        say(f"interval calibration fold {k}/{p.calibration_folds}")
        oof[held] = _fit_gbr(x[fit], y[fit], p).predict(x[held])
    interval = IntervalTable.fit(np.clip(oof, 0.0, p.cap), y, p.cap, p.coverage)  # as RulModel reports them
    say(f"final model on {len(histories)} assets, {len(y)} rows, {x.shape[1]} features")
    estimator = _fit_gbr(x, y, p)
    return TrainedRul(_export(estimator, spec, interval, p), estimator, spec, interval, p)


def _shap_trees(node: Any, cover: list[list[int]]) -> dict[str, Any]:
    """The ONNX ``TreeEnsembleRegressor``'s trees in shap's dict format, with the training covers."""
    from onnx import helper

    attr = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if any(m not in (b"BRANCH_LEQ", b"LEAF") for m in attr["nodes_modes"]):
        raise ValueError("unsupported tree node mode (expected BRANCH_LEQ)")
    leaf_value: dict[tuple[int, int], float] = {}
    for t, n, w in zip(attr["target_treeids"], attr["target_nodeids"], attr["target_weights"], strict=True):
        leaf_value[(t, n)] = leaf_value.get((t, n), 0.0) + float(w)
    sizes = [len(weights) for weights in cover]
    left = [np.full(size, -1, np.int32) for size in sizes]
    right = [np.full(size, -1, np.int32) for size in sizes]
    feature = [np.full(size, -2, np.int32) for size in sizes]
    threshold = [np.full(size, -2.0) for size in sizes]
    value = [np.zeros(size) for size in sizes]
    for i, (t, n) in enumerate(zip(attr["nodes_treeids"], attr["nodes_nodeids"], strict=True)):
        if attr["nodes_modes"][i] == b"LEAF":
            value[t][n] = leaf_value[(t, n)]
        else:
            left[t][n], right[t][n] = attr["nodes_truenodeids"][i], attr["nodes_falsenodeids"][i]
            feature[t][n], threshold[t][n] = attr["nodes_featureids"][i], attr["nodes_values"][i]
    trees = []
    for t, weights in enumerate(cover):
        weight = np.array(weights, dtype=np.float64)
        lt, rt, vt = left[t], right[t], value[t]
        for n in range(len(weights) - 1, -1, -1):  # children have larger ids than their parent
            if lt[n] >= 0:
                vt[n] = (weight[lt[n]] * vt[lt[n]] + weight[rt[n]] * vt[rt[n]]) / weight[n]
        trees.append({"children_left": lt, "children_right": rt, "children_default": lt.copy(),
                      "features": feature[t], "thresholds": threshold[t], "values": vt[:, None],
                      "node_sample_weight": weight})
    return {"trees": trees, "base_offset": float(attr["base_values"][0]), "tree_output": "raw_value",
            "objective": "squared_error", "input_dtype": np.float32, "internal_dtype": np.float64}


class RulModel:
    """A trained RUL model (ONNX bytes from :func:`train_rul`) run with ONNX Runtime."""

    def __init__(self, blob: bytes) -> None:
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load_from_string(blob)
            meta = {p.key: p.value for p in proto.metadata_props}
            self.spec = FeatureSpec.from_json(meta["edgeloop.rul.features"])
            self.cap = float(meta["edgeloop.rul.cap"])
            iv = json.loads(meta["edgeloop.rul.interval"])
            self.interval = IntervalTable(tuple(iv["edges"]), tuple(iv["lower"]), tuple(iv["upper"]),
                                          float(iv["coverage"]))
            self._cover: list[list[int]] = json.loads(meta["edgeloop.rul.cover"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"not an EdgeLoop RUL model (missing or bad metadata: {exc!r})") from None
        except Exception as exc:  # noqa: BLE001  # onnx raises its own DecodeError for garbage bytes
            raise ValueError(f"not an ONNX model: {exc}") from None
        nodes = [n for n in proto.graph.node if n.op_type == "TreeEnsembleRegressor"]
        if len(nodes) != 1:
            raise ValueError("not an EdgeLoop RUL model (expected one TreeEnsembleRegressor)")
        self._trees_node = nodes[0]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._explainer: Any = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.names

    def features(self, history: AssetHistory) -> Matrix:
        """Feature rows of every cycle of the history (row t from cycles <= t)."""
        return asset_features(self.spec, history)

    def raw(self, features: Matrix) -> Matrix:
        """The ONNX model's output for feature rows (the uncapped regression value)."""
        if len(features) == 0:
            return np.zeros(0)
        out = self._session.run(None, {self._input: features.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_rows(self, features: Matrix) -> tuple[Matrix, Matrix, Matrix]:
        """(RUL, lower, upper) for feature rows; the RUL within [0, cap]."""
        rul = np.clip(self.raw(features), 0.0, self.cap)
        lower, upper = self.interval.bounds(rul)
        return rul, lower, upper

    def predict(self, history: AssetHistory) -> RulPrediction:
        """The RUL at the history's latest cycle."""
        if len(history) == 0:
            raise ValueError(f"asset {history.asset}: no cycles to predict from")
        rul, lower, upper = self.predict_rows(self.features(history)[-1:])
        return RulPrediction(history.asset, int(history.cycles[-1]), float(rul[0]), float(lower[0]),
                             float(upper[0]), self.interval.coverage, self.cap)

    def shap_values(self, features: Matrix) -> tuple[float, Matrix]:
        """(base value, SHAP values per row and feature) of the ONNX trees (path-dependent TreeSHAP)."""
        if self._explainer is None:
            import shap

            self._explainer = shap.TreeExplainer(_shap_trees(self._trees_node, self._cover))
        values = np.asarray(self._explainer.shap_values(features.astype(np.float32)), dtype=np.float64)
        return float(np.ravel(self._explainer.expected_value)[0]), values.reshape(len(features), -1)

    def explain(self, history: AssetHistory) -> RulExplanation:
        """SHAP values of the prediction at the latest cycle, and each sensor's share of them."""
        base, values = self.shap_values(self.features(history)[-1:])
        return explanation(self.spec, base, values[0])

    def check(self, history: AssetHistory, horizon: float,
              basis: str = "lower") -> tuple[RulPrediction, RulAlert | None]:
        """The prediction at the latest cycle and, when it is below the horizon, the alert with its explanation
        (explained only then: a prediction takes ~1 ms, an explanation a few more)."""
        prediction = self.predict(history)
        alert = rul_alert(prediction, horizon, basis=basis)
        if alert is None:
            return prediction, None
        return prediction, rul_alert(prediction, horizon, self.explain(history), basis=basis)

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels a history needs: the operational settings (when the model has several operating
        regimes) and the sensors the features are computed from."""
        settings = self.spec.setting_names if len(self.spec.centres) > 1 else ()
        return (*settings, *self.spec.kept)

    def history(self, asset: str, cycles: Sequence[int] | IntArray,
                readings: Mapping[str, Sequence[float] | Matrix]) -> AssetHistory:
        """An asset's history from per-channel readings (one value per cycle, NaN where missing), in the
        layout the model reads; channels the model does not use may be omitted."""
        n = len(cycles)
        absent = [c for c in self.channels if c not in readings]
        if absent:
            raise ValueError(f"asset {asset}: no readings for {', '.join(absent)}")

        def column(name: str) -> Matrix:
            values = readings.get(name)
            col = np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)
            if col.shape != (n,):
                raise ValueError(f"asset {asset}: {name} has {col.shape[0]} values for {n} cycles")
            return col

        settings = np.column_stack([column(c) for c in self.spec.setting_names]) if self.spec.setting_names \
            else np.zeros((n, 0))
        sensors = np.column_stack([column(c) for c in self.spec.kept])
        return AssetHistory(asset, np.asarray(cycles, dtype=np.int64), settings.reshape(n, -1), sensors,
                            self.spec.kept, self.spec.setting_names)


def explanation(spec: FeatureSpec, base: float, values: Matrix) -> RulExplanation:
    """Per-feature SHAP values, and per-channel shares of |SHAP| and of the negative SHAP."""
    per_feature = {name: float(v) for name, v in zip(spec.names, values, strict=True)}
    magnitude: dict[str, float] = {}
    lowering: dict[str, float] = {}
    for name, v in per_feature.items():
        channel = spec.channel_of(name)
        magnitude[channel] = magnitude.get(channel, 0.0) + abs(v)
        lowering[channel] = lowering.get(channel, 0.0) - min(v, 0.0)
    return RulExplanation(base, per_feature, _shares(magnitude), _shares(lowering))


def _shares(totals: dict[str, float]) -> dict[str, float]:
    whole = sum(totals.values())
    if whole <= 0:
        return {}
    return {c: t / whole for c, t in sorted(totals.items(), key=lambda kv: -kv[1]) if t > 0}


def rul_alert(prediction: RulPrediction, horizon: float, explanation: RulExplanation | None = None,
              basis: str = "lower") -> RulAlert | None:
    """An alert when the RUL is below ``horizon`` cycles, else None.

    ``basis="lower"`` (default) compares the interval's lower bound: the alert comes as soon as a
    failure within the horizon is plausible (late warnings cost more than early ones);
    ``basis="point"`` compares the point estimate. Severity is ``critical`` when the point estimate is
    below the horizon, ``warning`` when only the lower bound is."""
    if basis not in ("lower", "point"):
        raise ValueError(f"basis {basis!r}: use 'lower' or 'point'")
    if horizon <= 0:
        raise ValueError(f"horizon {horizon}: must be > 0 cycles")
    value = prediction.lower if basis == "lower" else prediction.rul
    if value >= horizon:
        return None
    severity = "critical" if prediction.rul < horizon else "warning"
    pct = round(prediction.coverage * 100)
    message = (f"asset {prediction.asset}: remaining useful life {prediction.rul:.0f} cycles ({pct} % interval "
               f"{prediction.lower:.0f}-{prediction.upper:.0f}) at cycle {prediction.cycle}, below the "
               f"{horizon:g}-cycle horizon")
    if explanation is not None and explanation.lowering:
        message += "; pulled down by " + ", ".join(f"{c} {s:.0%}" for c, s in explanation.drivers(3))
    return RulAlert(prediction.asset, prediction.cycle, severity, horizon, prediction, explanation, message)
