"""Hostile request bodies and parameters get a 4xx that says what is wrong, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgeloop.api import MAX_TIME_MS, create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.errors import ConfigError
from edgeloop.yaml_lines import MAX_DEPTH, load_yaml
from tests.support import free_port
from tests.test_api import API, DEVICE, seed


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    cfg = PlatformConfig(data_dir=tmp_path, embedded_broker=True, mqtt_port=free_port(), http_port=None)
    async with Platform(cfg) as platform:
        transport = httpx.ASGITransport(app=create_app(platform.services), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            await seed(c)
            yield c


DEEP = "[" * 5000  # a few bytes that nest far past Python's recursion limit


@pytest.mark.parametrize("text", [DEEP, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "a: &a [x, *a]\n"])
def test_deep_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_yaml(text, "rules")


def test_yaml_as_deep_as_allowed_loads() -> None:
    doc, _ = load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "rules")
    assert isinstance(doc, list)


async def test_deep_yaml_uploads_are_422(client: httpx.AsyncClient) -> None:
    resp = await client.put(f"{API}/alert-rules", content=DEEP, headers={"content-type": "application/yaml"})
    assert resp.status_code == 422
    assert "nested more than" in resp.json()["detail"]
    resp = await client.put(f"{API}/gateways/{DEVICE}/config", json={"config": DEEP})
    assert resp.status_code == 422
    assert "nested more than" in resp.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/tenants", b'{"id": "\xff"}'),
    ("POST", "/auth/token", b'{"username": "\xff", "password": "x"}'),
    ("PUT", f"/gateways/{DEVICE}/config", b'{"config": "agent:\\n  gateway: \xff"}'),
    ("PUT", "/alert-rules", b"version: 1\nrules: []\n# \xff\n"),
])
async def test_non_utf8_bodies_are_400(client: httpx.AsyncClient, method: str, path: str, body: bytes) -> None:
    resp = await client.request(method, f"{API}{path}", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "utf-8" in resp.json()["detail"].lower()


async def test_huge_telemetry_ranges_are_422(client: httpx.AsyncClient) -> None:
    url = f"{API}/devices/{DEVICE}/telemetry"
    for params in ({"start": 0, "end": 2**63 - 1, "points": 1}, {"start": 0, "end": MAX_TIME_MS + 1}):
        resp = await client.get(url, params=params)
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"][0]["loc"] == ["query", "end"]
    resp = await client.get(url, params={"start": 0, "end": MAX_TIME_MS, "points": 1})  # the widest range there is
    assert resp.status_code == 200, resp.text
    assert resp.json()["source"] == "rollup"
