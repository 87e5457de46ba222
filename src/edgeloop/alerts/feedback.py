"""Technician feedback (issue 6, step 4): labels for training, their exports, and bounded, audited tuning.

Pure code: the platform stores labels, overrides, proposals and audit records, and calls this module.

**Labels.** On every alert a technician gives a :class:`Verdict`:

* ``confirmed``: a real fault; ``fault_type`` is required (e.g. ``bearing_wear``);
* ``false_alarm``: no fault; ``reason`` is required, and there is no fault type (to say what it really was,
  relabel instead);
* ``relabel``: a real event, but not what the alert said; ``fault_type`` carries the new label.

:func:`make_label` (or :func:`label_from_alert`) validates the feedback and ties it to the data window
(:func:`label_window`: the alert's ``first_seen`` minus a lead margin, to when it cleared or was last seen), to
the detector or model version that raised it, and to the person who gave it. Bad feedback raises
:class:`InvalidFeedback` (a ``ConfigError``, which the API answers with 422) naming the field.

**Exports** (:func:`labels_to_csv`, :func:`labels_to_parquet`) have the same columns, in this order
(:data:`LABEL_COLUMNS`; the CSV has a header row, empty cells for nulls, and a text cell that a spreadsheet
would run as a formula (one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) begins with
``'``, as does one that begins with ``'`` itself, which :func:`read_labels_csv` removes; the Parquet file
carries the schema version in its metadata under ``edgeloop.labels.schema``):

================  =======================  =====================================================
column            type (Parquet)           meaning
================  =======================  =====================================================
alert             int64                    the alert's id
incident          int64, null              the incident it belonged to, if known
tenant            string
asset             string
device            string                   empty when the alert had no single device
rule              string                   the rule that raised the alert
verdict           string                   confirmed | false_alarm | relabel
fault_type        string                   the fault (confirmed) or the new label (relabel); else ""
reason            string                   why it was a false alarm (required then); else a note or ""
start_ms          int64                    the labelled data window, ms since the epoch, inclusive
end_ms            int64                    its end, inclusive
first_seen        int64                    when the alert began
last_seen         int64                    when it was last raised
peak              float64, null            the most extreme value the rule saw during the alert
model_version     string                   the detector/model (``robust-ensemble-v2``) or rule version
by                string                   the person who gave the feedback
ts                int64                    when the feedback was given
================  =======================  =====================================================

**Tuning.** A threshold, rate, score or RUL rule may declare a ``tune`` policy
(:class:`~edgeloop.alerts.rule_config.TuningPolicy`). The :class:`Tuner`, fed every label, decides per
(asset, rule):

1. Feedback on a rule without ``tune`` (or another kind) is only a label: no decision.
2. A ``confirmed`` or ``relabel`` label is a real fault on that asset. It drops the false alarms counted so far
   and, from then on, forbids any loosening that would have missed it: the level never moves to or past the
   least extreme confirmed ``peak`` (an ``above`` level stays below it; a ``below`` level stays above it). A
   confirmation without a ``peak`` forbids loosening the rule on that asset altogether. Confirmations are
   sticky: a later false-alarm label for the same alert does not lift them.
3. A ``false_alarm`` label counts once per alert. Alerts that began before the rule's last change on the asset
   do not count (they were raised at the old level). When ``after_false_alarms`` of them began within
   ``period_s`` of the latest one, the tuner decides, and those false alarms are used up:

   * the candidate is the current level loosened by one step (``max_step``, or ``max_step_pct`` percent of the
     current level's magnitude), cut at the bound (``max`` for ``above`` rules, ``min`` for ``below`` rules);
   * already at the bound (no room, or a zero step), or the candidate would reach a confirmed peak: **held**
     (nothing moves; audited as refused, with the reason);
   * otherwise ``mode: auto`` **applies** it at once, and ``mode: propose`` makes a :class:`Proposal` that
     changes nothing until :meth:`Tuner.approve` (checked again then) or :meth:`Tuner.reject`. While a
     proposal waits, false alarms of that rule on that asset are counted but decide nothing.

   The clear level moves by the same amount as the raise level, so the hysteresis band keeps its width.

Every decision is a :class:`Decision` with a :class:`TuningAudit` (who triggered it, rule, asset, old and new
levels, bounds, why) that converts to the platform's :class:`~edgeloop.store.base.AuditRecord`. An applied or
approved change carries the keyword arguments of :meth:`edgeloop.alerts.rules.RuleEngine.set_override`.
"""

