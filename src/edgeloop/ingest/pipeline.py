"""The ingest loop: inbound batch -> validate -> store (dedup) -> ack -> downstream.

Nothing a payload contains can stop this loop: every failure becomes a dead
letter. A storage failure is not a payload's fault: the batch is kept,
retried with backoff and acknowledged only once it is stored, so a database
outage delays data but loses none.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import StoreError
from edgeloop.ingest.mqtt import Inbound
from edgeloop.ingest.validate import Validator
from edgeloop.messages import TopicKind, parse_topic
from edgeloop.store.base import DeadLetter, Store, StoredEvent, TelemetryChunk

log = logging.getLogger(__name__)

Downstream = Callable[[list[TelemetryChunk]], Awaitable[None]]


class InboundSource(Protocol):
    async def batch(self, max_items: int = ..., linger_s: float = ...) -> list[Inbound]: ...
    def ack(self, items: Sequence[Inbound]) -> None: ...
    @property
    def depth(self) -> int: ...


@dataclass(slots=True)
class RateMeter:
    """Events per second over a sliding window of whole seconds (monotonic clock)."""

    window_s: int = 10
    _buckets: collections.deque[list[float]] = field(default_factory=collections.deque)

    def add(self, now_s: float, n: int) -> None:
        second = float(int(now_s))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, float(n)])
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            self._buckets.popleft()

    def rate(self, now_s: float) -> float:
        cutoff = int(now_s) - self.window_s
        total = sum(n for s, n in self._buckets if s > cutoff)
        return total / self.window_s


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    stored_messages: int = 0
    stored_samples: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    events: int = 0  # device events received and stored (repeats of a stored one are skipped)
    store_retries: int = 0
    batches: int = 0
    dead_by_code: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_by_device: collections.Counter[str] = field(default_factory=collections.Counter)
    samples_rate: RateMeter = field(default_factory=RateMeter)
    messages_rate: RateMeter = field(default_factory=RateMeter)


class Presence:
    """Which devices say they are online (retained status messages and last will)."""

    def __init__(self) -> None:
        self.online: dict[str, bool] = {}

    def update(self, device: str, payload: bytes) -> None:
        self.online[device] = payload.strip().lower() == b"online"

    def count(self) -> int:
        return sum(self.online.values())


class IngestPipeline:
    def __init__(
        self,
        *,
        source: InboundSource,
        store: Store,
        validator: Validator,
        downstream: Downstream | None = None,
        presence: Presence | None = None,
        clock: Clock | None = None,
        max_batch: int = 5000,
        linger_s: float = 0.01,
    ) -> None:
        self.source = source
        self.store = store
        self.validator = validator
        self.downstream = downstream
        self.presence = presence or Presence()
        self.clock = clock or SystemClock()
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.stats = IngestStats()
        self.last_seen: dict[str, int] = {}  # newest stored sample time per device
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self.source.batch(self.max_batch, self.linger_s)
            await self.handle(batch)

    async def handle(self, batch: list[Inbound]) -> None:
        chunks, letters, events = self._sort(batch)
        new = await self._persist(chunks, letters, events)
        self.source.ack(batch)
        accepted = [c for c, ok in zip(chunks, new, strict=True) if ok]
        for c in accepted:
            if c.t1 > self.last_seen.get(c.device, -1):
                self.last_seen[c.device] = c.t1
        s = self.stats
        s.batches += 1
        s.received += len(batch)
        s.stored_messages += len(accepted)
        samples = sum(len(c.ts) for c in accepted)
        s.stored_samples += samples
        s.duplicates += len(chunks) - len(accepted)
        now = self.clock.monotonic()
        s.samples_rate.add(now, samples)
        s.messages_rate.add(now, len(accepted))
        if accepted and self.downstream is not None:
            await self.downstream(accepted)
        async with self._progress:
            self._progress.notify_all()

    def handled(self) -> int:
        """Messages finished with: stored, dropped as duplicates, or dead-lettered."""
        return self.stats.stored_messages + self.stats.duplicates + self.stats.dead_letters + self.stats.events

    async def wait_handled(self, n: int) -> None:
        """Wait until at least ``n`` messages have been handled."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.handled() >= n)

    def _sort(self, batch: list[Inbound]) -> tuple[list[TelemetryChunk], list[DeadLetter], list[StoredEvent]]:
        chunks: list[TelemetryChunk] = []
        letters: list[DeadLetter] = []
        events: list[StoredEvent] = []
        now = self.clock.now_ms()
        for item in batch:
            parsed = parse_topic(item.topic)
            if parsed is not None and parsed[2] == TopicKind.STATUS:
                self.presence.update(parsed[1], item.payload)
                continue
            is_event = parsed is not None and parsed[2] == TopicKind.EVENT
            try:
                result: TelemetryChunk | StoredEvent | DeadLetter = (
                    self.validator.check_event(item.topic, item.payload, now) if is_event
                    else self.validator.check(item.topic, item.payload, now))
            except Exception as exc:  # a bug must cost one message, never the pipeline
                log.exception("validator failed on a payload from %s", item.topic)
                result = DeadLetter.of(received_ms=now, topic=item.topic[:256], code="internal_error",
                                       detail=f"{type(exc).__name__}: {exc}", raw=item.payload)
            if isinstance(result, DeadLetter):
                letters.append(result)
                self.stats.dead_letters += 1
                self.stats.dead_by_code[result.code] += 1
                self.stats.dead_by_device[result.device or ""] += 1
            elif isinstance(result, StoredEvent):
                events.append(result)
            else:
                chunks.append(result)
        return chunks, letters, events

    async def _persist(
        self, chunks: list[TelemetryChunk], letters: list[DeadLetter], events: list[StoredEvent]
    ) -> list[bool]:
        delay = 0.1
        while True:
            try:
                await self.store.write_dead_letters(letters)
                letters = []  # written; a retry must not write them twice
                await self.store.write_events(events)
                self.stats.events += len(events)
                events = []
                return await self.store.write_chunks(chunks)
            except StoreError as exc:
                self.stats.store_retries += 1
                log.warning("storing a batch of %d messages failed (%s); retrying in %.1f s", len(chunks), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
