"""What every route module shares: JSON responses, request bodies (strict decoding, each with its size limit),
and the OpenAPI documentation of both.

A body is read through :func:`body` or :func:`raw_body` only. Each declares its limit, and ``create_app`` hands
the limits of every route to :class:`~edgeloop.api.limits.BodyLimit`, which refuses a larger body (413) before it
is read. Bodies and answers are msgspec types, documented by reference: :func:`body_doc` and :func:`reply` name a
type, and ``create_app`` puts the JSON Schemas of every type named into ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_args, get_origin

import msgspec
from fastapi import HTTPException, Request
from fastapi.responses import Response

from edgeloop.safe_text import text_problem

__all__ = ["MAX_BODY", "SCHEMAS", "BodyReader", "body", "body_doc", "decode_body", "json_response", "raw_body",
           "reply"]

T = TypeVar("T")
MAX_BODY = 1024 * 1024  # a route reading a body without a limit of its own
_encoder = msgspec.json.Encoder()
SCHEMAS: dict[str, Any] = {}
"""Every type a route's body or answer names (by name): their JSON Schemas are the OpenAPI components."""


def json_response(obj: Any, status_code: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status_code, media_type="application/json")


def decode_body(raw: bytes, tp: type[T], *, optional: bool = False) -> T:
    """Decode a request body strictly: 400 for bad JSON, 422 naming the schema problem; ``optional``: an empty
    body is ``{}``."""
    if optional and not raw.strip():
        raw = b"{}"
    try:
        decoded = msgspec.json.decode(raw, type=tp)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, f"invalid {tp.__name__}: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec checks UTF-8 as it decodes strings
        raise HTTPException(400, f"body is not valid JSON: {exc}") from exc
    if b"\\u" in raw:  # only an escape can put a NUL (or a lone surrogate) into a JSON string
        problem = _unstorable(msgspec.to_builtins(decoded))
        if problem is not None:
            raise HTTPException(422, f"invalid {tp.__name__}: {problem}; no store can keep it")
    return decoded


def _unstorable(value: Any, where: str = "$") -> str | None:
    """The first text of a decoded body that no store can keep (a NUL character, a lone surrogate): refused here,
    not by the store after a service has taken it in (a comment's text lives on in its incident's every write)."""
    if isinstance(value, str):
        why = text_problem(value)
        return f"{where} holds {why}" if why else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _unstorable(key, f"{where} (a key)") if isinstance(key, str) else None
        found = found or _unstorable(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
        if found:
            return found
    return None


class BodyReader:
    """A FastAPI dependency reading the request body, at most ``max_bytes`` (enforced by ``BodyLimit``)."""

    def __init__(self, read: Callable[[Request], Awaitable[Any]], max_bytes: int) -> None:
        self.read = read
        self.max_bytes = max_bytes

    async def __call__(self, request: Request) -> Any:
        return await self.read(request)


def raw_body(max_bytes: int = MAX_BODY) -> Any:
    """Dependency: the body's bytes (for a form, YAML, or a body decoded only sometimes)."""

    async def read(request: Request) -> bytes:
        return await request.body()

    return BodyReader(read, max_bytes)


def body(tp: type[T], max_bytes: int = MAX_BODY, *, optional: bool = False) -> Any:
    """Dependency: the body decoded strictly as ``tp`` (``optional``: an empty body is ``{}``)."""

    async def read(request: Request) -> T:
        return decode_body(await request.body(), tp, optional=optional)

    return BodyReader(read, max_bytes)


def _schema_of(tp: Any) -> dict[str, Any]:
    if get_origin(tp) is list:
        return {"type": "array", "items": _schema_of(get_args(tp)[0])}
    SCHEMAS[tp.__name__] = tp
    return {"$ref": f"#/components/schemas/{tp.__name__}"}


def body_doc(tp: type[Any], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is the msgspec type ``tp`` (its schema is a component)."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": _schema_of(tp)}}}}


def reply(tp: Any, status: int = 200, *, description: str = "", media: dict[str, Any] | None = None
          ) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route answering ``tp`` (a msgspec Struct, dataclass or TypedDict, or ``list[...]`` of
    one) with ``status``; ``media``: other media types it can answer with (``{"text/csv": {...}}``)."""
    content = {"application/json": {"schema": _schema_of(tp)}, **(media or {})}
    return {status: {"description": description or "Successful Response", "content": content}}
