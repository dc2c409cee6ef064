"""The claim of an Idempotency-Keyed request, for every claims table (re-deliveries, order retries)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from platform_db import OrderRepository
from platform_db.claims import BackfillClaim, BackfillClaims, ClaimInProgress
from platform_db.order_retries import OrderRetryInProgress, OrderRetryRepository
from platform_db.redeliveries import RedeliveryInProgress, RedeliveryRepository
from tests.platform_db.conftest import Connect


@dataclass(frozen=True)
class Kind:
    """One claims table and how its requests claim and record (what they ask for is fixed)."""

    repository: type[BackfillClaims[Any]]
    in_progress: type[ClaimInProgress]
    claim_with: Callable[[Any, str, str | None], tuple[BackfillClaim, bool]]
    record_with: Callable[[Any, int], BackfillClaim]


KINDS = [
    pytest.param(
        Kind(
            RedeliveryRepository,
            RedeliveryInProgress,
            lambda claims, cfg_id, key: claims.claim(cfg_id, False, key),
            lambda claims, claim_id: claims.record_backfill(claim_id, "bf-1"),
        ),
        id="redeliveries",
    ),
    pytest.param(
        Kind(
            OrderRetryRepository,
            OrderRetryInProgress,
            lambda claims, cfg_id, key: claims.claim(cfg_id, key),
            lambda claims, claim_id: claims.record_backfill(claim_id, "bf-1", ["order/config"], True),
        ),
        id="order_retries",
    ),
]


@dataclass(frozen=True)
class Claims:
    kind: Kind
    repository: BackfillClaims[Any]

    def claim(self, cfg_id: str, key: str | None) -> tuple[BackfillClaim, bool]:
        return self.kind.claim_with(self.repository, cfg_id, key)

    def record(self, claim_id: int) -> BackfillClaim:
        return self.kind.record_with(self.repository, claim_id)


@pytest.fixture(params=KINDS)
def claims(request: pytest.FixtureRequest, connect: Connect) -> Claims:
    kind: Kind = request.param
    return Claims(kind, connect(kind.repository))


def test_a_recorded_claim_is_found_by_its_key_and_its_order(
    claims: Claims, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()

    claim, claimed = claims.claim(cfg_id, "key-1")
    assert claimed and claim.cfg_id == cfg_id and claim.backfill_id is None
    recorded = claims.record(claim.id)

    assert recorded.backfill_id == "bf-1"
    assert recorded.created_at.tzinfo is not None and recorded.created_at.utcoffset() == timedelta(0)
    assert claims.repository.by_key("key-1") == recorded
    assert claims.repository.for_order(cfg_id) == [recorded]


def test_the_same_key_answers_the_recorded_backfill(claims: Claims, new_order: Callable[[], str]) -> None:
    cfg_id = new_order()
    claim, _ = claims.claim(cfg_id, "key-1")
    recorded = claims.record(claim.id)

    again, claimed = claims.claim(cfg_id, "key-1")

    assert not claimed and again == recorded
    assert again.backfill_id == "bf-1"
    assert len(claims.repository.for_order(cfg_id)) == 1


def test_without_a_key_every_claim_is_new(claims: Claims, new_order: Callable[[], str]) -> None:
    cfg_id = new_order()
    first, first_claimed = claims.claim(cfg_id, None)
    second, second_claimed = claims.claim(cfg_id, None)
    assert first_claimed and second_claimed and first.id != second.id


def test_a_claim_being_launched_is_in_progress_until_released(
    claims: Claims, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = claims.claim(cfg_id, "key-1")

    with pytest.raises(claims.kind.in_progress):
        claims.claim(cfg_id, "key-1")

    claims.repository.release(claim.id)
    assert claims.repository.get(claim.id) is None
    retried, claimed = claims.claim(cfg_id, "key-1")
    assert claimed and retried.id != claim.id


def test_a_recorded_claim_is_not_released(claims: Claims, new_order: Callable[[], str]) -> None:
    cfg_id = new_order()
    claim, _ = claims.claim(cfg_id, "key-1")
    claims.record(claim.id)

    claims.repository.release(claim.id)

    assert claims.repository.get(claim.id) is not None


def test_a_stale_claim_is_taken_over_by_one_retry(
    claims: Claims, new_order: Callable[[], str], repo: OrderRepository
) -> None:
    cfg_id = new_order()
    claim, _ = claims.claim(cfg_id, "key-1")
    table = claims.kind.repository.table
    # The claiming request died mid-launch long ago.
    with repo.engine.begin() as connection:
        connection.execute(
            update(table)
            .where(table.c.id == claim.id)
            .values(created_at=claim.created_at.astimezone(UTC) - timedelta(hours=1))
        )

    taken, claimed = claims.claim(cfg_id, "key-1")

    assert claimed and taken.id == claim.id
    with pytest.raises(claims.kind.in_progress):
        claims.claim(cfg_id, "key-1")


def test_recording_an_unknown_claim_is_a_key_error(claims: Claims) -> None:
    with pytest.raises(KeyError):
        claims.record(12345)


def test_an_overlong_key_is_refused(claims: Claims, new_order: Callable[[], str]) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        claims.claim(new_order(), "k" * 256)


def test_concurrent_requests_with_one_key_make_one_claim(
    claims: Claims, new_order: Callable[[], str], race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    cfg_id = new_order()

    def request(index: int) -> str:
        try:
            _, claimed = claims.claim(cfg_id, "key-1")
        except claims.kind.in_progress:
            return "in progress"
        return "claimed" if claimed else "replayed"

    outcomes = race(8, request)
    assert outcomes.count("claimed") == 1
    assert outcomes.count("in progress") == 7
    assert len(claims.repository.for_order(cfg_id)) == 1
