"""Remaining useful life in the running platform: the RUL models the scoring stage applies to live telemetry.

Operators train a model with ``edgeloop rul-model --train FILE --out PATH`` (C-MAPSS format: one row per
cycle) and put it in the platform's ``DATA_DIR/models/rul/`` folder (any ``*.onnx`` name); it is loaded at
start. A device whose channels include every channel the model reads (``RulModel.channels``) is monitored by
it: each telemetry sample is one cycle (the device reports once per cycle, as a turbofan's health monitor or
a per-batch machine summary does). After each scored message the model predicts the RUL at the device's
latest cycle (about 0.3 ms); when the interval's lower bound falls below the horizon (``rul_horizon``
cycles), an alert of kind ``rul`` is raised with the SHAP explanation: each channel's share of what pulls the
RUL down. The store keeps at most one open alert per (asset, kind), so a falling RUL updates one alert.

The model is the one ``edgeloop eval rul`` evaluates: the same ``RulModel`` class and the same ONNX file.
Each device's history is held in memory (at most ``max_cycles`` cycles, oldest dropped: the features use
the first and the last 30 cycles, so a long-running asset keeps its baseline from the cycles it started
with only until that cap); it is rebuilt from live data after a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeloop.detect.rul import RulAlert, RulModel
from edgeloop.messages import Alert, Severity
from edgeloop.store.base import TelemetryChunk

__all__ = ["RUL_DETECTOR", "RulMonitor", "load_rul_models"]

log = logging.getLogger(__name__)
RUL_DETECTOR = "rul-gbt-v1"


def load_rul_models(folder: Path) -> dict[str, RulModel]:
    """Every ``*.onnx`` RUL model in ``folder`` by file stem; a file that is not one is skipped with an error."""
    models: dict[str, RulModel] = {}
    if not folder.is_dir():
        return models
    for path in sorted(folder.glob("*.onnx")):
        try:
            models[path.stem] = RulModel(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("RUL model %s not loaded: %s", path, exc)
    return models


@dataclass
class _Track:
    model: str
    cycles: int = 0
    rows: list[np.ndarray] = field(default_factory=list)  # per message: (n, len(model channels))


@dataclass
class RulStats:
    predictions: int = 0
    alerts: int = 0
    monitored_devices: int = 0


class RulMonitor:
    """Per device: append cycles, predict at the latest one, turn a low RUL into an alert."""

    def __init__(self, models: dict[str, RulModel], *, horizon: float = 30.0, basis: str = "lower",
                 max_cycles: int = 50_000) -> None:
        if horizon <= 0 or max_cycles < 60:
            raise ValueError("RulMonitor: need horizon > 0 and max_cycles >= 60")
        self.models = models
        self.horizon = horizon
        self.basis = basis
        self.max_cycles = max_cycles
        self.stats = RulStats()
        self.latest: dict[str, dict[str, float]] = {}  # device -> last prediction (for the API)
        self._tracks: dict[str, _Track | None] = {}

    def observe(self, run: list[TelemetryChunk]) -> Alert | None:
        """Consecutive messages of one device (same channels): update its history; an alert if the RUL is low."""
        first = run[0]
        track = self._track_for(first)
        if track is None:
            return None
        model = self.models[track.model]
        cols = [first.channels.index(c) for c in model.channels]
        for chunk in run:
            track.rows.append(chunk.values[:, cols])
            track.cycles += chunk.values.shape[0]
        data = np.concatenate(track.rows)
        if data.shape[0] > self.max_cycles:
            data = data[-self.max_cycles:]
        track.rows = [data]
        cycles = np.arange(track.cycles - data.shape[0] + 1, track.cycles + 1, dtype=np.int64)
        history = model.history(first.asset or first.device, cycles,
                                {c: data[:, j] for j, c in enumerate(model.channels)})
        prediction, alert = model.check(history, self.horizon, basis=self.basis)
        self.stats.predictions += 1
        self.latest[first.device] = {"cycle": float(prediction.cycle), "rul": prediction.rul,
                                     "lower": prediction.lower, "upper": prediction.upper, "ts": float(run[-1].t1)}
        if alert is None:
            return None
        self.stats.alerts += 1
        return _to_alert(run[-1], alert)

    def _track_for(self, chunk: TelemetryChunk) -> _Track | None:
        if chunk.device in self._tracks:
            track = self._tracks[chunk.device]
            if track is None or set(self.models[track.model].channels) <= set(chunk.channels):
                return track
        for name, model in self.models.items():
            if set(model.channels) <= set(chunk.channels):
                track = _Track(model=name)
                self._tracks[chunk.device] = track
                self.stats.monitored_devices += 1
                return track
        self._tracks[chunk.device] = None
        return None


def _to_alert(chunk: TelemetryChunk, alert: RulAlert) -> Alert:
    p = alert.prediction
    expl = alert.explanation
    shares = dict(expl.lowering or expl.channels) if expl is not None else {}
    return Alert(
        tenant=chunk.tenant, asset=chunk.asset, device=chunk.device, kind="rul",
        severity=Severity(alert.severity), first_seen=chunk.t1, last_seen=chunk.t1,
        score=alert.horizon / max(p.lower if alert.severity == "warning" else p.rul, 1.0),
        message=alert.message, explanation=shares, detector=RUL_DETECTOR,
    )
