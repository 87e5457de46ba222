"""What every route module shares: JSON responses, strict body decoding, and OpenAPI body references."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from fastapi import HTTPException
from fastapi.responses import Response

__all__ = ["body_doc", "decode_body", "json_response"]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()


def json_response(obj: Any, status_code: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status_code, media_type="application/json")


def decode_body(raw: bytes, tp: type[T], *, max_bytes: int = 1024 * 1024, optional: bool = False) -> T:
    """Decode a request body strictly: 413 over ``max_bytes``, 400 for bad JSON, 422 naming the schema problem;
    ``optional``: an empty body is ``{}``."""
    if len(raw) > max_bytes:
        raise HTTPException(413, f"request body of {len(raw)} bytes is over the {max_bytes}-byte limit")
    if optional and not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=tp)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, f"invalid {tp.__name__}: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec checks UTF-8 as it decodes strings
        raise HTTPException(400, f"body is not valid JSON: {exc}") from exc


def body_doc(tp: type[Any], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is the msgspec struct ``tp`` (its schema is a component)."""
    return {"requestBody": {"required": required, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{tp.__name__}"}}}}}
