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

Disk budget: ``budget_bytes`` bounds the bytes of unsent payloads, telemetry *and* outbox
events. Over it, the oldest events (never gap reports) beyond a quarter of the budget go first,
then the oldest *normal* messages, *priority* ones (alarm and anomaly windows) only when no
normal one is left, and, with no telemetry left, the oldest events; each event drop is counted
(``dropped_events``). A drop becomes a gap record (device, first and last sample time, sample
and message counts, reason) and a ``gap`` event in the outbox, which the uplink reports to the
platform. Consecutive drops of a device are coalesced into its gap record while that record's
event has not been handed to the uplink yet, so an outage of any length adds one gap row and one
event per device, not one per commit; at most ``SENT_GAPS_KEPT`` reported gap rows are kept as
history. The file follows: SQLite reuses the pages freed by drops, and the WAL is checkpointed
and truncated at a size derived from the budget (``wal_pages``). Measured bound (tests/
test_recovery.py): the journal file and its WAL stay within ``2 x budget + 256 KiB``.

A journal found corrupt at start (not a database, truncated, failing ``quick_check``) is moved
aside to ``journal.db.corrupt-<UTC time>`` with its -wal/-shm, with an error-level message, and
the agent starts with an empty one (``moved_aside``); the file and its folder are private (0600
in 0700).

Events (gaps, fail-safe actions, overrides, local anomalies, configuration changes) wait in
the ``events`` outbox, committed like telemetry and deleted when the broker acknowledges them.

Commands: the ``commands`` ledger records each platform command before its write (``command_start``, status
``executing``, committed and fsynced like telemetry) and its answer with the answer's outbox event in one
transaction (``command_answer``). A redelivered id gets its stored answer again; a command found ``executing`` at
start was interrupted mid-write and is answered ``failed``, never executed again. Rows live
``COMMAND_KEEP_MS`` (twice the longest command lifetime: an older command is refused as expired anyway).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeloop.file_modes import create_private_file, private_dir, tighten
from edgeloop.messages import (
    MAX_COMMAND_TTL_MS,
    Command,
    DeviceEvent,
    Sample,
    Severity,
    Telemetry,
    decode_telemetry,
    encode,
)
from edgeloop.sqlite_files import inspect, move_aside, side_files

log = logging.getLogger(__name__)
FsyncPolicy = Literal["commit", "os"]
NORMAL, PRIORITY = 0, 1
EVENT_SHARE = 4  # over the budget, events beyond 1/EVENT_SHARE of it go first (oldest first, never gap reports)
MEMORY = ":memory:"
SENT_GAPS_KEPT = 100  # reported gap rows kept as history; older ones are deleted
GAP_REASON = "disk budget exhausted"
COMMAND_KEEP_MS = 2 * MAX_COMMAND_TTL_MS


def wal_pages(budget_bytes: int, page_size: int = 4096) -> int:
    """WAL auto-checkpoint size for a budget: a quarter of it, between 16 and SQLite's default 1000 pages."""
    return max(16, min(1000, budget_bytes // 4 // page_size))

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
    sent INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 1  -- coalesced: how many dropped messages this gap covers
);
-- The outbox of device events the agent reports (gaps, fail-safe actions, overrides, anomalies,
-- configuration changes): committed like telemetry, deleted when the broker acknowledges them.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    payload BLOB NOT NULL,
    gap_id INTEGER,
    taken INTEGER NOT NULL DEFAULT 0  -- handed to the uplink: its bytes are final (no more coalescing)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- The command ledger: every platform command the agent saw, with what it did (executing, applied, refused,
-- failed) and its answer, so no id or idempotency key ever runs twice, across redeliveries and restarts.
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    answer BLOB,  -- the encoded answer event, once there is one
    value REAL NOT NULL DEFAULT 0  -- the value asked for
);
CREATE INDEX IF NOT EXISTS commands_by_key ON commands (key);
CREATE INDEX IF NOT EXISTS commands_by_device ON commands (device, status, seq);
CREATE INDEX IF NOT EXISTS commands_by_action ON commands (device, action, status, received_ms);
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
    dropped_events: int = 0  # outbox events dropped by the disk budget
    event_bytes: int = 0