from __future__ import annotations

import csv
import enum
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from edgeloop.alerts.incidents import AlertState
from edgeloop.alerts.rule_config import LevelFields, Rule, RuleSet, TuningPolicy, level_fields, level_problem
from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.messages import ID_PATTERN
from edgeloop.store.alerting import Label, Verdict
from edgeloop.store.base import AuditRecord

__all__ = [
    "DEFAULT_LEAD_MS",
    "LABEL_COLUMNS",
    "LABEL_SCHEMA_VERSION",
    "Decision",
    "InvalidFeedback",
    "LevelChange",
    "Proposal",
    "TuneAction",
    "Tuner",
    "TuningAudit",
    "label_from_alert",
    "label_window",
    "labels_to_csv",
    "labels_to_parquet",
    "make_label",
    "read_labels_csv",
    "read_labels_parquet",
    "rule_model_version",
]

DEFAULT_LEAD_MS: Final = 10 * 60_000  # the data before an alert that a label's window includes
MAX_WINDOW_MS: Final = 31 * 86_400_000
MAX_REASON: Final = 1000
MAX_TEXT: Final = 128
LABEL_SCHEMA_VERSION: Final = 1
_ID = re.compile(ID_PATTERN)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline


class InvalidFeedback(ConfigError):
    """Feedback that cannot be stored; ``field`` names what is wrong, ``problem`` says how."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


LABEL_COLUMNS: Final[tuple[str, ...]] = Label.__struct_fields__
_INT_COLUMNS: Final = frozenset({"alert", "incident", "start_ms", "end_ms", "first_seen", "last_seen", "ts"})
_NULLABLE: Final = frozenset({"incident", "peak"})


def rule_model_version(rule: str, revision: int | str) -> str:
    """The ``model_version`` of an alert raised by a plain rule: the rule and the rule set's revision."""
    return f"rules:{rule}@{revision}"


def label_window(first_seen: int, last_seen: int, *, cleared_at: int | None = None,
                 lead_ms: int = DEFAULT_LEAD_MS) -> tuple[int, int]:
    """The data window a label covers: ``lead_ms`` before the alert began (not before 0) to when it cleared,
    or was last seen if it has not (whichever is later)."""
    if lead_ms < 0:
        raise InvalidFeedback("lead_ms", f"must be >= 0, not {lead_ms}")
    if first_seen < 0:
        raise InvalidFeedback("first_seen", f"must be a time in ms >= 0, not {first_seen}")
    end = last_seen if cleared_at is None else max(last_seen, cleared_at)
    if end < first_seen:
        raise InvalidFeedback("last_seen", f"the alert ends ({end}) before it begins ({first_seen})")
    return max(0, first_seen - lead_ms), end


