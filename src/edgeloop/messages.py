"""The canonical, versioned message schema that crosses every arrow of the loop.

One module owns the wire format. Devices publish JSON; the platform decodes it
with msgspec (strict types, no coercion), so a wrong type is a clear error, not
a silently wrong number.

MQTT topic layout (``{tenant}`` and ``{device}`` are ids, ``[a-z0-9][a-z0-9_.-]*``)::

    edgeloop/v1/{tenant}/{device}/telemetry   device -> platform   Telemetry
    edgeloop/v1/{tenant}/{device}/event       device -> platform   DeviceEvent
    edgeloop/v1/{tenant}/{device}/status      device -> platform   "online"/"offline" (retained, LWT)
    edgeloop/v1/{tenant}/{device}/health      gateway -> platform  Heartbeat (every ``interval_s``)
    edgeloop/v1/{tenant}/{device}/cmd         platform -> device   Command
    edgeloop/v1/{tenant}/{device}/config      platform -> device   ConfigPush (retained): agent configuration
    edgeloop/v1/{tenant}/{device}/model       platform -> device   ModelPush: install or roll back a signed edge model

A gateway (the host running ``edgeloop agent``) is a registered device like any other, with its
own certificate; it is a gateway because it sends heartbeats, and the devices it lists in them
are the ones behind it.

A telemetry message::

    {"v": 1, "device": "pump-0001", "seq": 42,
     "samples": [{"ts": 1767225600000, "values": {"vib_x": 1.21, "bearing_temp": 48.2}}]}

``ts`` is milliseconds since the Unix epoch (UTC). ``seq`` increases by one per
message and never repeats for a device: the platform stores a (device, seq) at
most once, so a device may resend freely. A value of ``null`` means "sensor had
no valid reading" and is kept as missing, never as zero.

>>> raw = encode(Telemetry(device="pump-1", seq=1, samples=[Sample(ts=1000, values={"t": 1.5})]))
>>> decode_telemetry(raw).samples[0].values
{'t': 1.5}
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

import msgspec

SCHEMA_VERSION: Final = 1
TOPIC_ROOT: Final = "edgeloop/v1"
ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
CHANNEL_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
MAX_SAMPLES_PER_MESSAGE: Final = 1000
MAX_CHANNELS_PER_SAMPLE: Final = 64

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
ChannelName = Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN)]
TimestampMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_000)]  # up to year 9999
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


# Sample keys are only length-checked here: ingest refuses any key that is not a channel of the device's
# registered profile, whose names are pattern-checked (ChannelName) when the profile is created. A regex per
# key per sample was the largest single cost of decoding a 50-sample message.
SampleKey = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class Sample(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instant of one device: a timestamp and the value of each channel."""

    ts: TimestampMs
    values: Annotated[dict[SampleKey, float | None], msgspec.Meta(min_length=1, max_length=MAX_CHANNELS_PER_SAMPLE)]


class Telemetry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A device's batch of samples, identified by (device, seq)."""

    device: Id
    seq: Seq
    samples: Annotated[list[Sample], msgspec.Meta(min_length=1, max_length=MAX_SAMPLES_PER_MESSAGE)]
    v: int = SCHEMA_VERSION


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class DeviceEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Something a device reports that is not a measurement (a fault code, a restart)."""

    device: Id
    ts: TimestampMs
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    severity: Severity = Severity.INFO
    message: str = ""
    data: dict[str, str | int | float | bool | None] = {}
    v: int = SCHEMA_VERSION


MAX_COMMAND_TTL_MS: Final = 24 * 3_600_000  # a command lives at most a day (the agent's ledger keeps two)


class Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Set ``action`` (an actuator configured on the gateway, e.g. ``speed``) of ``device`` to ``value``: from the
    platform on the device's ``cmd`` topic.

    - ``id``: the agent acts on an id once, whatever is redelivered (a repeat gets the first answer again).
    - ``key``: the idempotency key of what was decided (e.g. the policy and incident): a second command with the
      same key is refused as a duplicate, even under another id.
    - ``seq``: per device, increasing; a command older than one the agent already applied to the device is
      refused (a late delivery never undoes a newer setpoint).
    - ``expires``: the agent never starts it at or after this time (its own clock), however late it arrives.
    - ``trace``: the trace id that runs from the samples through the decision to the acknowledgement.

    The agent answers with a ``command`` event (``data``: id, key, seq, action, status ``applied`` /
    ``refused`` / ``failed``, reason, value, read_back, trace)."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    device: Id
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    ts: TimestampMs
    expires: TimestampMs
    action: Id
    value: float
    trace: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
    issued_by: Annotated[str, msgspec.Meta(max_length=200)] = "system"
    decision: Annotated[str, msgspec.Meta(max_length=64)] = ""  # the platform's decision record
    v: int = SCHEMA_VERSION


class SourceHealth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One source of an edge agent (a PLC, an OPC UA server, the simulator) as the agent sees it."""

    kind: str  # modbus | opcua | simulator
    state: str  # starting | ok | failing
    failures: int = 0  # consecutive failed attempts
    last_ok_ms: TimestampMs | None = None
    error: str = ""


