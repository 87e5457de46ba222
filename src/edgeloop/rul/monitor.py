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
A prediction at the latest cycle reads the asset's first ``BASELINE`` cycles (its own baseline) and its last
``LONG`` cycles (the rolling windows), so each device keeps just those: its first cycles and a tail of the
last ``tail_cycles`` (1,000). A prediction costs the same on the millionth cycle as on the hundredth. A missing
reading holds the previous value within what is kept. The history is in memory and is rebuilt from live data
after a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeloop.messages import Alert, Severity
from edgeloop.rul.features import BASELINE, LONG
from edgeloop.rul.model import RulAlert, RulModel
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
    head: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # the first BASELINE cycles
    tail: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # the last tail_cycles cycles


@dataclass
class RulStats:
    predictions: int = 0
    alerts: int = 0
    monitored_devices: int = 0


class RulMonitor:
    """Per device: append cycles, predict at the latest one, turn a low RUL into an alert."""

    def __init__(self, models: dict[str, RulModel], *, horizon: float = 30.0, basis: str = "lower",
                 tail_cycles: int = 1000) -> None:
        if horizon <= 0 or tail_cycles < LONG:
            raise ValueError(f"RulMonitor: need horizon > 0 and tail_cycles >= {LONG}")
        self.models = models
        self.horizon = horizon
        self.basis = basis
        self.tail_cycles = tail_cycles
        self.stats = RulStats()
        self._tracks: dict[str, _Track | None] = {}

    def observe(self, run: list[TelemetryChunk]) -> Alert | None:
        """Consecutive messages of one device (same channels): update its history; an alert if the RUL is low."""
        first = run[0]
        track = self._track_for(first)
        if track is None:
            return None
        model = self.models[track.model]
        cols = [first.channels.index(c) for c in model.channels]
        new = np.concatenate([chunk.values[:, cols] for chunk in run])
        track.cycles += new.shape[0]
        head = track.head.reshape(-1, len(cols))
        if head.shape[0] < BASELINE:
            take = BASELINE - head.shape[0]
            head, new = np.concatenate([head, new[:take]]), new[take:]
        track.head = head
        track.tail = np.concatenate([track.tail.reshape(-1, len(cols)), new])[-self.tail_cycles:]
        data = np.concatenate([track.head, track.tail])
        cycles = np.concatenate([np.arange(1, track.head.shape[0] + 1),  # the head: cycles 1.., then the tail's
                                 np.arange(track.cycles - track.tail.shape[0] + 1, track.cycles + 1)])
        history = model.history(first.asset or first.device, cycles.astype(np.int64),
                                {c: data[:, j] for j, c in enumerate(model.channels)})
        _, alert = model.check(history, self.horizon, basis=self.basis)
        self.stats.predictions += 1
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
