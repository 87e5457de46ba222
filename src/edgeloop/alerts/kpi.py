"""KPIs of the alert and work-order lifecycle, per asset, line, site or fleet (pure, deterministic, no I/O).

A :class:`Timeline` holds lifecycle *facts* (times in ms from the injectable clock); :func:`compute_kpis`
turns the facts of one period ``[start_ms, end_ms)`` into one :class:`Kpis` per group.

Facts
-----
- :class:`Opened` an alert (or incident: whatever unit is acknowledged and judged) opened on an asset;
  :class:`Acked` / :class:`Resolved` it was acknowledged / resolved; :class:`Verdict` a technician's verdict
  on it: ``confirmed`` (with a fault type), ``false_alarm`` or ``relabel``.
- :class:`WorkOrderOpened` (asset, optional linked alert, optional ``downtime_start`` when the machine was
  down) and :class:`WorkOrderClosed` (optional ``downtime_end``).
- :class:`RawSignals` raw rule signals counted on an asset (``count`` lets a caller pre-aggregate);
  :class:`Notified` a notification sent about an asset.
- :class:`Failure` ground truth: a functional failure / fault onset of an asset, when it is known.

General rules
-------------
- **Horizon**: a report for ``[start_ms, end_ms)`` sees only facts with ``ts < end_ms`` (an ack, verdict or
  close that came later is unknown at the end of the period), so a past report is reproducible.
- **Cohorts**: an alert belongs to the period in which it *opened* (``start_ms <= opened < end_ms``); its ack,
  resolution and verdict may come at any time before ``end_ms``. An alert opened before the period (even if
  acknowledged or resolved inside it, or acknowledged before the period started) counts in no KPI of this
  period. Duplicated facts: the first ``Opened``, the earliest ``Acked`` / ``Resolved`` and the *latest*
  ``Verdict`` (ties: the last added) of an alert count.
- **Pooling**: a group's means are over all its items (not means of per-asset means).
- **No data is None, never 0**: every ratio whose denominator is empty is ``None``; counts stay integers.
  A group is *observed* in the period when one of its assets has a fact with ``start_ms <= ts < end_ms`` or a
  downtime overlapping the period; availability is ``None`` for an unobserved group.
- **Assets** of a group: the assets of ``topology.line_of_asset`` and every asset named by a fact; an asset
  without a line is on line ``"-"``, a line without a site on site ``"-"``; the fleet is ``"fleet"``.

Definitions
-----------
- ``mtta_ms``: mean of ``ack - opened`` over the cohort's alerts acknowledged before ``end_ms`` (an ack
  stamped before its open counts as 0). Unacknowledged alerts are counted in ``unacknowledged``, not in the
  mean (never censored at the period end, which would understate it).
- ``mttr_alert_ms``: mean of ``resolved - opened`` over the cohort's alerts resolved before ``end_ms``; those
  still open at ``end_ms`` are counted in ``still_open``.
- ``mttr_repair_ms``: mean downtime per repair, ``downtime_end - downtime_start``, over work orders whose
  downtime started in the period and ended before ``end_ms``. The downtime of a work order starts at its
  ``downtime_start`` and ends at the close's ``downtime_end``, or at the close itself when the close gives
  none; a work order not closed by ``end_ms`` is still down (``ongoing_repairs``).
- ``downtime_ms``: per asset, the union of its downtime intervals (overlapping work orders are merged, not
  summed), clipped to the period (an ongoing downtime runs to ``end_ms``); summed over the group's assets.
- **Observed time**: the period counts from ``data_from_ms`` (when the group's first data arrived) if that is
  later than ``start_ms``: time before the platform had data is not operating time. ``observed_ms`` is that
  span; below ``MIN_OBSERVED_MS`` (one day) availability and MTBF are ``None`` and ``enough_data`` is False
  (the screens say "not enough data"): six hours of data say nothing of either.
- ``availability``: ``1 - downtime_ms / (assets * period)``. Downtime is known only from work orders: an
  observed group's asset without any is counted fully available.
- ``failures``: work orders with a downtime that started in the period, plus the cohort's alerts confirmed
  as faults that are not linked (``WorkOrderOpened.alert``) to a work order with downtime (one fault is one
  failure, however many records it has).
- ``mtbf_ms``: operating time / failures, operating time = ``assets * period - downtime_ms``; ``None`` without
  failures (then ``operating_ms`` says "more than this").
- ``precision``: ``confirmed / (confirmed + false_alarms)`` over the cohort's alerts with a verdict; a relabel
  (the alert saw something, but the label was wrong) is neither and is counted in ``relabeled``; ``None``
  without a confirmed or false-alarm verdict.
- ``false_alarms_per_asset_day``: the cohort's false alarms / (assets * period in days); ``None`` when no
  alert of the cohort has a verdict (nothing was judged, so 0 would pretend).
- ``raw_per_notification``: raw signals counted in the period / notifications sent in the period; ``None``
  without notifications.
- Detection lead time: for each failure at ``t`` in the period, the reference failures of its asset are its
  ground-truth :class:`Failure` facts when it has any (before ``end_ms``), else the downtime starts of its
  work orders (a technician's confirmation is not used: its time is the technician's, not the machine's).
  The lead is ``t - first``, ``first`` the earliest alert of the asset opened after the asset's previous
  reference failure, at most ``lead_lookback_ms`` before ``t`` and at or before ``t``, whose verdict is not a
  false alarm (alerts opened before the period count: they detected a failure in it). A failure without
  such an alert is ``missed``. ``lead_median_ms`` / ``lead_mean_ms`` over detected failures, ``None`` without.
"""

