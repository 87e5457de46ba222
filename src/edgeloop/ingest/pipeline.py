"""The ingest loop: inbound batch -> validate -> store (dedup) -> ack -> downstream.

Gateways ride along: a heartbeat (``health`` topic) is validated like an event and stored as the gateway's
latest state; a gateway's retained status is stored with it; the outcome of a configuration push (a ``config``
event, and every heartbeat) updates the stored status of that configuration version.

Nothing a payload contains can stop this loop: every failure becomes a dead
letter. A storage failure is not a payload's fault: the batch is kept,
retried with backoff and acknowledged only once it is stored, so a database
outage delays data but loses none. Data the store refuses itself
(``StoreRejected``: a string PostgreSQL cannot hold, a number beyond its
column) is: the batch is then written in halves down to the messages the
store refuses, each of which becomes a ``store_rejected`` dead letter and is
acknowledged (never redelivered); the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import StoreError, StoreRejected
from edgeloop.ingest.gateways import (
    ConfigOutcome,
    answer_of_event,
    config_updates,
    outcome_of_event,
    outcome_of_heartbeat,
)
from edgeloop.ingest.mqtt import Inbound
from edgeloop.ingest.validate import CheckedHeartbeat, Validator
from edgeloop.log_limit import LogLimiter
from edgeloop.messages import TopicKind, parse_topic
from edgeloop.store.actions import CommandAnswer
from edgeloop.store.base import DeadLetter, GatewayHeartbeat, Store, StoredEvent, TelemetryChunk

log = logging.getLogger(__name__)
_R = TypeVar("_R")
Status = tuple[str, bool, int]  # (gateway, online, platform time)

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
    """Which devices say they are online (retained status messages and last will).

    Bounded: at most ``max_devices`` entries; past that the device heard from least recently is forgotten (on a
    platform without authentication any client may publish a status under any id)."""

    def __init__(self, max_devices: int = 100_000) -> None:
        self.max_devices = max_devices
        self.online: dict[str, bool] = {}
        self.since_ms: dict[str, int] = {}  # when each device's status last arrived (platform time)

    def update(self, device: str, payload: bytes, at_ms: int = 0) -> None:
        self.online.pop(device, None)  # re-inserted last: the dict's order is least recently heard first
        self.online[device] = payload.strip().lower() == b"online"
        self.since_ms[device] = at_ms
        if len(self.online) > self.max_devices:
            oldest = next(iter(self.online))
            del self.online[oldest]
            self.since_ms.pop(oldest, None)

    def count(self, devices: Iterable[str] | None = None) -> int:
        """Devices online: of ``devices`` (the registered ones), or of every id heard from."""
        if devices is None:
            return sum(self.online.values())
        return sum(self.online.get(d, False) for d in devices)


class IngestPipeline:
    def __init__(
        self,
        *,
        source: InboundSource,
        store: Store,
        validator: Validator,
        downstream: Downstream | None = None,
        on_answers: Callable[[list[str]], Awaitable[None]] | None = None,
        presence: Presence | None = None,
        clock: Clock | None = None,
        max_batch: int = 5000,
        linger_s: float = 0.01,
    ) -> None:
        self.source = source
        self.store = store
        self.validator = validator
        self.downstream = downstream
        self.on_answers = on_answers  # the ids of commands whose answer was just recorded
        self.presence = presence or Presence()
        self.clock = clock or SystemClock()
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.stats = IngestStats()
        self.last_seen: dict[str, int] = {}  # newest stored sample time per device
        self.gateways: set[str] = set()  # devices that sent a heartbeat (the platform loads the stored ones)
        self._stamped: dict[str, int] = {}  # the last time given to a device's status or heartbeat
        self._progress = asyncio.Condition()
        self.limited_log = LogLimiter(log)  # one line per cause and minute: a poison flood must not flood the log

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self.source.batch(self.max_batch, self.linger_s)
            await self.handle(batch)

    async def handle(self, batch: list[Inbound]) -> None:
        sorted_ = self._sort(batch)
        await self._persist(sorted_)
        self.source.ack(batch)  # stored, dead-lettered or refused by the store: handled, never sent again
        accepted = sorted_.stored
        for c in accepted:
            if c.t1 > self.last_seen.get(c.device, -1):
                self.last_seen[c.device] = c.t1
        s = self.stats
        s.batches += 1
        s.received += len(batch)
        s.stored_messages += len(accepted)
        samples = sum(len(c.ts) for c in accepted)
        s.stored_samples += samples
        s.duplicates += sorted_.duplicates
        now = self.clock.monotonic()
        s.samples_rate.add(now, samples)
        s.messages_rate.add(now, len(accepted))
        if accepted and self.downstream is not None:
            await self.downstream(accepted)
        async with self._progress:
            self._progress.notify_all()
        self.limited_log.flush()

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
                    out.statuses.append(((parsed[1], self.presence.online[parsed[1]], at), item))
                continue
            try:
                result = self._check(kind, item, now)
            except Exception as exc:  # noqa: BLE001  # a bug must cost one message, never the pipeline
                self.limited_log.error(f"validator:{type(exc).__name__}", "validator failed on a payload from %s",
                                       item.topic, exc_info=True)
                result = DeadLetter.of(received_ms=now, topic=item.topic[:256], code="internal_error",
                                       detail=f"{type(exc).__name__}: {exc}", raw=item.payload)
            if isinstance(result, DeadLetter):
                self._dead(out, result)
            elif isinstance(result, StoredEvent):
                out.events.append((result, item))
                outcome = outcome_of_event(result)
                if outcome is not None:
                    out.outcomes.append((outcome, item))
                answer = answer_of_event(result)
                if answer is not None:
                    out.answers.append((answer, item))
            elif isinstance(result, CheckedHeartbeat):
                record = replace(result.record, received_ms=self._stamp(result.record.gateway, now))
                out.heartbeats.append((self._with_status(record), item))
                out.outcomes.append((outcome_of_heartbeat(result.message, now), item))
                self.gateways.add(result.record.gateway)
            else:
                out.chunks.append((result, item))
        return out

    def _dead(self, batch: _Sorted, letter: DeadLetter) -> None:
        batch.letters.append(letter)
        self.stats.dead_letters += 1
        self.stats.dead_by_code[letter.code] += 1
        self.stats.dead_by_device[letter.device or ""] += 1

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

    async def _persist(self, batch: _Sorted) -> None:
        """Store a sorted batch; on an unavailable store retry (with backoff) what is not stored yet."""
        delay = 0.1
        while True:
            try:
                await self._write(batch)
                return
            except StoreError as exc:
                self.stats.store_retries += 1
                self.limited_log.warning("store_unavailable", "storing a batch of %d messages failed (%s); "
                                         "retrying in %.1f s", len(batch.chunks) + len(batch.events)
                                         + len(batch.heartbeats), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, b: _Sorted) -> None:
        """Each kind of record in one write; what is written leaves the batch, so a retry after a transient
        failure writes only the rest. Dead letters go last: the store may refuse messages and add to them."""
        store, stats = self.store, self.stats

        async def events(items: list[StoredEvent]) -> None:
            await store.write_events(items)
            stats.events += len(items)

        async def heartbeats(items: list[GatewayHeartbeat]) -> None:
            await store.write_heartbeats(_latest(items))
            stats.heartbeats += len(items)

        async def chunks(items: list[TelemetryChunk]) -> None:
            new = await store.write_chunks(items)
            b.stored.extend(c for c, ok in zip(items, new, strict=True) if ok)
            b.duplicates += len(items) - sum(new)

        await self._isolating(b, b.events, events, "event")
        await self._isolating(b, b.heartbeats, heartbeats, "heartbeat")
        await self._isolating(b, b.statuses, store.write_gateway_status, "status")
        b.outcomes = [(o, item) for o, item in b.outcomes if id(item) not in b.refused]
        await self._isolating(b, b.outcomes, self._apply_outcomes, "configuration outcome", letter=False)
        b.answers = [(a, item) for a, item in b.answers if id(item) not in b.refused]
        await self._isolating(b, b.answers, self._apply_answers, "command answer", letter=False)
        await self._isolating(b, b.chunks, chunks, "telemetry message")
        await self._write_letters(b.letters)

    async def _isolating(self, b: _Sorted, items: list[tuple[_R, Inbound]],
                         write: Callable[[list[_R]], Awaitable[object]], what: str, *, letter: bool = True) -> None:
        """``write`` all ``items`` at once; if the store refuses them, in halves, and halves of those, down to
        the single messages it refuses (a few writes per refused message, not one per message of the batch).
        A refused message becomes a ``store_rejected`` dead letter (``letter``; else it is only logged).
        Written items leave the list: ``StoreError`` (the store is unavailable) propagates with the rest kept."""
        size = len(items)
        while items:
            part = items[:size]
            try:
                await write([record for record, _ in part])
            except StoreError as exc:
                if not isinstance(exc, StoreRejected):
                    raise
                why = str(exc)
            except Exception as exc:  # noqa: BLE001  # an error the backend does not translate: a bug, never the end of ingest
                self.limited_log.error(f"untranslated:{what}", "storing %d %s records raised an untranslated "
                                       "error; isolating the message", len(part), what, exc_info=True)
                why = f"{type(exc).__name__}: {exc}"
            else:
                del items[:len(part)]
                size = len(items)  # the rest at once again
                continue
            if len(part) > 1:
                size = len(part) // 2
                continue
            record, item = part[0]
            self._refused(b, record, item, what, why, letter)
            del items[0]
            size = len(items)

    def _refused(self, b: _Sorted, record: object, item: Inbound, what: str, why: str, letter: bool) -> None:
        b.refused.add(id(item))
        self.limited_log.warning(f"store_rejected:{what}", "the store refused a %s from %s: %s", what, item.topic,
                                 why)
        if not letter:
            return
        device, tenant = _owner(record)
        self._dead(b, DeadLetter.of(received_ms=self.clock.now_ms(), topic=item.topic[:256], code="store_rejected",
                                    detail=f"the store refused this {what}: {why}", raw=item.payload,
                                    device=device, tenant=tenant))

    async def _write_letters(self, letters: list[DeadLetter]) -> None:
        """Dead letters, one at a time if the store refuses some; a refused one is stored again in plain ASCII,
        and only if even that is refused is it dropped (and logged): a dead letter must never block ingest."""
        if not letters:
            return
        try:
            await self.store.write_dead_letters(letters)
            letters.clear()
            return
        except StoreRejected:
            pass
        except StoreError:
            raise
        except Exception:  # noqa: BLE001  # as in _isolating
            self.limited_log.error("untranslated:dead letter", "storing %d dead letters raised an untranslated "
                                   "error; isolating them one by one", len(letters), exc_info=True)
        while letters:
            why = ""
            for attempt in (letters[0], _plain(letters[0])):
                try:
                    await self.store.write_dead_letters([attempt])
                    break
                except StoreError as exc:
                    if not isinstance(exc, StoreRejected):
                        raise
                    why = str(exc)
                except Exception as exc:  # noqa: BLE001  # as above: never block ingest
                    why = f"{type(exc).__name__}: {exc}"
            else:
                self.limited_log.error("store_rejected:dead letter", "the store refused a dead letter from %s even "
                                       "in plain ASCII (%s); dropped", letters[0].topic, why)
            del letters[0]

    async def _apply_answers(self, answers: Sequence[CommandAnswer]) -> None:
        """Record gateways' answers to commands (idempotent: the first answer is final)."""
        changed = await self.store.answer_commands(answers)
        if changed and self.on_answers is not None:
            await self.on_answers(changed)

    async def _apply_outcomes(self, outcomes: Sequence[ConfigOutcome]) -> None:
        """Update the stored status of pushed configurations from what agents report (idempotent)."""
        for outcome in outcomes:
            configs = await self.store.list_gateway_configs(outcome.gateway)
            for version, status, error in config_updates(configs, outcome):
                await self.store.set_gateway_config_status(outcome.gateway, version, status, error, outcome.at_ms)


