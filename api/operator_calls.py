"""An operator's state-changing call, done once per Idempotency-Key.

The handler checks what it can without acting (the caller's scope, the key, the body, that the
order or key exists), then :func:`answer_once` claims the key in platform_db and acts. A retried
call with the same key and the same body answers what the first one answered and acts no more; the
same key for another call or another body is a 409 naming the call it was used for. A call that
fails before it acted (a 404, a 409, a launch Dagster refused) gives the key back.

What is stored is the answer's JSON as the call made it, so it must hold no secret and no link
(a portal link carries the customer's token): a call whose answer has one stores what it is made
from and renders it on each answer (``render``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from api.state import ApiState
from platform_db.operator_calls import OperatorCallConflict, OperatorCallInProgress
from service_kit.canonical_json import canonical_json
from service_kit.problems import Problem

# Set on an answer that a repeated Idempotency-Key got back from the first call.
REPLAYED_HEADER = "Idempotent-Replayed"
RETRY_AFTER_SECONDS = "5"


@dataclass(frozen=True)
class Answer:
    """What a call answered: its status and the JSON stored for it."""

    status_code: int
    stored: dict[str, Any]
    # True when a repeated key got the first call's answer back.
    replayed: bool = False


def request_sha256(body: BaseModel | None) -> str:
    """The body as parsed (defaults filled in), so two bodies that mean the same are one request."""
    document = None if body is None else body.model_dump(mode="json")
    return hashlib.sha256(canonical_json(document)).hexdigest()


def answer_once(
    state: ApiState, key: str, what: str, body: BaseModel | None, act: Callable[[], Answer]
) -> Answer:
    """``act()``'s answer, or the stored answer of the first call with ``key``; acts at most once.

    ``what`` names the call (method and path, from checked parameters only). Blocking: run it in a
    thread.
    """
    try:
        call, claimed = state.operator_calls.claim(key, what, request_sha256(body))
    except OperatorCallConflict as exc:
        raise Problem(409, str(exc)) from None
    except OperatorCallInProgress as exc:
        if exc.stale:
            raise Problem(
                409,
                f"{exc}; look at what it would have changed (the order, the signing keys) and act again "
                "with a new Idempotency-Key",
            ) from None
        raise Problem(
            409, f"{exc}; retry in a few seconds", headers={"Retry-After": RETRY_AFTER_SECONDS}
        ) from None
    if not claimed:
        assert call.status_code is not None and call.answer is not None
        return Answer(call.status_code, call.answer, replayed=True)
    try:
        answer = act()
    except BaseException:
        # It did not act (or stopped before it did): the key is free for a retry.
        state.operator_calls.release(call.id)
        raise
    state.operator_calls.answer(call.id, answer.status_code, answer.stored)
    return answer


def keyed_response(answer: Answer, render: Callable[[dict[str, Any]], BaseModel]) -> JSONResponse:
    """The HTTP answer: ``render(stored)`` as JSON, marked when it is a repeated key's."""
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return JSONResponse(
        render(answer.stored).model_dump(mode="json"), status_code=answer.status_code, headers=headers
    )
