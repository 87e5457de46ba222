"""Alert rules as data: msgspec structs parsed from YAML or JSON text, with errors that name the line.

Example (``kind`` picks the rule type; every rule has a unique ``name``)::

    rules:
      - {name: bearing-hot, kind: threshold, channel: bearing_temp, above: 85, clear_below: 80, for_s: 5,
         severity: critical}
      - {name: pressure-drop, kind: rate, channel: pressure, below_per_s: -0.5, for_s: 10}
      - {name: silent, kind: missing, after_s: 60}
      - {name: anomaly, kind: score, source: anomaly, above: 1.0}
      - {name: rul-low, kind: rul, below_cycles: 30}
      - {name: hot-and-loud, kind: all, of: [bearing-hot, vib-high], for_s: 30}   # AND, one asset
      - {name: any-leak, kind: any, of: [pressure-drop, flow-drop]}              # OR

Common to every rule: ``severity`` (info | warning | critical, default warning); the scope ``assets`` and
``profiles`` (both empty: every asset; otherwise an asset listed in ``assets``, or whose devices use one of
``profiles``); ``emit`` (false: the rule only feeds composites and signals nothing itself); ``message``.

Hysteresis is part of the rule: a threshold ``above: 85, clear_below: 80`` raises when the value goes above
85 and clears only when it goes below 80 (``clear_below`` defaults to ``above``, and must not exceed it; the
mirror image for ``below`` / ``clear_above``). ``for_s`` is how long the condition must hold, continuously,
before the rule raises; it clears as soon as the condition ends.

Threshold, rate, score and RUL rules may declare how technician feedback may tune them (``tune``, a
:class:`TuningPolicy`; the tuner is :mod:`edgeloop.alerts.feedback`)::

      - {name: bearing-hot, kind: threshold, channel: bearing_temp, above: 85, clear_below: 80,
         tune: {mode: propose, after_false_alarms: 3, period_s: 604800, max_step: 2, max: 95}}

Only the loosening side needs a bound (``max`` for a rule that raises above a level, ``min`` for one that
raises below); the configured level, and any per-asset override of it, must lie within ``min`` .. ``max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from edgeloop.errors import ConfigError
from edgeloop.messages import ChannelName, Id
from edgeloop.yaml_lines import convert, item_label, load_yaml, read_text, where

__all__ = [
    "AllRule",
    "AnyRule",
    "LevelFields",
    "MissingRule",
    "RateRule",
    "RulRule",
    "Rule",
    "RuleSet",
    "ScoreRule",
    "ThresholdRule",
    "TuningPolicy",
    "level_fields",
    "level_problem",
    "load_rules",
    "parse_rules",
    "rules_from_obj",
]

Seconds = Annotated[float, msgspec.Meta(ge=0, le=30 * 86_400)]
Severity = Literal["info", "warning", "critical"]


class TuningPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How technician feedback may move a rule's level on one asset (the rule field ``tune``).

    After ``after_false_alarms`` false alarms of the rule on one asset whose alerts started within ``period_s``
    of each other, the level is loosened by at most one step (``max_step`` in the rule's unit, or
    ``max_step_pct`` percent of the current level), never past ``max`` (rules raising above a level) or
    ``min`` (rules raising below one). ``mode: auto`` applies the step at once; ``mode: propose`` (the default)
    only proposes it, for an operator to approve.
    """

    mode: Literal["auto", "propose"] = "propose"
    after_false_alarms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    period_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)] = 7 * 86_400.0
    max_step: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_step_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    min: float | None = None
    max: float | None = None


