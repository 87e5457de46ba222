"""A deterministic fleet of rotating machines (pumps and motors) and their sensors.

Pure code: no I/O, no wall clock. Time is the simulated sample time in ms, moved
forward by :meth:`Fleet.advance`. The same seed gives bit-identical output, no
matter how the run is split into ``advance()`` calls: every device draws its
randomness from its own :class:`numpy.random.Generator`, consumed in fixed
blocks of samples, and all state (thermal lag, process disturbance) is carried
from block to block.

Physics (per device, normalised speed ``s`` in about 0.5..1.0)
------------------------------------------------------------------
* **Load cycle.** A speed setpoint moves between 3 or 4 operating levels that
  are specific to the device, holding each for 2-4.5 min and ramping 20-60 s
  between them; every round visits each level once, in a random order (so any
  20 min window sees the whole operating range). Affinity laws drive the rest.
* ``speed`` (rpm) = rated rpm * s, with 0.1 % measurement noise.
* ``flow`` ∝ s and ``pressure`` ∝ s² (affinity laws), both modulated by a slow
  AR(1) process disturbance (system head, time constant 2 min) that pushes
  pressure up and flow down, plus sensor noise.
* ``motor_current`` = magnetising current + k·s³ (hydraulic power ∝ s³).
* ``vib_x``/``vib_y``/``vib_z`` (mm/s RMS) = per-axis gain * (base + k·s²), with
  about 2 % estimator noise per axis.
* ``bearing_temp`` (°C) is a first-order lag (time constant 8-15 min) towards
  ambient + copper heating (∝ current²) + friction (∝ s). Ambient is a
  conditioned hall: 22-26 °C per device with a ±0.4 °C daily swing.
* Every gain varies by a few percent per device; readings are rounded to the
  sensor's resolution, so a live sensor practically never repeats the exact
  same value for minutes.

Faults (one per faulty device, from ``start_ms`` on)
------------------------------------------------------
Progressive faults grow over a ramp of half the remaining run, clipped to
15 min .. 5 days (so a 1 h run and a 30 day run both show a clear fault long
before the end, without a 30 day run degrading at an unrealistic speed).

* ``bearing_wear``: vibration on all axes rises (up to +150 % and a broadband
  component); once past 40 % of the ramp the bearing also heats (up to +10 °C).
* ``cavitation``: pressure (-20 %) and flow (-12 %) drop, current dips slightly,
  a broadband vibration component appears and pressure gets 5x noisier.
* ``overheating``: the bearing heats (up to +18 °C, through the thermal lag)
  without any load change; current rises up to +3 %.
* ``sensor_stuck``: one channel (never ``speed``) freezes at its last value.
* ``sensor_drift``: one channel (never ``speed``) drifts linearly away, 25 % of
  its nominal value per ramp, and keeps going.
* ``dropout``: repeated 1-10 min stretches, alternating between one or more
  channels reading ``NaN`` and the device sending no samples at all. The first
  stretch starts at ``start_ms``.

Healthy devices have no gaps, no ``NaN`` and no faults. A fault can also be given
explicitly per device (``fault_schedule``: device index -> :class:`FaultSpec`), e.g. to
place true faults after a regime change.

Benign regime changes (``regimes``, ground truth in :meth:`Fleet.regime_changes`)
----------------------------------------------------------------------------------
A :class:`RegimeSpec` changes part of the fleet (healthy and faulty devices alike) at a
known sample time. Nothing breaks, but a detector trained on the old regime sees data it
never learnt:

* ``product_run``: a new product. Over one minute the load cycle moves to a lower
  speed band (``s' = a + b*s``, the levels now within about 0.38..0.8), the denser
  product raises pressure and the hydraulic current by 6-10 % at a given speed, and its
  process heat lifts the bearing's thermal target by 5-6.5 °C (seen through the thermal
  lag).
* ``recalibration``: a sensor service changes readings, not physics, at once: pressure
  gain by 6-9 %, a bearing-temperature offset of 4-5.5 °C, a replaced accelerometer's
  sensitivity (all three vibration axes) by 8-12 % and, on half of the devices, flow gain
  by 4-6 % (each either way).

The champion detector trained before the change false-alarms on the changed devices
(``tests/test_sim_regime.py`` checks it), and not on the others: with the change 7 h into
the run, measured over 10 seeds of 24 devices (12 changed), 119 of 120 product runs and
120 of 120 recalibrations alarmed within minutes, and none of the 240 unchanged devices.

Every draw for regimes comes from generators of their own, so a fleet without regimes
(and without a fault schedule) is bit-identical to one built before they existed.

>>> fleet = Fleet(devices=3, faulty=1, seed=7, start_ms=0, duration_ms=3_600_000)
>>> chunks = fleet.advance(60_000)
>>> len(chunks), chunks[0].values.shape
(3, (60, 8))
>>> fleet.now_ms
60000
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.messages import Sample

__all__ = [
    "CHANNELS",
    "DeviceChunk",
    "FaultKind",
    "FaultSpec",
    "Fleet",
    "RegimeChange",
    "RegimeKind",
    "RegimeSpec",
    "SimDevice",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CHANNELS: tuple[str, ...] = (
    "vib_x",
    "vib_y",
    "vib_z",
    "bearing_temp",
    "motor_current",
    "pressure",
    "flow",
    "speed",
)
_VX, _VY, _VZ, _TEMP, _CUR, _PRES, _FLOW, _SPEED = range(len(CHANNELS))
#: channels a sensor fault (stuck, drift) may hit: every channel but the load reference.
_SENSOR_FAULT_CHANNELS: tuple[int, ...] = (_VX, _VY, _VZ, _TEMP, _CUR, _PRES, _FLOW)
#: sensor resolution per channel (values are rounded to a multiple of it).
_RESOLUTION: F64 = np.array([0.001, 0.001, 0.001, 0.01, 0.01, 0.001, 0.01, 0.1])

_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_BLOCK_SAMPLES = 3600  # samples generated per device per block (state carried between blocks)
_REGIME_SALT = 0x2E61  # seeds the regime draws apart from every other draw
_PRODUCT_RAMP_MS = 60_000.0  # a product change moves the setpoints over this long


class FaultKind(enum.StrEnum):
    BEARING_WEAR = "bearing_wear"
    CAVITATION = "cavitation"
    OVERHEATING = "overheating"
    SENSOR_STUCK = "sensor_stuck"
    SENSOR_DRIFT = "sensor_drift"
    DROPOUT = "dropout"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Ground truth of a device's fault: what, from when (a sample time), and which channel."""

    kind: FaultKind
    start_ms: int
    channel: str | None = None  # the affected channel, for sensor faults


