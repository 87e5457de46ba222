"""Sources: what the agent reads machines with (Modbus TCP, OPC UA, the simulator). Each runs as its
own task; one that fails is retried with backoff and reported, and never stops the others.

A source calls ``emit(device, sample)`` per reading. A value that cannot be a valid number (a
32-bit float register pair holding NaN or infinity, a read that failed for one point) is sent
as ``None``, the platform's "no valid reading", and counted in ``bad_values``; it is never
passed on as a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeloop.agent.config import (
    ModbusPoint,
    ModbusSource,
    ModbusTarget,
    OpcUaSource,
    SimulatorSource,
    SourceConfig,
)
from edgeloop.messages import Sample
from edgeloop.sim.fleet import CHANNELS, Fleet

log = logging.getLogger(__name__)
Emit = Callable[[str, Sample], None]
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0


@dataclass
class SourceStatus:
    name: str
    kind: str
    state: str = "starting"  # starting | ok | failing
    error: str = ""
    polls: int = 0
    failures: int = 0
    bad_values: int = 0
    last_ok_ms: int | None = None
    devices: list[str] = field(default_factory=list)

    def ok(self) -> None:
        self.state, self.error = "ok", ""
        self.polls += 1
        self.last_ok_ms = int(time.time() * 1000)

    def failed(self, exc: BaseException) -> None:
        self.state, self.error = "failing", f"{type(exc).__name__}: {exc}"[:300]
        self.failures += 1


def decode_point(point: ModbusPoint | ModbusTarget, regs: Sequence[int]) -> float | None:
    """Registers (16-bit, as read) -> engineering value; None if the raw value is not a valid number."""
    if point.type in ("int16", "uint16"):
        raw: float = regs[0] - 65536 if point.type == "int16" and regs[0] >= 32768 else regs[0]
    else:
        hi, lo = (regs[0], regs[1]) if point.word_order == "big" else (regs[1], regs[0])
        data = struct.pack(">HH", hi, lo)
        fmt = {"int32": ">i", "uint32": ">I", "float32": ">f"}[point.type]
        raw = struct.unpack(fmt, data)[0]
        if not math.isfinite(raw):
            return None
    return raw * point.scale + point.offset


def register_count(point: ModbusPoint | ModbusTarget) -> int:
    return 1 if point.type in ("int16", "uint16") else 2


_RANGES = {"int16": (-32768, 32767), "uint16": (0, 65535), "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1)}


def encode_value(target: ModbusTarget, value: float) -> list[int]:
    """Engineering value -> registers (16-bit, as written): the inverse of :func:`decode_point`. ValueError for
    a value the register type cannot hold."""
    raw = (value - target.offset) / target.scale
    if target.type == "float32":
        data = struct.pack(">f", raw)
    else:
        number = round(raw)
        lo, hi = _RANGES[target.type]
        if not lo <= number <= hi:
            raise ValueError(f"{value:g} is {number} in the register, outside {target.type} ({lo}..{hi})")
        if target.type in ("int16", "uint16"):
            return [number & 0xFFFF]
        data = struct.pack(">i" if target.type == "int32" else ">I", number)
    high, low = struct.unpack(">HH", data)
    return [high, low] if target.word_order == "big" else [low, high]


class ModbusReader:
    """Polls a Modbus TCP server: one read per contiguous register span of each table."""

    def __init__(self, cfg: ModbusSource, emit: Emit, status: SourceStatus) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        self.cfg = cfg
        self.emit = emit
        self.status = status
        status.devices = [cfg.device]
        self.client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout_ms / 1000, retries=0,
                                           reconnect_delay=0)

    async def poll(self) -> None:
        await self._connected()
        values: dict[str, float | None] = {}
        for table in ("holding", "input"):
            points = [p for p in self.cfg.points if p.table == table]
            if not points:
                continue
            lo = min(p.address for p in points)
            hi = max(p.address + register_count(p) for p in points)
            read = self.client.read_holding_registers if table == "holding" else self.client.read_input_registers
            resp = await read(lo, count=hi - lo, device_id=self.cfg.unit)
            if resp.isError():
                raise ConnectionError(f"Modbus {table} read {lo}..{hi - 1} failed: {resp}")
            for p in points:
                v = decode_point(p, resp.registers[p.address - lo:p.address - lo + register_count(p)])
                if v is None:
                    self.status.bad_values += 1
                values[p.channel] = v
        self.emit(self.cfg.device, Sample(ts=int(time.time() * 1000), values=values))

    async def write_register(self, address: int, value: int) -> None:
        """Write one holding register (a fail-safe action); raises ConnectionError if it did not happen."""
        await self._connected()
        resp = await self.client.write_register(address, value, device_id=self.cfg.unit)
        if resp.isError():
            raise ConnectionError(f"Modbus write of register {address} failed: {resp}")

    async def write_value(self, target: ModbusTarget, value: float) -> None:
        """Write an engineering value to holding register(s) (a command); raises ConnectionError if it did not
        happen."""
        regs = encode_value(target, value)
        await self._connected()
        resp = await self.client.write_registers(target.address, regs, device_id=self.cfg.unit)
        if resp.isError():
            raise ConnectionError(f"Modbus write of register {target.address} failed: {resp}")

    async def read_value(self, target: ModbusTarget) -> float | None:
        """Read an engineering value back from holding register(s) (None: not a valid number)."""
        await self._connected()
        resp = await self.client.read_holding_registers(target.address, count=register_count(target),
                                                        device_id=self.cfg.unit)
        if resp.isError():
            raise ConnectionError(f"Modbus read of register {target.address} failed: {resp}")
        return decode_point(target, resp.registers)

    async def _connected(self) -> None:
        if not self.client.connected and not await self.client.connect():
            raise ConnectionError(f"cannot connect to Modbus server {self.cfg.host}:{self.cfg.port}")

    async def close(self) -> None:
        self.client.close()


class OpcUaReader:
    """Subscribes to OPC UA nodes; each data change becomes a reading of its channel.

    A value whose status is not Good (e.g. BadSensorFailure), or that is not a number, is sent as
    ``None`` and counted in ``bad_values``. The sample time is the server's source timestamp when
    it has one. ``poll`` (re)connects and subscribes, then checks the connection every ``poll_ms``;
    a lost connection fails the poll and ``run_source`` retries with backoff.
    """

    def __init__(self, cfg: OpcUaSource, emit: Emit, status: SourceStatus) -> None:
        self.cfg = cfg
        self.emit = emit
        self.status = status
        status.devices = [cfg.device]
        self.client: Any = None
        self._by_node: dict[str, Any] = {}

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        point = self._by_node.get(node.nodeid.to_string())
        if point is None:
            return
        dv = data.monitored_item.Value
        code = getattr(dv, "StatusCode_", None) or getattr(dv, "StatusCode", None)
        good = code is None or code.is_good()
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if good and number:
            v: float | None = float(value) * point.scale + point.offset
        else:
            v = None
            self.status.bad_values += 1
        when = getattr(dv, "SourceTimestamp", None) or getattr(dv, "ServerTimestamp", None)
        ts = int(when.timestamp() * 1000) if when is not None else int(time.time() * 1000)
        self.emit(self.cfg.device, Sample(ts=ts, values={point.channel: v}))

    async def poll(self) -> None:
        if self.client is not None:
            try:
                await self.client.check_connection()
                return
            except Exception:
                await self._drop()
                raise
        from asyncua.client.client import Client

        client = Client(self.cfg.url, timeout=self.cfg.timeout_ms / 1000)
        await client.connect()
        try:
            nodes = [client.get_node(n.node) for n in self.cfg.nodes]
            self._by_node = {node.nodeid.to_string(): point for node, point in zip(nodes, self.cfg.nodes, strict=True)}
            sub = await client.create_subscription(self.cfg.sampling_ms, self)
            await sub.subscribe_data_change(nodes)
        except Exception:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        self.client = client

    async def write_node(self, node: str, value: float | bool) -> None:
        """Write one node's value (a fail-safe action) with the node's own data type."""
        if self.client is None:
            raise ConnectionError(f"not connected to {self.cfg.url}")
        target = self.client.get_node(node)
        variant_type = await target.read_data_type_as_variant_type()
        from asyncua import ua

        if variant_type == ua.VariantType.Boolean:
            value = bool(value)
        elif variant_type not in (ua.VariantType.Float, ua.VariantType.Double):
            value = round(value)  # an integer node
        async with asyncio.timeout(self.cfg.timeout_ms / 1000):
            await target.write_value(ua.DataValue(ua.Variant(value, variant_type)))

    async def read_node(self, node: str) -> float | None:
        """Read one node's value back (None: not Good, or not a number)."""
        if self.client is None:
            raise ConnectionError(f"not connected to {self.cfg.url}")
        async with asyncio.timeout(self.cfg.timeout_ms / 1000):
            dv = await self.client.get_node(node).read_data_value()
        code = getattr(dv, "StatusCode_", None) or getattr(dv, "StatusCode", None)
        value = dv.Value.Value if dv.Value is not None else None
        if (code is not None and not code.is_good()) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            return None
        return float(value)

    async def _drop(self) -> None:
        client, self.client = self.client, None
        with contextlib.suppress(Exception):  # the server may be gone: do not wait on it for ever
            async with asyncio.timeout(self.cfg.timeout_ms / 1000):
                await client.disconnect()

    async def close(self) -> None:
        if self.client is not None:
            await self._drop()


