"""Storage: one ``Store`` over two real database drivers (SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from edgeloop.errors import ConfigError
from edgeloop.store.base import DeadLetter, Series, Store, TelemetryChunk, TelemetryQuery

__all__ = ["DeadLetter", "Series", "Store", "TelemetryChunk", "TelemetryQuery", "open_store"]


def open_store(url: str, *, recover_corrupt: bool = False) -> Store:
    """A store for ``url``: ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/db``.

    The store is not connected yet; use it as an async context manager. ``recover_corrupt`` (the platform's
    own start, holding the data directory's lock): a corrupt SQLite file is moved aside and replaced by an
    empty one; otherwise (tools such as ``edgeloop users``) it is refused.
    """
    if url.startswith("sqlite:///"):
        from edgeloop.store.sqlite import SQLiteDriver

        path = url.removeprefix("sqlite:///")
        return Store(SQLiteDriver(path=Path(path) if path != ":memory:" else path, recover_corrupt=recover_corrupt),
                     where=path)
    if url.startswith(("postgresql://", "postgres://")):
        from edgeloop.store.postgres import PostgresDriver, _redact

        return Store(PostgresDriver(dsn=url), where=_redact(url))
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
