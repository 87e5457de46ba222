"""KPIs (alerts/kpi.py) checked against a hand-computed timeline.

Three days [B, B + 72 h), times below in hours after B. Line L1 (site S1): p1, p2; line L2 (site S2): c1 and
idle (no facts at all).

Alerts (open / ack / resolve / verdict):
  a0 p1  -5 / -4 / +1 / false@-3     opened before the period: in no KPI (the ack is before the period)
  a1 p1   2 / 2.5 / 6 / confirmed@7   linked to w1 (downtime) -> not a failure of its own
  a2 p1  20 / 21 / 22 / false@23
  a3 p2  10 / 12 / 15 / relabel@16
  a4 p2  50 / 50.5 / (80: after the end) / confirmed@60 -> still open; a failure (no work order)
  a5 c1  30 / (75: after the end) / - / false@31 -> unacknowledged, still open
  a6 c1  40 / 41 / 44 / confirmed@45   linked to w3 (downtime)
  a7 c1  60 / 60 / 61 / -
Work orders (downtime):
  w0 p2  opened -10, down -2 .. 1 (closed 1)        -> 1 h of downtime in the period, no failure, no repair
  w1 p1  opened 3, down 3 .. 8 (closed 9)           -> repair 5 h
  w2 p1  opened 5, down 6 .. closed 12 (no end)     -> repair 6 h; union with w1: 3 .. 12 = 9 h
  w3 c1  opened 42, down 42 .., closed 80 (after)   -> ongoing: 42 .. 72 = 30 h
Raw signals: p1 40@2 + 20@20 (+100@-1 before), p2 30@10, c1 10@30 (+5@90 after). Notifications: p1 @2, @20;
p2 @10; c1 @30, @40.
Ground-truth failures: p1 @5 and @30, p2 @55 (c1 has none: its reference is w3's downtime start @42).
"""

from __future__ import annotations

import pytest

from edgeloop.alerts.kpi import (
    DAY_MS,
    FLEET,
    Acked,
    Fact,
    Failure,
    Notified,
    Opened,
    RawSignals,
    Resolved,
    Timeline,
    Verdict,
    VerdictKind,
    WorkOrderClosed,
    WorkOrderOpened,
    compute_kpis,
)
from edgeloop.alerts.model import Topology

H = 3_600_000
B = 10 * DAY_MS
START, END = B, B + 72 * H


def t(hours: float) -> int:
    return B + round(hours * H)


TOPO = Topology(line_of_asset={"p1": "L1", "p2": "L1", "c1": "L2", "idle": "L2"},
                site_of_line={"L1": "S1", "L2": "S2"})
C, F, R = VerdictKind.CONFIRMED, VerdictKind.FALSE_ALARM, VerdictKind.RELABEL


def facts() -> list[Fact]:
    out: list[Fact] = []
    alerts: list[tuple[str, str, float, float | None, float | None, VerdictKind | None, float]] = [
        ("a0", "p1", -5, -4, 1, F, -3),
        ("a1", "p1", 2, 2.5, 6, C, 7),
        ("a2", "p1", 20, 21, 22, F, 23),
        ("a3", "p2", 10, 12, 15, R, 16),
        ("a4", "p2", 50, 50.5, 80, C, 60),
        ("a5", "c1", 30, 75, None, F, 31),
        ("a6", "c1", 40, 41, 44, C, 45),
        ("a7", "c1", 60, 60, 61, None, 0),
    ]
    for alert, asset, o, a, r, v, vt in alerts:
        out.append(Opened(t(o), alert, asset, "critical"))
        if a is not None:
            out.append(Acked(t(a), alert, "alice"))
        if r is not None:
            out.append(Resolved(t(r), alert))
        if v is not None:
            out.append(Verdict(t(vt), alert, v, "bob", "bearing" if v != F else ""))
    out += [
        WorkOrderOpened(t(-10), "w0", "p2", downtime_start=t(-2)),
        WorkOrderClosed(t(1), "w0", downtime_end=t(1)),
        WorkOrderOpened(t(3), "w1", "p1", alert="a1", downtime_start=t(3)),
        WorkOrderClosed(t(9), "w1", downtime_end=t(8)),
        WorkOrderOpened(t(5), "w2", "p1", downtime_start=t(6)),
        WorkOrderClosed(t(12), "w2"),
        WorkOrderOpened(t(42), "w3", "c1", alert="a6", downtime_start=t(42)),
        WorkOrderClosed(t(80), "w3", downtime_end=t(79)),
        RawSignals(t(2), "p1", 40), RawSignals(t(20), "p1", 20), RawSignals(t(-1), "p1", 100),
        RawSignals(t(10), "p2", 30), RawSignals(t(30), "c1", 10), RawSignals(t(90), "c1", 5),
        Notified(t(2), "p1"), Notified(t(20), "p1"), Notified(t(10), "p2"),
        Notified(t(30), "c1", "email"), Notified(t(40), "c1"),
        Failure(t(5), "p1", "bearing"), Failure(t(30), "p1"), Failure(t(55), "p2"),
    ]
    return out


