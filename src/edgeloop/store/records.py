"""The records the store reads and writes, and the pure telemetry helpers (rollups, downsampling).

Telemetry is stored as *chunks*: one row per accepted message, keyed by
(device, seq), holding the message's timestamps and values as a compact
columnar blob (int64 ms timestamps, then float64 values row-major, NaN =
missing). The primary key makes deduplication the database's job: a chunk
that is already there is not written again, in the same transaction that
writes its rollups, so a resent message is never stored twice.

Alongside, a relational one-minute rollup per (device, channel, minute) with
count/min/max/sum lets a month of data chart from ~43k rows per channel.
Queries pick the raw chunks for short ranges and the rollups for long ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.safe_text import storable

ROLLUP_MS = 60_000
RAW_DEAD_LETTER_BYTES = 4096

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class TelemetryChunk:
    """One accepted message, in columnar form."""

    device: str
    seq: int
    channels: tuple[str, ...]
    ts: I64  # (n,) ascending ms
    values: F64  # (n, len(channels)); NaN = missing
    received_ms: int = 0
    tenant: str = ""
    asset: str = ""

    @property
    def t0(self) -> int:
        return int(self.ts[0])

    @property
    def t1(self) -> int:
        return int(self.ts[-1])

    def encode(self) -> bytes:
        return self.ts.astype("<i8", copy=False).tobytes() + self.values.astype("<f8", copy=False).tobytes()

    @classmethod
    def decode(cls, device: str, seq: int, channels: str, n: int, blob: bytes) -> TelemetryChunk:
        names = tuple(channels.split(",")) if channels else ()
        ts = np.frombuffer(blob, dtype="<i8", count=n).astype(np.int64)
        values = np.frombuffer(blob, dtype="<f8", offset=8 * n).reshape(n, len(names)).astype(np.float64)
        return cls(device=device, seq=seq, channels=names, ts=ts, values=values)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    code: str
    detail: str
    raw: bytes  # bounded to RAW_DEAD_LETTER_BYTES by the constructor helper
    size: int
    device: str | None = None
    tenant: str | None = None
    id: int = 0

    @classmethod
    def of(
        cls, *, received_ms: int, topic: str, code: str, detail: str, raw: bytes,
        device: str | None = None, tenant: str | None = None,
    ) -> DeadLetter:
        # The topic and detail may quote what was refused (a NUL character): a dead letter is always storable.
        return cls(
            received_ms=received_ms, topic=storable(topic), code=code, detail=storable(detail[:500]),
            raw=raw[:RAW_DEAD_LETTER_BYTES], size=len(raw), device=device and storable(device),
            tenant=tenant and storable(tenant),
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A device event as stored (e.g. ``gap``: samples an edge agent had to drop, with its reason)."""

    device: str
    tenant: str
    ts_ms: int
    kind: str
    severity: str
    message: str
    data: dict[str, Any]
    received_ms: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A batch of devices that may provision themselves with one claim (only its hash is kept)."""

    id: str
    tenant: str
    line: str
    profile: str
    claim_hash: str
    expires_ms: int
    created_ms: int
    created_by: str
    asset: str | None = None  # every device under this asset; None: each device gets its own asset
    serials: tuple[str, ...] | None = None  # None: any serial (each once)
    max_devices: int | None = None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str  # viewer | technician | operator | admin
    tenant: str | None  # None: every tenant (platform administrator)
    password_hash: str
    created_ms: int
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Credential:
    """A bearer token (``id`` = SHA-256 of the token) or an API key (``id`` = key id, ``secret_hash``)."""

    id: str
    kind: str  # "token" | "api_key"
    subject: str  # username (token) or the key's name (api key)
    role: str
    tenant: str | None
    created_ms: int
    expires_ms: int | None = None
    secret_hash: str = ""
    revoked_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what, when, from where, and how it ended."""

    ts_ms: int
    actor: str
    action: str
    target: str
    outcome: str  # "ok" or "refused"
    detail: str = ""
    source: str = ""
    id: int = 0


