"""Connecting a real gateway to `make up`, exactly as README and docs/agent.md say, against a real `edgeloop up`
(mutual TLS, login required); and the agent saying why the broker refuses it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeloop.agent.config import AgentConfig, parse_config
from edgeloop.agent.refusals import RefusalLog, connack_cause, error_cause
from edgeloop.agent.self_provision import device_ids, missing, provision_missing
from edgeloop.errors import ConfigError
from edgeloop.identity.pki import CertificateAuthority, ensure_identity
from tests.conftest import ADMIN_PASSWORD, LivePlatform, start_up_process, stop_up_process
from tests.support import free_port

ROOT = Path(__file__).parent.parent
NAME = "hall-1"  # the gateway the docs add
MACHINES = ["hall-1-motor-0001", "hall-1-motor-0002", "hall-1-motor-0003"]  # --devices 3 --seed 1, prefixed


def documented_commands() -> list[str]:
    """The commands of README's "Connect a real gateway" block (docs/agent.md must show the very same block)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Connect a real gateway to `make up`"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    assert f"```sh\n{block.group(1)}```" in (ROOT / "docs" / "agent.md").read_text(), "docs/agent.md differs"
    return [line for line in block.group(1).splitlines() if line.strip()]


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == ".venv/bin/edgeloop", command
    return [sys.executable, "-m", "edgeloop", *words[1:]]


class Agent:
    """``edgeloop agent`` as its own process; its output read line by line as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 60) -> str:
        """The first output line (rich may wrap: lines are joined) matching ``pattern``."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = " ".join(" ".join(self.seen).split())
            found = re.search(pattern, text)
            if found:
                return found.group(0)
            left = deadline - time.monotonic()
            assert (left > 0 and self.proc.poll() is None) or not self.lines.empty(), (
                f"no {pattern!r} in the agent's output: {text[-3000:]}")
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, min(left, 1.0))).rstrip("\n"))
            except queue.Empty:
                continue

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(10)
            while not self.lines.empty():
                self.seen.append(self.lines.get().rstrip("\n"))
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePlatform]:
    # seed 1, as `make up`: its fleet is motor-0001, motor-0002, the ids the gateway's simulator has unprefixed
    platform = start_up_process(tmp_path_factory.mktemp("gw-live") / "data", devices=2, faulty=0, seed=1,
                                auth=True)
    try:
        yield platform
    finally:
        assert stop_up_process(platform) == 0


