"""Simulated technicians: they answer the platform's alerts with verdicts from the simulator's ground truth.

The closed learning loop learns from technicians' verdicts (labels). In a simulated run nobody is there to
give them, so these technicians inspect each alert's span against the fleet's ground truth and answer
through the same path the API uses (``AlertService.feedback``), after a realistic delay and with a small
error rate, like people.

Two parts:

* :class:`TechnicianPolicy` (pure, deterministic): when an alert is answered (``first_seen`` plus a lognormal
  delay, median 20 simulated minutes) and what the verdict is: ``confirmed`` with the fault type when the
  device had a fault at some time in the alert's span (from ``pad_ms`` before ``first_seen`` to when it cleared
  or was last seen), else ``false_alarm`` with a reason (a benign regime change in force is named: the
  technician finds the new product run or the recalibrated sensors). With probability ``error_rate`` the verdict
  is the wrong one. Every random draw comes from the seed and the alert id only, so the same alert gets the
  same answer whatever else happens in the run. A confirmed fault sends someone to repair it
  (``repair_visit_min`` after the verdict): on site a fault is seen for what it is, so a confirmation that was
  mistaken is corrected to ``false_alarm`` ("no fault found on site"), as a closed work order corrects it in a
  plant. A real fault's confirmation stands.
* :class:`SimulatedTechnicians` (async driver): each :meth:`~SimulatedTechnicians.step` lists the open alerts,
  schedules the ones it has not seen, and answers each scheduled alert exactly once when the platform's data
  clock (simulated time) has reached its due time. :meth:`~SimulatedTechnicians.run` steps at an interval until
  told to stop (it waits between steps; it never spins). The alert listing, the feedback call and the data clock
  are injected, so it runs against a platform or a test double alike.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from edgeloop.errors import EdgeLoopError, StoreError
from edgeloop.messages import Alert
from edgeloop.sim.fleet import FaultKind, Fleet, RegimeKind

__all__ = [
    "AlertFacts",
    "FeedbackFn",
    "FleetTruth",
    "GroundTruth",
    "Inspection",
    "SimulatedTechnicians",
    "TechnicianPolicy",
    "TechnicianStats",
    "TechnicianVerdict",
]

log = logging.getLogger(__name__)

_MINUTE_MS = 60_000
_SALT = 0x7EC4  # seeds the technicians' draws apart from the fleet's
NO_FAULT = "no fault found on inspection"
NOT_FOUND_ON_SITE = "repair visit: no fault found on site, the machine is healthy"
_REGIME_REASONS = {
    RegimeKind.PRODUCT_RUN: "machine healthy: new product run changed the operating point",
    RegimeKind.RECALIBRATION: "machine healthy: sensors were recalibrated (readings offset)",
}

VerdictName = Literal["confirmed", "false_alarm"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFacts:
    """What a technician knows of an alert: which asset and device, and the span it covers (sample times)."""

    alert_id: int
    asset: str
    device: str
    first_seen: int
    last_seen: int
    cleared_at: int | None = None

    @classmethod
    def of(cls, alert: Alert) -> AlertFacts:
        return cls(alert_id=alert.id, asset=alert.asset, device=alert.device, first_seen=alert.first_seen,
                   last_seen=alert.last_seen, cleared_at=alert.cleared_at)


@dataclass(frozen=True, slots=True)
class Inspection:
    """What an inspection of a span finds: the fault (its type), or none; and a benign regime change in force."""

    fault: str | None
    regime: RegimeKind | None = None


class GroundTruth(Protocol):
    """The simulator's ground truth as a technician inspecting a device (or asset) over a span sees it."""

    def inspect(self, *, device: str, asset: str, start_ms: int, end_ms: int) -> Inspection: ...


