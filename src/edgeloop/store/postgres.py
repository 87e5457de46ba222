"""PostgreSQL driver (production): an asyncpg pool (TLS by ``sslmode`` in the URL), ``unnest`` bulk inserts.

A bulk insert is one statement whatever the batch size:
``INSERT ... SELECT * FROM unnest($1::text[], ...) ON CONFLICT ... RETURNING``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import asyncpg

from edgeloop.errors import DuplicateKey, StoreError, StoreRejected
from edgeloop.store.driver import Connection, Row
from edgeloop.store.schema import PG_TYPES

_LOCK_ID = 0x6564676C  # advisory locks of EdgeLoop: (this, hash of the key)
_ARRAYS = {"text": "text[]", "int": "int[]", "big": "bigint[]", "real": "float8[]", "blob": "bytea[]"}
#: What PostgreSQL (or asyncpg, encoding a parameter) refuses as data: SQLSTATE class 22 (a NUL character, a
#: lone surrogate, a number out of range) and class 23 (a violated constraint). The same data can never be stored.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
#: The database failed or could not be reached (connection lost, shutting down, disk full): retrying can succeed.
#: ``InternalClientError``: a pooled connection whose server end was terminated mid-call can be handed out in a
#: confused state ("another operation is in progress"); the call fails, the pool replaces the connection.
_UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


@contextlib.contextmanager
def _translated(what: str = "PostgreSQL", *, connecting: bool = False) -> Iterator[None]:
    """The one place asyncpg's errors become ours: ``StoreRejected`` for refused data (``DuplicateKey`` for a
    unique key stored already), ``StoreError`` for an unavailable store (``connecting``: also a malformed URL)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateKey(f"{what} refused the data: {exc}") from exc
    except _REFUSED as exc:
        raise StoreRejected(f"{what} refused the data: {exc}") from exc
    except (*_UNAVAILABLE, ValueError) as exc:
        if isinstance(exc, ValueError) and not connecting:  # a bug of ours, not the database's state
            raise
        raise StoreError(f"{what}: {exc}") from exc


@functools.lru_cache(maxsize=512)
def pg(sql: str) -> str:
    """``?`` placeholders to PostgreSQL's ``$1, $2, ...`` (our SQL has no literal question marks)."""
    count = iter(range(1, 100_000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


class _Statements:
    """The ``Connection`` statements on an asyncpg connection or pool (the same methods)."""

    def __init__(self, con: Any) -> None:
        self._con = con  # outside a transaction: the pool (any connection)

    def _open(self) -> Any:
        if self._con is None:
            raise StoreError("PostgreSQL store is not open")
        return self._con

    async def _call(self, method: str, *args: Any) -> Any:
        with _translated():
            return await getattr(self._open(), method)(*args)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._call("fetch", pg(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._call("fetchrow", pg(sql), *params)  # type: ignore[no-any-return]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        last = str(await self._call("execute", pg(sql), *params)).rsplit(" ", 1)[-1]  # "UPDATE 3", "INSERT 0 1"
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._call("executemany", pg(sql), rows)

    async def insert_many(self, table: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]],
                          suffix: str = "") -> list[Row]:
        if not rows:
            return []
        arrays = ", ".join(f"${i}::{_ARRAYS[kind]}" for i, kind in enumerate(columns.values(), 1))
        sql = f"INSERT INTO {table} ({','.join(columns)}) SELECT * FROM unnest({arrays}) {suffix}"
        return list(await self._call("fetch", sql, *[list(c) for c in zip(*rows, strict=True)]))

    async def lock(self, key: str) -> None:
        await self._call("execute", "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_ID, key)


class PostgresDriver(_Statements):
    backend = "postgres"
    types = PG_TYPES
    columns_sql = ("SELECT column_name AS name FROM information_schema.columns WHERE table_name = ? "
                   "AND table_schema = current_schema()")

    def __init__(self, *, dsn: str, min_connections: int = 1, max_connections: int = 8) -> None:
        super().__init__(None)
        self.dsn = dsn
        self._min = min_connections
        self._max = max_connections

    async def open(self) -> None:
        # OSError covers TLS failures (ssl.SSLError: untrusted server certificate, wrong host name).
        with _translated(f"cannot open PostgreSQL ({_redact(self.dsn)})", connecting=True):
            self._con = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max)

    async def close(self) -> None:
        if self._con is not None:
            await self._con.close()
        self._con = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        with _translated():  # acquiring a connection, BEGIN and COMMIT fail like any statement
            async with self._open().acquire() as con, con.transaction():
                yield _Statements(con)


def _redact(dsn: str) -> str:
    """The DSN without its password, for error messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else dsn
