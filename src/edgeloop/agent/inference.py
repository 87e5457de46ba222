"""Local anomaly scoring on the agent: per-device feature windows and an ONNX model (ONNX Runtime).

The agent runs only signed versions (``edge_models.py`` verifies a ``.elm`` file and hands its ONNX bytes
to ``LocalModelRunner``). The model contract (written by ``train_edge_model``, read by ``LocalModelRunner``), in
the ONNX file's metadata:

* ``edgeloop.channels``: JSON list of the channels the model reads, in order;
* ``edgeloop.window_s``: the feature window;
* ``edgeloop.score_output`` / ``edgeloop.score_sign``: which output is the score, and its sign
  (the runner reports ``sign * output``: higher is more anomalous);
* ``edgeloop.threshold``: the score at and above which a window is anomalous.

The input is one float32 row of features: for each channel in order, ``FEATURES`` over the
samples of the last ``window_s`` seconds. A window is scored only when every channel has at
least two valid readings in it; otherwise it is counted as skipped, never filled with zeros.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.agent.config import LocalModel
from edgeloop.detect import features as detect_features
from edgeloop.errors import ConfigError
from edgeloop.messages import Sample

FEATURES = ("mean", "std", "min", "max")
LATENCY_WINDOW = 256  # inferences whose latency the heartbeat summarises
WARMUP_INFERENCES = 3  # a session's first inferences (allocations, caches) are not timed: not the model's speed
Matrix = npt.NDArray[np.float64]


def window_features(window: Matrix) -> Matrix | None:
    """Rows = samples, columns = channels (NaN = missing) -> one feature row, or None if too sparse."""
    valid = ~np.isnan(window)
    if window.shape[0] < 2 or (valid.sum(axis=0) < 2).any():
        return None
    return detect_features.window_features(np.arange(window.shape[0], dtype=np.int64), window, FEATURES)


def sliding_features(ts: npt.NDArray[np.int64], values: Matrix, window_s: float, every_s: float) -> Matrix:
    """Feature rows for windows ending every ``every_s`` over a series (training uses the same windows
    as scoring)."""
    window_ms, step_ms = int(window_s * 1000), int(every_s * 1000)
    rows = []
    end = int(ts[0]) + window_ms
    while end <= int(ts[-1]):
        lo, hi = np.searchsorted(ts, end - window_ms, side="right"), np.searchsorted(ts, end, side="right")
        feats = window_features(values[lo:hi])
        if feats is not None:
            rows.append(feats)
        end += step_ms
    return np.array(rows, dtype=np.float64).reshape(len(rows), values.shape[1] * len(FEATURES))


def train_edge_model(ts: npt.NDArray[np.int64], values: Matrix, channels: list[str], *, window_s: float = 10.0,
                     every_s: float = 1.0, false_window_rate: float = 1e-5) -> bytes:
    """Fit the agent's anomaly model on feature windows of healthy operation; the ONNX model's bytes.

    The model is a multivariate Gaussian over the standardised window features (scikit-learn's
    ``GaussianMixture`` with one component, exported with skl2onnx): its score, the negative
    log-likelihood, is half the squared Mahalanobis distance plus a constant, so it keeps growing
    beyond anything seen in training (tree ensembles such as Isolation Forest flatten out there).
    The threshold is where a healthy window, if the features were Gaussian, would score higher
    with probability ``false_window_rate`` (chi-squared quantile), and never below the highest
    training score."""
    from scipy.stats import chi2
    from skl2onnx import to_onnx
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = sliding_features(ts, values, window_s, every_s)
    if len(feats) < 20 * feats.shape[1]:
        raise ConfigError(f"only {len(feats)} complete feature windows in the training data; need at least "
                          f"{20 * feats.shape[1]} for {feats.shape[1]} features")
    gauss = GaussianMixture(n_components=1, covariance_type="full", reg_covar=1e-3, random_state=0)
    pipe = make_pipeline(StandardScaler(), gauss).fit(feats)
    at_mean = -float(gauss.score_samples(gauss.means_)[0])  # the score of a window at the centre
    threshold = max(at_mean + 0.5 * float(chi2.ppf(1 - false_window_rate, feats.shape[1])),
                    float(np.max(-pipe.score_samples(feats))))
    model = to_onnx(pipe, feats[:1].astype(np.float32), options={id(gauss): {"score_samples": True}},
                    target_opset={"": 17, "ai.onnx.ml": 3})
    meta = {"edgeloop.channels": json.dumps(channels), "edgeloop.window_s": str(window_s),
            "edgeloop.score_output": "score_samples", "edgeloop.score_sign": "-1",
            "edgeloop.threshold": repr(threshold), "edgeloop.features": json.dumps(FEATURES),
            "edgeloop.trainer": "gaussian-window-features"}
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return bytes(model.SerializeToString())


@dataclass(slots=True)
class _DeviceWindow:
    samples: collections.deque[tuple[int, Matrix]] = field(default_factory=collections.deque)
    next_at: int | None = None
    anomalous: bool = False  # in an episode
    calm_since: int | None = None  # in an episode: first of the normal scores since the last anomalous one


@dataclass(frozen=True, slots=True)
class Score:
    model: str
    device: str
    ts: int
    score: float
    threshold: float
    starts: bool  # the first anomalous window of an episode
    ends: bool  # an episode ends after one whole window of normal scores (no flapping at the threshold)
    ref: str = ""  # the model version that scored it (name@version)


class LocalModelRunner:
    """Scores one model's devices every ``every_s`` of sample time; keeps the latency of its last
    ``LATENCY_WINDOW`` inferences after the first ``WARMUP_INFERENCES`` (the heartbeat reports their p95)."""

    def __init__(self, cfg: LocalModel, model: bytes, *, ref: str = "") -> None:
        """``model``: the ONNX bytes of a verified version (``edge_models.py`` verifies the signature first);
        ``ref``: its reference (``name@version``), carried by every score for provenance."""
        import onnxruntime as ort

        where = ref or cfg.name
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  # onnxruntime raises several types for a bad file
            raise ConfigError(f"model {where!r}: cannot load the ONNX model: {exc}") from None
        meta: dict[str, Any] = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.channels: list[str] = json.loads(meta["edgeloop.channels"])
            self.window_ms = int(float(meta["edgeloop.window_s"]) * 1000)
            self.sign = float(meta.get("edgeloop.score_sign", "1"))
            output = meta.get("edgeloop.score_output")
            self.threshold = cfg.threshold if cfg.threshold is not None else float(meta["edgeloop.threshold"])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"model {where!r}: the ONNX model lacks EdgeLoop metadata ({exc})") from None
        self.ref = ref
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = output if output in outputs else outputs[0]
        self.input = self.session.get_inputs()[0].name
        self.cfg = cfg
        self.step_ms = int(cfg.every_s * 1000)
        self._windows = {device: _DeviceWindow() for device in cfg.devices}
        self.scored = 0
        self.skipped = 0
        self.alarms = 0  # episodes begun
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    def observe(self, device: str, sample: Sample) -> Score | None:
        win = self._windows.get(device)
        if win is None:
            return None
        row = np.array([np.nan if (v := sample.values.get(c)) is None else v for c in self.channels], dtype=np.float64)
        if np.isnan(row).all():
            return None  # no channel of this model in the sample (e.g. another OPC UA node's change)
        win.samples.append((sample.ts, row))
        while win.samples and win.samples[0][0] <= sample.ts - self.window_ms:
            win.samples.popleft()
        if win.next_at is None:
            win.next_at = sample.ts + self.window_ms
        if sample.ts < win.next_at:
            return None
        win.next_at = sample.ts + self.step_ms
        feats = window_features(np.array([r for _, r in win.samples]))
        if feats is None:
            self.skipped += 1
            return None
        started = time.perf_counter()
        out = self.session.run([self.output], {self.input: feats.astype(np.float32)[None, :]})[0]
        if self.scored >= WARMUP_INFERENCES:
            self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        score = self.sign * float(np.asarray(out).reshape(-1)[0])
        self.scored += 1
        starts = ends = False
        if score >= self.threshold:
            starts, win.anomalous, win.calm_since = not win.anomalous, True, None
            self.alarms += starts
        elif win.anomalous:
            win.calm_since = sample.ts if win.calm_since is None else win.calm_since
            if sample.ts - win.calm_since >= self.window_ms:
                ends, win.anomalous, win.calm_since = True, False, None
        return Score(self.cfg.name, device, sample.ts, score, self.threshold, starts, ends, self.ref)
