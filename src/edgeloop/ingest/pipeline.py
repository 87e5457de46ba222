"""The ingest loop: inbound batch -> validate -> store (dedup) -> ack -> downstream.

Gateways ride along: a heartbeat (``health`` topic) is validated like an event and stored as the gateway's
latest state; a gateway's retained status is stored with it; the outcome of a configuration push (a ``config``
event, and every heartbeat) updates the stored status of that configuration version.

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
from dataclasses import dataclass, field, replace
from typing import Protocol

from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import StoreError
from edgeloop.ingest.gateways import ConfigOutcome, config_updates, outcome_of_event, outcome_of_heartbeat
from edgeloop.ingest.mqtt import Inbound
from edgeloop.ingest.validate import CheckedHeartbeat, Validator
from edgeloop.messages import TopicKind, parse_topic
from edgeloop.store.base import DeadLetter, GatewayHeartbeat, Store, StoredEvent, TelemetryChunk

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
    heartbeats: int = 0  # gateway heartbeats accepted
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
        self.since_ms: dict[str, int] = {}  # when each device's status last arrived (platform time)

    def update(self, device: str, payload: bytes, at_ms: int = 0) -> None:
        self.online[device] = payload.strip().lower() == b"online"
        self.since_ms[device] = at_ms

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
        self.gateways: set[str] = set()  # devices that sent a heartbeat (the platform loads the stored ones)
        self._stamped: dict[str, int] = {}  # the last time given to a device's status or heartbeat
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self.source.batch(self.max_batch, self.linger_s)
            await self.handle(batch)

    async def handle(self, batch: list[Inbound]) -> None:
        sorted_ = self._sort(batch)
        chunks = sorted_.chunks
        new = await self._persist(sorted_)
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
        s = self.stats
        return s.stored_messages + s.duplicates + s.dead_letters + s.events + s.heartbeats

    async def wait_handled(self, n: int) -> None:
        """Wait until at least ``n`` messages have been handled."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.handled() >= n)

    def _sort(self, batch: list[Inbound]) -> _Sorted:
        out = _Sorted()
        now = self.clock.now_ms()
        for item in batch:
            parsed = parse_topic(item.topic)
            kind = parsed[2] if parsed is not None else None
            if parsed is not None and kind == TopicKind.STATUS:
                at = self._stamp(parsed[1], now)
                self.presence.update(parsed[1], item.payload, at)
                if parsed[1] in self.gateways:
                    out.statuses.append((parsed[1], self.presence.online[parsed[1]], at))
                continue
            try:
                result = self._check(kind, item, now)
            except Exception as exc:  # a bug must cost one message, never the pipeline
                log.exception("validator failed on a payload from %s", item.topic)
                result = DeadLetter.of(received_ms=now, topic=item.topic[:256], code="internal_error",
                                       detail=f"{type(exc).__name__}: {exc}", raw=item.payload)
            if isinstance(result, DeadLetter):
                out.letters.append(result)
                self.stats.dead_letters += 1
                self.stats.dead_by_code[result.code] += 1
                self.stats.dead_by_device[result.device or ""] += 1
            elif isinstance(result, StoredEvent):
                out.events.append(result)
                outcome = outcome_of_event(result)
                if outcome is not None:
                    out.outcomes.append(outcome)
            elif isinstance(result, CheckedHeartbeat):
                record = replace(result.record, received_ms=self._stamp(result.record.gateway, now))
                out.heartbeats.append(self._with_status(record))
                out.outcomes.append(outcome_of_heartbeat(result.message, now))
                self.gateways.add(result.record.gateway)
            else:
                out.chunks.append(result)
        return out

    def _check(self, kind: TopicKind | None, item: Inbound,
               now: int) -> TelemetryChunk | StoredEvent | CheckedHeartbeat | DeadLetter:
        if kind == TopicKind.EVENT:
            return self.validator.check_event(item.topic, item.payload, now)
        if kind == TopicKind.HEALTH:
            return self.validator.check_heartbeat(item.topic, item.payload, now)
        return self.validator.check(item.topic, item.payload, now)

    def _stamp(self, device: str, now: int) -> int:
        """The platform time of a device's status or heartbeat, strictly increasing per device: which came last
        decides whether a gateway is offline, also when two arrive within one millisecond."""
        at = max(now, self._stamped.get(device, -1) + 1)
        self._stamped[device] = at
        return at

    def _with_status(self, beat: GatewayHeartbeat) -> GatewayHeartbeat:
        """A gateway's first heartbeat carries the status it announced before (afterwards statuses are stored)."""
        if beat.gateway in self.gateways or beat.gateway not in self.presence.online:
            return beat
        online = self.presence.online[beat.gateway]
        return replace(beat, status="online" if online else "offline",
                       status_ms=self.presence.since_ms.get(beat.gateway, beat.received_ms))

    async def _persist(self, batch: _Sorted) -> list[bool]:
        """Store a sorted batch; on a storage failure retry (with backoff) what is not stored yet."""
        delay = 0.1
        while True:
            try:
                await self.store.write_dead_letters(batch.letters)
                batch.letters = []  # written; a retry must not write them twice
                await self.store.write_events(batch.events)
                self.stats.events += len(batch.events)
                batch.events = []
                await self.store.write_heartbeats(_latest(batch.heartbeats))
                self.stats.heartbeats += len(batch.heartbeats)
                batch.heartbeats = []
                await self.store.write_gateway_status(batch.statuses)
                batch.statuses = []
                await self._apply_outcomes(batch.outcomes)
                batch.outcomes = []
                return await self.store.write_chunks(batch.chunks)
            except StoreError as exc:
                self.stats.store_retries += 1
                log.warning("storing a batch of %d messages failed (%s); retrying in %.1f s", len(batch.chunks),
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply_outcomes(self, outcomes: list[ConfigOutcome]) -> None:
        """Update the stored status of pushed configurations from what agents report (idempotent)."""
        for outcome in outcomes:
            configs = await self.store.list_gateway_configs(outcome.gateway)
            for version, status, error in config_updates(configs, outcome):
                await self.store.set_gateway_config_status(outcome.gateway, version, status, error, outcome.at_ms)


@dataclass(slots=True)
class _Sorted:
    """One inbound batch, sorted by what it holds."""

    chunks: list[TelemetryChunk] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    heartbeats: list[GatewayHeartbeat] = field(default_factory=list)
    statuses: list[tuple[str, bool, int]] = field(default_factory=list)
    outcomes: list[ConfigOutcome] = field(default_factory=list)


def _latest(beats: list[GatewayHeartbeat]) -> list[GatewayHeartbeat]:
    """One heartbeat per gateway, its newest, keeping the status the earlier ones of the batch carried."""
    newest: dict[str, GatewayHeartbeat] = {}
    for beat in beats:
        cur = newest.get(beat.gateway)
        if cur is None or beat.ts_ms >= cur.ts_ms:
            keep = cur is not None and beat.status is None and cur.status is not None
            newest[beat.gateway] = replace(beat, status=cur.status, status_ms=cur.status_ms) if keep and cur else beat
    return list(newest.values())
