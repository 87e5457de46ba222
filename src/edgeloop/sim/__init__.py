"""Fleet simulator: deterministic pumps and motors with injected faults and ground truth."""

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

__all__ = [
    "CHANNELS",
    "DeviceChunk",
    "FaultKind",
    "FaultSpec",
    "Fleet",
    "RegimeChange",
    "RegimeKind",
    "RegimeSpec",
    "SimDevice",
]
