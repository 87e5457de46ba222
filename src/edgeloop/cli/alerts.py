"""``edgeloop alerts ...``: alerts of a running platform (list, acknowledge, resolve)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api
from edgeloop.cli.output import Json, print_json, show, ts

__all__ = ["alerts_app"]

alerts_app = typer.Typer(no_args_is_help=True, help="Alerts of a running platform.")


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
) -> None:
    """Alerts, most recent first."""
    alerts = api("GET", url, "/api/v1/alerts" + (f"?status={status}" if status else ""))
    show(alerts, as_json=as_json, title="alerts",
          columns=("id", "severity", "status", "asset", "kind", "first seen", "count", "message"),
          row=lambda a: (str(a["id"]), a["severity"], a["status"], a["asset"], a["kind"], ts(a["first_seen"]),
                         str(a["count"]), a["message"]))


By = Annotated[str | None, typer.Option(help="Who, on a platform without authentication (with it, the platform "
                                           "records the user of EDGELOOP_TOKEN).")]


@alerts_app.command("ack")
def alerts_ack(alert_id: int, by: By = None, url: Url = DEFAULT_URL) -> None:
    """Acknowledge an alert (recorded as the signed-in user)."""
    print_json(api("POST", url, f"/api/v1/alerts/{alert_id}/acknowledge", _actor(by)))


@alerts_app.command("resolve")
def alerts_resolve(alert_id: int, by: By = None, url: Url = DEFAULT_URL) -> None:
    """Resolve an alert (recorded as the signed-in user)."""
    print_json(api("POST", url, f"/api/v1/alerts/{alert_id}/resolve", _actor(by)))


def _actor(by: str | None) -> dict[str, str] | None:
    return {"by": by} if by is not None else None  # an authenticated platform records its own user instead


