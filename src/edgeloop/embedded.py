"""``edgeloop up``: the embedded platform with a simulated fleet and a live status line.

On first start in a data directory the simulator replays ``history_hours`` of
fleet life at accelerated speed (so there is something to see at once, faults
included), then keeps pace with the wall clock. The fleet's seed and start
time are kept in ``sim.json``; on the next start the fleet resumes where the
stored data ends, so nothing is published twice and no gap appears beyond the
time the platform was down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from rich.console import Console

from edgeloop.app import Platform, PlatformConfig
from edgeloop.clock import SystemClock
from edgeloop.errors import ConfigError
from edgeloop.file_modes import write_private
from edgeloop.identity.pki import ensure_identity
from edgeloop.identity.tls import TlsIdentity
from edgeloop.sim.fleet import Fleet
from edgeloop.sim.publisher import FleetPublisher
from edgeloop.sim.register import register_fleet

HOUR_MS = 3_600_000


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    devices: int = 20
    faulty: int = 3
    seed: int = 1
    history_hours: float = 6.0
    duration_hours: float = 8.0  # the fault schedule spans this much simulated time from the start
    tenant: str = "demo"


class _SimState(msgspec.Struct):
    devices: int
    faulty: int
    seed: int
    start_ms: int
    duration_ms: int
    tenant: str


def _load_state(path: Path, sim: SimSettings, now_ms: int) -> _SimState:
    if path.exists():
        state = msgspec.json.decode(path.read_bytes(), type=_SimState)
        if (state.devices, state.faulty, state.seed) != (sim.devices, sim.faulty, sim.seed):
            raise ConfigError(
                f"{path.parent} holds a fleet of {state.devices} devices ({state.faulty} faulty, seed {state.seed}); "
                f"start with those settings or use another --data-dir")
        return state
    start = (now_ms - int(sim.history_hours * HOUR_MS)) // 60_000 * 60_000
    state = _SimState(devices=sim.devices, faulty=sim.faulty, seed=sim.seed, start_ms=start,
                      duration_ms=int(sim.duration_hours * HOUR_MS), tenant=sim.tenant)
    write_private(path, msgspec.json.encode(state))
    return state


async def run_embedded(cfg: PlatformConfig, sim: SimSettings, *, console: Console) -> None:
    clock = SystemClock()
    async with Platform(cfg, clock=clock) as platform:
        mqtt = (f"MQTT mutual TLS {cfg.mqtt_host}:{cfg.mqtt_port} (CA {platform.ca.dir / 'ca-chain.pem'})"
                if cfg.embedded_tls and platform.ca else f"MQTT {cfg.mqtt_host}:{cfg.mqtt_port} (plain)")
        console.print(f"[bold green]EdgeLoop is up[/bold green]  dashboard [link]{platform.http_url}/[/link]  "
                      f"API docs {platform.http_url}/docs  {mqtt}  "
                      f"data {cfg.data_dir.resolve()} ({platform.store.backend})")
        if platform.generated_admin_password:
            console.print(f"[bold yellow]first start:[/bold yellow] log in as [bold]admin[/bold] with password "
                          f"[bold]{platform.generated_admin_password}[/bold]  (shown once; not stored anywhere; "
                          f"lost it? edgeloop admin reset-password admin --data-dir {cfg.data_dir})")
        console.print("Ctrl-C stops; the next start finds the data again.")
        async with contextlib.AsyncExitStack() as stack:
            if sim.devices > 0:
                state = _load_state(cfg.data_dir / "sim.json", sim, clock.now_ms())
                fleet = Fleet(devices=state.devices, faulty=state.faulty, seed=state.seed, start_ms=state.start_ms,
                              duration_ms=state.duration_ms)
                await register_fleet(platform.registry, fleet, tenant=state.tenant)
                pub = await stack.enter_async_context(FleetPublisher(
                    fleet=fleet, host=cfg.mqtt_host, port=cfg.mqtt_port, tenant=state.tenant,
                    samples_per_message=60, wait_handled=platform.pipeline.wait_handled,
                    tls_for=await _device_identities(platform, fleet) if cfg.embedded_tls else None))
                resume = max((platform.pipeline.last_seen.get(d.device_id, 0) for d in fleet.devices), default=0)
                pub.skip_to(resume)
                behind_h = (clock.now_ms() - fleet.now_ms) / HOUR_MS
                if behind_h > 0.01:
                    console.print(f"replaying {behind_h:.1f} h of simulated fleet history at full speed...")
                platform.alerts.replaying = True  # alerting follows sample time until the replay is done
                await pub.run_until(clock.now_ms())
                await platform.idle(60)
                platform.alerts.replaying = False
                pub.samples_per_message = 1
                live = asyncio.create_task(pub.run_realtime(), name="simulator")
                stack.callback(live.cancel)
            status = asyncio.create_task(_status_line(platform, console), name="status")
            stack.callback(status.cancel)
            exc = await platform.wait_failed()
            raise exc


async def _device_identities(platform: Platform, fleet: Fleet) -> Callable[[str], TlsIdentity]:
    """Each simulated device gets its own certificate from the platform's CA, as a provisioned one would."""
    ca = platform.ca
    if ca is None:
        raise ConfigError("simulated devices over mutual TLS need the platform's PKI (pki_dir)")
    where = platform.tls_dir / "sim"

    def issue_all() -> None:
        revoked = ca.revoked_serials()
        for d in fleet.devices:
            ensure_identity(ca, where, d.device_id, kind="device", revoked=revoked)

    await asyncio.to_thread(issue_all)
    return lambda device_id: TlsIdentity.from_dir(where, device_id)


async def run_platform(cfg: PlatformConfig, *, console: Console) -> None:
    """The platform alone (no simulator), until Ctrl-C or a background loop fails."""
    async with Platform(cfg) as platform:
        console.print(f"[bold green]EdgeLoop is up[/bold green]  API {platform.http_url}/docs  "
                      f"MQTT {cfg.mqtt_host}:{cfg.mqtt_port}  store {platform.store.backend}")
        status = asyncio.create_task(_status_line(platform, console), name="status")
        try:
            raise await platform.wait_failed()
        finally:
            status.cancel()


async def _status_line(platform: Platform, console: Console) -> None:
    interactive = console.is_terminal
    last_print = 0.0
    while True:
        snap = await platform.snapshot()
        sim_time = datetime.fromtimestamp(snap["now_ms"] / 1000, UTC).strftime("%H:%M:%S")
        line = (f"{snap['devices_online']}/{snap['devices_total']} devices online · "
                f"{snap['readings_per_s']:.0f} readings/s · {snap['alerts_open']} alerts open · "
                f"{snap['ingest']['dead_letters']} dead letters · sample time {sim_time} UTC")
        now = asyncio.get_running_loop().time()
        if interactive:
            console.file.write("\r\x1b[2K" + line)
            console.file.flush()
        elif now - last_print >= 10:
            console.print(line)
            last_print = now
        await asyncio.sleep(1)


__all__ = ["SimSettings", "run_embedded", "run_platform"]