class RegimeKind(enum.StrEnum):
    PRODUCT_RUN = "product_run"
    RECALIBRATION = "recalibration"


@dataclass(frozen=True, slots=True, kw_only=True)
class RegimeSpec:
    """A benign regime change on part of the fleet: what, from when (a sample time, ms), and on which devices.

    The devices are ``devices`` (indices into :attr:`Fleet.devices`) if given, otherwise
    ``round(fraction * devices)`` of them, drawn from ``seed``; each changed device draws its own magnitudes.
    """

    kind: RegimeKind
    at_ms: int
    fraction: float = 0.3
    devices: tuple[int, ...] | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class RegimeChange:
    """Ground truth of one device's regime change. ``detail`` names each effect and its size:
    ``speed_band_low``/``speed_band_high`` (the new normalised speed band), ``load_factor`` (pressure and
    hydraulic current at a given speed), ``process_heat_c`` (°C on the bearing's thermal target);
    ``pressure_gain``, ``bearing_temp_offset`` (°C), ``vib_gain`` (all three axes) and maybe ``flow_gain`` for a
    recalibration (reading' = reading * gain + offset)."""

    device_id: str
    asset_id: str
    kind: RegimeKind
    at_ms: int
    detail: dict[str, float]


@dataclass(frozen=True, slots=True)
class SimDevice:
    device_id: str
    asset_id: str
    kind: str  # "pump" | "motor"
    site: str
    line: str
    profile: str
    fault: FaultSpec | None


@dataclass(frozen=True, slots=True)
class DeviceChunk:
    """Consecutive samples of one device: ``values[i, j]`` is channel ``CHANNELS[j]`` at ``ts[i]``."""

    device_id: str
    ts: I64  # int64 ms, shape (n,), strictly increasing
    values: F64  # float64, shape (n, len(CHANNELS)); NaN = the sensor gave no valid reading

    def samples(self, channels: Sequence[str] = CHANNELS) -> list[Sample]:
        """The chunk as canonical :class:`~edgeloop.messages.Sample` objects (NaN becomes ``None``)."""
        out: list[Sample] = []
        for t, row in zip(self.ts.tolist(), self.values.tolist(), strict=True):
            vals: dict[str, float | None] = {
                name: (None if math.isnan(v) else v) for name, v in zip(channels, row, strict=True)
            }
            out.append(Sample(ts=t, values=vals))
        return out


@dataclass(frozen=True, slots=True)
class _KindSpec:
    profile: str
    description: str
    rated_rpm: float
    flow_nom: float  # m3/h at s = 1
    pres_nom: float  # bar at s = 1
    cur_idle: float  # A
    cur_load: float  # A at s = 1 on top of idle
    vib_base: float  # mm/s
    vib_load: float  # mm/s at s = 1
    heat_cur: float  # °C at rated current
    heat_speed: float  # °C at s = 1
    ranges: tuple[tuple[float, float], ...]  # expected min/max per channel


