"""SQLite files at start: healthy, missing, empty or corrupt, told apart before anything is written.

``inspect`` opens an existing file without creating it and runs ``PRAGMA quick_check`` (it reads
every page once: seconds for a few GB). Garbage bytes ("file is not a database"), a truncated file
and a malformed page all count as corrupt; a file that cannot be opened for another reason (no
permission, locked) is not, and its error is raised as it is. ``move_aside`` renames a corrupt
file with its ``-wal`` and ``-shm`` to ``NAME.corrupt-<UTC time>`` (``-wal``/``-shm`` appended,
as SQLite names them, so the copy can still be opened for forensics).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeloop.errors import StoreError
from edgeloop.file_modes import create_private_file, tighten

log = logging.getLogger(__name__)
SIDE_FILES = ("-wal", "-shm", "-journal")
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
SQLITE_HEADER = b"SQLite format 3\x00"

State = Literal["missing", "empty", "ok", "corrupt"]


@dataclass(frozen=True, slots=True)
class Inspection:
    state: State
    detail: str = ""


def side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in SIDE_FILES]


def inspect(path: Path) -> Inspection:
    """What ``path`` holds. ``empty``: 0 bytes and no write-ahead log holding pages (a database whose
    content is still all in its WAL is not empty)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Inspection("missing")
    wal = path.with_name(path.name + "-wal")
    if size == 0 and (not wal.exists() or wal.stat().st_size == 0):
        return Inspection("empty", "0 bytes")
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if size > 0 and header != SQLITE_HEADER:  # told without opening it: SQLite would drop a WAL it cannot use
        return Inspection("corrupt", "file is not a database")
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)
    except sqlite3.DatabaseError as exc:
        return _corrupt_or_raise(exc)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return _corrupt_or_raise(exc)
    finally:
        db.close()
    if rows != [("ok",)]:
        return Inspection("corrupt", "; ".join(str(r[0]) for r in rows[:3]))
    return Inspection("ok")


def _corrupt_or_raise(exc: sqlite3.DatabaseError) -> Inspection:
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return Inspection("corrupt", str(exc))
    raise exc


def move_aside(path: Path, *, now: dt.datetime | None = None) -> list[Path]:
    """Rename ``path`` and its side files to ``NAME.corrupt-<UTC time>[-wal|-shm|-journal]``; returns the new
    names (the database first)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    moved: list[Path] = []
    for src, suffix in [(path, ""), *zip(side_files(path), SIDE_FILES, strict=True)]:
        if src.exists():
            dst = target.with_name(target.name + suffix)
            os.replace(src, dst)
            moved.append(dst)
    _fsync_dir(path.parent)
    return moved


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_with(fresh: Path, path: Path) -> None:
    """Atomically put the database built at ``fresh`` (closed, no side files) in place at ``path``."""
    os.replace(fresh, path)
    _fsync_dir(path.parent)


def prepare_database(path: Path, build: Callable[[Path], None], *, recover_corrupt: bool = True) -> None:
    """Make ``path`` safe to open as the platform's database.

    * missing: ``build(fresh)`` creates the schema in ``NAME.new`` (mode 0600), which then replaces
      ``path`` atomically: a database file that exists always has its tables.
    * healthy: its file and side files are tightened to 0600.
    * corrupt: moved aside (``move_aside``) with an error-level message, then built fresh as if missing;
      refused with ``StoreError`` unless ``recover_corrupt`` (only the platform's start, which holds the
      data directory's lock, recovers: a tool must never rename a database from under a running platform).
    * empty (0 bytes): refused with ``StoreError``; an existing database never silently becomes a new
      platform with a new administrator.
    """
    found = inspect(path)
    if found.state == "empty":
        raise StoreError(
            f"{path} exists but is empty (0 bytes): refusing to start a new platform over it (a database file "
            f"does not empty itself: restore it from a backup). To start afresh on purpose, delete the file.")
    if found.state == "ok":
        for f in [path, *side_files(path)]:
            tighten(f)
        return
    if found.state == "corrupt" and not recover_corrupt:
        raise StoreError(f"{path} is corrupt ({found.detail}): the platform moves it aside when it starts; or "
                         "restore a backup")
    if found.state == "corrupt":
        moved = move_aside(path)
        log.error("!! the SQLite database %s is corrupt (%s). It was moved aside to %s and the platform starts with "
                  "an EMPTY database: devices, users and history are in the moved file. If that is not what you "
                  "want, stop now and restore a backup to %s.", path, found.detail,
                  ", ".join(str(m) for m in moved), path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fresh = path.with_name(path.name + ".new")
    for f in [fresh, *side_files(fresh)]:
        f.unlink(missing_ok=True)
    create_private_file(fresh)
    build(fresh)
    replace_with(fresh, path)
