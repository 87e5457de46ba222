"""The root of the command line: the ``edgeloop`` app with ``--version`` and ``edgeloop version``. The command
groups register themselves on it in :mod:`edgeloop.cli` (``__init__``), one module each."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeloop import __version__
from edgeloop.cli.output import out

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="EdgeLoop: the open AIoT platform.")


def _print_version(given: bool) -> None:
    if given:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit.")] = False,
) -> None:
    """EdgeLoop: the open AIoT platform."""


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)
