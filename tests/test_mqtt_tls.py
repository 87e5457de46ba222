"""Mutual TLS with real TLS clients, against both brokers EdgeLoop runs: a real Mosquitto with the generated
configuration, and the embedded (amqtt) broker. Every rule is checked on each."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from edgeloop.broker import free_port
from edgeloop.broker.acl import BROKER_IDENTITY, INGEST_IDENTITY
from edgeloop.broker.embedded import BrokerTls, EmbeddedBroker
from edgeloop.broker.mosquitto import run_mosquitto
from edgeloop.cli import app
from edgeloop.identity.crl import RevocationList
from edgeloop.identity.pki import CertificateAuthority, build_csr, ensure_identity, new_private_key, write_identity
from edgeloop.identity.tls import TlsIdentity


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
    kind: str
    port: int
    ca: CertificateAuthority
    ids: dict[str, Identity]
    ca_file: Path
    reload: Callable[[], None]


def make_identity(ca: CertificateAuthority, name: str, out: Path, *, kind: str = "device", **kw: Any) -> Identity:
    key = new_private_key()  # generated where it lives; the CA only sees the CSR
    if kw:
        cert = ca.issue(key.public_key(), name, kind="device", **kw)
    else:
        cert = ca.sign_csr(build_csr(key, name), common_name=name, kind="service" if kind == "service" else "device")
    write_identity(out / name, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
    return Identity(name, out / name)


@contextlib.contextmanager
def embedded_broker(ca: CertificateAuthority, workdir: Path, port: int) -> Iterator[None]:
    """The embedded broker with mutual TLS, on its own event loop in a thread (the clients here are blocking)."""
    ensure_identity(ca, workdir, BROKER_IDENTITY, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    tls = BrokerTls(TlsIdentity.from_dir(workdir, BROKER_IDENTITY), RevocationList(ca.dir / "crl.pem", ca.cert))
    started, failed = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with EmbeddedBroker(port=port, tls=tls):
                started.set()
                await stop.wait()
        except Exception as exc:  # noqa: BLE001  # reported to the test thread below
            failed.append(exc)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10) and not failed, failed
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module", params=[pytest.param("mosquitto", marks=pytest.mark.mosquitto), "embedded"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    root = tmp_path_factory.mktemp(f"tls-{request.param}")
    ca = CertificateAuthority.init(root / "pki")
    ids = {n: make_identity(ca, n, root / "ids") for n in ("dev-a", "dev-b", "dev-c", "dev-d")}
    ids[INGEST_IDENTITY] = make_identity(ca, INGEST_IDENTITY, root / "ids", kind="service")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    ids["dev-old"] = make_identity(ca, "dev-old", root / "ids", not_before=old, days=30)
    foreign = CertificateAuthority.init(root / "foreign-pki", name="Intruder")
    ids["foreign-dev-a"] = Identity("dev-a", make_identity(foreign, "dev-a", root / "foreign").dir)
    port = free_port()
    if request.param == "embedded":
        with embedded_broker(ca, root / "broker", port):
            # Revocation applies by itself within a second, and closes the live session.
            yield TlsBroker("embedded", port, ca, ids, root / "pki" / "ca-chain.pem", lambda: time.sleep(1.5))
        return
    # Generated exactly as an operator does it, then run as it is.
    result = CliRunner().invoke(app, ["broker", "config", "mosquitto", "--pki", str(ca.dir), "--out",
                                      str(root / "broker"), "--port", str(port), "--bind", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    with run_mosquitto(root / "broker", port=port, config=root / "broker" / "mosquitto.conf") as proc:

        def reload() -> None:
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)

        yield TlsBroker("mosquitto", port, ca, ids, root / "pki" / "ca-chain.pem", reload)


def client(broker: TlsBroker, ident: Identity | None, *, ca_file: Path | None = None,
           client_id: str | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or (ident.name if ident else "nobody"))
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
    if broker.kind == "embedded":
        assert granted[0][1] == 0x80, "the embedded broker refuses the foreign subscription outright"
    # Mosquitto's ACL file is enforced at delivery: its SUBACK grants the foreign topic, but
    # nothing published there ever reaches this device.
    assert received == ["edgeloop/v1/acme/dev-a/cmd"], "device A received another device's command"


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edgeloop.broker.embedded" and "refused" in
            r.getMessage()]


def test_refused_publishes_leave_a_log_line_per_identity_and_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish the embedded broker's ACL refuses used to leave no trace; a flood of them leaves one line
    (Mosquitto logs its own refusals)."""
    ca = CertificateAuthority.init(tmp_path / "pki")
    ids = {n: make_identity(ca, n, tmp_path / "ids") for n in ("dev-e", "dev-f")}
    port = free_port()
    with embedded_broker(ca, tmp_path / "broker", port):
        broker = TlsBroker("embedded", port, ca, ids, tmp_path / "pki" / "ca-chain.pem", lambda: None)
        e = connected(broker, "dev-e")
        try:
            for _ in range(20):
                e.publish("edgeloop/v1/acme/dev-f/telemetry", b"forged", qos=1).wait_for_publish(5)
            deadline = time.monotonic() + 5
            while not refusals(caplog) and time.monotonic() < deadline:  # logged on the broker's thread
                time.sleep(0.02)
        finally:
            e.disconnect()
            e.loop_stop()
    assert refusals(caplog) == [
        "MQTT publish by dev-e on 'edgeloop/v1/acme/dev-f/telemetry' refused: not allowed by the ACL"]


