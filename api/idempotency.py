"""The Idempotency-Key header: what makes a retried request answer what the first one did.

Every call that changes state on an operator's behalf needs one (428 without it): a double click or
a client's retry after a lost answer must not send a customer a second email, rotate a link twice
or launch a second backfill. The website may send one with ``POST /submit``.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from service_kit.problems import Problem

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
HEADER = "Idempotency-Key"


def idempotency_key(request: Request, *, required: bool) -> str | None:
    """The request's Idempotency-Key: 400 when malformed, 428 when ``required`` and missing."""
    key = request.headers.get(HEADER)
    if key is None:
        if required:
            raise Problem(
                428,
                f"this call changes state: send an {HEADER} header (a value unique to this action, 1 to 255 "
                "printable ASCII characters without spaces) and the same one when retrying it, so that a "
                "retried request does not act twice",
            )
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise Problem(400, f"{HEADER} must be 1 to 255 printable ASCII characters without spaces")
    return key
