"""One process per data directory: an exclusive ``flock`` on ``DIR/.lock``, held for the process's life.

The kernel releases a flock when its holder exits, however it exits (``kill -9`` included), so a
crashed process never leaves a stale lock behind. The file holds the holder's PID, which the
refusal names.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edgeloop.errors import ConfigError
from edgeloop.file_modes import FILE_MODE

LOCK_FILE = ".lock"


class DirLock:
    def __init__(self, directory: Path, *, what: str = "data directory") -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        """Take the lock or raise ``ConfigError`` naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot lock {self.what} {self.directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"{self.what} {self.directory} is in use by another EdgeLoop process (PID {holder}): "
                              f"stop that one first, or give this one a different directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