from __future__ import annotations

import enum
import math
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from edgeloop.alerts.model import Topology

__all__ = [
    "DAY_MS",
    "FLEET",
    "MIN_OBSERVED_MS",
    "UNASSIGNED",
    "Acked",
    "Fact",
    "Failure",
    "Group",
    "Kpis",
    "Notified",
    "Opened",
    "RawSignals",
    "Resolved",
    "Timeline",
    "Verdict",
    "VerdictKind",
    "WorkOrderClosed",
    "WorkOrderOpened",
    "compute_kpis",
    "group_of",
]

DAY_MS = 86_400_000
MIN_OBSERVED_MS = DAY_MS  # below this much observed time, availability and MTBF are "not enough data"
FLEET = "fleet"
UNASSIGNED = "-"
Group = Literal["asset", "line", "site", "fleet"]


class VerdictKind(enum.StrEnum):
    CONFIRMED = "confirmed"
    FALSE_ALARM = "false_alarm"
    RELABEL = "relabel"


# --- facts --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """An alert (or incident) ``alert`` opened on ``asset``."""

    ts: int
    alert: str
    asset: str
    severity: str = "warning"


@dataclass(frozen=True, slots=True)
class Acked:
    """The alert was acknowledged by ``by``."""

    ts: int
    alert: str
    by: str = ""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The alert was resolved."""

    ts: int
    alert: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A technician's verdict on the alert; ``fault_type`` for a confirmation or a relabel."""

    ts: int
    alert: str
    kind: VerdictKind
    by: str = ""
    fault_type: str = ""


@dataclass(frozen=True, slots=True)
class WorkOrderOpened:
    """A work order on ``asset``, optionally for ``alert``; ``downtime_start`` when the machine was down."""

    ts: int
    work_order: str
    asset: str
    alert: str | None = None
    downtime_start: int | None = None


@dataclass(frozen=True, slots=True)
class WorkOrderClosed:
    """The work order was closed; ``downtime_end`` when the machine ran again (else the close ends it)."""

    ts: int
    work_order: str
    downtime_end: int | None = None


@dataclass(frozen=True, slots=True)
class RawSignals:
    """``count`` raw rule signals on ``asset`` (pre-aggregated by the caller if it likes)."""

    ts: int
    asset: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Notified:
    """A notification was sent about ``asset``."""

    ts: int
    asset: str
    channel: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    """Ground truth: ``asset`` failed (fault onset) at ``ts``."""

    ts: int
    asset: str
    fault_type: str = ""


Fact = (Opened | Acked | Resolved | Verdict | WorkOrderOpened | WorkOrderClosed | RawSignals | Notified
        | Failure)


