"""Production mode end to end, as docs/security.md tells an operator to run it.

PKI -> Mosquitto with the generated mutual-TLS config -> `edgeloop serve` over HTTPS with an
admin -> an enrollment -> a device provisions itself zero-touch -> publishes with its own
certificate -> its data is stored -> it is revoked and refused.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_mosquitto
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic

pytestmark = pytest.mark.mosquitto
ADMIN_PASSWORD = "production-admin-password"


def edgeloop(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "edgeloop", *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_serve_refuses_insecure_or_adminless_production(tmp_path: Path) -> None:
    plain = edgeloop("serve", "--store", f"sqlite:///{tmp_path / 'a.db'}", "--port", str(free_port()), check=False)
    assert plain.returncode == 1
    assert "production mode needs mutual TLS" in " ".join(plain.stderr.split())
    no_admin = edgeloop("serve", "--store", f"sqlite:///{tmp_path / 'b.db'}", "--port", str(free_port()),
                        "--mqtt", f"127.0.0.1:{free_port()}", "--insecure", check=False,
                        env={"EDGELOOP_ADMIN_PASSWORD": ""})
    assert no_admin.returncode == 1
    assert "no administrator is configured" in " ".join(no_admin.stderr.split())


def connects(ident: TlsIdentity, port: int) -> bool:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.cert.stem)
    ident.apply(c)
    c.reconnect_delay_set(60, 60)
    result: list[bool] = []
    done = threading.Event()
    c.on_connect = lambda _c, _u, _f, rc, _p: (result.append(not rc.is_failure), done.set())
    c.on_disconnect = lambda *_a: (result.append(False), done.set())
    try:
        c.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return False
    c.loop_start()
    try:
        return done.wait(5) and result[0]
    finally:
        c.disconnect()
        c.loop_stop()


def test_production_mode_end_to_end(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    mqtt_port, api_port = free_port(), free_port()
    edgeloop("pki", "init", "--dir", str(pki))
    edgeloop("broker", "config", "mosquitto", "--pki", str(pki), "--out", str(tmp_path / "broker"),
             "--port", str(mqtt_port), "--bind", "127.0.0.1")
    edgeloop("pki", "issue", "--dir", str(pki), "--service", "edgeloop-ingest", "--out", str(tmp_path / "ingest"))
    edgeloop("pki", "issue", "--dir", str(pki), "--service", "edgeloop-api", "--ip", "127.0.0.1",
             "--hostname", "localhost", "--out", str(tmp_path / "api"))
    ca_file = str(pki / "ca-chain.pem")
    ca = ssl.create_default_context(cafile=ca_file)
    url = f"https://127.0.0.1:{api_port}"
    with run_mosquitto(tmp_path / "broker", port=mqtt_port, config=tmp_path / "broker" / "mosquitto.conf") as broker:
        with (tmp_path / "serve.log").open("wb") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "edgeloop", "serve", "--store", f"sqlite:///{tmp_path / 'edgeloop.db'}",
                 "--mqtt", f"127.0.0.1:{mqtt_port}", "--mqtt-tls", str(tmp_path / "ingest"), "--https",
                 str(tmp_path / "api"), "--pki", str(pki), "--port", str(api_port), "--data-dir",
                 str(tmp_path / "data")],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "EDGELOOP_ADMIN_PASSWORD": ADMIN_PASSWORD})
        try:
            deadline = time.monotonic() + 30
            while True:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    health = httpx.get(f"{url}/api/v1/health", verify=ca, timeout=2).json()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "serve did not answer over HTTPS"
                    time.sleep(0.2)
            assert health["auth"] is True
            assert health["mqtt_connected"] is True, "ingest connected to Mosquitto with its own certificate"
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{url}/api/v1/health", timeout=2)  # not trusted without our CA: it is our certificate

            token = httpx.post(f"{url}/api/v1/auth/token", verify=ca,
                               data={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            for kind, body in (("tenants", {"id": "acme"}), ("sites", {"id": "plant-1", "tenant": "acme"}),
                               ("lines", {"id": "press-line", "site": "plant-1"}),
                               ("profiles", {"name": "press-v1", "channels": [{"name": "force", "unit": "kN"}]})):
                assert httpx.post(f"{url}/api/v1/{kind}", json=body, headers=auth, verify=ca).status_code == 201

            cli_env = {"EDGELOOP_TOKEN": token, "EDGELOOP_CA": ca_file}
            serials = tmp_path / "serials.txt"
            serials.write_text("SN-7\n")
            created = edgeloop("enroll", "create", "--group", "press", "--tenant", "acme", "--line", "press-line",
                               "--profile", "press-v1", "--serials", str(serials), "--url", url, env=cli_env)
            claim = created.stdout.strip().splitlines()[-1]
            edgeloop("provision", "--url", url, "--claim", claim, "--serial", "SN-7", "--out",
                     str(tmp_path / "device"), env={"EDGELOOP_CA": ca_file})
            device = TlsIdentity.from_dir(tmp_path / "device", "press-sn-7")

            # The device speaks with its own certificate; its data lands in the store.
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="press-sn-7")
            device.apply(client)
            client.connect("127.0.0.1", mqtt_port)
            client.loop_start()
            msg = Telemetry(device="press-sn-7", seq=1, samples=[Sample(ts=int(time.time() * 1000),
                                                                        values={"force": 12.5})])
            client.publish(topic("acme", "press-sn-7", TopicKind.TELEMETRY), encode(msg), qos=1).wait_for_publish(5)
            client.disconnect()
            client.loop_stop()
            deadline = time.monotonic() + 10
            while True:
                stored = httpx.get(f"{url}/api/v1/devices/press-sn-7", headers=auth, verify=ca).json()
                if stored["stored_messages"] == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert stored["stored_messages"] == 1

            # Renewed with its current certificate; the new identity connects, and so does the old one
            # until it expires (no downtime while a fleet rolls over).
            old_cert = device.cert.read_bytes()
            renewed = edgeloop("renew", "--url", url, "--dir", str(tmp_path / "device"), env={"EDGELOOP_CA": ca_file})
            assert "renewed press-sn-7" in renewed.stdout
            assert device.cert.read_bytes() != old_cert
            assert connects(device, mqtt_port)

            # Revoked through the API: every certificate of the device, refused after the reload.
            revoked = edgeloop("devices", "revoke", "press-sn-7", "--url", url, env=cli_env)
            assert "revoked press-sn-7" in revoked.stdout
            broker.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert not connects(device, mqtt_port)
            audit = httpx.get(f"{url}/api/v1/audit", headers=auth, verify=ca).json()
            actions = {(a["action"], a["outcome"]) for a in audit}
            assert {("login", "ok"), ("enrollment.create", "ok"), ("provision", "ok"), ("certificate.renew", "ok"),
                    ("device.revoke", "ok")} <= actions
            assert json.dumps(audit).count("press-sn-7") >= 1
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(30)