def make_label(*, alert: int, tenant: str, asset: str, rule: str, verdict: Verdict | str, by: str, ts: int,
               model_version: str, first_seen: int, last_seen: int, device: str = "", incident: int | None = None,
               fault_type: str = "", reason: str = "", cleared_at: int | None = None,
               window: tuple[int, int] | None = None, lead_ms: int = DEFAULT_LEAD_MS,
               peak: float | None = None) -> Label:
    """Validate feedback on one alert and make its :class:`Label`.

    ``window`` overrides :func:`label_window` (e.g. a span the technician marked on the chart); it must overlap
    the alert and be at most 31 days long. Raises :class:`InvalidFeedback` naming the field.
    """
    try:
        v = Verdict(verdict)
    except ValueError:
        raise InvalidFeedback("verdict", f"{verdict!r} is not one of {', '.join(x.value for x in Verdict)}") from None
    _count("alert", alert)
    if incident is not None:
        _count("incident", incident)
    for name, value in (("tenant", tenant), ("asset", asset), ("rule", rule)):
        _ident(name, value)
    if device:
        _ident("device", device)
    for name, t in (("ts", ts), ("first_seen", first_seen), ("last_seen", last_seen)):
        _count(name, t)
    start, end = label_window(first_seen, last_seen, cleared_at=cleared_at, lead_ms=lead_ms)
    if window is not None:
        alert_end = end
        start, end = window
        _count("window start", start)
        _count("window end", end)
        if end < start:
            raise InvalidFeedback("window", f"ends ({end}) before it starts ({start})")
        if end - start > MAX_WINDOW_MS:
            raise InvalidFeedback("window", f"is {(end - start) / 86_400_000:.1f} days long; at most 31 days")
        if end < first_seen or start > alert_end:
            raise InvalidFeedback("window", f"[{start}, {end}] does not overlap the alert [{first_seen}, {alert_end}]")
    if ts < first_seen:
        raise InvalidFeedback("ts", f"feedback given ({ts}) before the alert began ({first_seen})")
    model = _text("model_version", model_version, MAX_TEXT, required=True, multiline=False)
    person = _text("by", by, MAX_TEXT, required=True, multiline=False)
    why = _text("reason", reason, MAX_REASON, required=v is Verdict.FALSE_ALARM, multiline=True)
    fault = fault_type.strip()
    if v is Verdict.FALSE_ALARM:
        if fault:
            raise InvalidFeedback("fault_type", "a false alarm has no fault type; to say what the alert really "
                                                "was, relabel it")
    elif not fault:
        what = "the fault that was confirmed" if v is Verdict.CONFIRMED else "the new label"
        raise InvalidFeedback("fault_type", f"is required for {v.value}: {what}, e.g. 'bearing_wear'")
    elif not _ID.match(fault):
        raise InvalidFeedback("fault_type", f"{fault[:80]!r} must be 1-64 lowercase letters, digits, '_', '.' or "
                                            "'-', starting with a letter or digit (e.g. 'bearing_wear')")
    if peak is not None and not math.isfinite(peak):
        raise InvalidFeedback("peak", f"must be a finite number, not {peak!r}")
    return Label(alert=alert, incident=incident, tenant=tenant, asset=asset, device=device, rule=rule, verdict=v,
                 fault_type=fault, reason=why, start_ms=start, end_ms=end, first_seen=first_seen,
                 last_seen=last_seen, peak=None if peak is None else float(peak),
                 model_version=model, by=person, ts=ts)


def label_from_alert(alert: AlertState, *, verdict: Verdict | str, by: str, ts: int, model_version: str,
                     fault_type: str = "", reason: str = "", peak: float | None = None,
                     window: tuple[int, int] | None = None, lead_ms: int = DEFAULT_LEAD_MS) -> Label:
    """:func:`make_label` for an alert of the incident engine."""
    return make_label(alert=alert.id, incident=alert.incident, tenant=alert.tenant, asset=alert.asset,
                      device=alert.device, rule=alert.rule, verdict=verdict, by=by, ts=ts,
                      model_version=model_version, first_seen=alert.first_seen, last_seen=alert.last_seen,
                      cleared_at=alert.cleared_at, fault_type=fault_type, reason=reason, window=window,
                      lead_ms=lead_ms, peak=peak)


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidFeedback(name, f"must be an integer >= 0, not {value!r}")


def _ident(name: str, value: str) -> None:
    if not value:
        raise InvalidFeedback(name, "is required")
    if not _ID.match(value):
        raise InvalidFeedback(name, f"{value[:80]!r} is not a valid id (1-64 of a-z, 0-9, '_', '.', '-')")


