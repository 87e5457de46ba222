"""Helpers for tests: free ports, a Mosquitto process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from edgeloop.broker.mosquitto import run_mosquitto


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_mosquitto(*, port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    with run_mosquitto(workdir, port=port) as proc:
        yield proc
