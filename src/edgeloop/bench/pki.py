"""``edgeloop bench pki``: provisioning throughput and mutual-TLS connection rate.

*Provisioning* (CSR to certificate): the platform runs in this process exactly as
``edgeloop up`` wires it (SQLite or PostgreSQL store, the HTTP API, the PKI), with the
per-address rate limit lifted (every request comes from 127.0.0.1). A separate client
process first makes every device's key pair and CSR (device-side work, not timed), then
sends ``POST /api/v1/provision`` for all of them with ``concurrency`` requests in flight.
Measured: devices/s over the whole run, latency per request, the platform's CPU per
device. Each request does everything a real one does: claim check, CSR verification,
serial claimed atomically in the store, certificate signed and appended (fsync) to the
ledger, device and asset registered, audit record.

*Mutual-TLS connections*: ``concurrency`` client identities (certificates from the same
PKI) connect again and again: TCP + TLS 1.3 handshake with client certificate + MQTT
CONNECT/CONNACK + DISCONNECT, against the embedded broker (in this process) and against
Mosquitto with the generated configuration. Measured: completed sessions per second.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile, Line, Site, Tenant
from edgeloop.bench.harness import mosquitto_version, publish_report
from edgeloop.bench.ingest import pg_database
from edgeloop.broker import free_port
from edgeloop.broker.acl import BROKER_IDENTITY
from edgeloop.broker.embedded import BrokerTls, EmbeddedBroker
from edgeloop.broker.mosquitto import run_as, run_mosquitto_async, write_mosquitto_tls_config
from edgeloop.identity.crl import RevocationList
from edgeloop.identity.pki import CertificateAuthority, build_csr, ensure_identity, new_private_key
from edgeloop.identity.provisioning import EnrollmentRequest, device_id_for
from edgeloop.identity.tls import TlsIdentity

GROUP = "bench"
CONNECT = "edgeloop-bench"


# -- client processes ---------------------------------------------------------------------------
def _provision_client(url: str, claim: str, devices: int, concurrency: int, conn: Connection) -> None:
    """Child process: make keys and CSRs (untimed), then provision them all; send back the figures."""
    csrs = []
    for i in range(devices):
        serial = f"SN{i:06d}"
        csrs.append((serial, build_csr(new_private_key(), device_id_for(GROUP, serial)).decode()))
    conn.send("ready")
    conn.recv()

    async def run() -> dict[str, Any]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        queue = iter(csrs)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

            async def worker() -> None:
                for serial, csr in queue:
                    t0 = time.perf_counter()
                    resp = await client.post("/api/v1/provision", json={"claim": claim, "serial": serial, "csr": csr})
                    latencies.append(time.perf_counter() - t0)
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return {"elapsed_s": elapsed, "latencies": latencies, "statuses": statuses}

    conn.send(asyncio.run(run()))


def _connect_client(port: int, identities: list[tuple[str, str, str, str]], total: int,
                    conn: Connection) -> None:
    """Child process: each identity's worker opens mTLS MQTT sessions back to back until ``total`` are done."""

    async def run() -> dict[str, Any]:
        done = 0
        failures = 0
        tickets = iter(range(total))
        latencies: list[float] = []

        async def worker(name: str, ca: str, cert: str, key: str) -> None:
            nonlocal done, failures
            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(cert, key)
            cid = name.encode()
            body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
            packet = b"\x10" + bytes([len(body)]) + body
            for _ in tickets:
                t0 = time.perf_counter()
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                                   server_hostname="localhost")
                    writer.write(packet)
                    await writer.drain()
                    connack = await asyncio.wait_for(reader.readexactly(4), 10)
                    writer.write(b"\xe0\x00")
                    await writer.drain()
                    writer.close()
                    ok = connack == b"\x20\x02\x00\x00"
                except (OSError, TimeoutError, asyncio.IncompleteReadError):
                    ok = False
                if ok:
                    done += 1
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(*ident) for ident in identities))
        return {"elapsed_s": time.perf_counter() - started, "sessions": done, "failures": failures,
                "latencies": latencies}

    conn.send(asyncio.run(run()))


