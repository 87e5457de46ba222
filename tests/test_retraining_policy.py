"""The retraining policy (edgeloop.models.retraining): which drift events and labels ask for a training job, with
what devices and data window, and the policy document's validation (errors that name the line)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from edgeloop.errors import ConfigError
from edgeloop.models.drift import DriftEvent
from edgeloop.models.retraining import RetrainingPolicy, TrainingRequest, parse_policies

HOUR = 3_600_000
DAY = 24 * HOUR
NOW = 100 * DAY
DEVICES = ["pump-0001", "pump-0002", "pump-0003"]


def _drift(device: str, since_ms: int, *, kind: str = "input", id: int | None = 1, profile: str = "pump-v1",
           detected_ms: int | None = None) -> DriftEvent:
    return msgspec.convert({
        "device": device, "kind": kind, "since_ms": since_ms,
        "detected_ms": since_ms + 30 * 60_000 if detected_ms is None else detected_ms,
        "channels": {"speed": 3.0}, "figure": 3.0, "threshold": 1.0, "message": "speed drifted",
        "model": "detector.pump-v1@1", "profile": profile, "id": id}, DriftEvent)


@dataclass(frozen=True)
class _Label:
    alert: int
    device: str
    asset: str
    verdict: str
    ts: int


def _labels(n: int, ts: int, device: str = "pump-0001", first_alert: int = 0) -> list[_Label]:
    return [_Label(alert=first_alert + i, device=device, asset="asset-0001", verdict="false_alarm", ts=ts + i)
            for i in range(n)]


def _decide(policy: RetrainingPolicy, events: list[DriftEvent], labels: list[_Label] | None = None,
            open_faults: tuple[str, ...] = (), last_request_ms: int | None = None,
            busy: bool = False) -> list[TrainingRequest]:
    return policy.decide(NOW, events, labels or [], open_faults, devices=DEVICES, last_request_ms=last_request_ms,
                         busy=busy)


def test_a_drift_waits_for_enough_new_normal_then_trains_on_it_alone() -> None:
    policy = RetrainingPolicy(profile="pump-v1", mode="approval", min_post_drift_h=24)
    young = _drift("pump-0002", NOW - 10 * HOUR, id=7)
    assert _decide(policy, [young]) == []  # 10 h of data since the drift: too little yet
    old = _drift("pump-0002", NOW - 30 * HOUR, id=7)
    [req] = _decide(policy, [old, _drift("pump-0003", NOW - 26 * HOUR, id=9)])
    assert req.profile == "pump-v1" and req.devices == DEVICES and req.awaits_approval
    assert (req.window_start_ms, req.window_end_ms) == (NOW - 26 * HOUR, NOW)  # after the latest drift began
    assert req.trigger.kind == "drift" and req.trigger.event_ids == [7, 9]
    assert req.trigger.devices == ["pump-0002", "pump-0003"]
    assert req.trigger.manifest() == {"kind": "drift", "ref": "drift:7,9", "by": "policy"}
    assert "input drift on pump-0002, pump-0003" in req.trigger.reason


def test_automatic_mode_needs_no_approval_and_off_asks_nothing() -> None:
    event = _drift("pump-0001", NOW - 2 * DAY)
    [req] = _decide(RetrainingPolicy(profile="pump-v1", mode="automatic"), [event])
    assert not req.awaits_approval
    assert _decide(RetrainingPolicy(profile="pump-v1", mode="off"), [event]) == []


def test_a_drift_on_a_device_with_an_open_fault_is_the_fault_and_the_device_is_left_out() -> None:
    policy = RetrainingPolicy(profile="pump-v1")
    on_faulty = _drift("pump-0001", NOW - 2 * DAY)
    assert _decide(policy, [on_faulty], open_faults=("pump-0001",)) == []
    [req] = _decide(policy, [on_faulty, _drift("pump-0002", NOW - 2 * DAY, id=2)], open_faults=("pump-0001",))
    assert req.devices == ["pump-0002", "pump-0003"] and req.excluded == ["pump-0001"]
    assert req.trigger.event_ids == [2]
    keep = RetrainingPolicy(profile="pump-v1", exclude_open_faults=False)
    [req] = _decide(keep, [on_faulty], open_faults=("pump-0001",))
    assert req.devices == DEVICES and req.excluded == []
    assert _decide(policy, [], _labels(30, NOW - HOUR), open_faults=tuple(DEVICES)) == []  # nobody left to train


def test_enough_new_labels_train_over_the_window_and_a_relabel_counts_once() -> None:
    policy = RetrainingPolicy(profile="pump-v1", min_new_labels=20, window_days=14)
    labels = _labels(19, NOW - DAY)
    assert _decide(policy, [], labels) == []
    labels += [_Label(alert=3, device="pump-0001", asset="asset-0001", verdict="relabel", ts=NOW - HOUR)]
    assert _decide(policy, [], labels) == []  # the same alert labelled again: still 19
    labels += _labels(1, NOW - HOUR, first_alert=100)
    labels += _labels(5, NOW - HOUR, device="motor-0001", first_alert=200)  # another profile's device
    [req] = _decide(policy, [], labels)
    assert req.trigger.kind == "labels" and req.trigger.labels == 20
    assert (req.window_start_ms, req.window_end_ms) == (NOW - 14 * DAY, NOW)
    assert req.trigger.manifest()["ref"] == "labels:20"
    assert _decide(RetrainingPolicy(profile="pump-v1", min_new_labels=0), [], labels * 10) == []


def test_only_what_came_after_the_last_request_counts_and_the_cooldown_holds() -> None:
    policy = RetrainingPolicy(profile="pump-v1", cooldown_h=24, min_new_labels=5)
    event = _drift("pump-0001", NOW - 3 * DAY)  # detected 3 days ago
    assert _decide(policy, [event], last_request_ms=NOW - 12 * HOUR) == []  # cooldown
    assert _decide(policy, [event], last_request_ms=NOW - 2 * DAY) == []  # already handled by that job
    assert _decide(policy, [], _labels(10, NOW - 3 * DAY), last_request_ms=NOW - 2 * DAY) == []
    [req] = _decide(policy, [], _labels(10, NOW - DAY), last_request_ms=NOW - 2 * DAY)
    assert req.trigger.labels == 10
    assert _decide(policy, [event], busy=True) == []  # a job running or awaiting approval


def test_events_of_other_profiles_and_unwatched_kinds_are_ignored() -> None:
    policy = RetrainingPolicy(profile="pump-v1", drift_kinds=("input",))
    assert _decide(policy, [_drift("pump-0001", NOW - 2 * DAY, profile="motor-v1")]) == []
    assert _decide(policy, [_drift("pump-0001", NOW - 2 * DAY, kind="alert_rate")]) == []
    assert _decide(policy, [_drift("pump-0001", NOW - 2 * DAY, detected_ms=NOW + HOUR)]) == []  # not yet


def test_a_model_behaviour_drift_trains_over_the_window_at_once() -> None:
    policy = RetrainingPolicy(profile="pump-v1", window_days=7)
    [req] = _decide(policy, [_drift("*", NOW - 3 * HOUR, kind="precision", id=4)])
    assert (req.window_start_ms, req.trigger.event_ids) == (NOW - 7 * DAY, [4])
    assert "precision drift on the whole profile" in req.trigger.reason


def test_decisions_are_deterministic() -> None:
    policy = RetrainingPolicy(profile="pump-v1")
    events = [_drift(d, NOW - 2 * DAY - i * HOUR, id=i) for i, d in enumerate(DEVICES)]
    assert _decide(policy, events) == _decide(policy, list(reversed(events)))


# ----------------------------------------------------------------------------------------------- document

GOOD = """\
policies:
  - profile: pump-v1
    mode: automatic
    min_new_labels: 10
  - profile: motor-v1
    drift_kinds: [input, precision]