class _RuleBase(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What every rule has: a unique name, a severity and a scope."""

    name: Id
    severity: Severity = "warning"
    assets: tuple[Id, ...] = ()
    profiles: tuple[Id, ...] = ()
    emit: bool = True
    message: str = ""

    @property
    def kind(self) -> str:
        """The rule's ``kind`` tag (``threshold``, ``rate``, ...)."""
        return str(self.__struct_config__.tag)

    def applies(self, asset: str, profiles: frozenset[str]) -> bool:
        """Whether the rule's scope covers ``asset`` (whose devices use ``profiles``)."""
        if not self.assets and not self.profiles:
            return True
        return asset in self.assets or bool(profiles.intersection(self.profiles))


class ThresholdRule(_RuleBase, tag="threshold", tag_field="kind", frozen=True):
    """``channel`` above ``above`` (or below ``below``) for ``for_s``; clears past ``clear_below`` / ``clear_above``."""

    channel: ChannelName
    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    for_s: Seconds = 0.0
    tune: TuningPolicy | None = None


class RateRule(_RuleBase, tag="rate", tag_field="kind", frozen=True):
    """``channel``'s change per second between consecutive valid samples above ``above_per_s`` (or below
    ``below_per_s``, e.g. -0.5 for a drop) for ``for_s``; hysteresis as for thresholds."""

    channel: ChannelName
    above_per_s: float | None = None
    below_per_s: float | None = None
    clear_below_per_s: float | None = None
    clear_above_per_s: float | None = None
    for_s: Seconds = 0.0
    tune: TuningPolicy | None = None


class MissingRule(_RuleBase, tag="missing", tag_field="kind", frozen=True):
    """No data from the asset (or no valid value of ``channel``) for ``after_s``; data arriving clears."""

    after_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)]
    channel: ChannelName | None = None


class ScoreRule(_RuleBase, tag="score", tag_field="kind", frozen=True):
    """A detector's score from ``source`` (e.g. the finding kind ``anomaly``; 1.0 = its threshold) above
    ``above`` for ``for_s``. Detectors that report only findings never send a low score: ``hold_s`` clears the
    rule when no score at or above ``clear_below`` has arrived for that long."""

    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "anomaly"
    above: float = 1.0
    clear_below: float | None = None
    for_s: Seconds = 0.0
    hold_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] | None = None
    tune: TuningPolicy | None = None


class RulRule(_RuleBase, tag="rul", tag_field="kind", frozen=True):
    """The remaining useful life below ``below_cycles`` (``basis``: the interval's ``lower`` bound when the
    model gives one, else the ``point`` estimate); clears above ``clear_above`` (default ``below_cycles``)."""

    below_cycles: Annotated[float, msgspec.Meta(gt=0)]
    clear_above: float | None = None
    basis: Literal["point", "lower"] = "lower"
    tune: TuningPolicy | None = None


class AllRule(_RuleBase, tag="all", tag_field="kind", frozen=True):
    """Every rule in ``of`` raised on the same asset (AND), for ``for_s``."""

    of: Annotated[tuple[Id, ...], msgspec.Meta(min_length=1, max_length=64)]
    for_s: Seconds = 0.0


class AnyRule(_RuleBase, tag="any", tag_field="kind", frozen=True):
    """At least one rule in ``of`` raised on the asset (OR), for ``for_s``."""

    of: Annotated[tuple[Id, ...], msgspec.Meta(min_length=1, max_length=64)]
    for_s: Seconds = 0.0


Rule = ThresholdRule | RateRule | MissingRule | ScoreRule | RulRule | AllRule | AnyRule


