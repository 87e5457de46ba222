"""The small protocol the one ``Store`` runs its SQL over; SQLite and PostgreSQL each implement it once.

SQL is written once with ``?`` placeholders. A driver keeps only what is truly dialect-specific: placeholders,
type names, bulk inserts, locking, and turning every error of its database library into ``StoreError`` (or
``StoreRejected`` for data the database refuses) in one place, so callers never see ``sqlite3``/``asyncpg``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Row(Protocol):
    """A result row, read by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, key: str, /) -> Any: ...
    def keys(self) -> Iterable[str]: ...


class Connection(Protocol):
    """Statements on the database: outside a transaction each is its own (a multi-row write all or nothing),
    inside one they share it."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def insert_many(self, table: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]],
                          suffix: str = "") -> list[Row]:
        """Bulk ``INSERT INTO table (columns) ... suffix`` (an ``ON CONFLICT``/``RETURNING`` clause); ``columns``
        maps each name to its type (``text``, ``int``, ``big``, ``real``, ``blob``). Returns the RETURNING rows."""

    async def lock(self, key: str) -> None:
        """Inside a transaction: serialise with every other transaction that locks ``key`` until it ends."""


class Driver(Connection, Protocol):
    @property
    def backend(self) -> str: ...
    @property
    def types(self) -> Mapping[str, str]:
        """The schema's type placeholders (``{big}``, ``{real}``, ...) in this dialect."""
    @property
    def columns_sql(self) -> str:
        """The column names (``name``) of table ``?``."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """One transaction: committed when the block ends, rolled back on any error."""


def record(cls: Callable[..., T], row: Row, **given: Any) -> T:
    """``cls`` from ``row`` by column name (the SQL aliases a column to its field name), ``given`` overriding."""
    return cls(**{**{k: row[k] for k in row.keys()}, **given})  # noqa: SIM118 (a Record iterates values)


def values(obj: object, columns: str, **given: Any) -> tuple[Any, ...]:
    """Parameters for ``columns`` (comma-separated names) from ``obj``'s fields of those names, ``given`` overriding."""
    return tuple(given[c] if c in given else getattr(obj, c) for c in (c.strip() for c in columns.split(",")))


def insert_sql(table: str, columns: str, *, key: str = "") -> str:
    """``INSERT INTO table (columns) VALUES (?, ...)`` for comma-separated ``columns``; with ``key`` (the
    conflict target), one that replaces the row of the same key."""
    names = [c.strip() for c in columns.split(",")]
    sql = f"INSERT INTO {table} ({columns}) VALUES ({','.join('?' * len(names))})"
    return sql + f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(
        f"{c}=excluded.{c}" for c in names if c not in key.split(", ")) if key else sql


def select_where(select: str, conds: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """``select`` with ``WHERE`` the conditions whose value is neither None nor False, and their parameters (a
    condition's ``?`` takes its value; a tuple fills several; one without ``?`` takes none)."""
    used = [(cond, value) for cond, value in conds if value is not None and value is not False]
    params = [v for cond, value in used if "?" in cond for v in (value if isinstance(value, tuple) else (value,))]
    return (select + " WHERE " + " AND ".join(c for c, _ in used)) if used else select, params
