"""Fleet simulator: deterministic pumps and motors with injected faults, benign regime changes and ground truth;
simulated technicians who answer alerts from that ground truth."""

from edgeloop.sim.fleet import (
    CHANNELS,
    DeviceChunk,
    FaultKind,
    FaultSpec,
    Fleet,
    RegimeChange,
    RegimeKind,
    RegimeSpec,
    SimDevice,
)
from edgeloop.sim.technicians import (
    AlertFacts,
    FleetTruth,
    Inspection,
    SimulatedTechnicians,
    TechnicianPolicy,
    TechnicianVerdict,
)

__all__ = [
    "CHANNELS",
    "AlertFacts",
    "DeviceChunk",
    "FaultKind",
    "FaultSpec",
    "Fleet",
    "FleetTruth",
    "Inspection",
    "RegimeChange",
    "RegimeKind",
    "RegimeSpec",
    "SimDevice",
    "SimulatedTechnicians",
    "TechnicianPolicy",
    "TechnicianVerdict",
]