def approx(x: float | None, y: float) -> bool:
    return x is not None and x == pytest.approx(y)


def test_per_asset_against_hand_computation() -> None:
    k = compute_kpis(Timeline.of(facts()), TOPO, START, END, "asset")
    assert list(k) == ["c1", "idle", "p1", "p2"]

    p1 = k["p1"]
    assert (p1.alerts, p1.acknowledged, p1.resolved, p1.still_open) == (2, 2, 2, 0)  # a1, a2 (not a0)
    assert approx(p1.mtta_ms, 0.75 * H)  # (0.5 + 1) / 2
    assert approx(p1.mttr_alert_ms, 3 * H)  # (4 + 2) / 2
    assert (p1.repairs, p1.ongoing_repairs) == (2, 0)
    assert approx(p1.mttr_repair_ms, 5.5 * H)  # (5 + 6) / 2: per work order, not merged
    assert p1.downtime_ms == 9 * H  # 3..8 U 6..12 = 3..12
    assert approx(p1.availability, 1 - 9 / 72)
    assert p1.failures == 2  # w1, w2 (a1 is w1's)
    assert p1.operating_ms == 63 * H
    assert approx(p1.mtbf_ms, 31.5 * H)
    assert (p1.confirmed, p1.false_alarms, p1.relabeled) == (1, 1, 0)
    assert approx(p1.precision, 0.5)
    assert approx(p1.false_alarms_per_asset_day, 1 / 3)
    assert (p1.raw_signals, p1.notifications) == (60, 2)
    assert approx(p1.raw_per_notification, 30)
    # failure @5: first non-false alert a1 @2 -> 3 h; failure @30: no alert after the failure @5 -> missed
    assert (p1.detected_failures, p1.missed_failures) == (1, 1)
    assert approx(p1.lead_median_ms, 3 * H) and approx(p1.lead_mean_ms, 3 * H)

    p2 = k["p2"]
    assert (p2.alerts, p2.acknowledged, p2.resolved, p2.still_open) == (2, 2, 1, 1)
    assert approx(p2.mtta_ms, 1.25 * H)  # (2 + 0.5) / 2
    assert approx(p2.mttr_alert_ms, 5 * H)  # a3 only; a4's resolve at 80 is after the end
    assert p2.repairs == 0 and p2.mttr_repair_ms is None  # w0's downtime started before the period
    assert p2.downtime_ms == 1 * H  # w0 clipped to 0..1
    assert approx(p2.availability, 71 / 72)
    assert p2.failures == 1  # a4 confirmed, no work order
    assert approx(p2.mtbf_ms, 71 * H)
    assert (p2.confirmed, p2.false_alarms, p2.relabeled) == (1, 0, 1)
    assert approx(p2.precision, 1.0)  # the relabel is neither
    assert p2.false_alarms_per_asset_day == 0.0  # judged, none false: a real 0
    assert approx(p2.raw_per_notification, 30)
    # ground truth @55: first non-false alert within the 7-day lookback is a3 @10 -> 45 h
    assert approx(p2.lead_median_ms, 45 * H)

    c1 = k["c1"]
    assert (c1.alerts, c1.acknowledged, c1.unacknowledged, c1.resolved, c1.still_open) == (3, 2, 1, 2, 1)
    assert approx(c1.mtta_ms, 0.5 * H)  # (1 + 0) / 2; a5's ack at 75 is after the end
    assert approx(c1.mttr_alert_ms, 2.5 * H)  # (4 + 1) / 2
    assert (c1.repairs, c1.ongoing_repairs, c1.mttr_repair_ms) == (0, 1, None)
    assert c1.downtime_ms == 30 * H  # 42..72 (still down at the end)
    assert approx(c1.availability, 42 / 72)
    assert c1.failures == 1  # w3 (a6 is w3's)
    assert approx(c1.mtbf_ms, 42 * H)
    assert approx(c1.precision, 0.5)
    assert approx(c1.raw_per_notification, 5)  # 10 / 2 (the 5 @90 is after the end)
    # no ground truth: w3's downtime start @42; a5 @30 is a false alarm -> a6 @40 -> 2 h
    assert approx(c1.lead_mean_ms, 2 * H)

    idle = k["idle"]  # known from the topology, no data: None everywhere, counts 0
    assert idle.assets == 1 and idle.alerts == 0
    for v in (idle.availability, idle.mtta_ms, idle.mttr_alert_ms, idle.mttr_repair_ms, idle.mtbf_ms,
              idle.precision, idle.false_alarms_per_asset_day, idle.raw_per_notification,
              idle.lead_median_ms, idle.lead_mean_ms):
        assert v is None


