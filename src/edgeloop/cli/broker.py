"""``edgeloop broker config ...``: generate a broker's configuration (Mosquitto with mutual TLS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.output import fail, out
from edgeloop.errors import EdgeLoopError

__all__ = ["broker_app"]

broker_app = typer.Typer(no_args_is_help=True, help="MQTT broker configuration.")
broker_config_app = typer.Typer(no_args_is_help=True, help="Generate a broker's configuration.")
broker_app.add_typer(broker_config_app, name="config")


@broker_config_app.command("mosquitto")
def broker_config_mosquitto(
    pki: Annotated[Path, typer.Option("--pki", help="The PKI directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where mosquitto.conf and tls/ are written.")],
    port: Annotated[int, typer.Option(help="TLS listener port.")] = 8883,
    bind: Annotated[str, typer.Option(help="Listen address.")] = "0.0.0.0",
    hostname: Annotated[list[str] | None, typer.Option(help="Broker DNS name(s) for its certificate.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Broker IP address(es) for its certificate.")] = None,
    user: Annotated[str | None, typer.Option(help="Account Mosquitto runs as; it must own OUT (default: the "
                                              "current one when run as root).")] = None,
) -> None:
    """Write a complete mutual-TLS Mosquitto configuration: run it with ``mosquitto -c OUT/mosquitto.conf``."""
    from edgeloop.broker.mosquitto import run_as, write_mosquitto_tls_config
    from edgeloop.identity.pki import CertificateAuthority

    try:
        ca = CertificateAuthority.open(pki)
        conf = write_mosquitto_tls_config(ca, out_dir, port=port, bind=bind,
                                          hostnames=hostname or ["localhost"], ip_addresses=ip or ["127.0.0.1"],
                                          user=user or run_as())
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.print(f"wrote {conf}; run: mosquitto -c {conf}")