def _spawn(target: Any, *args: Any) -> tuple[SpawnProcess, Connection]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


async def _recv(conn: Connection, proc: SpawnProcess, limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while not conn.poll():
        if not proc.is_alive():
            raise RuntimeError(f"benchmark client exited with {proc.exitcode}")
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark client did not answer")
        await asyncio.sleep(0.05)
    return conn.recv()


def _ms(values: Sequence[float], q: float) -> float:
    return round(float(np.quantile(np.asarray(values), q)) * 1000, 2) if values else 0.0


# -- phases -------------------------------------------------------------------------------------
async def _bench_provisioning(work: Path, store_url: str | None, devices: int, concurrency: int,
                              console: Console) -> dict[str, Any]:
    cfg = PlatformConfig(data_dir=work, store_url=store_url, mqtt_port=free_port(), http_port=free_port(),
                         pki_dir=work / "pki", create_pki=True, provision_rate_per_s=1e9, provision_burst=10**9)
    async with Platform(cfg) as platform:
        assert platform.provisioning is not None
        reg = platform.registry
        await reg.put_tenant(Tenant(id="bench"))
        await reg.put_site(Site(id="site", tenant="bench"))
        await reg.put_line(Line(id="line", site="site"))
        await reg.put_profile(DeviceProfile(name="sensor-v1", channels=[ChannelSpec(name="t")]))
        _, claim = await platform.provisioning.create_enrollment(
            EnrollmentRequest(group=GROUP, tenant="bench", line="line", profile="sensor-v1"), by="bench")
        proc, conn = _spawn(_provision_client, platform.http_url, claim, devices, concurrency)
        console.print(f"  client: generating {devices:,} key pairs and CSRs (device side, not timed)...")
        await _recv(conn, proc, 600)
        console.print(f"  provisioning {devices:,} devices, {concurrency} requests in flight...")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        conn.send("go")
        result = await _recv(conn, proc, 3600)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        proc.join(10)
        registered = sum(1 for d in platform.registry.registry.devices if d.startswith(f"{GROUP}-"))
        issued = sum(1 for e in platform.ca.issued() if e.subject.startswith(f"{GROUP}-")) if platform.ca else 0
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    ok = result["statuses"].get(201, 0)
    return {"devices": devices, "concurrency": concurrency, "provisioned": ok, "registered": registered,
            "certificates_in_ledger": issued, "statuses": {str(k): v for k, v in result["statuses"].items()},
            "elapsed_s": round(result["elapsed_s"], 2), "devices_per_s": round(ok / result["elapsed_s"], 1),
            "latency_ms": {"p50": _ms(result["latencies"], 0.5), "p99": _ms(result["latencies"], 0.99)},
            "platform_cpu_ms_per_device": round(cpu_s * 1000 / max(ok, 1), 2)}


def _identities(ca: CertificateAuthority, where: Path, n: int) -> list[tuple[str, str, str, str]]:
    out = []
    for i in range(n):
        name = f"conn-{i:04d}"
        ensure_identity(ca, where, name, kind="device", revoked=frozenset())
        out.append((name, str(where / "ca.crt"), str(where / f"{name}.crt"), str(where / f"{name}.key")))
    return out


async def _bench_connections(work: Path, broker: str, total: int, concurrency: int,
                             console: Console) -> dict[str, Any]:
    ca = CertificateAuthority.init(work / "pki")
    identities = _identities(ca, work / "clients", concurrency)
    port = free_port()
    console.print(f"  {broker}: {total:,} mutual-TLS MQTT sessions, {concurrency} clients in parallel...")
    if broker == "embedded":
        ensure_identity(ca, work / "broker", BROKER_IDENTITY, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        tls = BrokerTls(TlsIdentity.from_dir(work / "broker", BROKER_IDENTITY),
                        RevocationList(ca.dir / "crl.pem", ca.cert))
        async with EmbeddedBroker(port=port, tls=tls):
            proc, conn = _spawn(_connect_client, port, identities, total)
            result = await _recv(conn, proc, 1800)
    else:
        conf = write_mosquitto_tls_config(ca, work / "mosquitto", port=port, bind="127.0.0.1", user=run_as())
        async with run_mosquitto_async(work / "mosquitto", port=port, config=conf):
            proc, conn = _spawn(_connect_client, port, identities, total)
            result = await _recv(conn, proc, 1800)
    proc.join(10)
    return {"broker": broker, "sessions": result["sessions"], "failures": result["failures"],
            "concurrency": concurrency, "elapsed_s": round(result["elapsed_s"], 2),
            "sessions_per_s": round(result["sessions"] / result["elapsed_s"], 1),
            "latency_ms": {"p50": _ms(result["latencies"], 0.5), "p99": _ms(result["latencies"], 0.99)}}


@dataclass(frozen=True)
class Settings:
    devices: int = 10_000
    concurrency: int = 16
    connections: int = 2_000
    backends: tuple[str, ...] = ("sqlite",)


async def _run(settings: Settings, console: Console) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "pki", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "machine": {"cpus": os.cpu_count(), "mosquitto": mosquitto_version()},
                              "provisioning": [], "connections": []}
    for backend in settings.backends:
        console.print(f"[bold]provisioning[/bold] ({backend})")
        with tempfile.TemporaryDirectory(prefix="edgeloop-bench-pki-") as tmp:
            if backend == "postgres":
                async with pg_database() as dsn:
                    row = await _bench_provisioning(Path(tmp), dsn, settings.devices, settings.concurrency, console)
            else:
                row = await _bench_provisioning(Path(tmp), None, settings.devices, settings.concurrency, console)
        report["provisioning"].append({"backend": backend, **row})
    console.print("[bold]mutual-TLS connections[/bold]")
    for broker in ("embedded", "mosquitto"):
        with tempfile.TemporaryDirectory(prefix="edgeloop-bench-tls-") as tmp:
            report["connections"].append(await _bench_connections(Path(tmp), broker, settings.connections,
                                                                   settings.concurrency, console))
    return report


def render(report: dict[str, Any], out: Console) -> None:
    prov = Table(title="Provisioning: CSR -> certificate over the HTTP API")
    for col in ("store", "devices", "in flight", "devices/s", "p50 ms", "p99 ms", "platform CPU ms/device",
                "refused"):
        prov.add_column(col, justify="right")
    for r in report["provisioning"]:
        refused = sum(v for k, v in r["statuses"].items() if k != "201")
        prov.add_row(r["backend"], f"{r['provisioned']:,}", str(r["concurrency"]), f"{r['devices_per_s']:,.1f}",
                     f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p99']:.1f}",
                     f"{r['platform_cpu_ms_per_device']:.2f}", str(refused))
    out.print(prov)
    conns = Table(title="Mutual-TLS MQTT sessions (TCP + TLS handshake with client certificate + CONNECT/CONNACK)")
    for col in ("broker", "sessions", "in parallel", "sessions/s", "p50 ms", "p99 ms", "failures"):
        conns.add_column(col, justify="right")
    for r in report["connections"]:
        conns.add_row(r["broker"], f"{r['sessions']:,}", str(r["concurrency"]), f"{r['sessions_per_s']:,.1f}",
                      f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p99']:.1f}", str(r["failures"]))
    out.print(conns)


def main(*, as_json: bool, settings: Settings, console: Console, out: Console) -> dict[str, Any]:
    started = time.monotonic()
    console.print(f"[bold]edgeloop bench pki[/bold]: {settings.devices:,} devices provisioned per store "
                  f"({', '.join(settings.backends)}), {settings.connections:,} mutual-TLS sessions per broker")
    report = asyncio.run(_run(settings, console))
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return publish_report(report, "pki", as_json=as_json, console=console, out=out, render=render)