class EdgeModelHealth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One local model of an edge agent: the version it runs and how it runs (a rollout's gates read these)."""

    version: Annotated[int, msgspec.Meta(ge=0)]
    on_probation: bool = False
    judged: bool = True  # its probation guardrail has judged a full window (or it is not on probation)
    scored: Annotated[int, msgspec.Meta(ge=0)] = 0  # windows scored since the version started here
    alarms: Annotated[int, msgspec.Meta(ge=0)] = 0  # anomaly episodes it began since then
    errors: Annotated[int, msgspec.Meta(ge=0)] = 0  # inferences that failed since then
    p95_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None  # inference latency over its last 256 windows
    latencies: Annotated[int, msgspec.Meta(ge=0)] = 0  # how many windows p95_ms is over


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An edge agent's honest health, sent every ``interval_s`` on its gateway's ``health`` topic.

    The platform marks the gateway offline when no heartbeat came for 3 intervals (or at once
    when its retained status says ``offline``).
    """

    gateway: Id
    ts: TimestampMs
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)]
    devices: list[Id]  # the devices behind this gateway (topology)
    journal_messages: int  # telemetry messages waiting in the journal (accepted, not yet acknowledged)
    journal_bytes: int
    journal_samples: int
    oldest_unsent_age_s: float | None  # age of the oldest sample not yet acknowledged; None when caught up
    sync_lag_s: float | None  # sample time -> broker acknowledgement, for the last acknowledged message
    dropped_samples: int  # dropped by the disk budget since the journal was created (each drop is a gap event)
    accepted_samples: int  # since the agent started
    uplink_connected: int  # device connections up
    uplink_links: int  # device connections wanted
    bytes_sent: int  # telemetry payload bytes acknowledged by the broker since the agent started
    bytes_raw: int  # what forwarding every raw sample would have taken (the bandwidth policy's saving)
    cpu_percent: float  # of one core, over the last interval
    rss_bytes: int
    sources: dict[str, SourceHealth]
    config_version: int  # the configuration the agent runs
    config_status: str = "applied"  # applied | rolled_back | rejected: what became of the last pushed one
    config_message: str = ""
    config_pushed: int | None = None  # the pushed version config_status is about (None: no push seen)
    agent_version: str = ""
    models: Annotated[dict[str, EdgeModelHealth], msgspec.Meta(max_length=64)] = {}  # local models, by name
    v: int = SCHEMA_VERSION


class ConfigPush(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A new agent configuration for a gateway (``agent.yaml`` text), retained on its ``config`` topic.

    The agent applies a version greater than the one it runs, atomically, and falls back to the
    previous configuration if the new sources fail; it reports the outcome as a ``config`` event
    (``data``: version, status, error) and in every heartbeat.
    """

    version: Annotated[int, msgspec.Meta(ge=1)]
    config: Annotated[str, msgspec.Meta(min_length=1, max_length=1_000_000)]
    ts: TimestampMs
    issued_by: str = "system"
    v: int = SCHEMA_VERSION


MAX_MODEL_BUNDLE_BYTES: Final = 16 * 2**20


class ModelPush(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Install a signed edge model (``bundle``: the ``.elm`` file's bytes, base64 in JSON) on a gateway, or roll
    it back to the version it kept as previous (``to_version``), on the gateway's ``model`` topic.

    ``id`` makes it idempotent: the agent acts on an id once (a retained push seen again does nothing), and
    installing the version it already runs does nothing new. The agent answers with a ``model`` event
    (``data``: id, name, action, status ``applied`` / ``refused`` / ``rolled_back``, version, reason).
    """

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: Id  # the model's name: the agent's ``models:`` entry of that name runs it
    action: Literal["install", "rollback"]
    ts: TimestampMs
    bundle: Annotated[bytes, msgspec.Meta(max_length=MAX_MODEL_BUNDLE_BYTES)] = b""  # for install
    to_version: Annotated[int, msgspec.Meta(ge=1)] | None = None  # for rollback
    issued_by: str = "system"
    v: int = SCHEMA_VERSION


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(msgspec.Struct, kw_only=True):
    """A condition on an asset that a person should look at.

    At most one alert per (asset, kind) is open at a time; repeats raise ``count``
    and ``last_seen``. Times are sample times (ms), not wall-clock times.
    """

    id: int = 0
    tenant: str
    asset: str
    device: str
    kind: str
    severity: Severity
    status: AlertStatus = AlertStatus.OPEN
    first_seen: int
    last_seen: int
    count: int = 1
    score: float = 0.0
    message: str = ""
    explanation: dict[str, float] = {}
    detector: str = ""
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    resolved_by: str | None = None
    resolved_at: int | None = None
    incident: int | None = None  # the incident it belongs to (alerts raised by the alert service)
    priority: float = 0.0  # severity x asset criticality x confidence, 0..100 (edgeloop.alerts.priority)
    confidence: float = 1.0
    suppressed: str | None = None  # why it did not page on its own (a SuppressionReason), if it did not
    cleared_at: int | None = None  # its condition ended then; it auto-resolves unless raised again
    model: str = ""  # provenance: the model version that raised it (``detector.pump@3``), or the rule's version


_telemetry_decoder: Final = msgspec.json.Decoder(Telemetry)
_event_decoder: Final = msgspec.json.Decoder(DeviceEvent)
_command_decoder: Final = msgspec.json.Decoder(Command)
_heartbeat_decoder: Final = msgspec.json.Decoder(Heartbeat)
_config_push_decoder: Final = msgspec.json.Decoder(ConfigPush)
_model_push_decoder: Final = msgspec.json.Decoder(ModelPush)
_encoder: Final = msgspec.json.Encoder()


def decode_telemetry(raw: bytes) -> Telemetry:
    """Decode and type-check a telemetry payload; raises ``msgspec.DecodeError`` or ``ValidationError``."""
    return _telemetry_decoder.decode(raw)


def decode_event(raw: bytes) -> DeviceEvent:
    return _event_decoder.decode(raw)


def decode_command(raw: bytes) -> Command:
    return _command_decoder.decode(raw)


def decode_heartbeat(raw: bytes) -> Heartbeat:
    return _heartbeat_decoder.decode(raw)


def decode_config_push(raw: bytes) -> ConfigPush:
    return _config_push_decoder.decode(raw)


def decode_model_push(raw: bytes) -> ModelPush:
    return _model_push_decoder.decode(raw)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


class TopicKind(enum.StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    HEALTH = "health"
    CMD = "cmd"
    CONFIG = "config"
    MODEL = "model"


def topic(tenant: str, device: str, kind: TopicKind) -> str:
    """The topic a device publishes (or receives) ``kind`` messages on."""
    return f"{TOPIC_ROOT}/{tenant}/{device}/{kind.value}"


def subscription(kind: TopicKind) -> str:
    """The wildcard subscription the platform uses for ``kind`` from every tenant and device."""
    return f"{TOPIC_ROOT}/+/+/{kind.value}"


def parse_topic(name: str) -> tuple[str, str, TopicKind] | None:
    """Split a topic into (tenant, device, kind); ``None`` if it is not an EdgeLoop topic."""
    parts = name.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        return None
    try:
        kind = TopicKind(parts[4])
    except ValueError:
        return None
    return parts[2], parts[3], kind
