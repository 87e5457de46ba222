"""End to end: simulated fleets through the real platform, real brokers, real databases, real restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_as, run_mosquitto_async, write_mosquitto_tls_config
from edgeloop.identity.pki import CertificateAuthority
from edgeloop.scenario import ScenarioConfig, run_scenario
from tests.conftest import PG_ADMIN_DSN, start_up_process, stop_up_process

pytestmark = pytest.mark.e2e


def assert_outcome(result: dict[str, Any], *, faulty: int) -> None:
    """Every faulty machine alerted, at most one healthy one, every sample stored exactly once."""
    assert result["samples_published"] > 0
    assert result["samples_stored"] == result["samples_published"]
    assert result["samples_lost"] == 0
    assert result["stored_twice"] == 0
    assert result["dead_letters"] == 0
    for d in result["per_device"]:
        assert d["stored_samples"] == d["published_samples"], d
    assert result["faulty_alerted"] == faulty, [d for d in result["per_device"] if d["faulty"]]
    assert result["faulty_missed"] == 0
    assert result["healthy_alerted"] <= 1


async def test_embedded_platform_20_machines_3_faulty() -> None:
    result = await run_scenario(ScenarioConfig(devices=20, faulty=3, seed=7, sim_hours=2))
    assert_outcome(result, faulty=3)
    assert result["broker"] == "embedded"
    assert result["backend"] == "sqlite"


async def test_states_still_active_at_the_end_of_a_run_have_open_alerts() -> None:
    """A stuck sensor that never recovers and a device silent for the last 6.8 min of the run (seed 6): both
    still have an open alert when the run ends (the silence is judged once every device's data is in)."""
    result = await run_scenario(ScenarioConfig(devices=2, faulty=2, seed=6, sim_hours=2,
                                               fault_kinds=("sensor_stuck", "dropout")))
    faults = {d["fault"]: d for d in result["per_device"]}
    assert faults["sensor_stuck"]["fault_active_at_end"] and faults["dropout"]["fault_active_at_end"]
    assert "sensor_stuck" in faults["sensor_stuck"]["open_alerts_at_end"]
    assert "device-silent" in faults["dropout"]["open_alerts_at_end"]
    assert (result["faulty_active_at_end"], result["faulty_without_open_alert_at_end"]) == (2, 0)


@pytest.mark.postgres
@pytest.mark.mosquitto
async def test_postgres_and_real_mosquitto_20_machines_3_faulty(mosquitto: int) -> None:
    result = await run_scenario(ScenarioConfig(
        devices=20, faulty=3, seed=11, sim_hours=2, backend="postgres", pg_url=PG_ADMIN_DSN,
        mqtt_port=mosquitto, external_broker=True))
    assert_outcome(result, faulty=3)
    assert result["broker"] == "external"
    assert result["backend"] == "postgres"


def test_restart_finds_data_and_alerts_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_up_process(data, devices=4, faulty=2, seed=3)
    try:
        first.wait_for_alert(60)
        alerts_before = {a["id"]: a for a in first.get("/api/v1/alerts")}
        device = first.get("/api/v1/assets")[0]["devices"][0]
        stored_before = first.get(f"/api/v1/devices/{device}")["stored_samples"]
    finally:
        assert stop_up_process(first) == 0, "Ctrl-C must stop the platform cleanly"
    assert stored_before > 0

    second = start_up_process(data, devices=4, faulty=2, seed=3)
    try:
        alerts_after = {a["id"]: a for a in second.get("/api/v1/alerts")}
        for alert_id, alert in alerts_before.items():
            assert alerts_after[alert_id]["first_seen"] == alert["first_seen"]
            assert alerts_after[alert_id]["kind"] == alert["kind"]
        stored_after = second.get(f"/api/v1/devices/{device}")["stored_samples"]
        assert stored_after >= stored_before
        # The fleet resumed where the stored data ended: nothing was published twice.
        assert second.get("/api/v1/stats")["ingest"]["duplicates"] == 0
    finally:
        assert stop_up_process(second) == 0


@pytest.mark.parametrize("broker", [pytest.param("mosquitto", marks=pytest.mark.mosquitto), "embedded"])
async def test_whole_loop_over_mutual_tls(tmp_path: Path, broker: str) -> None:
    """Every simulated device and the ingest service connect with their own certificates, to Mosquitto running
    the generated mutual-TLS configuration or to the embedded broker requiring mutual TLS; the outcome is the
    same as in plain MQTT."""
    ca = CertificateAuthority.init(tmp_path / "pki")
    config = ScenarioConfig(devices=10, faulty=2, seed=5, sim_hours=2, pki_dir=ca.dir, data_dir=tmp_path / "data")
    if broker == "mosquitto":
        port = free_port()
        conf = write_mosquitto_tls_config(ca, tmp_path / "broker", port=port, bind="127.0.0.1", user=run_as())
        async with run_mosquitto_async(tmp_path / "broker", port=port, config=conf):
            result = await run_scenario(dataclasses.replace(config, mqtt_port=port, external_broker=True))
    else:
        result = await run_scenario(config)
    assert result["mutual_tls"] is True
    # What this test is about: the transport. Every sample crossed mutual TLS and was stored once.
    assert result["samples_stored"] == result["samples_published"] > 0
    assert result["samples_lost"] == result["stored_twice"] == result["dead_letters"] == 0
    assert result["faulty_alerted"] >= 1
    assert result["healthy_alerted"] == 0
    issued = {c.subject for c in ca.issued()}
    assert {d["device"] for d in result["per_device"]} <= issued, "every device used its own certificate"
    assert "edgeloop-ingest" in issued
