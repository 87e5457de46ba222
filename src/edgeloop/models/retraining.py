"""The retraining policy: when drift events and technician labels make a profile's detector worth training again.
Pure and deterministic (no I/O; time is data): the same inputs give the same requests.

A policy per device profile (a document like the alert rules, YAML or JSON, errors naming the line)::

    policies:
      - profile: pump-v1
        mode: approval          # automatic | approval (an operator approves each job) | off
        drift_kinds: [input, score, alert_rate, precision]
        min_new_labels: 20      # this many new labels (distinct alerts) train on their own; 0: never
        min_post_drift_h: 24    # hours of data after a drift began before training on it
        cooldown_h: 24          # at least this long between two requests of the profile
        window_days: 14         # how far back a labels-triggered job trains
        exclude_open_faults: true

:meth:`RetrainingPolicy.decide` reads what happened since the profile's last training request: drift events
(of the kinds it listens to) and labels. A drift event on a device with an open confirmed fault is the fault, not
a new normal, and triggers nothing (a fault is drift too); such devices are left out of every job while their fault
is open (their data is not normal). When the data itself changed (``input`` or ``score`` drift), the job waits
until every such drift has ``min_post_drift_h`` of data behind it and trains from the latest one's start, so the
candidate learns the new normal only; a job triggered by the model's own behaviour (``alert_rate``,
``precision``) or by labels trains over the last ``window_days`` at once. At most one request per decision.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from edgeloop.errors import ConfigError
from edgeloop.messages import Id
from edgeloop.models.drift import PROFILE_SCOPE, DriftEvent, DriftKind, LabelLike
from edgeloop.yaml_lines import convert, item_label, load_yaml, read_text, where

__all__ = [
    "PolicySet",
    "RetrainingPolicy",
    "TrainingRequest",
    "TrainingTrigger",
    "load_policies",
    "parse_policies",
    "policies_from_obj",
]

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_NEW_NORMAL: frozenset[str] = frozenset({"input", "score"})  # the data changed: train on what came after
Hours = Annotated[float, msgspec.Meta(ge=0, le=366 * 24)]


class TrainingTrigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why a job was requested: ``drift`` (the recorded events' ``event_ids``; ``devices`` that drifted) or
    ``labels`` (``labels`` new labels since the last request). ``reason`` is the human text for the audit log and
    the job's page; :meth:`manifest` is the form the model manifest keeps."""

    kind: Literal["drift", "labels"]
    reason: str
    event_ids: list[int] = []
    devices: list[str] = []
    labels: int = 0

    @property
    def ref(self) -> str:
        """``drift:12,13`` (the events) or ``labels:25`` (how many)."""
        if self.kind == "drift":
            return "drift:" + ",".join(str(i) for i in self.event_ids)
        return f"labels:{self.labels}"

    def manifest(self, *, by: str = "policy") -> dict[str, str]:
        """The manifest's ``trigger``: ``{"kind", "ref", "by"}``."""
        return {"kind": self.kind, "ref": self.ref, "by": by}


class TrainingRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A training job the policy asks for: the profile, the devices to train (sorted; ``excluded`` those left out
    for an open confirmed fault), the data window ``[window_start_ms, window_end_ms)``, why, and whether an
    operator must approve it before it runs."""

    profile: str
    devices: list[str]
    window_start_ms: int
    window_end_ms: int
    trigger: TrainingTrigger
    awaits_approval: bool
    requested_ms: int
    excluded: list[str] = []


class RetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a profile's detector is trained again (see the module docstring for the document and the rules)."""

    profile: Id
    mode: Literal["automatic", "approval", "off"] = "approval"
    drift_kinds: tuple[DriftKind, ...] = ("input", "score", "alert_rate", "precision")
    min_new_labels: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 20
    min_post_drift_h: Hours = 24.0
    cooldown_h: Hours = 24.0
    window_days: Annotated[float, msgspec.Meta(gt=0, le=366)] = 14.0
    exclude_open_faults: bool = True

    def decide(self, now_ms: int, drift_events: Iterable[DriftEvent], labels: Iterable[LabelLike],
               open_faults: Collection[str], *, devices: Sequence[str], last_request_ms: int | None = None,
               busy: bool = False) -> list[TrainingRequest]:
        """The training requests (none or one) of this profile at ``now_ms``.

        ``drift_events``: recorded events (those of other profiles, of kinds not listened to, or detected at or
        before ``last_request_ms`` are ignored); ``labels``: technician labels (only those on ``devices`` and newer
        than ``last_request_ms`` count, one per alert); ``open_faults``: devices with an open confirmed fault;
        ``devices``: the profile's devices; ``last_request_ms``: when the profile's last job was requested (None:
        never); ``busy``: a job of the profile is running or awaiting approval (then nothing new is asked).
        """
        if self.mode == "off" or busy:
            return []
        if last_request_ms is not None and now_ms - last_request_ms < self.cooldown_h * _HOUR_MS:
            return []
        faulty = set(open_faults) if self.exclude_open_faults else set()
        train = sorted(set(devices) - faulty)
        if not train:
            return []
        excluded = sorted(set(devices) & faulty)
        after = -1 if last_request_ms is None else last_request_ms
        profile_devices = set(devices)
        drifts = sorted(
            (e for e in drift_events
             if e.kind in self.drift_kinds and (not e.profile or e.profile == self.profile)
             and after < e.detected_ms <= now_ms and e.device not in faulty
             and (e.device in profile_devices or e.device == "*")),
            key=lambda e: (e.since_ms, e.device, e.kind))
        new_labels = {lb.alert for lb in labels if lb.device in profile_devices and after < lb.ts <= now_ms}
        earliest = now_ms - int(self.window_days * _DAY_MS)
        if drifts:
            shifts = [e.since_ms for e in drifts if e.kind in _NEW_NORMAL]
            start = max(shifts) if shifts else earliest
            if shifts and now_ms - start < self.min_post_drift_h * _HOUR_MS:
                return []  # wait for enough of the new normal (labels wait too: the next job will take them)
            start = max(start, earliest)
            drifted = sorted({e.device for e in drifts})
            names = [d if d != PROFILE_SCOPE else "the whole profile" for d in drifted]
            kinds = sorted({e.kind for e in drifts})
            reason = (f"{', '.join(kinds)} drift on {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}; "
                      f"training on {(now_ms - start) / _HOUR_MS:.3g} h of data")
            if new_labels:
                reason += f"; {len(new_labels)} new labels"
            trigger = TrainingTrigger(kind="drift", reason=reason, devices=drifted, labels=len(new_labels),
                                      event_ids=sorted(e.id for e in drifts if e.id is not None))
        elif self.min_new_labels and len(new_labels) >= self.min_new_labels:
            start = earliest
            trigger = TrainingTrigger(kind="labels", labels=len(new_labels),
                                      reason=f"{len(new_labels)} new labels (at least {self.min_new_labels})")
        else:
            return []
        return [TrainingRequest(profile=self.profile, devices=train, excluded=excluded, window_start_ms=start,
                                window_end_ms=now_ms, trigger=trigger, awaits_approval=self.mode == "approval",
                                requested_ms=now_ms)]


class PolicySet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A validated policy document: at most one policy per profile."""

    policies: tuple[RetrainingPolicy, ...] = ()
    version: Annotated[int, msgspec.Meta(ge=1)] = 1

    def of(self, profile: str) -> RetrainingPolicy | None:
        """The profile's policy (None: the profile has none, so it is never retrained on its own)."""
        return next((p for p in self.policies if p.profile == profile), None)


def parse_policies(text: str, *, origin: str = "retraining policies") -> PolicySet:
    """Parse YAML or JSON text into a :class:`PolicySet`; raises ``ConfigError`` naming the line, the policy and
    the problem."""
    doc, node = load_yaml(text, origin)
    return policies_from_obj(doc, origin=origin, node=node)


def load_policies(path: Path) -> PolicySet:
    """Read and parse a policy file."""
    return parse_policies(read_text(path, "retraining policy file"), origin=str(path))


def policies_from_obj(doc: Any, *, origin: str = "retraining policies", node: Any = None) -> PolicySet:
    """Validate an already-decoded document (e.g. an API request body); ``node`` (the composed YAML) adds lines."""
    if not isinstance(doc, dict) or "policies" not in doc:
        raise ConfigError(f"{origin}: expected a mapping with a 'policies' list")

    items = doc.get("policies")
    if isinstance(items, list):  # YAML 1.1 reads an unquoted ``mode: off`` as false: that is what was meant
        doc = {**doc, "policies": [{**p, "mode": "off"} if isinstance(p, dict) and p.get("mode") is False else p
                                   for p in items]}
    policies = convert(doc, PolicySet, origin=origin, node=node, label=item_label(doc, "policies", "profile"))
    at = where(origin, node)
    seen: dict[str, int] = {}
    for i, p in enumerate(policies.policies):
        if p.profile in seen:
            raise ConfigError(f"{at(f'$.policies[{i}].profile')} (policies[{i}] {p.profile!r}): the profile already "
                              f"has a policy (policies[{seen[p.profile]}])")
        seen[p.profile] = i
        if len(set(p.drift_kinds)) != len(p.drift_kinds):
            raise ConfigError(f"{at(f'$.policies[{i}].drift_kinds')} (policies[{i}] {p.profile!r}, drift_kinds): "
                              "a kind is listed twice")
        if p.min_post_drift_h > p.window_days * 24:
            raise ConfigError(f"{at(f'$.policies[{i}].min_post_drift_h')} (policies[{i}] {p.profile!r}, "
                              f"min_post_drift_h): {p.min_post_drift_h:g} h of data after a drift cannot fit in "
                              f"a window of {p.window_days:g} days")
    return policies
