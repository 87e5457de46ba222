"""Helpers for tests: free ports, a Mosquitto process."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from edgeloop.broker import free_port
from edgeloop.broker.mosquitto import run_mosquitto

__all__ = ["free_port", "start_mosquitto"]


@contextlib.contextmanager
def start_mosquitto(*, port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    with run_mosquitto(workdir, port=port) as proc:
        yield proc
