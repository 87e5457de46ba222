"""The ``edgeloop`` command line."""

import typer

app = typer.Typer(no_args_is_help=True, help="EdgeLoop: open AIoT platform.")


@app.command()
def version() -> None:
    """Print the version."""
    from edgeloop import __version__

    print(__version__)


def main() -> None:
    app()
