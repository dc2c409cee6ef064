"""Reading a JSON request body within the size limit and validating it against a model.

Shared by the platform API and the edge gateway, so both answer the same way:

- 400 for every body that is not JSON we accept, never a 500. Besides syntax errors and bytes that
  are not UTF-8 (or UTF-16/32), these are malformed here:

  - nesting deeper than :data:`MAX_DEPTH` arrays/objects. No contract comes near it, and Python's
    parser recurses per level: 100,000 ``[`` would otherwise end in RecursionError.
  - a number literal longer than :data:`MAX_NUMBER_CHARS` characters. Python refuses integers of
    more than 4,300 digits with a ValueError, and no contract needs more than 64-bit values;
    checking the literal's length first also keeps a huge literal from costing time.
  - ``NaN``, ``Infinity`` and ``-Infinity``: not JSON (RFC 8259), though Python's parser takes them.
  - an object naming the same key twice. RFC 8259 leaves its meaning open (Python keeps the last
    value, other parsers the first), so it is rejected: what gets validated is then exactly what
    every reader of the body sees.
  - a string holding U+0000 or a lone surrogate (``"\\ud800"``): not text that can be stored
    (PostgreSQL's jsonb refuses both) or encoded as UTF-8.

  A number that is valid JSON but too large for a float (``1e400``) is not malformed: it parses as
  infinity and the model rejects it with a 422 naming the field (contracts allow finite floats only).
- 408 (connection closed) when the whole body has not arrived within the read deadline: uvicorn
  has no such timeout, and a client dripping a body would otherwise hold a connection for ever.
- 413 over the size limit, 415 for a content type other than ``application/json``.
- 422 naming the invalid fields; at most :data:`MAX_LISTED_ERRORS` are listed (the detail counts
  the rest) and each field and message is clipped, so a small body cannot ask for a huge answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from contracts.field_errors import field_errors
from service_kit.problems import Problem

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 64
MAX_LISTED_ERRORS = 50
MAX_FIELD_CHARS = 200
MAX_MESSAGE_CHARS = 300
# U+0000 and the surrogate code points, which json.loads lets through from "\u...." escapes.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


class MalformedJson(ValueError):
    """The body parses, but not as JSON this reader accepts (see the module docstring)."""


def _reject_constant(name: str) -> NoReturn:
    raise MalformedJson(f"{name} is not a JSON number")


def _short_literal(literal: str) -> str:
    if len(literal) > MAX_NUMBER_CHARS:
        raise MalformedJson(f"a number has more than {MAX_NUMBER_CHARS} characters")
    return literal


def _parse_int(literal: str) -> int:
    return int(_short_literal(literal))


def _parse_float(literal: str) -> float:
    return float(_short_literal(literal))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedJson(f"an object has the key {_clip(key, 60)!r} more than once")
            seen.add(key)
    return result


def _check_text(text: str) -> None:
    if _UNSTORABLE_TEXT.search(text):
        raise MalformedJson("a string holds U+0000 or a lone surrogate (\\ud800-\\udfff)")


def _check_tree(data: Any) -> None:
    """Depth and strings of the parsed document, iteratively: the walk itself must not recurse."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                raise MalformedJson(f"arrays and objects are nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key in node:
                    _check_text(key)
                stack.extend((value, depth + 1) for value in node.values())
            else:
                stack.extend((value, depth + 1) for value in node)


def parse_json(body: bytes) -> Any:
    """The document in ``body``; raises :class:`MalformedJson` (a ValueError) for anything not accepted."""
    try:
        data = json.loads(
            body,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise MalformedJson(f"arrays and objects are nested deeper than {MAX_DEPTH} levels") from None
    except MalformedJson:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedJson(str(exc)) from None
    _check_tree(data)
    return data


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _too_slow(seconds: float) -> Problem:
    # The client is still sending: the connection cannot carry another request, so it is closed.
    return Problem(
        408, f"the request body did not arrive within {seconds:g} seconds", headers={"Connection": "close"}
    )


async def read_limited_body(
    request: Request, max_bytes: int, *, timeout_seconds: float | None = None
) -> bytes:
    """The whole body, at most ``max_bytes`` (413), within ``timeout_seconds`` when given (408)."""
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
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        assert timeout_seconds is not None
        raise _too_slow(timeout_seconds) from None
    return b"".join(chunks)


def _invalid_fields(exc: ValidationError, data: Any) -> Problem:
    errors = field_errors(exc, data)
    listed = [
        {
            "field": _clip(error["field"], MAX_FIELD_CHARS),
            "message": _clip(error["message"], MAX_MESSAGE_CHARS),
        }
        for error in errors[:MAX_LISTED_ERRORS]
    ]
    detail = (
        f"the request has {len(errors)} invalid field(s): {', '.join(error['field'] for error in listed)}"
    )
    if len(errors) > len(listed):
        detail += f" (the first {len(listed)} are listed; {len(errors) - len(listed)} more are not)"
    return Problem(422, detail, errors=listed)


async def read_json_model(
    request: Request,
    model: type[ModelT],
    max_bytes: int,
    *,
    when_empty: ModelT | None = None,
    read_timeout_seconds: float | None = None,
) -> ModelT:
    """The validated body; ``when_empty`` answers for an empty body where the body is optional."""
    body = await read_limited_body(request, max_bytes, timeout_seconds=read_timeout_seconds)
    if when_empty is not None and not body.strip():
        return when_empty
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise Problem(
            415, f"Content-Type must be application/json, not {_clip(media_type, 100) or 'missing'!r}"
        )
    try:
        data = parse_json(body)
    except MalformedJson as exc:
        raise Problem(400, f"request body is not valid JSON: {_clip(str(exc), MAX_MESSAGE_CHARS)}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid_fields(exc, data) from None