@dataclass(slots=True)
class _Sorted:
    """One inbound batch, sorted by what it holds; each record with the message it came from."""

    chunks: list[tuple[TelemetryChunk, Inbound]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    events: list[tuple[StoredEvent, Inbound]] = field(default_factory=list)
    heartbeats: list[tuple[GatewayHeartbeat, Inbound]] = field(default_factory=list)
    statuses: list[tuple[Status, Inbound]] = field(default_factory=list)
    outcomes: list[tuple[ConfigOutcome, Inbound]] = field(default_factory=list)
    answers: list[tuple[CommandAnswer, Inbound]] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)  # id() of the messages the store refused
    stored: list[TelemetryChunk] = field(default_factory=list)  # new telemetry (not a duplicate)
    duplicates: int = 0


def _owner(record: object) -> tuple[str | None, str | None]:
    """The (device, tenant) a refused record belongs to, for its dead letter."""
    if isinstance(record, TelemetryChunk | StoredEvent):
        return record.device, record.tenant
    if isinstance(record, GatewayHeartbeat):
        return record.gateway, record.tenant
    if isinstance(record, tuple) and record and isinstance(record[0], str):  # a gateway's status
        return record[0], None
    return None, None


def _plain(letter: DeadLetter) -> DeadLetter:
    """A dead letter in plain ASCII (its raw bytes kept): what every store can hold."""
    def plain(text: str) -> str:
        return text.encode("ascii", "backslashreplace").decode("ascii")

    return replace(letter, topic=plain(letter.topic)[:256], detail=plain(letter.detail)[:500],
                   device=letter.device and plain(letter.device), tenant=letter.tenant and plain(letter.tenant))


def _latest(beats: list[GatewayHeartbeat]) -> list[GatewayHeartbeat]:
    """One heartbeat per gateway, its newest, keeping the status the earlier ones of the batch carried."""
    newest: dict[str, GatewayHeartbeat] = {}
    for beat in beats:
        cur = newest.get(beat.gateway)
        if cur is None or beat.ts_ms >= cur.ts_ms:
            keep = cur is not None and beat.status is None and cur.status is not None
            newest[beat.gateway] = replace(beat, status=cur.status, status_ms=cur.status_ms) if keep and cur else beat
    return list(newest.values())
