"""``edgeloop scenario``: a simulated fleet through the real platform at accelerated time, scored against ground truth.

The fleet publishes over MQTT (embedded amqtt, or an external broker such as
Mosquitto), the platform ingests, stores, scores and alerts exactly as in
production, and the outcome is compared with what the simulator knows:
samples published vs stored (none lost, none twice), per device whether
its fault was alerted and how long after onset, and whether a fault still
active at the end of the run still has an open alert then
(``faulty_without_open_alert_at_end``: a state such as a stuck sensor must not
be reported as cleared while it holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from edgeloop.app import Platform, PlatformConfig
from edgeloop.broker import free_port
from edgeloop.broker.acl import INGEST_IDENTITY
from edgeloop.clock import Clock, SystemClock
from edgeloop.errors import ConfigError
from edgeloop.identity.pki import CertificateAuthority, Kind, build_csr, new_private_key, write_identity
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import Alert, AlertStatus
from edgeloop.sim.fleet import FaultKind, Fleet, SimDevice
from edgeloop.sim.publisher import FleetPublisher
from edgeloop.sim.register import register_fleet

HOUR_MS = 3_600_000
#: a fault state that began less than this before the end of the run is not expected to have its alert yet (the
#: slowest default rule, ``device-silent``, raises after 5 min of silence)
ALERT_ALLOWANCE_MS = 300_000
Progress = Callable[[str, float, dict[str, Any]], None]  # phase, fraction done, figures


@dataclass(frozen=True, kw_only=True)
class ScenarioConfig:
    devices: int = 20
    faulty: int = 3
    seed: int = 7
    sim_hours: float = 2.0
    backend: str = "sqlite"  # or "postgres"
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int | None = None  # None: embedded broker on a free port
    external_broker: bool = False
    samples_per_message: int = 60
    tenant: str = "demo"
    data_dir: Path | None = None
    pki_dir: Path | None = None  # mutual TLS: every simulated device and the ingest service get certificates
    fault_kinds: tuple[str, ...] | None = None  # the simulator's fault kinds to draw from (None: all of them)


@contextlib.asynccontextmanager
async def _store_url(cfg: ScenarioConfig, data_dir: Path) -> AsyncIterator[str]:
    if cfg.backend == "sqlite":
        yield f"sqlite:///{data_dir / 'edgeloop.db'}"
        return
    if cfg.backend != "postgres":
        raise ConfigError(f"unknown backend {cfg.backend!r}: use sqlite or postgres")
    name = f"edgeloop_scenario_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(cfg.pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield cfg.pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(cfg.pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def run_scenario(
    cfg: ScenarioConfig, *, progress: Progress | None = None, clock: Clock | None = None
) -> dict[str, Any]:
    if cfg.faulty > cfg.devices:
        raise ConfigError(f"--faulty {cfg.faulty} is more than --devices {cfg.devices}")
    clock = clock or SystemClock()
    report = progress or (lambda _p, _f, _d: None)
    with contextlib.ExitStack() as stack:
        data_dir = cfg.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeloop-scn-")))
        async with _store_url(cfg, data_dir) as url:
            port = cfg.mqtt_port or free_port()
            tls_for = _identities(cfg.pki_dir, data_dir / "identities") if cfg.pki_dir else None
            secure_embedded = tls_for is not None and not cfg.external_broker  # the embedded broker goes mTLS too
            pcfg = PlatformConfig(data_dir=data_dir, store_url=url, mqtt_host=cfg.mqtt_host, mqtt_port=port,
                                  embedded_broker=not cfg.external_broker, http_port=None,
                                  ingest_client_id=INGEST_IDENTITY if tls_for else
                                  f"edgeloop-ingest-{secrets.token_hex(3)}",
                                  mqtt_tls=tls_for(INGEST_IDENTITY) if tls_for and cfg.external_broker else None,
                                  pki_dir=cfg.pki_dir if secure_embedded else None, embedded_tls=secure_embedded)
            async with Platform(pcfg, clock=clock) as platform:
                return await _drive(cfg, platform, clock, report, tls_for)
    raise AssertionError("unreachable")


def _identities(pki_dir: Path, out: Path) -> Callable[[str], TlsIdentity]:
    """Issue (once) and return the TLS identity of a simulated device or of the ingest service."""
    ca = CertificateAuthority.open(pki_dir)

    def identity(name: str) -> TlsIdentity:
        if not (out / name / f"{name}.crt").exists():
            key = new_private_key()
            kind: Kind = "service" if name == INGEST_IDENTITY else "device"
            cert = ca.sign_csr(build_csr(key, name), common_name=name, kind=kind)
            write_identity(out / name, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
        return TlsIdentity.from_dir(out / name, name)

    return identity


async def _drive(
    cfg: ScenarioConfig, platform: Platform, clock: Clock, report: Progress,
    tls_for: Callable[[str], TlsIdentity] | None,
) -> dict[str, Any]:
    duration = int(cfg.sim_hours * HOUR_MS)
    end = clock.now_ms() // 60_000 * 60_000
    start = end - duration
    kinds = [FaultKind(k) for k in cfg.fault_kinds] if cfg.fault_kinds is not None else None
    fleet = Fleet(devices=cfg.devices, faulty=cfg.faulty, seed=cfg.seed, start_ms=start, duration_ms=duration,
                  fault_kinds=kinds)
    await register_fleet(platform.registry, fleet, tenant=cfg.tenant)
    platform.alerts.replay_from(start)  # simulated time runs ahead of the clock: alerting follows sample time
    started = clock.monotonic()
    async with FleetPublisher(fleet=fleet, host=cfg.mqtt_host, port=platform.config.mqtt_port, tenant=cfg.tenant,
                              samples_per_message=cfg.samples_per_message,
                              wait_handled=platform.pipeline.wait_handled, tls_for=tls_for) as pub:
        step = 10 * 60_000
        while fleet.now_ms < end:
            await pub.run_until(min(end, fleet.now_ms + step), step_ms=step)
            report("publish", (fleet.now_ms - start) / duration, {
                "published": pub.stats.samples, "stored": platform.pipeline.stats.stored_samples,
                "alerts": platform.alerts.stats.alerts_opened})
        if not await pub.drain(60):
            report("warning", 1.0, {"message": "the broker did not acknowledge every publish within 60 s"})
    # Everything acknowledged by the broker must now reach the store; wait for it.
    report("drain", 1.0, {"published": pub.stats.samples, "stored": platform.pipeline.stats.stored_samples})
    try:
        await asyncio.wait_for(platform.pipeline.wait_handled(pub.stats.messages), 120)
    except TimeoutError:
        report("warning", 1.0, {"message": "not every published message reached the platform within 120 s"})
    await platform.idle(30)
    await platform.alerts.tick(caught_up=True)  # every device's data is in: a device silent at the end is silent
    wall_s = clock.monotonic() - started
    report("done", 1.0, {})
    return await _outcome(cfg, platform, fleet, pub, wall_s)


def state_at_end(fleet: Fleet, dev: SimDevice, alerts: Sequence[Alert]) -> tuple[bool, list[str]]:
    """Whether ``dev``'s fault still holds at the end of the run (for at least ``ALERT_ALLOWANCE_MS``; ground truth
    from the simulator), and the kinds of its alerts still open then (``alerts``: the device's, as stored)."""
    since = fleet.fault_active_since(dev.device_id, fleet.end_ms)
    active = since is not None and fleet.end_ms - since >= ALERT_ALLOWANCE_MS
    still = {a.kind for a in alerts if a.device == dev.device_id and a.status is not AlertStatus.RESOLVED}
    return active, sorted(still)


async def _outcome(
    cfg: ScenarioConfig, platform: Platform, fleet: Fleet, pub: FleetPublisher, wall_s: float
) -> dict[str, Any]:
    alerts = await platform.store.list_alerts(limit=100_000)
    by_device: dict[str, list[Alert]] = {}
    for a in alerts:
        by_device.setdefault(a.device, []).append(a)
    devices: list[dict[str, Any]] = []
    delays: list[float] = []
    lost = 0
    for dev in fleet.devices:
        _, stored = await platform.store.telemetry_counts(dev.device_id)
        published = pub.published_by_device[dev.device_id]
        lost += max(0, published - stored)
        mine = sorted(by_device.get(dev.device_id, []), key=lambda a: a.first_seen)
        fault = dev.fault
        onset = fault.start_ms if fault else None
        after = [a for a in mine if onset is not None and a.first_seen >= onset]
        before = [a for a in mine if onset is None or a.first_seen < onset]
        first = after[0] if after else None
        active_at_end, open_at_end = state_at_end(fleet, dev, mine)
        delay = (first.first_seen - onset) / 60_000 if first and onset is not None else None
        if delay is not None:
            delays.append(delay)
        devices.append({
            "device": dev.device_id, "asset": dev.asset_id, "kind": dev.kind,
            "faulty": fault is not None, "fault": fault.kind.value if fault else None,
            "fault_channel": fault.channel if fault else None, "fault_onset_ms": onset,
            "alerted": first is not None, "first_alert_ms": first.first_seen if first else None,
            "first_alert_kind": first.kind if first else None,
            "detection_delay_min": round(delay, 1) if delay is not None else None,
            "false_alerts": len(before), "published_samples": published, "stored_samples": stored,
            "fault_active_at_end": active_at_end, "open_alerts_at_end": open_at_end,
        })
    faulty = [d for d in devices if d["faulty"]]
    healthy = [d for d in devices if not d["faulty"]]
    ing = platform.pipeline.stats
    stored_msgs, stored_samples = await platform.store.telemetry_counts()
    delays.sort()
    return {
        "devices": cfg.devices, "faulty": cfg.faulty, "seed": cfg.seed, "sim_hours": cfg.sim_hours,
        "backend": cfg.backend, "broker": "external" if cfg.external_broker else "embedded",
        "mutual_tls": cfg.pki_dir is not None,
        "wall_seconds": round(wall_s, 1),
        "samples_published": pub.stats.samples, "messages_published": pub.stats.messages,
        "samples_stored": stored_samples, "messages_stored": stored_msgs,
        "samples_lost": lost, "duplicates": ing.duplicates,
        "stored_twice": max(0, stored_samples - pub.stats.samples), "dead_letters": ing.dead_letters,
        "faulty_alerted": sum(1 for d in faulty if d["alerted"]),
        "faulty_missed": sum(1 for d in faulty if not d["alerted"]),
        "healthy_alerted": sum(1 for d in healthy if d["false_alerts"] > 0),
        "faulty_active_at_end": sum(1 for d in faulty if d["fault_active_at_end"]),
        "faulty_without_open_alert_at_end": sum(1 for d in faulty if d["fault_active_at_end"]
                                                and not d["open_alerts_at_end"]),
        "false_alerts_on_faulty_before_onset": sum(d["false_alerts"] for d in faulty),
        "median_detection_delay_min": round(delays[len(delays) // 2], 1) if delays else None,
        "alerts": len(alerts),
        "per_device": devices,
    }
