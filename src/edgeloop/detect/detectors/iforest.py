"""``iforest``: scikit-learn's Isolation Forest, refitted in blocks, scored through ONNX Runtime.

Fitting. The first ``warmup`` rows fit an :class:`sklearn.ensemble.IsolationForest`
(``n_estimators`` trees on ``max_samples`` rows each, ``random_state = seed + k`` for the k-th fit).
After that the forest is refitted every ``refit_every`` rows (when the total count of rows seen
reaches ``warmup + m * refit_every``) on the last ``window`` rows, leaving out the rows that scored
above the ``exclude_quantile`` of the previous model's training scores -- unless that would leave out
more than half the window, which is a change of regime rather than a few faults, and then all rows
are used. The fits fall on the same rows however the stream is batched. A fit (sklearn, the ONNX
export and a new session) takes ~0.35 s for 100 trees, hence the default of one per 50,000 rows
(~14 h of a 1 Hz stream; scoring alone runs at ~130,000 8-channel rows/s). Rows with a missing value
are left out of the fits (unless fewer than 16 complete rows remain; then missing values are filled
with the training median).

Scoring. Each fitted forest is exported to ONNX and scored with one single-threaded
``onnxruntime.InferenceSession`` run per batch segment between refit points. The default exporter
(``exporter="compact"``) writes the whole forest as one ``ai.onnx.ml.TreeEnsembleRegressor``
whose leaf values are ``(depth + c(n_leaf)) / (n_trees * c(max_samples))``, followed by
``2 ** -sum``: that is exactly scikit-learn's ``-score_samples(x)`` (in float32), built in
milliseconds. ``exporter="skl2onnx"`` uses skl2onnx's stock converter instead (the same numbers,
but some 2,700 ONNX nodes for 100 trees: seconds to convert and slower to run).

The score of a row is ``max(0, -score_samples(x) - median_train) + range_weight * excess(x)``:

- ``-score_samples`` is in ``(0, 1]`` (0.5 is the boundary of the original paper, ~1 is isolated at
  once); the median over the training rows is subtracted so that typical rows score about 0.
- ``excess(x) = sum_j max(0, lo_j - x_j, x_j - hi_j) / (hi_j - lo_j)``: how far the row lies outside
  the training range, in training ranges. An isolation forest cannot see past its training range
  (its split points are drawn between the node's min and max), so a 10-sigma fault on one channel
  gets the path length of the most extreme training row and scores no higher than the top 1-2 % of
  normal rows; the excess term restores that (``range_weight=0`` gives the plain forest).

Range ``[0, inf)``; ``0.0`` while warming up.

Missing values (NaN) take the training median of their feature for scoring (never zero); a row with
no present value scores ``0.0``.

Explanation (``explain_one``): SHAP ``TreeExplainer`` on the fitted scikit-learn forest (built once
per fit, when first needed). SHAP explains the mean path length; a negative SHAP value shortens the
path, i.e. pushes towards anomaly, so the forest's part of the score is split over the features in
proportion to ``-shap`` clipped at 0; the excess term is split exactly (feature ``j`` gets its own
``range_weight * excess_j``); the two are added and normalised.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeloop.detect._numeric import F64, Bool
from edgeloop.detect.protocol import normalise_shares
from edgeloop.detect.registry import register

__all__ = ["IsolationForestDetector", "average_path_length", "forest_to_onnx"]

_MIN_COMPLETE = 16
_OPSET = {"": 17, "ai.onnx.ml": 3}


def average_path_length(n: F64) -> F64:
    """``c(n)``: the average path length of an unsuccessful search in a binary search tree of ``n`` items.

    As scikit-learn's ``_average_path_length``: 0 for ``n <= 1``, 1 for ``n == 2``, else
    ``2 (ln(n - 1) + gamma) - 2 (n - 1) / n``.
    """
    n = np.asarray(n, dtype=np.float64)
    big = np.maximum(n, 3.0)
    c = 2.0 * (np.log(big - 1.0) + np.euler_gamma) - 2.0 * (big - 1.0) / big
    out: F64 = np.where(n <= 1.0, 0.0, np.where(n <= 2.0, 1.0, c))
    return out


def forest_to_onnx(forest: Any, n_features: int) -> onnx.ModelProto:
    """One ``TreeEnsembleRegressor`` computing ``-score_samples`` of a fitted ``IsolationForest``.

    Input ``X`` (float32, ``(n, n_features)``), output ``anomaly`` (float32, ``(n, 1)``) in ``(0, 1]``.
    """
    n_trees = len(forest.estimators_)
    norm = n_trees * float(average_path_length(np.array([float(forest.max_samples_)]))[0])
    tree_ids: list[int] = []
    node_ids: list[int] = []
    feature_ids: list[int] = []
    values: list[float] = []
    modes: list[str] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    leaf_tree: list[int] = []
    leaf_node: list[int] = []
    leaf_weight: list[float] = []
    for t, (est, feats) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
        tree = est.tree_
        left = tree.children_left
        right = tree.children_right
        n_nodes = int(tree.node_count)
        depth = np.zeros(n_nodes)
        for i in range(n_nodes):  # scikit-learn numbers the nodes depth-first: parents come first
            if left[i] != -1:
                depth[left[i]] = depth[right[i]] = depth[i] + 1.0
        is_leaf = left == -1
        feat_index = np.asarray(feats)
        tree_ids.extend([t] * n_nodes)
        node_ids.extend(range(n_nodes))
        feature_ids.extend(np.where(is_leaf, 0, feat_index[np.maximum(tree.feature, 0)]).tolist())
        values.extend(np.where(is_leaf, 0.0, tree.threshold).tolist())
        modes.extend("LEAF" if leaf else "BRANCH_LEQ" for leaf in is_leaf.tolist())
        true_ids.extend(np.where(is_leaf, 0, left).tolist())
        false_ids.extend(np.where(is_leaf, 0, right).tolist())
        leaves = np.flatnonzero(is_leaf)
        path = depth[leaves] + average_path_length(tree.n_node_samples[leaves].astype(np.float64))
        leaf_tree.extend([t] * leaves.size)
        leaf_node.extend(leaves.tolist())
        leaf_weight.extend((path / norm).tolist())
    ensemble = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["mean_path"], domain="ai.onnx.ml", n_targets=1,
        aggregate_function="SUM", post_transform="NONE", base_values=[0.0],
        nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_featureids=feature_ids,
        nodes_values=values, nodes_modes=modes, nodes_truenodeids=true_ids,
        nodes_falsenodeids=false_ids, nodes_missing_value_tracks_true=[0] * len(tree_ids),
        nodes_hitrates=[1.0] * len(tree_ids),
        target_treeids=leaf_tree, target_nodeids=leaf_node, target_ids=[0] * len(leaf_tree),
        target_weights=leaf_weight,
    )
    neg = helper.make_node("Neg", ["mean_path"], ["neg_path"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    power = helper.make_node("Pow", ["two", "neg_path"], ["anomaly"])
    graph = helper.make_graph(
        [ensemble, neg, power], "isolation_forest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("anomaly", TensorProto.FLOAT, [None, 1])],
        initializer=[two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in _OPSET.items()],
                              producer_name="edgeloop")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@register
class IsolationForestDetector:
    """Isolation Forest fitted in blocks, scored with ONNX Runtime; score in ``[0, inf)`` (see the module docstring)."""

    name = "iforest"
    score_range = (0.0, math.inf)

    def __init__(self, n_features: int, *, seed: int = 0, warmup: int = 256, n_estimators: int = 100,
                 max_samples: int = 256, refit_every: int = 50_000, window: int = 5000,
                 exclude_quantile: float | None = 0.99, range_weight: float = 1.0,
                 exporter: Literal["compact", "skl2onnx"] = "compact") -> None:
        if n_features < 1 or warmup < 2 or n_estimators < 1 or max_samples < 2 or refit_every < 1 \
                or window < 2 or exporter not in ("compact", "skl2onnx") or not range_weight >= 0.0 \
                or (exclude_quantile is not None and not 0.0 < exclude_quantile <= 1.0):
            raise ValueError("iforest: need n_features >= 1, warmup >= 2, n_estimators >= 1, max_samples >= 2, "
                             "refit_every >= 1, window >= 2, 0 < exclude_quantile <= 1 or None, range_weight >= 0, "
                             "exporter 'compact' or 'skl2onnx'")
        self.n_features = n_features
        self.seed = seed
        self.warmup = warmup
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.refit_every = refit_every
        self.window = window
        self.exclude_quantile = exclude_quantile
        self.exporter = exporter
        self.range_weight = range_weight
        self.n_seen = 0  # rows seen (scored and learned), the clock of the refits
        self.n_fits = 0
        self.forest: Any = None  # the current sklearn IsolationForest
        self._session: Any = None
        self._input = "X"
        self._offset = 0.0  # skl2onnx's output is score_samples - offset_
        self._buf = np.empty((0, n_features))
        self._flag: Bool = np.zeros(0, dtype=np.bool_)
        self._median = np.zeros(n_features)
        self._lo = np.zeros(n_features)
        self._span = np.ones(n_features)
        self._center = 0.0
        self._exclude_above = math.inf
        self._explainer: Any = None

    @property
    def warmed_up(self) -> bool:
        """True once the first forest is fitted."""
        return self.forest is not None

    @property
    def next_refit(self) -> int:
        """The row count at which the next fit happens."""
        if self.n_seen < self.warmup:
            return self.warmup
        return self.warmup + self.refit_every * ((self.n_seen - self.warmup) // self.refit_every + 1)

    # ------------------------------------------------------------------ protocol
    def learn_one(self, x: F64) -> None:
        """Learn one row (it is scored too: a row that scores as an anomaly is kept out of the next fit)."""
        self.score_learn_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def score_one(self, x: F64) -> float:
        """The score of one row in ``[0, inf)`` against the current forest (``0.0`` while warming up)."""
        if self.forest is None:
            return 0.0
        return float(self._score(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])

    def score_learn_many(self, X: F64) -> F64:
        """Score then learn each row in order: one ONNX run per segment between refit points."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, self.n_features)
        n = X.shape[0]
        scores = np.zeros(n)
        i = 0
        while i < n:
            boundary = self.next_refit
            take = min(boundary - self.n_seen, n - i)
            seg = X[i:i + take]
            if self.forest is None:
                flag = np.zeros(take, dtype=np.bool_)
            else:
                s = self._score(seg)
                scores[i:i + take] = s
                flag = s > self._exclude_above
            self._append(seg, flag)
            self.n_seen += take
            i += take
            if self.n_seen == boundary:
                self._fit()
        return scores

    def explain_one(self, x: F64) -> F64:
        """Each feature's share of the anomaly of ``x``: SHAP (TreeExplainer) pushes towards a short path."""
        x = np.asarray(x, dtype=np.float64).reshape(1, -1)
        if self.forest is None or self._score(x)[0] <= 0.0:
            return np.zeros(self.n_features)
        forest_part = float(np.maximum(self.onnx_scores(x) - self._center, 0.0)[0])
        contrib = self.range_weight * self._excess(x)[0]
        if forest_part > 0.0:
            if self._explainer is None:
                import shap

                self._explainer = shap.TreeExplainer(self.forest)
            phi = np.asarray(self._explainer.shap_values(self._impute(x)), dtype=np.float64).reshape(-1)
            contrib = contrib + forest_part * normalise_shares(-phi)
        return normalise_shares(contrib)

    def sklearn_scores(self, X: F64) -> F64:
        """``-score_samples`` of the current scikit-learn forest (missing values imputed as for scoring)."""
        raw: F64 = -np.asarray(self.forest.score_samples(self._impute(np.asarray(X, dtype=np.float64))),
                               dtype=np.float64)
        return raw

    def onnx_scores(self, X: F64) -> F64:
        """``-score_samples`` from the ONNX session (what the detector scores with, before centring)."""
        Xi = self._impute(np.asarray(X, dtype=np.float64).reshape(-1, self.n_features))
        out = self._session.run(None, {self._input: Xi.astype(np.float32)})
        if self.exporter == "compact":
            raw: F64 = np.asarray(out[0], dtype=np.float64).reshape(-1)
        else:  # skl2onnx: outputs (label, decision_function = score_samples - offset_)
            raw = -(np.asarray(out[1], dtype=np.float64).reshape(-1) + self._offset)
        return raw

    # ------------------------------------------------------------------ internals
    def _impute(self, X: F64) -> F64:
        out: F64 = np.where(np.isfinite(X), X, self._median)
        return out

    def _excess(self, X: F64) -> F64:
        """Per feature, how far outside the training range each row lies, in training ranges (NaN: 0)."""
        with np.errstate(invalid="ignore"):  # inf / inf for features without a range: NaN, then 0
            below = (self._lo - X) / self._span
            above = (X - self._lo) / self._span - 1.0
            e = np.maximum(np.maximum(below, above), 0.0)
        out: F64 = np.where(np.isfinite(e), e, 0.0)
        return out

    def _score(self, X: F64) -> F64:
        present = np.isfinite(X).any(axis=1)
        s = np.maximum(self.onnx_scores(X) - self._center, 0.0)
        if self.range_weight > 0.0:
            s = s + self.range_weight * self._excess(X).sum(axis=1)
        out: F64 = np.where(present, s, 0.0)
        return out

    def _append(self, X: F64, flag: Bool) -> None:
        self._buf = np.concatenate([self._buf, X])
        self._flag = np.concatenate([self._flag, flag])
        if self.n_seen + X.shape[0] > self.warmup and self._buf.shape[0] > self.window:
            self._buf = self._buf[-self.window:]
            self._flag = self._flag[-self.window:]

    def _fit(self) -> None:
        from sklearn.ensemble import IsolationForest

        rows = self._buf[-self.window:] if self.n_fits else self._buf
        keep = ~self._flag[-rows.shape[0]:]
        if keep.sum() * 2 < rows.shape[0]:  # most of the window is "anomalous": a new regime, learn it
            keep[:] = True
        rows = rows[keep]
        valid = np.isfinite(rows)
        self._median = np.array([float(np.median(rows[valid[:, j], j])) if valid[:, j].any() else 0.0
                                 for j in range(self.n_features)])
        complete = valid.all(axis=1)
        train = rows[complete] if complete.sum() >= _MIN_COMPLETE else self._impute(rows)
        seen = valid.any(axis=0)  # a feature never present in the window has no range: no excess
        lo = np.where(seen, np.where(valid, rows, np.inf).min(axis=0), -np.inf)
        span = np.where(seen, np.where(valid, rows, -np.inf).max(axis=0) - lo, np.inf)
        tiny = 1e-6 * np.maximum(np.abs(lo), 1.0)
        self._lo = lo
        self._span = np.where(span > tiny, span, tiny)
        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, train.shape[0]),
                                 random_state=self.seed + self.n_fits)
        forest.fit(train)
        self.forest = forest
        self.n_fits += 1
        self._explainer = None
        self._session = self._make_session(forest, train)
        raw = self.onnx_scores(train)
        self._center = float(np.median(raw))
        if self.exclude_quantile is not None:
            self._exclude_above = float(np.quantile(np.maximum(raw - self._center, 0.0), self.exclude_quantile))

    def _make_session(self, forest: Any, train: F64) -> Any:
        import onnxruntime as ort

        if self.exporter == "compact":
            model = forest_to_onnx(forest, self.n_features)
        else:
            from skl2onnx import to_onnx

            model = to_onnx(forest, train[:1].astype(np.float32), target_opset=dict(_OPSET))
            self._offset = float(forest.offset_)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the same summation order for one row and for a batch
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        self._input = session.get_inputs()[0].name
        return session