class SimulatorReader:
    """The platform's simulated fleet, in real time from the agent's start, one simulated day at a time
    (the same machines every day, each day with its faults at its own hours)."""

    DAY_MS = 86_400_000

    def __init__(self, cfg: SimulatorSource, emit: Emit, status: SourceStatus) -> None:
        self.cfg = cfg
        self.emit = emit
        self.fleet = self._day(int(time.time() * 1000) // cfg.poll_ms * cfg.poll_ms)
        status.devices = [cfg.prefix + d.device_id for d in self.fleet.devices]

    def _day(self, start_ms: int) -> Fleet:
        c = self.cfg
        return Fleet(devices=c.devices, faulty=c.faulty, seed=c.seed, start_ms=start_ms, duration_ms=self.DAY_MS,
                     period_ms=c.poll_ms)

    async def poll(self) -> None:
        now = int(time.time() * 1000)
        while True:
            for chunk in self.fleet.advance(min(now, self.fleet.start_ms + self.DAY_MS)):
                for sample in chunk.samples(CHANNELS):
                    self.emit(self.cfg.prefix + chunk.device_id, sample)
            if now <= self.fleet.start_ms + self.DAY_MS:
                return
            self.fleet = self._day(self.fleet.start_ms + self.DAY_MS)

    async def close(self) -> None:
        pass


Reader = ModbusReader | OpcUaReader | SimulatorReader


def make_reader(cfg: SourceConfig, emit: Emit, status: SourceStatus) -> Reader:
    if isinstance(cfg, ModbusSource):
        return ModbusReader(cfg, emit, status)
    if isinstance(cfg, OpcUaSource):
        return OpcUaReader(cfg, emit, status)
    return SimulatorReader(cfg, emit, status)


async def run_source(cfg: SourceConfig, reader: Reader, status: SourceStatus) -> None:
    """Poll ``reader`` every ``poll_ms`` for ever; failures are retried with exponential backoff and reported."""
    backoff = BACKOFF_MIN_S
    period = cfg.poll_ms / 1000
    next_at = time.monotonic()
    try:
        while True:
            try:
                await reader.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # any failure of one source is reported, never fatal
                if status.state != "failing":
                    log.warning("source %s failing: %s", cfg.name, exc)
                status.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                next_at = time.monotonic()
                continue
            if status.state == "failing":
                log.warning("source %s recovered", cfg.name)
            status.ok()
            backoff = BACKOFF_MIN_S
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await reader.close()