@dataclass(frozen=True, slots=True)
class GatewayHeartbeat:
    """An accepted heartbeat of a gateway (an edge agent's host), as ingest hands it to the store."""

    gateway: str
    tenant: str
    ts_ms: int  # the agent's time
    received_ms: int  # the platform's time
    heartbeat: str  # the full heartbeat JSON as received
    devices: tuple[str, ...]  # behind this gateway (topology), never devices of another tenant
    dropped_samples: int
    status: str | None = None  # the gateway's retained status ("online" / "offline") when known
    status_ms: int | None = None  # when that status arrived


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """A gateway as stored: its last heartbeat, when the platform received it, and its retained status."""

    id: str
    tenant: str
    heartbeat: str  # the full JSON of the last heartbeat
    received_ms: int
    devices: tuple[str, ...]
    status: str | None  # "online" / "offline" (retained status topic and last will); None: never said
    status_ms: int | None
    dropped_at_ms: int | None  # when a heartbeat last reported more dropped samples than the one before


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One pushed agent configuration (``version`` counts per gateway from 1)."""

    gateway: str
    tenant: str
    version: int
    config: str  # the agent YAML text, as pushed
    created_ms: int
    created_by: str
    status: str = "pending"  # pending | applied | rolled_back | rejected | superseded | failed
    status_ms: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFinding:
    """An onset finding of a model version, live (it paged through the alert rules) or shadow (recorded only)."""

    model: str  # name@version
    live: bool
    tenant: str
    asset: str
    device: str
    ts: int
    kind: str
    severity: str
    score: float
    explanation: dict[str, float]
    message: str
    id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftRecord:
    """A drift event as stored (``edgeloop.models.drift.DriftEvent`` with its tenant and id)."""

    tenant: str
    device: str
    asset: str | None
    profile: str
    model: str
    kind: str
    since_ms: int
    detected_ms: int
    figure: float
    threshold: float
    channels: dict[str, float]
    message: str
    id: int = 0


@dataclass(frozen=True, slots=True)
class ModelVersionRecord:
    """One stored, immutable model version (``edgeloop.models``): its signed canonical manifest (JSON text), the
    DER signature over exactly those bytes and the signer's certificate (PEM). The artifact itself is a file named
    by ``sha256`` (``models/artifacts.py``). Nothing updates or deletes a row."""

    name: str
    version: int
    kind: str
    profile: str | None
    format: str
    sha256: str
    size: int
    manifest: str
    signature: bytes
    signer: str
    created_ms: int
    created_by: str


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """An alias (``champion``, ``challenger``) of a model in a scope (``*`` the whole profile, ``group:NAME``)."""

    name: str
    alias: str
    scope: str
    version: int
    set_ms: int
    set_by: str
    reason: str


@dataclass(frozen=True, slots=True)
class ModelAliasEvent:
    """One change of an alias, kept forever (what rollback and the lineage page read). ``action``: ``set``,
    ``rollback`` or ``clear``; ``version`` None: the alias was removed; ``previous`` None: it was not set."""

    name: str
    alias: str
    scope: str
    action: str
    version: int | None
    previous: int | None
    ts: int
    set_by: str
    reason: str
    id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignRecord:
    """A rollout campaign as stored: its spec and engine state as JSON (``edgeloop.campaigns.engine``).
    ``active``: the campaign still needs the service (running, or finished with its last actions not yet
    applied); ``phase`` mirrors the state's, for listing without decoding it."""

    id: str
    payload: str
    subject: str
    spec: str
    state: str
    phase: str
    active: bool
    created_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Series:
    ts: list[int]
    avg: list[float | None]
    min: list[float | None]
    max: list[float | None]


@dataclass(frozen=True, slots=True)
class TelemetryQuery:
    device: str
    start: int
    end: int
    bucket_ms: int
    series: dict[str, Series]
    source: str  # "raw" or "rollup"


RollupRow = tuple[str, str, int, int, float, float, float]  # device, channel, bucket, n, min, max, sum


