"""Gateways (hosts running ``edgeloop agent``): their state, derived honestly at read time, and the outcome of
configuration pushes. Pure code: stored records and the time come in, views and decisions go out.

State:

- ``offline`` when no heartbeat came for ``OFFLINE_AFTER_INTERVALS`` × its ``interval_s``, or when its retained
  status says ``offline`` (its last will, or a clean disconnect) and no heartbeat came after that;
- otherwise ``online``, or ``degraded`` with a reason for each of: a journal backlog older than
  ``BACKLOG_AFTER_INTERVALS`` intervals, a failing source, samples dropped by the disk budget recently, fewer
  uplink connections up than wanted.

``connected`` is true only when the state is not ``offline``: the numbers of an offline gateway are those of its
last heartbeat, and the view says how old they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from edgeloop.messages import Heartbeat, decode_heartbeat
from edgeloop.store.actions import ANSWERED, CommandAnswer
from edgeloop.store.base import GatewayConfig, GatewayRecord, StoredEvent

OFFLINE_AFTER_INTERVALS: Final = 3
BACKLOG_AFTER_INTERVALS: Final = 2
RECENT_DROPS_MS: Final = 15 * 60_000  # a drop keeps the gateway degraded this long after it was reported
CONFIG_OUTCOMES: Final = frozenset({"applied", "rolled_back", "rejected"})


@dataclass(frozen=True, slots=True)
class GatewayState:
    state: str  # online | degraded | offline
    reasons: tuple[str, ...]

    @property
    def connected(self) -> bool:
        return self.state != "offline"


def gateway_state(record: GatewayRecord, hb: Heartbeat | None, now_ms: int) -> GatewayState:
    """The state of a gateway at ``now_ms`` from its stored record and decoded last heartbeat."""
    if hb is None:
        return GatewayState("offline", ("the stored heartbeat cannot be read by this platform version",))
    age_s = max(0.0, (now_ms - record.received_ms) / 1000)
    limit_s = OFFLINE_AFTER_INTERVALS * hb.interval_s
    offline: list[str] = []
    if record.status == "offline" and (record.status_ms or 0) >= record.received_ms:
        offline.append("its connection is closed (status offline: last will or disconnect)")
    if age_s > limit_s:
        offline.append(f"no heartbeat for {age_s:.0f} s (expected every {hb.interval_s:g} s; offline after "
                       f"{limit_s:g} s)")
    if offline:
        return GatewayState("offline", tuple(offline))
    reasons: list[str] = []
    if hb.oldest_unsent_age_s is not None and hb.oldest_unsent_age_s > BACKLOG_AFTER_INTERVALS * hb.interval_s:
        reasons.append(f"backlog: {hb.journal_messages} messages ({hb.journal_samples} samples) waiting, the oldest "
                       f"for {hb.oldest_unsent_age_s:.0f} s")
    for name, src in sorted(hb.sources.items()):
        if src.state == "failing":
            why = f": {src.error}" if src.error else ""
            reasons.append(f"source {name} ({src.kind}) failing after {src.failures} attempts{why}")
    if record.dropped_at_ms is not None and now_ms - record.dropped_at_ms <= RECENT_DROPS_MS:
        reasons.append(f"samples dropped by the disk budget: {hb.dropped_samples} in total, more within the last "
                       f"{RECENT_DROPS_MS // 60_000} min (each drop is a gap event)")
    if hb.uplink_connected < hb.uplink_links:
        reasons.append(f"uplink: {hb.uplink_connected} of {hb.uplink_links} device connections up")
    return GatewayState("degraded" if reasons else "online", tuple(reasons))


def read_heartbeat(record: GatewayRecord) -> Heartbeat | None:
    try:
        return decode_heartbeat(record.heartbeat.encode())
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def gateway_view(record: GatewayRecord, now_ms: int, *, latest_config: GatewayConfig | None = None,
                 include_heartbeat: bool = False) -> dict[str, Any]:
    """What the API, the dashboard and the CLI show for one gateway."""
    hb = read_heartbeat(record)
    st = gateway_state(record, hb, now_ms)
    view: dict[str, Any] = {
        "id": record.id, "tenant": record.tenant, "state": st.state, "connected": st.connected,
        "reasons": list(st.reasons), "received_ms": record.received_ms,
        "heartbeat_age_s": round(max(0.0, (now_ms - record.received_ms) / 1000), 1),
        "status": record.status, "status_ms": record.status_ms, "devices": list(record.devices),
    }
    if hb is not None:
        view.update({
            "last_heartbeat_ms": hb.ts, "interval_s": hb.interval_s, "agent_version": hb.agent_version,
            "backlog": {"messages": hb.journal_messages, "samples": hb.journal_samples, "bytes": hb.journal_bytes,
                        "oldest_unsent_age_s": hb.oldest_unsent_age_s},
            "sync_lag_s": hb.sync_lag_s, "dropped_samples": hb.dropped_samples,
            "accepted_samples": hb.accepted_samples, "bytes_sent": hb.bytes_sent, "bytes_raw": hb.bytes_raw,
            "uplink": {"connected": hb.uplink_connected, "links": hb.uplink_links},
            "cpu_percent": hb.cpu_percent, "rss_bytes": hb.rss_bytes,
            "sources": [{"name": name, "kind": s.kind, "state": s.state, "failures": s.failures,
                         "last_ok_ms": s.last_ok_ms, "error": s.error} for name, s in sorted(hb.sources.items())],
            "config": {"running_version": hb.config_version, "status": hb.config_status,
                       "message": hb.config_message},
        })
    else:
        view["config"] = {"running_version": None, "status": None, "message": ""}
    if latest_config is not None:
        view["config"]["latest"] = config_view(latest_config)
    if include_heartbeat:
        view["heartbeat"] = msgspec.json.decode(record.heartbeat)
    return view


def config_view(c: GatewayConfig, *, with_text: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"version": c.version, "status": c.status, "error": c.error, "created_ms": c.created_ms,
                           "created_by": c.created_by, "status_ms": c.status_ms}
    if with_text:
        out["config"] = c.config
    return out


# -- configuration outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigOutcome:
    """What an agent says became of a pushed configuration.

    From a ``config`` event: ``version`` names the configuration. From a heartbeat: ``running`` is the version
    the agent runs and ``status`` is about "the last pushed one", which the heartbeat does not name.
    """

    gateway: str
    status: str  # applied | rolled_back | rejected
    error: str
    at_ms: int
    version: int | None = None
    running: int | None = None


def outcome_of_event(event: StoredEvent) -> ConfigOutcome | None:
    """A ``config`` event's outcome (``data``: version, status, error); None if it is not a well-formed one."""
    if event.kind != "config":
        return None
    version, status, error = event.data.get("version"), event.data.get("status"), event.data.get("error")
    running = event.data.get("running")
    if not _is_version(version) or status not in CONFIG_OUTCOMES:
        return None
    return ConfigOutcome(gateway=event.device, status=str(status), error=str(error or "")[:1000],
                         at_ms=event.received_ms, version=int(version),  # type: ignore[arg-type]
                         running=int(running) if _is_version(running) else None)  # type: ignore[arg-type]


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def outcome_of_heartbeat(hb: Heartbeat, received_ms: int) -> ConfigOutcome:
    status = hb.config_status if hb.config_status in CONFIG_OUTCOMES else "applied"
    pushed = hb.config_pushed if _is_version(hb.config_pushed) else None  # agents before it was added send None
    return ConfigOutcome(gateway=hb.gateway, status=status, error=hb.config_message[:1000], at_ms=received_ms,
                         running=hb.config_version, version=pushed)