class RuleSet(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A validated set of rules (the document's top level)."""

    rules: tuple[Rule, ...] = ()
    version: Annotated[int, msgspec.Meta(ge=1)] = 1

    def by_name(self) -> dict[str, Rule]:
        """Rules by name."""
        return {r.name: r for r in self.rules}


@dataclass(frozen=True, slots=True)
class LevelFields:
    """Where a level rule keeps its levels: the names of its raise and clear fields, and its direction
    (``sign`` +1: raises above the level; -1: raises below it)."""

    raise_field: str
    clear_field: str
    sign: float

    def levels(self, rule: Rule) -> tuple[float, float | None]:
        """The rule's raise level and its clear level (``None``: the raise level)."""
        on = getattr(rule, self.raise_field)
        clear = getattr(rule, self.clear_field)
        assert isinstance(on, float | int)
        return float(on), None if clear is None else float(clear)


def level_fields(rule: Rule) -> LevelFields | None:
    """The level fields of a threshold, rate, score or RUL rule; ``None`` for the other kinds."""
    if isinstance(rule, ThresholdRule):
        return (LevelFields("above", "clear_below", 1.0) if rule.above is not None
                else LevelFields("below", "clear_above", -1.0))
    if isinstance(rule, RateRule):
        return (LevelFields("above_per_s", "clear_below_per_s", 1.0) if rule.above_per_s is not None
                else LevelFields("below_per_s", "clear_above_per_s", -1.0))
    if isinstance(rule, ScoreRule):
        return LevelFields("above", "clear_below", 1.0)
    if isinstance(rule, RulRule):
        return LevelFields("below_cycles", "clear_above", -1.0)
    return None


def level_problem(rule: Rule) -> tuple[str, str] | None:
    """What is wrong with a level rule's levels (hysteresis, tuning bounds) as ``(field, text)``, or ``None``:
    the checks a rule document gets, for a rule changed in code (e.g. a per-asset override)."""
    return _problem(rule, {})


def parse_rules(text: str, *, origin: str = "rules") -> RuleSet:
    """Parse YAML or JSON text into a :class:`RuleSet`; raises ``ConfigError`` naming the line, the rule and the
    problem (JSON is read by the YAML parser, so its errors name lines too)."""
    doc, node = load_yaml(text, origin)
    return rules_from_obj(doc, origin=origin, node=node)


def load_rules(path: Path) -> RuleSet:
    """Read and parse a rules file."""
    return parse_rules(read_text(path, "rules file"), origin=str(path))


def rules_from_obj(doc: Any, *, origin: str = "rules", node: Any = None) -> RuleSet:
    """Validate an already-decoded document (e.g. an API request body); ``node`` (the composed YAML) adds lines."""
    if not isinstance(doc, dict) or "rules" not in doc:
        raise ConfigError(f"{origin}: expected a mapping with a 'rules' list")

    ruleset = convert(doc, RuleSet, origin=origin, node=node, label=item_label(doc, "rules", "name"))
    _check(ruleset, where(origin, node))
    return ruleset


def _check(ruleset: RuleSet, where: Any) -> None:
    """Semantic checks msgspec cannot express: unique names, sane hysteresis, composites without cycles."""
    seen: dict[str, int] = {}
    for i, rule in enumerate(ruleset.rules):
        if rule.name in seen:
            raise ConfigError(f"{where(f'$.rules[{i}].name')} (rules[{i}] {rule.name!r}): the name is already "
                              f"used by rules[{seen[rule.name]}]; rule names must be unique")
        seen[rule.name] = i
    for i, rule in enumerate(ruleset.rules):
        problem = _problem(rule, seen)
        if problem is not None:
            field, text = problem
            path = f"$.rules[{i}].{field}" if field else f"$.rules[{i}]"
            raise ConfigError(f"{where(path)} (rules[{i}] {rule.name!r}): {text}")
    rules = ruleset.by_name()
    state: dict[str, int] = {}  # 1: on the path being explored, 2: done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name):], name]
            i = seen[name]
            raise ConfigError(f"{where(f'$.rules[{i}].of')} (rules[{i}] {name!r}): composites form a cycle: "
                              f"{' -> '.join(cycle)}")
        state[name] = 1
        rule = rules[name]
        if isinstance(rule, AllRule | AnyRule):
            for member in rule.of:
                visit(member, [*trail, name])
        state[name] = 2

    for rule in ruleset.rules:
        visit(rule.name, [])


def _problem(rule: Rule, names: dict[str, int]) -> tuple[str, str] | None:
    problem = _levels_problem(rule, names)
    if problem is None and isinstance(rule, ThresholdRule | RateRule | ScoreRule | RulRule):
        problem = _tune_problem(rule)
    return problem


def _levels_problem(rule: Rule, names: dict[str, int]) -> tuple[str, str] | None:
    if isinstance(rule, ThresholdRule):
        return _hysteresis(rule.above, rule.below, rule.clear_below, rule.clear_above, "")
    if isinstance(rule, RateRule):
        return _hysteresis(rule.above_per_s, rule.below_per_s, rule.clear_below_per_s, rule.clear_above_per_s,
                           "_per_s")
    if isinstance(rule, ScoreRule) and rule.clear_below is not None and rule.clear_below > rule.above:
        return "clear_below", f"clear_below ({rule.clear_below:g}) must be <= above ({rule.above:g})"
    if isinstance(rule, RulRule) and rule.clear_above is not None and rule.clear_above < rule.below_cycles:
        return "clear_above", (f"clear_above ({rule.clear_above:g}) must be >= below_cycles "
                               f"({rule.below_cycles:g})")
    if isinstance(rule, AllRule | AnyRule):
        for member in rule.of:
            if member not in names:
                return "of", f"refers to {member!r}, which is not a defined rule"
        if len(set(rule.of)) != len(rule.of):
            return "of", "lists a rule twice"
        if rule.name in rule.of:
            return "of", "refers to itself"
    return None


def _hysteresis(above: float | None, below: float | None, clear_below: float | None, clear_above: float | None,
                suffix: str) -> tuple[str, str] | None:
    a, b, cb, ca = (f"above{suffix}", f"below{suffix}", f"clear_below{suffix}", f"clear_above{suffix}")
    if (above is None) == (below is None):
        return "", f"give exactly one of '{a}' or '{b}'"
    if above is not None:
        if clear_above is not None:
            return ca, f"'{ca}' goes with '{b}'; with '{a}' use '{cb}'"
        if clear_below is not None and clear_below > above:
            return cb, f"{cb} ({clear_below:g}) must be <= {a} ({above:g}), or the alert would chatter"
    if below is not None:
        if clear_below is not None:
            return cb, f"'{cb}' goes with '{a}'; with '{b}' use '{ca}'"
        if clear_above is not None and clear_above < below:
            return ca, f"{ca} ({clear_above:g}) must be >= {b} ({below:g}), or the alert would chatter"
    return None


def _tune_problem(rule: ThresholdRule | RateRule | ScoreRule | RulRule) -> tuple[str, str] | None:
    tune = rule.tune
    fields = level_fields(rule)
    if tune is None or fields is None:
        return None
    if (tune.max_step is None) == (tune.max_step_pct is None):
        return "tune", "give exactly one of 'max_step' (in the rule's unit) or 'max_step_pct' (percent)"
    for name, value in (("max_step", tune.max_step), ("min", tune.min), ("max", tune.max)):
        if value is not None and not math.isfinite(value):
            return "tune", f"tune.{name} must be a finite number"
    side = "max" if fields.sign > 0 else "min"
    if getattr(tune, side) is None:
        way = "above" if fields.sign > 0 else "below"
        return "tune", (f"tune.{side} is required: the rule raises {way} a level, and tuning moves it towards "
                        f"'{side}', never past it")
    if tune.min is not None and tune.max is not None and tune.min > tune.max:
        return "tune", f"tune.min ({tune.min:g}) must be <= tune.max ({tune.max:g})"
    level, _ = fields.levels(rule)
    if (tune.min is not None and level < tune.min) or (tune.max is not None and level > tune.max):
        lo = "-inf" if tune.min is None else f"{tune.min:g}"
        hi = "inf" if tune.max is None else f"{tune.max:g}"
        return fields.raise_field, f"{fields.raise_field} ({level:g}) is outside the tuning bounds [{lo}, {hi}]"
    return None
