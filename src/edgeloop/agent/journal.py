"""The agent's durable store-and-forward journal (SQLite, WAL).

A sample is *accepted* when the transaction that writes it commits: every ``commit_ms`` the
agent writes what its sources produced, sealed into telemetry messages with their final
``(device, seq)`` and payload bytes. A message leaves the journal only when the broker has
acknowledged it (``ack``), so a resend after any crash carries the same seq and bytes, and
the platform stores it once.

Durability (``fsync``):

* ``commit`` (default): ``synchronous=FULL``; every commit is fsynced. Accepted samples
  survive ``kill -9`` *and* power loss.
* ``os``: ``synchronous=NORMAL`` in WAL mode. Accepted samples survive ``kill -9`` (the OS
  holds the pages); a power loss can lose the last commits before the WAL checkpoint.

Sequence numbers: each device's counter starts at ``now_ms * 1000`` the first time the
journal sees the device, then increases by one per message; a replaced gateway with a fresh
journal therefore continues above anything it sent before, and the platform's (device, seq)
dedup never mistakes new data for old.

Coalescing: a message that was never handed to the uplink (``published = 0``) has a seq nobody
has seen. When the uplink takes messages (``take``), consecutive untaken ones of a device with
the same priority are merged into one of up to ``max_samples_per_message`` samples under the
first one's seq, and marked taken in the same transaction. Commits stay small and fast; an
outage's backlog (one small message per commit) replays as few large publishes. A message once
taken keeps its exact bytes for every resend. (Under ``fsync: os`` a power loss can undo the
mark of a message that was published; merged again with its neighbours, its seq would carry
more samples than the copy the platform stored, and those would be dropped as a duplicate: the
documented "last commits before power loss" limit of that mode.)

Disk budget: ``budget_bytes`` bounds the bytes of unsent payloads. Over it, the oldest
*normal* messages are dropped first, *priority* ones (alarm and anomaly windows) only when
nothing else is left; each drop becomes a gap record (device, first and last sample time,
sample count, reason) and a ``gap`` event in the outbox, which the uplink reports to the platform.

Events (gaps, fail-safe actions, overrides, local anomalies, configuration changes) wait in
the ``events`` outbox, committed like telemetry and deleted when the broker acknowledges them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeloop.messages import DeviceEvent, Sample, Severity, Telemetry, decode_telemetry, encode

FsyncPolicy = Literal["commit", "os"]
NORMAL, PRIORITY = 0, 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the uplink's live/backlog split relies on it
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    payload BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,  -- handed to the uplink at least once: its bytes are final
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_device ON messages (device, id);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
-- The outbox of device events the agent reports (gaps, fail-safe actions, overrides, anomalies,
-- configuration changes): committed like telemetry, deleted when the broker acknowledges them.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    payload BLOB NOT NULL,
    gap_id INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    device: str
    seq: int
    payload: bytes
    last_ts: int = 0  # the newest sample's time


@dataclass(frozen=True, slots=True)
class OutEvent:
    id: int
    device: str
    payload: bytes  # an encoded DeviceEvent


@dataclass(frozen=True, slots=True)
class JournalStats:
    messages: int
    bytes: int
    samples: int
    oldest_ts: int | None
    dropped_messages: int  # over the journal's life
    dropped_samples: int
    events_unsent: int


class Journal:
    """Synchronous; the agent calls it from one worker thread."""

    def __init__(self, path: Path, *, fsync: FsyncPolicy = "commit", budget_bytes: int = 256 * 2**20,
                 max_samples_per_message: int = 600) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.budget_bytes = budget_bytes
        self.max_samples = max_samples_per_message
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'commit' else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(messages)")}
        if "published" not in columns:  # a journal from before coalescing: treat what it holds as sent once
            self._db.execute("ALTER TABLE messages ADD COLUMN published INTEGER NOT NULL DEFAULT 1")
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()[0])
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self.dropped_messages = int(counters.get("dropped_messages", 0))
        self.dropped_samples = int(counters.get("dropped_samples", 0))

    def close(self) -> None:
        self._db.close()

    # -- accepting ------------------------------------------------------------------------------
    def append(self, batch: Mapping[str, Sequence[Sample]], *, priority: int = NORMAL,
               now_ms: int | None = None) -> list[Pending]:
        """Seal ``batch`` (samples per device, in time order) into messages and commit; returns them."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        out: list[Pending] = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for device, samples in batch.items():
                if not samples:
                    continue
                row = db.execute("SELECT next_seq FROM devices WHERE device=?", (device,)).fetchone()
                seq = int(row[0]) if row else now * 1000
                for i in range(0, len(samples), self.max_samples):
                    part = list(samples[i:i + self.max_samples])
                    payload = encode(Telemetry(device=device, seq=seq, samples=part))
                    cur = db.execute(
                        "INSERT INTO messages (device, seq, priority, first_ts, last_ts, samples, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (device, seq, priority, part[0].ts, part[-1].ts, len(part), payload))
                    out.append(Pending(int(cur.lastrowid or 0), device, seq, payload, part[-1].ts))
                    self._bytes += len(payload)
                    seq += 1
                db.execute("INSERT INTO devices (device, next_seq, last_ts, accepted) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (device) DO UPDATE SET next_seq=excluded.next_seq, "
                           "last_ts=MAX(devices.last_ts, excluded.last_ts), accepted=devices.accepted + ?",
                           (device, seq, samples[-1].ts, len(samples), len(samples)))
            dropped = self._enforce_budget(now)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. the disk is full)
                db.execute("ROLLBACK")
            raise
        if dropped:
            gone = {p.id for p in dropped}
            out = [p for p in out if p.id not in gone]
        return out

    def _enforce_budget(self, now_ms: int) -> list[Pending]:
        """Inside the caller's transaction: drop oldest normal, then oldest priority, until under budget."""
        if self._bytes <= self.budget_bytes:
            return []
        db = self._db
        dropped: list[Pending] = []
        per_device: dict[str, list[int]] = {}
        for priority in (NORMAL, PRIORITY):
            rows = db.execute("SELECT id, device, seq, first_ts, last_ts, samples, LENGTH(payload) FROM messages "
                              "WHERE priority=? ORDER BY id", (priority,))
            for mid, device, seq, first_ts, last_ts, samples, size in rows.fetchall():
                if self._bytes <= self.budget_bytes:
                    break
                db.execute("DELETE FROM messages WHERE id=?", (mid,))
                self._bytes -= int(size)
                self.dropped_messages += 1
                self.dropped_samples += int(samples)
                dropped.append(Pending(int(mid), str(device), int(seq), b""))
                span = per_device.setdefault(str(device), [int(first_ts), int(last_ts), 0])
                span[0], span[1], span[2] = min(span[0], first_ts), max(span[1], last_ts), span[2] + samples
        reason = "disk budget exhausted"
        for device, (first_ts, last_ts, samples) in per_device.items():
            cur = db.execute("INSERT INTO gaps (device, first_ts, last_ts, samples, reason, created_ms) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (device, first_ts, last_ts, samples, reason, now_ms))
            event = DeviceEvent(device=device, ts=last_ts, kind="gap", severity=Severity.WARNING,
                                message=f"{samples} samples dropped by the agent: {reason}",
                                data={"first_ts": first_ts, "last_ts": last_ts, "samples": samples, "reason": reason})
            db.execute("INSERT INTO events (device, payload, gap_id) VALUES (?, ?, ?)",
                       (device, encode(event), cur.lastrowid))
        db.executemany("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value=excluded.value",
                       [("dropped_messages", self.dropped_messages), ("dropped_samples", self.dropped_samples)])
        return dropped

    def record_event(self, event: DeviceEvent) -> None:
        """Commit ``event`` to the outbox; the uplink reports it (at least once) when it can."""
        self._db.execute("INSERT INTO events (device, payload) VALUES (?, ?)", (event.device, encode(event)))

    def mark_priority(self, device: str, since_ts: int) -> int:
        """Raise ``device``'s unsent messages with samples at or after ``since_ts`` to priority (an anomaly
        or alarm window: dropped last under the disk budget). Returns how many were raised."""
        cur = self._db.execute("UPDATE messages SET priority=? WHERE device=? AND last_ts>=? AND priority<?",
                               (PRIORITY, device, since_ts, PRIORITY))
        return cur.rowcount

    # -- sending --------------------------------------------------------------------------------
    def pending(self, device: str, *, after_id: int = 0, upto_id: int | None = None, limit: int = 1000,
                exclude: frozenset[int] | set[int] = frozenset()) -> list[Pending]:
        """``device``'s unacknowledged messages with ``after_id < id <= upto_id``, oldest first, not in ``exclude``."""
        hi = upto_id if upto_id is not None else 2**62
        rows = self._db.execute("SELECT id, device, seq, payload, last_ts FROM messages WHERE device = ? AND id > ? "
                                "AND id <= ? ORDER BY id LIMIT ?", (device, after_id, hi, limit + len(exclude)))
        out = [Pending(int(r[0]), str(r[1]), int(r[2]), bytes(r[3]), int(r[4])) for r in rows
               if int(r[0]) not in exclude]
        return out[:limit]

    def take(self, device: str, *, after_id: int = 0, upto_id: int | None = None, limit: int = 1000,
             exclude: frozenset[int] | set[int] = frozenset()) -> list[Pending]:
        """``pending`` for sending, coalesced: consecutive messages nobody has taken yet (same priority) are
        merged into one of up to ``max_samples_per_message`` samples under the first one's seq (the others'
        seqs were never seen and are simply not used). What is returned is marked taken in the same
        transaction, so its bytes never change again."""
        hi = upto_id if upto_id is not None else 2**62
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute("SELECT id, seq, priority, samples, payload, published, last_ts FROM messages "
                              "WHERE device = ? AND id > ? AND id <= ? ORDER BY id", (device, after_id, hi))
            groups: list[list[tuple[int, int, int, int, bytes, int, int]]] = []
            for row in rows:
                if row[0] in exclude:
                    continue
                last = groups[-1] if groups else None
                if (last is not None and not row[5] and not last[0][5] and row[2] == last[0][2]
                        and sum(r[3] for r in last) + row[3] <= self.max_samples):
                    last.append(row)
                elif len(groups) == limit:
                    break
                else:
                    groups.append([row])
            rows.close()
            out = [self._seal_group(device, g) for g in groups]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    def _seal_group(self, device: str, group: list[tuple[int, int, int, int, bytes, int, int]]) -> Pending:
        """Inside the caller's transaction: one message for ``group``, marked taken."""
        first = group[0]
        if len(group) == 1:
            if not first[5]:
                self._db.execute("UPDATE messages SET published=1 WHERE id=?", (first[0],))
            return Pending(int(first[0]), device, int(first[1]), bytes(first[4]), int(first[6]))
        samples = [s for r in group for s in decode_telemetry(bytes(r[4])).samples]
        payload = encode(Telemetry(device=device, seq=int(first[1]), samples=samples))
        self._db.execute("UPDATE messages SET payload=?, samples=?, last_ts=?, published=1 WHERE id=?",
                         (payload, len(samples), samples[-1].ts, first[0]))
        self._db.executemany("DELETE FROM messages WHERE id=?", [(r[0],) for r in group[1:]])
        self._bytes += len(payload) - sum(len(r[4]) for r in group)
        return Pending(int(first[0]), device, int(first[1]), payload, samples[-1].ts)

    def devices(self) -> list[str]:
        """Every device this journal has accepted data for (a small table: cheap to ask often)."""
        return [str(r[0]) for r in self._db.execute("SELECT device FROM devices")]

    def max_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])

    def ack(self, ids: Sequence[int]) -> None:
        """The broker has these: they leave the journal."""
        if not ids:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for mid in ids:
                row = db.execute("DELETE FROM messages WHERE id=? RETURNING LENGTH(payload)", (mid,)).fetchone()
                if row is not None:
                    self._bytes -= int(row[0])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. the disk is full)
                db.execute("ROLLBACK")
            raise

    def unsent_events(self, limit: int = 1000) -> list[OutEvent]:
        rows = self._db.execute("SELECT id, device, payload FROM events ORDER BY id LIMIT ?", (limit,))
        return [OutEvent(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def events_sent(self, ids: Sequence[int]) -> None:
        """The broker has these events: out of the outbox (a gap's record is marked sent)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for eid in ids:
                row = db.execute("DELETE FROM events WHERE id=? RETURNING gap_id", (eid,)).fetchone()
                if row is not None and row[0] is not None:
                    db.execute("UPDATE gaps SET sent=1 WHERE id=?", (row[0],))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. the disk is full)
                db.execute("ROLLBACK")
            raise

    # -- health ---------------------------------------------------------------------------------
    def stats(self) -> JournalStats:
        count, samples, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(samples), 0), MIN(first_ts) FROM messages").fetchone()
        events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return JournalStats(messages=int(count), bytes=self._bytes, samples=int(samples),
                            oldest_ts=None if oldest is None else int(oldest), dropped_messages=self.dropped_messages,
                            dropped_samples=self.dropped_samples, events_unsent=int(events))

    def last_accepted(self) -> dict[str, tuple[int, int]]:
        """Per device: (last accepted sample time, samples accepted over the journal's life)."""
        return {str(d): (int(t), int(n)) for d, t, n in self._db.execute("SELECT device, last_ts, accepted "
                                                                          "FROM devices")}
