"""Known-answer fault probes (pure code, no I/O): does a detector version still find faults the champion finds?

A campaign must not promote a detector version that has lost sensitivity, for example one trained on a window
that held a fault, so that it learnt the fault as normal. Live data rarely tells: faults are rare, and a rollout
soaks for hours. A probe asks with a known answer instead: a canonical fault is added to a device's recent normal
data, and both versions score the same altered stream.

How one device is probed (:func:`run_probes`):

1. **Copies, never the live detectors.** Both detectors are deep-copied; the live ones are not touched (their
   later findings are exactly what they would have been).
2. **Warm rows.** The copies first score the first ``warm_rows`` rows of the device's recent data (default 2700:
   45 min at 1 Hz), to bring their streaming state (smoothed residuals, lagged load features, the ensemble's
   running statistics) up to date. The live detectors have seen those rows already, and a detector only moves
   forward in time, so the data is replayed *after* what they have seen: its times are shifted to start
   ``step_ms`` (1 s) after ``after_ms`` (default: the newest sample given), as if the device went on running.
   The splice is not seamless (the lagged load features hold the last minutes' load, the replayed thermal state
   follows an earlier one): on 40 healthy simulated devices 2 to 5 copies raised an anomaly in the warm rows;
   with 30 min of warm rows 2 of 40 (24 h old detectors) were still inside that episode when the injection began,
   with 45 min none. (A replay after a gap was tried first: the detector then restarts its lagged features from
   the current load, and 7 of 20 healthy devices, 8 h old detectors, raised an anomaly in the warm rows.)
3. **Injection.** Each probe then gets its own copies of the warmed pair; the rows after the warm rows, up to
   the probe's ``length_ms`` (30 min), are altered by the probe's effects with a linear ramp from 0 (at the first
   of those rows, the injection start) to 1 after ``ramp_ms`` (10 min), and fed to both.
4. **Answer.** A version *detected* the probe when it reported an anomaly onset at or after the injection
   start, within the probe's length; its *delay* is that onset's time minus the start. A version whose anomaly
   episode is open from before the injection start to the end of the probe (the device was not normal, or the
   version alarms on normal data) shows no onset: it did not detect the probe.
   :class:`~edgeloop.campaigns.gates.ProbeGate` ignores probes the champion did not detect, and fails a
   challenger that misses one the champion detected (or finds it much later).

The default probes (:data:`DEFAULT_PROBES`) are faults, not borderline cases. Each alters the channels the
simulator's fault of the same name alters (``edgeloop.sim.fleet``), ramped in over 10 min:

- ``bearing_wear``: every ``vib_*`` channel × (1 + 0.8 · ramp);
- ``overheating``: ``bearing_temp`` + 12 °C · ramp;
- ``cavitation``: ``pressure`` × (1 − 0.30 · ramp) and ``flow`` × (1 − 0.20 · ramp);
- ``sensor_drift``: ``flow`` (or, if the device has none, the first of ``pressure``, ``motor_current``)
  + 30 % of its level · ramp (the level is the median absolute value over the warm rows).

Measured (``Fleet`` seeds 200-209, 4 healthy devices each, the built-in champion after 1.5, 4, 8 and 24 h of
data, so before and after its ensemble is calibrated): every default probe detected on all 40 devices at every
age (160 of 160 per probe, 640 in all); delay median / max in minutes after the injection start: bearing_wear 1.8-3.5 /
5.3, overheating 5.7-6.5 / 9.5, cavitation 4.9-7.5 / 12.8, sensor_drift 5.2-7.0 / 8.6, well inside the 30 min.
The magnitudes first tried (overheating + 8 °C, cavitation − 15 % / − 10 %, a drift of 15 % of the motor current,
each over 30 min) were borderline for a young champion (1.5 h, seeds 0-4: overheating found on 19 of 20
devices, cavitation on 15, the drift on 3). A 30 min ramp found the same faults, later (median 3-18 min), and a
healthy challenger (an ``AssetDetector`` fitted on the same device's data 40 min later, quiet on it) then failed
the gate's "found within 2× the champion's delay + 1 min" on 10 of 480 probes, overheating mostly (its
sensitivity depends on the warm-up's thermal fit); with the 10 min ramp on 3 of 480, while a version that learnt
intermittent bearing wear as normal is still caught on 115 of 120 devices (30 min ramp: 117). 9 of those 120
healthy-data fits were alarming when probed (the two looked at: bearing temperature below normal for hours); such
a version shows no probe onset and fails the gate as a miss.

A probe applies only to devices that have its channels (each effect must match at least one channel); others
get no result for it.

Cost: the warm rows are scored once per detector, then each probe scores its rows once per detector: for an
8-channel 1 Hz device with the defaults, 2700 + 4 × 1800 = 9900 rows per detector; one call with two 8 h old
detectors took 31 ms (median; p90 53 ms, max 82 ms over 24 calls) and allocated at most 3.3 MB. Rows are capped
(:data:`MAX_WARM_ROWS`, :data:`MAX_PROBE_ROWS`, :data:`MAX_PROBES`, a probe's length at most 4 h), and rows after
the longest probe's span are not scored.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from edgeloop.campaigns.gates import ProbeResult, ProbeResults
from edgeloop.detect.finding import Finding, FindingKind, FindingPhase

__all__ = [
    "DEFAULT_PROBES",
    "MAX_PROBES",
    "MAX_PROBE_ROWS",
    "MAX_WARM_ROWS",
    "Effect",
    "Probe",
    "ProbedDetector",
    "inject",
    "probe_results",
    "run_probes",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MINUTE_MS = 60_000
MAX_PROBES = 32  # probes per call
MAX_WARM_ROWS = 20_000  # rows the copies score before the injection (5.5 h at 1 Hz)
MAX_PROBE_ROWS = 20_000  # rows one probe scores (5.5 h at 1 Hz)
MAX_PROBE_LENGTH_MS = 4 * 3_600_000
MAX_RESULTS = 100_000  # as the gates' bound on an observation's list
DEFAULT_STEP_MS = 1000  # the replay's first row comes this long after the newest sample the detectors have seen
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Change = Literal["scale", "add", "add_level"]


class ProbedDetector(Protocol):
    """What a probe needs of a detector: its channels (the column order of ``process``) and ``process``, which
    returns the findings confirmed in a batch (``AssetDetector``, ``UnivariateStreamDetector`` and
    ``TrainedBaselineDetector`` all are; ``samples_dropped``, where a detector has it, shows rows it refused
    because their time was not after what it had seen)."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    def process(self, ts: np.ndarray, x: np.ndarray) -> list[Finding]: ...


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    """What a probe does to the channels it names, at ramp ``r`` (0 → 1):

    - ``scale``: ``x · (1 + amount · r)`` (``amount`` 0.8: up to +80 %; −0.15: down to −15 %);
    - ``add``: ``x + amount · r``, in the channel's unit (``bearing_temp`` + 8 °C);
    - ``add_level``: ``x + amount · level · r``, ``level`` the channel's median absolute value over the warm rows
      (0.15: a drift of 15 % of the channel's level).

    ``channels`` are names or shell patterns (``vib_*``) matched against the device's channels; ``pick="all"``
    alters every match, ``"first"`` only the first match in the order of ``channels`` (one sensor drifts)."""

    channels: tuple[str, ...]
    change: Change
    amount: float
    pick: Literal["all", "first"] = "all"

    def __post_init__(self) -> None:
        if not self.channels or any(not c for c in self.channels):
            raise ValueError("an effect names at least one channel (or pattern)")
        if not math.isfinite(self.amount) or self.amount == 0:
            raise ValueError(f"an effect's amount must be finite and not 0, not {self.amount}")
        if self.change == "scale" and self.amount <= -1:
            raise ValueError(f"a scale effect's amount must be above -1 (a channel cannot go to zero or flip), "
                             f"not {self.amount}")

    def columns(self, channels: Sequence[str]) -> list[int]:
        """The device's columns this effect alters (empty: the device lacks its channels)."""
        hits: list[int] = []
        for pattern in self.channels:
            for j, name in enumerate(channels):
                if fnmatch.fnmatchcase(name, pattern) and j not in hits:
                    hits.append(j)
            if hits and self.pick == "first":
                return hits[:1]
        return hits


