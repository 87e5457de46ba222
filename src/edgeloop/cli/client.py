"""The command line's HTTP client of a running platform's API: the base URL (``--url`` or EDGELOOP_URL), the bearer
token or API key (EDGELOOP_TOKEN, see ``edgeloop login``), which CA to trust for HTTPS (EDGELOOP_CA), and an HTTP
or connection error turned into one clear message and exit status 1."""

from __future__ import annotations

import os
import ssl
from typing import Annotated, Any

import httpx
import typer

from edgeloop.cli.output import fail

__all__ = ["DEFAULT_URL", "URL_OPTION", "Url", "api", "detail", "request", "sign_in", "verify"]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_OPTION = typer.Option("--url", envvar="EDGELOOP_URL", help="Base URL of a running platform's API.")
Url = Annotated[str, URL_OPTION]
"""The ``--url`` option of every command that talks to the API (default :data:`DEFAULT_URL`)."""


def verify() -> bool | ssl.SSLContext:
    """Which CA to trust for HTTPS: EDGELOOP_CA (our chain, e.g. PKI/ca-chain.pem), else the system's."""
    ca = os.environ.get("EDGELOOP_CA")
    return ssl.create_default_context(cafile=ca) if ca else True


def detail(resp: httpx.Response) -> Any:
    """The API's explanation of an error response (its ``detail``), else the body as text."""
    try:
        return resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        return resp.text


def api(method: str, url: str, path: str, body: Any = None) -> Any:
    """Call the platform's API with a JSON body (or none) and return the JSON answer."""
    return request(method, url, path, json_body=body).json()


def request(method: str, url: str, path: str, *, json_body: Any = None, content: bytes | None = None,
            content_type: str = "") -> httpx.Response:
    """One API call (a JSON body, or raw ``content``); an HTTP error ends the command with the API's detail."""
    token = os.environ.get("EDGELOOP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=json_body, content=content, timeout=60,
                             headers=headers, verify=verify())
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the platform at {url}: {exc}") from None
    if resp.status_code >= 400:
        why = detail(resp)
        if resp.status_code == 401:
            why = f"{why} (log in: export EDGELOOP_TOKEN=$(edgeloop login --url URL --username NAME))"
        raise fail(f"{resp.status_code}: {why}")
    return resp


def sign_in(url: str, username: str, password: str) -> str:
    """A bearer token for ``username`` (``POST /api/v1/auth/token``); a refusal ends the command with the reason."""
    try:
        resp = httpx.post(url.rstrip("/") + "/api/v1/auth/token", data={"username": username, "password": password},
                          timeout=30, verify=verify())
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the platform at {url}: {exc}") from None
    if resp.status_code != 200:
        raise fail(f"signing in as {username}: {resp.status_code} {detail(resp)}")
    token: str = resp.json()["access_token"]
    return token