def test_a_chosen_client_id_is_not_an_identity(broker: TlsBroker, ingest: Any) -> None:
    """Device A connecting with client id 'dev-b' neither speaks as B nor takes over B's session."""
    _, got = ingest
    b = connected(broker, "dev-b")
    dropped = threading.Event()
    b.on_disconnect = lambda *_a: dropped.set()
    impostor = client(broker, broker.ids["dev-a"], client_id="dev-b")
    ready = threading.Event()
    impostor.on_connect = lambda *_a: ready.set()
    impostor.connect("127.0.0.1", broker.port)
    impostor.loop_start()
    try:
        assert ready.wait(5)
        impostor.publish("edgeloop/v1/acme/dev-b/telemetry", b"forged", qos=1).wait_for_publish(5)
        b.publish("edgeloop/v1/acme/dev-b/telemetry", b"genuine", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while ("edgeloop/v1/acme/dev-b/telemetry", b"genuine") not in got and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert not dropped.is_set(), "the impostor took over B's session"
        assert b.is_connected()
    finally:
        for c in (impostor, b):
            c.disconnect()
            c.loop_stop()
    assert ("edgeloop/v1/acme/dev-b/telemetry", b"genuine") in got
    assert ("edgeloop/v1/acme/dev-b/telemetry", b"forged") not in got, "A spoke as B by choosing B's client id"


def test_plain_connections_and_garbage_are_refused_and_harmless(broker: TlsBroker) -> None:
    for junk in (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 8):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
            s.sendall(junk)
            try:
                reply = s.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        assert not reply.startswith(b"\x20\x02\x00\x00"), "a plain-TCP client was accepted"
    assert connects(broker, broker.ids["dev-a"]), "the broker still serves after garbage on its TLS port"


# Mosquitto applies a new CRL to new connections after a reload (test_revoked_certificate_is_refused_after_reload).
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_revocation_closes_the_live_session_on_the_embedded_broker(broker: TlsBroker) -> None:
    d = connected(broker, "dev-d")
    dropped = threading.Event()
    d.on_disconnect = lambda *_a: dropped.set()
    d.reconnect_delay_set(min_delay=60, max_delay=60)
    try:
        broker.ca.revoke("dev-d")  # as `edgeloop pki revoke` does, from outside the broker
        assert dropped.wait(3), "the revoked device kept its live session"
    finally:
        d.disconnect()
        d.loop_stop()
    assert not connects(broker, broker.ids["dev-d"])


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