class Probe(msgspec.Struct, frozen=True, kw_only=True):
    """A canonical fault: its effects ramp in linearly over ``ramp_ms``, and a version must report it within
    ``length_ms`` of the injection start (the rows the probe scores)."""

    name: str
    effects: tuple[Effect, ...]
    ramp_ms: int = 10 * MINUTE_MS
    length_ms: int = 30 * MINUTE_MS
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"a probe's name must match {_NAME.pattern}, not {self.name!r}")
        if not self.effects:
            raise ValueError(f"probe {self.name} has no effects")
        if self.ramp_ms <= 0:
            raise ValueError(f"probe {self.name}: ramp_ms must be above 0, not {self.ramp_ms}")
        if not 0 < self.length_ms <= MAX_PROBE_LENGTH_MS:
            raise ValueError(f"probe {self.name}: length_ms must lie in (0, {MAX_PROBE_LENGTH_MS}], "
                             f"not {self.length_ms}")

    def applies_to(self, channels: Sequence[str]) -> bool:
        """Whether the device has the probe's channels (every effect alters at least one of them)."""
        return all(effect.columns(channels) for effect in self.effects)


DEFAULT_PROBES: tuple[Probe, ...] = (
    Probe(name="bearing_wear", effects=(Effect(channels=("vib_*",), change="scale", amount=0.8),),
          description="vibration on every axis up by 80 % over 10 min"),
    Probe(name="overheating", effects=(Effect(channels=("bearing_temp",), change="add", amount=12.0),),
          description="bearing temperature up by 12 °C over 10 min, the load unchanged"),
    Probe(name="cavitation", effects=(Effect(channels=("pressure",), change="scale", amount=-0.30),
                                      Effect(channels=("flow",), change="scale", amount=-0.20)),
          description="pressure down by 30 % and flow by 20 % over 10 min"),
    Probe(name="sensor_drift",
          effects=(Effect(channels=("flow", "pressure", "motor_current"), change="add_level", amount=0.30,
                          pick="first"),),
          description="one sensor (flow, else pressure, else motor current) drifts up by 30 % of its level over "
                      "10 min"),
)