_KINDS: dict[str, _KindSpec] = {
    "pump": _KindSpec(
        profile="pump-v1",
        description="centrifugal pump with motor, 1 Hz condition-monitoring sensors",
        rated_rpm=1480.0,
        flow_nom=120.0,
        pres_nom=6.0,
        cur_idle=12.0,
        cur_load=40.0,
        vib_base=0.35,
        vib_load=2.0,
        heat_cur=24.0,
        heat_speed=8.0,
        ranges=((0.0, 7.1), (0.0, 7.1), (0.0, 7.1), (0.0, 90.0), (0.0, 75.0), (0.0, 10.0), (0.0, 200.0),
                (0.0, 1600.0)),
    ),
    "motor": _KindSpec(
        profile="motor-v1",
        description="induction motor driving a blower, 1 Hz condition-monitoring sensors",
        rated_rpm=2960.0,
        flow_nom=900.0,
        pres_nom=0.8,
        cur_idle=8.0,
        cur_load=30.0,
        vib_base=0.25,
        vib_load=1.6,
        heat_cur=20.0,
        heat_speed=12.0,
        ranges=((0.0, 4.5), (0.0, 4.5), (0.0, 4.5), (0.0, 90.0), (0.0, 55.0), (0.0, 1.5), (0.0, 1500.0),
                (0.0, 3200.0)),
    ),
}
_UNITS: tuple[str, ...] = ("mm/s", "mm/s", "mm/s", "degC", "A", "bar", "m3/h", "rpm")
_DESCRIPTIONS: tuple[str, ...] = (
    "vibration velocity RMS, horizontal",
    "vibration velocity RMS, vertical",
    "vibration velocity RMS, axial",
    "drive-end bearing temperature",
    "motor phase current",
    "discharge pressure",
    "volumetric flow",
    "shaft speed",
)


@dataclass(frozen=True, slots=True)
class _Params:
    """Per-device physical constants (drawn once from the device's seed)."""

    rated_rpm: float
    flow_gain: float
    pres_gain: float
    cur_idle: float
    cur_load: float
    vib_axis: F64  # (3,)
    vib_base: float
    vib_load: float
    heat_cur: float
    heat_speed: float
    ambient: float
    ambient_phase: float
    tau_th_ms: float
    knots_ms: F64  # load-cycle knots (ms since start)
    knots_s: F64  # normalised speed at the knots


@dataclass(frozen=True, slots=True)
class _FaultPlan:
    kind: FaultKind
    onset_k: int  # first sample index affected
    ramp_ms: float
    channel: int | None
    sign: float
    # dropout events: sample index ranges [start, end), kind (True: no samples) and NaN channels
    ev_start: I64
    ev_end: I64
    ev_silent: npt.NDArray[np.bool_]
    ev_mask: npt.NDArray[np.bool_]  # (events, channels)


@dataclass(frozen=True, slots=True)
class _Regime:
    """A regime change as generation applies it (``onset_ms`` since the fleet's start)."""

    onset_ms: float
    speed_a: float = 0.0  # product run: s' = speed_a + speed_b * s
    speed_b: float = 1.0
    load: float = 1.0
    heat: float = 0.0
    gain: F64 | None = None  # recalibration: reading' = reading * gain + offset (per channel)
    offset: F64 | None = None


@dataclass(slots=True)
class _State:
    rng: np.random.Generator
    temp: float
    head: float
    last_row: F64
    stuck_value: float = math.nan
    block: int = -1  # index of the cached block
    block_values: F64 = field(default_factory=lambda: np.empty((0, len(CHANNELS))))
    block_present: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=bool))


def _lag(u: F64, a: float, y0: float) -> F64:
    """First-order recursion ``y[i] = a*y[i-1] + (1-a)*u[i]`` (vectorised in short sub-blocks)."""
    n = u.shape[0]
    out = np.empty(n)
    # a**-step stays small inside a sub-block, so the closed form is numerically safe
    step = max(1, min(n, int(50.0 / max(-math.log(a), 1e-12)) if a < 1.0 else n, 1024))
    y = y0
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        m = hi - lo
        p = a ** np.arange(1, m + 1, dtype=np.float64)
        acc = np.cumsum((1.0 - a) * u[lo:hi] / p)
        seg = p * (y + acc)
        out[lo:hi] = seg
        y = float(seg[-1])
    return out


def _ramp(t_ms: F64, onset_ms: float, ramp_ms: float) -> F64:
    return np.clip((t_ms - onset_ms) / ramp_ms, 0.0, 1.0)


