"""What ``edgeloop gateways add NAME`` hands a new gateway: a ready ``agent.yaml`` and the registry entries behind it.

The command (``cli.py``) runs against the platform's API as an operator: it makes sure the gateway's machines have
a line to stand on (site and line ``NAME``, unless ``--line`` names one) and a profile with their channels
(``edge-sim-v1`` for the simulator, created if missing), creates an enrollment ``NAME`` for exactly the serials
this configuration needs, and writes ``agent.yaml`` with its claim. The agent then provisions itself on first
start (``self_provision.py``): every device is ``NAME-SERIAL``, the gateway ``NAME-gw``, the simulated machines
``NAME-pump-0001`` ..., so they can never take the ids of the platform's own simulated fleet (``pump-0001``).
"""

from __future__ import annotations

import json

from edgeloop.agent.config import parse_config
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.sim.fleet import Fleet

SIM_PROFILE = "edge-sim-v1"
GATEWAY_SERIAL = "gw"


def sim_profile() -> DeviceProfile:
    """One profile for every simulated machine kind (the channels are the same; the ranges the widest)."""
    kinds = Fleet(devices=0, faulty=0, seed=1, start_ms=0, duration_ms=1000).profiles()
    channels = []
    for i, first in enumerate(kinds[0].channels):
        same = [p.channels[i] for p in kinds]
        lows = [c.min for c in same if c.min is not None]
        highs = [c.max for c in same if c.max is not None]
        channels.append(ChannelSpec(name=first.name, unit=first.unit, min=min(lows) if lows else None,
                                    max=max(highs) if highs else None, description=first.description))
    return DeviceProfile(name=SIM_PROFILE, channels=channels, sample_rate_hz=1.0,
                         description="a gateway's simulated pumps and motors (edgeloop agent, simulator source)")


def gateway_id(name: str) -> str:
    return f"{name}-{GATEWAY_SERIAL}"


def sim_serials(devices: int, seed: int) -> list[str]:
    """The serials of the simulator source's machines: their ids in the platform's fleet (pump-0001 ...)."""
    fleet = Fleet(devices=devices, faulty=0, seed=seed, start_ms=0, duration_ms=1000)
    return [d.device_id for d in fleet.devices]


def agent_yaml(*, name: str, tenant: str, mqtt: str, url: str, claim: str, devices: int, seed: int,
               ca: str | None = None) -> str:
    """The gateway's ``agent.yaml``: a simulator source (so it runs with no PLC), Modbus and OPC UA in comments."""
    ca_line = f"  ca: {json.dumps(ca)}  # the CA of the platform's HTTPS certificate\n" if ca else ""
    text = f"""\
# EdgeLoop edge agent of gateway {name!r}, written by `edgeloop gateways add {name}`.
# Run it:  edgeloop agent --config agent.yaml
# On first start the agent provisions itself: a key per device is made here (it never leaves this machine),
# each certificate comes from the platform with the claim below and goes to ./identities.
# The claim is a credential: keep this file private (it is written 0600); it works once per device, until it
# expires. Every key is explained in docs/agent.md.
agent:
  tenant: {tenant}
  gateway: {gateway_id(name)}  # this gateway's own identity (heartbeat, remote configuration)
  data_dir: ./agent-data  # the journal: every accepted sample waits here until the broker has it
uplink:
  mqtt: {mqtt}  # the platform's MQTT broker (mutual TLS)
  tls: ./identities  # DEVICE.crt/.key per device and ca.crt, written by provisioning
provision:
  url: {url}
  claim: {json.dumps(claim)}
{ca_line}sources:
  - name: sim
    kind: simulator  # simulated pumps and motors in real time: no PLC needed
    devices: {devices}
    seed: {seed}
    prefix: {name}-  # device ids {name}-motor-0001 ...: never those of the platform's own simulated fleet
    poll_ms: 1000
# A real machine instead (or as well) needs a device and certificate of its own: an enrollment for it
# (`edgeloop enroll create --group {name}-plc --profile PROFILE ...`, with a profile whose channels match the
# points), then here `edgeloop provision --serial 1 --out identities ...`: its device id is {name}-plc-1.
#  - name: press-plc
#    kind: modbus  # Modbus TCP
#    host: 10.0.0.7
#    port: 502
#    unit: 1
#    poll_ms: 1000
#    device: {name}-plc-1
#    points:
#      - {{channel: force, address: 0, table: holding, type: float32, word_order: big, scale: 1.0, unit: kN}}
#      - {{channel: temp, address: 2, table: input, type: int16, scale: 0.1, unit: degC}}
#  - name: oven
#    kind: opcua  # OPC UA subscription
#    url: opc.tcp://10.0.0.8:4840
#    device: {name}-plc-2
#    sampling_ms: 500
#    nodes:
#      - {{channel: temp, node: "ns=2;s=Oven.Temp", unit: degC}}
"""
    parse_config(text, origin="agent.yaml")  # what we write is always valid
    return text


__all__ = ["GATEWAY_SERIAL", "SIM_PROFILE", "agent_yaml", "gateway_id", "sim_profile", "sim_serials"]
