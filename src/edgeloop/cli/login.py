"""``edgeloop login``: a bearer token for EDGELOOP_TOKEN."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, sign_in
from edgeloop.cli.output import out

__all__ = ["app"]

app = typer.Typer()


@app.command()
def login(
    username: Annotated[str, typer.Option(help="Your user name.")],
    url: Url = DEFAULT_URL,
) -> None:
    """Log in (password asked on the terminal) and print a bearer token for EDGELOOP_TOKEN."""
    password = typer.prompt("password", hide_input=True, err=True)
    out.print(sign_in(url, username, password), highlight=False, soft_wrap=True)
