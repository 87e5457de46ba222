"""Request bodies refused before they are read, and the security headers, against a real uvicorn server.

The platform serves HTTP on a real socket (as ``serve`` and ``up`` do); the oversized bodies are sent over a raw
TCP connection, so the test controls exactly how many bytes leave the client before the server answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgeloop.api import MAX_BODY, MAX_CONFIG_BODY, MAX_PROVISION_BODY, MAX_TOKEN_BODY
from edgeloop.app import Platform, PlatformConfig
from tests.support import free_port

ADMIN_PASSWORD = "correct horse battery staple"
MiB = 1024 * 1024


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    """The platform's HTTP API on a real uvicorn socket, authentication on; yields its base URL."""
    port = free_port()
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=port, auth=True,
                         admin_password=ADMIN_PASSWORD)
    async with Platform(cfg):
        yield f"http://127.0.0.1:{port}"


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def _rss_bytes() -> int:
    """This process's resident memory (the server runs in it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _status_of(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 30)
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


async def test_declared_oversized_body_is_refused_before_it_is_sent(server: str) -> None:
    """A Content-Length over the limit is answered at once: the client never has to send the body."""
    for path in ("/api/v1/auth/token", "/api/v1/provision", "/api/v1/sites"):
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        writer.write(f"POST {path} HTTP/1.1\r\nHost: edgeloop\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {1024 * MiB}\r\n\r\n".encode())
        await writer.drain()
        assert await _status_of(reader) == 413, path
        writer.close()


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/api/v1/provision"])
async def test_streamed_oversized_body_is_refused_as_it_arrives(server: str, path: str) -> None:
    """A chunked body (no length declared) is counted as it streams: 413 long before its 128 MiB are sent,
    and the server's memory does not grow by the body's size."""
    total, piece = 128 * MiB, 64 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(f"POST {path} HTTP/1.1\r\nHost: edgeloop\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n" % piece + b"x" * piece + b"\r\n"
    sent = 0
    rss_before = _rss_bytes()

    async def send_body() -> None:
        nonlocal sent
        try:
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += piece
                await asyncio.sleep(0)  # the server shares this event loop
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:  # the server closed the connection after refusing the body
            return

    sender = asyncio.create_task(send_body())
    status = await _status_of(reader)
    sender.cancel()
    writer.close()
    assert status == 413
    assert sent < 16 * MiB, f"{sent} bytes were taken before the refusal"
    assert _rss_bytes() - rss_before < 32 * MiB


async def test_each_route_has_its_own_limit(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        login = await client.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        # a gateway configuration may be larger than the default limit (a 1 MB agent.yaml, JSON-escaped) ...
        config = {"config": "\n" * 600_000}  # 1.2 MB as JSON
        resp = await client.put("/api/v1/gateways/gw-1/config", json=config, headers=headers)
        assert resp.status_code == 404, resp.text  # read and decoded: the gateway does not exist
        # ... but not larger than its own
        resp = await client.put("/api/v1/gateways/gw-1/config", json={"config": "#" * MAX_CONFIG_BODY},
                                headers=headers)
        assert resp.status_code == 413
        # the default everywhere else
        resp = await client.post("/api/v1/sites", headers=headers,
                                 json={"id": "s", "tenant": "t", "name": "#" * MAX_BODY})
        assert resp.status_code == 413
        assert resp.json() == {"detail": f"request body over the {MAX_BODY}-byte limit of this route"}
        resp = await client.post("/api/v1/auth/token", data={"username": "admin", "password": "#" * MAX_TOKEN_BODY})
        assert resp.status_code == 413
        resp = await client.post("/api/v1/provision", json={"claim": "c", "serial": "s",
                                                            "csr": "#" * MAX_PROVISION_BODY})
        assert resp.status_code == 413


async def test_security_headers_on_every_response(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        for method, path, status in (("GET", "/", 200), ("GET", "/api/v1/health", 200), ("GET", "/api/v1/assets", 401),
                                     ("GET", "/static/app.js", 200), ("GET", "/docs", 200), ("GET", "/redoc", 200),
                                     ("POST", "/api/v1/auth/token", 413)):
            resp = await client.request(method, path, content=b"x" * (MAX_TOKEN_BODY + 1) if method == "POST" else None)
            assert resp.status_code == status, path
            assert resp.headers["x-frame-options"] == "DENY", path
            assert resp.headers["x-content-type-options"] == "nosniff", path
            assert resp.headers["referrer-policy"] == "no-referrer", path
            csp = dict(part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";"))
            assert csp["frame-ancestors"] == "'none'", path
            assert csp["default-src"] == "'self'", path
            assert csp["object-src"] == "'none'", path
            if path not in ("/docs", "/redoc"):  # the dashboard: no inline script or style at all
                assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'", path


async def test_api_docs_are_served_from_vendored_files(server: str) -> None:
    """/docs and /redoc work without internet: their scripts are this server's own files, and the one inline
    script Swagger UI needs is allowed by its exact hash."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        for page, bundle in (("/docs", "/static/vendor/swagger-ui-bundle.js"),
                             ("/redoc", "/static/vendor/redoc.standalone.js")):
            resp = await client.get(page)
            html = resp.text
            assert "http://" not in html and "https://" not in html, page
            assert f'src="{bundle}"' in html, page
            assert (await client.get(bundle)).status_code == 200, bundle
        docs = await client.get("/docs")
        inline = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
        assert len(inline) == 1
        digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
        assert f"'sha256-{digest}'" in docs.headers["content-security-policy"]
        assert (await client.get("/static/vendor/swagger-ui.css")).status_code == 200
