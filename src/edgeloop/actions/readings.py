"""The newest reading of every channel of every device, and the last chunks each device sent: what the actions
engine checks preconditions and interlocks against, and the samples a decision rests on.

Fed with every stored telemetry chunk (ingest's downstream). Bounded: ``MAX_DEVICES`` devices (the least recently
heard goes first), ``CHUNKS_KEPT`` chunk spans per device. Empty after a restart until devices report again, so a
freshness check fails safe (held) rather than act on a reading from before the restart.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgeloop.store.records import TelemetryChunk

__all__ = ["CHUNKS_KEPT", "MAX_DEVICES", "LatestReadings", "Reading"]

MAX_DEVICES = 100_000
CHUNKS_KEPT = 64


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    ts: int


@dataclass(slots=True)
class _Device:
    newest_ts: int = -1
    values: dict[str, Reading] = field(default_factory=dict)
    spans: collections.deque[tuple[int, int, int]] = field(  # (seq, t0, t1) of the newest chunks
        default_factory=lambda: collections.deque(maxlen=CHUNKS_KEPT))


class LatestReadings:
    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self.max_devices = max_devices
        self._devices: collections.OrderedDict[str, _Device] = collections.OrderedDict()

    def observe(self, chunks: Sequence[TelemetryChunk]) -> None:
        for chunk in chunks:
            dev = self._devices.get(chunk.device)
            if dev is None:
                dev = self._devices[chunk.device] = _Device()
                if len(self._devices) > self.max_devices:
                    self._devices.popitem(last=False)
            else:
                self._devices.move_to_end(chunk.device)
            dev.spans.append((chunk.seq, chunk.t0, chunk.t1))
            dev.newest_ts = max(dev.newest_ts, chunk.t1)
            for j, channel in enumerate(chunk.channels):
                column = chunk.values[:, j]
                for i in range(len(column) - 1, -1, -1):  # the newest valid value of the channel in the chunk
                    v = float(column[i])
                    if not math.isnan(v):
                        ts = int(chunk.ts[i])
                        old = dev.values.get(channel)
                        if old is None or ts >= old.ts:
                            dev.values[channel] = Reading(v, ts)
                        break

    def newest_ts(self, device: str) -> int | None:
        """When the device's newest sample was taken (None: nothing since the platform started)."""
        dev = self._devices.get(device)
        return None if dev is None or dev.newest_ts < 0 else dev.newest_ts

    def reading(self, device: str, channel: str) -> Reading | None:
        dev = self._devices.get(device)
        return None if dev is None else dev.values.get(channel)

    def seqs(self, device: str, start: int, end: int) -> list[int]:
        """The seq of each recent chunk of ``device`` overlapping ``[start, end]``."""
        dev = self._devices.get(device)
        return [] if dev is None else [seq for seq, t0, t1 in dev.spans if t0 <= end and t1 >= start]
