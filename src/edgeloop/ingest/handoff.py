"""Embedded mode's ingest source: the in-process broker hands messages over and acknowledges them after commit.

The embedded broker (``edgeloop.broker.embedded``) runs in the platform's process. For every PUBLISH the ACL
allows on a topic ingest takes (telemetry, events, status, heartbeats) it calls :meth:`HandoffSource.offer`
with a ``done`` callback. The pipeline takes batches from here as from any source and, once a batch is committed
(stored, or dead-lettered), calls :meth:`ack`, which runs the callbacks: only then does the broker send the
device its PUBACK. So a ``kill -9`` loses nothing a device was told is safe: what is unacknowledged is still in
the device's in-flight window, it is resent after the device reconnects, and (device, seq) dedup absorbs the
repeat.

Bounded: at most ``capacity`` messages wait here. When it is full, ``offer`` waits, which stalls that client's
delivery in the broker; its further PUBLISHes stay unacknowledged, so the client's own in-flight window stops it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Sequence

from edgeloop.clock import Clock, SystemClock
from edgeloop.ingest.mqtt import Inbound, SourceStats
from edgeloop.messages import TopicKind, parse_topic

INGESTED = frozenset({TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.EVENT, TopicKind.HEALTH})


class HandoffSource:
    """Messages handed over by the embedded broker, with a callback each to run once they are committed."""

    def __init__(self, *, capacity: int = 50_000, clock: Clock | None = None) -> None:
        self.capacity = capacity
        self.clock = clock or SystemClock()
        self.stats = SourceStats(capacity=capacity, connected=True)
        self._buf: collections.deque[Inbound] = collections.deque()
        self._done: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    def wants(self, topic: str) -> bool:
        """Whether ingest takes messages on ``topic`` (what the platform would subscribe to)."""
        parsed = parse_topic(topic)
        return parsed is not None and parsed[2] in INGESTED

    async def offer(self, topic: str, payload: bytes, *, qos: int, done: Callable[[], None] | None) -> None:
        """Queue one message; ``done`` runs after it is committed. Waits while ``capacity`` messages are waiting."""
        while len(self._buf) >= self.capacity:
            self._room.clear()
            await self._room.wait()
        mid = next(self._ids)
        if done is not None:
            self._done[mid] = done
        self._buf.append(Inbound(topic, payload, mid, qos, self.clock.now_ms()))
        self.stats.received += 1
        self._ready.set()

    async def batch(self, max_items: int = 5000, linger_s: float = 0.0) -> list[Inbound]:
        """Up to ``max_items`` waiting messages, oldest first; waits for the first, then ``linger_s`` for more."""
        while not self._buf:
            self._ready.clear()
            await self._ready.wait()
        if linger_s > 0 and len(self._buf) < max_items:
            await asyncio.sleep(linger_s)
        out = [self._buf.popleft() for _ in range(min(max_items, len(self._buf)))]
        self._room.set()
        return out

    def ack(self, items: Sequence[Inbound]) -> None:
        """These messages are committed: let the broker acknowledge them to their publishers."""
        for item in items:
            done = self._done.pop(item.mid, None)
            if done is not None:
                done()

    @property
    def depth(self) -> int:
        return len(self._buf)

    @property
    def unacknowledged(self) -> int:
        """Messages handed over whose publishers are still waiting for their acknowledgement."""
        return len(self._done)
