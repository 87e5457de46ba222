"""The edge story of ``edgeloop eval loop``: real agents (simulator source, journal, MQTT uplink, signed model
slots, probation guardrail) on two gateways of a real platform (embedded broker, SQLite, registry signing with the
platform's own PKI, campaign service) get a good edge version through gated waves and a miscalibrated one that
the first wave's gateway reverts by itself, which rolls the campaign back. Real time: about a minute."""

from __future__ import annotations

from pathlib import Path

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Tenant
from edgeloop.evaluation.edge_story import EDGE_MODEL, run_edge_story
from tests.support import free_port


async def test_real_agents_take_a_good_edge_version_and_roll_a_bad_one_back_at_the_first_wave(tmp_path: Path) -> None:
    cfg = PlatformConfig(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=None,
                         pki_dir=tmp_path / "pki", create_pki=True)
    async with Platform(cfg) as platform:
        await platform.registry.create(Tenant(id="plant", name="plant"))
        out = await run_edge_story(platform, tenant="plant", data_dir=tmp_path, seed=1, gateways=2, soak_s=15.0)
        assert out["edge_ready"], "every agent ran version 1, signed by the platform, before the rollouts"
        [good, bad] = out["edge_campaigns"]
        assert out["edge_promoted"], "\n".join(good["events"])
        assert out["edge_bad_rolled_back"] and out["edge_bad_max_share"] <= 0.5, "\n".join(bad["events"])
        assert out["edge_running_at_end"] == {"edge1-gw": 2, "edge2-gw": 2}, "the promoted version, everywhere"
        assert good["phase"] == "promoted" and bad["phase"] == "rolled_back"
        assert any("reverted on" in e and "alarm_rate" in e for e in bad["events"]), bad["events"]
        assert platform.models is not None
        assert str(await platform.models.champion(EDGE_MODEL)) == f"{EDGE_MODEL}@2"
        audit = [a.action for a in await platform.store.list_audit(limit=500)]
        assert "campaign.promoted" in audit and "campaign.rolled_back" in audit


def test_the_edge_story_needs_a_wave_and_its_control() -> None:
    from typer.testing import CliRunner

    from edgeloop.cli import app

    result = CliRunner().invoke(app, ["eval", "loop", "--edge-gateways", "1"])
    words = " ".join(result.output.replace("│", " ").split())  # the error box wraps the message
    assert result.exit_code == 2 and "at least 2: a wave and its control" in words, result.output
