"""The dashboard's pages, outside the API: the page itself, its static files, and the incident links that
notifications carry. Public (the dashboard asks to sign in, and the API then answers only with a token)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, FastAPI
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["PUBLIC_PAGES", "add_pages"]

_STATIC = resources.files("edgeloop.web") / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(str(_STATIC / "index.html"))


@router.get("/incidents/{incident_id}")
async def incident_link(incident_id: Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]) -> RedirectResponse:
    """The link in notifications: the incident on the dashboard (which asks to sign in if need be)."""
    return RedirectResponse(f"/#/incidents/{incident_id}", status_code=303)


PUBLIC_PAGES = frozenset({"/", "/incidents/{incident_id}", "/static", "/docs", "/redoc", "/openapi.json"})
"""Paths outside the API that anyone may load: the dashboard, its files, notification links, the API's docs."""


def add_pages(app: FastAPI) -> None:
    app.router.routes.extend(router.routes)  # flat, as create_app adds the API's routers
    app.mount("/static", StaticFiles(directory=str(_STATIC)), name="static")
