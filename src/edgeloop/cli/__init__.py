"""The ``edgeloop`` command line: the root app (:mod:`~edgeloop.cli.root`), the API client
(:mod:`~edgeloop.cli.client`), the one output path for tables and JSON (:mod:`~edgeloop.cli.output`), the one
duration grammar (:mod:`~edgeloop.cli.durations`), and one module per command group, registered here.

A new command group is a new module exposing its ``typer.Typer``, added to the list below."""

from __future__ import annotations

from edgeloop.cli import (
    actions,
    alerts,
    bench,
    broker,
    campaigns,
    commands,
    devices,
    edge_model,
    enroll,
    evaluate,
    gateways,
    incidents,
    login,
    models,
    pki,
    platform,
    registry,
    rul_model,
    rules,
    suppressions,
    users,
)
from edgeloop.cli.root import app

__all__ = ["app", "main"]

# top-level commands, in the order `edgeloop --help` lists them
for _commands in (platform.app, edge_model.app, rul_model.app, enroll.device_app, login.app, registry.app):
    app.add_typer(_commands)

# command groups
app.add_typer(bench.bench_app, name="bench")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(pki.pki_app, name="pki")
app.add_typer(broker.broker_app, name="broker")
app.add_typer(enroll.enroll_app, name="enroll")
app.add_typer(devices.devices_app, name="devices")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(gateways.gateways_app, name="gateways")
app.add_typer(models.models_app, name="models")
app.add_typer(campaigns.campaigns_app, name="campaigns")
app.add_typer(commands.commands_app, name="commands")
app.add_typer(actions.policies_app, name="policies")
app.add_typer(actions.decisions_app, name="decisions")
app.add_typer(actions.holds_app, name="holds")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(rules.rules_app, name="rules")
app.add_typer(suppressions.maintenance_app, name="maintenance")
app.add_typer(suppressions.silences_app, name="silences")
app.add_typer(users.users_app, name="users")
app.add_typer(users.admin_app, name="admin")


def main() -> None:
    """The ``edgeloop`` entry point."""
    app()
