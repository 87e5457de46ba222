"""The storage contract every backend fulfils, and the pure helpers they share.

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

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt

from edgeloop.assets import Asset, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.messages import Alert, AlertStatus
from edgeloop.registry import Registry
from edgeloop.safe_text import storable
from edgeloop.store.alerting import (
    AlertChanges,
    IncidentRecord,
    MaintenanceRecord,
    OverrideRecord,
    RuleSetRecord,
    SilenceRecord,
    SuppressionRecord,
    TimelineEntry,
    UndeliveredRecord,
    WorkOrderRecord,
)

if TYPE_CHECKING:
    from edgeloop.store.alerting import Label

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


class Store(abc.ABC):
    """What the platform needs from storage. Backends: SQLite (embedded) and PostgreSQL (production)."""

    backend: str

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- registry -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def put_tenant(self, tenant: Tenant) -> None: ...
    @abc.abstractmethod
    async def put_site(self, site: Site) -> None: ...
    @abc.abstractmethod
    async def put_line(self, line: Line) -> None: ...
    @abc.abstractmethod
    async def put_asset(self, asset: Asset) -> None: ...
    @abc.abstractmethod
    async def put_profile(self, profile: DeviceProfile) -> None: ...
    @abc.abstractmethod
    async def put_device(self, device: Device) -> None: ...
    @abc.abstractmethod
    async def load_registry(self) -> Registry: ...

    # -- telemetry ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def write_chunks(self, chunks: Sequence[TelemetryChunk]) -> list[bool]:
        """Store chunks not stored before, with their rollups, in one transaction.

        Returns, for each input chunk, True if it was new and is now stored, False if
        (device, seq) was already stored (or appears earlier in the same batch).
        """

    @abc.abstractmethod
    async def read_chunks(self, device: str, start: int, end: int) -> list[TelemetryChunk]:
        """Chunks of ``device`` overlapping [start, end), in time order."""

    @abc.abstractmethod
    async def read_rollups(
        self, device: str, channels: Sequence[str], start: int, end: int, bucket_ms: int
    ) -> list[tuple[str, int, int, float, float, float]]:
        """(channel, bucket_index, n, min, max, sum) re-bucketed to ``bucket_ms`` from ``start``."""

    @abc.abstractmethod
    async def telemetry_counts(self, device: str | None = None) -> tuple[int, int]:
        """(messages, samples) stored, for one device or all."""

    @abc.abstractmethod
    async def latest_sample_ms(self) -> dict[str, int]:
        """Newest stored sample time per registered device that has data."""

    @abc.abstractmethod
    async def first_sample_ms(self) -> dict[str, int]:
        """Oldest stored sample time per registered device that has data (when its data began)."""

    async def query_telemetry(
        self, device: str, channels: Sequence[str], start: int, end: int, points: int = 500
    ) -> TelemetryQuery:
        """Downsampled min/avg/max per channel over [start, end) in at most ``points`` buckets."""
        bucket = choose_bucket(start, end, points)
        if bucket >= ROLLUP_MS:
            rows = await self.read_rollups(device, channels, start, end, bucket)
            return TelemetryQuery(device, start, end, bucket, series_from_rollups(rows, channels, start, bucket),
                                  "rollup")
        chunks = await self.read_chunks(device, start, end)
        return TelemetryQuery(device, start, end, bucket, downsample_raw(chunks, channels, start, end, bucket), "raw")

    # -- dead letters ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...
    @abc.abstractmethod
    async def list_dead_letters(
        self, device: str | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[DeadLetter]: ...
    @abc.abstractmethod
    async def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per device ('' for those whose device is unknown)."""

    # -- device events --------------------------------------------------------------------------
    @abc.abstractmethod
    async def write_events(self, events: Sequence[StoredEvent]) -> int:
        """Store device events; one already stored (same device, kind, time and message) is skipped.
        Returns how many were new."""

    @abc.abstractmethod
    async def list_events(self, *, device: str | None = None, kind: str | None = None, limit: int = 100,
                          tenant: str | None = None) -> list[StoredEvent]:
        """Newest first."""

    # -- gateways -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def write_heartbeats(self, beats: Sequence[GatewayHeartbeat]) -> None:
        """Store each gateway's latest heartbeat and its device list (replacing the previous one)."""

    @abc.abstractmethod
    async def write_gateway_status(self, updates: Sequence[tuple[str, bool, int]]) -> None:
        """(gateway, online, at_ms): the retained status of gateways that are stored; others are skipped."""

    @abc.abstractmethod
    async def list_gateways(self, *, tenant: str | None = None) -> list[GatewayRecord]:
        """Every gateway (a device that sent a heartbeat), by id."""

    @abc.abstractmethod
    async def get_gateway(self, gateway: str) -> GatewayRecord | None: ...

    @abc.abstractmethod
    async def gateway_of(self, device: str) -> list[str]:
        """The gateways whose last heartbeat lists ``device`` (topology)."""

    @abc.abstractmethod
    async def add_gateway_config(self, *, gateway: str, tenant: str, config: str, created_ms: int,
                                 created_by: str, after: int = 0) -> GatewayConfig:
        """Store a configuration under the gateway's next version (atomically), status pending.

        The version is one more than both the highest stored one and ``after`` (the version the agent says it
        runs: an agent only applies a version greater than its own)."""

    @abc.abstractmethod
    async def list_gateway_configs(self, gateway: str, *, with_text: bool = False) -> list[GatewayConfig]:
        """Newest version first; ``config`` is "" unless ``with_text``."""

    @abc.abstractmethod
    async def get_gateway_config(self, gateway: str, version: int) -> GatewayConfig | None: ...

    @abc.abstractmethod
    async def latest_gateway_configs(self, *, tenant: str | None = None) -> dict[str, GatewayConfig]:
        """Each gateway's newest pushed configuration (without its text)."""

    @abc.abstractmethod
    async def set_gateway_config_status(self, gateway: str, version: int, status: str, error: str,
                                        at_ms: int) -> bool:
        """False if there is no such version."""

    # -- provisioning and audit -----------------------------------------------------------------
    @abc.abstractmethod
    async def put_enrollment(self, enrollment: Enrollment) -> None:
        """Create an enrollment; ConflictError if its id exists."""

    @abc.abstractmethod
    async def get_enrollment(self, enrollment_id: str) -> Enrollment | None: ...

    @abc.abstractmethod
    async def claim_serial(self, enrollment_id: str, serial: str, device: str, at_ms: int) -> bool:
        """Record that ``serial`` provisioned as ``device``; False if the serial was already used (atomic)."""

    @abc.abstractmethod
    async def provisioned_count(self, enrollment_id: str) -> int: ...

    @abc.abstractmethod
    async def audit(self, record: AuditRecord) -> None: ...

    @abc.abstractmethod
    async def put_user(self, user: User) -> None:
        """Create or replace a user."""

    @abc.abstractmethod
    async def get_user(self, username: str) -> User | None: ...

    @abc.abstractmethod
    async def list_users(self) -> list[User]: ...

    @abc.abstractmethod
    async def put_credential(self, credential: Credential) -> None: ...

    @abc.abstractmethod
    async def get_credential(self, credential_id: str) -> Credential | None: ...

    @abc.abstractmethod
    async def revoke_credential(self, credential_id: str, at_ms: int) -> bool:
        """False if there was no such unrevoked credential."""

    @abc.abstractmethod
    async def delete_user(self, username: str) -> bool:
        """False if there was no such user. Its tokens stay until ``revoke_tokens`` (callers do both)."""

    @abc.abstractmethod
    async def revoke_tokens(self, username: str, at_ms: int) -> int:
        """Revoke every unrevoked bearer token of ``username``; how many."""

    @abc.abstractmethod
    async def delete_expired_tokens(self, now_ms: int, *, limit: int) -> int:
        """Delete at most ``limit`` bearer tokens that expired by ``now_ms``; how many."""

    @abc.abstractmethod
    async def trim_tokens(self, username: str, *, keep: int) -> int:
        """Delete all but the ``keep`` newest bearer tokens of ``username``; how many were deleted."""

    @abc.abstractmethod
    async def list_audit(self, *, limit: int = 200, action: str | None = None) -> list[AuditRecord]:
        """Newest first."""

    # -- alerts ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def raise_alert(self, alert: Alert) -> Alert:
        """Open ``alert``, or if one for (asset, kind) is not resolved yet, merge into it (count, last_seen)."""

    @abc.abstractmethod
    async def list_alerts(
        self, *, status: AlertStatus | None = None, asset: str | None = None, tenant: str | None = None,
        limit: int = 200, incident: int | None = None, unresolved: bool = False, since_ms: int | None = None,
    ) -> list[Alert]:
        """Newest first; ``unresolved``: open or acknowledged (any status but resolved); ``since_ms``: first seen
        then or later."""

    @abc.abstractmethod
    async def get_alert(self, alert_id: int) -> Alert:
        """Raises NotFoundError."""

    @abc.abstractmethod
    async def set_alert_status(self, alert_id: int, status: AlertStatus, *, by: str, at_ms: int) -> Alert:
        """Acknowledge or resolve; raises NotFoundError, ConflictError on an invalid transition."""

    # -- incidents (written by the alert service, the one writer; see store/alerting.py) -------------------
    @abc.abstractmethod
    async def reserve_ids(self, name: str, n: int) -> range:
        """Reserve ``n`` ids of ``alerts`` or ``incidents`` for this process (unique across processes)."""

    @abc.abstractmethod
    async def write_alert_changes(self, changes: AlertChanges) -> dict[int, int]:
        """Write one batch of alert-service output in one transaction. Returns {the engine's alert id: the
        stored id} for new alerts that merged into an already open alert of the same (asset, kind)."""

    @abc.abstractmethod
    async def list_incidents(self, *, statuses: Sequence[str] | None = None, tenant: str | None = None,
                             asset: str | None = None, limit: int = 200,
                             opened_from: int | None = None) -> list[IncidentRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def get_incident(self, incident_id: int) -> IncidentRecord:
        """Raises NotFoundError."""

    @abc.abstractmethod
    async def incident_timeline(self, incident_id: int) -> list[TimelineEntry]:
        """Oldest first."""

    @abc.abstractmethod
    async def list_suppressions(self, *, asset: str | None = None, rule: str | None = None,
                                since_ms: int | None = None, until_ms: int | None = None,
                                tenant: str | None = None, reason: str | None = None,
                                limit: int = 200) -> list[SuppressionRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def put_maintenance(self, window: MaintenanceRecord) -> None:
        """ConflictError if its id exists."""

    @abc.abstractmethod
    async def list_maintenance(self, *, tenant: str | None = None, ending_after: int | None = None
                               ) -> list[MaintenanceRecord]: ...

    @abc.abstractmethod
    async def put_silence(self, silence: SilenceRecord) -> None:
        """ConflictError if its id exists."""

    @abc.abstractmethod
    async def end_silence(self, silence_id: str, at_ms: int) -> SilenceRecord:
        """NotFoundError if there is no such silence still running."""

    @abc.abstractmethod
    async def list_silences(self, *, tenant: str | None = None, active_at: int | None = None
                            ) -> list[SilenceRecord]: ...

    @abc.abstractmethod
    async def put_rules(self, text: str, *, by: str, at_ms: int, tenant: str | None = None) -> int:
        """Store a rule document as the next version of ``tenant``'s (None: the platform's default); returns the
        version."""

    @abc.abstractmethod
    async def latest_rules(self) -> RuleSetRecord | None:
        """The platform's default rule document in force."""

    @abc.abstractmethod
    async def tenant_rules(self) -> list[RuleSetRecord]:
        """Each tenant's own rule document in force (tenants without one use the default)."""

    @abc.abstractmethod
    async def put_labels(self, labels: Sequence[Label]) -> None:
        """Store technician feedback (one row per label; a later label on an alert does not replace one)."""

    @abc.abstractmethod
    async def list_labels(self, *, tenant: str | None = None, asset: str | None = None, alert: int | None = None,
                          since_ms: int | None = None, limit: int = 1_000_000) -> list[Label]:
        """Oldest first."""

    @abc.abstractmethod
    async def put_override(self, override: OverrideRecord) -> None: ...

    @abc.abstractmethod
    async def list_overrides(self) -> list[OverrideRecord]: ...

    @abc.abstractmethod
    async def put_work_order(self, order: WorkOrderRecord) -> None:
        """ConflictError if its id exists."""

    @abc.abstractmethod
    async def close_work_order(self, order_id: str, *, at_ms: int, downtime_end: int | None,
                               by: str) -> WorkOrderRecord:
        """NotFoundError if there is no such open work order."""

    @abc.abstractmethod
    async def list_work_orders(self, *, tenant: str | None = None, since_ms: int | None = None,
                               limit: int = 100_000) -> list[WorkOrderRecord]:
        """Oldest first: the open ones and those closed since ``since_ms``."""

    @abc.abstractmethod
    async def put_undelivered(self, records: Sequence[UndeliveredRecord]) -> None: ...

    @abc.abstractmethod
    async def list_undelivered(self, *, tenant: str | None = None, limit: int = 200) -> list[UndeliveredRecord]:
        """Newest first."""


ALERT_TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED}),
    AlertStatus.ACKNOWLEDGED: frozenset({AlertStatus.RESOLVED}),
    AlertStatus.RESOLVED: frozenset(),
}

