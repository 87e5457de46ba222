"""Remote configuration: the platform pushes a new ``agent.yaml`` (a ``ConfigPush`` on the gateway's
retained ``config`` topic); the agent validates it, applies it atomically and keeps it only if
its sources come up.

What a push may change: sources, rules, models and the bandwidth policy. The ``agent`` and
``uplink`` sections (identity, journal, broker) change only with a restart on the gateway, so
a push that changes them is rejected. The version is the push's, not the YAML's ``version:``.
A kept configuration is written atomically to ``DATA_DIR/pushed-config.json`` and is what the
agent runs after a restart while its version is above the local file's.

Every outcome (applied, rolled back, rejected) is a ``config`` event on the gateway's event
topic and is in every heartbeat.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from edgeloop.agent.config import AgentConfig, load_config, parse_config
from edgeloop.errors import ConfigError
from edgeloop.messages import ConfigPush, DeviceEvent, Severity, decode_config_push, encode

PUSHED_FILE = "pushed-config.json"
Status = Literal["applied", "rolled_back", "rejected"]


@dataclass
class ConfigOutcome:
    """What became of the last configuration push, and which version runs."""

    pushed: int  # the version this outcome is about
    status: Status = "applied"
    message: str = ""
    running: int = 0


@dataclass(frozen=True)
class PushedConfig:
    push: ConfigPush
    cfg: AgentConfig

    def persist(self, path: Path) -> None:
        """Atomically (write, fsync, rename, fsync the folder): the old file or the new one, never half."""
        tmp = path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:  # private
            f.write(encode(self.push))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _runtime_part(pushed: AgentConfig, base: AgentConfig, version: int) -> AgentConfig:
    return msgspec.structs.replace(base, sources=pushed.sources, rules=pushed.rules, models=pushed.models,
                                   bandwidth=pushed.bandwidth, version=version)


def check_push(payload: bytes, current: AgentConfig, base: Path) -> PushedConfig | ConfigOutcome | None:
    """A push to apply, a rejection, or None for a version not newer than the running one (a retained
    message delivered again on reconnect)."""
    try:
        push = decode_config_push(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return ConfigOutcome(0, "rejected", f"not a configuration push: {exc}", current.version)
    if push.version <= current.version:
        return None
    try:
        cfg = parse_config(push.config, origin=f"pushed configuration v{push.version}").resolve(base)
    except ConfigError as exc:
        return ConfigOutcome(push.version, "rejected", str(exc), current.version)
    changed = [name for name in ("agent", "uplink") if getattr(cfg, name) != getattr(current, name)]
    if changed:
        return ConfigOutcome(push.version, "rejected",
                             f"the {' and '.join(changed)} section(s) changed: that needs a restart on the gateway",
                             current.version)
    return PushedConfig(push, _runtime_part(cfg, current, push.version))


def load_effective_config(path: Path) -> AgentConfig:
    """The local file, or the last kept push when its version is newer (sources, rules, models and
    bandwidth from the push; agent and uplink always from the local file)."""
    local = load_config(path)
    pushed_file = Path(local.agent.data_dir) / PUSHED_FILE
    if not pushed_file.exists():
        return local
    try:
        push = decode_config_push(pushed_file.read_bytes())
        if push.version <= local.version:
            return local
        cfg = parse_config(push.config, origin=f"{pushed_file} (v{push.version})").resolve(path.parent)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ConfigError) as exc:
        raise ConfigError(f"the pushed configuration {pushed_file} is unreadable ({exc}); remove it to run "
                          f"{path} alone") from None
    return _runtime_part(cfg, local, push.version)


def config_event(gateway: str, outcome: ConfigOutcome) -> DeviceEvent:
    severity = Severity.INFO if outcome.status == "applied" else Severity.WARNING
    words = {"applied": "applied", "rolled_back": "failed and was rolled back", "rejected": "was rejected"}
    message = f"configuration version {outcome.pushed} {words[outcome.status]}"
    if outcome.message:
        message += f": {outcome.message}"
    return DeviceEvent(device=gateway, ts=int(time.time() * 1000), kind="config", severity=severity,
                       message=message[:2000], data={"version": outcome.pushed, "status": outcome.status,
                                                     "error": outcome.message[:1000], "running": outcome.running})
