"""Validation errors as the field paths a client sent, for 422 answers."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Dotted path of ``loc`` in ``data``, without the union tags pydantic inserts.

    A tagged union adds its tag to ``loc`` (``deployment.cloud.region``), which names no field
    the client sent; walking the submitted data alongside drops such parts.
    """
    parts: list[str] = []
    current = data
    for part in loc:
        # Two arms, so the type checker sees each index against its own container.
        if isinstance(current, dict) and part in current:  # noqa: SIM114
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif (
            isinstance(current, dict)
            and isinstance(part, str)
            and len(parts) < len(loc) - 1
            and _is_union_tag(current, part)
        ):
            continue
        else:
            current = None
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[")


def _is_union_tag(obj: dict[str, Any], part: str) -> bool:
    return any(value == part for value in obj.values() if isinstance(value, str))


def field_errors(exc: ValidationError, data: Any) -> list[dict[str, str]]:
    """One ``{"field", "message"}`` per failure, named as the client sent it."""
    errors = []
    for error in exc.errors(include_url=False):
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        errors.append({"field": field_path(error["loc"], data) or "(body)", "message": message})
    return errors
