"""The HTTP API (FastAPI) and the dashboard it serves.

``create_app(services)`` builds it from the narrow services the composition root hands over (``api.services``);
nothing here knows the platform object, its broker or its loops. One router per resource (``api.routers``), each
carrying the role its routes need at least, so a new route is authenticated by default; the public routes are the
routes of ``routers.public`` and nothing else. Bodies are msgspec structs decoded strictly, each read through a
dependency that declares its size limit; answers are msgspec structs too, and the JSON Schemas of both are the
OpenAPI components (``/openapi.json``, browsable at ``/docs``). Errors are JSON ``{"detail": ...}`` from one table
(``api.errors``): 400 bad JSON, 401/403 credentials and roles, 404 unknown id (or another tenant's), 409 a conflict
with stored state, 413 a body over the route's limit (refused before it is read, ``api.limits``), 422 a schema
violation, 429 too many requests (public routes: before anything is read, ``api.flood``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI

from edgeloop import __version__
from edgeloop.api.bodies import MAX_BODY, SCHEMAS
from edgeloop.api.errors import install_error_handlers
from edgeloop.api.flood import PUBLIC_RATE, PublicRateLimit
from edgeloop.api.headers import SecurityHeaders, add_doc_routes
from edgeloop.api.limits import BodyLimit, route_limits
from edgeloop.api.routers import (
    actions,
    alerts,
    audit,
    auth,
    campaigns,
    commands,
    drift,
    feedback,
    gateways,
    incidents,
    kpis,
    models,
    provisioning,
    public,
    registry,
    rules,
    stats,
    telemetry,
    training,
    users,
)
from edgeloop.api.routers.gateways import MAX_CONFIG_BODY
from edgeloop.api.routers.pages import PUBLIC_PAGES, add_pages
from edgeloop.api.routers.public import MAX_PROVISION_BODY, MAX_TOKEN_BODY, PUBLIC_ROUTES
from edgeloop.api.routers.telemetry import MAX_TIME_MS
from edgeloop.api.services import Services

__all__ = ["MAX_BODY", "MAX_CONFIG_BODY", "MAX_PROVISION_BODY", "MAX_TIME_MS", "MAX_TOKEN_BODY", "PUBLIC_PAGES",
           "PUBLIC_ROUTES", "ROUTERS", "Services", "create_app"]

ROUTERS = (public.router, auth.router, users.router, stats.router, registry.router, telemetry.router, alerts.router,
           incidents.router, feedback.router, kpis.router, rules.router, gateways.router, provisioning.router,
           audit.router, models.router, drift.router, commands.router, actions.router, campaigns.router,
           training.router)
"""Every router of the API; all but ``public`` require at least a viewer."""


def create_app(services: Services, *, public_rate: tuple[float, int] = PUBLIC_RATE) -> FastAPI:
    """The API over ``services``; ``public_rate``: requests per second and burst per client address on the
    public routes."""
    app = FastAPI(title="EdgeLoop", version=__version__,
                  description="Telemetry, assets and alerts of an EdgeLoop platform. Authenticate with "
                              "`POST /api/v1/auth/token` (people) or an API key (integrations), then send "
                              "`Authorization: Bearer ...`.", docs_url=None, redoc_url=None)
    app.state.services = services
    install_error_handlers(app)
    for router in ROUTERS:  # flat, not ``include_router`` (lazy since FastAPI 0.165): ``app.routes`` lists every
        app.router.routes.extend(router.routes)  # route, which the body limits and the tests enumerate
    add_pages(app)
    csp = add_doc_routes(app)
    # Outermost last: security headers on every answer (429s and 413s too), floods refused before anything is
    # read, bodies refused before they are read whole.
    app.add_middleware(BodyLimit, default=MAX_BODY, routes=route_limits(app.routes))
    app.add_middleware(PublicRateLimit, routes=PUBLIC_ROUTES, clock=services.clock, rate_per_s=public_rate[0],
                       burst=public_rate[1])
    app.add_middleware(SecurityHeaders, csp_for=csp)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, components = msgspec.json.schema_components(tuple(SCHEMAS.values()),
                                                           ref_template="#/components/schemas/{name}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