LATEST_SAMPLE_SQL = (  # one index probe per registered device, not a scan of every chunk
    "SELECT id, (SELECT t1 FROM chunks c WHERE c.device = d.id ORDER BY t0 DESC LIMIT 1) AS t FROM devices d"
)
FIRST_SAMPLE_SQL = (  # the same, from the other end of the (device, t0) index
    "SELECT id, (SELECT t0 FROM chunks c WHERE c.device = d.id ORDER BY t0 ASC LIMIT 1) AS t FROM devices d"
)

ALERT_COLUMNS = (
    "id", "tenant", "asset", "device", "kind", "severity", "status", "first_seen", "last_seen", "count", "score",
    "message", "explanation", "detector", "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at",
    "incident", "priority", "confidence", "suppressed", "cleared_at",
)

GATEWAY_COLUMNS = "id, tenant, heartbeat, received, status, status_ms, dropped_at"
GATEWAY_CONFIG_COLUMNS = "gateway, tenant, version, {text}, created_ms, created_by, status, status_ms, error"
LATEST_GATEWAY_CONFIGS_SQL = (  # one index probe per gateway (primary key (gateway, version))
    "SELECT " + GATEWAY_CONFIG_COLUMNS.format(text="''") + " FROM gateway_configs c "
    "WHERE version = (SELECT max(version) FROM gateway_configs m WHERE m.gateway = c.gateway)"
)
