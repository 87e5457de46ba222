"""What a decoded event or heartbeat may hold, beyond its schema: text every store can keep, and sane sizes.

Pure code, used by the validator. Each check returns ``(code, detail)`` for the dead letter, or None.

* Text (``bad_text``): no string of a message (an event's kind, message, data keys and values; a heartbeat's
  sources, states, errors, versions) may hold a NUL character or a lone surrogate: PostgreSQL refuses the
  first and no store can encode the second (``edgeloop.safe_text``).
* Event ``data`` (``oversized``, ``non_finite``): flat by schema (depth 1: values are strings, numbers,
  booleans or null, never objects or lists), at most ``Limits.max_event_data_keys`` keys of at most
  ``Limits.max_event_key_chars`` characters, at most ``Limits.max_event_data_bytes`` bytes as JSON, numbers
  finite.
* Heartbeats (``out_of_range``, ``non_finite``, ``oversized``): counters and byte counts between 0 and 2^53
  (exact in every JSON reader), the resident memory at most ``Limits.max_rss_bytes``, CPU between 0 and 100 %
  of ``Limits.max_cores`` cores, ages and lags finite, between 0 and ten years; at most
  ``Limits.max_heartbeat_devices`` devices and ``Limits.max_heartbeat_sources`` sources; short texts (names,
  states, versions) at most 64 characters, errors and messages at most 1000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from edgeloop.messages import DeviceEvent, Heartbeat
from edgeloop.safe_text import text_problem


@dataclass(frozen=True, slots=True)
class Limits:
    """What one message may hold; the validator applies them."""

    max_payload_bytes: int = 256 * 1024
    max_future_ms: int = 5 * 60_000  # clock skew allowed ahead of the platform
    max_past_ms: int = 30 * 24 * 3_600_000  # how old buffered data may be when it finally arrives
    max_event_data_bytes: int = 8192  # an event's ``data`` as JSON (a config event's error is up to 1000 chars)
    max_event_data_keys: int = 64
    max_event_key_chars: int = 64
    max_heartbeat_devices: int = 10_000  # devices behind one gateway
    max_heartbeat_sources: int = 256
    max_rss_bytes: int = 2**40  # 1 TiB of resident memory for an edge agent is a broken reading
    max_cores: int = 256  # cpu_percent is of one core: at most 100 x this


Problem = tuple[str, str] | None

MAX_COUNT = 2**53  # counters and byte counts: exact as a double, so in every JSON reader and chart
MAX_AGE_S = 10 * 365 * 86_400.0
SHORT_TEXT = 64
LONG_TEXT = 1000


def texts(named: Iterable[tuple[str, str]]) -> Problem:
    """The first (field, text) whose text no store can keep."""
    for name, value in named:
        why = text_problem(value)
        if why is not None:
            return "bad_text", f"{name} holds {why}: {value[:80]!r}"
    return None


def event_problem(msg: DeviceEvent, limits: Limits) -> Problem:
    found = texts([("kind", msg.kind), ("message", msg.message)])
    if found:
        return found
    data = msg.data
    if len(data) > limits.max_event_data_keys:
        return "oversized", f"data has {len(data)} keys > limit {limits.max_event_data_keys}"
    for key, value in data.items():
        found = texts([("a data key", key)] + ([(f"data[{key[:40]!r}]", value)] if isinstance(value, str) else []))
        if found:
            return found
        if len(key) > limits.max_event_key_chars:
            return "oversized", f"data key {key[:40]!r} is {len(key)} characters > limit {limits.max_event_key_chars}"
        if isinstance(value, float) and not math.isfinite(value):
            return "non_finite", f"data[{key!r}] is {value}"
    size = len(msgspec.json.encode(data))
    if size > limits.max_event_data_bytes:
        return "oversized", f"data is {size} bytes as JSON > limit {limits.max_event_data_bytes}"
    return None


def heartbeat_problem(msg: Heartbeat, limits: Limits) -> Problem:
    if len(msg.devices) > limits.max_heartbeat_devices:
        return "oversized", f"{len(msg.devices)} devices > limit {limits.max_heartbeat_devices}"
    if len(msg.sources) > limits.max_heartbeat_sources:
        return "oversized", f"{len(msg.sources)} sources > limit {limits.max_heartbeat_sources}"
    short = [("config_status", msg.config_status), ("agent_version", msg.agent_version)]
    long = [("config_message", msg.config_message)]
    for name, src in msg.sources.items():
        short += [("a source name", name), (f"sources[{name[:40]!r}].kind", src.kind),
                  (f"sources[{name[:40]!r}].state", src.state)]
        long.append((f"sources[{name[:40]!r}].error", src.error))
    found = texts(short + long)
    if found:
        return found
    for fields, limit in ((short, SHORT_TEXT), (long, LONG_TEXT)):
        for name, value in fields:
            if len(value) > limit:
                return "oversized", f"{name} is {len(value)} characters > limit {limit}"
    counts = [("journal_messages", msg.journal_messages), ("journal_bytes", msg.journal_bytes),
              ("journal_samples", msg.journal_samples), ("dropped_samples", msg.dropped_samples),
              ("accepted_samples", msg.accepted_samples), ("uplink_connected", msg.uplink_connected),
              ("uplink_links", msg.uplink_links), ("bytes_sent", msg.bytes_sent), ("bytes_raw", msg.bytes_raw),
              ("config_version", msg.config_version)]
    counts += [(f"sources[{n[:40]!r}].failures", s.failures) for n, s in msg.sources.items()]
    if msg.config_pushed is not None:
        counts.append(("config_pushed", msg.config_pushed))
    for name, count in counts:
        if not 0 <= count <= MAX_COUNT:
            return "out_of_range", f"{name} is {count}, not between 0 and 2^53"
    if not 0 <= msg.rss_bytes <= limits.max_rss_bytes:
        return "out_of_range", f"rss_bytes is {msg.rss_bytes}, not between 0 and {limits.max_rss_bytes}"
    reals = [("cpu_percent", msg.cpu_percent, 100.0 * limits.max_cores),
             ("oldest_unsent_age_s", msg.oldest_unsent_age_s, MAX_AGE_S), ("sync_lag_s", msg.sync_lag_s, MAX_AGE_S)]
    for name, real, top in reals:
        if real is None:
            continue
        if not math.isfinite(real):
            return "non_finite", f"{name} is {real}"
        if not 0 <= real <= top:
            return "out_of_range", f"{name} is {real:g}, not between 0 and {top:g}"
    return None