class FleetTruth:
    """:class:`GroundTruth` from a :class:`~edgeloop.sim.fleet.Fleet` (an alert without a device is looked up by
    its asset). A device the fleet does not have has no fault."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._by_asset = {d.asset_id: d.device_id for d in fleet.devices}
        self._ids = {d.device_id for d in fleet.devices}

    def inspect(self, *, device: str, asset: str, start_ms: int, end_ms: int) -> Inspection:
        dev = device if device in self._ids else self._by_asset.get(asset)
        if dev is None:
            return Inspection(fault=None)
        fault = self._fleet.fault_in(dev, start_ms, end_ms)
        regimes = self._fleet.regimes_at(dev, end_ms)
        return Inspection(fault=None if fault is None else fault.kind.value,
                          regime=regimes[-1].kind if regimes else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianVerdict:
    """A technician's answer to one alert, due at ``due_ms`` (data time). ``mistaken``: the error rate made it
    the wrong verdict (ground truth says otherwise); ``truth`` is what the inspection really found."""

    alert_id: int
    due_ms: int
    verdict: VerdictName
    fault_type: str
    reason: str
    mistaken: bool
    truth: Inspection


@dataclass(frozen=True, slots=True, kw_only=True)
class TechnicianPolicy:
    """How simulated technicians answer (pure): a lognormal delay after the alert began (median
    ``delay_median_min`` simulated minutes, log-spread ``delay_sigma``, capped at ``delay_max_min``), and the
    wrong verdict with probability ``error_rate``. The span inspected starts ``pad_ms`` before the alert (a
    fault seen a little after it began, such as a dropout reported when the data returned, is still found)."""

    seed: int = 0
    delay_median_min: float = 20.0
    delay_sigma: float = 0.5
    delay_max_min: float = 240.0
    error_rate: float = 0.03
    pad_ms: int = 5 * _MINUTE_MS
    repair_visit_min: float = 240.0  # a confirmed fault's repair visit, this long after the verdict

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("TechnicianPolicy.error_rate must be in [0, 1]")
        if not (self.delay_median_min > 0 and self.delay_sigma >= 0 and self.delay_max_min >= 0):
            raise ValueError("TechnicianPolicy: need delay_median_min > 0, delay_sigma >= 0, delay_max_min >= 0")
        if self.pad_ms < 0:
            raise ValueError("TechnicianPolicy.pad_ms must be >= 0")
        if self.repair_visit_min < 0:
            raise ValueError("TechnicianPolicy.repair_visit_min must be >= 0")

    def _draws(self, alert_id: int) -> tuple[float, float, float]:
        """The alert's own draws, in a fixed order: delay (standard normal), error (uniform), wrong type (uniform)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SALT, alert_id]))
        return float(rng.standard_normal()), float(rng.random()), float(rng.random())

    def due_ms(self, alert_id: int, first_seen: int) -> int:
        """When the verdict on the alert is given (data time): after the alert began, by the alert's own delay."""
        z, _, _ = self._draws(alert_id)
        minutes = min(self.delay_median_min * math.exp(self.delay_sigma * z), self.delay_max_min)
        return first_seen + round(minutes * _MINUTE_MS)

    def verdict(self, facts: AlertFacts, truth: GroundTruth) -> TechnicianVerdict:
        """The verdict on the alert as it stands (its span may have grown since it was first seen)."""
        _, err, pick = self._draws(facts.alert_id)
        found = self._inspect(facts, truth)
        mistaken = err < self.error_rate
        due = self.due_ms(facts.alert_id, facts.first_seen)
        if (found.fault is not None) != mistaken:  # a real fault, or a false alarm taken for one
            kinds = [k.value for k in FaultKind]
            fault = found.fault if found.fault is not None else kinds[min(int(pick * len(kinds)), len(kinds) - 1)]
            return TechnicianVerdict(alert_id=facts.alert_id, due_ms=due, verdict="confirmed", fault_type=fault,
                                     reason="", mistaken=mistaken, truth=found)
        reason = NO_FAULT if found.regime is None or mistaken else _REGIME_REASONS[found.regime]
        return TechnicianVerdict(alert_id=facts.alert_id, due_ms=due, verdict="false_alarm", fault_type="",
                                 reason=reason, mistaken=mistaken, truth=found)

    def _inspect(self, facts: AlertFacts, truth: GroundTruth) -> Inspection:
        """The alert's span as it stands, from ``pad_ms`` before it began to when it cleared (or was last seen)."""
        end = facts.cleared_at if facts.cleared_at is not None else facts.last_seen
        return truth.inspect(device=facts.device, asset=facts.asset, start_ms=facts.first_seen - self.pad_ms,
                             end_ms=max(end, facts.first_seen))

    def revisit(self, facts: AlertFacts, given: TechnicianVerdict, truth: GroundTruth) -> TechnicianVerdict | None:
        """The repair visit after a confirmed fault: the corrected verdict when the confirmation was mistaken (the
        span inspected on site holds no fault), None when it stands. Nothing is left to chance on site."""
        if given.verdict != "confirmed":
            return None
        found = self._inspect(facts, truth)
        if found.fault is not None:
            return None
        return TechnicianVerdict(alert_id=facts.alert_id, due_ms=given.due_ms + round(self.repair_visit_min
                                                                                       * _MINUTE_MS),
                                 verdict="false_alarm", fault_type="", reason=NOT_FOUND_ON_SITE, mistaken=False,
                                 truth=found)