"""


def test_a_policy_document_parses_with_defaults() -> None:
    doc = parse_policies(GOOD)
    pump, motor = doc.of("pump-v1"), doc.of("motor-v1")
    assert pump is not None and pump.mode == "automatic" and pump.min_new_labels == 10 and pump.cooldown_h == 24
    assert motor is not None and motor.mode == "approval" and motor.drift_kinds == ("input", "precision")
    assert doc.of("fan-v1") is None
    assert parse_policies('{"policies": [{"profile": "pump-v1"}]}').policies[0].window_days == 14
    off = parse_policies("policies:\n  - profile: pump-v1\n    mode: off\n").policies[0]  # YAML 1.1: false
    assert off.mode == "off"


@pytest.mark.parametrize(("text", "expected"), [
    ("policies:\n  - profile: pump-v1\n    mode: sometimes\n",
     "line 3 (policies[0] 'pump-v1', mode): Invalid enum value 'sometimes'"),
    ("policies:\n  - profile: pump-v1\n  - profile: pump-v1\n    mode: off\n",
     "line 3 (policies[1] 'pump-v1'): the profile already has a policy (policies[0])"),
    ("policies:\n  - profile: pump-v1\n    cooldown_h: -1\n", "line 3 (policies[0] 'pump-v1', cooldown_h)"),
    ("policies:\n  - profile: pump-v1\n    colldown_h: 3\n", "line 2 (policies[0] 'pump-v1'): Object contains "
     "unknown field `colldown_h`"),
    ("policies:\n  - profile: pump-v1\n    window_days: 1\n    min_post_drift_h: 48\n",
     "line 4 (policies[0] 'pump-v1', min_post_drift_h): 48 h of data after a drift cannot fit"),
    ("policies:\n  - profile: pump-v1\n    drift_kinds: [input, input]\n", "line 3 (policies[0] 'pump-v1', "
     "drift_kinds): a kind is listed twice"),
    ("policies: [\n", "line 2: not valid YAML/JSON"),
    ("- profile: pump-v1\n", "expected a mapping with a 'policies' list"),
])
def test_a_bad_policy_document_names_the_line_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policies(text, origin="policies.yaml")
    assert str(err.value).startswith("policies.yaml")
    assert expected in str(err.value)