@dataclass(slots=True)
class Timeline:
    """Lifecycle facts, kept in one list per kind, in the order they were added."""

    opened: list[Opened] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    resolved: list[Resolved] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    wo_opened: list[WorkOrderOpened] = field(default_factory=list)
    wo_closed: list[WorkOrderClosed] = field(default_factory=list)
    raw: list[RawSignals] = field(default_factory=list)
    notified: list[Notified] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @classmethod
    def of(cls, facts: Iterable[Fact]) -> Timeline:
        """A timeline holding ``facts``."""
        tl = cls()
        tl.extend(facts)
        return tl

    def add(self, fact: Fact) -> None:
        """Add one fact."""
        match fact:
            case Opened():
                self.opened.append(fact)
            case Acked():
                self.acked.append(fact)
            case Resolved():
                self.resolved.append(fact)
            case Verdict():
                self.verdicts.append(fact)
            case WorkOrderOpened():
                self.wo_opened.append(fact)
            case WorkOrderClosed():
                self.wo_closed.append(fact)
            case RawSignals():
                self.raw.append(fact)
            case Notified():
                self.notified.append(fact)
            case Failure():
                self.failures.append(fact)

    def extend(self, facts: Iterable[Fact]) -> None:
        """Add facts."""
        for f in facts:
            self.add(f)

    def __len__(self) -> int:
        return (len(self.opened) + len(self.acked) + len(self.resolved) + len(self.verdicts)
                + len(self.wo_opened) + len(self.wo_closed) + len(self.raw) + len(self.notified)
                + len(self.failures))


# --- result -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kpis:
    """The KPIs of one group over one period (definitions in the module docstring); times in ms."""

    assets: int
    asset_days: float
    alerts: int
    acknowledged: int
    unacknowledged: int
    mtta_ms: float | None
    resolved: int
    still_open: int
    mttr_alert_ms: float | None
    repairs: int
    ongoing_repairs: int
    mttr_repair_ms: float | None
    downtime_ms: int
    operating_ms: int
    availability: float | None  # None without data, or with less than MIN_OBSERVED_MS observed
    failures: int
    mtbf_ms: float | None
    confirmed: int
    false_alarms: int
    relabeled: int
    precision: float | None
    false_alarms_per_asset_day: float | None
    raw_signals: int
    notifications: int
    raw_per_notification: float | None
    detected_failures: int
    missed_failures: int
    lead_median_ms: float | None
    lead_mean_ms: float | None
    observed_ms: int  # the period from when data began (``data_from_ms``) to its end
    enough_data: bool  # observed_ms >= MIN_OBSERVED_MS: availability and MTBF are stated only then


@dataclass(slots=True)
class _Acc:
    observed: bool = False
    alerts: int = 0
    acked: int = 0
    ack_sum: int = 0
    resolved: int = 0
    res_sum: int = 0
    repairs: int = 0
    repair_sum: int = 0
    ongoing: int = 0
    downtime: int = 0
    failures: int = 0
    confirmed: int = 0
    false_alarms: int = 0
    relabeled: int = 0
    raw: int = 0
    notified: int = 0
    missed: int = 0
    leads: list[int] = field(default_factory=list)


def group_of(topology: Topology, group: Group) -> Callable[[str], str]:
    """The function asset -> its group key (asset id, line, site or ``"fleet"``)."""
    if group == "asset":
        return lambda a: a
    if group == "line":
        return lambda a: topology.line_of_asset.get(a, UNASSIGNED)
    if group == "site":
        return lambda a: topology.site_of_line.get(topology.line_of_asset.get(a, UNASSIGNED), UNASSIGNED)
    if group == "fleet":
        return lambda a: FLEET
    raise ValueError(f"group must be asset, line, site or fleet, not {group!r}")


def _merged_length(intervals: list[tuple[int, int]]) -> int:
    total = 0
    cur_s = cur_e = -1
    started = False
    for s, e in sorted(intervals):
        if not started:
            cur_s, cur_e, started = s, e, True
        elif s <= cur_e:
            cur_e = max(cur_e, e)
        else:
            total += cur_e - cur_s
            cur_s, cur_e = s, e
    if started:
        total += cur_e - cur_s
    return total


