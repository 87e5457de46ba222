"""``edgeloop devices ...``: devices of a running platform (revocation)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.output import out

__all__ = ["devices_app"]

devices_app = typer.Typer(no_args_is_help=True, help="Devices of a running platform: revocation.")


@devices_app.command("revoke")
def devices_revoke(
    device_id: Annotated[str, typer.Argument(help="The device to revoke.")],
    url: Url = DEFAULT_URL,
) -> None:
    """Revoke a device's certificates through the API (admin): CRL rewritten, embedded broker drops it at once."""
    doc = api("POST", url, f"/api/v1/devices/{device_id}/revoke")
    closed = " and its live MQTT session closed" if doc["sessions_closed"] else ""
    out.print(f"revoked {device_id} (certificate serials {', '.join(doc['revoked_serials'])}){closed}. "
              "With Mosquitto, reload it (kill -HUP) to apply the new CRL.")