@pytest.fixture(scope="module")
def auth(live: LivePlatform) -> dict[str, str]:
    token = httpx.post(f"{live.base_url}/api/v1/auth/token",
                       data={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def added(live: LivePlatform, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The first documented command, run where a user runs it (the password typed in), against ``live``."""
    home = tmp_path_factory.mktemp("gw-home")
    env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_TOKEN"} | {"EDGELOOP_URL": live.base_url,
                                                                           "COLUMNS": "200"}
    commands = documented_commands()
    assert len(commands) <= 3, "the issue allows at most three commands"
    assert commands[-1].startswith(".venv/bin/edgeloop agent ")
    for command in commands[:-1]:
        done = subprocess.run(argv(command), cwd=home, env=env, input=ADMIN_PASSWORD + "\n", text=True,
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr + done.stdout
    return home, env


def get(live: LivePlatform, auth: dict[str, str], path: str) -> Any:
    resp = httpx.get(live.base_url + path, headers=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_documented_commands_bring_a_gateways_data_to_the_dashboard(
    live: LivePlatform, auth: dict[str, str], added: tuple[Path, dict[str, str]],
) -> None:
    home, env = added
    config = home / NAME / "agent.yaml"
    assert config.stat().st_mode & 0o777 == 0o600, "agent.yaml holds the claim"
    agent = Agent(argv(documented_commands()[-1]), home, env)
    try:
        agent.wait_for(r"provisioned hall-1-gw, " + ", ".join(MACHINES))
        deadline = time.monotonic() + 60
        while True:  # the machines' samples stored and seen, for the right tenant and asset
            devices = {d: get(live, auth, f"/api/v1/devices/{d}") for d in MACHINES}
            if all(d["stored_samples"] > 0 and d["last_seen_ms"] for d in devices.values()):
                break
            assert time.monotonic() < deadline, f"no data from the gateway's machines: {devices}"
            time.sleep(0.5)
        assets = {a["id"]: a for a in get(live, auth, "/api/v1/assets")}
        for device in MACHINES:
            assert devices[device]["tenant"] == "demo"
            assert devices[device]["profile"] == "edge-sim-v1"
            a = assets[devices[device]["asset"]]
            assert (a["tenant"], a["site"], a["line"], a["devices"]) == ("demo", NAME, NAME, [device])
            assert a["last_seen_ms"] is not None and a["status"] in ("ok", "alert")
        # the gateway's own device sends heartbeats, no samples: "no data yet", not "alert"
        assert (assets["hall-1-gw"]["status"], assets["hall-1-gw"]["last_seen_ms"]) == ("no_data", None)
        deadline = time.monotonic() + 30
        while True:
            gateways = {g["id"]: g for g in get(live, auth, "/api/v1/gateways")}
            if "hall-1-gw" in gateways and gateways["hall-1-gw"]["state"] == "online":
                break
            assert time.monotonic() < deadline, f"the gateway's heartbeat did not arrive: {gateways}"
            time.sleep(0.5)
        assert sorted(gateways["hall-1-gw"]["devices"]) == MACHINES
        # the platform's own simulated fleet is untouched: its ids, its assets
        fleet = {d["id"]: d for d in get(live, auth, "/api/v1/devices") if not d["id"].startswith(f"{NAME}-")}
        assert sorted(fleet) == ["motor-0001", "motor-0002"]
        assert {d["asset"] for d in fleet.values()} == {"asset-0001", "asset-0002"}
        for device in ("hall-1-gw", *MACHINES):
            assert (home / NAME / "identities" / f"{device}.key").stat().st_mode & 0o777 == 0o600
    finally:
        assert agent.stop() == 0
    # started again: nothing to provision, it simply runs
    again = Agent(argv(documented_commands()[-1]), home, env)
    try:
        again.wait_for(r"EdgeLoop agent gateway hall-1-gw")
        assert "provisioning" not in " ".join(again.seen)
    finally:
        assert again.stop() == 0


def variant(added: tuple[Path, dict[str, str]], where: str, *, mqtt: str | None = None) -> Path:
    """A copy of the added gateway's folder (certificates provisioned by the documented commands if needed),
    without its journal, its broker address optionally changed."""
    home, env = added
    if not (home / NAME / "identities" / "hall-1-gw.crt").exists():
        agent = Agent(argv(documented_commands()[-1]), home, env)
        try:
            agent.wait_for("provisioned hall-1-gw")
        finally:
            agent.stop()
    target = home / where
    shutil.copytree(home / NAME, target, ignore=shutil.ignore_patterns("agent-data"))
    if mqtt is not None:
        text = (target / "agent.yaml").read_text()
        (target / "agent.yaml").write_text(re.sub(r"mqtt: \S+", f"mqtt: {mqtt}", text, count=1))
    return target


def test_a_revoked_certificate_is_named_as_the_reason(
    live: LivePlatform, auth: dict[str, str], added: tuple[Path, dict[str, str]],
) -> None:
    folder = variant(added, "revoked")
    agent = Agent([sys.executable, "-m", "edgeloop", "agent", "--config", str(folder / "agent.yaml")], folder,
                  added[1])
    try:
        agent.wait_for(r"4/4 devices connected")
        revoked = httpx.post(f"{live.base_url}/api/v1/devices/hall-1-motor-0002/revoke", headers=auth, timeout=10)
        assert revoked.status_code == 200, revoked.text
        # the broker closes its session at once and refuses it from then on; the agent says why, once
        line = agent.wait_for(r"hall-1-motor-0002 cannot connect: [^;]*(not authorised|revoked)[^;]*")
        assert "its certificate may be revoked" in line or "certificate revoked" in line, line
    finally:
        agent.stop()
    refusals = [ln for ln in agent.seen if "cannot connect" in ln]
    assert len(refusals) == 1, refusals


def test_a_certificate_of_another_ca_is_named_as_the_reason(
    live: LivePlatform, added: tuple[Path, dict[str, str]], tmp_path: Path,
) -> None:
    folder = variant(added, "other-ca")
    other = CertificateAuthority.init(tmp_path / "other-pki", name="Another")
    platform_ca = (folder / "identities" / "ca.crt").read_bytes()
    for name in ("hall-1-gw", *MACHINES):
        for suffix in (".crt", ".key"):
            (folder / "identities" / f"{name}{suffix}").unlink()
        ensure_identity(other, folder / "identities", name, kind="device")
    # the agent trusts the other CA: the broker's certificate is not from it
    agent = Agent([sys.executable, "-m", "edgeloop", "agent", "--config", str(folder / "agent.yaml")], folder,
                  added[1])
    try:
        agent.wait_for(r"cannot connect: the broker's certificate is not from the CA in uplink.tls")
    finally:
        agent.stop()
    # the agent trusts the platform, but its certificates are the other CA's: the broker says "unknown CA"
    (folder / "identities" / "ca.crt").write_bytes(platform_ca)
    agent = Agent([sys.executable, "-m", "edgeloop", "agent", "--config", str(folder / "agent.yaml")], folder,
                  added[1])
    try:
        agent.wait_for(r"cannot connect: the broker does not trust this device's certificate \(issued by another "
                       r"CA: CN=Another")
    finally:
        agent.stop()


def test_nothing_listening_is_named_as_the_reason(added: tuple[Path, dict[str, str]]) -> None:
    port = free_port()
    folder = variant(added, "no-broker", mqtt=f"127.0.0.1:{port}")
    agent = Agent([sys.executable, "-m", "edgeloop", "agent", "--config", str(folder / "agent.yaml")], folder,
                  added[1])
    try:
        agent.wait_for(rf"cannot connect: nothing accepts connections at 127.0.0.1:{port}")
    finally:
        agent.stop()


def test_refusals_are_logged_once_per_cause_with_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog(window_ms=60_000)
    cause = connack_cause(type("Reason", (), {"__str__": lambda _s: "Not authorized"})())
    with caplog.at_level("WARNING", logger="edgeloop.agent.uplink"):
        for device in ("gw", "m1", "m2", "m1"):
            log.refused(device, *cause)
        log.refused("m1", *error_cause(ConnectionRefusedError(111, "Connection refused"), "h:1"))
        log.connected("m1")
        log.connected("m1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "gw cannot connect: the broker refused this identity (not authorised): its certificate may be revoked, or "
        "the device is not registered for it; retrying",
        "m1 cannot connect: nothing accepts connections at h:1 (is the platform running there?); retrying",
        "m1 connected"]


@pytest.mark.parametrize(("text", "cause"), [
    ("[SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert certificate revoked (_ssl.c:2580)", "certificate revoked"),
    ("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)", "unknown CA"),
    ("[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert certificate expired", "certificate expired"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for "
     "'gw.example'. (_ssl.c:1006)", "hostname mismatch"),
    ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "not TLS"),
    ("[Errno -2] Name or service not known", "connection failed"),
])
def test_tls_failures_have_plain_causes(text: str, cause: str) -> None:
    assert error_cause(text, "h:1")[0] == cause


def sim_config(tmp_path: Path, *, url: str, claim: str, extra: str = "") -> AgentConfig:
    text = f"""
agent: {{tenant: demo, gateway: hall-1-gw}}
uplink: {{mqtt: "127.0.0.1:1", tls: ./ids}}
provision: {{url: "{url}", claim: "{claim}"}}
sources:
  - {{name: sim, kind: simulator, devices: 2, seed: 1, prefix: hall-1-}}
{extra}"""
    return parse_config(text).resolve(tmp_path)


def test_every_device_must_be_named_for_the_claims_enrollment(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, url="http://127.0.0.1:1", claim="hall-1." + "x" * 30, extra="""
  - {name: plc, kind: modbus, host: 10.0.0.7, device: press-1, points: [{channel: force, address: 0}]}""")
    assert device_ids(cfg) == ["hall-1-gw", "hall-1-motor-0001", "hall-1-motor-0002", "press-1"]
    assert missing(cfg) == device_ids(cfg)
    with pytest.raises(ConfigError, match=r"device id 'press-1' cannot be provisioned with a claim of enrollment "
                       r"'hall-1': its devices are named hall-1-SERIAL"):
        asyncio.run(provision_missing(cfg))


def test_a_refused_claim_stops_the_start_with_the_platforms_reason(live: LivePlatform, tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, url=live.base_url, claim="hall-1." + "x" * 30)
    with pytest.raises(ConfigError, match=r"provisioning hall-1-gw at .* was refused \(401 unknown_claim\): the "
                       r"claim is not valid"):
        asyncio.run(provision_missing(cfg))
    assert not (tmp_path / "ids").exists(), "nothing is written for a refused device"


def test_an_unreachable_platform_is_retried_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = sim_config(tmp_path, url=f"http://127.0.0.1:{free_port()}", claim="hall-1." + "x" * 30)

    async def attempt() -> None:
        task = asyncio.create_task(provision_missing(cfg, retry_max_s=0.05))
        deadline = time.monotonic() + 30
        while sum("cannot provision" in r.getMessage() for r in caplog.records) == 0:
            assert time.monotonic() < deadline and not task.done(), "no retry message"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # several more attempts, at most 0.05 s apart after the first second
        assert not task.done(), "an unreachable platform is retried, not given up on"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level("WARNING", logger="edgeloop.agent.self_provision"):
        asyncio.run(attempt())
    said = [r.getMessage() for r in caplog.records if "cannot provision" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("cannot provision hall-1-gw yet (cannot reach the platform at http://127.0.0.1:")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, CertificateAuthority]]:
    """A TLS server on 127.0.0.1 whose certificate names only ``other.example`` (a broker the agent dials by an
    address its certificate does not name)."""
    ca = CertificateAuthority.init(tmp_path / "pki", name="Hall")
    ensure_identity(ca, tmp_path / "server", "broker", kind="service", dns_names=["other.example"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server" / "broker.crt", tmp_path / "server" / "broker.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # accept() returns now and then to see whether the test is over
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], ca
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def test_a_broker_certificate_for_another_name_is_named_as_the_reason(
    tls_server: tuple[int, CertificateAuthority], tmp_path: Path,
) -> None:
    port, ca = tls_server
    for device in ("hall-1-gw", "hall-1-motor-0001"):
        ensure_identity(ca, tmp_path / "ids", device, kind="device")
    (tmp_path / "agent.yaml").write_text(f"""
agent: {{tenant: demo, gateway: hall-1-gw}}
uplink: {{mqtt: "127.0.0.1:{port}", tls: ./ids}}
sources:
  - {{name: sim, kind: simulator, devices: 1, seed: 1, prefix: hall-1-}}
""")
    env = {**os.environ, "COLUMNS": "200"}
    agent = Agent([sys.executable, "-m", "edgeloop", "agent", "--config", str(tmp_path / "agent.yaml")], tmp_path,
                  env)
    try:
        agent.wait_for(r"cannot connect: the broker's certificate does not name the address in uplink.mqtt")
    finally:
        agent.stop()
