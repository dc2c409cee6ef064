"""Bearer-token check for the stages that require one."""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.requests import Request

from service_kit.problems import Problem


def require_bearer_token(request: Request, token: SecretStr | None) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <token>``; no-op when token is None."""
    if token is None:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    # Constant-time comparison, so response timing does not reveal how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise Problem(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
