"""Client errors as JSON: every 4xx names what is wrong, none leaks internals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse


class Problem(HTTPException):
    """An HTTP error whose body is ``{"detail": ..., "errors": [...]}``."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.errors = errors


async def problem_response(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    body: dict[str, Any] = {"detail": exc.detail}
    errors = getattr(exc, "errors", None)
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def problem_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    """The exception handlers of every service's app: each HTTPException answered as a problem."""
    return {HTTPException: problem_response}