def test_grouped_by_line_site_fleet() -> None:
    tl = Timeline.of(facts())
    lines = compute_kpis(tl, TOPO, START, END, "line")
    sites = compute_kpis(tl, TOPO, START, END, "site")
    assert lines["L1"] == sites["S1"] and lines["L2"] == sites["S2"]

    l1 = lines["L1"]  # p1 + p2: 144 asset-hours = 6 asset-days
    assert l1.assets == 2 and l1.asset_days == 6.0
    assert approx(l1.mtta_ms, 1 * H)  # (0.5 + 1 + 2 + 0.5) / 4: pooled
    assert approx(l1.mttr_alert_ms, 11 / 3 * H)  # (4 + 2 + 5) / 3
    assert approx(l1.mttr_repair_ms, 5.5 * H)
    assert l1.downtime_ms == 10 * H
    assert approx(l1.availability, 1 - 10 / 144)
    assert l1.failures == 3 and approx(l1.mtbf_ms, 134 / 3 * H)
    assert approx(l1.precision, 2 / 3)
    assert approx(l1.false_alarms_per_asset_day, 1 / 6)
    assert approx(l1.raw_per_notification, 30)  # 90 / 3
    assert approx(l1.lead_median_ms, 24 * H) and approx(l1.lead_mean_ms, 24 * H)  # 3, 45
    assert l1.missed_failures == 1

    l2 = lines["L2"]  # c1 + idle: idle still counts in the exposure
    assert l2.assets == 2
    assert approx(l2.availability, 1 - 30 / 144)
    assert approx(l2.mtbf_ms, 114 * H)  # (144 - 30) / 1
    assert approx(l2.false_alarms_per_asset_day, 1 / 6)

    fleet = compute_kpis(tl, TOPO, START, END, "fleet")
    assert list(fleet) == [FLEET]
    f = fleet[FLEET]  # 4 assets, 288 h = 12 asset-days
    assert (f.assets, f.alerts, f.acknowledged, f.resolved, f.still_open) == (4, 7, 6, 5, 2)
    assert approx(f.mtta_ms, 5 / 6 * H)  # (4 + 1) / 6
    assert approx(f.mttr_alert_ms, 3.2 * H)  # (11 + 5) / 5
    assert (f.repairs, f.ongoing_repairs) == (2, 1)
    assert f.downtime_ms == 40 * H
    assert approx(f.availability, 1 - 40 / 288)
    assert f.failures == 4 and approx(f.mtbf_ms, 62 * H)  # 248 / 4
    assert (f.confirmed, f.false_alarms, f.relabeled) == (3, 2, 1)
    assert approx(f.precision, 0.6)
    assert approx(f.false_alarms_per_asset_day, 1 / 6)
    assert approx(f.raw_per_notification, 20)  # 100 / 5
    assert (f.detected_failures, f.missed_failures) == (3, 1)
    assert approx(f.lead_median_ms, 3 * H)  # 2, 3, 45
    assert approx(f.lead_mean_ms, 50 / 3 * H)


