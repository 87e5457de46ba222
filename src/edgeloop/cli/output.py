"""What the command line prints, in one place: results on stdout (``out``), progress and errors on stderr
(``console``), and the one way a list is shown -- a table, or the API's objects as JSON with ``--json`` -- so that
every list command looks and scripts the same."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["Json", "ProgressFn", "cell", "console", "fail", "out", "print_json", "progress_reporter", "show",
           "show_objects", "ts"]

console = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=140)  # logs and pipes get whole tables

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
"""The ``--json`` flag of every command that prints a list or a report."""

ProgressFn = Callable[[str, float, dict[str, Any]], None]


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit (status 1) for the caller to raise."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def print_json(doc: Any) -> None:
    """One JSON document on stdout (pretty on a terminal, whole in a pipe)."""
    out.print_json(json.dumps(doc))


def ts(ms: int) -> str:
    """A time for a table: ISO-8601 in UTC, to the second (``2026-01-01T08:30:00Z``)."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cell(key: str, value: Any) -> str:
    """A table cell of an API object: times (``*_ms``, ``ts``) as :func:`ts`, the rest as text."""
    if (key == "ts" or key.endswith("_ms")) and isinstance(value, int) and not isinstance(value, bool):
        return ts(value)
    return "-" if value is None else str(value)


def show(found: Sequence[Any], *, as_json: bool, title: str, columns: Sequence[str],
         row: Callable[[Any], Sequence[str]]) -> None:
    """Print what an API list returned: as JSON, or as a table with one ``row(item)`` per item."""
    if as_json:
        print_json(list(found))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for item in found:
        table.add_row(*row(item))
    out.print(table)


def show_objects(found: Sequence[dict[str, Any]], *, as_json: bool, title: str) -> None:
    """:func:`show` for objects whose fields are the columns: every scalar field of the first, cells by :func:`cell`."""
    first = found[0] if found else {}
    keys = [k for k in first if not isinstance(first[k], list | dict)]
    show(found, as_json=as_json, title=title, columns=keys, row=lambda item: [cell(k, item[k]) for k in keys])


@contextlib.contextmanager
def progress_reporter() -> Iterator[ProgressFn]:
    """A progress bar on a terminal; elsewhere (CI logs, pipes) a plain line per phase and every 2 s."""

    def describe(figures: dict[str, Any]) -> str:
        return " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in figures.items())

    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("starting", total=1.0, info="")
            yield lambda phase, fraction, figures: bar.update(
                task, completed=min(fraction, 1.0), description=phase, info=describe(figures))
        return
    started = time.monotonic()
    last_phase, last_at = "", 0.0

    def line(phase: str, fraction: float, figures: dict[str, Any]) -> None:
        nonlocal last_phase, last_at
        now = time.monotonic()
        if phase != last_phase or now - last_at >= 2.0:
            console.print(f"[{now - started:6.1f} s] {phase:8} {fraction:6.1%} {describe(figures)}", highlight=False)
            last_phase, last_at = phase, now

    yield line
