"""The bandwidth policy: what of the raw samples the agent accepts into the journal for forwarding.

* ``raw``: every sample. Samples inside a *hot window* (``before_s`` before to ``after_s`` after a
  local anomaly or fail-safe trip) are priority messages: the disk budget drops them last, and
  messages already journaled from ``before_s`` earlier are raised to priority too.
* ``aggregate``: per device and channel, the statistics of each ``aggregate_s`` window (mean,
  and optionally min and max as channels ``CHANNEL_min`` / ``CHANNEL_max``), as one sample at
  the window's start time; plus, as priority, every raw sample of a hot window (those before the
  anomaly come from a ring buffer of the last ``before_s`` seconds).

In ``aggregate`` mode a raw sample is *accepted* when its window closes (its aggregate is
journaled) or when it is part of a hot window; until then it lives only in memory, so a crash
loses at most the current ``aggregate_s`` window. ``bytes_raw`` counts what forwarding every
raw sample would have cost, for the heartbeat's bytes-sent-versus-raw report.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

from edgeloop.agent.config import BandwidthSection
from edgeloop.messages import Sample, Telemetry, encode


@dataclass(slots=True)
class _Acc:
    total: float = 0.0
    count: int = 0
    lo: float = math.inf
    hi: float = -math.inf


@dataclass(slots=True)
class _Device:
    window_start: int | None = None
    acc: dict[str, _Acc] = field(default_factory=dict)
    ring: collections.deque[Sample] = field(default_factory=collections.deque)
    hot_until: int = -1
    raw_sent_upto: int = -1  # the newest raw sample already forwarded as part of a hot window


@dataclass(slots=True)
class Routed:
    """What to journal for one device from one batch."""

    normal: list[Sample] = field(default_factory=list)
    priority: list[Sample] = field(default_factory=list)
    raise_since: int | None = None  # raise journaled messages with samples from this time to priority


class Forwarder:
    def __init__(self, cfg: BandwidthSection) -> None:
        self.cfg = cfg
        self.aggregate_ms = int(cfg.aggregate_s * 1000)
        self.before_ms, self.after_ms = int(cfg.before_s * 1000), int(cfg.after_s * 1000)
        self._devices: dict[str, _Device] = {}
        self.bytes_raw = 0

    def heat(self, device: str, ts: int) -> None:
        """A local anomaly or trip at ``ts``: forward full resolution around it."""
        dev = self._devices.setdefault(device, _Device())
        dev.hot_until = max(dev.hot_until, ts + self.after_ms)

    def route(self, device: str, samples: list[Sample], hot_from: int | None) -> Routed:
        """``samples`` (time order) of ``device``; ``hot_from`` is the earliest anomaly/trip time among them."""
        self.bytes_raw += len(encode(Telemetry(device=device, seq=0, samples=samples)))
        dev = self._devices.setdefault(device, _Device())
        out = Routed()
        if hot_from is not None:
            out.raise_since = hot_from - self.before_ms
        if self.cfg.mode == "raw":
            for s in samples:
                (out.priority if s.ts <= dev.hot_until else out.normal).append(s)
            return out
        if hot_from is not None:  # the context before the anomaly, from the ring
            out.priority += [s for s in dev.ring if s.ts >= hot_from - self.before_ms and s.ts > dev.raw_sent_upto]
        for s in samples:
            self._aggregate(dev, s, out.normal)
            dev.ring.append(s)
            if s.ts <= dev.hot_until and s.ts > dev.raw_sent_upto:
                out.priority.append(s)
        if out.priority:
            dev.raw_sent_upto = max(dev.raw_sent_upto, out.priority[-1].ts)
        horizon = samples[-1].ts - self.before_ms if samples else 0
        while dev.ring and dev.ring[0].ts < horizon:
            dev.ring.popleft()
        return out

    def flush(self) -> dict[str, list[Sample]]:
        """Close every open window (on stop or reconfiguration): their aggregates."""
        out: dict[str, list[Sample]] = {}
        for device, dev in self._devices.items():
            closed = self._close(dev)
            if closed is not None:
                out[device] = [closed]
        return out

    def _aggregate(self, dev: _Device, s: Sample, out: list[Sample]) -> None:
        start = s.ts - s.ts % self.aggregate_ms
        if dev.window_start is not None and start != dev.window_start:
            closed = self._close(dev)
            if closed is not None:
                out.append(closed)
        dev.window_start = start
        for channel, value in s.values.items():
            acc = dev.acc.get(channel)
            if acc is None:
                acc = dev.acc[channel] = _Acc()
            if value is not None:
                acc.total += value
                acc.count += 1
                acc.lo = min(acc.lo, value)
                acc.hi = max(acc.hi, value)

    def _close(self, dev: _Device) -> Sample | None:
        if dev.window_start is None or not dev.acc:
            return None
        values: dict[str, float | None] = {}
        for channel, acc in dev.acc.items():
            valid = acc.count > 0
            for stat in self.cfg.stats:
                name = channel if stat == "mean" else f"{channel}_{stat}"
                if not valid:
                    values[name] = None
                else:
                    values[name] = acc.total / acc.count if stat == "mean" else acc.lo if stat == "min" else acc.hi
        sample = Sample(ts=dev.window_start, values=values)
        dev.window_start, dev.acc = None, {}
        return sample