def _signed(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A magnitude in ``[lo, hi)`` with a random sign."""
    size = float(rng.uniform(lo, hi))
    return size if rng.random() < 0.5 else -size


def _product_runs(regimes: Sequence[_Regime], t_ms: F64, s: F64) -> tuple[F64, F64, F64]:
    """The product runs' effects: the moved speed, the load factor and the process heat (°C), per sample.
    Each moves in over ``_PRODUCT_RAMP_MS`` from its onset (heat then follows through the thermal lag)."""
    load = np.ones_like(s)
    heat = np.zeros_like(s)
    for r in regimes:
        if r.gain is not None:
            continue
        w = _ramp(t_ms, r.onset_ms, _PRODUCT_RAMP_MS)
        s = s + w * (r.speed_a + r.speed_b * s - s)
        load = load * (1.0 + w * (r.load - 1.0))
        heat = heat + w * r.heat
    return s, load, heat


class Fleet:
    """A simulated fleet; see the module docstring for the physics and the faults.

    Samples are at ``start_ms + k * period_ms`` for ``k = 1 .. duration_ms // period_ms``;
    :meth:`advance` returns those with a time in ``(now_ms, until_ms]``.
    """

    def __init__(
        self,
        *,
        devices: int,
        faulty: int,
        seed: int,
        start_ms: int,
        duration_ms: int,
        period_ms: int = 1000,
        fault_kinds: Sequence[FaultKind] | None = None,
        fault_schedule: Mapping[int, FaultSpec] | None = None,
        regimes: Sequence[RegimeSpec] = (),
    ) -> None:
        """``faulty`` devices get a drawn fault (kind and start); ``fault_schedule`` gives further devices (by
        index) an explicit fault: its kind, its start (a sample time, ms) and, for a sensor fault, optionally
        its channel. ``regimes``: benign regime changes (see the module docstring)."""
        schedule = dict(fault_schedule or {})
        if devices < 0 or not 0 <= faulty <= devices - len(schedule):
            raise ValueError("need devices >= 0 and 0 <= faulty <= devices - len(fault_schedule)")
        if period_ms <= 0 or duration_ms < period_ms:
            raise ValueError("need period_ms > 0 and duration_ms >= period_ms")
        if start_ms < 0:
            raise ValueError("start_ms must be >= 0")
        kinds = list(fault_kinds) if fault_kinds is not None else list(FaultKind)
        if faulty and not kinds:
            raise ValueError("fault_kinds is empty")
        self._check_schedule(schedule, devices, start_ms, duration_ms)
        self._check_regimes(regimes, devices, start_ms, duration_ms)
        self.seed = seed
        self.start_ms = start_ms
        self.duration_ms = duration_ms
        self.period_ms = period_ms
        self.n_samples = duration_ms // period_ms
        self._now_ms = start_ms
        self._emitted = 0  # samples (per device) handed out so far

        root = np.random.SeedSequence([seed, 0x5EED])
        fleet_rng = np.random.default_rng(root.spawn(1)[0])
        device_kinds = ["pump" if v < 0.6 else "motor" for v in fleet_rng.random(devices)]
        if schedule:  # drawn faults go to the devices without a scheduled one
            free = np.array([i for i in range(devices) if i not in schedule], dtype=np.int64)
            faulty_idx = sorted(fleet_rng.choice(free, size=faulty, replace=False).tolist()) if faulty else []
        else:
            faulty_idx = sorted(fleet_rng.choice(devices, size=faulty, replace=False).tolist()) if faulty else []
        kind_order = [kinds[i] for i in fleet_rng.permutation(len(kinds))] if kinds else []

        self.devices: list[SimDevice] = []
        self._params: list[_Params] = []
        self._plans: list[_FaultPlan | None] = []
        self._states: list[_State] = []
        fault_of = {dev: kind_order[j % len(kind_order)] for j, dev in enumerate(faulty_idx)}
        for i in range(devices):
            ss = np.random.SeedSequence([seed, 1, i])
            p_ss, f_ss, n_ss = ss.spawn(3)
            kind = device_kinds[i]
            params = self._draw_params(kind, np.random.default_rng(p_ss))
            if i in schedule:
                plan: _FaultPlan | None = self._draw_fault(schedule[i].kind, np.random.default_rng(f_ss),
                                                           at=schedule[i])
            else:
                plan = self._draw_fault(fault_of[i], np.random.default_rng(f_ss)) if i in fault_of else None
            number = i + 1
            fault = (
                FaultSpec(
                    kind=plan.kind,
                    start_ms=self._ts_of(plan.onset_k),
                    channel=CHANNELS[plan.channel] if plan.channel is not None else None,
                )
                if plan is not None
                else None
            )
            self.devices.append(
                SimDevice(
                    device_id=f"{kind}-{number:04d}",
                    asset_id=f"asset-{number:04d}",
                    kind=kind,
                    site="site-1",
                    line=f"line-{i // 10 + 1}",
                    profile=_KINDS[kind].profile,
                    fault=fault,
                )
            )
            self._params.append(params)
            self._plans.append(plan)
            s0 = float(params.knots_s[0])
            temp0 = self._temp_target_scalar(params, s0)
            self._states.append(
                _State(rng=np.random.default_rng(n_ss), temp=temp0, head=0.0,
                       last_row=np.full(len(CHANNELS), math.nan))
            )
        self._regimes: list[list[_Regime]] = [[] for _ in range(devices)]
        self._changes: list[RegimeChange] = []
        for r, spec in enumerate(regimes):
            self._draw_regime(r, spec)

    # ----------------------------------------------------------------- public

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def end_ms(self) -> int:
        """Time of the last sample of the run."""
        return self._ts_of(self.n_samples - 1)

    def profiles(self) -> list[DeviceProfile]:
        """One device profile per machine kind in this fleet (``pump-v1``, ``motor-v1``)."""
        rate = 1000.0 / self.period_ms
        out = []
        for kind in sorted({d.kind for d in self.devices} or set(_KINDS)):
            spec = _KINDS[kind]
            chans = [
                ChannelSpec(name=name, unit=_UNITS[j], min=spec.ranges[j][0], max=spec.ranges[j][1],
                            description=_DESCRIPTIONS[j])
                for j, name in enumerate(CHANNELS)
            ]
            out.append(DeviceProfile(name=spec.profile, channels=chans, sample_rate_hz=rate,
                                     description=spec.description))
        return out

    def ground_truth(self) -> list[FaultSpec | None]:
        """The fault of each device (``None`` = healthy), aligned with :attr:`devices`."""
        return [d.fault for d in self.devices]

    def _index(self, device_id: str) -> int:
        i = next((j for j, d in enumerate(self.devices) if d.device_id == device_id), None)
        if i is None:
            raise KeyError(device_id)
        return i

    def fault_active_since(self, device_id: str, at_ms: int) -> int | None:
        """Since when (sample time) the device's fault has held without a break at ``at_ms``; None if it does
        not hold then (a healthy device, a fault not begun yet, a dropout between its stretches).

        Every fault kind but ``dropout`` is a state that holds from its onset to the end of the run (wear,
        cavitation and overheating grow; a stuck sensor stays stuck; a drift keeps drifting). A dropout is a
        series of stretches, each a state of its own (the device silent, or channels without values) that
        ends when the data returns.
        """
        plan = self._plans[self._index(device_id)]
        if plan is None:
            return None
        k = (at_ms - self.start_ms) // self.period_ms - 1  # the sample index at (or just before) at_ms
        if k < plan.onset_k:
            return None
        if plan.kind is not FaultKind.DROPOUT:
            return self._ts_of(plan.onset_k)
        inside = np.flatnonzero((plan.ev_start <= k) & (k < plan.ev_end))
        return self._ts_of(int(plan.ev_start[inside[0]])) if inside.size else None

    def fault_in(self, device_id: str, start_ms: int, end_ms: int) -> FaultSpec | None:
        """The device's fault if it holds at some sample time in ``[start_ms, end_ms]`` (for a dropout: one of
        its stretches overlaps that span), else None. What a technician inspecting the span would find."""
        i = self._index(device_id)
        plan = self._plans[i]
        if plan is None or end_ms < start_ms:
            return None
        k0 = -(-(start_ms - self.start_ms) // self.period_ms) - 1  # first sample index at or after start_ms
        k1 = (end_ms - self.start_ms) // self.period_ms - 1  # last sample index at or before end_ms
        if k1 < max(k0, plan.onset_k):
            return None
        if plan.kind is FaultKind.DROPOUT and not bool(((plan.ev_start <= k1) & (plan.ev_end > k0)).any()):
            return None
        return self.devices[i].fault

    def regime_changes(self) -> list[RegimeChange]:
        """Ground truth of the benign regime changes: one entry per changed device and regime, by time."""
        return sorted(self._changes, key=lambda c: (c.at_ms, c.device_id))

    def regimes_at(self, device_id: str, at_ms: int) -> list[RegimeChange]:
        """The regime changes in force on the device at ``at_ms`` (those that began then or before)."""
        self._index(device_id)
        return [c for c in self.regime_changes() if c.device_id == device_id and c.at_ms <= at_ms]

    def advance(self, until_ms: int) -> list[DeviceChunk]:
        """Every sample with a time in ``(now_ms, until_ms]``: one chunk per device that has samples."""
        if until_ms < self._now_ms:
            raise ValueError(f"cannot go back in time: until_ms={until_ms} < now_ms={self._now_ms}")
        self._now_ms = until_ms
        hi = min(self.n_samples, max(0, (until_ms - self.start_ms) // self.period_ms))
        lo = self._emitted
        if hi <= lo:
            return []
        self._emitted = hi
        ts_all = self.start_ms + (np.arange(lo, hi, dtype=np.int64) + 1) * self.period_ms
        chunks = []
        for i, dev in enumerate(self.devices):
            values, present = self._slice(i, lo, hi)
            if present.all():
                chunks.append(DeviceChunk(dev.device_id, ts_all, values))
            elif present.any():
                chunks.append(DeviceChunk(dev.device_id, ts_all[present], values[present]))
        return chunks

    # ----------------------------------------------------------------- setup

    def _ts_of(self, k: int) -> int:
        return self.start_ms + (k + 1) * self.period_ms

    def _draw_params(self, kind: str, rng: np.random.Generator) -> _Params:
        spec = _KINDS[kind]

        def vary(x: float, rel: float = 0.05) -> float:
            return float(x * (1.0 + rel * rng.standard_normal()))

        n_levels = int(rng.integers(3, 5))
        levels = np.sort(rng.uniform(0.5, 1.0, n_levels))
        # make sure the levels are distinct operating points
        levels = 0.5 + (levels - 0.5) * 0.2 + np.linspace(0.0, 0.4, n_levels)
        levels = rng.permutation(levels)
        # the cycle visits every level once per round, in a fresh random order each round
        rounds = int((self.duration_ms + self.period_ms) / (n_levels * 2 * _MINUTE_MS)) + 2
        order = [rng.permutation(n_levels) for _ in range(rounds)]
        for r in range(1, rounds):  # no repeat across a round boundary
            if order[r][0] == order[r - 1][-1]:
                order[r] = np.roll(order[r], 1)
        lvl_idx = np.concatenate(order)
        n_seg = int(lvl_idx.shape[0])
        seg: F64 = rng.uniform(2 * _MINUTE_MS, 4.5 * _MINUTE_MS, n_seg)
        ramps: F64 = rng.uniform(20_000, 60_000, n_seg)
        lvl = levels[lvl_idx]
        starts = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
        # knots: hold lvl[i-1] until starts[i], ramp to lvl[i] by starts[i] + ramp
        knots_ms = np.empty(2 * lvl.shape[0] - 1)
        knots_s = np.empty_like(knots_ms)
        knots_ms[0], knots_s[0] = 0.0, lvl[0]
        knots_ms[1::2], knots_s[1::2] = starts[1:], lvl[:-1]
        knots_ms[2::2], knots_s[2::2] = starts[1:] + ramps[1:], lvl[1:]
        axis = np.array([vary(1.0, 0.15), vary(0.9, 0.15), vary(0.6, 0.15)])
        return _Params(
            rated_rpm=spec.rated_rpm * (1.0 + 0.003 * float(rng.standard_normal())),
            flow_gain=vary(spec.flow_nom),
            pres_gain=vary(spec.pres_nom),
            cur_idle=vary(spec.cur_idle),
            cur_load=vary(spec.cur_load),
            vib_axis=axis,
            vib_base=vary(spec.vib_base, 0.15),
            vib_load=vary(spec.vib_load, 0.15),
            heat_cur=vary(spec.heat_cur, 0.08),
            heat_speed=vary(spec.heat_speed, 0.08),
            ambient=float(rng.uniform(22.0, 26.0)),
            ambient_phase=float(rng.uniform(0.0, 0.5)),
            tau_th_ms=float(rng.uniform(8.0, 15.0)) * _MINUTE_MS,
            knots_ms=knots_ms,
            knots_s=knots_s,
        )

    @staticmethod
    def _check_schedule(schedule: Mapping[int, FaultSpec], devices: int, start_ms: int, duration_ms: int) -> None:
        for i, spec in schedule.items():
            if not 0 <= i < devices:
                raise ValueError(f"fault_schedule: no device {i} (the fleet has {devices})")
            if not start_ms < spec.start_ms <= start_ms + duration_ms:
                raise ValueError(f"fault_schedule: device {i}'s fault must start inside the run")
            sensor = spec.kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT)
            if spec.channel is not None and (not sensor or spec.channel not in
                                             [CHANNELS[j] for j in _SENSOR_FAULT_CHANNELS]):
                raise ValueError(f"fault_schedule: device {i}: a channel is for a sensor fault, on a channel "
                                 f"other than speed")

    @staticmethod
    def _check_regimes(regimes: Sequence[RegimeSpec], devices: int, start_ms: int, duration_ms: int) -> None:
        for spec in regimes:
            if not start_ms < spec.at_ms <= start_ms + duration_ms:
                raise ValueError("a regime change must happen inside the run")
            if not 0.0 <= spec.fraction <= 1.0:
                raise ValueError("a regime change's fraction must be in [0, 1]")
            if spec.devices is not None and any(not 0 <= i < devices for i in spec.devices):
                raise ValueError(f"a regime change names a device outside 0..{devices - 1}")

    def _draw_regime(self, r: int, spec: RegimeSpec) -> None:
        """Chooses the devices of regime spec ``r`` and their magnitudes (generators of their own)."""
        n = len(self.devices)
        if spec.devices is not None:
            chosen = sorted(set(spec.devices))
        else:
            pick = np.random.default_rng(np.random.SeedSequence([self.seed, _REGIME_SALT, spec.seed, r]))
            chosen = sorted(pick.choice(n, size=round(spec.fraction * n), replace=False).tolist()) if n else []
        onset_ms = float(spec.at_ms - self.start_ms)
        for i in chosen:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _REGIME_SALT, spec.seed, r, i]))
            detail: dict[str, float]
            if spec.kind is RegimeKind.PRODUCT_RUN:
                low = float(rng.uniform(0.38, 0.45))
                high = low + float(rng.uniform(0.25, 0.35))
                b = (high - low) / 0.5  # the old band 0.5..1.0 maps onto low..high
                load = 1.0 + float(rng.uniform(0.06, 0.10))
                heat = float(rng.uniform(5.0, 6.5))
                regime = _Regime(onset_ms=onset_ms, speed_a=low - 0.5 * b, speed_b=b, load=load, heat=heat)
                detail = {"speed_band_low": low, "speed_band_high": high, "load_factor": load,
                          "process_heat_c": heat}
            else:
                gain = np.ones(len(CHANNELS))
                offset = np.zeros(len(CHANNELS))
                gain[_PRES] = 1.0 + _signed(rng, 0.06, 0.09)
                offset[_TEMP] = _signed(rng, 4.0, 5.5)
                gain[[_VX, _VY, _VZ]] = 1.0 + _signed(rng, 0.08, 0.12)  # a replaced accelerometer's sensitivity
                detail = {"pressure_gain": float(gain[_PRES]), "bearing_temp_offset": float(offset[_TEMP]),
                          "vib_gain": float(gain[_VX])}
                if rng.random() < 0.5:
                    gain[_FLOW] = 1.0 + _signed(rng, 0.04, 0.06)
                    detail["flow_gain"] = float(gain[_FLOW])
                regime = _Regime(onset_ms=onset_ms, gain=gain, offset=offset)
            self._regimes[i].append(regime)
            dev = self.devices[i]
            self._changes.append(RegimeChange(device_id=dev.device_id, asset_id=dev.asset_id, kind=spec.kind,
                                              at_ms=spec.at_ms, detail=detail))

    def _draw_fault(self, kind: FaultKind, rng: np.random.Generator, *, at: FaultSpec | None = None) -> _FaultPlan:
        """A fault of ``kind``: drawn start (unless ``at`` gives it, and maybe its channel), ramp, channel."""
        d = self.duration_ms
        lo = max(0.3 * d, 20.0 * _MINUTE_MS)
        hi = max(0.5 * d, lo)
        onset_ms = float(rng.uniform(lo, hi))
        if at is not None:
            onset_ms = float(at.start_ms - self.start_ms)
        onset_k = max(0, int(onset_ms // self.period_ms) - 1)
        remaining = max(d - onset_ms, 0.0)
        ramp_ms = float(np.clip(0.5 * remaining, 15 * _MINUTE_MS, 5 * _DAY_MS))
        channel: int | None = None
        if kind in (FaultKind.SENSOR_STUCK, FaultKind.SENSOR_DRIFT):
            channel = int(rng.choice(_SENSOR_FAULT_CHANNELS))
            if at is not None and at.channel is not None:
                channel = CHANNELS.index(at.channel)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        n_ch = len(CHANNELS)
        ev_start: list[int] = []
        ev_end: list[int] = []
        ev_silent: list[bool] = []
        ev_mask: list[npt.NDArray[np.bool_]] = []
        if kind is FaultKind.DROPOUT:
            spacing_ms = float(np.clip(remaining / 10.0, 4 * _MINUTE_MS, 6 * 3_600_000))
            t = onset_ms
            silent = bool(rng.random() < 0.5)
            while t < d:
                length_ms = float(rng.uniform(1.0, 10.0)) * _MINUTE_MS
                k0 = int(t // self.period_ms) - 1
                k1 = k0 + max(1, int(length_ms // self.period_ms))
                mask = np.zeros(n_ch, dtype=bool)
                if not silent:
                    mask[rng.choice(n_ch, size=int(rng.integers(1, 4)), replace=False)] = True
                ev_start.append(max(k0, onset_k))
                ev_end.append(k1)
                ev_silent.append(silent)
                ev_mask.append(mask)
                silent = not silent
                t += length_ms + float(rng.uniform(0.5, 1.5)) * spacing_ms
        return _FaultPlan(
            kind=kind,
            onset_k=onset_k,
            ramp_ms=ramp_ms,
            channel=channel,
            sign=sign,
            ev_start=np.array(ev_start, dtype=np.int64),
            ev_end=np.array(ev_end, dtype=np.int64),
            ev_silent=np.array(ev_silent, dtype=bool),
            ev_mask=np.array(ev_mask, dtype=bool).reshape(len(ev_mask), n_ch),
        )

    @staticmethod
    def _temp_target_scalar(p: _Params, s: float) -> float:
        cur = p.cur_idle + p.cur_load * s**3
        rated = p.cur_idle + p.cur_load
        return p.ambient + p.heat_cur * (cur / rated) ** 2 + p.heat_speed * s

    # ----------------------------------------------------------------- generation

    def _slice(self, i: int, lo: int, hi: int) -> tuple[F64, npt.NDArray[np.bool_]]:
        """Samples ``[lo, hi)`` of device ``i`` (values, and which samples are sent at all)."""
        st = self._states[i]
        parts_v: list[F64] = []
        parts_p: list[npt.NDArray[np.bool_]] = []
        k = lo
        while k < hi:
            b = k // _BLOCK_SAMPLES
            while st.block < b:
                self._generate_block(i, st.block + 1)
            b0 = b * _BLOCK_SAMPLES
            e = min(hi, b0 + st.block_values.shape[0])
            parts_v.append(st.block_values[k - b0 : e - b0])
            parts_p.append(st.block_present[k - b0 : e - b0])
            k = e
        if len(parts_v) == 1:
            return parts_v[0], parts_p[0]
        return np.concatenate(parts_v), np.concatenate(parts_p)

    def _generate_block(self, i: int, b: int) -> None:
        p = self._params[i]
        plan = self._plans[i]
        st = self._states[i]
        spec_rated_cur = p.cur_idle + p.cur_load
        k0 = b * _BLOCK_SAMPLES
        k1 = min(self.n_samples, k0 + _BLOCK_SAMPLES)
        n = k1 - k0
        k = np.arange(k0, k1, dtype=np.float64)
        t_ms = (k + 1.0) * self.period_ms  # ms since start
        noise = st.rng.standard_normal((n, 12))

        s = np.interp(t_ms, p.knots_ms, p.knots_s)
        regimes = self._regimes[i]
        load: F64 | None = None
        process_heat: F64 | None = None
        if regimes:
            s, load, process_heat = _product_runs(regimes, t_ms, s)
        # slow AR(1) process disturbance (system head), relative, std 1 %
        a_head = math.exp(-self.period_ms / 120_000.0)
        drive = 0.01 * math.sqrt(1.0 - a_head**2) / (1.0 - a_head) * noise[:, 8]
        head = _lag(drive, a_head, st.head)
        st.head = float(head[-1])

        wear = cav = heat = np.zeros(n)
        if plan is not None and plan.kind in (FaultKind.BEARING_WEAR, FaultKind.CAVITATION,
                                              FaultKind.OVERHEATING):
            onset_ms = (plan.onset_k + 1.0) * self.period_ms
            if plan.kind is FaultKind.BEARING_WEAR:
                wear = _ramp(t_ms, onset_ms, plan.ramp_ms)
            elif plan.kind is FaultKind.CAVITATION:
                cav = _ramp(t_ms, onset_ms, plan.ramp_ms / 3.0)
            else:
                heat = _ramp(t_ms, onset_ms, plan.ramp_ms)

        v = np.empty((n, len(CHANNELS)))
        s2 = s * s
        v[:, _SPEED] = p.rated_rpm * s * (1.0 + 0.001 * noise[:, 7])
        v[:, _FLOW] = p.flow_gain * s * (1.0 - 0.5 * head) * (1.0 - 0.12 * cav) * (1.0 + 0.008 * noise[:, 6])
        v[:, _PRES] = (
            p.pres_gain * s2 * (1.0 + head) * (1.0 - 0.20 * cav) * (1.0 + 0.004 * (1.0 + 4.0 * cav) * noise[:, 5])
        )
        hydraulic = p.cur_load * s2 * s * (1.0 - 0.06 * cav)
        if load is not None:
            v[:, _PRES] *= load
            hydraulic = hydraulic * load
        cur_true = (p.cur_idle + hydraulic) * (1.0 + 0.03 * heat)
        v[:, _CUR] = cur_true * (1.0 + 0.004 * noise[:, 4])
        vib = (p.vib_base + p.vib_load * s2) * (1.0 + 1.5 * wear)
        broadband = (0.6 * wear + 1.2 * cav) * (1.0 + 0.5 * np.abs(noise[:, 9]))
        for ax in range(3):
            v[:, ax] = p.vib_axis[ax] * vib * (1.0 + 0.02 * noise[:, ax]) + broadband * (0.8 + 0.1 * ax)
        ambient = p.ambient + 0.4 * np.sin(2.0 * math.pi * (t_ms / _DAY_MS + p.ambient_phase))
        wear_heat = 10.0 * np.clip((wear - 0.4) / 0.6, 0.0, 1.0)
        target = (
            ambient + p.heat_cur * (cur_true / spec_rated_cur) ** 2 + p.heat_speed * s + 18.0 * heat + wear_heat
        )
        if process_heat is not None:
            target = target + process_heat
        a_th = math.exp(-self.period_ms / p.tau_th_ms)
        temp = _lag(target, a_th, st.temp)
        st.temp = float(temp[-1])
        v[:, _TEMP] = temp + 0.08 * noise[:, 3]

        present = np.ones(n, dtype=bool)
        for r in regimes:  # a recalibration changes the readings from its onset on
            if r.gain is not None and r.offset is not None:
                after = t_ms >= r.onset_ms
                v[after] = v[after] * r.gain + r.offset
        if plan is not None:
            self._apply_sensor_faults(plan, v, k0, k1, t_ms, p)
        v = np.round(v / _RESOLUTION) * _RESOLUTION
        if plan is not None and plan.kind is FaultKind.SENSOR_STUCK and plan.channel is not None:
            j = plan.channel
            if k0 <= plan.onset_k < k1:
                at = plan.onset_k - k0
                st.stuck_value = float(v[at - 1, j]) if at > 0 else float(st.last_row[j])
            if k1 > plan.onset_k:
                v[max(0, plan.onset_k - k0) :, j] = st.stuck_value
        st.last_row = v[-1].copy()
        if plan is not None and plan.kind is FaultKind.DROPOUT:
            for e in range(plan.ev_start.shape[0]):
                a0 = int(plan.ev_start[e]) - k0
                a1 = int(plan.ev_end[e]) - k0
                if a1 <= 0 or a0 >= n:
                    continue
                a0, a1 = max(a0, 0), min(a1, n)
                if plan.ev_silent[e]:
                    present[a0:a1] = False
                else:
                    v[a0:a1, plan.ev_mask[e]] = np.nan
        st.block = b
        st.block_values = v
        st.block_present = present

    def _apply_sensor_faults(self, plan: _FaultPlan, v: F64, k0: int, k1: int, t_ms: F64, p: _Params) -> None:
        if plan.kind is not FaultKind.SENSOR_DRIFT or plan.channel is None or k1 <= plan.onset_k:
            return
        j = plan.channel
        nominal = {
            _VX: p.vib_axis[0] * (p.vib_base + p.vib_load),
            _VY: p.vib_axis[1] * (p.vib_base + p.vib_load),
            _VZ: p.vib_axis[2] * (p.vib_base + p.vib_load),
            _TEMP: 40.0,
            _CUR: p.cur_idle + p.cur_load,
            _PRES: p.pres_gain,
            _FLOW: p.flow_gain,
        }[j]
        onset_ms = (plan.onset_k + 1.0) * self.period_ms
        elapsed = np.maximum(t_ms - onset_ms, 0.0)
        v[:, j] += plan.sign * 0.25 * float(nominal) * elapsed / plan.ramp_ms
