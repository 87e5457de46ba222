"""One error format: ``{"detail": ...}`` (``code`` too for a provisioning or model refusal), from one table of exception
class to HTTP status.

Routes raise the platform's own errors (``NotFoundError``, ``ConflictError``, ...) or ``HTTPException``; nothing
else turns an error into an answer. The most specific class of the exception in the table decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from edgeloop.errors import (
    BrokerError,
    ConfigError,
    ConflictError,
    ModelRefused,
    NotFoundError,
    StoreError,
    StoreRejected,
)
from edgeloop.identity.access import AuthError
from edgeloop.identity.provisioning import ProvisioningError

__all__ = ["ERRORS", "ErrorRule", "install_error_handlers"]


def _retry_after(exc: Exception) -> dict[str, str]:
    wait = getattr(exc, "retry_after_s", 0)
    return {"Retry-After": str(wait)} if wait else {}


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one exception class answers: ``status`` (None: the exception's own ``status``), the ``detail`` text,
    more body fields and headers."""

    status: int | None
    detail: Callable[[Exception], str] = str
    fields: Callable[[Exception], dict[str, str]] = field(default=lambda _exc: {})
    headers: Callable[[Exception], dict[str, str]] = field(default=lambda _exc: {})


ERRORS: dict[type[Exception], ErrorRule] = {
    NotFoundError: ErrorRule(404),
    ConflictError: ErrorRule(409),
    ConfigError: ErrorRule(422),  # a configuration or rule document that does not validate: the message names it
    BrokerError: ErrorRule(503, detail=lambda exc: f"stored but not delivered: {exc}"),
    StoreRejected: ErrorRule(422, detail=lambda exc: f"the store refused the data: {exc}"),
    StoreError: ErrorRule(503, detail=lambda exc: f"the store is unavailable, try again: {exc}"),
    AuthError: ErrorRule(None, detail=lambda exc: str(getattr(exc, "detail", exc)),
                         headers=lambda exc: _retry_after(exc) or {"WWW-Authenticate": "Bearer"}),
    ModelRefused: ErrorRule(422, fields=lambda exc: {"code": str(getattr(exc, "code", ""))}),  # never loaded
    ProvisioningError: ErrorRule(None, detail=lambda exc: str(getattr(exc, "detail", exc)),
                                 fields=lambda exc: {"code": str(getattr(exc, "code", ""))}, headers=_retry_after),
}


def _answer(exc: Exception) -> JSONResponse:
    rule = next(ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS)  # the most specific class wins
    status = rule.status if rule.status is not None else int(getattr(exc, "status", 500))
    return JSONResponse({"detail": rule.detail(exc), **rule.fields(exc)}, status_code=status,
                        headers=rule.headers(exc) or None)


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return _answer(exc)

    for cls in ERRORS:
        app.add_exception_handler(cls, handle)
