"""The store of operator calls by Idempotency-Key: one claim per key, the first answer for a repeat."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from platform_db.operator_calls import OperatorCallConflict, OperatorCallInProgress, OperatorCallRepository
from platform_db.schema import operator_calls
from tests.platform_db.conftest import Connect

ROTATE = "POST /orders/3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70/portal-token"
BODY = "a" * 64


@pytest.fixture
def calls(connect: Connect) -> OperatorCallRepository:
    return connect(OperatorCallRepository)


def test_an_answered_call_is_answered_again_for_its_key_and_body(
    calls: OperatorCallRepository, connect: Connect
) -> None:
    call, claimed = calls.claim("rotate-1", ROTATE, BODY)
    assert claimed and call.status_code is None and call.answer is None
    calls.answer(call.id, 200, {"portal_token_generation": 1, "customer_notified": True})

    # Another process (another API worker) gets the stored answer, and no claim of its own.
    again, claimed_again = connect(OperatorCallRepository).claim("rotate-1", ROTATE, BODY)

    assert not claimed_again
    assert (again.id, again.status_code) == (call.id, 200)
    assert again.answer == {"portal_token_generation": 1, "customer_notified": True}
    assert again.answered_at is not None and again.answered_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("what", "body", "named"),
    [
        (
            "DELETE /orders/3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70/portal-versions/2/yank",
            BODY,
            "already used for POST",
        ),
        (ROTATE, "b" * 64, "with another request body"),
    ],
)
def test_the_key_of_another_call_or_body_is_a_conflict_naming_it(
    calls: OperatorCallRepository, what: str, body: str, named: str
) -> None:
    call, _ = calls.claim("rotate-1", ROTATE, BODY)
    calls.answer(call.id, 200, {})

    with pytest.raises(OperatorCallConflict, match=named) as conflict:
        calls.claim("rotate-1", what, body)

    assert ROTATE in str(conflict.value)


def test_a_call_still_acting_is_in_progress_and_one_that_stopped_is_stale(
    calls: OperatorCallRepository,
) -> None:
    call, _ = calls.claim("rotate-1", ROTATE, BODY)

    with pytest.raises(OperatorCallInProgress) as acting:
        calls.claim("rotate-1", ROTATE, BODY)
    assert not acting.value.stale

    # Its process died mid-call: it may have acted, so it is never taken over.
    with calls._engine.begin() as connection:
        connection.execute(
            update(operator_calls)
            .where(operator_calls.c.id == call.id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=1))
        )
    with pytest.raises(OperatorCallInProgress, match="never answered") as stopped:
        calls.claim("rotate-1", ROTATE, BODY)
    assert stopped.value.stale
    unanswered = calls.by_key("rotate-1")
    assert unanswered is not None and unanswered.status_code is None


def test_a_released_claim_frees_the_key_and_an_answered_one_stays(calls: OperatorCallRepository) -> None:
    call, _ = calls.claim("rotate-1", ROTATE, BODY)
    calls.release(call.id)
    assert calls.by_key("rotate-1") is None
    retried, claimed = calls.claim("rotate-1", ROTATE, BODY)
    assert claimed

    calls.answer(retried.id, 202, {"backfill_id": "bf-1"})
    calls.release(retried.id)
    assert calls.claim("rotate-1", ROTATE, BODY)[0].answer == {"backfill_id": "bf-1"}
    with pytest.raises(KeyError):
        calls.answer(retried.id, 200, {})


def test_keys_and_calls_the_columns_cannot_hold_are_refused(calls: OperatorCallRepository) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        calls.claim("k" * 256, ROTATE, BODY)
    with pytest.raises(ValueError, match="what"):
        calls.claim("rotate-1", "POST /" + "x" * 255, BODY)


def test_concurrent_requests_with_one_key_claim_once(
    connect: Connect, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 8
    repositories = [connect(OperatorCallRepository) for _ in range(workers)]

    def request(index: int) -> str:
        try:
            _, claimed = repositories[index].claim("rotate-1", ROTATE, BODY)
        except OperatorCallInProgress:
            return "in progress"
        return "claimed" if claimed else "replayed"

    outcomes = race(workers, request)

    assert outcomes.count("claimed") == 1
    assert outcomes.count("in progress") == workers - 1
