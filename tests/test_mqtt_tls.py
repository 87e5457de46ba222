"""Mutual TLS on a real Mosquitto with EdgeLoop's generated configuration, with real TLS clients."""

from __future__ import annotations

import datetime as dt
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import INGEST_IDENTITY, run_mosquitto
from edgeloop.cli import app
from edgeloop.identity.pki import CertificateAuthority, build_csr, new_private_key, write_identity

pytestmark = pytest.mark.mosquitto


@dataclass
class Identity:
    name: str
    dir: Path

    @property
    def cert(self) -> Path:
        return self.dir / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        return self.dir / f"{self.name}.key"


@dataclass
class TlsBroker:
    port: int
    proc: subprocess.Popen[bytes]
    ca: CertificateAuthority
    ids: dict[str, Identity]
    ca_file: Path

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)


def make_identity(ca: CertificateAuthority, name: str, out: Path, *, kind: str = "device", **kw: Any) -> Identity:
    key = new_private_key()  # generated where it lives; the CA only sees the CSR
    if kw:
        cert = ca.issue(key.public_key(), name, kind="device", **kw)
    else:
        cert = ca.sign_csr(build_csr(key, name), common_name=name, kind="service" if kind == "service" else "device")
    write_identity(out / name, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
    return Identity(name, out / name)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    root = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority.init(root / "pki")
    ids = {n: make_identity(ca, n, root / "ids") for n in ("dev-a", "dev-b", "dev-c")}
    ids[INGEST_IDENTITY] = make_identity(ca, INGEST_IDENTITY, root / "ids", kind="service")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    ids["dev-old"] = make_identity(ca, "dev-old", root / "ids", not_before=old, days=30)
    foreign = CertificateAuthority.init(root / "foreign-pki", name="Intruder")
    ids["foreign-dev-a"] = Identity("dev-a", make_identity(foreign, "dev-a", root / "foreign").dir)
    port = free_port()
    # Generated exactly as an operator does it, then run as it is.
    result = CliRunner().invoke(app, ["broker", "config", "mosquitto", "--pki", str(ca.dir), "--out",
                                      str(root / "broker"), "--port", str(port), "--bind", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    with run_mosquitto(root / "broker", port=port, config=root / "broker" / "mosquitto.conf") as proc:
        yield TlsBroker(port, proc, ca, ids, root / "pki" / "ca-chain.pem")


def client(broker: TlsBroker, ident: Identity | None, *, ca_file: Path | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ident.name if ident else "nobody")
    c.tls_set(ca_certs=str(ca_file or broker.ca_file), certfile=str(ident.cert) if ident else None,
              keyfile=str(ident.key) if ident else None, cert_reqs=ssl.CERT_REQUIRED)
    return c


def connects(broker: TlsBroker, ident: Identity | None, timeout_s: float = 5.0) -> bool:
    """True only if the broker completes the TLS handshake and accepts the MQTT session."""
    c = client(broker, ident)
    c.reconnect_delay_set(min_delay=60, max_delay=60)  # one attempt: a refusal must not be retried away
    outcome: list[bool] = []
    settled = threading.Event()

    def settle(ok: bool) -> None:
        outcome.append(ok)
        settled.set()

    c.on_connect = lambda _c, _u, _f, rc, _p: settle(not rc.is_failure)
    c.on_disconnect = lambda *_a: settle(False)
    try:
        c.connect("127.0.0.1", broker.port)
    except (ssl.SSLError, OSError):
        return False
    c.loop_start()
    try:
        return settled.wait(timeout_s) and outcome[0] and c.is_connected()
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.fixture
def ingest(broker: TlsBroker) -> Iterator[tuple[mqtt.Client, list[tuple[str, bytes]]]]:
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    c = client(broker, broker.ids[INGEST_IDENTITY])
    c.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    c.on_subscribe = lambda *_a: ready.set()
    c.connect("127.0.0.1", broker.port)
    c.subscribe("edgeloop/v1/+/+/telemetry", qos=1)
    c.loop_start()
    assert ready.wait(5)
    yield c, got
    c.disconnect()
    c.loop_stop()


def connected(broker: TlsBroker, name: str) -> mqtt.Client:
    c = client(broker, broker.ids[name])
    done = threading.Event()
    c.on_connect = lambda *_a: done.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert done.wait(5), f"{name} could not connect"
    return c


def test_device_publishes_on_its_own_topics_only(broker: TlsBroker, ingest: Any) -> None:
    _, got = ingest
    a = connected(broker, "dev-a")
    try:
        a.publish("edgeloop/v1/acme/dev-b/telemetry", b"forged", qos=1).wait_for_publish(5)
        a.publish("edgeloop/v1/acme/dev-a/telemetry", b"mine", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while ("edgeloop/v1/acme/dev-a/telemetry", b"mine") not in got and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the forged one was published first; it would have arrived by now
    finally:
        a.disconnect()
        a.loop_stop()
    assert ("edgeloop/v1/acme/dev-a/telemetry", b"mine") in got
    assert all(topic != "edgeloop/v1/acme/dev-b/telemetry" for topic, _ in got), "device A spoke as device B"


def test_device_receives_only_its_own_commands(broker: TlsBroker, ingest: Any) -> None:
    platform, _ = ingest
    a = connected(broker, "dev-a")
    granted: list[list[int]] = []
    received: list[str] = []
    subscribed = threading.Event()

    def on_subscribe(_c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        granted.append([c.value for c in codes])
        subscribed.set()

    a.on_subscribe = on_subscribe
    a.on_message = lambda _c, _u, m: received.append(m.topic)
    try:
        a.subscribe([("edgeloop/v1/acme/dev-a/cmd", 1), ("edgeloop/v1/acme/dev-b/cmd", 1)])
        assert subscribed.wait(5)
        platform.publish("edgeloop/v1/acme/dev-b/cmd", b"stop", qos=1).wait_for_publish(5)
        platform.publish("edgeloop/v1/acme/dev-a/cmd", b"start", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while "edgeloop/v1/acme/dev-a/cmd" not in received and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        a.disconnect()
        a.loop_stop()
    assert granted[0][0] == 1, "its own command topic is granted at QoS 1"
    # Mosquitto's ACL file is enforced at delivery: the SUBACK may grant the foreign topic, but
    # nothing published there ever reaches this device.
    assert received == ["edgeloop/v1/acme/dev-a/cmd"], "device A received another device's command"


def test_valid_identities_connect(broker: TlsBroker) -> None:
    assert connects(broker, broker.ids["dev-a"])
    assert connects(broker, broker.ids[INGEST_IDENTITY])


@pytest.mark.parametrize("who", ["foreign-dev-a", "dev-old", None])
def test_refused_identities(broker: TlsBroker, who: str | None) -> None:
    """A certificate from a foreign CA (even with a known name), an expired one, and none at all."""
    assert not connects(broker, broker.ids[who] if who else None)


def test_revoked_certificate_is_refused_after_reload(broker: TlsBroker) -> None:
    assert connects(broker, broker.ids["dev-c"])
    serials = broker.ca.revoke("dev-c")
    assert serials
    broker.reload()
    assert not connects(broker, broker.ids["dev-c"])
    assert connects(broker, broker.ids["dev-a"]), "revoking one device leaves the others alone"