def compute_kpis(timeline: Timeline, topology: Topology, start_ms: int, end_ms: int, group: Group = "asset",
                 *, lead_lookback_ms: int = 7 * DAY_MS, data_from_ms: int | None = None) -> dict[str, Kpis]:
    """The KPIs of every group over ``[start_ms, end_ms)``, keyed by group key, in key order; exposure
    (asset-days, operating time, availability) counts from ``data_from_ms`` when the data began later.

    Every group with at least one asset (from the topology or the facts) is in the result, observed or not.
    """
    if end_ms <= start_ms:
        raise ValueError(f"empty period: end_ms {end_ms} <= start_ms {start_ms}")
    key_of = group_of(topology, group)
    period = max(0, end_ms - max(start_ms, data_from_ms if data_from_ms is not None else start_ms))
    enough = period >= MIN_OBSERVED_MS

    def in_period(ts: int) -> bool:
        return start_ms <= ts < end_ms

    assets: set[str] = set(topology.line_of_asset)
    observed: set[str] = set()

    # alerts: first open, earliest ack / resolve, latest verdict, all before end_ms
    opened: dict[str, Opened] = {}
    for o in timeline.opened:
        if o.ts < end_ms:
            assets.add(o.asset)
            if o.alert not in opened:
                opened[o.alert] = o
            if o.ts >= start_ms:
                observed.add(o.asset)
    asset_of_alert = {k: o.asset for k, o in opened.items()}
    ack: dict[str, int] = {}
    for ak in timeline.acked:
        if ak.ts < end_ms:
            if ak.alert not in ack or ak.ts < ack[ak.alert]:
                ack[ak.alert] = ak.ts
            if ak.ts >= start_ms and ak.alert in asset_of_alert:
                observed.add(asset_of_alert[ak.alert])
    res: dict[str, int] = {}
    for r in timeline.resolved:
        if r.ts < end_ms:
            if r.alert not in res or r.ts < res[r.alert]:
                res[r.alert] = r.ts
            if r.ts >= start_ms and r.alert in asset_of_alert:
                observed.add(asset_of_alert[r.alert])
    verdict: dict[str, Verdict] = {}
    for vd in timeline.verdicts:
        if vd.ts < end_ms:
            prev = verdict.get(vd.alert)
            if prev is None or vd.ts >= prev.ts:
                verdict[vd.alert] = vd
            if vd.ts >= start_ms and vd.alert in asset_of_alert:
                observed.add(asset_of_alert[vd.alert])

    # work orders -> downtime intervals per asset
    closed: dict[str, WorkOrderClosed] = {}
    for wc in timeline.wo_closed:
        if wc.ts < end_ms and (wc.work_order not in closed or wc.ts < closed[wc.work_order].ts):
            closed[wc.work_order] = wc
    wos: dict[str, WorkOrderOpened] = {}
    for w in timeline.wo_opened:
        if w.ts < end_ms and w.work_order not in wos:
            wos[w.work_order] = w
    accs: dict[str, _Acc] = defaultdict(_Acc)
    down: dict[str, list[tuple[int, int]]] = defaultdict(list)
    down_starts: dict[str, list[int]] = defaultdict(list)
    linked_down: set[str] = set()
    for w in wos.values():
        assets.add(w.asset)
        acc = accs[key_of(w.asset)]
        c = closed.get(w.work_order)
        if in_period(w.ts) or (c is not None and in_period(c.ts)):
            observed.add(w.asset)
        ds = w.downtime_start
        if ds is None or ds >= end_ms:
            continue
        if w.alert is not None:
            linked_down.add(w.alert)
        down_starts[w.asset].append(ds)
        de: int | None = None
        if c is not None:
            de = c.downtime_end if c.downtime_end is not None else c.ts
            de = max(de, ds)
        if in_period(ds):
            acc.failures += 1
            if de is None:
                acc.ongoing += 1
            elif de <= end_ms:
                acc.repairs += 1
                acc.repair_sum += de - ds
            else:
                acc.ongoing += 1
        s, e = max(ds, start_ms), min(end_ms if de is None else de, end_ms)
        if e > s:
            down[w.asset].append((s, e))
            observed.add(w.asset)
    for asset, ivs in down.items():
        accs[key_of(asset)].downtime += _merged_length(ivs)

    # the cohort's alerts
    alert_opens: dict[str, list[int]] = defaultdict(list)  # asset -> open times of non-false alerts
    for k, o in opened.items():
        v = verdict.get(k)
        if v is None or v.kind != VerdictKind.FALSE_ALARM:
            alert_opens[o.asset].append(o.ts)
        if o.ts < start_ms:
            continue
        acc = accs[key_of(o.asset)]
        acc.alerts += 1
        t_ack = ack.get(k)
        if t_ack is not None:
            acc.acked += 1
            acc.ack_sum += max(0, t_ack - o.ts)
        t_res = res.get(k)
        if t_res is not None:
            acc.resolved += 1
            acc.res_sum += max(0, t_res - o.ts)
        if v is not None:
            if v.kind == VerdictKind.CONFIRMED:
                acc.confirmed += 1
                if k not in linked_down:
                    acc.failures += 1
            elif v.kind == VerdictKind.FALSE_ALARM:
                acc.false_alarms += 1
            else:
                acc.relabeled += 1

    for rs in timeline.raw:
        if in_period(rs.ts):
            assets.add(rs.asset)
            observed.add(rs.asset)
            accs[key_of(rs.asset)].raw += rs.count
    for nt in timeline.notified:
        if in_period(nt.ts):
            assets.add(nt.asset)
            observed.add(nt.asset)
            accs[key_of(nt.asset)].notified += 1

    # detection lead time
    truth: dict[str, list[int]] = defaultdict(list)
    for f in timeline.failures:
        if f.ts < end_ms:
            assets.add(f.asset)
            truth[f.asset].append(f.ts)
            if f.ts >= start_ms:
                observed.add(f.asset)
    for asset in set(truth) | set(down_starts):
        refs = sorted(truth[asset] if asset in truth else down_starts[asset])
        opens = sorted(alert_opens.get(asset, ()))
        acc = accs[key_of(asset)]
        for i, t in enumerate(refs):
            if not in_period(t):
                continue
            lo = bisect_left(opens, t - lead_lookback_ms)
            if i > 0:
                lo = max(lo, bisect_right(opens, refs[i - 1]))
            if lo < len(opens) and opens[lo] <= t:
                acc.leads.append(t - opens[lo])
            else:
                acc.missed += 1

    n_assets: dict[str, int] = defaultdict(int)
    obs_groups: set[str] = set()
    for a in assets:
        n_assets[key_of(a)] += 1
    for a in observed:
        obs_groups.add(key_of(a))

    out: dict[str, Kpis] = {}
    for g in sorted(n_assets):
        acc = accs[g] if g in accs else _Acc()
        n = n_assets[g]
        exposure = n * period
        is_obs = g in obs_groups
        judged = acc.confirmed + acc.false_alarms + acc.relabeled
        operating = exposure - acc.downtime
        out[g] = Kpis(
            assets=n,
            asset_days=exposure / DAY_MS,
            observed_ms=period,
            enough_data=enough,
            alerts=acc.alerts,
            acknowledged=acc.acked,
            unacknowledged=acc.alerts - acc.acked,
            mtta_ms=acc.ack_sum / acc.acked if acc.acked else None,
            resolved=acc.resolved,
            still_open=acc.alerts - acc.resolved,
            mttr_alert_ms=acc.res_sum / acc.resolved if acc.resolved else None,
            repairs=acc.repairs,
            ongoing_repairs=acc.ongoing,
            mttr_repair_ms=acc.repair_sum / acc.repairs if acc.repairs else None,
            downtime_ms=acc.downtime,
            operating_ms=operating,
            availability=1.0 - acc.downtime / exposure if is_obs and enough else None,
            failures=acc.failures,
            mtbf_ms=operating / acc.failures if acc.failures and enough else None,
            confirmed=acc.confirmed,
            false_alarms=acc.false_alarms,
            relabeled=acc.relabeled,
            precision=(acc.confirmed / (acc.confirmed + acc.false_alarms)
                       if acc.confirmed + acc.false_alarms else None),
            false_alarms_per_asset_day=acc.false_alarms / (exposure / DAY_MS) if judged and exposure else None,
            raw_signals=acc.raw,
            notifications=acc.notified,
            raw_per_notification=acc.raw / acc.notified if acc.notified else None,
            detected_failures=len(acc.leads),
            missed_failures=acc.missed,
            lead_median_ms=float(statistics.median(acc.leads)) if acc.leads else None,
            lead_mean_ms=math.fsum(acc.leads) / len(acc.leads) if acc.leads else None,
        )
    return out
