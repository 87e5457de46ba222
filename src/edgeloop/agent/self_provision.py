"""The agent provisions itself on first start: with a claim (``provision:`` in agent.yaml) and no certificate yet,
each of its devices, the gateway first, gets one through the platform's zero-touch provisioning
(``identity.client.provision_device``: the key is made here and never leaves the gateway).

A device's id is ``GROUP-SERIAL`` (``identity.provisioning.device_id_for``), so every device id of the
configuration must start with the claim's group (``edgeloop gateways add`` writes such a configuration). Devices
whose certificate is already in ``uplink.tls`` are left alone, so a restart provisions nothing.

The platform being unreachable (or rate limiting) is retried with backoff, saying so once per cause; a refusal
(expired claim, a serial that has provisioned before, an id that is taken) ends the start with the platform's
reason, since retrying cannot change it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from edgeloop.agent.config import AgentConfig, ModbusSource, OpcUaSource, SimulatorSource
from edgeloop.errors import ConfigError
from edgeloop.identity.client import provision_device
from edgeloop.identity.provisioning import ProvisioningError, device_id_for, group_of_claim
from edgeloop.sim.fleet import Fleet

log = logging.getLogger(__name__)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0
RETRYABLE = frozenset({429, 502, 503, 504})


def device_ids(cfg: AgentConfig) -> list[str]:
    """Every device id the agent connects as: the gateway, then each source's devices, in order, once each."""
    ids = [cfg.agent.gateway]
    for src in cfg.sources:
        if isinstance(src, ModbusSource | OpcUaSource):
            ids.append(src.device)
        elif isinstance(src, SimulatorSource):
            fleet = Fleet(devices=src.devices, faulty=src.faulty, seed=src.seed, start_ms=0,
                          duration_ms=src.poll_ms, period_ms=src.poll_ms)
            ids.extend(src.prefix + d.device_id for d in fleet.devices)
    return list(dict.fromkeys(ids))


def serial_of(group: str, device_id: str) -> str:
    """The serial that makes ``device_id`` in enrollment ``group``; ConfigError if no serial can."""
    serial = device_id.removeprefix(f"{group}-")
    if serial == device_id or not serial or device_id_for(group, serial) != device_id:
        raise ConfigError(f"device id {device_id!r} cannot be provisioned with a claim of enrollment {group!r}: "
                          f"its devices are named {group}-SERIAL (e.g. {group}-press-1); rename it in agent.yaml")
    return serial


def missing(cfg: AgentConfig) -> list[str]:
    """The device ids whose certificate and key are not in ``uplink.tls`` yet."""
    tls = Path(cfg.uplink.tls or ".")
    return [d for d in device_ids(cfg) if not ((tls / f"{d}.crt").exists() and (tls / f"{d}.key").exists())]


async def provision_missing(cfg: AgentConfig, *, retry_max_s: float = RETRY_MAX_S) -> list[str]:
    """Provision every device of ``cfg`` that has no certificate yet; returns the ids provisioned now."""
    prov = cfg.provision
    todo = missing(cfg)
    if prov is None or not todo:
        return []
    group = group_of_claim(prov.claim)
    serials = {d: serial_of(group, d) for d in todo}  # every name checked before anything is sent
    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=prov.ca) if prov.ca else True
    out_dir = Path(cfg.uplink.tls or ".")
    done: list[str] = []
    said: set[str] = set()
    delay = RETRY_MIN_S
    for device in todo:
        while True:
            try:
                await asyncio.to_thread(provision_device, url=prov.url, claim=prov.claim, serial=serials[device],
                                        out_dir=out_dir, verify=verify)
                break
            except ProvisioningError as exc:
                if exc.status not in RETRYABLE:
                    raise ConfigError(f"provisioning {device} at {prov.url} was refused ({exc.status} {exc.code}): "
                                      f"{exc.detail}") from None
                if exc.code not in said:  # once per cause, not once per attempt
                    said.add(exc.code)
                    log.warning("cannot provision %s yet (%s); retrying every %.0f s at most", device, exc.detail,
                                retry_max_s)
                await asyncio.sleep(max(delay, float(exc.retry_after_s)))
                delay = min(retry_max_s, delay * 2)
        delay = RETRY_MIN_S
        done.append(device)
        log.info("provisioned %s: certificate in %s", device, out_dir)
    return done


__all__ = ["device_ids", "missing", "provision_missing", "serial_of"]