def inject(probe: Probe, ts: I64, values: F64, channels: Sequence[str], *, start_ms: int,
           levels: F64 | None = None) -> F64:
    """``values`` (rows at ``ts``, columns ``channels``) with ``probe`` injected from ``start_ms`` (a new array;
    rows before the start are unchanged, NaN stays NaN). ``levels`` (per column) are what ``add_level`` effects
    are relative to; by default each column's median absolute value over ``values``."""
    out = np.array(values, dtype=np.float64, copy=True)
    if out.ndim != 2 or out.shape != (len(ts), len(channels)):
        raise ValueError(f"values must have shape ({len(ts)}, {len(channels)}), not {out.shape}")
    ramp = np.clip((np.asarray(ts, dtype=np.float64) - start_ms) / probe.ramp_ms, 0.0, 1.0)
    if levels is None:
        levels = _levels(out)
    for effect in probe.effects:
        for j in effect.columns(channels):
            if effect.change == "scale":
                out[:, j] *= 1.0 + effect.amount * ramp
            elif effect.change == "add":
                out[:, j] += effect.amount * ramp
            else:
                out[:, j] += effect.amount * float(levels[j]) * ramp
    return out


def run_probes(champion: ProbedDetector, challenger: ProbedDetector, *, device: str, ts: npt.ArrayLike,
               values: npt.ArrayLike, channels: Sequence[str], probes: Sequence[Probe] = DEFAULT_PROBES,
               warm_rows: int = 2700, after_ms: int | None = None,
               step_ms: int = DEFAULT_STEP_MS) -> list[ProbeResult]:
    """Probe both versions on one device's recent normal data (see the module docstring): one
    :class:`~edgeloop.campaigns.gates.ProbeResult` per probe that applies to the device, in the order of
    ``probes``.

    ``ts`` (n,) strictly increasing ms and ``values`` (n, len(channels)) are the device's recent normal data;
    the first ``warm_rows`` rows bring the copies' state up to date, the rows after them carry the probes, and
    must span the longest applicable probe's ``length_ms``. ``after_ms`` is the newest sample time the
    detectors have seen (default: ``ts[-1]``, right when ``ts`` reaches the newest data they scored); the replay
    starts ``step_ms`` after it (one later by more than the detectors' gap limit, 30 s, is an outage to them:
    they settle again, and the warm rows must cover that). Raises ``ValueError`` for data that does not fit
    (shape, order, too few rows, a detector channel missing from ``channels``), or when a detector had seen data
    later than the replay's start (pass the right ``after_ms``).
    """
    tsa = np.asarray(ts, dtype=np.int64).reshape(-1)
    xa = np.asarray(values, dtype=np.float64)
    names = tuple(channels)
    if xa.ndim != 2 or xa.shape != (tsa.shape[0], len(names)):
        raise ValueError(f"values must have shape ({tsa.shape[0]}, {len(names)}), not {xa.shape}")
    if len(probes) > MAX_PROBES:
        raise ValueError(f"{len(probes)} probes, more than {MAX_PROBES}")
    if len({p.name for p in probes}) != len(probes):
        raise ValueError(f"probe names must be distinct: {[p.name for p in probes]}")
    if not 1 <= warm_rows <= MAX_WARM_ROWS:
        raise ValueError(f"warm_rows must lie in [1, {MAX_WARM_ROWS}], not {warm_rows}")
    if step_ms < 1:
        raise ValueError(f"step_ms must be at least 1, not {step_ms}")
    if tsa.shape[0] <= warm_rows:
        raise ValueError(f"{tsa.shape[0]} rows: the probes need rows after the {warm_rows} warm rows")
    if not (np.diff(tsa) > 0).all():
        raise ValueError("ts must be strictly increasing")
    applicable = [p for p in probes if p.applies_to(names)]
    if not applicable:
        return []
    # the replay, after what the detectors have seen
    base = (int(tsa[-1]) if after_ms is None else after_ms) + step_ms
    shifted = tsa - tsa[0] + base
    start = int(shifted[warm_rows])
    span = max(p.length_ms for p in applicable)
    period = float(np.median(np.diff(tsa)))
    if shifted[-1] - start + period < span:
        raise ValueError(f"the rows after the warm rows span {(shifted[-1] - start + period) / MINUTE_MS:.1f} min, "
                         f"the probes need {span / MINUTE_MS:g} min")
    end = warm_rows + min(int(np.searchsorted(shifted[warm_rows:], start + span, side="left")), MAX_PROBE_ROWS)
    warm_x, rest_ts, rest_x = xa[:warm_rows], shifted[warm_rows:end], xa[warm_rows:end]
    levels = _levels(warm_x)

    pair = [_Replay(champion, names), _Replay(challenger, names)]
    for replay in pair:
        replay.feed(shifted[:warm_rows], warm_x)
    results: list[ProbeResult] = []
    for probe in applicable:
        rows = int(np.searchsorted(rest_ts, start + probe.length_ms, side="left"))
        altered = inject(probe, rest_ts[:rows], rest_x[:rows], names, start_ms=start, levels=levels)
        delays = [replay.onset_delay(rest_ts[:rows], altered, start) for replay in pair]
        results.append(ProbeResult(target=device, probe=probe.name,
                                   champion_detected=delays[0] is not None,
                                   challenger_detected=delays[1] is not None,
                                   champion_delay_ms=delays[0], challenger_delay_ms=delays[1]))
    return results