def config_updates(configs: Sequence[GatewayConfig], outcome: ConfigOutcome) -> list[tuple[int, str, str]]:
    """(version, status, error) to store for ``outcome``; only changes.

    - an event's version gets its status;
    - the version an agent runs is ``applied``, and older ones still ``pending`` never will be (``superseded``);
    - a heartbeat's ``rolled_back``/``rejected`` is taken only when one version newer than the running one
      exists and it is still pending: with more, the heartbeat does not say which it means (the event does).
    """
    current = {c.version: (c.status, c.error) for c in configs}
    wanted: dict[int, tuple[str, str]] = {}
    applied = outcome.version if outcome.version is not None and outcome.status == "applied" else outcome.running
    if outcome.version is not None:
        wanted[outcome.version] = (outcome.status, outcome.error)
    if applied is not None:
        if current.get(applied, ("", ""))[0] == "pending":
            wanted[applied] = ("applied", "")
        for version, (status, _) in current.items():
            if version < applied and status == "pending":
                wanted[version] = ("superseded", f"never applied: the agent runs version {applied}")
    if outcome.version is None and outcome.running is not None and outcome.status != "applied":
        newer = [v for v in current if v > outcome.running]
        if len(newer) == 1 and current[newer[0]][0] == "pending":
            wanted[newer[0]] = (outcome.status, outcome.error)
    return sorted((v, s, e) for v, (s, e) in wanted.items() if v in current and current[v] != (s, e))


def answer_of_event(event: StoredEvent) -> CommandAnswer | None:
    """A gateway's answer in a ``command`` event; None for another event or one that is not a well-formed answer."""
    if event.kind != "command":
        return None
    data = event.data
    cid, status = data.get("id"), data.get("status")
    if not isinstance(cid, str) or status not in ANSWERED:
        return None

    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return CommandAnswer(id=cid, device=event.device, status=str(status), at_ms=event.ts_ms,
                         code=str(data.get("code") or ""), reason=str(data.get("reason") or ""),
                         value_before=number("before"), read_back=number("read_back"))