def _text(name: str, value: str, limit: int, *, required: bool, multiline: bool) -> str:
    text = value.strip()
    if required and not text:
        raise InvalidFeedback(name, "is required" + (" for a false alarm: say why it was not a fault"
                                                     if name == "reason" else ""))
    if len(text) > limit:
        raise InvalidFeedback(name, f"is {len(text)} characters long; at most {limit}")
    if _CONTROL.search(text) or (not multiline and ("\n" in text or "\t" in text)):
        raise InvalidFeedback(name, "must not contain control characters" + ("" if multiline else " or line breaks"))
    return text


# ---- exports ------------------------------------------------------------------------------------------------


def _row(label: Label) -> dict[str, Any]:
    row = msgspec.structs.asdict(label)
    row["verdict"] = label.verdict.value
    return row


def labels_to_csv(labels: Iterable[Label], target: str | Path | TextIO) -> int:
    """Write ``labels`` as CSV (header row, :data:`LABEL_COLUMNS`; empty cells for nulls; floats exact) to a
    path (UTF-8) or an open text stream (opened with ``newline=""``). Returns the number of rows."""
    if isinstance(target, str | Path):
        with Path(target).open("w", encoding="utf-8", newline="") as f:
            return labels_to_csv(labels, f)
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    n = 0
    for label in labels:
        writer.writerow([_csv_cell(v) for v in _row(label).values()])
        n += 1
    return n


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "'")  # "'" too, so that reading back is unambiguous


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for null, floats exact, and text a spreadsheet would run as a formula neutralised."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def read_labels_csv(source: str | Path | TextIO) -> list[Label]:
    """Read labels back from :func:`labels_to_csv`'s output; refuses a file with other columns."""
    if isinstance(source, str | Path):
        with Path(source).open(encoding="utf-8", newline="") as f:
            return read_labels_csv(f)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None or tuple(header) != LABEL_COLUMNS:
        raise ConfigError(f"not a label export: the columns must be {', '.join(LABEL_COLUMNS)}")
    out = []
    for line, cells in enumerate(reader, start=2):
        if len(cells) != len(LABEL_COLUMNS):
            raise ConfigError(f"label export, line {line}: {len(cells)} cells, expected {len(LABEL_COLUMNS)}")
        row: dict[str, Any] = {}
        for name, cell in zip(LABEL_COLUMNS, cells, strict=True):
            if name in _NULLABLE and cell == "":
                row[name] = None
            elif name in _INT_COLUMNS:
                row[name] = int(cell)
            elif name == "peak":
                row[name] = float(cell)
            else:
                row[name] = cell.removeprefix("'") if cell.startswith(_FORMULA_START) else cell
        out.append(_from_row(row, f"label export, line {line}"))
    return out


def _from_row(row: dict[str, Any], where: str) -> Label:
    try:
        return msgspec.convert(row, Label)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _arrow_schema() -> Any:
    import pyarrow as pa

    types = {"peak": pa.float64()}
    fields = [pa.field(name, types.get(name, pa.int64() if name in _INT_COLUMNS else pa.string()),
                       nullable=name in _NULLABLE) for name in LABEL_COLUMNS]
    return pa.schema(fields, metadata={"edgeloop.labels.schema": str(LABEL_SCHEMA_VERSION)})


def labels_to_parquet(labels: Iterable[Label], path: str | Path) -> int:
    """Write ``labels`` as a Parquet file with :data:`LABEL_COLUMNS` (typed, see the module docstring).
    Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row(label) for label in labels]
    table = pa.Table.from_pylist(rows, schema=_arrow_schema())
    pq.write_table(table, str(path))
    return len(rows)


def read_labels_parquet(path: str | Path) -> list[Label]:
    """Read labels back from :func:`labels_to_parquet`'s output; refuses a file with other columns."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    if tuple(table.column_names) != LABEL_COLUMNS:
        raise ConfigError(f"{path}: not a label export: the columns must be {', '.join(LABEL_COLUMNS)}")
    return [_from_row(row, str(path)) for row in table.to_pylist()]


