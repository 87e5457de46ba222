"""Zero-touch provisioning through the HTTP API: the happy path and every refusal, each audited."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.identity.pki import CertificateAuthority, build_csr, new_private_key
from edgeloop.identity.provisioning import device_id_for
from tests.conftest import start_up_process, stop_up_process


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Platform, httpx.AsyncClient, ManualClock]]:
    clock = ManualClock(start_ms=1_795_000_000_000)
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, pki_dir=tmp_path / "pki",
                         create_pki=True)
    async with Platform(cfg, clock=clock) as platform:
        reg = platform.registry
        await reg.put_tenant(Tenant(id="acme"))
        await reg.put_site(Site(id="s1", tenant="acme"))
        await reg.put_line(Line(id="l1", site="s1"))
        await reg.put_profile(DeviceProfile(name="press-v1", channels=[ChannelSpec(name="force")]))
        transport = httpx.ASGITransport(app=create_app(platform))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield platform, client, clock


async def enroll(client: httpx.AsyncClient, **kw: Any) -> str:
    body = {"group": "press", "tenant": "acme", "line": "l1", "profile": "press-v1", "serials": ["SN-1", "SN-2"],
            "by": "ana"} | kw
    resp = await client.post("/api/v1/enrollments", json=body)
    assert resp.status_code == 201, resp.text
    claim: str = resp.json()["claim"]
    assert claim.startswith(f"{body['group']}.")
    return claim


async def provision(client: httpx.AsyncClient, claim: str, serial: str, *, cn: str | None = None,
                    csr: bytes | None = None) -> httpx.Response:
    group = claim.split(".", 1)[0]
    key = new_private_key()
    csr = csr or build_csr(key, cn or device_id_for(group, serial))
    return await client.post("/api/v1/provision", json={"claim": claim, "serial": serial, "csr": csr.decode()})


async def test_happy_path_issues_and_registers(env: Any) -> None:
    platform, client, _ = env
    claim = await enroll(client)
    resp = await provision(client, claim, "SN-1")
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert doc["device_id"] == "press-sn-1"
    cert = x509.load_pem_x509_certificate(doc["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "press-sn-1"
    cert.verify_directly_issued_by(CertificateAuthority.open(platform.config.pki_dir).cert)
    assert doc["ca_chain"].count("BEGIN CERTIFICATE") == 2
    device = platform.registry.registry.devices["press-sn-1"]
    assert (device.tenant, device.profile, device.asset) == ("acme", "press-v1", "press-sn-1")
    assert (await client.get("/api/v1/devices/press-sn-1")).status_code == 200
    log = [(r.action, r.outcome) for r in await platform.store.list_audit()]
    assert log == [("provision", "ok"), ("enrollment.create", "ok")]


async def test_claim_is_stored_only_as_a_hash(env: Any) -> None:
    platform, client, _ = env
    claim = await enroll(client)
    enrollment = await platform.store.get_enrollment("press")
    assert claim not in repr(enrollment)
    assert claim.split(".", 1)[1] not in repr(enrollment)


@pytest.mark.parametrize(("case", "status", "code"), [
    ("replay_same_serial", 409, "serial_used"),
    ("serial_not_listed", 403, "serial_not_allowed"),
    ("expired", 403, "expired_claim"),
    ("wrong_secret", 401, "unknown_claim"),
    ("malformed_claim", 401, "bad_claim"),
    ("other_device_id", 422, "bad_csr"),
    ("tampered_csr", 422, "bad_csr"),
    ("garbage_csr", 422, "bad_csr"),
])
async def test_refusals_are_clear_and_audited(env: Any, case: str, status: int, code: str) -> None:
    platform, client, clock = env
    claim = await enroll(client, expires_in_s=3600)
    serial = "SN-2"
    kw: dict[str, Any] = {}
    if case == "replay_same_serial":
        assert (await provision(client, claim, "SN-2")).status_code == 201
    elif case == "serial_not_listed":
        serial = "SN-3"
    elif case == "expired":
        clock.advance(3600 * 1000)
    elif case == "wrong_secret":
        claim = claim[:-4] + ("aaaa" if not claim.endswith("aaaa") else "bbbb")
    elif case == "malformed_claim":
        claim = "not a claim"
    elif case == "other_device_id":
        kw["cn"] = "press-sn-1"  # SN-2 asking for SN-1's identity
    elif case == "tampered_csr":
        csr = x509.load_pem_x509_csr(build_csr(new_private_key(), "press-sn-2"))
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-5] ^= 0x01
        kw["csr"] = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    elif case == "garbage_csr":
        kw["csr"] = b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n"
    resp = await provision(client, claim, serial, **kw)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code
    assert resp.json()["detail"]
    refused = [r for r in await platform.store.list_audit(action="provision") if r.outcome == "refused"]
    assert refused and refused[0].detail.startswith(code)
    assert "press-sn-2" not in platform.registry.registry.devices or case == "replay_same_serial"


async def test_open_enrollment_caps_the_batch(env: Any) -> None:
    _, client, _ = env
    claim = await enroll(client, group="pumps", serials=None, max_devices=2)
    assert (await provision(client, claim, "A1")).status_code == 201
    assert (await provision(client, claim, "A2")).status_code == 201
    third = await provision(client, claim, "A3")
    assert third.status_code == 403
    assert third.json()["code"] == "enrollment_full"


async def test_oversized_and_malformed_requests(env: Any) -> None:
    platform, client, _ = env
    big = await client.post("/api/v1/provision", content=b"{" + b" " * 40_000 + b"}")
    assert big.status_code == 413
    assert (await client.post("/api/v1/provision", content=b"\x00\xff not json")).status_code == 400
    assert (await client.post("/api/v1/provision", json={"claim": "x"})).status_code == 422
    assert platform.alive


async def test_enrollment_refuses_unknown_places(env: Any) -> None:
    _, client, _ = env
    for bad in ({"tenant": "ghost"}, {"line": "ghost"}, {"profile": "ghost"}, {"asset": "ghost"},
                {"group": "Bad Name"}):
        body = {"group": "press", "tenant": "acme", "line": "l1", "profile": "press-v1"} | bad
        resp = await client.post("/api/v1/enrollments", json=body)
        assert resp.status_code in (409, 422), (bad, resp.text)
    await enroll(client)
    again = await client.post("/api/v1/enrollments", json={"group": "press", "tenant": "acme", "line": "l1",
                                                           "profile": "press-v1"})
    assert again.status_code == 409


def test_cli_enroll_then_provision_against_a_running_platform(tmp_path: Path) -> None:
    """The operator's and the device's commands, against `edgeloop up` as a real process."""
    live = start_up_process(tmp_path / "data", devices=1, faulty=0)
    try:
        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "edgeloop", *args, "--url", live.base_url],
                                  capture_output=True, text=True, timeout=60, check=False)

        serials = tmp_path / "serials.txt"
        serials.write_text("# one per line\nGW-100\nGW-101\n")
        created = run("enroll", "create", "--group", "gw", "--profile", "pump-v1", "--tenant", "demo",
                      "--line", "line-1", "--serials", str(serials), "--expires", "2h")
        assert created.returncode == 0, created.stderr
        claim = created.stdout.strip().splitlines()[-1]
        out = tmp_path / "device"
        done = subprocess.run([sys.executable, "-m", "edgeloop", "provision", "--url", live.base_url, "--claim",
                               claim, "--serial", "GW-100", "--out", str(out)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE((out / "gw-gw-100.key").stat().st_mode) == 0o600
        assert (out / "gw-gw-100.crt").exists()
        assert (out / "ca.crt").exists()
        assert live.get("/api/v1/devices/gw-gw-100")["profile"] == "pump-v1"
        again = subprocess.run([sys.executable, "-m", "edgeloop", "provision", "--url", live.base_url, "--claim",
                                claim, "--serial", "GW-100", "--out", str(tmp_path / "again")],
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 1
        assert "serial_used" in again.stderr
        assert not (tmp_path / "again").exists(), "nothing is written when provisioning is refused"
    finally:
        stop_up_process(live)
