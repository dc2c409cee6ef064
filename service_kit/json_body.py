"""Reading a JSON request body within the size limit and validating it against a model."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service_kit.problems import Problem
from contracts.field_errors import field_errors

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_limited_body(request: Request, max_bytes: int) -> bytes:
    too_large = Problem(413, f"request body is larger than the limit of {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "Content-Length header is not a number")
        if int(declared) > max_bytes:
            raise too_large
    # A chunked body has no Content-Length, so the limit is also enforced while reading.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_model(
    request: Request, model: type[ModelT], max_bytes: int, *, when_empty: ModelT | None = None
) -> ModelT:
    """The validated body; ``when_empty`` answers for an empty body where the body is optional."""
    body = await read_limited_body(request, max_bytes)
    if when_empty is not None and not body.strip():
        return when_empty
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise Problem(415, f"Content-Type must be application/json, not {media_type or 'missing'!r}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(400, f"request body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc, data)
        fields = ", ".join(error["field"] for error in errors)
        raise Problem(422, f"the request has {len(errors)} invalid field(s): {fields}", errors=errors) from None