def rollup_rows(chunks: Iterable[TelemetryChunk], bucket_ms: int = ROLLUP_MS) -> list[RollupRow]:
    """Aggregate chunks into one row per (device, channel, bucket); NaN is skipped, not counted.

    Vectorised per (device, channel set): one sort and four ``reduceat`` calls for all channels at once.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[TelemetryChunk]] = {}
    for chunk in chunks:
        groups.setdefault((chunk.device, chunk.channels), []).append(chunk)
    acc: dict[tuple[str, str, int], list[float]] = {}
    for (device, channels), group in groups.items():
        ts = np.concatenate([c.ts for c in group]) if len(group) > 1 else group[0].ts
        values = np.concatenate([c.values for c in group]) if len(group) > 1 else group[0].values
        buckets = ts // bucket_ms * bucket_ms
        order = np.argsort(buckets, kind="stable")
        buckets, values = buckets[order], values[order]
        uniq, first = np.unique(buckets, return_index=True)
        valid = ~np.isnan(values)
        counts = np.add.reduceat(valid.astype(np.int64), first, axis=0)
        sums = np.add.reduceat(np.where(valid, values, 0.0), first, axis=0)
        lows = np.fmin.reduceat(values, first, axis=0)
        highs = np.fmax.reduceat(values, first, axis=0)
        for i, j in zip(*np.nonzero(counts), strict=True):
            key = (device, channels[j], int(uniq[i]))
            n, lo, hi, total = float(counts[i, j]), float(lows[i, j]), float(highs[i, j]), float(sums[i, j])
            cur = acc.get(key)
            if cur is None:
                acc[key] = [n, lo, hi, total]
            else:  # the same device under two channel sets in one batch (its profile changed)
                cur[0] += n
                cur[1] = min(cur[1], lo)
                cur[2] = max(cur[2], hi)
                cur[3] += total
    return [(d, c, b, int(v[0]), v[1], v[2], v[3]) for (d, c, b), v in acc.items()]


def choose_bucket(start: int, end: int, points: int) -> int:
    """Bucket width (ms) that gives at most ``points`` buckets; a multiple of a minute past one minute."""
    points = max(1, min(points, 10_000))
    width = max(1, math.ceil((end - start) / points))
    if width >= ROLLUP_MS:
        width = math.ceil(width / ROLLUP_MS) * ROLLUP_MS
    return width


def downsample_raw(
    chunks: Sequence[TelemetryChunk], channels: Sequence[str], start: int, end: int, bucket_ms: int
) -> dict[str, Series]:
    """Bucket raw chunks into min/avg/max per channel over [start, end)."""
    out: dict[str, Series] = {}
    for channel in channels:
        parts_t: list[I64] = []
        parts_v: list[F64] = []
        for chunk in chunks:
            if channel not in chunk.channels:
                continue
            j = chunk.channels.index(channel)
            parts_t.append(chunk.ts)
            parts_v.append(chunk.values[:, j])
        if not parts_t:
            out[channel] = Series([], [], [], [])
            continue
        ts = np.concatenate(parts_t)
        vs = np.concatenate(parts_v)
        keep = (ts >= start) & (ts < end) & ~np.isnan(vs)
        ts, vs = ts[keep], vs[keep]
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
        if ts.size == 0:
            out[channel] = Series([], [], [], [])
            continue
        idx = (ts - start) // bucket_ms
        uniq, first = np.unique(idx, return_index=True)
        counts = np.diff(np.append(first, ts.size))
        sums = np.add.reduceat(vs, first)
        out[channel] = Series(
            ts=[int(start + b * bucket_ms) for b in uniq],
            avg=[float(x) for x in sums / counts],
            min=[float(x) for x in np.minimum.reduceat(vs, first)],
            max=[float(x) for x in np.maximum.reduceat(vs, first)],
        )
    return out


def series_from_rollups(
    rows: Iterable[tuple[str, int, int, float, float, float]], channels: Sequence[str], start: int, bucket_ms: int
) -> dict[str, Series]:
    """Turn (channel, bucket_index, n, min, max, sum) rows, ordered by channel and bucket, into series."""
    acc: dict[str, Series] = {c: Series([], [], [], []) for c in channels}
    for channel, b, n, lo, hi, total in rows:
        s = acc[channel]
        s.ts.append(int(start + b * bucket_ms))
        s.avg.append(total / n if n else None)
        s.min.append(lo)
        s.max.append(hi)
    return acc


def first_occurrences(chunks: Sequence[TelemetryChunk], inserted: set[tuple[str, int]]) -> list[bool]:
    """Mark as new only the first chunk of each inserted (device, seq); a repeat in the same batch is a duplicate."""
    out: list[bool] = []
    seen: set[tuple[str, int]] = set()
    for c in chunks:
        key = (c.device, c.seq)
        out.append(key in inserted and key not in seen)
        seen.add(key)
    return out