def probe_results(per_device: Mapping[str, Iterable[ProbeResult]] | Iterable[ProbeResult]) -> ProbeResults:
    """The observation :class:`~edgeloop.campaigns.gates.ProbeGate` judges: every device's results, in a stable
    order (target, then probe). Given a mapping device → results, each result's target must be its device. More
    than the gates' bound (100 000 results) raises ``ValueError``."""
    items: list[ProbeResult] = []
    if isinstance(per_device, Mapping):
        for device, results in per_device.items():
            for r in results:
                if r.target != device:
                    raise ValueError(f"a result of {r.target!r} filed under device {device!r}")
                items.append(r)
    else:
        items = list(per_device)
    if len(items) > MAX_RESULTS:
        raise ValueError(f"{len(items)} probe results, more than {MAX_RESULTS}: probe fewer devices")
    items.sort(key=lambda r: (r.target, r.probe))
    return ProbeResults(probes=items)


# --- internals -------------------------------------------------------------------------------------------------


def _levels(x: F64) -> F64:
    """Each column's median absolute value (0 where a column has no values)."""
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        col = np.abs(x[:, j])
        col = col[np.isfinite(col)]
        if col.size:
            out[j] = float(np.median(col))
    return out


class _Replay:
    """A private copy of one detector, fed the replayed data in its own column order."""

    def __init__(self, detector: ProbedDetector, channels: tuple[str, ...]) -> None:
        missing = [c for c in detector.channels if c not in channels]
        if missing:
            raise ValueError(f"the data has no column for the detector's channels {missing}")
        self.detector = copy.deepcopy(detector)
        self.columns = [channels.index(c) for c in detector.channels]

    def feed(self, ts: I64, x: F64) -> list[Finding]:
        """Score rows; the anomaly onsets among the findings. Raises ``ValueError`` if the detector dropped rows
        (it had seen data later than the replay)."""
        dropped = int(getattr(self.detector, "samples_dropped", 0))
        findings = self.detector.process(ts, x[:, self.columns])
        if int(getattr(self.detector, "samples_dropped", 0)) != dropped:
            raise ValueError("the detector had seen data later than the replay: pass after_ms (the newest sample "
                             "time it has seen)")
        return [f for f in findings if f.kind == FindingKind.ANOMALY and f.phase is FindingPhase.ONSET]

    def onset_delay(self, ts: I64, x: F64, start_ms: int) -> int | None:
        """On a copy of the warmed state: the delay of the first anomaly onset at or after ``start_ms`` (None:
        there is none)."""
        trial = copy.copy(self)
        trial.detector = copy.deepcopy(self.detector)
        onsets = [f.ts for f in trial.feed(ts, x) if f.ts >= start_ms]
        return int(onsets[0] - start_ms) if onsets else None