def test_time_before_the_data_began_is_not_operating_time() -> None:
    """Data from hour 30 on: exposure counts 42 h, not 72 h; with less than a day of data availability and MTBF
    are "not enough data" (None), never a 100 % or an MTBF of "more than" the whole period."""
    tl = Timeline.of(facts())
    [f] = compute_kpis(tl, TOPO, START, END, "fleet", data_from_ms=t(30)).values()
    assert (f.observed_ms, f.enough_data) == (42 * H, True)
    assert approx(f.asset_days, 4 * 42 / 24)
    assert f.downtime_ms == 40 * H  # downtime is still clipped to the period
    assert approx(f.availability, 1 - 40 / (4 * 42))
    [short] = compute_kpis(tl, TOPO, START, END, "fleet", data_from_ms=t(66)).values()  # six hours of data
    assert (short.observed_ms, short.enough_data, short.availability, short.mtbf_ms) == (6 * H, False, None, None)
    assert short.alerts == 7  # counts and means of what happened are still stated
    [whole] = compute_kpis(tl, TOPO, START, END, "fleet", data_from_ms=t(-100)).values()  # data older than the period
    assert (whole.observed_ms, whole.enough_data) == (72 * H, True) and approx(whole.availability, 1 - 40 / 288)


def test_empty_period_is_none_not_zero() -> None:
    tl = Timeline.of(facts())
    later = compute_kpis(tl, TOPO, B + 10 * DAY_MS, B + 11 * DAY_MS, "fleet")[FLEET]
    assert later.assets == 4 and later.alerts == 0 and later.downtime_ms == 0
    for v in (later.availability, later.mtta_ms, later.mttr_alert_ms, later.mttr_repair_ms, later.mtbf_ms,
              later.precision, later.false_alarms_per_asset_day, later.raw_per_notification,
              later.lead_median_ms, later.lead_mean_ms):
        assert v is None
    assert compute_kpis(Timeline(), Topology(), START, END, "fleet") == {}


def test_only_facts_before_the_end_are_seen() -> None:
    # cut at 45 h: a4 (50) and a7 (60) do not exist yet; w3 is down 42..45
    k = compute_kpis(Timeline.of(facts()), TOPO, START, t(45), "asset")
    assert k["p2"].alerts == 1 and k["c1"].alerts == 2
    assert k["c1"].downtime_ms == 3 * H
    # a later verdict replaces an earlier one
    tl = Timeline.of([Opened(t(1), "x", "p1"), Verdict(t(2), "x", F), Verdict(t(3), "x", C, fault_type="seal")])
    assert compute_kpis(tl, TOPO, START, END, "asset")["p1"].precision == 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty period"):
        compute_kpis(Timeline(), TOPO, END, START)
    with pytest.raises(ValueError, match="group"):
        compute_kpis(Timeline(), TOPO, START, END, "plant")  # type: ignore[arg-type]
    assert len(Timeline.of(facts())) == len(facts())
