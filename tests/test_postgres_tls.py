"""PostgreSQL over TLS: ``sslmode`` in the store URL, against a real PostgreSQL server the test starts with
``ssl = on``, a server certificate from EdgeLoop's PKI, and plain connections rejected."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from edgeloop.assets import Tenant
from edgeloop.broker import free_port
from edgeloop.errors import StoreError
from edgeloop.identity.pki import CertificateAuthority, ensure_identity
from edgeloop.store import open_store

pytestmark = pytest.mark.postgres
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run it as the postgres account."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """Yields (port, our CA chain, a foreign CA chain)."""
    pki = tmp_path_factory.mktemp("pg-tls")
    ca = CertificateAuthority.init(pki / "pki")
    foreign = CertificateAuthority.init(pki / "foreign")
    # The server's own folder must be reachable by the postgres account (pytest's are private to us).
    with tempfile.TemporaryDirectory(prefix="edgeloop-pg-tls-") as tmp:
        yield from _run_tls_postgres(Path(tmp), ca, foreign)


def _run_tls_postgres(root: Path, ca: CertificateAuthority,
                      foreign: CertificateAuthority) -> Iterator[tuple[int, Path, Path]]:
    data, tls = root / "data", root / "tls"
    ensure_identity(ca, tls, "edgeloop-db", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in (data, tls, *tls.iterdir()):
            shutil.chown(path, "postgres")
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    (data / "pg_hba.conf").write_text("local all all trust\n"
                                      "hostssl all all 127.0.0.1/32 trust\n"
                                      "hostnossl all all 127.0.0.1/32 reject\n")
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                   f"ssl = on\nssl_cert_file = '{tls / 'edgeloop-db.crt'}'\n"
                   f"ssl_key_file = '{tls / 'edgeloop-db.key'}'\n"
                   "fsync = off\n")
    with (root / "postgres.log").open("wb") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(_as_postgres([str(PG_BIN / "postgres"), "-D", str(data)]),
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True, check=False).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "postgres.log").read_text()
            time.sleep(0.1)
        yield port, ca.dir / "ca-chain.pem", foreign.dir / "ca-chain.pem"
    finally:
        proc.terminate()
        proc.wait(30)


async def test_verify_full_connects_encrypted(tls_postgres: tuple[int, Path, Path]) -> None:
    port, ca, _ = tls_postgres
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    async with open_store(url) as store:
        await store.put_tenant(Tenant(id="acme"))
        assert [t.id for t in (await store.load_registry()).tenants.values()] == ["acme"]
    con = await asyncpg.connect(url)
    try:
        assert await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    finally:
        await con.close()


@pytest.mark.parametrize(("query", "why"), [
    ("sslmode=disable", "no encryption"),  # the server rejects plain connections
    ("sslmode=verify-full&sslrootcert={foreign}", "certificate"),  # a server our CA did not certify
])
async def test_refused_connections_say_why(tls_postgres: tuple[int, Path, Path], query: str, why: str) -> None:
    port, _, foreign = tls_postgres
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres?{query.format(foreign=foreign)}"
    with pytest.raises(StoreError, match="cannot open PostgreSQL") as err:
        async with open_store(url):
            pass
    assert why in str(err.value).lower()
