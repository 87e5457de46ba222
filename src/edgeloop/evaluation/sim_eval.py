"""Scoring the platform's detector against the simulator's ground truth (pure code, no I/O).

The fleet simulator knows which device is faulty, with what, and from when. :func:`run_fleet`
feeds every device's stream to its own :class:`AssetDetector` (the detector the platform runs,
with its default configuration) in streaming order, and :func:`evaluate` turns the findings into
what an operator cares about:

- **recall per fault type**: a faulty device counts as detected when it has a finding at or after
  its fault's onset;
- **false alerts per 100 machine-days**: findings on healthy devices, plus findings on faulty
  devices before their fault began, per 100 days of machine time (devices x simulated days);
- **detection delay**: minutes from onset to the first finding, median over detected faults.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeloop.detect.finding import Finding
from edgeloop.detect.robust import AssetDetector, DetectorConfig
from edgeloop.sim import CHANNELS, Fleet

__all__ = ["FleetResult", "SimEvaluation", "evaluate", "run_fleet"]

_MIN_MS = 60_000
_DAY_MS = 86_400_000

Progress = Callable[[int, int], None]  # (simulated ms done, simulated ms in all)


@dataclass
class FleetResult:
    """Every device's findings over one simulated run."""

    fleet: Fleet
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def healthy_with_findings(self) -> list[str]:
        return [d.device_id for d in self.fleet.devices if d.fault is None and self.findings[d.device_id]]

    def early_findings(self) -> list[str]:
        """Faulty devices with a finding before their fault began (false alarms)."""
        return [d.device_id for d in self.fleet.devices
                if d.fault is not None and any(f.ts < d.fault.start_ms for f in self.findings[d.device_id])]

    def false_findings(self) -> list[tuple[str, Finding]]:
        out: list[tuple[str, Finding]] = []
        for d in self.fleet.devices:
            for f in self.findings[d.device_id]:
                if d.fault is None or f.ts < d.fault.start_ms:
                    out.append((d.device_id, f))
        return out

    def delays_min(self) -> dict[str, float | None]:
        """Per faulty device: minutes from fault onset to its first finding (None = missed)."""
        out: dict[str, float | None] = {}
        for d in self.fleet.devices:
            if d.fault is None:
                continue
            hits = [f.ts for f in self.findings[d.device_id] if f.ts >= d.fault.start_ms]
            out[d.device_id] = (hits[0] - d.fault.start_ms) / _MIN_MS if hits else None
        return out


def run_fleet(fleet: Fleet, step_ms: int = _MIN_MS, config: DetectorConfig | None = None,
              progress: Progress | None = None) -> FleetResult:
    """Stream the whole fleet through one detector per device, ``step_ms`` of simulated time at a time."""
    detectors = {d.device_id: AssetDetector(channels=CHANNELS, period_ms=fleet.period_ms, config=config)
                 for d in fleet.devices}
    result = FleetResult(fleet, {d.device_id: [] for d in fleet.devices})
    t = fleet.start_ms
    while t < fleet.end_ms:
        t = min(t + step_ms, fleet.end_ms)
        for chunk in fleet.advance(t):
            result.findings[chunk.device_id] += detectors[chunk.device_id].process(chunk.ts, chunk.values)
        if progress is not None:
            progress(t - fleet.start_ms, fleet.end_ms - fleet.start_ms)
    return result


@dataclass(frozen=True)
class FaultTypeResult:
    faulty: int
    detected: int
    median_delay_min: float | None

    @property
    def recall(self) -> float:
        return self.detected / self.faulty if self.faulty else 1.0


@dataclass(frozen=True)
class SimEvaluation:
    devices: int
    faulty: int
    machine_days: float
    per_fault: dict[str, FaultTypeResult]
    detected: int
    false_alerts: int
    false_alerts_per_100_machine_days: float
    median_delay_min: float | None
    false_alert_detail: list[str]

    @property
    def recall(self) -> float:
        return self.detected / self.faulty if self.faulty else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            "devices": self.devices, "faulty": self.faulty, "machine_days": round(self.machine_days, 3),
            "recall": round(self.recall, 4), "detected": self.detected,
            "recall_per_fault": {k: round(v.recall, 4) for k, v in sorted(self.per_fault.items())},
            "median_delay_min_per_fault": {k: v.median_delay_min for k, v in sorted(self.per_fault.items())},
            "false_alerts": self.false_alerts,
            "false_alerts_per_100_machine_days": round(self.false_alerts_per_100_machine_days, 3),
            "median_delay_min": self.median_delay_min, "false_alert_detail": self.false_alert_detail,
        }


def evaluate(result: FleetResult) -> SimEvaluation:
    fleet = result.fleet
    delays = result.delays_min()
    per: dict[str, list[float | None]] = {}
    for d in fleet.devices:
        if d.fault is not None:
            per.setdefault(d.fault.kind.value, []).append(delays[d.device_id])
    per_fault = {
        kind: FaultTypeResult(
            faulty=len(ds), detected=sum(1 for x in ds if x is not None),
            median_delay_min=_median([x for x in ds if x is not None]))
        for kind, ds in per.items()
    }
    machine_days = len(fleet.devices) * (fleet.end_ms - fleet.start_ms) / _DAY_MS
    false = result.false_findings()
    hits = [x for x in delays.values() if x is not None]
    return SimEvaluation(
        devices=len(fleet.devices), faulty=len(delays), machine_days=machine_days, per_fault=per_fault,
        detected=len(hits), false_alerts=len(false),
        false_alerts_per_100_machine_days=100.0 * len(false) / machine_days if machine_days else 0.0,
        median_delay_min=_median(hits),
        false_alert_detail=[f"{dev} {f.kind} at +{(f.ts - fleet.start_ms) / _MIN_MS:.0f} min: {f.message}"
                            for dev, f in false],
    )


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None