# ---- tuning -------------------------------------------------------------------------------------------------


class TuneAction(enum.StrEnum):
    APPLIED = "applied"  # mode auto: the level moved
    PROPOSED = "proposed"  # mode propose: a proposal waits for an operator
    HELD = "held"  # a decision was due, but nothing may move (at the bound, or a confirmed fault forbids it)
    APPROVED = "approved"  # an operator approved a proposal: the level moved
    REJECTED = "rejected"  # an operator rejected a proposal


@dataclass(frozen=True, slots=True)
class LevelChange:
    """A rule's levels on one asset, before and after (``*_clear`` None: the clear level is the raise level)."""

    asset: str
    rule: str
    sign: float  # +1: the rule raises above its level; -1: below
    old: float
    new: float
    old_clear: float | None
    new_clear: float | None

    def override(self) -> dict[str, float]:
        """The keyword arguments of ``RuleEngine.set_override(asset, rule, **...)`` that apply the change."""
        out = {"above" if self.sign > 0 else "below": self.new}
        if self.new_clear is not None:
            out["clear_below" if self.sign > 0 else "clear_above"] = self.new_clear
        return out


@dataclass(frozen=True, slots=True)
class Proposal:
    """A loosening waiting for an operator: nothing changes until :meth:`Tuner.approve`."""

    id: int
    ts_ms: int
    change: LevelChange
    lower: float | None
    upper: float | None
    triggered_by: tuple[str, ...]
    alerts: tuple[int, ...]
    why: str


@dataclass(frozen=True, slots=True)
class TuningAudit:
    """One tuning decision, for the platform's audit log (:meth:`to_record`).

    ``actor`` is ``feedback:<people>`` (the people whose labels triggered it, sorted) for the tuner's own
    decisions, and the operator for an approval or a rejection. ``old`` is the raise level before; ``new`` the
    level the decision is about: applied, approved, proposed, rejected, or refused (held; equal to ``old`` when
    the level is at its bound). Only ``applied`` and ``approved`` moved it (:attr:`moved`). ``lower`` /
    ``upper`` are the tuning bounds.
    """

    ts_ms: int
    actor: str
    action: TuneAction
    asset: str
    rule: str
    old: float
    new: float
    old_clear: float | None
    new_clear: float | None
    lower: float | None
    upper: float | None
    why: str
    triggered_by: tuple[str, ...] = ()
    alerts: tuple[int, ...] = ()
    proposal: int | None = None

    @property
    def moved(self) -> bool:
        """Whether the level changed."""
        return self.action in (TuneAction.APPLIED, TuneAction.APPROVED)

    @property
    def outcome(self) -> str:
        """``refused`` when a due change was held, else ``ok``."""
        return "refused" if self.action is TuneAction.HELD else "ok"

    def detail(self) -> str:
        """Everything but the record's own columns, as JSON."""
        return msgspec.json.encode({
            "why": self.why, "old": self.old, "new": self.new, "old_clear": self.old_clear,
            "new_clear": self.new_clear, "lower": self.lower, "upper": self.upper,
            "triggered_by": list(self.triggered_by), "alerts": list(self.alerts), "proposal": self.proposal,
        }).decode()

    def to_record(self, *, source: str = "") -> AuditRecord:
        """The platform's audit record: action ``rule.tune.<action>``, target ``<asset>/<rule>``."""
        return AuditRecord(ts_ms=self.ts_ms, actor=self.actor, action=f"rule.tune.{self.action.value}",
                           target=f"{self.asset}/{self.rule}", outcome=self.outcome, detail=self.detail(),
                           source=source)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the tuner decided. ``change`` is set when a level moved (applied or approved): the platform then
    calls ``engine.set_override(change.asset, change.rule, **change.override())`` and stores the override."""

    action: TuneAction
    audit: TuningAudit
    change: LevelChange | None = None
    proposal: Proposal | None = None


@dataclass(slots=True)
class _Track:
    """The tuner's state for one (asset, rule)."""

    level: float
    clear: float | None
    since: int = 0  # the last change: false alarms of alerts that began before it do not count
    false_alarms: dict[int, tuple[int, str]] = field(default_factory=dict)  # alert -> (first_seen, by)
    real: set[int] = field(default_factory=set)  # alerts confirmed or relabelled
    peak: float | None = None  # the least extreme confirmed peak, normalised (sign * value)
    peak_value: float = 0.0  # that peak as reported
    peak_alert: int | None = None
    no_peak_alert: int | None = None  # a confirmed fault without a peak: no loosening at all
    pending: int | None = None  # a proposal waiting