class Journal:
    """Synchronous; the agent calls it from one worker thread."""

    def __init__(self, path: Path, *, fsync: FsyncPolicy = "commit", budget_bytes: int = 256 * 2**20,
                 max_samples_per_message: int = 600) -> None:
        """``path`` ``:memory:``: a journal that survives nothing (the agent's last resort when no file opens)."""
        self.path = path
        self.moved_aside: list[Path] = []
        if str(path) != MEMORY:
            private_dir(path.parent)
            self.moved_aside = self._set_aside_if_corrupt(path)
            create_private_file(path)  # 0600 from the start; SQLite gives its -wal and -shm the same mode
        self.budget_bytes = budget_bytes
        self.max_samples = max_samples_per_message
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'commit' else 'NORMAL'}")
        pages = wal_pages(budget_bytes)
        self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
        self._db.execute(f"PRAGMA journal_size_limit={pages * 4096}")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()[0])
        self._event_bytes = int(self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM events")
                                .fetchone()[0])
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self.dropped_messages = int(counters.get("dropped_messages", 0))
        self.dropped_samples = int(counters.get("dropped_samples", 0))
        self.dropped_events = int(counters.get("dropped_events", 0))

    @staticmethod
    def _set_aside_if_corrupt(path: Path) -> list[Path]:
        """A journal that is not a database or fails ``quick_check`` is moved aside (with its -wal/-shm);
        the agent then starts with an empty one: its fail-safe rules must run, whatever the disk holds."""
        found = inspect(path)
        if found.state != "corrupt":
            for f in [path, *side_files(path)]:
                tighten(f)
            return []
        moved = move_aside(path)
        log.error("the journal %s is corrupt (%s): moved it aside to %s and started an empty journal; samples "
                  "and events it held are not forwarded", path, found.detail, ", ".join(str(m) for m in moved))
        return moved

    def _add_missing_columns(self) -> None:
        """A journal written by an older agent: what it holds counts as already handed out once."""
        for table, column in (("messages", "published"), ("events", "taken")):
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER NOT NULL DEFAULT 1")
        if "messages" not in {r[1] for r in self._db.execute("PRAGMA table_info(gaps)")}:
            self._db.execute("ALTER TABLE gaps ADD COLUMN messages INTEGER NOT NULL DEFAULT 1")
        if "value" not in {r[1] for r in self._db.execute("PRAGMA table_info(commands)")}:
            self._db.execute("ALTER TABLE commands ADD COLUMN value REAL NOT NULL DEFAULT 0")

    @property
    def used_bytes(self) -> int:
        """What the disk budget counts: unsent telemetry and outbox event payloads."""
        return self._bytes + self._event_bytes

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
        """Inside the caller's transaction: drop oldest normal, then oldest priority messages, then oldest
        events (never a gap report), until under budget; record the drops as coalesced gaps."""
        if self.used_bytes <= self.budget_bytes:
            return []
        db = self._db
        self._drop_events(self.budget_bytes // EVENT_SHARE)
        dropped: list[Pending] = []
        per_device: dict[str, list[int]] = {}
        for priority in (NORMAL, PRIORITY):
            rows = db.execute("SELECT id, device, seq, first_ts, last_ts, samples, LENGTH(payload) FROM messages "
                              "WHERE priority=? ORDER BY id", (priority,))
            for mid, device, seq, first_ts, last_ts, samples, size in rows.fetchall():
                if self.used_bytes <= self.budget_bytes:
                    break
                db.execute("DELETE FROM messages WHERE id=?", (mid,))
                self._bytes -= int(size)
                self.dropped_messages += 1
                self.dropped_samples += int(samples)
                dropped.append(Pending(int(mid), str(device), int(seq), b""))
                span = per_device.setdefault(str(device), [int(first_ts), int(last_ts), 0, 0])
                span[0], span[1] = min(span[0], first_ts), max(span[1], last_ts)
                span[2], span[3] = span[2] + samples, span[3] + 1
        for device, (first_ts, last_ts, samples, messages) in per_device.items():
            self._record_gap(device, first_ts, last_ts, samples, messages, now_ms)
        if self.used_bytes > self.budget_bytes:  # no telemetry left to drop
            self._drop_events(max(0, self.budget_bytes - self._bytes))
        db.execute("DELETE FROM gaps WHERE sent=1 AND id NOT IN (SELECT id FROM gaps WHERE sent=1 "
                   "ORDER BY id DESC LIMIT ?)", (SENT_GAPS_KEPT,))
        db.executemany("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value=excluded.value",
                       [("dropped_messages", self.dropped_messages), ("dropped_samples", self.dropped_samples),
                        ("dropped_events", self.dropped_events)])
        return dropped

    def _drop_events(self, keep_bytes: int) -> None:
        """Inside the caller's transaction: drop the oldest events (never a gap report) down to ``keep_bytes``."""
        if self._event_bytes <= keep_bytes:
            return
        rows = self._db.execute("SELECT id, LENGTH(payload) FROM events WHERE gap_id IS NULL ORDER BY id").fetchall()
        for eid, size in rows:
            if self._event_bytes <= keep_bytes:
                break
            self._db.execute("DELETE FROM events WHERE id=?", (eid,))
            self._event_bytes -= int(size)
            self.dropped_events += 1

    def _record_gap(self, device: str, first_ts: int, last_ts: int, samples: int, messages: int,
                    now_ms: int) -> None:
        """Extend ``device``'s gap whose event the uplink has not taken yet, or open a new one."""
        db = self._db
        row = db.execute("SELECT g.id, g.first_ts, g.last_ts, g.samples, g.messages, e.id, LENGTH(e.payload) "
                         "FROM gaps g JOIN events e ON e.gap_id = g.id WHERE g.device=? AND g.sent=0 AND e.taken=0 "
                         "ORDER BY g.id DESC LIMIT 1", (device,)).fetchone()
        if row is not None:
            gid, first_ts, last_ts = int(row[0]), min(first_ts, int(row[1])), max(last_ts, int(row[2]))
            samples, messages = samples + int(row[3]), messages + int(row[4])
            db.execute("UPDATE gaps SET first_ts=?, last_ts=?, samples=?, messages=? WHERE id=?",
                       (first_ts, last_ts, samples, messages, gid))
            payload = encode(self._gap_event(device, first_ts, last_ts, samples, messages))
            db.execute("UPDATE events SET payload=? WHERE id=?", (payload, row[5]))
            self._event_bytes += len(payload) - int(row[6])
            return
        cur = db.execute("INSERT INTO gaps (device, first_ts, last_ts, samples, reason, created_ms, messages) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (device, first_ts, last_ts, samples, GAP_REASON, now_ms,
                                                          messages))
        payload = encode(self._gap_event(device, first_ts, last_ts, samples, messages))
        db.execute("INSERT INTO events (device, payload, gap_id) VALUES (?, ?, ?)", (device, payload, cur.lastrowid))
        self._event_bytes += len(payload)

    @staticmethod
    def _gap_event(device: str, first_ts: int, last_ts: int, samples: int, messages: int) -> DeviceEvent:
        return DeviceEvent(device=device, ts=last_ts, kind="gap", severity=Severity.WARNING,
                           message=f"{samples} samples dropped by the agent: {GAP_REASON}",
                           data={"first_ts": first_ts, "last_ts": last_ts, "samples": samples, "messages": messages,
                                 "reason": GAP_REASON})

    def record_event(self, event: DeviceEvent, *, now_ms: int | None = None) -> None:
        """Commit ``event`` to the outbox (within the disk budget); the uplink reports it (at least once)
        when it can."""
        self._commit_event(event.device, encode(event), int(time.time() * 1000) if now_ms is None else now_ms)

    def _commit_event(self, device: str, payload: bytes, now_ms: int, *, with_: tuple[str, tuple[object, ...]] | None
                      = None) -> None:
        """One transaction: ``with_`` (a statement and its parameters), the event into the outbox, the budget."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if with_ is not None:
                db.execute(*with_)
            db.execute("INSERT INTO events (device, payload) VALUES (?, ?)", (device, payload))
            self._event_bytes += len(payload)
            self._enforce_budget(now_ms)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._event_bytes = int(db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM events")
                                    .fetchone()[0])
            raise

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

    def unsent_events(self, limit: int = 1000, *,
                      take_for: frozenset[str] | set[str] = frozenset()) -> list[OutEvent]:
        """The outbox, oldest first; those of devices in ``take_for`` (connected: about to be published)
        are marked taken, so a gap report is never extended after its bytes may have left."""
        rows = self._db.execute("SELECT id, device, payload, taken FROM events ORDER BY id LIMIT ?",
                                (limit,)).fetchall()
        fresh = [(r[0],) for r in rows if not r[3] and r[1] in take_for]
        if fresh:
            self._db.executemany("UPDATE events SET taken=1 WHERE id=?", fresh)
        return [OutEvent(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def events_sent(self, ids: Sequence[int]) -> None:
        """The broker has these events: out of the outbox (a gap's record is marked sent)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for eid in ids:
                row = db.execute("DELETE FROM events WHERE id=? RETURNING gap_id, LENGTH(payload)", (eid,)).fetchone()
                if row is None:
                    continue
                self._event_bytes -= int(row[1])
                if row[0] is not None:
                    db.execute("UPDATE gaps SET sent=1 WHERE id=?", (row[0],))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. the disk is full)
                db.execute("ROLLBACK")
            raise

    # -- the command ledger ---------------------------------------------------------------------
    def command_seen(self, cmd: Command) -> tuple[str | None, bytes | None, str | None]:
        """``(status, answer, other)``: this id's status and stored answer (None, None: never seen), and the id of
        another command with the same idempotency key that was executed, or tried (None: none)."""
        row = self._db.execute("SELECT status, answer FROM commands WHERE id=?", (cmd.id,)).fetchone()
        other = self._db.execute("SELECT id FROM commands WHERE key=? AND id<>? AND status IN ('applied', "
                                 "'executing', 'failed') LIMIT 1", (cmd.key, cmd.id)).fetchone()
        return (None if row is None else str(row[0]), None if row is None or row[1] is None else bytes(row[1]),
                None if other is None else str(other[0]))

    def command_history(self, device: str, action: str) -> tuple[int | None, int | None]:
        """``(seq, at)``: the newest seq applied (or being applied) to ``device``, and when ``action`` of it last
        started a change (ms; None: never)."""
        seq = self._db.execute("SELECT MAX(seq) FROM commands WHERE device=? AND status IN ('applied', "
                               "'executing', 'failed')", (device,)).fetchone()[0]
        at = self._db.execute("SELECT MAX(received_ms) FROM commands WHERE device=? AND action=? AND status IN "
                              "('applied', 'executing', 'failed')", (device, action)).fetchone()[0]
        return (None if seq is None else int(seq)), (None if at is None else int(at))

    def command_start(self, cmd: Command, now_ms: int) -> None:
        """Record, durably, that ``cmd`` is about to be written to the machine (before the write)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM commands WHERE received_ms < ?", (now_ms - COMMAND_KEEP_MS,))
            self._db.execute("INSERT INTO commands VALUES (?, ?, ?, ?, ?, 'executing', ?, NULL, ?)",
                             (cmd.id, cmd.key, cmd.device, cmd.action, cmd.seq, now_ms, cmd.value))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def command_answer(self, cmd: Command, status: str, answer: DeviceEvent, now_ms: int) -> None:
        """Record what became of ``cmd`` and queue its answer event, in one transaction."""
        payload = encode(answer)
        self._commit_event(answer.device, payload, now_ms, with_=(
            "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "status=excluded.status, answer=excluded.answer",
            (cmd.id, cmd.key, cmd.device, cmd.action, cmd.seq, status, now_ms, payload, cmd.value)))

    def commands_interrupted(self) -> list[Command]:
        """The commands a stop interrupted between the ledger and the answer (status ``executing``), as far as
        the ledger knows them (no expiry, trace or decision: they are only answered)."""
        return [Command(id=str(r[0]), key=str(r[1]), device=str(r[2]), action=str(r[3]), seq=int(r[4]), ts=int(r[5]),
                        expires=int(r[5]), value=float(r[6]), trace="0" * 32) for r in self._db.execute(
            "SELECT id, key, device, action, seq, received_ms, value FROM commands WHERE status='executing' "
            "ORDER BY received_ms")]

    def resend_answer(self, device: str, answer: bytes) -> None:
        """Queue a stored answer again (the platform asked again: its first copy may be lost)."""
        self._db.execute("INSERT INTO events (device, payload) VALUES (?, ?)", (device, answer))
        self._event_bytes += len(answer)

    # -- health ---------------------------------------------------------------------------------
    def stats(self) -> JournalStats:
        count, samples, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(samples), 0), MIN(first_ts) FROM messages").fetchone()
        events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return JournalStats(messages=int(count), bytes=self._bytes, samples=int(samples),
                            oldest_ts=None if oldest is None else int(oldest), dropped_messages=self.dropped_messages,
                            dropped_samples=self.dropped_samples, events_unsent=int(events),
                            dropped_events=self.dropped_events, event_bytes=self._event_bytes)

    def last_accepted(self) -> dict[str, tuple[int, int]]:
        """Per device: (last accepted sample time, samples accepted over the journal's life)."""
        return {str(d): (int(t), int(n)) for d, t, n in self._db.execute("SELECT device, last_ts, accepted "
                                                                          "FROM devices")}