class FeedbackFn(Protocol):
    """The feedback path of the API: ``AlertService.feedback`` fits."""

    def __call__(self, alert_id: int, verdict: str, *, by: str, fault_type: str = ...,
                 reason: str = ...) -> Awaitable[object]: ...


@dataclass(slots=True)
class TechnicianStats:
    """What the simulated technicians did so far (the loop's report shows it)."""

    scheduled: int = 0
    answered: int = 0
    confirmed: int = 0
    false_alarms: int = 0
    mistaken: int = 0
    failed: int = 0  # feedback refused for good (the alert gone, the verdict invalid): not retried
    retried: int = 0  # feedback that hit a store error and will be given again at the next step
    dropped: int = 0  # times a listed alert was not taken in because ``max_pending`` were waiting (taken later)
    visits: int = 0  # repair visits made after confirmed faults
    corrected: int = 0  # confirmations a repair visit found mistaken (relabelled false alarm)


class SimulatedTechnicians:
    """Answers each alert once, when its due time has come in data time; see the module docstring.

    ``alerts`` lists the open alerts (e.g. ``lambda: store.list_alerts(unresolved=True, limit=1000)``);
    ``feedback`` gives a verdict (``AlertService.feedback``); ``data_now`` is the platform's data clock
    (``Platform.data_now_ms``). An alert seen once is answered even if it resolves before its due time, from
    the facts last listed; a confirmed one is visited for repair later (``TechnicianPolicy.revisit``). At most
    ``max_pending`` alerts wait for an answer (and as many for a visit); the ids of answered alerts are
    remembered up to ``max_remembered`` (older ids, which the platform allocates in increasing order, count as
    answered).
    """

    def __init__(self, *, policy: TechnicianPolicy, truth: GroundTruth,
                 alerts: Callable[[], Awaitable[Sequence[Alert]]], feedback: FeedbackFn,
                 data_now: Callable[[], int], by: str = "sim-technician", max_pending: int = 10_000,
                 max_remembered: int = 100_000) -> None:
        if max_pending < 1 or max_remembered < 1:
            raise ValueError("max_pending and max_remembered must be >= 1")
        self.policy = policy
        self.truth = truth
        self.by = by
        self.stats = TechnicianStats()
        self.verdicts: deque[TechnicianVerdict] = deque(maxlen=max_remembered)  # the latest answers given
        self._alerts = alerts
        self._feedback = feedback
        self._data_now = data_now
        self._max_pending = max_pending
        self._pending: dict[int, tuple[int, AlertFacts]] = {}  # alert id -> (due ms, latest facts)
        self._visits: dict[int, tuple[TechnicianVerdict, AlertFacts]] = {}  # alert id -> (confirmation, latest facts)
        self._done: set[int] = set()
        self._done_order: deque[int] = deque()
        self._max_done = max_remembered
        self._done_floor = 0  # every id at or below this one is answered (forgotten from ``_done``)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _answered(self, alert_id: int) -> bool:
        return alert_id <= self._done_floor or alert_id in self._done

    def _remember(self, alert_id: int) -> None:
        self._done.add(alert_id)
        self._done_order.append(alert_id)
        while len(self._done_order) > self._max_done:
            old = self._done_order.popleft()
            self._done.discard(old)
            self._done_floor = max(self._done_floor, old)

    async def step(self) -> list[TechnicianVerdict]:
        """One round: take in the listed alerts, then give every verdict that is due. Returns those given."""
        try:
            listed = await self._alerts()
        except StoreError as exc:
            log.warning("simulated technicians: cannot list alerts (%s); trying again at the next step", exc)
            listed = []
        for alert in listed:
            if alert.id in self._visits:
                self._visits[alert.id] = (self._visits[alert.id][0], AlertFacts.of(alert))
            if self._answered(alert.id):
                continue
            facts = AlertFacts.of(alert)
            if alert.id in self._pending:
                self._pending[alert.id] = (self._pending[alert.id][0], facts)
            elif len(self._pending) < self._max_pending:
                self._pending[alert.id] = (self.policy.due_ms(alert.id, alert.first_seen), facts)
                self.stats.scheduled += 1
            else:
                self.stats.dropped += 1
        now = self._data_now()
        given: list[TechnicianVerdict] = []
        for alert_id, (due, facts) in sorted(self._pending.items(), key=lambda kv: (kv[1][0], kv[0])):
            if due > now:
                break
            v = self.policy.verdict(facts, self.truth)
            stored = await self._give(v, "feedback on")
            if stored is None:
                break
            if stored:
                self._count(v)
                given.append(v)
                if v.verdict == "confirmed" and len(self._visits) < self._max_pending:
                    self._visits[alert_id] = (v, facts)
            del self._pending[alert_id]
            self._remember(alert_id)
        given.extend(await self._repair_visits(now))
        return given

    async def _repair_visits(self, now: int) -> list[TechnicianVerdict]:
        """The repair visits that are due: a mistaken confirmation is corrected (see ``TechnicianPolicy.revisit``)."""
        visit_ms = round(self.policy.repair_visit_min * _MINUTE_MS)
        corrected: list[TechnicianVerdict] = []
        for alert_id, (confirmation, facts) in sorted(self._visits.items(), key=lambda kv: (kv[1][0].due_ms, kv[0])):
            if confirmation.due_ms + visit_ms > now:
                break
            v = self.policy.revisit(facts, confirmation, self.truth)
            if v is not None:
                stored = await self._give(v, "correction of")
                if stored is None:
                    break
                if stored:
                    self.stats.corrected += 1
                    self.verdicts.append(v)
                    corrected.append(v)
            self.stats.visits += 1
            del self._visits[alert_id]
        return corrected

    async def _give(self, v: TechnicianVerdict, what: str) -> bool | None:
        """Give ``v`` through the feedback path: True when stored, False when refused for good (counted as failed),
        None when the store failed (counted as retried: given again at the next step, so stop this round)."""
        try:
            await self._feedback(v.alert_id, v.verdict, by=self.by, fault_type=v.fault_type, reason=v.reason)
        except StoreError as exc:
            self.stats.retried += 1
            log.warning("simulated technicians: %s alert %d not stored (%s); trying again", what, v.alert_id, exc)
            return None
        except EdgeLoopError as exc:
            self.stats.failed += 1
            log.warning("simulated technicians: %s alert %d refused: %s", what, v.alert_id, exc)
            return False
        return True

    def _count(self, v: TechnicianVerdict) -> None:
        self.stats.answered += 1
        self.stats.confirmed += v.verdict == "confirmed"
        self.stats.false_alarms += v.verdict == "false_alarm"
        self.stats.mistaken += v.mistaken
        self.verdicts.append(v)

    async def run(self, *, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """Step, then wait ``interval_s`` (or until ``stop`` is set), until ``stop`` is set."""
        while True:
            await self.step()
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                continue
