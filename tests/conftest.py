"""Shared fixtures: real PostgreSQL databases, real Mosquitto brokers, free ports."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from edgeloop.store import Store, open_store
from tests.support import free_port, start_mosquitto

PG_ADMIN_DSN = os.environ.get("EDGELOOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _pg_admin(sql: str) -> None:
    con = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await con.execute(sql)
    finally:
        await con.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"edgeloop_test_{secrets.token_hex(6)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each storage backend in turn: the same contract tests run against both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'edgeloop.db'}"
        async with open_store(url) as s:
            yield s
    else:
        name = f"edgeloop_test_{secrets.token_hex(6)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            async with open_store(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}") as s:
                yield s
        finally:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A real Mosquitto broker on a free port, configured as EdgeLoop's generated config would; yields the port."""
    port = free_port()
    with start_mosquitto(port=port, workdir=tmp_path / "mosquitto"):
        yield port
