"""SQLite driver (the embedded default): one connection, WAL, driven from a single worker thread.

Every call runs on one dedicated thread so the event loop never blocks on disk and SQLite sees one writer; an
asyncio lock keeps other calls out of an open transaction. ``synchronous`` defaults to FULL: a batch the
platform acknowledges to the broker is on disk even across power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from edgeloop.errors import DuplicateKey, StoreError, StoreRejected
from edgeloop.sqlite_files import prepare_database
from edgeloop.store.driver import Connection, Row
from edgeloop.store.schema import SQLITE_TYPES, statements

T = TypeVar("T")

_VARIABLES = 999  # per statement: SQLite's historical limit on bound parameters
#: What SQLite (or the sqlite3 module, binding a parameter) refuses as data: a violated constraint, a lone
#: surrogate (not encodable as UTF-8), an integer beyond 64 bits. The same data can never be stored.
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, UnicodeError, OverflowError)
_DUPLICATE = ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _begun(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def run(db: sqlite3.Connection) -> T:
        db.execute("BEGIN IMMEDIATE")
        return fn(db)

    return run


def _atomic(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` in a transaction of its own, rolled back on any error (a failed statement must not leave it open:
    every later ``BEGIN`` would fail)."""
    def run(db: sqlite3.Connection) -> T:
        try:
            out = _begun(fn)(db)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return out

    return run


class _Statements:
    """The ``Connection`` statements, on the database thread: ``outside`` a transaction each under the driver's
    lock (none runs inside another's transaction), a multi-row write in a transaction of its own."""

    def __init__(self, driver: SQLiteDriver, *, outside: bool) -> None:
        self._driver, self._outside = driver, outside
        self.begun = False  # inside a transaction: BEGIN goes with its first statement (one thread hop less)

    async def _go(self, fn: Callable[[sqlite3.Connection], T], *, many: bool = False) -> T:
        if not self._outside:
            begin, self.begun = not self.begun, True
            return await self._driver._run(_begun(fn) if begin else fn)
        async with self._driver._lock:
            return await self._driver._run(_atomic(fn) if many else fn)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._go(lambda db: cast(list[Row], db.execute(sql, params).fetchall()))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._go(lambda db: cast(Row | None, db.execute(sql, params).fetchone()))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._go(lambda db: db.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._go(lambda db: db.executemany(sql, rows), many=True)

    async def insert_many(self, table: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]],
                          suffix: str = "") -> list[Row]:
        if not rows:
            return []
        step = max(1, _VARIABLES // len(columns))
        marks = "(" + ",".join("?" * len(columns)) + ")"

        def run(db: sqlite3.Connection) -> list[Row]:
            if "RETURNING" not in suffix:  # nothing to return: one prepared statement, many rows (faster)
                db.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES {marks} {suffix}", rows)
                return []
            out: list[Row] = []
            for i in range(0, len(rows), step):
                part = rows[i: i + step]
                sql = f"INSERT INTO {table} ({','.join(columns)}) VALUES {','.join([marks] * len(part))} {suffix}"
                out += db.execute(sql, [v for row in part for v in row]).fetchall()
            return out

        return await self._go(run, many=True)

    async def lock(self, key: str) -> None:
        """Nothing to do: every transaction is ``BEGIN IMMEDIATE`` (one writer at a time)."""


class SQLiteDriver(_Statements):
    backend = "sqlite"
    types = SQLITE_TYPES
    columns_sql = "SELECT name FROM pragma_table_info(?)"

    def __init__(self, *, path: Path | str, synchronous: Literal["OFF", "NORMAL", "FULL"] = "FULL",
                 recover_corrupt: bool = False) -> None:
        super().__init__(self, outside=True)
        self.path = str(path)
        self.recover_corrupt = recover_corrupt
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread: the one place sqlite3's errors become ours."""
        if self._executor is None:
            raise StoreError("SQLite store is not open")
        try:  # ``_db`` is None only while ``open`` runs (its function makes the connection)
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, cast(sqlite3.Connection,
                                                                                            self._db))
        except _REFUSED as exc:  # this data can never be stored; the store itself is fine
            kind = DuplicateKey if getattr(exc, "sqlite_errorname", "") in _DUPLICATE else StoreRejected
            raise kind(f"SQLite ({self.path}) refused the data: {type(exc).__name__}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:  # busy/locked, disk full, I/O error
            raise StoreError(f"SQLite ({self.path}): {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            tx = _Statements(self, outside=False)
            try:
                yield tx
                if tx.begun:
                    await self._run(lambda db: db.execute("COMMIT"))
            except BaseException:
                with contextlib.suppress(StoreError):  # the error that ended the transaction is the one to see
                    await self._run(_rollback)
                raise

    async def open(self) -> None:
        """Open the database; a missing file is created (atomically, 0600), a corrupt one moved aside with a
        loud message, an empty or foreign one refused (see ``sqlite_files.prepare_database``)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def connect(path: str, *, existing: bool) -> sqlite3.Connection:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                db.row_factory = sqlite3.Row
                if existing and db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
                    raise StoreError(f"{path} is a SQLite database without EdgeLoop's tables: refusing to start a new "
                                     "platform in it; give an EdgeLoop database, or a path where none exists yet")
                for pragma in ("journal_mode=WAL", f"synchronous={self.synchronous}", "foreign_keys=ON",
                               "busy_timeout=5000"):
                    db.execute(f"PRAGMA {pragma}")
            except BaseException:
                db.close()
                raise
            return db

        def build(fresh: Path) -> None:  # a new file has its tables before it takes the database's name
            with contextlib.closing(connect(str(fresh), existing=False)) as db:
                db.executescript(";\n".join(statements(SQLITE_TYPES)))

        def prepare() -> sqlite3.Connection:
            if self.path == ":memory:":
                return connect(self.path, existing=False)
            prepare_database(Path(self.path), build, recover_corrupt=self.recover_corrupt)
            return connect(self.path, existing=True)

        try:
            self._db = await self._run(lambda _: prepare())
        except StoreError:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._db is not None and self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._db = None
        self._executor = None
