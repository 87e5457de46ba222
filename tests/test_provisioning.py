"""Zero-touch provisioning through the HTTP API: the happy path and every refusal, each audited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile, Line, Site, Tenant
from edgeloop.broker import free_port
from edgeloop.clock import ManualClock
from edgeloop.identity.pki import CertificateAuthority, build_csr, new_private_key, pem, write_identity
from edgeloop.identity.provisioning import device_id_for, renewal_signature
from edgeloop.identity.tls import TlsIdentity, finish_renewal
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
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
        transport = httpx.ASGITransport(app=create_app(platform.services))
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


async def provisioned(client: httpx.AsyncClient, serial: str = "SN-1",
                      claim: str | None = None) -> tuple[Any, x509.Certificate]:
    """A provisioned device: its key and its certificate."""
    claim = claim or await enroll(client)
    key = new_private_key()
    resp = await provision(client, claim, serial, csr=build_csr(key, device_id_for("press", serial)))
    assert resp.status_code == 201, resp.text
    return key, x509.load_pem_x509_certificate(resp.json()["certificate"].encode())


async def renew(client: httpx.AsyncClient, cert: x509.Certificate, key: Any, *, cn: str | None = None,
                signer: Any = None) -> tuple[httpx.Response, Any]:
    new_key = new_private_key()
    name = cn or cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    csr = build_csr(new_key, str(name))
    body = {"certificate": pem(cert).decode(), "csr": csr.decode(), "signature": renewal_signature(signer or key, csr)}
    return await client.post("/api/v1/renew", json=body), new_key


async def test_renewal_with_the_current_certificate(env: Any) -> None:
    platform, client, _ = env
    key, cert = await provisioned(client)
    resp, new_key = await renew(client, cert, key)
    assert resp.status_code == 201, resp.text
    new = x509.load_pem_x509_certificate(resp.json()["certificate"].encode())
    assert new.subject == cert.subject and new.serial_number != cert.serial_number
    assert new.public_key() == new_key.public_key(), "the new certificate is for the device's new key"
    new.verify_directly_issued_by(platform.ca.cert)
    valid = {e.serial for e in platform.ca.issued() if e.revoked_at is None}
    assert {cert.serial_number, new.serial_number} <= valid, "the old certificate stays valid: no downtime"
    log = [(r.action, r.outcome, r.target) for r in await platform.store.list_audit(action="certificate.renew")]
    assert log == [("certificate.renew", "ok", "press-sn-1")]


@pytest.mark.parametrize(("case", "status", "code"), [
    ("foreign_ca", 401, "bad_certificate"),
    ("expired", 401, "expired_certificate"),
    ("revoked", 403, "revoked_certificate"),
    ("wrong_key", 401, "bad_signature"),
    ("other_identity", 422, "bad_csr"),
])
async def test_renewal_refusals(env: Any, tmp_path: Path, case: str, status: int, code: str) -> None:
    platform, client, _ = env
    claim = await enroll(client)
    key, cert = await provisioned(client, claim=claim)
    kw: dict[str, Any] = {}
    if case == "foreign_ca":
        foreign = CertificateAuthority.init(tmp_path / "foreign")
        cert = foreign.issue(key.public_key(), "press-sn-1")
    elif case == "expired":
        import datetime as dt
        cert = platform.ca.issue(key.public_key(), "press-sn-1",
                                 not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=40), days=30)
    elif case == "revoked":
        await platform.revoke_device("press-sn-1", by="ana")
    elif case == "wrong_key":
        kw["signer"] = new_private_key()  # someone who copied the certificate, not the key
    elif case == "other_identity":
        await provisioned(client, "SN-2", claim=claim)
        kw["cn"] = "press-sn-2"  # SN-1 asking for a certificate in SN-2's name
    resp, _ = await renew(client, cert, key, **kw)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code
    refused = [r for r in await platform.store.list_audit(action="certificate.renew") if r.outcome == "refused"]
    assert refused and refused[0].detail.startswith(code)


async def test_provisioning_is_rate_limited_per_address(env: Any) -> None:
    platform, client, _ = env
    platform.provisioning.limiter.burst = 5
    platform.provisioning.limiter.rate_per_s = 0.01
    codes = [(await provision(client, "press.bogus-secret-xxxxxxxx", "SN-1")).status_code for _ in range(8)]
    assert codes[:5] == [401] * 5, "within the burst: refused for the bad claim, not the rate"
    limited = await provision(client, "press.bogus-secret-xxxxxxxx", "SN-1")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    limited_log = [r for r in await platform.store.list_audit(action="provision") if r.detail == "rate limited"]
    assert len(limited_log) == 1, "a flood is audited once per address and minute, not once per request"


def test_an_interrupted_renewal_never_leaves_key_and_certificate_mismatched(tmp_path: Path) -> None:
    for name, text in (("d.key", "old key"), ("d.crt", "old cert"), ("d.key.new", "new key")):
        (tmp_path / name).write_text(text)
    finish_renewal(tmp_path, "d")  # crashed before the commit marker: the half-written renewal is dropped
    assert [(tmp_path / n).read_text() for n in ("d.key", "d.crt")] == ["old key", "old cert"]
    assert not (tmp_path / "d.key.new").exists()
    (tmp_path / "d.key").write_text("new key")  # committed, crashed after renaming the key only
    (tmp_path / "d.crt.new").write_text("new cert")
    (tmp_path / "d.renewing").touch()
    finish_renewal(tmp_path, "d")
    assert [(tmp_path / n).read_text() for n in ("d.key", "d.crt")] == ["new key", "new cert"]
    assert not (tmp_path / "d.renewing").exists()


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


def test_device_lifecycle_against_the_embedded_platform(tmp_path: Path) -> None:
    """`edgeloop up` as a real process (mutual TLS on its embedded broker): enroll, provision zero-touch,
    publish, renew while connected, revoke through the API and see the live session closed at once."""
    live = start_up_process(tmp_path / "data", devices=1, faulty=0, auth=True)
    try:
        token = httpx.post(live.base_url + "/api/v1/auth/token",
                           data={"username": live.admin_user, "password": live.admin_password}).json()["access_token"]
        env = {**os.environ, "EDGELOOP_TOKEN": token}

        def run(*args: str, url: bool = True) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "edgeloop", *args, *(["--url", live.base_url] if url else [])],
                                  capture_output=True, text=True, timeout=60, check=False, env=env)

        serials = tmp_path / "serials.txt"
        serials.write_text("# one per line\nGW-100\nGW-101\n")
        created = run("enroll", "create", "--group", "gw", "--profile", "pump-v1", "--tenant", "demo",
                      "--line", "line-1", "--serials", str(serials), "--expires", "2h")
        assert created.returncode == 0, created.stderr
        claim = created.stdout.strip().splitlines()[-1]
        out = tmp_path / "device"
        done = run("provision", "--claim", claim, "--serial", "GW-100", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE((out / "gw-gw-100.key").stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {token}"}
        device = httpx.get(live.base_url + "/api/v1/devices/gw-gw-100", headers=auth).json()
        assert device["profile"] == "pump-v1"
        again = run("provision", "--claim", claim, "--serial", "GW-100", "--out", str(tmp_path / "again"))
        assert again.returncode == 1
        assert "serial_used" in again.stderr
        assert not (tmp_path / "again").exists(), "nothing is written when provisioning is refused"

        # The device connects to the embedded broker with its certificate and its data is stored.
        ident = TlsIdentity.from_dir(out, "gw-gw-100")
        session = MqttSession(ident, live.mqtt_port)
        try:
            msg = Telemetry(device="gw-gw-100", seq=1, samples=[Sample(ts=int(time.time() * 1000),
                                                                       values={device["channels"][0]["name"]: 1.5})])
            session.client.publish(topic("demo", "gw-gw-100", TopicKind.TELEMETRY), encode(msg),
                                   qos=1).wait_for_publish(5)
            deadline = time.monotonic() + 10
            while httpx.get(live.base_url + "/api/v1/devices/gw-gw-100", headers=auth).json()[
                    "stored_messages"] != 1:
                assert time.monotonic() < deadline, "the provisioned device's telemetry was not stored"
                time.sleep(0.1)

            # Renewal while connected: the live session carries on; the device's next connection uses the
            # new certificate (one identity, one session: the reconnection replaces the old session).
            old_cert = ident.cert.read_bytes()
            renewed = run("renew", "--dir", str(out))
            assert renewed.returncode == 0, renewed.stderr
            assert ident.cert.read_bytes() != old_cert
            time.sleep(0.5)
            assert session.client.is_connected() and not session.dropped.is_set()
            session.close()
            session = MqttSession(TlsIdentity.from_dir(out, "gw-gw-100"), live.mqtt_port)
            not_due = run("renew", "--dir", str(out), "--if-expires-within", "30d")
            assert "not due" in not_due.stdout

            # Revoked through the API: the live session is closed at once, and it cannot come back.
            revoked = run("devices", "revoke", "gw-gw-100")
            assert revoked.returncode == 0, revoked.stderr
            assert "live MQTT session closed" in " ".join(revoked.stdout.split())
            assert session.dropped.wait(2), "the revoked device kept its live session"
        finally:
            session.close()
        with pytest.raises(AssertionError, match="refused"):
            MqttSession(TlsIdentity.from_dir(out, "gw-gw-100"), live.mqtt_port)
        audit = httpx.get(live.base_url + "/api/v1/audit?action=device.revoke", headers=auth).json()
        assert audit[0]["target"] == "gw-gw-100" and "live MQTT session closed" in audit[0]["detail"]
    finally:
        stop_up_process(live)


class MqttSession:
    """A device's live MQTT session over mutual TLS; ``dropped`` is set when the broker ends it."""

    def __init__(self, ident: TlsIdentity, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.cert.stem)
        ident.apply(self.client)
        self.client.reconnect_delay_set(60, 60)
        self.dropped = threading.Event()
        accepted: list[bool] = []
        settled = threading.Event()

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            accepted.append(not rc.is_failure)
            settled.set()

        def on_disconnect(*_a: Any) -> None:
            self.dropped.set()
            settled.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        try:
            self.client.connect("127.0.0.1", port)
        except (ssl.SSLError, OSError) as exc:
            raise AssertionError(f"refused: {exc}") from exc
        self.client.loop_start()
        if not (settled.wait(5) and accepted and accepted[0]):
            self.close()
            raise AssertionError("refused by the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_refused_mqtt_connections_are_audited_once_per_address(tmp_path: Path) -> None:
    """Garbage, plain MQTT and foreign certificates on the embedded broker's TLS port: refused, audited (a flood
    once per address and minute), and the platform carries on."""
    clock = ManualClock(start_ms=1_795_000_000_000)
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None, pki_dir=tmp_path / "pki",
                         create_pki=True, embedded_tls=True)
    foreign = CertificateAuthority.init(tmp_path / "foreign")
    key = new_private_key()
    cert = foreign.issue(key.public_key(), "press-sn-1")
    write_identity(tmp_path / "intruder", name="press-sn-1", key=key, cert=cert, chain_pem=foreign.chain_pem)
    async with Platform(cfg, clock=clock) as platform:
        port = cfg.mqtt_port

        async def refused_audit(count: int) -> list[Any]:
            for _ in range(100):
                found = await platform.store.list_audit(action="mqtt.connect")
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.02)
            return await platform.store.list_audit(action="mqtt.connect")

        for _ in range(3):  # a plain-TCP MQTT CONNECT, three times in a row
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            assert await reader.read(64) in (b"",)  # closed without a CONNACK
            writer.close()
        first = await refused_audit(1)
        assert len(first) == 1, "three refusals from one address within a minute: one record"
        assert first[0].outcome == "refused" and "TLS handshake failed: not TLS" in first[0].detail
        assert first[0].source == "127.0.0.1"

        clock.advance(61_000)
        ctx = ssl.create_default_context(cafile=str(platform.ca.dir / "ca-chain.pem"))
        ctx.load_cert_chain(tmp_path / "intruder" / "press-sn-1.crt", tmp_path / "intruder" / "press-sn-1.key")
        with contextlib.suppress(ssl.SSLError, OSError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            writer.write(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            await reader.readexactly(4)
        second = await refused_audit(2)
        assert len(second) == 2
        assert "not issued by this platform's CA" in second[0].detail, second[0].detail
        assert platform.alive


async def _other_tenant(platform: Platform) -> None:
    """Tenant globex with a device ``press-sn-9`` (the id enrollment ``press``, serial ``SN-9``, would spell)."""
    from edgeloop.assets import Asset, Device

    reg = platform.registry
    await reg.put_tenant(Tenant(id="globex"))
    await reg.put_site(Site(id="g-site", tenant="globex"))
    await reg.put_line(Line(id="g-line", site="g-site"))
    await reg.put_asset(Asset(id="g-asset", line="g-line"))
    await reg.put_device(Device(id="press-sn-9", tenant="globex", asset="g-asset", profile="press-v1"))


async def test_an_enrollment_cannot_spell_another_tenants_device(env: Any) -> None:
    platform, client, _ = env
    await _other_tenant(platform)
    body = {"group": "press", "tenant": "acme", "line": "l1", "profile": "press-v1", "serials": ["SN-1", "SN 9"]}
    resp = await client.post("/api/v1/enrollments", json=body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "identity_taken"
    assert "globex" not in resp.json()["detail"], "the refusal does not name the other tenant"
    assert await platform.store.get_enrollment("press") is None
    [record] = await platform.store.list_audit(action="enrollment.create")
    assert (record.outcome, record.target) == ("refused", "press")
    assert record.detail.startswith("identity_taken")


async def test_provisioning_never_issues_another_tenants_device_id(env: Any) -> None:
    """An open enrollment (any serial) cannot be refused up front: provisioning refuses, audited, no certificate."""
    platform, client, _ = env
    await _other_tenant(platform)
    claim = await enroll(client, serials=None)
    issued_before = len(platform.ca.issued())
    resp = await provision(client, claim, "SN-9")
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "identity_taken"
    assert len(platform.ca.issued()) == issued_before, "no certificate names the other tenant's device"
    assert platform.registry.registry.devices["press-sn-9"].tenant == "globex", "the device stays where it was"
    [refused] = await platform.store.list_audit(action="provision")
    assert refused.outcome == "refused" and refused.detail.startswith("identity_taken")
    assert (await provision(client, claim, "SN-10")).status_code == 201, "the serial was not consumed by others"


async def test_provisioning_refuses_a_device_created_in_another_tenant_after_the_enrollment(env: Any) -> None:
    platform, client, _ = env
    claim = await enroll(client, serials=["SN-9"])
    await _other_tenant(platform)
    resp = await provision(client, claim, "SN-9")
    assert (resp.status_code, resp.json()["code"]) == (409, "identity_taken")
    assert platform.registry.registry.devices["press-sn-9"].tenant == "globex"


async def test_provisioning_refuses_when_the_devices_own_asset_is_another_tenants(env: Any) -> None:
    from edgeloop.assets import Asset

    platform, client, _ = env
    await _other_tenant(platform)
    await platform.registry.put_asset(Asset(id="press-sn-5", line="g-line"))
    claim = await enroll(client, serials=None)
    issued_before = len(platform.ca.issued())
    resp = await provision(client, claim, "SN-5")
    assert (resp.status_code, resp.json()["code"]) == (409, "identity_taken")
    assert len(platform.ca.issued()) == issued_before


async def test_the_same_tenant_may_provision_a_device_it_registered(env: Any) -> None:
    from edgeloop.assets import Asset, Device

    platform, client, _ = env
    await platform.registry.put_asset(Asset(id="press-1", line="l1"))
    await platform.registry.put_device(Device(id="press-sn-1", tenant="acme", asset="press-1", profile="press-v1"))
    claim = await enroll(client, serials=["SN-1"])
    assert (await provision(client, claim, "SN-1")).status_code == 201


@pytest.mark.parametrize(("group", "serial"), [
    ("edgeloop", "ingest"), ("edgeloop", "broker"), ("edgeloop", "api"), ("edgeloop-ingest", "x1"),
    ("pump", "0001"), ("motor", "0042"),
])
async def test_platform_identities_are_never_issued(env: Any, group: str, serial: str) -> None:
    platform, client, _ = env
    listed = await client.post("/api/v1/enrollments", json={
        "group": group, "tenant": "acme", "line": "l1", "profile": "press-v1", "serials": [serial]})
    assert (listed.status_code, listed.json()["code"]) == (409, "identity_reserved"), listed.text
    if group.startswith("edgeloop"):
        any_serial = await client.post("/api/v1/enrollments", json={
            "group": group, "tenant": "acme", "line": "l1", "profile": "press-v1"})
        assert (any_serial.status_code, any_serial.json()["code"]) == (409, "identity_reserved")
        return
    claim = await enroll(client, group=group, serials=None)
    issued_before = len(platform.ca.issued())
    resp = await provision(client, claim, serial)
    assert (resp.status_code, resp.json()["code"]) == (409, "identity_reserved"), resp.text
    assert len(platform.ca.issued()) == issued_before
    refused = [r for r in await platform.store.list_audit() if r.outcome == "refused"]
    assert {r.action for r in refused} == {"enrollment.create", "provision"}


def test_every_simulated_device_id_is_reserved() -> None:
    from edgeloop.identity.reserved import reserved_reason
    from edgeloop.sim.fleet import Fleet

    fleet = Fleet(devices=30, faulty=0, seed=1, start_ms=0, duration_ms=3_600_000)
    assert all(reserved_reason(d.device_id) for d in fleet.devices)


async def test_a_device_certificate_with_a_platform_name_does_not_renew(env: Any) -> None:
    """One issued before such names were refused (here straight from the CA) cannot keep itself alive."""
    from edgeloop.assets import Asset, Device

    platform, client, _ = env
    await platform.registry.put_asset(Asset(id="a1", line="l1"))
    await platform.registry.put_device(Device(id="edgeloop-ingest", tenant="acme", asset="a1", profile="press-v1"))
    key = new_private_key()
    cert = platform.ca.issue(key.public_key(), "edgeloop-ingest", kind="device")
    resp, _ = await renew(client, cert, key)
    assert (resp.status_code, resp.json()["code"]) == (409, "identity_reserved"), resp.text
    [refused] = await platform.store.list_audit(action="certificate.renew")
    assert refused.outcome == "refused" and refused.detail.startswith("identity_reserved")
