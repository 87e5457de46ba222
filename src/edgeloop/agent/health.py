"""The agent's honest heartbeat: what it holds, how far behind it is, what it costs, what fails."""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import psutil

from edgeloop.agent.config import AgentConfig
from edgeloop.agent.journal import JournalStats
from edgeloop.agent.remote import ConfigOutcome
from edgeloop.agent.sources import SourceStatus
from edgeloop.agent.uplink import Uplink
from edgeloop.messages import EdgeModelHealth, Heartbeat, SourceHealth


def _agent_version() -> str:
    try:
        return version("edgeloop")
    except PackageNotFoundError:
        return "unknown"


AGENT_VERSION = _agent_version()


class ProcessMeter:
    """CPU (percent of one core since the previous reading) and resident memory of this process."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first reading only starts the clock

    def read(self) -> tuple[float, int]:
        return float(self._proc.cpu_percent(None)), int(self._proc.memory_info().rss)


def build_heartbeat(cfg: AgentConfig, js: JournalStats, uplink: Uplink, sources: Mapping[str, SourceStatus],
                    outcome: ConfigOutcome, meter: ProcessMeter, *, accepted: int, bytes_raw: int,
                    unjournaled: int = 0, models: Mapping[str, EdgeModelHealth] | None = None) -> Heartbeat:
    now = int(time.time() * 1000)
    cpu, rss = meter.read()
    links = {d: up for d, up in uplink.connected.items() if d != cfg.agent.gateway}
    devices = sorted({d for st in sources.values() for d in st.devices} | set(links))
    return Heartbeat(
        gateway=cfg.agent.gateway, ts=now, interval_s=cfg.agent.heartbeat_s, devices=devices,
        journal_messages=js.messages, journal_bytes=js.bytes, journal_samples=js.samples,
        oldest_unsent_age_s=None if js.oldest_ts is None else round(max(0, now - js.oldest_ts) / 1000, 1),
        sync_lag_s=None if uplink.stats.sync_lag_s is None else round(uplink.stats.sync_lag_s, 3),
        dropped_samples=js.dropped_samples + unjournaled, accepted_samples=accepted,
        uplink_connected=sum(links.values()), uplink_links=len(links),
        bytes_sent=uplink.stats.bytes_acked, bytes_raw=bytes_raw, cpu_percent=round(cpu, 1), rss_bytes=rss,
        sources={name: SourceHealth(kind=st.kind, state=st.state, failures=st.failures, last_ok_ms=st.last_ok_ms,
                                    error=st.error) for name, st in sources.items()},
        config_version=outcome.running, config_status=outcome.status, config_message=outcome.message[:1000],
        config_pushed=outcome.pushed if outcome.pushed >= 1 else None,
        agent_version=AGENT_VERSION, models=dict(models or {}))