class Tuner:
    """Turns labels into bounded, audited threshold changes per (asset, rule) (see the module docstring).

    ``rules`` are the rule set the engine runs; only level rules with a ``tune`` policy are tuned. Times of the
    tuner's own decisions are the triggering label's ``ts``; approvals and rejections use ``clock``.
    """

    def __init__(self, rules: RuleSet | Sequence[Rule], *, clock: Clock | None = None) -> None:
        given = rules.rules if isinstance(rules, RuleSet) else tuple(rules)
        self.clock: Clock = clock or SystemClock()
        self._rules: dict[str, tuple[Rule, LevelFields, TuningPolicy]] = {}
        for rule in given:
            fields = level_fields(rule)
            tune = getattr(rule, "tune", None)
            if fields is None or not isinstance(tune, TuningPolicy):
                continue
            problem = level_problem(rule)
            if problem is not None:
                raise ConfigError(f"rule {rule.name!r}: {problem[1]}")
            self._rules[rule.name] = (rule, fields, tune)
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._proposals: dict[int, Proposal] = {}
        self._next_id = 1

    # ---- inputs -------------------------------------------------------------------------------------------

    def observe(self, label: Label) -> Decision | None:
        """Take one label into account; returns a decision when one was due, else ``None``."""
        spec = self._rules.get(label.rule)
        if spec is None:
            return None
        _, fields, tune = spec
        track = self._track(label.asset, label.rule)
        if label.verdict is not Verdict.FALSE_ALARM:
            track.real.add(label.alert)
            track.false_alarms.clear()
            if label.peak is None:
                track.no_peak_alert = label.alert if track.no_peak_alert is None else track.no_peak_alert
            elif track.peak is None or fields.sign * label.peak < track.peak:
                track.peak, track.peak_value, track.peak_alert = fields.sign * label.peak, label.peak, label.alert
            return None
        if label.alert in track.real or label.first_seen < track.since:
            return None
        track.false_alarms[label.alert] = (label.first_seen, label.by)
        latest = max(t for t, _ in track.false_alarms.values())
        period_ms = round(tune.period_s * 1000)
        track.false_alarms = {a: e for a, e in track.false_alarms.items() if e[0] > latest - period_ms}
        if len(track.false_alarms) < tune.after_false_alarms or track.pending is not None:
            return None
        alerts = tuple(sorted(track.false_alarms))
        people = tuple(sorted({by for _, by in track.false_alarms.values()}))
        track.false_alarms.clear()
        return self._decide(label.asset, label.rule, track, label.ts, alerts, people)

    def approve(self, proposal: Proposal | int, by: str, *, ts_ms: int | None = None) -> Decision:
        """Carry out a waiting proposal (checked again: bounds, confirmed faults since). Raises
        ``NotFoundError`` for an unknown or already decided proposal and ``ConflictError`` when the level has
        changed since it was made; a proposal a confirmed fault now forbids is closed with a held decision."""
        p = self._take(proposal)
        person = _text("by", by, MAX_TEXT, required=True, multiline=False)
        ts = self.clock.now_ms() if ts_ms is None else ts_ms
        track = self._track(p.change.asset, p.change.rule)
        if track.level != p.change.old or track.clear != p.change.old_clear:
            self._proposals[p.id] = p
            raise ConflictError(f"proposal {p.id}: the level of {p.change.rule!r} on {p.change.asset!r} is "
                                f"{track.level:g} now, not {p.change.old:g} as proposed; reject it")
        track.pending = None
        track.false_alarms.clear()
        blocked = self._forbidden(track, p.change.sign * p.change.new, p.change.new)
        if blocked is not None:
            audit = _audit(ts, person, TuneAction.HELD, p, f"approval refused: {blocked}")
            return Decision(TuneAction.HELD, audit, proposal=p)
        self._apply(track, p.change, ts)
        audit = _audit(ts, person, TuneAction.APPROVED, p, f"approved by {person}: {p.why}")
        return Decision(TuneAction.APPROVED, audit, change=p.change, proposal=p)

    def reject(self, proposal: Proposal | int, by: str, *, reason: str = "", ts_ms: int | None = None) -> Decision:
        """Close a waiting proposal without a change (the false alarms that led to it are used up)."""
        p = self._take(proposal)
        person = _text("by", by, MAX_TEXT, required=True, multiline=False)
        why = _text("reason", reason, MAX_REASON, required=False, multiline=True)
        ts = self.clock.now_ms() if ts_ms is None else ts_ms
        track = self._track(p.change.asset, p.change.rule)
        track.pending = None
        track.false_alarms.clear()
        audit = _audit(ts, person, TuneAction.REJECTED, p, f"rejected by {person}" + (f": {why}" if why else ""))
        return Decision(TuneAction.REJECTED, audit, proposal=p)

    def restore(self, asset: str, rule: str, *, level: float, clear: float | None = None,
                since_ms: int = 0) -> None:
        """Set the current levels of ``rule`` on ``asset`` from a stored override (after a restart), changed at
        ``since_ms``. Replay the stored confirmed and relabel labels too: they never decide, and keep the
        tuner from loosening past known faults (false-alarm counts start afresh, which only delays)."""
        spec = self._rules.get(rule)
        if spec is None:
            raise NotFoundError("tunable rule", rule)
        base, fields, _ = spec
        if not math.isfinite(level) or (clear is not None and not math.isfinite(clear)):
            raise ConfigError(f"restoring {rule!r} on {asset!r}: the levels must be finite numbers")
        changes = {fields.raise_field: float(level)}
        if clear is not None:
            changes[fields.clear_field] = float(clear)
        problem = level_problem(msgspec.structs.replace(base, **changes))
        if problem is not None:
            raise ConfigError(f"restoring {rule!r} on {asset!r}: {problem[1]}")
        track = self._track(asset, rule)
        track.level, track.clear, track.since = float(level), None if clear is None else float(clear), since_ms

    # ---- queries ------------------------------------------------------------------------------------------

    def level(self, asset: str, rule: str) -> tuple[float, float | None]:
        """The raise and clear levels the tuner holds for ``rule`` on ``asset`` (clear None: the raise level)."""
        if rule not in self._rules:
            raise NotFoundError("tunable rule", rule)
        track = self._track(asset, rule)
        return track.level, track.clear

    def pending(self, asset: str | None = None) -> list[Proposal]:
        """The proposals waiting for an operator, oldest first (of one asset, if given)."""
        return [p for p in self._proposals.values() if asset is None or p.change.asset == asset]

    # ---- internals ----------------------------------------------------------------------------------------

    def _track(self, asset: str, rule: str) -> _Track:
        track = self._tracks.get((asset, rule))
        if track is None:
            base, fields, _ = self._rules[rule]
            on, clear = fields.levels(base)
            track = self._tracks[(asset, rule)] = _Track(level=on, clear=clear)
        return track

    def _take(self, proposal: Proposal | int) -> Proposal:
        pid = proposal.id if isinstance(proposal, Proposal) else proposal
        p = self._proposals.pop(pid, None)
        if p is None:
            raise NotFoundError("pending proposal", pid)
        return p

    def _forbidden(self, track: _Track, candidate: float, value: float) -> str | None:
        """Why moving the (normalised) level to ``candidate`` would miss a confirmed fault, or None."""
        if track.no_peak_alert is not None:
            return (f"alert {track.no_peak_alert} was confirmed as a fault on this asset with no peak value, so "
                    f"this rule is not loosened here")
        if track.peak is not None and candidate >= track.peak:
            return (f"moving the level to {value:g} would have missed the fault confirmed on alert "
                    f"{track.peak_alert} (peak {track.peak_value:g})")
        return None

    def _decide(self, asset: str, rule: str, track: _Track, ts: int, alerts: tuple[int, ...],
                people: tuple[str, ...]) -> Decision:
        _, fields, tune = self._rules[rule]
        sign = fields.sign
        bound = tune.max if sign > 0 else tune.min
        assert bound is not None  # the rule config requires the loosening side's bound
        step = tune.max_step if tune.max_step is not None else abs(track.level) * (tune.max_step_pct or 0.0) / 100
        current = sign * track.level
        candidate = min(current + step, sign * bound)
        new = sign * candidate
        delta = new - track.level
        change = LevelChange(asset=asset, rule=rule, sign=sign, old=track.level, new=new, old_clear=track.clear,
                             new_clear=None if track.clear is None else track.clear + delta)
        actor = "feedback:" + ",".join(people)
        count = f"{len(alerts)} false alarms (alerts {', '.join(map(str, alerts))})"
        held: str | None = None
        if candidate <= current:
            held = (f"{count}, but {fields.raise_field} is already at its tuning bound {bound:g}" if step > 0
                    else f"{count}, but the step is 0")
        elif (why := self._forbidden(track, candidate, new)) is not None:
            held = f"{count}, but {why}"
        if held is not None:
            audit = TuningAudit(ts_ms=ts, actor=actor, action=TuneAction.HELD, asset=asset, rule=rule,
                                old=change.old, new=change.new, old_clear=change.old_clear,
                                new_clear=change.new_clear, lower=tune.min, upper=tune.max, why=held,
                                triggered_by=people, alerts=alerts)
            return Decision(TuneAction.HELD, audit)
        why = (f"{count} within {tune.period_s:g} s: {fields.raise_field} {track.level:g} -> {new:g} "
               f"(step at most {step:g}, bound {bound:g})")
        if tune.mode == "auto":
            self._apply(track, change, ts)
            audit = TuningAudit(ts_ms=ts, actor=actor, action=TuneAction.APPLIED, asset=asset, rule=rule,
                                old=change.old, new=change.new, old_clear=change.old_clear,
                                new_clear=change.new_clear, lower=tune.min, upper=tune.max, why=why,
                                triggered_by=people, alerts=alerts)
            return Decision(TuneAction.APPLIED, audit, change=change)
        proposal = Proposal(id=self._next_id, ts_ms=ts, change=change, lower=tune.min, upper=tune.max,
                            triggered_by=people, alerts=alerts, why=why)
        self._next_id += 1
        self._proposals[proposal.id] = proposal
        track.pending = proposal.id
        audit = _audit(ts, actor, TuneAction.PROPOSED, proposal, f"proposed: {why}")
        return Decision(TuneAction.PROPOSED, audit, proposal=proposal)

    @staticmethod
    def _apply(track: _Track, change: LevelChange, ts: int) -> None:
        track.level, track.clear, track.since = change.new, change.new_clear, ts


def _audit(ts: int, actor: str, action: TuneAction, p: Proposal, why: str) -> TuningAudit:
    """The audit record of a decision about proposal ``p``."""
    c = p.change
    return TuningAudit(ts_ms=ts, actor=actor, action=action, asset=c.asset, rule=c.rule, old=c.old, new=c.new,
                       old_clear=c.old_clear, new_clear=c.new_clear, lower=p.lower, upper=p.upper, why=why,
                       triggered_by=p.triggered_by, alerts=p.alerts, proposal=p.id)
