"""The ingest validator on its own: (topic, payload) -> a TelemetryChunk in profile order, or a coded DeadLetter."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.ingest.bounds import Limits
from edgeloop.ingest.validate import Validator
from edgeloop.messages import SCHEMA_VERSION, TopicKind, topic
from edgeloop.registry import Registry
from edgeloop.store import DeadLetter, TelemetryChunk
from edgeloop.store.base import RAW_DEAD_LETTER_BYTES

NOW = 1_767_225_600_000
LIMITS = Limits()
CHANNELS = ("vib_x", "vib_y", "temp")  # profile order; payloads below deliberately use other orders


def make_registry() -> Registry:
    reg = Registry()
    for tenant, site, line, asset in (("acme", "s1", "l1", "a1"), ("other", "s2", "l2", "a2")):
        reg.tenants[tenant] = Tenant(id=tenant)
        reg.sites[site] = Site(id=site, tenant=tenant)
        reg.lines[line] = Line(id=line, site=site)
        reg.assets[asset] = Asset(id=asset, line=line)
    reg.profiles["pump"] = DeviceProfile(name="pump", channels=[ChannelSpec(name=c) for c in CHANNELS])
    reg.devices["d1"] = Device(id="d1", tenant="acme", asset="a1", profile="pump")
    reg.devices["d2"] = Device(id="d2", tenant="acme", asset="a1", profile="pump")
    reg.devices["x1"] = Device(id="x1", tenant="other", asset="a2", profile="pump")
    return reg


@pytest.fixture
def validator() -> Validator:
    return Validator(registry=make_registry(), limits=LIMITS)


def tel_topic(device: str = "d1", tenant: str = "acme") -> str:
    return topic(tenant, device, TopicKind.TELEMETRY)


def payload(device: str = "d1", seq: int = 1, samples: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"device": device, "seq": seq,
                           "samples": samples if samples is not None else [{"ts": NOW, "values": {"temp": 40.0}}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def rejected(result: TelemetryChunk | DeadLetter) -> DeadLetter:
    assert isinstance(result, DeadLetter), f"expected a dead letter, got a chunk: {result}"
    assert result.code
    assert result.detail
    return result


def accepted(result: TelemetryChunk | DeadLetter) -> TelemetryChunk:
    assert isinstance(result, TelemetryChunk), f"expected a chunk, got {result}"
    return result


# -- accepted messages ------------------------------------------------------------------------------


def test_good_message_becomes_chunk_in_profile_order_sorted_with_nan_for_missing(validator: Validator) -> None:
    samples = [  # out of time order; channels in a non-profile order; one null, some missing
        {"ts": NOW - 1000, "values": {"temp": 41.5, "vib_x": 1.5}},
        {"ts": NOW - 3000, "values": {"vib_y": 2.25, "temp": None, "vib_x": 0.5}},
        {"ts": NOW - 2000, "values": {"vib_y": -3.0}},
    ]
    chunk = accepted(validator.check(tel_topic(), payload(seq=42, samples=samples), NOW))

    assert chunk.device == "d1"
    assert chunk.seq == 42
    assert chunk.tenant == "acme"
    assert chunk.asset == "a1"
    assert chunk.received_ms == NOW
    assert chunk.channels == CHANNELS
    assert chunk.ts.tolist() == [NOW - 3000, NOW - 2000, NOW - 1000]
    assert chunk.ts.dtype == np.int64
    assert chunk.values.shape == (3, 3)
    expected = np.array([
        [0.5, 2.25, np.nan],  # temp was null: missing, never zero
        [np.nan, -3.0, np.nan],  # only vib_y reported
        [1.5, np.nan, 41.5],
    ])
    np.testing.assert_array_equal(chunk.values, expected)


def test_explicit_current_schema_version_is_accepted(validator: Validator) -> None:
    chunk = accepted(validator.check(tel_topic(), payload(v=SCHEMA_VERSION), NOW))
    assert chunk.values[0].tolist()[2] == 40.0


def test_largest_finite_double_is_kept_exactly(validator: Validator) -> None:
    big = 1.7976931348623157e308
    chunk = accepted(validator.check(tel_topic(), payload(samples=[{"ts": NOW, "values": {"vib_x": big}}]), NOW))
    assert chunk.values[0, 0] == big
    assert np.isfinite(chunk.values).sum() == 1


def test_time_window_edges_are_inclusive(validator: Validator) -> None:
    newest = NOW + LIMITS.max_future_ms
    oldest = NOW - LIMITS.max_past_ms
    samples = [{"ts": newest, "values": {"temp": 1.0}}, {"ts": oldest, "values": {"temp": 2.0}}]
    chunk = accepted(validator.check(tel_topic(), payload(samples=samples), NOW))
    assert chunk.ts.tolist() == [oldest, newest]
    assert chunk.values[:, 2].tolist() == [2.0, 1.0]  # values travel with their timestamps when sorting


def test_refresh_picks_up_newly_registered_devices() -> None:
    reg = make_registry()
    v = Validator(registry=reg)
    assert rejected(v.check(tel_topic("d9"), payload("d9"), NOW)).code == "unknown_device"
    reg.devices["d9"] = Device(id="d9", tenant="acme", asset="a1", profile="pump")
    v.refresh(reg)
    assert accepted(v.check(tel_topic("d9"), payload("d9"), NOW)).device == "d9"


# -- rejections, one per code ---------------------------------------------------------------------------


def sample_at(ts: int) -> list[dict[str, Any]]:
    return [{"ts": ts, "values": {"temp": 1.0}}]


REJECTIONS: list[tuple[str, str, bytes, str | None, str | None]] = [
    # (code, topic, payload, dead letter's device, dead letter's tenant)
    ("oversized", tel_topic(), b"x" * (LIMITS.max_payload_bytes + 1), "d1", "acme"),
    ("bad_topic", "edgeloop/v1/acme/d1/status", payload(), None, None),
    ("bad_topic", "edgeloop/v1/acme/d1", payload(), None, None),
    ("bad_topic", "edgeloop/v2/acme/d1/telemetry", payload(), None, None),
    ("bad_topic", "edgeloop/v1/acme/d1/telemetry/extra", payload(), None, None),
    ("not_json", tel_topic(), b'{"device": "d1", "seq": 1,', "d1", "acme"),
    ("not_json", tel_topic(), b"\xff\xfe\x00garbage", "d1", "acme"),
    ("not_json", tel_topic(), b"", "d1", "acme"),
    ("bad_schema", tel_topic(), payload(seq="1"), "d1", "acme"),  # no coercion of "1" to 1
    ("bad_schema", tel_topic(), payload(samples=[]), "d1", "acme"),
    ("bad_schema", tel_topic(), payload(samples=[{"ts": NOW, "values": {}}]), "d1", "acme"),
    ("bad_schema", tel_topic(), payload(samples=[{"ts": -1, "values": {"temp": 1.0}}]), "d1", "acme"),
    ("bad_schema", tel_topic(), payload(samples=[{"ts": NOW, "values": {"temp": "hot"}}]), "d1", "acme"),
    ("bad_schema", tel_topic(), payload(extra_field=True), "d1", "acme"),
    ("bad_schema", tel_topic(), b"[1, 2, 3]", "d1", "acme"),
    ("unsupported_version", tel_topic(), payload(v=2), "d1", "acme"),
    ("unsupported_version", tel_topic(), json.dumps({"v": 2, "device": "d1", "body": {}}).encode(), "d1", "acme"),
    # A letter belongs to the tenant of the device whose topic it came on (the broker authenticated that device),
    # never to a tenant the topic or the payload names; an unregistered sender's only to the platform.
    ("unknown_device", tel_topic("ghost"), payload("ghost"), None, None),
    ("wrong_tenant", tel_topic("x1", tenant="acme"), payload("x1"), "x1", "other"),
    ("topic_mismatch", tel_topic("d1"), payload("d2"), "d1", "acme"),
    ("topic_mismatch", tel_topic("ghost"), payload("d1"), None, None),
    ("topic_mismatch", tel_topic("d1", tenant="other"), payload("x1"), "d1", "acme"),
    ("bad_schema", tel_topic("d1", tenant="other"), b"[1, 2, 3]", "d1", "acme"),
    ("unknown_channel", tel_topic(), payload(samples=[{"ts": NOW, "values": {"temp": 1.0, "pressure": 2.0}}]),
     "d1", "acme"),
    # A name that could never be a channel is refused the same way, naming the channels the profile has.
    ("unknown_channel", tel_topic(), payload(samples=[{"ts": NOW, "values": {"Temp!": 1.0}}]), "d1", "acme"),
    ("bad_schema", tel_topic(), payload(samples=[{"ts": NOW, "values": {"x" * 33: 1.0}}]), "d1", "acme"),
    ("duplicate_timestamp", tel_topic(), payload(samples=[*sample_at(NOW - 5), *sample_at(NOW - 9),
                                                          *sample_at(NOW - 5)]), "d1", "acme"),
    ("ts_future", tel_topic(), payload(samples=sample_at(NOW + LIMITS.max_future_ms + 1)), "d1", "acme"),
    ("ts_past", tel_topic(), payload(samples=sample_at(NOW - LIMITS.max_past_ms - 1)), "d1", "acme"),
]


@pytest.mark.parametrize(("code", "topic_name", "raw", "device", "tenant"), REJECTIONS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REJECTIONS)])
def test_each_rejection_code(validator: Validator, code: str, topic_name: str, raw: bytes, device: str | None,
                             tenant: str | None) -> None:
    letter = rejected(validator.check(topic_name, raw, NOW))
    assert (letter.code, letter.device, letter.tenant) == (code, device, tenant), letter.detail
    assert letter.received_ms == NOW
    assert letter.topic == topic_name
    assert letter.size == len(raw)
    assert letter.raw == raw[:RAW_DEAD_LETTER_BYTES]


def test_rejection_details_name_the_problem(validator: Validator) -> None:
    unknown = rejected(validator.check(tel_topic(), payload(samples=[{"ts": NOW, "values": {"rpm": 1.0}}]), NOW))
    assert "'rpm'" in unknown.detail
    assert all(c in unknown.detail for c in CHANNELS)  # tells the device what it may send
    version = rejected(validator.check(tel_topic(), payload(v=7), NOW))
    assert "v7" in version.detail
    big = rejected(validator.check(tel_topic(), b" " * (LIMITS.max_payload_bytes + 10), NOW))
    assert str(LIMITS.max_payload_bytes + 10) in big.detail
    assert str(LIMITS.max_payload_bytes) in big.detail
    future = rejected(validator.check(tel_topic(), payload(samples=sample_at(NOW + 3_600_000)), NOW))
    assert "3600 s ahead" in future.detail


def test_configured_limits_are_honoured() -> None:
    v = Validator(registry=make_registry(), limits=Limits(max_payload_bytes=100, max_future_ms=0, max_past_ms=1000))
    assert rejected(v.check(tel_topic(), payload(samples=sample_at(NOW)) + b" " * 100, NOW)).code == "oversized"
    assert rejected(v.check(tel_topic(), payload(samples=sample_at(NOW + 1)), NOW)).code == "ts_future"
    assert rejected(v.check(tel_topic(), payload(samples=sample_at(NOW - 1001)), NOW)).code == "ts_past"
    assert accepted(v.check(tel_topic(), payload(samples=sample_at(NOW - 1000)), NOW)).ts.tolist() == [NOW - 1000]


def test_duplicate_timestamps_are_found_even_when_not_adjacent(validator: Validator) -> None:
    samples = [*sample_at(NOW - 1), *sample_at(NOW - 2), *sample_at(NOW - 3), *sample_at(NOW - 1)]
    assert rejected(validator.check(tel_topic(), payload(samples=samples), NOW)).code == "duplicate_timestamp"


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1" + b"0" * 400])
def test_out_of_range_numbers_are_bad_schema_never_an_infinite_value(validator: Validator, number: bytes) -> None:
    """``non_finite`` is unreachable from JSON: msgspec refuses numbers beyond float64 as a schema error."""
    raw = b'{"device":"d1","seq":1,"samples":[{"ts":%d,"values":{"temp":%s}}]}' % (NOW, number)
    letter = rejected(validator.check(tel_topic(), raw, NOW))
    assert letter.code == "bad_schema"
    assert "out of range" in letter.detail


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"inf"])
def test_non_json_number_literals_are_not_json(validator: Validator, literal: bytes) -> None:
    raw = b'{"device":"d1","seq":1,"samples":[{"ts":%d,"values":{"temp":%s}}]}' % (NOW, literal)
    assert rejected(validator.check(tel_topic(), raw, NOW)).code == "not_json"


def test_deeply_nested_json_is_a_dead_letter_not_an_exception(validator: Validator) -> None:
    """A few KiB of brackets (well under the size limit) must be refused like any other bad payload."""
    depth = 5000
    for raw in (b"[" * depth + b"]" * depth,
                b'{"device":"d1","seq":1,"samples":' + b"[" * depth + b"]" * depth + b"}"):
        letter = rejected(validator.check(tel_topic(), raw, NOW))
        assert letter.code == "bad_schema"
        assert letter.size == len(raw)


# -- raw bytes kept in dead letters --------------------------------------------------------------------


def test_dead_letter_keeps_at_most_4096_raw_bytes_but_reports_full_size(validator: Validator) -> None:
    raw = b'{"device": "' + b"d" * 20_000  # an unterminated string, 20 KB
    letter = rejected(validator.check(tel_topic(), raw, NOW))
    assert letter.code == "not_json"
    assert RAW_DEAD_LETTER_BYTES == 4096
    assert letter.raw == raw[:4096]
    assert len(letter.raw) == 4096
    assert letter.size == len(raw)

    huge = b"z" * (LIMITS.max_payload_bytes * 2)
    letter = rejected(validator.check(tel_topic(), huge, NOW))
    assert (letter.code, letter.size, len(letter.raw)) == ("oversized", len(huge), 4096)


def test_small_dead_letter_keeps_all_bytes(validator: Validator) -> None:
    raw = b"not json at all"
    letter = rejected(validator.check(tel_topic(), raw, NOW))
    assert (letter.raw, letter.size) == (raw, len(raw))


def test_long_topic_and_detail_are_bounded(validator: Validator) -> None:
    long_topic = "edgeloop/v1/acme/" + "d" * 1000 + "/telemetry"
    letter = rejected(validator.check(long_topic, payload(), NOW))
    assert letter.code == "topic_mismatch"
    assert letter.topic == long_topic[:256]
    assert len(letter.detail) <= 500


# -- property: nothing a device sends can make check() raise ------------------------------------------------

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)
json_doc = st.recursive(
    json_leaf,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                               max_size=4)),
    max_leaves=20,
)
channel_value = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.text(
    max_size=3))
telemetry_like = st.fixed_dictionaries(
    {
        "device": st.sampled_from(["d1", "d2", "x1", "ghost", "D1", ""]),
        "seq": st.one_of(st.integers(min_value=-5, max_value=2**64), st.text(max_size=3)),
        "samples": st.lists(
            st.fixed_dictionaries({
                "ts": st.one_of(st.integers(min_value=NOW - 2 * LIMITS.max_past_ms,
                                            max_value=NOW + 2 * LIMITS.max_future_ms),
                                st.integers(min_value=-(2**64), max_value=2**64)),
                "values": st.dictionaries(st.sampled_from([*CHANNELS, "rpm", "Bad-Name", ""]), channel_value,
                                          max_size=5),
            }),
            max_size=6,
        ),
    },
    optional={"v": st.one_of(st.integers(min_value=-1, max_value=3), st.text(max_size=2), st.none()),
              "extra": json_doc},
)
topics = st.one_of(
    st.sampled_from([tel_topic("d1"), tel_topic("d2"), tel_topic("x1"), tel_topic("x1", "other"),
                     tel_topic("ghost"), "edgeloop/v1/acme/d1/status", "", "/", "////"]),
    st.text(max_size=80),
)


def assert_well_formed(result: TelemetryChunk | DeadLetter, raw: bytes) -> None:
    if isinstance(result, DeadLetter):
        assert isinstance(result.code, str)
        assert result.code
        assert isinstance(result.detail, str)
        assert result.detail
        assert result.size == len(raw)
        assert result.raw == raw[:RAW_DEAD_LETTER_BYTES]
        return
    assert isinstance(result, TelemetryChunk)
    assert result.values.shape == (len(result.ts), len(CHANNELS))
    assert result.channels == CHANNELS
    assert np.all(np.diff(result.ts) > 0)
    assert not np.isinf(result.values).any()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic_name=topics, raw=st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(validator: Validator, topic_name: str, raw: bytes) -> None:
    assert_well_formed(validator.check(topic_name, raw, NOW), raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic_name=topics, doc=json_doc)
def test_arbitrary_json_documents_never_raise(validator: Validator, topic_name: str, doc: Any) -> None:
    raw = json.dumps(doc).encode()
    assert_well_formed(validator.check(topic_name, raw, NOW), raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic_name=topics, doc=telemetry_like)
def test_telemetry_shaped_documents_never_raise(validator: Validator, topic_name: str, doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    result = validator.check(topic_name, raw, NOW)
    assert_well_formed(result, raw)
    if isinstance(result, TelemetryChunk):  # an accepted chunk holds exactly the finite numbers that were sent
        for sample in doc["samples"]:
            row = result.values[result.ts.tolist().index(sample["ts"])]
            for j, name in enumerate(CHANNELS):
                value = sample["values"].get(name)
                assert math.isnan(row[j]) if value is None else row[j] == float(value)


def event_payload(device: str = "d1", ts: int = NOW, **extra: Any) -> bytes:
    return json.dumps({"device": device, "ts": ts, "kind": "gap", "severity": "warning", "message": "10 dropped",
                       "data": {"samples": 10}, **extra}).encode()


def test_a_device_event_is_checked_like_telemetry() -> None:
    v = Validator(registry=make_registry(), limits=LIMITS)
    good = v.check_event("edgeloop/v1/acme/d1/event", event_payload(), NOW)
    assert not isinstance(good, DeadLetter)
    assert (good.device, good.tenant, good.kind, good.severity, good.data) == ("d1", "acme", "gap", "warning",
                                                                                {"samples": 10})
    cases = {
        "topic_mismatch": ("edgeloop/v1/acme/d1/event", event_payload(device="d2")),
        "unknown_device": ("edgeloop/v1/acme/ghost/event", event_payload(device="ghost")),
        "bad_topic": ("edgeloop/v1/acme/d1/telemetry", event_payload()),
        "not_json": ("edgeloop/v1/acme/d1/event", b"{nope"),
        "ts_future": ("edgeloop/v1/acme/d1/event", event_payload(ts=NOW + 10 * 86_400_000)),
    }
    for code, (topic_name, raw) in cases.items():
        result = v.check_event(topic_name, raw, NOW)
        assert isinstance(result, DeadLetter) and result.code == code, (code, result)
    assert rejected(v.check_event("edgeloop/v1/acme/d1/event", b'{"device": "d1"}', NOW)).code == "bad_schema"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400))
def test_arbitrary_event_bytes_never_raise(validator: Validator, raw: bytes) -> None:
    result = validator.check_event("edgeloop/v1/acme/d1/event", raw, NOW)
    assert isinstance(result, DeadLetter) or result.device == "d1"


# -- text every store keeps, bounded event data, sane heartbeats (edgeloop.ingest.bounds) ---------------------

EVENT_TOPIC, HEALTH_TOPIC = "edgeloop/v1/acme/d1/event", "edgeloop/v1/acme/d1/health"


def heartbeat_payload(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "gateway": "d1", "ts": NOW, "interval_s": 10.0, "devices": ["d2"], "journal_messages": 0, "journal_bytes": 0,
        "journal_samples": 0, "oldest_unsent_age_s": None, "sync_lag_s": 0.5, "dropped_samples": 0,
        "accepted_samples": 1, "uplink_connected": 1, "uplink_links": 1, "bytes_sent": 1, "bytes_raw": 1,
        "cpu_percent": 1.0, "rss_bytes": 1, "sources": {"plc": {"kind": "modbus", "state": "ok"}},
        "config_version": 1}
    doc.update(changes)
    return json.dumps(doc).encode()


def event_code(validator: Validator, raw: bytes) -> str | None:
    result = validator.check_event(EVENT_TOPIC, raw, NOW)
    return result.code if isinstance(result, DeadLetter) else None


def heartbeat_code(validator: Validator, raw: bytes) -> str | None:
    result = validator.check_heartbeat(HEALTH_TOPIC, raw, NOW)
    return result.code if isinstance(result, DeadLetter) else None


@pytest.mark.parametrize("field", ["kind", "message", "data key", "data value"])
def test_a_nul_character_in_any_string_of_an_event_is_bad_text_naming_the_field(validator: Validator,
                                                                                 field: str) -> None:
    doc: dict[str, Any] = {"kind": "gap", "message": "m", "data": {"k": "v"}}
    if field in ("kind", "message"):
        doc[field] = "a\x00b"
    else:
        doc["data"] = {"k\x00": "v"} if field == "data key" else {"k": "v\x00"}
    result = rejected(validator.check_event(EVENT_TOPIC, event_payload(**doc), NOW))
    assert result.code == "bad_text"
    assert "NUL" in result.detail and field.split(maxsplit=1)[0] in result.detail
    assert "\x00" not in result.detail, "the detail itself is storable"


def test_invalid_utf8_inside_a_string_is_not_utf8_never_an_exception(validator: Validator) -> None:
    raw = event_payload(message="@@").replace(b"@@", b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
    assert event_code(validator, raw) == "not_utf8"
    assert rejected(validator.check(tel_topic(), payload().replace(b"temp", b"te\xffp"), NOW)).code == "not_utf8"
    assert heartbeat_code(validator, heartbeat_payload(agent_version="@@").replace(b"@@", b"\xc0\x80")) == "not_utf8"


def test_event_data_limits_are_inclusive(validator: Validator) -> None:
    lim = LIMITS
    assert event_code(validator, event_payload(data={f"k{i}": i for i in range(lim.max_event_data_keys)})) is None
    assert event_code(validator, event_payload(data={f"k{i}": i for i in range(lim.max_event_data_keys + 1)})) \
        == "oversized"
    assert event_code(validator, event_payload(data={"k" * lim.max_event_key_chars: 1})) is None
    assert event_code(validator, event_payload(data={"k" * (lim.max_event_key_chars + 1): 1})) == "oversized"
    overhead = len(json.dumps({"t": ""}, separators=(",", ":")))
    at_limit = {"t": "x" * (lim.max_event_data_bytes - overhead)}
    assert event_code(validator, event_payload(data=at_limit)) is None
    assert event_code(validator, event_payload(data={"t": at_limit["t"] + "x"})) == "oversized"
    nested = event_payload(data={"a": {"b": 1}})
    assert event_code(validator, nested) == "bad_schema", "data is flat (depth 1) by schema"


@pytest.mark.parametrize(("changes", "code"), [
    ({"cpu_percent": 100.0 * LIMITS.max_cores}, None),
    ({"cpu_percent": 100.0 * LIMITS.max_cores + 0.5}, "out_of_range"),
    ({"cpu_percent": -0.1}, "out_of_range"),
    ({"rss_bytes": LIMITS.max_rss_bytes}, None),
    ({"rss_bytes": LIMITS.max_rss_bytes + 1}, "out_of_range"),
    ({"journal_bytes": 2**53}, None),
    ({"journal_bytes": 2**53 + 1}, "out_of_range"),
    ({"uplink_links": -1}, "out_of_range"),
    ({"config_pushed": -5}, "out_of_range"),
    ({"sources": {"plc": {"kind": "modbus", "state": "failing", "failures": -1}}}, "out_of_range"),
    ({"oldest_unsent_age_s": 3600.0, "sync_lag_s": 0.0}, None),
    ({"oldest_unsent_age_s": 11 * 365 * 86_400.0}, "out_of_range"),
    ({"devices": [f"d{i}" for i in range(LIMITS.max_heartbeat_devices + 1)]}, "oversized"),
    ({"agent_version": "v" * 65}, "oversized"),
    ({"sources": {"plc": {"kind": "modbus", "state": "failing", "error": "e" * 1001}}}, "oversized"),
    ({"config_message": "bad\x00"}, "bad_text"),
])
def test_heartbeat_bounds(validator: Validator, changes: dict[str, Any], code: str | None) -> None:
    assert heartbeat_code(validator, heartbeat_payload(**changes)) == code


def test_non_finite_numbers_are_refused_even_past_the_decoder() -> None:
    """JSON has no NaN and the decoder refuses 1e999, but the bounds do not rely on it."""
    from edgeloop.ingest.bounds import event_problem, heartbeat_problem
    from edgeloop.messages import DeviceEvent, Heartbeat

    event = DeviceEvent(device="d1", ts=NOW, kind="k", data={"x": math.inf})
    assert event_problem(event, LIMITS) == ("non_finite", "data['x'] is inf")
    beat = msgspec.json.decode(heartbeat_payload(v=SCHEMA_VERSION), type=Heartbeat)
    problem = heartbeat_problem(msgspec.structs.replace(beat, cpu_percent=math.nan), LIMITS)
    assert problem is not None and problem[0] == "non_finite"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.text(min_size=1, max_size=64), message=st.text(max_size=50),
       data=st.dictionaries(st.text(max_size=70), st.text(max_size=50) | st.integers(-10, 10), max_size=70))
def test_an_accepted_event_holds_only_storable_bounded_text(validator: Validator, kind: str, message: str,
                                                            data: dict[str, Any]) -> None:
    from edgeloop.safe_text import text_problem

    result = validator.check_event(EVENT_TOPIC, event_payload(kind=kind, message=message, data=data), NOW)
    if isinstance(result, DeadLetter):
        assert result.code in {"bad_text", "oversized", "bad_schema"}, result
        assert text_problem(result.detail) is None
        return
    for text in (result.kind, result.message, *result.data, *(v for v in result.data.values() if isinstance(v, str))):
        assert text_problem(text) is None
    assert len(result.data) <= LIMITS.max_event_data_keys
