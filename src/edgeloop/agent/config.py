"""The edge agent's configuration: ``agent.yaml``, validated with errors that name the line.

Example (every key is documented in ``docs/agent.md``)::

    agent:
      tenant: demo
      data_dir: ./agent-data          # the journal lives here
      fsync: commit                   # commit | os  (see journal.py for the guarantee of each)
      budget_mb: 256
    uplink:
      mqtt: 127.0.0.1:11883
      tls: ./identities               # optional: DEVICE.crt/.key per device and ca.crt (mutual TLS)
      backfill_per_s: 20              # messages per second of backlog replay, beside live data
    sources:
      - name: press-plc
        kind: modbus
        host: 10.0.0.7
        port: 502
        unit: 1
        poll_ms: 1000
        device: press-1
        points:
          - {channel: force, address: 0, type: float32, word_order: big, scale: 1.0, unit: kN}
          - {channel: temp, address: 2, table: input, type: int16, scale: 0.1, unit: degC}
      - name: oven
        kind: opcua
        url: opc.tcp://10.0.0.8:4840
        device: oven-1
        sampling_ms: 500
        nodes:
          - {channel: temp, node: "ns=2;s=Oven.Temp", unit: degC}
      - name: fleet
        kind: simulator
        devices: 3
        seed: 7
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from edgeloop.errors import ConfigError
from edgeloop.messages import CHANNEL_PATTERN, ID_PATTERN
from edgeloop.yaml_lines import convert, load_yaml

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
DeviceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Channel = Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN)]
PollMs = Annotated[int, msgspec.Meta(ge=10, le=3_600_000)]


class AgentSection(msgspec.Struct, forbid_unknown_fields=True):
    tenant: DeviceId
    gateway: DeviceId  # this gateway's own device id: its heartbeat, its configuration topic, its certificate
    heartbeat_s: Annotated[float, msgspec.Meta(ge=0.2, le=3600)] = 10.0
    config_verify_s: Annotated[float, msgspec.Meta(ge=0.5, le=600)] = 15.0  # pushed sources must be up by then
    data_dir: str = "agent-data"
    fsync: Literal["commit", "os"] = "commit"
    budget_mb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 256.0
    commit_ms: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 200
    # the CA chain (issuing CA, then root) a model's signer must chain to; default: uplink.tls's ca.crt
    models_trust: str | None = None


class UplinkSection(msgspec.Struct, forbid_unknown_fields=True):
    mqtt: Annotated[str, msgspec.Meta(pattern=r"^[^\s:]+:\d{1,5}$")] = "127.0.0.1:1883"
    tls: str | None = None
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    backfill_per_s: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = 50.0
    max_samples_per_message: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 600
    keepalive_s: Annotated[int, msgspec.Meta(ge=1, le=600)] = 10  # a silent link is declared dead after 1.5x

    @property
    def host(self) -> str:
        return self.mqtt.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.mqtt.rpartition(":")[2])


class ModbusPoint(msgspec.Struct, forbid_unknown_fields=True):
    channel: Channel
    address: Annotated[int, msgspec.Meta(ge=0, le=65_535)]
    table: Literal["holding", "input"] = "holding"
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "uint16"
    word_order: Literal["big", "little"] = "big"  # for 32-bit types: which register holds the high word
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class ModbusSource(msgspec.Struct, tag="modbus", tag_field="kind", forbid_unknown_fields=True):
    name: Name
    host: str
    device: DeviceId
    points: Annotated[list[ModbusPoint], msgspec.Meta(min_length=1, max_length=64)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)] = 502
    unit: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    poll_ms: PollMs = 1000
    timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1000


class OpcUaNode(msgspec.Struct, forbid_unknown_fields=True):
    channel: Channel
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]  # e.g. "ns=2;s=Oven.Temp"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class OpcUaSource(msgspec.Struct, tag="opcua", tag_field="kind", forbid_unknown_fields=True):
    name: Name
    url: Annotated[str, msgspec.Meta(pattern=r"^opc\.tcp://\S+$")]
    device: DeviceId
    nodes: Annotated[list[OpcUaNode], msgspec.Meta(min_length=1, max_length=256)]
    sampling_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)] = 1000  # subscription publishing interval
    poll_ms: PollMs = 1000  # how often the connection is checked
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 4000


class SimulatorSource(msgspec.Struct, tag="simulator", tag_field="kind", forbid_unknown_fields=True):
    name: Name
    devices: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    faulty: Annotated[int, msgspec.Meta(ge=0)] = 0
    seed: int = 1
    poll_ms: PollMs = 1000
    # put before each simulated device id (``hall-1-`` gives hall-1-pump-0001), so a gateway's simulated machines
    # never take the ids of the platform's own simulated fleet (pump-0001 ...)
    prefix: Annotated[str, msgspec.Meta(pattern=r"^([a-z0-9][a-z0-9_.\-]{0,40})?$")] = ""


SourceConfig = ModbusSource | OpcUaSource | SimulatorSource


class ModbusWrite(msgspec.Struct, tag="modbus", tag_field="kind", forbid_unknown_fields=True):
    """Write ``value`` to holding register ``address`` through Modbus source ``source``."""

    source: Name
    address: Annotated[int, msgspec.Meta(ge=0, le=65_535)]
    value: Annotated[int, msgspec.Meta(ge=0, le=65_535)]


class OpcUaWrite(msgspec.Struct, tag="opcua", tag_field="kind", forbid_unknown_fields=True):
    """Write ``value`` to node ``node`` through OPC UA source ``source``."""

    source: Name
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    value: float | int | bool


class ModbusTarget(msgspec.Struct, tag="modbus", tag_field="kind", forbid_unknown_fields=True):
    """Holding register(s) ``address`` of Modbus source ``source``: a value is written as
    ``(value - offset) / scale`` in ``type`` and read back the same way."""

    source: Name
    address: Annotated[int, msgspec.Meta(ge=0, le=65_535)]
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "uint16"
    word_order: Literal["big", "little"] = "big"
    scale: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    offset: float = 0.0


class OpcUaTarget(msgspec.Struct, tag="opcua", tag_field="kind", forbid_unknown_fields=True):
    """Node ``node`` of OPC UA source ``source`` (written with the node's own data type, read back)."""

    source: Name
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class Interlock(msgspec.Struct, forbid_unknown_fields=True):
    """While ``channel`` of ``device`` (a reading of this gateway) is above ``above``, below ``below`` or equal to
    ``equals`` (give one), the actuator does not move; a reading older than the actuator's ``max_age_s``, or none,
    holds it too."""

    name: Name
    device: DeviceId
    channel: Channel
    above: float | None = None
    below: float | None = None
    equals: float | None = None


class Actuator(msgspec.Struct, forbid_unknown_fields=True):
    """A setpoint the platform may command (``Command.action`` names it), inside a local safety envelope that no
    platform command can override: ``min``..``max``, at most ``max_step`` from the value read back before the
    write, at most one applied change per ``min_interval_s``, never while ``override`` (a channel of the device,
    e.g. a key switch) is non-zero or an interlock holds."""

    name: Name
    device: DeviceId
    write: ModbusTarget | OpcUaTarget
    min: float
    max: float
    max_step: Annotated[float, msgspec.Meta(gt=0)] | None = None
    min_interval_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    override: Channel | None = None
    interlocks: Annotated[list[Interlock], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    max_age_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0  # readings the checks rest on
    tolerance: Annotated[float, msgspec.Meta(ge=0)] | None = None  # read-back vs value (default: the scale)


class FailSafeRule(msgspec.Struct, forbid_unknown_fields=True):
    """``channel`` of ``device`` above ``above`` (or below ``below``) for ``for_s`` seconds -> ``action``.

    Runs in the agent, online or not. While ``override`` (a channel of the same device, e.g. a key
    switch read from the PLC) is non-zero, a person has taken over: the rule does not act, and says so.
    """

    name: Name
    device: DeviceId
    channel: Channel
    action: ModbusWrite | OpcUaWrite
    above: float | None = None
    below: float | None = None
    for_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 5.0
    override: Channel | None = None


class LocalModel(msgspec.Struct, forbid_unknown_fields=True):
    """A signed ONNX anomaly model scored on the agent over a per-device feature window (see ``inference.py``).

    ``name`` is the model's name (its manifest's); ``path`` a signed model file (``.elm``) to install if the
    agent does not run that version or a newer one yet (none: the platform pushes it, see ``edge_models.py``).
    A version installed less than ``probation_h`` ago is watched: over ``max_alarm_rate`` of its last
    ``guard_windows`` scored windows above threshold, or ``max_errors`` inference errors among them, and the agent
    goes back to the previous version by itself.
    """

    name: Name
    devices: Annotated[list[DeviceId], msgspec.Meta(min_length=1)]
    path: str | None = None
    every_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    threshold: float | None = None  # default: the threshold stored in the model
    probation_h: Annotated[float, msgspec.Meta(ge=0, le=8760)] = 24.0
    guard_windows: Annotated[int, msgspec.Meta(ge=5, le=100_000)] = 300
    max_alarm_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None  # default: from the model card
    max_errors: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 3


class BandwidthSection(msgspec.Struct, forbid_unknown_fields=True):
    """``raw`` forwards every sample; ``aggregate`` forwards per-channel statistics every ``aggregate_s``
    plus every raw sample from ``before_s`` before to ``after_s`` after a local anomaly or fail-safe."""

    mode: Literal["raw", "aggregate"] = "raw"
    aggregate_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    stats: Annotated[list[Literal["mean", "min", "max"]], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["mean"])  # "min" and "max" arrive as channels CHANNEL_min / CHANNEL_max
    before_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    after_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0


class ProvisionSection(msgspec.Struct, forbid_unknown_fields=True):
    """Zero-touch provisioning on first start: every device of this configuration (the gateway too) whose
    certificate is not in ``uplink.tls`` yet gets one with this claim (see ``self_provision.py``)."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$")]  # the platform's API
    claim: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]  # GROUP.SECRET from the enrollment
    ca: str | None = None  # the CA file to trust for an https URL (default: the system's)


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True):
    agent: AgentSection
    sources: Annotated[list[SourceConfig], msgspec.Meta(min_length=1)]
    uplink: UplinkSection = msgspec.field(default_factory=UplinkSection)
    provision: ProvisionSection | None = None
    rules: list[FailSafeRule] = msgspec.field(default_factory=list)
    models: list[LocalModel] = msgspec.field(default_factory=list)
    bandwidth: BandwidthSection = msgspec.field(default_factory=BandwidthSection)
    actuators: Annotated[list[Actuator], msgspec.Meta(max_length=256)] = msgspec.field(default_factory=list)
    version: Annotated[int, msgspec.Meta(ge=1)] = 1

    def resolve(self, base: Path) -> AgentConfig:
        """Paths in the file are relative to the file's folder."""
        data = str((base / self.agent.data_dir).resolve())
        tls = str((base / self.uplink.tls).resolve()) if self.uplink.tls else None
        trust = str((base / self.agent.models_trust).resolve()) if self.agent.models_trust else None
        models = [msgspec.structs.replace(m, path=str((base / m.path).resolve()) if m.path else None)
                  for m in self.models]
        provision = self.provision
        if provision is not None and provision.ca:
            provision = msgspec.structs.replace(provision, ca=str((base / provision.ca).resolve()))
        agent = msgspec.structs.replace(self.agent, data_dir=data, models_trust=trust)
        return msgspec.structs.replace(self, agent=agent,
                                       uplink=msgspec.structs.replace(self.uplink, tls=tls), models=models,
                                       provision=provision)


def parse_config(text: str, *, origin: str = "agent.yaml") -> AgentConfig:
    """Parse and validate; raises ConfigError naming the line and what is wrong."""
    doc, node = load_yaml(text, origin)
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'agent' and 'sources'")
    cfg = convert(doc, AgentConfig, origin=origin, node=node)
    names = [s.name for s in cfg.sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{origin}: source names must be unique; repeated: {', '.join(dupes)}")
    for src in cfg.sources:
        if isinstance(src, ModbusSource | OpcUaSource):
            channels = [p.channel for p in (src.points if isinstance(src, ModbusSource) else src.nodes)]
            if len(set(channels)) != len(channels):
                raise ConfigError(f"{origin}: source {src.name!r} maps a channel twice")
        if isinstance(src, SimulatorSource) and src.faulty > src.devices:
            raise ConfigError(f"{origin}: source {src.name!r} has faulty > devices")
    if cfg.provision is not None and not cfg.uplink.tls:
        raise ConfigError(f"{origin}: 'provision' needs 'uplink.tls', the folder the certificates are written to")
    _check_rules(cfg, origin)
    _check_actuators(cfg, origin)
    return cfg


def _check_rules(cfg: AgentConfig, origin: str) -> None:
    sources = {s.name: s for s in cfg.sources}
    for i, rule in enumerate(cfg.rules):
        where = f"{origin}: rules[{i}] ({rule.name})"
        if (rule.above is None) == (rule.below is None):
            raise ConfigError(f"{where}: give exactly one of 'above' or 'below'")
        target = sources.get(rule.action.source)
        if target is None:
            raise ConfigError(f"{where}: action source {rule.action.source!r} is not one of the sources "
                              f"({', '.join(sources)})")
        wanted = ModbusSource if isinstance(rule.action, ModbusWrite) else OpcUaSource
        if not isinstance(target, wanted):
            raise ConfigError(f"{where}: a {rule.action.__struct_config__.tag} action needs a "
                              f"{rule.action.__struct_config__.tag} source; {target.name!r} is not one")
    names = [r.name for r in cfg.rules] + [m.name for m in cfg.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{origin}: rule and model names must be unique; repeated: {', '.join(dupes)}")


def _check_actuators(cfg: AgentConfig, origin: str) -> None:
    sources = {s.name: s for s in cfg.sources}
    names = [f"{a.device}.{a.name}" for a in cfg.actuators]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{origin}: an actuator name is unique per device; repeated: {', '.join(dupes)}")
    for i, act in enumerate(cfg.actuators):
        where = f"{origin}: actuators[{i}] ({act.name})"
        if act.min > act.max:
            raise ConfigError(f"{where}: min {act.min:g} is above max {act.max:g}")
        source = sources.get(act.write.source)
        wanted = ModbusSource if isinstance(act.write, ModbusTarget) else OpcUaSource
        kind = act.write.__struct_config__.tag
        if source is None or not isinstance(source, wanted):
            raise ConfigError(f"{where}: write source {act.write.source!r} is not a {kind} source of this file")
        if source.device != act.device:
            raise ConfigError(f"{where}: source {source.name!r} reads device {source.device!r}, not {act.device!r}")
        for lock in act.interlocks:
            if sum(x is not None for x in (lock.above, lock.below, lock.equals)) != 1:
                raise ConfigError(f"{where}: interlock {lock.name!r}: give exactly one of above, below, equals")


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the agent configuration {path}: {exc.strerror}") from None
    return parse_config(text, origin=str(path)).resolve(path.parent)
