"""Private local state: data directories 0700, data files 0600, whatever the umask.

New directories and files are created with these modes (never briefly readable by others);
at start, what already exists is tightened and each change is logged. Keys follow the same
rule in ``identity/pki.py``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)
DIR_MODE, FILE_MODE = 0o700, 0o600


def tighten(path: Path) -> bool:
    """Take every permission of group and others off ``path`` (the owner's stay as they are: 0644 -> 0600,
    0755 -> 0700); True (and a log line) when something changed. A missing path or a symbolic link is left
    alone."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    before = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not before & 0o077:
        return False
    os.chmod(path, before & ~0o077)
    log.warning("tightened %s from %04o to %04o (data is private to its owner)", path, before, before & ~0o077)
    return True


def private_dir(path: Path) -> Path:
    """``path`` as a 0700 directory (created with that mode if missing, tightened if not)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tighten(path)
    return path


def private_data_dir(path: Path) -> Path:
    """A data directory at start: itself 0700, every regular file directly in it 0600 (databases and their
    -wal/-shm, settings such as alerting.yaml, state files); subdirectories are behind the 0700 directory."""
    private_dir(path)
    for child in path.iterdir():
        if child.is_file() and not child.is_symlink():
            tighten(child)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then tighten it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return
    os.close(fd)
    os.chmod(path, FILE_MODE)  # an unusual umask cannot have removed the owner's bits


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tighten(path)
