"""The asset model: tenant -> site -> line -> asset (machine) -> device -> channel.

A device profile declares the channels a kind of device reports, with units,
expected ranges and sampling rate. Devices reference a profile by name. All of
these are plain msgspec structs; storage and the API share them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from edgeloop.messages import ChannelName, Id

GROUP_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
#: A rollout group: devices (gateways included) that follow the model aliases of scope ``group:NAME`` and that a
#: campaign can target as one (empty: no group, the whole profile's aliases).
RolloutGroup = Annotated[str, msgspec.Meta(pattern=f"^({GROUP_NAME})?$")]


class ChannelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ChannelName
    unit: Annotated[str, msgspec.Meta(max_length=16)] = ""
    min: float | None = None
    max: float | None = None
    description: str = ""


class DeviceProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Id
    channels: Annotated[list[ChannelSpec], msgspec.Meta(min_length=1, max_length=64)]
    sample_rate_hz: Annotated[float, msgspec.Meta(gt=0, le=100_000)] = 1.0
    description: str = ""
    # "default": robust-ensemble-v2 (multi-sensor machines); "univariate": the ensemble's univariate preset per
    # channel, for KPI streams (what `edgeloop eval nab` evaluates); "baseline": trained-baseline-v1, for machines
    # whose first 400 samples are a known-normal commissioning run (what `edgeloop eval skab` evaluates)
    detector: Literal["default", "univariate", "baseline"] = "default"

    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)


class Tenant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Id
    name: str = ""


class Site(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Id
    tenant: Id
    name: str = ""


class Line(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Id
    site: Id
    name: str = ""


class Asset(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Id
    line: Id
    name: str = ""
    kind: str = ""
    criticality: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3


class Device(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Id
    tenant: Id
    asset: Id
    profile: Id
    name: str = ""
    rollout_group: RolloutGroup = ""

    @property
    def scope(self) -> str:
        """The alias scope this device follows: ``group:NAME`` for a device in a rollout group, else ``*``."""
        return f"group:{self.rollout_group}" if self.rollout_group else "*"
