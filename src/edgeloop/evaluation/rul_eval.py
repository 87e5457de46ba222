"""Evaluating the RUL model the platform runs, with the C-MAPSS protocol.

Each evaluated engine is scored once, at its last observed cycle: a test engine's last cycle, or in
cross-validation a validation engine truncated at a random (seeded) cut point, like the test set.
The prediction comes from :func:`edgeloop.rul.model.train_rul`'s ONNX model run by
:class:`~edgeloop.rul.model.RulModel`, the same code the platform uses. The truth is capped at the
model's cap for ``rmse``, ``phm08`` and ``coverage`` (the usual protocol: above the cap the RUL is
not observable); ``rmse_uncapped`` compares with the raw truth. Cross-validation folds group rows
by engine, never by row; it also reports the RMSE over every cycle of the validation engines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.rul.features import AssetHistory, Matrix
from edgeloop.rul.model import Progress, RulModel, RulParams, rul_target, train_rul

MIN_OBSERVED = 31  # cycles a truncated engine keeps at least (the shortest FD001 test engine has 31)


def rmse(predicted: Matrix, true: Matrix) -> float:
    return float(np.sqrt(np.mean((predicted - true) ** 2)))


def phm08_score(predicted: Matrix, true: Matrix) -> float:
    """PHM08 challenge score: sum of exp(-d/13) - 1 for early (d < 0) and exp(d/10) - 1 for late predictions,
    d = predicted - true. Lower is better; late predictions cost more."""
    d = predicted - true
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


@dataclass(frozen=True)
class EngineResult:
    asset: str
    observed: int  # cycles seen
    true: float  # uncapped
    rul: float
    lower: float
    upper: float


@dataclass
class RulEvaluation:
    """Figures of one evaluation; ``to_json`` gives the CLI's JSON document."""

    mode: str  # "cv" or "test"
    cap: float
    coverage_nominal: float
    engines: list[EngineResult]
    params: RulParams
    folds: int | None = None
    rows_rmse: float | None = None  # cross-validation: over every cycle of the validation engines
    rows_coverage: float | None = None
    seconds: float = 0.0

    def _arrays(self) -> tuple[Matrix, Matrix, Matrix, Matrix, Matrix]:
        e = self.engines
        true = np.array([r.true for r in e])
        return (np.array([r.rul for r in e]), np.minimum(true, self.cap), true, np.array([r.lower for r in e]),
                np.array([r.upper for r in e]))

    @property
    def rmse(self) -> float:
        pred, capped, _, _, _ = self._arrays()
        return rmse(pred, capped)

    @property
    def rmse_uncapped(self) -> float:
        pred, _, true, _, _ = self._arrays()
        return rmse(pred, true)

    @property
    def phm08(self) -> float:
        pred, capped, _, _, _ = self._arrays()
        return phm08_score(pred, capped)

    @property
    def coverage(self) -> float:
        _, capped, _, lower, upper = self._arrays()
        return float(np.mean((capped >= lower) & (capped <= upper)))

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "engines": len(self.engines), "folds": self.folds, "rmse": round(self.rmse, 3),
                "phm08": round(self.phm08, 2), "coverage": round(self.coverage, 3),
                "coverage_nominal": self.coverage_nominal, "rmse_uncapped": round(self.rmse_uncapped, 3),
                "rows_rmse": None if self.rows_rmse is None else round(self.rows_rmse, 3),
                "rows_coverage": None if self.rows_coverage is None else round(self.rows_coverage, 3),
                "cap": self.cap, "seconds": round(self.seconds, 1), "params": asdict(self.params),
                "per_engine": [asdict(r) for r in self.engines]}


def cut_points(histories: Sequence[AssetHistory], seed: int) -> list[int]:
    """For each engine run to failure, how many cycles it keeps: uniform over [min(31, n - 1), n - 1]."""
    rng = np.random.default_rng(seed)
    return [int(rng.integers(max(1, min(MIN_OBSERVED, len(h) - 1)), max(2, len(h)))) for h in histories]


def _at_last_cycle(model: RulModel, history: AssetHistory, true: float) -> EngineResult:
    p = model.predict(history)
    return EngineResult(history.asset, len(history), true, p.rul, p.lower, p.upper)


def cross_validate(histories: Sequence[AssetHistory], folds: int = 5, params: RulParams | None = None,
                   seed: int = 0, progress: Progress | None = None) -> RulEvaluation:
    """Cross-validation by engine on engines run to failure: train on the other folds' engines, score each
    validation engine at a seeded random cut point and at every cycle."""
    from sklearn.model_selection import GroupKFold

    p = params or RulParams()
    if len(histories) < folds:
        raise ValueError(f"{len(histories)} engines for {folds} folds")
    say = progress or (lambda _: None)
    started = time.monotonic()
    cuts = cut_points(histories, seed)
    index = np.arange(len(histories))
    results: dict[int, EngineResult] = {}
    row_err: list[Matrix] = []
    row_in: list[npt.NDArray[np.bool_]] = []
    for k, (fit, held) in enumerate(GroupKFold(folds).split(index, groups=index), start=1):
        say(f"fold {k}/{folds}: training on {len(fit)} engines")

        def fold_progress(message: str, k: int = k) -> None:
            say(f"fold {k}/{folds}: {message}")

        model = RulModel(train_rul([histories[i] for i in fit], p, progress=fold_progress).onnx)
        for i in held:
            h = histories[i]
            results[int(i)] = _at_last_cycle(model, h.head(cuts[i]), float(h.cycles[-1] - h.cycles[cuts[i] - 1]))
            rul, lower, upper = model.predict_rows(model.features(h))
            true = rul_target(h, p.cap)
            row_err.append(rul - true)
            row_in.append((true >= lower) & (true <= upper))
        fold_eval = RulEvaluation("cv", p.cap, p.coverage, [results[int(i)] for i in held], p)
        say(f"fold {k}/{folds}: RMSE {fold_eval.rmse:.2f} on {len(held)} engines")
    errors = np.concatenate(row_err)
    return RulEvaluation("cv", p.cap, p.coverage, [results[i] for i in range(len(histories))], p, folds=folds,
                         rows_rmse=float(np.sqrt(np.mean(errors ** 2))),
                         rows_coverage=float(np.mean(np.concatenate(row_in))),
                         seconds=time.monotonic() - started)


def evaluate_test(train: Sequence[AssetHistory], test: Sequence[AssetHistory], truth: Sequence[float],
                  params: RulParams | None = None, progress: Progress | None = None) -> RulEvaluation:
    """Train on engines run to failure, score each truncated test engine at its last cycle against the truth."""
    if len(test) != len(truth):
        raise ValueError(f"{len(truth)} true RULs for {len(test)} test engines")
    p = params or RulParams()
    started = time.monotonic()
    model = RulModel(train_rul(train, p, progress=progress).onnx)
    (progress or (lambda _: None))(f"scoring {len(test)} test engines")
    results = [_at_last_cycle(model, h, float(t)) for h, t in zip(test, truth, strict=True)]
    return RulEvaluation("test", p.cap, p.coverage, results, p, seconds=time.monotonic() - started)
